#!/usr/bin/env bash
# Keep the logs of earlier runs: move DIR/*.log (what the last run wrote) into
# DIR/previous-logs/<UTC time that run last wrote a log>/, and keep the KEEP newest of those
# folders (default 5). Used by run-stack.sh before it starts the services anew.
#   scripts/rotate-logs.sh DIR [KEEP]
set -euo pipefail
dir=$1
keep=${2:-5}
shopt -s nullglob
logs=("$dir"/*.log)
[ ${#logs[@]} -gt 0 ] || exit 0
newest=$(ls -1t "${logs[@]}" | head -n 1)
folder="$dir/previous-logs/$(date -u -r "$newest" +%Y%m%dT%H%M%SZ)"
[ ! -e "$folder" ] || folder="$folder-$$"
mkdir -p "$folder"
mv "${logs[@]}" "$folder/"
# the folders' names sort by time: all but the KEEP newest go
ls -1d "$dir"/previous-logs/*/ | sort | head -n "-$keep" | xargs -r -d '\n' rm -rf
