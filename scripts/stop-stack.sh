#!/usr/bin/env bash
# `make stop`: stop what `make run` started (its services' process groups, then the script),
# from any terminal. Also called by run-stack.sh itself when it is interrupted (--from-run).
set -uo pipefail
cd "$(dirname "$0")/.."
PGIDS=.devdata/run-stack.pgids
PIDFILE=.devdata/run-stack.pid
[ -s "$PGIDS" ] || { echo "nothing to stop (no $PGIDS)"; exit 0; }
# Tell the run script its services are going away on purpose (it then says "stopped", not
# "a service exited").
[ "${1:-}" = "--from-run" ] || : > .devdata/run-stack.stopping
alive() { kill -0 -- "-$1" 2>/dev/null; }
mapfile -t groups < "$PGIDS"
for group in "${groups[@]}"; do kill -TERM -- "-$group" 2>/dev/null || true; done
for _ in $(seq 1 40); do  # up to 20 s for a clean shutdown, then KILL what is left
  left=0
  for group in "${groups[@]}"; do alive "$group" && left=1; done
  [ "$left" = 0 ] && break
  sleep 0.5
done
for group in "${groups[@]}"; do kill -KILL -- "-$group" 2>/dev/null || true; done
# Stragglers that left their process group (an Airflow task worker, say) carry the run's mark.
MARK=$(cat .devdata/run-stack.id 2>/dev/null || true)
marked() {
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    case "$pid" in "$$"|"$PPID"|"$BASHPID") continue ;; esac  # this script, its caller
    grep -qz "^KPI_RUN_STACK_ID=$MARK\$" "$environ" 2>/dev/null || continue
    grep -qE "(run|stop)-stack.sh" "/proc/$pid/cmdline" 2>/dev/null && continue  # the scripts
    echo "$pid"
  done
}
if [ -n "$MARK" ]; then
  for pid in $(marked); do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in $(marked); do kill -KILL "$pid" 2>/dev/null || true; done
fi
if [ "${1:-}" != "--from-run" ] && [ -s "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")  # the run script itself, if that pid is still it, exits cleanly
  if grep -q "run-stack.sh" "/proc/$pid/cmdline" 2>/dev/null; then kill -TERM "$pid" || true; fi
fi
rm -f "$PGIDS" "$PIDFILE" .devdata/run-stack.id
echo "stopped ${#groups[@]} services"
