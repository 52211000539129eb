#!/bin/sh
# postinst of jasper-sensor: the dedicated user, the state folder, the
# /usr/bin/jasper alternative. The service is not started: it needs its
# configuration (and, for a sensor, enrolment) first.
set -e
if [ "$1" = configure ]; then
	if ! getent group jasper >/dev/null; then
		groupadd --system jasper
	fi
	if ! getent passwd jasper >/dev/null; then
		useradd --system --gid jasper --home-dir /nonexistent --no-create-home \
			--shell /usr/sbin/nologin --comment "jasper darknet federation" jasper
	fi
	install -d -o jasper -g jasper -m 0700 /var/lib/jasper-sensor
	chgrp jasper /etc/jasper/sensor.yaml
	chmod 0640 /etc/jasper/sensor.yaml
	update-alternatives --install /usr/bin/jasper jasper /usr/lib/jasper-sensor/jasper 20
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	if [ ! -e /var/lib/jasper-sensor/longterm-key.pem ]; then
		echo "jasper-sensor: enrol this sensor, then start it:"
		echo "  sudo -u jasper jasper sensor enrol --hub HUB:7444 --token TOKEN --ca CA.pem --dir /var/lib/jasper-sensor"
		echo "  edit /etc/jasper/sensor.yaml; systemctl enable --now jasper-sensor"
	fi
fi
