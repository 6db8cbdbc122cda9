#!/usr/bin/env bash
# The browser tests drive Debian's Chromium (browsers cannot be downloaded by Playwright here).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests"
  # Another apt (an unattended upgrade, say) may hold the lock: wait for it (up to about ten
  # minutes), then fail clearly rather than carry on.
  updated=no
  for attempt in $(seq 1 20); do
    if apt-get -o DPkg::Lock::Timeout=60 update -qq; then updated=yes; break; fi
    echo "apt is busy or failing (attempt $attempt of 20); waiting..." >&2
    sleep 10
  done
  if [ "$updated" != yes ]; then
    echo "error: apt-get update kept failing; install chromium by hand: apt-get install chromium" >&2
    exit 1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq chromium \
    >/dev/null
else
  echo "warning: /usr/bin/chromium is missing; the browser tests need it:" >&2
  echo "  sudo apt-get install chromium" >&2
fi
