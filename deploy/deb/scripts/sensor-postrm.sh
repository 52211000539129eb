#!/bin/sh
# postrm of jasper-sensor: on purge, delete the state folder (keys, spool or
# raft log). The jasper user stays, as Debian policy asks.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/lib/jasper-sensor
fi
