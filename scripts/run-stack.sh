#!/usr/bin/env bash
# `make run`: dev CouchDB + fake KPIggybank (30 days of history) + Airflow (catchup fills those
# days) + the site on http://127.0.0.1:3434. Ctrl-C stops everything this script started.
# `make run-distributed` (--distributed): the same with Airflow's CeleryExecutor, Redis as its
# broker and two Celery workers, each with a HOME and temporary folder of its own; one serves
# KPI_PUBLISH_QUEUE (the publish task) and the default queue, the other the default queue only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export PATH="$ROOT/.venv/bin:$PATH"

MODE=local
case "${1:-}" in
  "") ;;
  --distributed) MODE=distributed ;;
  *) echo "usage: $0 [--distributed]" >&2; exit 2 ;;
esac

DAYS=${KPI_DEMO_DAYS:-30}
PER_DAY=${KPI_DEMO_PER_DAY:-2000}
COUCH_PORT=${KPI_DEMO_COUCHDB_PORT:-5984}
SOURCE_PORT=${KPI_DEMO_SOURCE_PORT:-3435}
SITE_PORT=${KPI_DEMO_SITE_PORT:-3434}
AIRFLOW_PORT=${KPI_DEMO_AIRFLOW_PORT:-8080}
REDIS_PORT=${KPI_DEMO_REDIS_PORT:-6379}

