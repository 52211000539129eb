# Sourced by .ci/run (set -euo pipefail): installs node and npm if missing and
# the pinned npm standardwebhooks reference library into a cache folder; the
# alerting webhook tests run it with node to verify our signatures with an
# independent implementation. Exports JASPER_TEST_NODE_MODULES. Also makes
# sure gpg is there, which verifies the alert e-mail's PGP signature.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "-- installing nodejs npm"
  apt-get install -y -qq nodejs npm >/dev/null
fi
if ! command -v gpg >/dev/null 2>&1; then
  echo "-- installing gnupg"
  apt-get install -y -qq gnupg >/dev/null
fi
JASPER_NODE_DIR=${JASPER_NODE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/jasper/node-standardwebhooks}
JASPER_SW_VERSION=1.1.1
mkdir -p "$JASPER_NODE_DIR"
if [ "$(node -p "try{require('$JASPER_NODE_DIR/node_modules/standardwebhooks/package.json').version}catch(e){''}")" != "$JASPER_SW_VERSION" ]; then
  npm install --prefix "$JASPER_NODE_DIR" --no-audit --no-fund --silent "standardwebhooks@$JASPER_SW_VERSION" >/dev/null
fi
export JASPER_TEST_NODE_MODULES="$JASPER_NODE_DIR/node_modules"
echo "-- standardwebhooks $JASPER_SW_VERSION in $JASPER_TEST_NODE_MODULES (node $(node --version))"
