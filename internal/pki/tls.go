package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// Files names the PEM files of one TLS endpoint.
type Files struct {
	CA   string `yaml:"ca"`
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
}

// Validate checks that all three files are named.
func (f Files) Validate(prefix string) error {
	switch {
	case f.CA == "":
		return fmt.Errorf("%s.ca: missing", prefix)
	case f.Cert == "":
		return fmt.Errorf("%s.cert: missing", prefix)
	case f.Key == "":
		return fmt.Errorf("%s.key: missing", prefix)
	}
	return nil
}

// reloader re-reads the key pair and CA when their files change, so that a
// renewed certificate takes effect on the next handshake without a restart.
type reloader struct {
	files Files
	mu    sync.Mutex
	mod   [3]time.Time
	cert  *tls.Certificate
	pool  *x509.CertPool
}

func newReloader(f Files) (*reloader, error) {
	r := &reloader{files: f}
	if _, _, err := r.get(); err != nil {
		return nil, err
	}
	return r, nil
}

func mtime(p string) time.Time {
	st, err := os.Stat(p)
	if err != nil {
		return time.Time{}
	}
	return st.ModTime()
}

func (r *reloader) get() (*tls.Certificate, *x509.CertPool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := [3]time.Time{mtime(r.files.CA), mtime(r.files.Cert), mtime(r.files.Key)}
	if r.cert != nil && m == r.mod {
		return r.cert, r.pool, nil
	}
	kp, err := tls.LoadX509KeyPair(r.files.Cert, r.files.Key)
	if err != nil {
		if r.cert != nil {
			return r.cert, r.pool, nil // keep the last good pair during a rewrite
		}
		return nil, nil, fmt.Errorf("load key pair %s: %w", r.files.Cert, err)
	}
	caPEM, err := os.ReadFile(r.files.CA)
	if err != nil {
		return nil, nil, fmt.Errorf("read CA %s: %w", r.files.CA, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("CA %s holds no certificate", r.files.CA)
	}
	r.cert, r.pool, r.mod = &kp, pool, m
	return r.cert, r.pool, nil
}

// ServerConfig returns a TLS 1.3 server configuration that requires and
// verifies client certificates against the CA. Files are re-read when they
// change.
func ServerConfig(f Files) (*tls.Config, error) {
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
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    pool,
			}, nil
		},
	}, nil
}

// ClientConfig returns a TLS 1.3 client configuration presenting the key
// pair and verifying the server against the CA. The server must present a
// jasper hub identity; host names are not checked, since hubs are reached by
// address and identified by certificate.
func ClientConfig(f Files) (*tls.Config, error) {
	r, err := newReloader(f)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below against the federation CA
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _, err := r.get()
			return cert, err
		},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, pool, err := r.get()
			if err != nil {
				return err
			}
			return VerifyPeer(raw, pool, RoleHub)
		},
	}, nil
}

// VerifyPeer checks a raw peer chain against pool and that the leaf binds
// the wanted role.
func VerifyPeer(raw [][]byte, pool *x509.CertPool, want Role) error {
	if len(raw) == 0 {
		return errors.New("peer sent no certificate")
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		if c, err := x509.ParseCertificate(r); err == nil {
			inter.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("peer certificate: %w", err)
	}
	id, err := FromCertificate(leaf)
	if err != nil {
		return err
	}
	if id.Role != want {
		return fmt.Errorf("peer is %s, want role %s", id, want)
	}
	return nil
}
