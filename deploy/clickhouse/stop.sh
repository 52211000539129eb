#!/usr/bin/env bash
# Stop a server started by deploy/clickhouse/start.sh DIR: SIGTERM, wait up to
# 20 s, then SIGKILL. Pass --kill to send SIGKILL at once (a crash).
#
#   deploy/clickhouse/stop.sh [--kill] DIR
set -euo pipefail
sig=TERM
if [ "${1:-}" = "--kill" ]; then
  sig=KILL
  shift
fi
if [ $# -ne 1 ]; then
  echo "usage: $0 [--kill] DIR" >&2
  exit 2
fi
[ -d "$1" ] || exit 0
dir=$(cd "$1" && pwd)
pidfile="$dir/clickhouse.pid"
[ -f "$pidfile" ] || exit 0
pid=$(cat "$pidfile")
# Only signal the server of this DIR, never a process that reused the pid.
if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--config-file=$dir/config.xml"; then
  kill -s "$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    kill -s KILL "$pid" 2>/dev/null || true
    sleep 0.2
  fi
fi
rm -f "$pidfile"
