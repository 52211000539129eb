// Package directory is the recipients directory of alert delivery: the
// national CERTs, the organisations that registered their address blocks,
// and who subscribed to which early-warning finding types.
//
// A Directory is read from YAML at start and changed afterwards through the
// admin API as replicated commands, so every hub holds the same one. It is
// plain data: encode it to JSON (secrets included, for the replicated state)
// and use Redacted for anything shown to people. Secrets implement
// slog.LogValuer and fmt.Stringer and never print their value.
package directory

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"net/netip"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/internal/config"
)

// Secret is a credential (webhook signing key, SMTP password). It prints
// and logs as "<redacted>"; Reveal gives the value to the code that uses it.
type Secret string

const redacted = "<redacted>"

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// String implements fmt.Stringer.
func (s Secret) String() string { return redacted }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return redacted }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// Duration is a time.Duration written "90s", "5m" in YAML and JSON.
type Duration time.Duration

// D returns the time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	return d.parse(s)
}

// MarshalYAML writes the duration as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	return d.parse(s)
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) parse(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("bad duration %q: %w", s, err)
	}
	*d = Duration(v)
	return nil
}

// Finding type names used in subscriptions (lower-case forms of the proto
// enum without its prefix).
const (
	TypeInfectedHost     = "infected_host"
	TypeDoSVictim        = "dos_victim"
	TypePortSurge        = "port_surge"
	TypeNewPort          = "new_port"
	TypeFingerprintSurge = "fingerprint_surge"
	TypeCountrySurge     = "country_surge"
)

// EarlyWarningTypes are the finding types recipients may subscribe to
// (PRACTICE); host findings are routed by address instead.
var EarlyWarningTypes = []string{TypePortSurge, TypeNewPort, TypeFingerprintSurge, TypeCountrySurge}

// Webhook formats.
const (
	FormatIntelMQ = "intelmq" // JSON events with IntelMQ harmonisation field names
	FormatSTIX    = "stix"    // a STIX 2.1 bundle per finding
	FormatText    = "text"    // e-mail only: plain text and CSV
)

// Webhook is one HTTP endpoint of a recipient.
type Webhook struct {
	URL string `yaml:"url" json:"url"`
	// Secret is a Standard Webhooks key: "whsec_" followed by base64.
	Secret Secret `yaml:"secret" json:"secret"`
	// Format is intelmq (default) or stix.
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
}

// LogValue implements slog.LogValuer without the secret.
func (w Webhook) LogValue() slog.Value {
	return slog.GroupValue(slog.String("url", w.URL), slog.String("format", w.Format))
}

// Key returns the raw HMAC key of the secret.
func (w Webhook) Key() ([]byte, error) {
	s, ok := strings.CutPrefix(string(w.Secret), "whsec_")
	if !ok {
		return nil, errors.New("secret must start with whsec_")
	}
	k, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("secret is not base64: %w", err)
	}
	return k, nil
}

// Routing is the per-recipient grouping policy (Alertmanager's terms).
type Routing struct {
	// GroupWait: how long a new finding waits for others before the first
	// notification goes out.
	GroupWait Duration `yaml:"group_wait,omitempty" json:"group_wait,omitempty"`
	// GroupInterval: the digest cadence for changed and continuing findings.
	GroupInterval Duration `yaml:"group_interval,omitempty" json:"group_interval,omitempty"`
	// RepeatInterval: a continuing, unacknowledged finding is sent again
	// after this long.
	RepeatInterval Duration `yaml:"repeat_interval,omitempty" json:"repeat_interval,omitempty"`
	// RateLimitPerHour caps notifications (not findings) per hour; findings
	// held back by the limit go out in the next allowed notification.
	RateLimitPerHour int `yaml:"rate_limit_per_hour,omitempty" json:"rate_limit_per_hour,omitempty"`
}

// DefaultRouting suits a CERT: a new infected host goes out within seconds,
// continuing ones in a digest every quarter hour, reminders daily.
func DefaultRouting() Routing {
	return Routing{
		GroupWait:        Duration(5 * time.Second),
		GroupInterval:    Duration(15 * time.Minute),
		RepeatInterval:   Duration(24 * time.Hour),
		RateLimitPerHour: 120,
	}
}

