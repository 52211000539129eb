// Package internal holds the few helpers every jasper binary shares: the
// federation PKI and identity (pki), strict YAML configuration (config) and
// observability — logging, metrics and health endpoints (obs).
package internal
