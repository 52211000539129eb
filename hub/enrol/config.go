// Package enrol is the hub side of sensor enrolment: it verifies join
// tokens, signs sensor certificates from CSRs, renews them, re-attests
// sensors that were offline past their certificate's life, and keeps the
// revocation list.
//
// Two pieces, wired by the hub:
//
//   - Module, a deterministic state machine hosted by the raft store under
//     the name "enrol": it records consumed join tokens (so a token works
//     once on the whole federation), enrolled sensors with their long-term
//     keys, the serials of their live certificates, and revocations. Ingest
//     asks it Revoked(sensor id, serial) for every stream and batch.
//   - Service, the gRPC EnrolService: it checks requests against the CA and
//     the Module, signs certificates with the CA key, and records every
//     certificate it hands out through raft before returning it.
//
// A certificate leaves the hub only after its record is committed, so a
// revocation reaches every certificate ever issued by enrolment.
package enrol

import (
	"fmt"
	"time"

	"github.com/jasperfed/jasper/internal/config"
)

// Config is the hub's `enrol:` section.
type Config struct {
	// Listen is the enrolment port (TLS, client certificate optional):
	// sensors enrol, renew and re-attest there. Empty: not served on a port
	// of its own (the hub may still register the service on its mTLS port
	// for renewal and revocation).
	Listen string `yaml:"listen"`
	// CADir holds ca.pem and ca-key.pem: the CA key signs certificates.
	CADir string `yaml:"ca_dir"`
	// CertValidity is the lifetime of a sensor certificate.
	CertValidity config.Duration `yaml:"cert_validity"`
	// MaxOffline bounds re-attestation: a sensor whose last certificate
	// expired longer ago than this needs a new join token. 0: no bound.
	MaxOffline config.Duration `yaml:"max_offline"`
	// ChallengeTTL is how long a re-attestation challenge stays valid.
	ChallengeTTL config.Duration `yaml:"challenge_ttl"`
	// ProposeTimeout bounds the raft round trip of one request.
	ProposeTimeout config.Duration `yaml:"propose_timeout"`
}

// DefaultConfig returns the defaults: port 7444, 24 h certificates,
// re-attestation up to 30 days after the last certificate expired.
func DefaultConfig() Config {
	return Config{
		Listen:         ":7444",
		CertValidity:   config.Duration(24 * time.Hour),
		MaxOffline:     config.Duration(30 * 24 * time.Hour),
		ChallengeTTL:   config.Duration(2 * time.Minute),
		ProposeTimeout: config.Duration(10 * time.Second),
	}
}

// Validate checks the configuration and names the key at fault.
func (c Config) Validate() error {
	switch {
	case c.CertValidity.D() < time.Minute:
		return fmt.Errorf("enrol.cert_validity: %s is shorter than 1m", c.CertValidity.D())
	case c.CertValidity.D() > 90*24*time.Hour:
		return fmt.Errorf("enrol.cert_validity: %s is longer than 90 days; certificates are meant to be short-lived", c.CertValidity.D())
	case c.MaxOffline.D() < 0:
		return fmt.Errorf("enrol.max_offline: negative")
	case c.ChallengeTTL.D() < time.Second:
		return fmt.Errorf("enrol.challenge_ttl: %s is shorter than 1s", c.ChallengeTTL.D())
	case c.ProposeTimeout.D() <= 0:
		return fmt.Errorf("enrol.propose_timeout: must be positive")
	}
	return nil
}
