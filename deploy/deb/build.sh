#!/usr/bin/env bash
# Builds the jasper binary and the jasper-sensor and jasper-hub Debian
# packages (nfpm, pinned as a Go tool in go.mod) into OUTDIR.
#
#   deploy/deb/build.sh OUTDIR
#
# Environment: JASPER_VERSION (default: the version in cmd/jasper/main.go,
# with "-" turned into "~" so that pre-releases sort first), GOARCH (default:
# the host's). The configs installed as /etc/jasper/ROLE.yaml are made from
# deploy/sensor.example.yaml and deploy/hub.example.yaml (see stage_config).
set -euo pipefail
out=${1:?usage: deploy/deb/build.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=${JASPER_VERSION:-$(sed -n 's/^var version = "\(.*\)"$/\1/p' "$root/cmd/jasper/main.go")}
version=${version:-0.0.0}
goarch=${GOARCH:-$(cd "$root" && go env GOARCH)}
case "$goarch" in
amd64 | arm64 | riscv64 | ppc64le | s390x) arch=$goarch ;;
386) arch=i386 ;;
arm) arch=armhf ;;
*) echo "build.sh: no Debian architecture for GOARCH=$goarch" >&2; exit 1 ;;
esac

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

echo "== go build jasper $version ($goarch)"
# cgo stays as the toolchain has it: gopacket's afpacket needs it.
(cd "$root" && GOOS=linux GOARCH=$goarch go build \
	-ldflags "-s -w -X main.version=$version" -o "$stage/jasper" ./cmd/jasper)

# The packaged configs are the examples with their paths moved to where
# the hardened units let each service write (StateDirectory=jasper-ROLE under
# ProtectSystem=strict), and the sensor's TLS files to where
# `jasper sensor enrol --dir /var/lib/jasper-sensor` puts them and its
# renewer keeps them fresh.
stage_config() { # ROLE SED-SCRIPT
	local src="$root/deploy/$1.example.yaml"
	if [ ! -f "$src" ]; then
		echo "build.sh: $src is missing" >&2
		exit 1
	fi
	sed -e "$2" "$src" >"$stage/$1.yaml"
}
# The sensor renews its own certificate: the example's tls: block goes and
# its commented enrol: block (state in /var/lib/jasper-sensor) comes in.
stage_config sensor '
s#/var/lib/jasper/spool#/var/lib/jasper-sensor/spool#
/^tls:$/,/^  key:/d
s/^# enrol:$/enrol:/
s/^#   \(hubs\|dir\|renew_at\):/  \1:/'
grep -q '^enrol:$' "$stage/sensor.yaml" || { echo "build.sh: no enrol: block made from deploy/sensor.example.yaml" >&2; exit 1; }
stage_config hub '
s#^data_dir: .*#data_dir: /var/lib/jasper-hub#'

for role in sensor hub; do
	echo "== nfpm jasper-$role"
	(cd "$here" && JASPER_BIN="$stage/jasper" JASPER_VERSION="${version//-/\~}" JASPER_ARCH="$arch" JASPER_STAGE="$stage" \
		go tool nfpm package --config "jasper-$role.yaml" --packager deb --target "$out/")
done
ls -l "$out"/*.deb