// Recipient is a national CERT or an organisation.
type Recipient struct {
	// ID names the recipient in the API and in delivery ids: [a-z0-9-_.].
	ID   string `yaml:"id" json:"id"`
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Country: ISO 3166-1 alpha-2 (upper case). Required for a CERT.
	Country string `yaml:"country,omitempty" json:"country,omitempty"`
	// CERT marks the national CERT of Country: it receives every host
	// finding of its country, and a copy of those routed to organisations
	// unless OrgCopiesOptOut.
	CERT            bool `yaml:"cert,omitempty" json:"cert,omitempty"`
	OrgCopiesOptOut bool `yaml:"org_copies_opt_out,omitempty" json:"org_copies_opt_out,omitempty"`
	// Prefixes and ASNs of an organisation (most specific match wins).
	Prefixes []string  `yaml:"prefixes,omitempty" json:"prefixes,omitempty"`
	ASNs     []uint32  `yaml:"asns,omitempty" json:"asns,omitempty"`
	Emails   []string  `yaml:"emails,omitempty" json:"emails,omitempty"`
	Webhooks []Webhook `yaml:"webhooks,omitempty" json:"webhooks,omitempty"`
	// Format is the preferred e-mail format: text (default) or stix (the
	// STIX bundle is attached as well).
	Format string `yaml:"format,omitempty" json:"format,omitempty"`
	// Subscriptions to early-warning finding types (EarlyWarningTypes).
	Subscriptions []string `yaml:"subscriptions,omitempty" json:"subscriptions,omitempty"`
	// TLP of what this recipient receives: clear, green, amber (default),
	// amber+strict, red. TLPVersion "2.0" (default) or "1.0".
	TLP        string `yaml:"tlp,omitempty" json:"tlp,omitempty"`
	TLPVersion string `yaml:"tlp_version,omitempty" json:"tlp_version,omitempty"`
	// TAXIITokenSHA256 is the hex SHA-256 of the bearer token that reads
	// this recipient's TAXII collection (the token itself is never stored).
	TAXIITokenSHA256 string `yaml:"taxii_token_sha256,omitempty" json:"taxii_token_sha256,omitempty"`
	// Routing overrides the directory defaults field by field.
	Routing *Routing `yaml:"routing,omitempty" json:"routing,omitempty"`
	// Disabled recipients receive nothing new.
	Disabled bool `yaml:"disabled,omitempty" json:"disabled,omitempty"`
}

// LogValue implements slog.LogValuer without secrets.
func (r Recipient) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", r.ID), slog.String("country", r.Country), slog.Bool("cert", r.CERT),
		slog.Int("emails", len(r.Emails)), slog.Int("webhooks", len(r.Webhooks)))
}

// Directory is the whole recipients directory.
type Directory struct {
	Defaults   Routing     `yaml:"defaults,omitempty" json:"defaults"`
	Recipients []Recipient `yaml:"recipients" json:"recipients"`
}

// LogValue implements slog.LogValuer without secrets.
func (d Directory) LogValue() slog.Value {
	ids := make([]string, len(d.Recipients))
	for i, r := range d.Recipients {
		ids[i] = r.ID
	}
	return slog.GroupValue(slog.Any("recipients", ids))
}

// Load reads and validates a directory YAML file strictly.
func Load(path string) (Directory, error) {
	d := Directory{Defaults: DefaultRouting()}
	if err := config.Load(path, &d); err != nil {
		return Directory{}, err
	}
	if err := d.Validate(); err != nil {
		return Directory{}, fmt.Errorf("recipients %s: %w", path, err)
	}
	return d, nil
}

// Parse decodes and validates directory YAML.
func Parse(b []byte) (Directory, error) {
	d := Directory{Defaults: DefaultRouting()}
	if err := config.Decode(b, &d); err != nil {
		return Directory{}, err
	}
	return d, d.Validate()
}

var idRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Limits keep the directory (and what it costs in the replicated state) small.
const (
	MaxRecipients = 10000
	MaxChannels   = 16
	MaxPrefixes   = 4096
)

// Validate checks every entry and names the first faulty one, e.g.
// "recipients[3].webhooks[0].url: must be https".
func (d *Directory) Validate() error {
	if err := d.Defaults.validate("defaults", true); err != nil {
		return err
	}
	if len(d.Recipients) > MaxRecipients {
		return fmt.Errorf("recipients: more than %d", MaxRecipients)
	}
	seen := map[string]int{}
	certs := map[string]int{}
	for i := range d.Recipients {
		r := &d.Recipients[i]
		p := fmt.Sprintf("recipients[%d]", i)
		if err := r.Validate(p); err != nil {
			return err
		}
		if j, ok := seen[r.ID]; ok {
			return fmt.Errorf("%s.id: %q already used by recipients[%d]", p, r.ID, j)
		}
		seen[r.ID] = i
		if r.CERT {
			if j, ok := certs[r.Country]; ok {
				return fmt.Errorf("%s.cert: country %s already has its CERT in recipients[%d]", p, r.Country, j)
			}
			certs[r.Country] = i
		}
	}
	return nil
}

