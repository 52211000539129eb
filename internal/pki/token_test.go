package pki

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func sensorID(prefixes ...string) Identity {
	id := Identity{Role: RoleSensor, ID: "s1", Country: "JP"}
	for _, p := range prefixes {
		id.Prefixes = append(id.Prefixes, netip.MustParsePrefix(p))
	}
	return id
}

func TestJoinTokenRoundTrip(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	s, tok, err := ca.NewJoinToken(sensorID("192.0.2.0/24", "2001:db8::/32"), now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(s, "jasper1.") {
		t.Fatalf("token %q lacks its prefix", s)
	}
	got, err := VerifyJoinToken(s, ca.Cert)
	if err != nil {
		t.Fatal(err)
	}
	if got.IDString() != tok.IDString() || !SameScope(got.Identity, sensorID("2001:db8::/32", "192.0.2.0/24")) {
		t.Fatalf("round trip: got %+v want %+v", got, tok)
	}
	if got.Expired(now.Add(23*time.Hour)) || !got.Expired(now.Add(24*time.Hour)) {
		t.Fatalf("expiry at %s wrong", got.ExpiresAt)
	}

	other, _ := NewCA("other", time.Hour)
	if _, err := VerifyJoinToken(s, other.Cert); !errors.Is(err, ErrBadToken) {
		t.Fatalf("token verified against another CA: %v", err)
	}
	// Flip one character of the body: the signature must no longer verify.
	b := []byte(s)
	i := len("jasper1.") + 5
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	if _, err := VerifyJoinToken(string(b), ca.Cert); err == nil {
		t.Fatal("tampered token verified")
	}
	if _, _, err := ca.NewJoinToken(Identity{Role: RoleHub, ID: "h"}, now, time.Hour); err == nil {
		t.Fatal("token for a hub was made")
	}
	if _, _, err := ca.NewJoinToken(sensorID(), now, time.Hour); err == nil {
		t.Fatal("token for a sensor without prefixes was made")
	}
}

func TestCSRRoundTrip(t *testing.T) {
	key, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	want := sensorID("198.51.100.0/24")
	der, err := NewCSR(key, want)
	if err != nil {
		t.Fatal(err)
	}
	csr, got, err := ParseCSR(der)
	if err != nil {
		t.Fatal(err)
	}
	if !SameScope(got, want) || !key.PublicKey.Equal(csr.PublicKey) {
		t.Fatalf("got %v, want %v", got, want)
	}
	der[len(der)-3] ^= 0xff // break the signature
	if _, _, err := ParseCSR(der); !errors.Is(err, ErrBadCSR) {
		t.Fatalf("broken CSR accepted: %v", err)
	}
	if SameScope(want, sensorID("198.51.100.0/25")) || SameScope(want, Identity{Role: RoleSensor, ID: "s1", Country: "FR", Prefixes: want.Prefixes}) {
		t.Fatal("SameScope ignores a difference")
	}
}

func FuzzParseJoinToken(f *testing.F) {
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	s, _, err := ca.NewJoinToken(sensorID("192.0.2.0/24"), time.Unix(1_800_000_000, 0), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(s)
	f.Add("jasper1.")
	f.Add("jasper1.AAAA.AAAA")
	f.Add("jasper1." + strings.Repeat("A", 5000))
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, body, sig, err := ParseJoinToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("error %v does not wrap ErrBadToken", err)
			}
			return
		}
		if len(tok.ID) != 16 || tok.Identity.Validate() != nil || len(body) == 0 || len(sig) == 0 {
			t.Fatalf("accepted a token with unusable fields: %+v", tok)
		}
		_, _ = VerifyJoinToken(s, ca.Cert)
	})
}

func FuzzParseCSR(f *testing.F) {
	key, _ := GenerateKey()
	der, err := NewCSR(key, sensorID("192.0.2.0/24"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(der)
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, id, err := ParseCSR(b)
		if err == nil && id.Validate() != nil {
			t.Fatalf("accepted an invalid identity %v", id)
		}
	})
}
