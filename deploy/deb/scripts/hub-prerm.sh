#!/bin/sh
# prerm of jasper-hub: stop the service and withdraw the alternative.
set -e
if [ "$1" = remove ] || [ "$1" = deconfigure ]; then
	if [ -d /run/systemd/system ]; then
		systemctl stop jasper-hub.service >/dev/null 2>&1 || true
	fi
	update-alternatives --remove jasper /usr/lib/jasper-hub/jasper
fi
