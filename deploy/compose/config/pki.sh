#!/bin/sh
# The compose federation's PKI, made once into the pki volume: the CA (its
# key signs enrolled sensors' certificates: the hubs read it from
# /pki/ca), the hubs' certificates and an admin certificate. A fresh join
# token per sensor at every start; an enrolled sensor ignores it.
set -eu
if [ ! -f /pki/ca/ca.pem ]; then
	jasper ca init --dir /pki/ca --name "jasper compose CA"
	for h in hub-1 hub-2 hub-3; do
		jasper ca issue --dir /pki/ca --role hub --id "$h" --dns "$h" --out /pki/certs
	done
	jasper ca issue --dir /pki/ca --role admin --id ops --out /pki/certs
fi
mkdir -p /pki/tokens
jasper ca token --dir /pki/ca --id sensor-1 --country JP --prefix 198.51.100.0/24 --ttl 1h >/pki/tokens/sensor-1.token
