package directory

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

const sample = `
defaults:
  group_wait: 2s
  group_interval: 10m
  repeat_interval: 24h
  rate_limit_per_hour: 60
recipients:
  - id: cert-de
    cert: true
    country: DE
    emails: [soc@cert.example.de]
    webhooks:
      - url: https://hooks.cert.example.de/jasper
        secret: ` + secret + `
  - id: uni-x
    country: DE
    prefixes: [192.0.2.0/24, 2001:db8::/32]
    asns: [64500]
    emails: [abuse@uni.example]
    routing: {group_wait: 1s}
  - id: cert-fr
    cert: true
    country: FR
    org_copies_opt_out: true
    subscriptions: [port_surge, fingerprint_surge]
`

func TestParseSample(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Recipients) != 3 || d.Defaults.GroupWait.D().Seconds() != 2 {
		t.Fatalf("parsed %+v", d)
	}
	rt := d.EffectiveRouting(d.Find("uni-x"))
	if rt.GroupWait.D().Seconds() != 1 || rt.GroupInterval.D().Minutes() != 10 || rt.RateLimitPerHour != 60 {
		t.Fatalf("effective routing %+v", rt)
	}
	if got := d.Find("cert-de").Channels(); len(got) != 2 || got[0] != ChannelEmail || !strings.HasPrefix(got[1], "webhook/") {
		t.Fatalf("channels %v", got)
	}
}

