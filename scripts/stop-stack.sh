#!/usr/bin/env bash
# `make stop`: stop what `make run` started (its services' process groups, then the script),
# from any terminal. Also called by run-stack.sh itself when it is interrupted (--from-run).
set -uo pipefail
cd "$(dirname "$0")/.."
PGIDS=.devdata/run-stack.pgids
PIDFILE=.devdata/run-stack.pid
[ -s "$PGIDS" ] || { echo "nothing to stop (no $PGIDS)"; exit 0; }
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
if [ "${1:-}" != "--from-run" ] && [ -s "$PIDFILE" ]; then
  pid=$(cat "$PIDFILE")  # the run script itself, if that pid is still it, exits cleanly
  if grep -q "run-stack.sh" "/proc/$pid/cmdline" 2>/dev/null; then kill -TERM "$pid" || true; fi
fi
rm -f "$PGIDS" "$PIDFILE"
echo "stopped ${#groups[@]} services"
