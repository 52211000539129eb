# Sourced by .ci/run: tools the packaging tests (deploy/deploytest) use.
# dpkg and dpkg-deb come with every Debian system; systemd-analyze (package
# systemd) verifies the units and scores their hardening. nfpm itself is a
# Go tool pinned in go.mod.
if ! command -v systemd-analyze >/dev/null 2>&1; then
	apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
