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
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// ErrBadCSR is returned for a certificate request that does not parse, whose
// signature does not verify, or that names no usable identity.
var ErrBadCSR = errors.New("bad certificate request")

// GenerateKey makes an ECDSA P-256 key, the only kind the federation uses.
func GenerateKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

// MarshalKeyPEM encodes a private key as a PKCS#8 PEM block.
func MarshalKeyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// NewCSR makes a PKCS#10 request (DER) signed by key that names id in a URI
// SAN and, for a sensor, its country and prefixes in the scope extension.
func NewCSR(key crypto.Signer, id Identity) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	tmpl := &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.ID, OrganizationalUnit: []string{string(id.Role)}},
		URIs:    []*url.URL{id.URI()},
	}
	if id.Country != "" || len(id.Prefixes) > 0 {
		val, err := marshalScope(id)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = append(tmpl.ExtraExtensions, pkix.Extension{Id: OIDSensorScope, Value: val})
	}
	return x509.CreateCertificateRequest(rand.Reader, tmpl, key)
}

func marshalScope(id Identity) ([]byte, error) {
	s := scopeASN1{Country: id.Country}
	for _, p := range id.Prefixes {
		s.Prefixes = append(s.Prefixes, p.Masked().String())
	}
	return asn1.Marshal(s)
}

// ParseCSR parses a DER request, checks its self-signature and returns it
// with the identity it asks for. The identity is validated but not yet
// authorised: the caller compares it with what the requester may have.
func ParseCSR(der []byte) (*x509.CertificateRequest, Identity, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, Identity{}, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, Identity{}, fmt.Errorf("%w: signature: %v", ErrBadCSR, err)
	}
	if _, ok := csr.PublicKey.(*ecdsa.PublicKey); !ok {
		return nil, Identity{}, fmt.Errorf("%w: want an ECDSA key, got %T", ErrBadCSR, csr.PublicKey)
	}
	var id Identity
	found := 0
	for _, u := range csr.URIs {
		if u.Scheme != "jasper" {
			continue
		}
		found++
		id.Role = Role(u.Host)
		id.ID = strings.TrimPrefix(u.Path, "/")
	}
	if found != 1 {
		return nil, Identity{}, fmt.Errorf("%w: want exactly one jasper:// URI, found %d", ErrBadCSR, found)
	}
	for _, ext := range csr.Extensions {
		if !ext.Id.Equal(OIDSensorScope) {
			continue
		}
		var s scopeASN1
		rest, err := asn1.Unmarshal(ext.Value, &s)
		if err != nil || len(rest) != 0 {
			return nil, Identity{}, fmt.Errorf("%w: scope extension: %v", ErrBadCSR, err)
		}
		id.Country = s.Country
		for _, p := range s.Prefixes {
			pp, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, Identity{}, fmt.Errorf("%w: prefix %q: %v", ErrBadCSR, p, err)
			}
			id.Prefixes = append(id.Prefixes, pp.Masked())
		}
	}
	if err := id.Validate(); err != nil {
		return nil, Identity{}, fmt.Errorf("%w: %v", ErrBadCSR, err)
	}
	return csr, id, nil
}

// SameScope reports whether a and b name the same role, id, country and set
// of prefixes (order and duplicates ignored).
func SameScope(a, b Identity) bool {
	if a.Role != b.Role || a.ID != b.ID || a.Country != b.Country {
		return false
	}
	return slices.Equal(prefixSet(a.Prefixes), prefixSet(b.Prefixes))
}

func prefixSet(ps []netip.Prefix) []string {
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.Masked().String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// folder, synced and renamed over path, so a reader (such as the reloading
// TLS configuration) sees the old or the new content, never a mix.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}
