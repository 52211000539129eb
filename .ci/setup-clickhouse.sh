# Sourced by .ci/run (set -euo pipefail): installs Debian's ClickHouse server
# and client, starts a private server (own data dir, 127.0.0.1 ports) with
# deploy/clickhouse/start.sh, exports JASPER_TEST_CLICKHOUSE for the tests and
# registers its stop in CI_CLEANUP.
echo "-- installing clickhouse-server clickhouse-client"
if ! command -v clickhouse-server >/dev/null || ! command -v clickhouse-client >/dev/null; then
  # The package's postinst starts the system service unless policy-rc.d
  # forbids it; CI wants only its private server.
  jasper_ch_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    jasper_ch_policy=1
  fi
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
  if [ -n "$jasper_ch_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi
JASPER_CH_DIR=$(mktemp -d /tmp/jasper-ci-clickhouse.XXXXXX)
JASPER_CH_PORT=${JASPER_CH_PORT:-19000}
JASPER_CH_HTTP_PORT=${JASPER_CH_HTTP_PORT:-18123}
JASPER_CH_PID=$(deploy/clickhouse/start.sh "$JASPER_CH_DIR" "$JASPER_CH_PORT" "$JASPER_CH_HTTP_PORT")
CI_CLEANUP+=("deploy/clickhouse/stop.sh '$JASPER_CH_DIR'; rm -rf '$JASPER_CH_DIR'")
export JASPER_TEST_CLICKHOUSE="127.0.0.1:$JASPER_CH_PORT"
echo "-- clickhouse-server pid $JASPER_CH_PID at $JASPER_TEST_CLICKHOUSE ($(clickhouse-client --port "$JASPER_CH_PORT" -q 'SELECT version()'))"
