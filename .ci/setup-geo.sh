# Sourced by .ci/run (set -euo pipefail): builds the geo databases used by
# enrichment (deploy/geo/build.sh: `npm pack` of the pinned ip-location-db
# packages into a cache, then `jasper geo build`) and exports
# JASPER_TEST_GEO_DIR for the tests that read the real databases.
# The cache and the output live under ~/.cache, so a machine that kept them
# skips the fetch; VERSION decides whether a rebuild is needed.
if ! command -v npm >/dev/null 2>&1; then
  echo "-- installing npm"
  apt-get install -y -qq npm >/dev/null
fi
JASPER_TEST_GEO_DIR=${JASPER_TEST_GEO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jasper/geo-db}
deploy/geo/build.sh "$JASPER_TEST_GEO_DIR"
export JASPER_TEST_GEO_DIR
echo "-- geo databases in $JASPER_TEST_GEO_DIR: $(grep build_date "$JASPER_TEST_GEO_DIR/VERSION")"
