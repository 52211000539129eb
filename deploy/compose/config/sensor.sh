#!/bin/sh
# Entry point of a compose sensor: enrol once with the join token pki.sh
# made, generate a capture to replay once, then run.
set -eu
state=/var/lib/jasper-sensor
if [ ! -f "$state/longterm-key.pem" ]; then
	jasper sensor enrol --hub hub-1:7444,hub-2:7444,hub-3:7444 \
		--token "$(cat "/pki/tokens/$SENSOR_ID.token")" --ca /pki/ca/ca.pem --dir "$state"
fi
if [ ! -f "$state/replay.pcap" ]; then
	jasper sensor gen --out "$state/replay.pcap.tmp" --darknet "$SENSOR_DARKNET"
	mv "$state/replay.pcap.tmp" "$state/replay.pcap"
fi
exec jasper sensor run --config "/etc/jasper/$SENSOR_ID.yaml"
