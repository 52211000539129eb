# Sourced by .ci/run: installs Debian's chromium for the dashboards'
# headless browser tests (dashboards/browser_test.go finds it on PATH).
if ! command -v chromium >/dev/null 2>&1; then
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
fi
chromium --version
