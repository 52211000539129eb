package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"google.golang.org/protobuf/proto"
)

// Domain-separation prefixes of the signatures the enrolment protocol
// makes, so that no signature can be replayed as another kind.
const (
	DomainJoinToken = "jasper-join-token-v1"
	DomainChallenge = "jasper-challenge-v1"
	DomainEnrol     = "jasper-enrol-v1"
	DomainReattest  = "jasper-reattest-v1"
)

// joinTokenPrefix starts every join token, so a token is recognisable in a
// shell history or a ticket and a future format can use another prefix.
const joinTokenPrefix = "jasper1."

// maxJoinTokenLen bounds what ParseJoinToken reads.
const maxJoinTokenLen = 4096

// ErrBadToken is returned for a join token that does not parse or whose
// signature does not verify.
var ErrBadToken = errors.New("bad join token")

// JoinToken is a one-time, expiring permission for one sensor to enrol with
// the identity it binds. It is signed by the federation CA key, so every hub
// verifies it with the CA certificate alone; its one-time use is recorded
// through raft by token id.
type JoinToken struct {
	ID        []byte // 16 random bytes
	Identity  Identity
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// IDString is the token id in hex, as logs and errors show it.
func (t *JoinToken) IDString() string { return hex.EncodeToString(t.ID) }

// Expired reports whether the token has expired at now.
func (t *JoinToken) Expired(now time.Time) bool { return !now.Before(t.ExpiresAt) }

// SignBlob signs SHA-256(domain || 0 || msg) with key (ASN.1 ECDSA).
func SignBlob(key crypto.Signer, domain string, msg ...[]byte) ([]byte, error) {
	return key.Sign(rand.Reader, blobDigest(domain, msg), crypto.SHA256)
}

// VerifyBlob checks a SignBlob signature with an ECDSA public key.
func VerifyBlob(pub crypto.PublicKey, sig []byte, domain string, msg ...[]byte) bool {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return false
	}
	return ecdsa.VerifyASN1(k, blobDigest(domain, msg), sig)
}

func blobDigest(domain string, msg [][]byte) []byte {
	h := sha256.New()
	h.Write([]byte(domain))
	h.Write([]byte{0})
	for _, m := range msg {
		h.Write(m)
	}
	return h.Sum(nil)
}

// NewJoinToken signs a join token for a sensor identity, valid from now for
// ttl, and returns its text form.
func (ca *CA) NewJoinToken(id Identity, now time.Time, ttl time.Duration) (string, *JoinToken, error) {
	if id.Role != RoleSensor {
		return "", nil, fmt.Errorf("join tokens are for sensors, not %s", id.Role)
	}
	if err := id.Validate(); err != nil {
		return "", nil, err
	}
	if ttl <= 0 {
		return "", nil, errors.New("token ttl must be positive")
	}
	tid := make([]byte, 16)
	if _, err := rand.Read(tid); err != nil {
		return "", nil, err
	}
	c := &jasperv1.JoinTokenClaims{
		TokenId:   tid,
		SensorId:  id.ID,
		Country:   id.Country,
		IssuedAt:  now.Unix(),
		ExpiresAt: now.Add(ttl).Unix(),
	}
	for _, p := range id.Prefixes {
		c.Prefixes = append(c.Prefixes, p.Masked().String())
	}
	body, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		return "", nil, err
	}
	sig, err := SignBlob(ca.Key, DomainJoinToken, body)
	if err != nil {
		return "", nil, fmt.Errorf("sign join token: %w", err)
	}
	tok, err := claimsToken(c)
	if err != nil {
		return "", nil, err
	}
	enc := base64.RawURLEncoding
	return joinTokenPrefix + enc.EncodeToString(body) + "." + enc.EncodeToString(sig), tok, nil
}

// ParseJoinToken decodes a token's text form without checking its
// signature: the sensor reads its own identity from it, and a hub then calls
// VerifyJoinToken. It returns the signed body and the signature too.
func ParseJoinToken(s string) (tok *JoinToken, body, sig []byte, err error) {
	s = strings.TrimSpace(s)
	if len(s) > maxJoinTokenLen {
		return nil, nil, nil, fmt.Errorf("%w: longer than %d bytes", ErrBadToken, maxJoinTokenLen)
	}
	rest, ok := strings.CutPrefix(s, joinTokenPrefix)
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: does not start with %q", ErrBadToken, joinTokenPrefix)
	}
	b64body, b64sig, ok := strings.Cut(rest, ".")
	if !ok {
		return nil, nil, nil, fmt.Errorf("%w: want BODY.SIGNATURE after the prefix", ErrBadToken)
	}
	enc := base64.RawURLEncoding
	if body, err = enc.DecodeString(b64body); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: body: %v", ErrBadToken, err)
	}
	if sig, err = enc.DecodeString(b64sig); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: signature: %v", ErrBadToken, err)
	}
	if len(sig) == 0 {
		return nil, nil, nil, fmt.Errorf("%w: empty signature", ErrBadToken)
	}
	var c jasperv1.JoinTokenClaims
	if err := proto.Unmarshal(body, &c); err != nil {
		return nil, nil, nil, fmt.Errorf("%w: body: %v", ErrBadToken, err)
	}
	tok, err = claimsToken(&c)
	if err != nil {
		return nil, nil, nil, err
	}
	return tok, body, sig, nil
}

func claimsToken(c *jasperv1.JoinTokenClaims) (*JoinToken, error) {
	if len(c.TokenId) != 16 {
		return nil, fmt.Errorf("%w: token id is %d bytes, want 16", ErrBadToken, len(c.TokenId))
	}
	if c.ExpiresAt <= c.IssuedAt {
		return nil, fmt.Errorf("%w: expires before it is issued", ErrBadToken)
	}
	id := Identity{Role: RoleSensor, ID: c.SensorId, Country: c.Country}
	for _, p := range c.Prefixes {
		pp, err := netip.ParsePrefix(p)
		if err != nil {
			return nil, fmt.Errorf("%w: prefix %q: %v", ErrBadToken, p, err)
		}
		id.Prefixes = append(id.Prefixes, pp.Masked())
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	return &JoinToken{
		ID:        c.TokenId,
		Identity:  id,
		IssuedAt:  time.Unix(c.IssuedAt, 0),
		ExpiresAt: time.Unix(c.ExpiresAt, 0),
	}, nil
}

// VerifyJoinToken parses a token and checks its signature against the CA
// certificate. It does not check expiry or one-time use.
func VerifyJoinToken(s string, caCert *x509.Certificate) (*JoinToken, error) {
	tok, body, sig, err := ParseJoinToken(s)
	if err != nil {
		return nil, err
	}
	if !VerifyBlob(caCert.PublicKey, sig, DomainJoinToken, body) {
		return nil, fmt.Errorf("%w: signature does not verify against the federation CA", ErrBadToken)
	}
	return tok, nil
}
