// Package pki is the federation's certificate authority and the identity it
// binds into certificates.
//
// Every certificate names one principal in a URI SAN of the form
// jasper://ROLE/ID (roles: hub, sensor, admin, analyst). A sensor
// certificate also carries, in a private X.509 extension, the sensor's
// country code and the darknet prefixes it may report on; the hub refuses
// any batch about other prefixes (DESIGN.md promise 4). Keys are ECDSA
// P-256; all TLS is 1.3 with client certificates required.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Role is what a principal may do.
type Role string

// The roles a certificate can bind.
const (
	RoleHub     Role = "hub"
	RoleSensor  Role = "sensor"
	RoleAdmin   Role = "admin"
	RoleAnalyst Role = "analyst"
)

// OIDSensorScope identifies the private extension holding a sensor's country
// and prefixes. The arc is jasper's own under the private-enterprise tree.
var OIDSensorScope = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 59999, 1, 1}

// Errors returned when a certificate does not carry a usable identity.
var (
	ErrNoIdentity = errors.New("certificate carries no jasper identity")
	ErrBadScope   = errors.New("certificate carries a malformed sensor scope")
)

// Identity is what a certificate says about its holder.
type Identity struct {
	Role Role
	ID   string
	// Country is the ISO 3166-1 alpha-2 code of a sensor's or analyst's
	// constituency (upper case); empty for hubs and admins.
	Country string
	// Prefixes are the darknet prefixes a sensor may report on.
	Prefixes []netip.Prefix
}

// URI is the SAN form of the identity.
func (id Identity) URI() *url.URL {
	return &url.URL{Scheme: "jasper", Host: string(id.Role), Path: "/" + id.ID}
}

func (id Identity) String() string { return id.URI().String() }

// Covers reports whether every address of p lies inside one of the
// identity's prefixes.
func (id Identity) Covers(p netip.Prefix) bool {
	p = p.Masked()
	for _, q := range id.Prefixes {
		if q.Addr().Is4() != p.Addr().Is4() {
			continue
		}
		if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// ContainsAddr reports whether a lies inside one of the identity's prefixes.
func (id Identity) ContainsAddr(a netip.Addr) bool {
	a = a.Unmap()
	for _, q := range id.Prefixes {
		if q.Contains(a) {
			return true
		}
	}
	return false
}

type scopeASN1 struct {
	Country  string `asn1:"printable"`
	Prefixes []string
}

// Validate checks the identity's fields.
func (id Identity) Validate() error {
	switch id.Role {
	case RoleHub, RoleSensor, RoleAdmin, RoleAnalyst:
	default:
		return fmt.Errorf("unknown role %q (want hub, sensor, admin or analyst)", id.Role)
	}
	if id.ID == "" || strings.ContainsAny(id.ID, "/ \t\n") || len(id.ID) > 64 {
		return fmt.Errorf("bad id %q: 1-64 characters, no slash or space", id.ID)
	}
	if id.Country != "" && !validCountry(id.Country) {
		return fmt.Errorf("bad country %q: want two upper-case letters", id.Country)
	}
	if id.Role == RoleSensor {
		if id.Country == "" {
			return errors.New("a sensor needs a country")
		}
		if len(id.Prefixes) == 0 {
			return errors.New("a sensor needs at least one darknet prefix")
		}
	}
	return nil
}

func validCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}

// FromCertificate reads the identity bound in cert.
func FromCertificate(cert *x509.Certificate) (Identity, error) {
	var id Identity
	found := false
	for _, u := range cert.URIs {
		if u.Scheme != "jasper" {
			continue
		}
		id.Role = Role(u.Host)
		id.ID = strings.TrimPrefix(u.Path, "/")
		found = true
		break
	}
	if !found {
		return Identity{}, ErrNoIdentity
	}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(OIDSensorScope) {
			continue
		}
		var s scopeASN1
		rest, err := asn1.Unmarshal(ext.Value, &s)
		if err != nil || len(rest) != 0 {
			return Identity{}, fmt.Errorf("%w: %v", ErrBadScope, err)
		}
		id.Country = s.Country
		for _, p := range s.Prefixes {
			pp, err := netip.ParsePrefix(p)
			if err != nil {
				return Identity{}, fmt.Errorf("%w: prefix %q: %v", ErrBadScope, p, err)
			}
			id.Prefixes = append(id.Prefixes, pp.Masked())
		}
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrNoIdentity, err)
	}
	return id, nil
}

