#!/usr/bin/env bash
# Usage: loopback-watch.sh start FILE | loopback-watch.sh check FILE
# `start` records the TCP sockets that exist now (the machine's own: ssh, the CI runner) and
# then samples every half second, writing to FILE every new socket that is not on loopback: a
# connection to or from an address outside 127.0.0.0/8 and ::1, or a listener on all
# interfaces. `check` stops the sampler, prints what it saw and fails if anything.
set -euo pipefail
file="$2"
sockets() { ss -Htan | awk '{print $1, $4, $5}' | sort -u; }
outside() { grep -vE '^[A-Z0-9-]+ (127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]):[0-9]+ (127\.[0-9.]+|\[::1\]|\[::ffff:127\.[0-9.]+\]|0\.0\.0\.0|\*|\[::\]):[0-9*]+$' || true; }
case "$1" in
  start)
    sockets | outside > "$file.baseline"
    : > "$file"
    (while [ -e "$file.baseline" ]; do
       sockets | outside | comm -13 "$file.baseline" - >> "$file"
       sleep 0.5
     done) &
    echo $! > "$file.pid"
    ;;
  check)
    rm -f "$file.baseline"
    kill "$(cat "$file.pid")" 2>/dev/null || true
    rm -f "$file.pid"
    if [ -s "$file" ]; then
      echo "sockets outside loopback during the run:"; sort -u "$file"
      exit 1
    fi
    echo "loopback only: no socket outside 127.0.0.0/8 and ::1 appeared during the run"
    ;;
esac
