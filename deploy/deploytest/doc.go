// Package deploytest checks the deployment artefacts under deploy/: the
// hardened systemd units, the Debian packages built by deploy/deb/build.sh
// (extracted into a scratch root), the Kubernetes manifests and the compose
// file. It holds tests only.
package deploytest
