#!/usr/bin/env bash
# `make run-distributed` and its test need Debian's redis-server (the Celery broker).
set -euo pipefail
if command -v redis-server >/dev/null; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's redis-server for the Celery workers"
  # Another apt (an unattended upgrade, say) may hold the lock: wait for it (up to about ten
  # minutes), then fail clearly rather than carry on.
  updated=no
  for attempt in $(seq 1 20); do
    if apt-get -o DPkg::Lock::Timeout=60 update -qq; then updated=yes; break; fi
    echo "apt is busy or failing (attempt $attempt of 20); waiting..." >&2
    sleep 10
  done
  if [ "$updated" != yes ]; then
    echo "error: apt-get update kept failing; install Redis by hand: apt-get install redis-server" >&2
    exit 1
  fi
  # The package's own service is not wanted (the stack starts Redis itself, on 127.0.0.1 and a
  # port of its choosing): policy-rc.d keeps apt from starting it.
  policy=/usr/sbin/policy-rc.d
  added_policy=no
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; added_policy=yes
  fi
  status=0
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends redis-server >/dev/null || status=$?
  [ "$added_policy" = yes ] && rm -f "$policy"
  exit "$status"
else
  echo "warning: redis-server is missing; make run-distributed and its test need it:" >&2
  echo "  sudo apt-get install redis-server" >&2
fi
