package dashboards

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"net/netip"

	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/jasperfed/jasper/internal/config"
)

// Roles of accounts.
const (
	// RoleAnalyst sees regional aggregates and the host-level data of its
	// constituency, and acknowledges or silences its findings.
	RoleAnalyst = "analyst"
	// RoleCoordinator runs the federation: it sees every constituency.
	RoleCoordinator = "coordinator"
)

// Constituency is what an analyst answers for: source countries and/or
// organisation prefixes.
type Constituency struct {
	Countries []string `yaml:"countries" json:"countries,omitempty"`
	Prefixes  []string `yaml:"prefixes" json:"prefixes,omitempty"`

	prefixes []netip.Prefix
}

// Contains reports whether a host with this address and country belongs to
// the constituency.
func (c *Constituency) Contains(addr netip.Addr, country string) bool {
	if country != "" && slices.Contains(c.Countries, country) {
		return true
	}
	addr = addr.Unmap()
	for _, p := range c.prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Account is one dashboard user, as read from the accounts file.
type Account struct {
	Name string `yaml:"name"`
	Role string `yaml:"role"`
	// PasswordBcrypt is a bcrypt hash (see `jasper dashboards passwd`).
	PasswordBcrypt string       `yaml:"password_bcrypt"`
	Constituency   Constituency `yaml:"constituency"`
	// TokensSHA256 are the hex SHA-256 digests of the account's API tokens
	// (scripts send the token as "Authorization: Bearer TOKEN").
	TokensSHA256 []string `yaml:"tokens_sha256"`

	tokens [][32]byte
}

// seesAll reports whether the account sees every constituency.
func (a *Account) seesAll() bool { return a.Role == RoleCoordinator }

// maysee reports whether the account may see host-level data of a host.
func (a *Account) maysee(addr netip.Addr, country string) bool {
	return a.seesAll() || a.Constituency.Contains(addr, country)
}

// scope is the account's host-level scope for a Source.
func (a *Account) scope() Scope {
	if a.seesAll() {
		return Scope{All: true}
	}
	return Scope{Countries: a.Constituency.Countries, Prefixes: a.Constituency.prefixes}
}

// accountsFile is the YAML layout of the accounts file.
type accountsFile struct {
	Accounts []Account `yaml:"accounts"`
}

var (
	identRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	nameRE    = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._@-]{0,63}$`)
	countryRE = regexp.MustCompile(`^[A-Z]{2}$`)
)

// LoadAccounts reads and checks an accounts file.
func LoadAccounts(path string) ([]*Account, error) {
	var f accountsFile
	if err := config.Load(path, &f); err != nil {
		return nil, err
	}
	accts, err := checkAccounts(f.Accounts)
	if err != nil {
		return nil, fmt.Errorf("accounts %s: %w", path, err)
	}
	return accts, nil
}

func checkAccounts(in []Account) ([]*Account, error) {
	seen := map[string]bool{}
	tokens := map[[32]byte]bool{}
	var out []*Account
	for i := range in {
		a := in[i]
		key := fmt.Sprintf("accounts[%d]", i)
		if !nameRE.MatchString(a.Name) {
			return nil, fmt.Errorf("%s.name: %q is not a valid account name", key, a.Name)
		}
		if seen[a.Name] {
			return nil, fmt.Errorf("%s.name: %q appears twice", key, a.Name)
		}
		seen[a.Name] = true
		if a.Role == "admin" {
			a.Role = RoleCoordinator
		}
		if a.Role != RoleAnalyst && a.Role != RoleCoordinator {
			return nil, fmt.Errorf("%s.role: %q is not analyst or coordinator", key, a.Role)
		}
		if a.PasswordBcrypt != "" {
			if _, err := bcrypt.Cost([]byte(a.PasswordBcrypt)); err != nil {
				return nil, fmt.Errorf("%s.password_bcrypt: %w", key, err)
			}
		}
		for j, c := range a.Constituency.Countries {
			if !countryRE.MatchString(c) {
				return nil, fmt.Errorf("%s.constituency.countries[%d]: %q is not an ISO 3166 alpha-2 code", key, j, c)
			}
		}
		for j, p := range a.Constituency.Prefixes {
			pp, err := netip.ParsePrefix(p)
			if err != nil {
				return nil, fmt.Errorf("%s.constituency.prefixes[%d]: %w", key, j, err)
			}
			a.Constituency.prefixes = append(a.Constituency.prefixes, pp.Masked())
		}
		if a.Role == RoleAnalyst && len(a.Constituency.Countries) == 0 && len(a.Constituency.prefixes) == 0 {
			return nil, fmt.Errorf("%s.constituency: an analyst needs countries or prefixes", key)
		}
		for j, t := range a.TokensSHA256 {
			b, err := hex.DecodeString(strings.TrimSpace(t))
			if err != nil || len(b) != 32 {
				return nil, fmt.Errorf("%s.tokens_sha256[%d]: want 64 hex digits", key, j)
			}
			d := [32]byte(b)
			if tokens[d] {
				return nil, fmt.Errorf("%s.tokens_sha256[%d]: token used twice", key, j)
			}
			tokens[d] = true
			a.tokens = append(a.tokens, d)
		}
		out = append(out, &a)
	}
	return out, nil
}

// HashPassword returns a bcrypt hash for the accounts file.
func HashPassword(password string) (string, error) {
	if len(password) < 8 {
		return "", fmt.Errorf("password shorter than 8 characters")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// TokenDigest returns the hex SHA-256 of an API token, as the accounts
// file stores it.
func TokenDigest(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

// dummyHash is compared against when a login names no account, so that
// unknown names take as long as wrong passwords.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("no such account"), bcrypt.MinCost)

type accountSet struct {
	byName  map[string]*Account
	byToken map[[32]byte]*Account
}

func newAccountSet(accts []*Account) *accountSet {
	s := &accountSet{byName: map[string]*Account{}, byToken: map[[32]byte]*Account{}}
	for _, a := range accts {
		s.byName[a.Name] = a
		for _, t := range a.tokens {
			s.byToken[t] = a
		}
	}
	return s
}

// check verifies a name and password.
func (s *accountSet) check(name, password string) *Account {
	a := s.byName[name]
	if a == nil || a.PasswordBcrypt == "" {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(password))
		return nil
	}
	if bcrypt.CompareHashAndPassword([]byte(a.PasswordBcrypt), []byte(password)) != nil {
		return nil
	}
	return a
}

// token finds the account of a bearer token.
func (s *accountSet) token(tok string) *Account {
	d := sha256.Sum256([]byte(tok))
	a := s.byToken[d]
	if a == nil {
		return nil
	}
	// The map lookup already matched; compare again in constant time for
	// good measure against a partial-match timing oracle.
	for _, t := range a.tokens {
		if subtle.ConstantTimeCompare(t[:], d[:]) == 1 {
			return a
		}
	}
	return nil
}
