#!/bin/sh
# postinst of jasper-hub: the dedicated user, the state folder, the
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
	install -d -o jasper -g jasper -m 0700 /var/lib/jasper-hub
	chgrp jasper /etc/jasper/hub.yaml
	chmod 0640 /etc/jasper/hub.yaml
	update-alternatives --install /usr/bin/jasper jasper /usr/lib/jasper-hub/jasper 30
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	echo "jasper-hub: edit /etc/jasper/hub.yaml (TLS files, raft peers), then systemctl enable --now jasper-hub"
fi