func (rt *Routing) validate(p string, full bool) error {
	if rt.GroupWait < 0 || (full && rt.GroupWait.D() > time.Hour) {
		return fmt.Errorf("%s.group_wait: must be between 0 and 1h", p)
	}
	if rt.GroupInterval < 0 || (full && rt.GroupInterval <= 0) {
		return fmt.Errorf("%s.group_interval: must be positive", p)
	}
	if rt.RepeatInterval < 0 || (full && rt.RepeatInterval < rt.GroupInterval) {
		return fmt.Errorf("%s.repeat_interval: must be at least group_interval", p)
	}
	if rt.RateLimitPerHour < 0 {
		return fmt.Errorf("%s.rate_limit_per_hour: must not be negative", p)
	}
	return nil
}

// Validate checks one recipient; p prefixes the key named in errors.
func (r *Recipient) Validate(p string) error {
	if !idRE.MatchString(r.ID) {
		return fmt.Errorf("%s.id: %q must match %s", p, r.ID, idRE)
	}
	if r.Country != "" && !validCountry(r.Country) {
		return fmt.Errorf("%s.country: %q is not an upper-case ISO 3166-1 alpha-2 code", p, r.Country)
	}
	if r.CERT && r.Country == "" {
		return fmt.Errorf("%s.country: required for a CERT", p)
	}
	if !r.CERT && r.OrgCopiesOptOut {
		return fmt.Errorf("%s.org_copies_opt_out: only a CERT receives organisation copies", p)
	}
	if len(r.Prefixes) > MaxPrefixes {
		return fmt.Errorf("%s.prefixes: more than %d", p, MaxPrefixes)
	}
	for j, s := range r.Prefixes {
		pf, err := netip.ParsePrefix(s)
		if err != nil {
			return fmt.Errorf("%s.prefixes[%d]: %w", p, j, err)
		}
		if pf != pf.Masked() {
			return fmt.Errorf("%s.prefixes[%d]: %s has host bits set (want %s)", p, j, s, pf.Masked())
		}
	}
	for j, a := range r.ASNs {
		if a == 0 {
			return fmt.Errorf("%s.asns[%d]: 0 is not an AS number", p, j)
		}
	}
	if len(r.Emails)+len(r.Webhooks) > MaxChannels {
		return fmt.Errorf("%s: more than %d e-mail addresses and webhooks", p, MaxChannels)
	}
	for j, e := range r.Emails {
		a, err := mail.ParseAddress(e)
		if err != nil || a.Name != "" || a.Address != e {
			return fmt.Errorf("%s.emails[%d]: %q is not a plain e-mail address", p, j, e)
		}
	}
	for j := range r.Webhooks {
		w := &r.Webhooks[j]
		wp := fmt.Sprintf("%s.webhooks[%d]", p, j)
		u, err := url.Parse(w.URL)
		if err != nil || u.Host == "" {
			return fmt.Errorf("%s.url: not an absolute URL", wp)
		}
		if u.User != nil {
			return fmt.Errorf("%s.url: must not carry user info", wp)
		}
		switch u.Scheme {
		case "https":
		case "http":
			if a, err := netip.ParseAddr(u.Hostname()); (err != nil || !a.IsLoopback()) && u.Hostname() != "localhost" {
				return fmt.Errorf("%s.url: must be https (http only to loopback)", wp)
			}
		default:
			return fmt.Errorf("%s.url: must be https (http only to loopback)", wp)
		}
		k, err := w.Key()
		if err != nil {
			return fmt.Errorf("%s.secret: %w", wp, err)
		}
		if len(k) < 24 || len(k) > 64 {
			return fmt.Errorf("%s.secret: key must be 24 to 64 bytes", wp)
		}
		switch w.Format {
		case "", FormatIntelMQ, FormatSTIX:
		default:
			return fmt.Errorf("%s.format: %q is not intelmq or stix", wp, w.Format)
		}
	}
	switch r.Format {
	case "", FormatText, FormatSTIX:
	default:
		return fmt.Errorf("%s.format: %q is not text or stix", p, r.Format)
	}
	for j, s := range r.Subscriptions {
		ok := false
		for _, t := range EarlyWarningTypes {
			ok = ok || s == t
		}
		if !ok {
			return fmt.Errorf("%s.subscriptions[%d]: %q is not one of %s", p, j, s, strings.Join(EarlyWarningTypes, ", "))
		}
	}
	switch r.TLP {
	case "", "clear", "white", "green", "amber", "amber+strict", "red":
	default:
		return fmt.Errorf("%s.tlp: %q is not clear, green, amber, amber+strict or red", p, r.TLP)
	}
	switch r.TLPVersion {
	case "", "2.0":
	case "1.0":
		if r.TLP == "clear" || r.TLP == "amber+strict" {
			return fmt.Errorf("%s.tlp: %s does not exist in TLP 1.0", p, r.TLP)
		}
	default:
		return fmt.Errorf("%s.tlp_version: %q is not 2.0 or 1.0", p, r.TLPVersion)
	}
	if r.TAXIITokenSHA256 != "" {
		if b, err := hex.DecodeString(r.TAXIITokenSHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("%s.taxii_token_sha256: want 64 hex digits", p)
		}
	}
	if r.Routing != nil {
		if err := r.Routing.validate(p+".routing", false); err != nil {
			return err
		}
	}
	return nil
}

func validCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}

// EffectiveRouting merges the recipient's overrides over the defaults.
func (d *Directory) EffectiveRouting(r *Recipient) Routing {
	rt := d.Defaults
	if o := r.Routing; o != nil {
		if o.GroupWait > 0 {
			rt.GroupWait = o.GroupWait
		}
		if o.GroupInterval > 0 {
			rt.GroupInterval = o.GroupInterval
		}
		if o.RepeatInterval > 0 {
			rt.RepeatInterval = o.RepeatInterval
		}
		if o.RateLimitPerHour > 0 {
			rt.RateLimitPerHour = o.RateLimitPerHour
		}
	}
	return rt
}

// Find returns the recipient with id, or nil.
func (d *Directory) Find(id string) *Recipient {
	for i := range d.Recipients {
		if d.Recipients[i].ID == id {
			return &d.Recipients[i]
		}
	}
	return nil
}

// Put inserts or replaces a recipient, keeping recipients sorted by id.
func (d *Directory) Put(r Recipient) {
	if old := d.Find(r.ID); old != nil {
		*old = r
		return
	}
	d.Recipients = append(d.Recipients, r)
	sort.SliceStable(d.Recipients, func(i, j int) bool { return d.Recipients[i].ID < d.Recipients[j].ID })
}

// Delete removes a recipient; it reports whether it existed.
func (d *Directory) Delete(id string) bool {
	for i := range d.Recipients {
		if d.Recipients[i].ID == id {
			d.Recipients = append(d.Recipients[:i], d.Recipients[i+1:]...)
			return true
		}
	}
	return false
}

// Clone returns a deep copy.
func (d *Directory) Clone() Directory {
	b, err := json.Marshal(d)
	if err != nil {
		panic(fmt.Sprintf("directory: marshal: %v", err)) // plain data: cannot fail
	}
	var c Directory
	if err := json.Unmarshal(b, &c); err != nil {
		panic(fmt.Sprintf("directory: unmarshal: %v", err))
	}
	return c
}

// Redacted returns a copy with every secret replaced by "<redacted>", for
// the admin API and logs.
func (d *Directory) Redacted() Directory {
	c := d.Clone()
	for i := range c.Recipients {
		for j := range c.Recipients[i].Webhooks {
			c.Recipients[i].Webhooks[j].Secret = redacted
		}
	}
	return c
}

// Channels returns the keys of a recipient's delivery channels: "email"
// (one message to all its addresses) and "webhook/<hash of URL>" per
// webhook, stable when other webhooks are added or removed.
func (r *Recipient) Channels() []string {
	var cs []string
	if len(r.Emails) > 0 {
		cs = append(cs, ChannelEmail)
	}
	for i := range r.Webhooks {
		cs = append(cs, r.Webhooks[i].ChannelKey())
	}
	return cs
}

// ChannelEmail is the channel key of a recipient's e-mail addresses.
const ChannelEmail = "email"

// ChannelKey is the webhook's channel key.
func (w *Webhook) ChannelKey() string {
	h := sha256.Sum256([]byte(w.URL))
	return "webhook/" + hex.EncodeToString(h[:6])
}

// Webhook returns the webhook with channel key k, or nil.
func (r *Recipient) Webhook(k string) *Webhook {
	for i := range r.Webhooks {
		if r.Webhooks[i].ChannelKey() == k {
			return &r.Webhooks[i]
		}
	}
	return nil
}