// CA is a certificate authority: a certificate and its signing key.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	// PEM is the CA certificate in PEM form, as written to ca.pem.
	PEM []byte
}

// NewCA creates a self-signed federation CA valid for the given duration.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"jasper federation"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// IssueRequest describes a certificate to issue.
type IssueRequest struct {
	Identity Identity
	// PublicKey of the holder; nil means generate a key pair.
	PublicKey crypto.PublicKey
	// DNSNames and IPs for server certificates (hubs).
	DNSNames []string
	IPs      []net.IP
	Validity time.Duration
	// NotBefore defaults to now minus a small clock-skew allowance.
	NotBefore time.Time
}

// Issued is an issued certificate, with its key when the CA made it.
type Issued struct {
	Cert    *x509.Certificate
	CertPEM []byte
	KeyPEM  []byte // nil when the request brought its own public key
}

// Issue signs a certificate for req.
func (ca *CA) Issue(req IssueRequest) (*Issued, error) {
	if err := req.Identity.Validate(); err != nil {
		return nil, err
	}
	if req.Validity <= 0 {
		return nil, errors.New("validity must be positive")
	}
	var keyPEM []byte
	pub := req.PublicKey
	if pub == nil {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		pub = &key.PublicKey
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, err
		}
		keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	nb := req.NotBefore
	if nb.IsZero() {
		nb = time.Now().Add(-5 * time.Minute)
	}
	na := nb.Add(req.Validity)
	if na.After(ca.Cert.NotAfter) {
		na = ca.Cert.NotAfter
	}
	id := req.Identity
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: id.ID, OrganizationalUnit: []string{string(id.Role)}, Country: countryList(id.Country)},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.URI()},
		DNSNames:     req.DNSNames,
		IPAddresses:  req.IPs,
	}
	if id.Country != "" || len(id.Prefixes) > 0 {
		s := scopeASN1{Country: id.Country}
		for _, p := range id.Prefixes {
			s.Prefixes = append(s.Prefixes, p.Masked().String())
		}
		val, err := asn1.Marshal(s)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: OIDSensorScope, Value: val})
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Issued{Cert: cert, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), KeyPEM: keyPEM}, nil
}

func countryList(c string) []string {
	if c == "" {
		return nil
	}
	return []string{c}
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err)
	}
	return n
}

// Save writes the CA as ca.pem and ca-key.pem (mode 0600) under dir.
func (ca *CA) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "ca-key.pem"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "ca.pem"), ca.PEM, 0o644)
}

// LoadCA reads ca.pem and ca-key.pem from dir.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "ca.pem"))
	if err != nil {
		return nil, fmt.Errorf("load CA: %w", err)
	}
	cert, err := ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA %s: %w", filepath.Join(dir, "ca.pem"), err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("load CA key: %w", err)
	}
	key, err := ParseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load CA key %s: %w", filepath.Join(dir, "ca-key.pem"), err)
	}
	return &CA{Cert: cert, Key: key, PEM: certPEM}, nil
}

// ParseCertPEM parses the first CERTIFICATE block.
func ParseCertPEM(b []byte) (*x509.Certificate, error) {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return nil, errors.New("no CERTIFICATE block in PEM")
		}
		if blk.Type == "CERTIFICATE" {
			return x509.ParseCertificate(blk.Bytes)
		}
	}
}

// ParseKeyPEM parses a PKCS#8 or EC private key.
func ParseKeyPEM(b []byte) (crypto.Signer, error) {
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, errors.New("no PEM block in key file")
	}
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, errors.New("key is not a signing key")
		}
		return s, nil
	}
	return x509.ParseECPrivateKey(blk.Bytes)
}

// WriteIssued writes NAME.pem and NAME-key.pem under dir.
func WriteIssued(dir, name string, is *Issued) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if is.KeyPEM != nil {
		if err := os.WriteFile(filepath.Join(dir, name+"-key.pem"), is.KeyPEM, 0o600); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, name+".pem"), is.CertPEM, 0o644)
}
