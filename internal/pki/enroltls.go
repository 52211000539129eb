package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
)

// EnrolServerConfig returns a TLS 1.3 server configuration for a hub's
// enrolment port: the hub presents its certificate, and a client
// certificate is verified against the CA when one is given but not required,
// since a sensor that enrols or re-attests has none (or an expired one,
// which it must not present). Handlers read the verified chain to authorise
// renewal and revocation. Files are re-read when they change.
func EnrolServerConfig(f Files) (*tls.Config, error) {
	r, err := newReloader(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool, err := r.get()
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.VerifyClientCertIfGiven,
				ClientCAs:    pool,
			}, nil
		},
	}, nil
}

// PinnedClientConfig returns a TLS 1.3 client configuration with no client
// certificate that accepts only a server whose certificate chains to the
// given CA (PEM) and binds the hub role: what a sensor uses before it has a
// certificate of its own.
func PinnedClientConfig(caPEM []byte) (*tls.Config, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("pinned CA file holds no certificate")
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the pinned CA
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return VerifyPeer(raw, pool, RoleHub)
		},
	}, nil
}