export KPI_COUCHDB_URL=${KPI_COUCHDB_URL:-http://127.0.0.1:$COUCH_PORT}
export KPI_SOURCE_URL=${KPI_SOURCE_URL:-http://127.0.0.1:$SOURCE_PORT/wsapi/interaction_data}
export KPI_START_DATE=${KPI_START_DATE:-$(date -u -d "$DAYS days ago" +%F)}
export KPI_SITE_DIR=${KPI_SITE_DIR:-$ROOT/site_output/site}

mkdir -p .devdata .airflow
# this run's service logs are .airflow/*.log; the earlier runs' are kept, the 5 newest, in
# .airflow/previous-logs/<when that run last logged>/
bash scripts/rotate-logs.sh .airflow 5
export AIRFLOW_HOME=$ROOT/.airflow
export AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__PARALLELISM=4
if [ "$MODE" = distributed ]; then
  command -v redis-server >/dev/null || bash scripts/ensure-redis.sh
  command -v redis-server >/dev/null || { echo "redis-server is missing" >&2; exit 1; }
  export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
  # Redis carries the queued tasks (database 0) and Celery's task results (database 1).
  export AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
  export AIRFLOW__CELERY__RESULT_BACKEND=redis://127.0.0.1:$REDIS_PORT/1
  export AIRFLOW__CELERY__WORKER_CONCURRENCY=${KPI_DEMO_WORKER_CONCURRENCY:-2}
  # a task unacknowledged for this long is handed to another worker (Airflow's default,
  # stated so the workers do not warn; longer than the default KPI_TASK_TIMEOUT_MINUTES)
  export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400
  # The publish task's queue: set for the DAG processor (which routes the task) and the worker
  # that serves it, the one that holds KPI_SITE_DIR.
  export KPI_PUBLISH_QUEUE=${KPI_PUBLISH_QUEUE:-kpi_web}
  DEFAULT_QUEUE=${AIRFLOW__OPERATORS__DEFAULT_QUEUE:-default}
else
  export AIRFLOW__CORE__EXECUTOR=LocalExecutor
fi
export AIRFLOW__API__HOST=127.0.0.1
export AIRFLOW__API__PORT=$AIRFLOW_PORT
export AIRFLOW__API__BASE_URL=http://127.0.0.1:$AIRFLOW_PORT
[ -s .airflow/jwt_secret ] || python -c "import secrets; print(secrets.token_hex(32))" > .airflow/jwt_secret
AIRFLOW__API_AUTH__JWT_SECRET=$(cat .airflow/jwt_secret)
export AIRFLOW__API_AUTH__JWT_SECRET

# Every service runs in its own process group; their ids are kept in .devdata/run-stack.pgids so
# that `make stop` (scripts/stop-stack.sh) can stop them from another terminal too.
PGIDS=$ROOT/.devdata/run-stack.pgids
echo $$ > "$ROOT/.devdata/run-stack.pid"
rm -f "$ROOT/.devdata/run-stack.stopping"
# Every process started from here inherits this mark, even those that leave their process group
# (Airflow's task workers do): stop-stack.sh also stops any process that carries it.
export KPI_RUN_STACK_ID="run-$$-$(date +%s%N)"
echo "$KPI_RUN_STACK_ID" > "$ROOT/.devdata/run-stack.id"
: > "$PGIDS"
pids=()
stop_all() {
  # Ignore further signals (a second Ctrl-C, make's own TERM, a closed terminal's HUP) and a
  # broken pipe (`make run | tee log` after Ctrl-C): stopping must run to the end. Kill first,
  # talk after: printing can fail once the terminal or the pipe is gone.
  trap '' INT TERM HUP PIPE
  trap - EXIT
  bash "$ROOT/scripts/stop-stack.sh" --from-run >/dev/null 2>&1 || true
  # also the groups this script knows itself (a concurrent `make stop` may have taken the file)
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || true; done
  echo "stopped" 2>/dev/null || true
  exit 0
}
trap stop_all EXIT INT TERM HUP
start() {  # each service in its own process group, so stopping it stops its children too
  setsid "$@" &
  pids+=($!)
  echo $! >> "$PGIDS"
}

# What a first viewer should see: an outage day in the fake history, which the nightly check
# flags, and a milestone inside the demo's days (fake_source/demo.py); your own KPI_CONFIG wins.
OUTAGE=$(python -m fake_source.demo outage --days "$DAYS")
if [ -z "${KPI_CONFIG:-}" ]; then
  python -m fake_source.demo config --days "$DAYS" > .devdata/demo-config.json
  export KPI_CONFIG=$ROOT/.devdata/demo-config.json
fi

start kpi couchdb --port "$COUCH_PORT" --dir "$ROOT/.devdata/couchdb"
if [ "$MODE" = distributed ]; then  # in memory only: Airflow requeues what a restart loses
  start redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$ROOT/.devdata" --logfile "$ROOT/.airflow/redis.log"
fi
start kpi fake-source --port "$SOURCE_PORT" --days "$DAYS" --per-day "$PER_DAY" \
  ${OUTAGE:+--outage-day "$OUTAGE"}
python - <<PY
from kpi.devserver import wait_for_http
wait_for_http("http://127.0.0.1:$COUCH_PORT/")
wait_for_http("http://127.0.0.1:$SOURCE_PORT/wsapi/ping")
if "$MODE" == "distributed":
    import time
    import redis
    client = redis.Redis(host="127.0.0.1", port=$REDIS_PORT)
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    else:
        raise SystemExit("Redis does not answer on 127.0.0.1:$REDIS_PORT (.airflow/redis.log)")
PY

# publish what is stored already (nothing on a first run: the databases appear with the first
# DAG run, and so does the site)
if ! kpi build-site >/dev/null 2>&1; then
  echo "no stored aggregates yet: the site appears after the first DAG run"
  if [ ! -e "$KPI_SITE_DIR" ]; then  # served empty until the first publish links it to a build
    rm -f "$KPI_SITE_DIR"  # a link to a build that is gone
    mkdir -p "$KPI_SITE_DIR"
  fi
fi
start kpi serve --port "$SITE_PORT" --host 127.0.0.1

# (long commands run as `cmd & wait`: bash handles a signal only once a foreground command ends)
airflow db migrate >.airflow/db-migrate.log 2>&1 &
wait $!
# No task may start before the API server answers (tasks report to it): the DAGs stay paused
# until it does. On a first run they are created paused; on later runs they are paused here.
export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=True
airflow dags pause kpi_nightly >/dev/null 2>&1 || true
airflow dags pause kpi_publish >/dev/null 2>&1 || true
# Airflow's four components, as `airflow standalone` starts them but without the log servers
# that the scheduler and the triggerer start by default: those listen on every interface
# (ports 8793 and 8794; Airflow 3 has no setting for their address, only for their ports), and
# every component runs here, so the API server reads the task logs from .airflow/logs itself.
# Every server this script starts listens on 127.0.0.1 only (tests/dags/test_run_stack.py).
for component in "scheduler --skip-serve-logs" dag-processor "triggerer --skip-serve-logs" \
    api-server; do
  # shellcheck disable=SC2086 (the component's options are separate words)
  start airflow $component >".airflow/${component%% *}.log" 2>&1
done
components="scheduler,dag-processor,triggerer,api-server"
if [ "$MODE" = distributed ]; then
  # Two Celery workers, as on two machines: each its own name (the tasks' `hostname` in Airflow),
  # HOME, temporary folder and working directory, so nothing one task leaves on its disk is
  # found by a task on the other. They share AIRFLOW_HOME: its config, and the task logs the
  # API server reads from .airflow/logs (a worker's log server would listen on every
  # interface, so it is off, as the scheduler's is).
  for worker in web default; do
    queues=$DEFAULT_QUEUE
    [ "$worker" = web ] && queues=$KPI_PUBLISH_QUEUE,$DEFAULT_QUEUE
    name="kpi-$worker@$(uname -n)"
    folder=$ROOT/.devdata/workers/$worker
    mkdir -p "$folder/home" "$folder/tmp"
    start env -C "$folder/home" -u XDG_CACHE_HOME HOME="$folder/home" TMPDIR="$folder/tmp" \
      KPI_WORKER_NAME="$name" AIRFLOW__CORE__HOSTNAME_CALLABLE=kpi.airflow.worker_hostname \
      airflow celery worker --celery-hostname "$name" --queues "$queues" --skip-serve-logs \
      >".airflow/worker-$worker.log" 2>&1
  done
  components="$components,worker-web,worker-default,redis"
fi
echo "waiting for Airflow's API server..."
python -c "from kpi.devserver import wait_for_http; wait_for_http(
    'http://127.0.0.1:$AIRFLOW_PORT/api/v2/monitor/health', timeout=300)" &
wait $!
for dag_id in kpi_nightly kpi_publish; do  # unpaused once the DAG processor has parsed them
  for _ in $(seq 1 60); do
    airflow dags unpause "$dag_id" >/dev/null 2>&1 && break
    sleep 2
  done
done

cat <<MSG

  Site (refreshes after every DAG run):  http://127.0.0.1:$SITE_PORT/
  Airflow UI (user admin):               http://127.0.0.1:$AIRFLOW_PORT/
    admin password:                      $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated
  Fake KPIggybank:                       $KPI_SOURCE_URL
  Dev CouchDB:                           http://127.0.0.1:$COUCH_PORT/
  Airflow logs:                          $AIRFLOW_HOME/{$components}.log
    earlier runs' logs:                  $AIRFLOW_HOME/previous-logs/

  kpi_nightly catches up on the days from $KPI_START_DATE to yesterday that it has not run yet
  (a first run: all $DAYS); kpi_publish rebuilds the site when aggregates change. Ctrl-C (or \`make stop\` elsewhere) stops everything.

MSG
if [ "$MODE" = distributed ]; then
  cat <<MSG
  CeleryExecutor, broker Redis on 127.0.0.1:$REDIS_PORT. Workers: kpi-web (queues
  $KPI_PUBLISH_QUEUE,$DEFAULT_QUEUE: the publish task) and kpi-default ($DEFAULT_QUEUE), with
  their HOME and temporary folders in .devdata/workers/.

MSG
fi
wait -n "${pids[@]}" || true
if [ ! -e "$ROOT/.devdata/run-stack.stopping" ]; then  # not `make stop`: something crashed
  echo "a service exited; see the logs above and in $AIRFLOW_HOME/" >&2 || true
fi
