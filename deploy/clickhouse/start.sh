#!/usr/bin/env bash
# Start a private ClickHouse server for tests, CI and the local demo.
#
#   deploy/clickhouse/start.sh DIR [TCP_PORT] [HTTP_PORT]
#
# Writes a minimal config.xml and users.xml into DIR (data, logs and pid file
# stay inside DIR), listens on 127.0.0.1 only, starts `clickhouse-server` in
# the background as the current user (no system service), waits until
# `clickhouse-client --port TCP_PORT -q 'SELECT 1'` answers (at most
# JASPER_CH_START_TIMEOUT seconds, default 60) and prints the server's pid on
# stdout. Defaults: TCP 19000, HTTP 18123. The user `default` has no password
# and is reachable from loopback only.
#
# Stop it with deploy/clickhouse/stop.sh DIR. Running start.sh again on a DIR
# whose server is alive prints that pid and exits 0; a stopped DIR restarts
# with its data kept (tests use this to simulate a ClickHouse restart).
#
# Works with Debian's clickhouse-server 18.16 and with current releases (the
# configuration root is <yandex>, which current releases still accept).
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 3 ]; then
  echo "usage: $0 DIR [TCP_PORT] [HTTP_PORT]" >&2
  exit 2
fi
mkdir -p "$1"
dir=$(cd "$1" && pwd)
tcp_port=${2:-19000}
http_port=${3:-18123}
timeout=${JASPER_CH_START_TIMEOUT:-60}

server=$(command -v clickhouse-server || true)
if [ -z "$server" ]; then
  if command -v clickhouse >/dev/null 2>&1; then
    server="$(command -v clickhouse) server"
  else
    echo "start.sh: clickhouse-server not found (apt-get install clickhouse-server clickhouse-client)" >&2
    exit 1
  fi
fi
client=$(command -v clickhouse-client || true)
if [ -z "$client" ]; then
  client="$(command -v clickhouse) client"
fi

# ours PID: true when PID is the server of this DIR (not a reused pid).
ours() {
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] &&
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -qF -- "--config-file=$dir/config.xml"
}

if [ -f "$dir/clickhouse.pid" ]; then
  old=$(cat "$dir/clickhouse.pid")
  if ours "$old"; then
    echo "$old"
    exit 0
  fi
  rm -f "$dir/clickhouse.pid"
fi

# Another server on the port would answer the readiness check below in place
# of ours (this one would fail to bind and exit): refuse to start instead.
if $client --host 127.0.0.1 --port "$tcp_port" -q 'SELECT 1' >/dev/null 2>&1; then
  echo "start.sh: a ClickHouse server already answers on 127.0.0.1:$tcp_port (not the one of $dir); stop it or choose another port" >&2
  exit 1
fi

mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"

cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<!-- Written by deploy/clickhouse/start.sh: a private test/dev server. -->
<yandex>
  <logger>
    <level>information</level>
    <log>$dir/log/clickhouse-server.log</log>
    <errorlog>$dir/log/clickhouse-server.err.log</errorlog>
    <size>100M</size>
    <count>2</count>
  </logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$tcp_port</tcp_port>
  <http_port>$http_port</http_port>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <max_concurrent_queries>100</max_concurrent_queries>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
</yandex>
XML

cat > "$dir/users.xml" <<'XML'
<?xml version="1.0"?>
<!-- Written by deploy/clickhouse/start.sh: one password-less user, loopback only. -->
<yandex>
  <profiles>
    <default>
      <max_memory_usage>4000000000</max_memory_usage>
    </default>
  </profiles>
  <users>
    <default>
      <password></password>
      <networks>
        <ip>127.0.0.1</ip>
        <ip>::1</ip>
      </networks>
      <profile>default</profile>
      <quota>default</quota>
    </default>
  </users>
  <quotas>
    <default>
      <interval>
        <duration>3600</duration>
        <queries>0</queries>
        <errors>0</errors>
        <result_rows>0</result_rows>
        <read_rows>0</read_rows>
        <execution_time>0</execution_time>
      </interval>
    </default>
  </quotas>
</yandex>
XML

# setsid: the server gets its own session, so a test's or CI's process group
# signals do not reach it; it is stopped through its pid.
# shellcheck disable=SC2086
setsid $server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/clickhouse.pid"

deadline=$((SECONDS + timeout))
until $client --host 127.0.0.1 --port "$tcp_port" -q 'SELECT 1' >/dev/null 2>&1; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "start.sh: clickhouse-server exited during start; last log lines:" >&2
    tail -n 20 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
    rm -f "$dir/clickhouse.pid"
    exit 1
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "start.sh: clickhouse-server did not answer on 127.0.0.1:$tcp_port within ${timeout}s" >&2
    tail -n 20 "$dir/log/clickhouse-server.err.log" >&2 2>/dev/null || true
    kill "$pid" 2>/dev/null || true
    rm -f "$dir/clickhouse.pid"
    exit 1
  fi
  sleep 0.2
done
if ! kill -0 "$pid" 2>/dev/null; then
  echo "start.sh: a server answered on 127.0.0.1:$tcp_port but ours (pid $pid) exited; last log lines:" >&2
  tail -n 20 "$dir/log/clickhouse-server.err.log" "$dir/log/stdout.log" >&2 2>/dev/null || true
  rm -f "$dir/clickhouse.pid"
  exit 1
fi
echo "$pid"
