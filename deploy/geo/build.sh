#!/usr/bin/env bash
# Builds the enrichment databases into OUT (default /var/lib/jasper/geo):
# OUT/country.mmdb, OUT/asn.mmdb, OUT/VERSION and the data licences.
#
# It fetches the pinned ip-location-db packages with `npm pack` into a cache
# folder (JASPER_GEO_CACHE, default ~/.cache/jasper/geo-packages), checks
# their sha256, copies the country database and converts the ASN CSV files
# to a MaxMind DB. Run it from a checkout (it builds jasper) or set JASPER to
# an installed binary. Needs npm and, without JASPER, Go.
set -euo pipefail
OUT=${1:-/var/lib/jasper/geo}
CACHE=${JASPER_GEO_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/jasper/geo-packages}
if [ -z "${JASPER:-}" ]; then
  root=$(cd "$(dirname "$0")/../.." && pwd)
  bin=$(mktemp -d /tmp/jasper-geo-build.XXXXXX)
  trap 'rm -rf "$bin"' EXIT
  (cd "$root" && go build -o "$bin/jasper" ./cmd/jasper)
  JASPER=$bin/jasper
fi
"$JASPER" geo build --out "$OUT" --cache "$CACHE"