func TestValidateNamesEntry(t *testing.T) {
	base := func() Directory {
		d, err := Parse([]byte(sample))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	cases := []struct {
		name string
		mut  func(*Directory)
		want string
	}{
		{"http webhook", func(d *Directory) { d.Recipients[0].Webhooks[0].URL = "http://example.org/x" }, "recipients[0].webhooks[0].url: must be https"},
		{"bad secret", func(d *Directory) { d.Recipients[0].Webhooks[0].Secret = "nope" }, "recipients[0].webhooks[0].secret: secret must start with whsec_"},
		{"short secret", func(d *Directory) { d.Recipients[0].Webhooks[0].Secret = "whsec_YWJj" }, "recipients[0].webhooks[0].secret: key must be 24 to 64 bytes"},
		{"bad prefix", func(d *Directory) { d.Recipients[1].Prefixes[1] = "2001:db8::1/32" }, "recipients[1].prefixes[1]: 2001:db8::1/32 has host bits set"},
		{"bad email", func(d *Directory) { d.Recipients[1].Emails = []string{"Abuse <a@b.c>"} }, "recipients[1].emails[0]"},
		{"dup id", func(d *Directory) { d.Recipients[2].ID = "cert-de" }, "recipients[2].id: \"cert-de\" already used by recipients[0]"},
		{"two certs", func(d *Directory) { d.Recipients[2].Country = "DE" }, "recipients[2].cert: country DE already has its CERT in recipients[0]"},
		{"cert without country", func(d *Directory) { d.Recipients[0].Country = "" }, "recipients[0].country: required for a CERT"},
		{"lower-case country", func(d *Directory) { d.Recipients[1].Country = "de" }, "recipients[1].country"},
		{"opt-out on org", func(d *Directory) { d.Recipients[1].OrgCopiesOptOut = true }, "recipients[1].org_copies_opt_out"},
		{"host subscription", func(d *Directory) { d.Recipients[2].Subscriptions = []string{"infected_host"} }, "recipients[2].subscriptions[0]"},
		{"tlp", func(d *Directory) { d.Recipients[2].TLP = "purple" }, "recipients[2].tlp"},
		{"tlp 1.0 clear", func(d *Directory) { d.Recipients[2].TLP, d.Recipients[2].TLPVersion = "clear", "1.0" }, "recipients[2].tlp: clear does not exist in TLP 1.0"},
		{"token", func(d *Directory) { d.Recipients[2].TAXIITokenSHA256 = "abc" }, "recipients[2].taxii_token_sha256"},
		{"asn 0", func(d *Directory) { d.Recipients[1].ASNs = []uint32{0} }, "recipients[1].asns[0]"},
		{"routing", func(d *Directory) { d.Recipients[1].Routing.RateLimitPerHour = -1 }, "recipients[1].routing.rate_limit_per_hour"},
		{"repeat < interval", func(d *Directory) { d.Defaults.RepeatInterval = Duration(1) }, "defaults.repeat_interval"},
		{"id", func(d *Directory) { d.Recipients[1].ID = "Uni X" }, "recipients[1].id"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := base()
			c.mut(&d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

func TestUnknownKeyRejected(t *testing.T) {
	_, err := Parse([]byte("recipients:\n  - id: a\n    emial: [x@y.z]\n"))
	if err == nil || !strings.Contains(err.Error(), "emial") {
		t.Fatalf("err = %v", err)
	}
}

// TestNoSecretInLogs logs the directory, recipients, webhooks and secrets
// every way code is likely to, with both slog handlers and fmt, and checks
// the key never appears.
func TestNoSecretInLogs(t *testing.T) {
	d, err := Parse([]byte(sample))
	if err != nil {
		t.Fatal(err)
	}
	r := d.Recipients[0]
	w := r.Webhooks[0]
	var buf bytes.Buffer
	for _, h := range []slog.Handler{slog.NewJSONHandler(&buf, nil), slog.NewTextHandler(&buf, nil)} {
		l := slog.New(h)
		l.Info("directory", "dir", d, "recipient", r, "webhook", w, "secret", w.Secret, "ptr", &w)
		l.Info("group", slog.Group("g", "r", r, "w", w), slog.Any("any", w.Secret))
	}
	fmt.Fprintf(&buf, "%v %+v %#v %s %v %+v", d, d, d, w.Secret, w, r)
	red := d.Redacted()
	b, _ := json.Marshal(red)
	buf.Write(b)
	key := strings.TrimPrefix(secret, "whsec_")
	if out := buf.String(); strings.Contains(out, key) {
		t.Fatalf("secret leaked:\n%s", out)
	}
	if !strings.Contains(buf.String(), "<redacted>") {
		t.Fatal("expected the redaction marker in the output")
	}
	// The real value is still there for the code that signs.
	if k, err := d.Recipients[0].Webhooks[0].Key(); err != nil || len(k) != 24 {
		t.Fatalf("key %d %v", len(k), err)
	}
}

func TestPutDeleteKeepsOrder(t *testing.T) {
	d, _ := Parse([]byte(sample))
	d.Put(Recipient{ID: "aaa"})
	if d.Recipients[0].ID != "aaa" {
		t.Fatalf("order %v", d.Recipients)
	}
	d.Put(Recipient{ID: "aaa", Name: "A"})
	if len(d.Recipients) != 4 || d.Find("aaa").Name != "A" {
		t.Fatal("replace failed")
	}
	if !d.Delete("aaa") || d.Delete("aaa") {
		t.Fatal("delete")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(sample))
	f.Add([]byte("recipients: [{id: x, webhooks: [{url: 'http://[::1]:1/', secret: whsec_}]}]"))
	f.Add([]byte("defaults: {group_wait: -1s}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Parse(b)
		if err != nil {
			return
		}
		// Whatever parses validates again after a JSON round trip (the
		// replicated form).
		j, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		var d2 Directory
		if err := json.Unmarshal(j, &d2); err != nil {
			t.Fatal(err)
		}
		if err := d2.Validate(); err != nil {
			t.Fatalf("round trip invalid: %v", err)
		}
	})
}

func TestExampleFileLoads(t *testing.T) {
	d, err := Load("../recipients.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Recipients) != 3 || d.Find("uni-example").Routing.GroupWait.D().Minutes() != 1 {
		t.Fatalf("example: %+v", d.Recipients)
	}
}
