package demo

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/netip"
	"net/smtp"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/webhook"
)

// TestWebhookReceiverVerifies sends the receiver a correctly signed
// webhook, a tampered one and one for an unknown recipient.
func TestWebhookReceiverVerifies(t *testing.T) {
	secret := directory.Secret("whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0")
	w, err := StartWebhookReceiver("127.0.0.1:0", map[string]directory.Secret{"cert-jp": secret})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop(context.Background())
	body := []byte(`{"type":"jasper.alert","data":{"ticket":"T1","events":[{"extra.finding_id":"f1","extra.finding_type":"infected_host"},{"extra.finding_id":"f2","extra.finding_type":"dos_victim"}]}}`)
	post := func(rcpt string, body []byte, sigBody []byte, id string) int {
		t.Helper()
		ts := time.Now().Unix()
		key, _ := webhookKey(secret)
		req, _ := http.NewRequest(http.MethodPost, w.URL(rcpt), bytes.NewReader(body))
		req.Header.Set(webhook.HeaderID, id)
		req.Header.Set("webhook-timestamp", itoa(ts))
		req.Header.Set("webhook-signature", webhook.Sign(key, id, ts, sigBody))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := post("cert-jp", body, body, "d1"); c != http.StatusNoContent {
		t.Fatalf("signed webhook answered %d", c)
	}
	if c := post("cert-jp", body, body, "d1"); c != http.StatusNoContent {
		t.Fatalf("retried webhook answered %d", c)
	}
	if c := post("cert-jp", append(body, ' '), body, "d2"); c != http.StatusUnauthorized {
		t.Fatalf("tampered webhook answered %d, want 401", c)
	}
	if c := post("cert-xx", body, body, "d3"); c != http.StatusNotFound {
		t.Fatalf("unknown recipient answered %d, want 404", c)
	}
	v, r := w.Count()
	if v != 1 || r != 1 {
		t.Fatalf("verified %d (want 1: a retry is the same delivery), rejected %d (want 1)", v, r)
	}
	hs := w.Hooks()
	if len(hs) != 1 || hs[0].Repeat != 1 || hs[0].Events != 2 || hs[0].Ticket != "T1" {
		t.Fatalf("hooks %+v", hs)
	}
	if f := w.Findings(); f["infected_host"] != 1 || f["dos_victim"] != 1 {
		t.Fatalf("findings %v", f)
	}
}

// TestMailCatcherKeepsMessages sends a multipart message over SMTP.
func TestMailCatcherKeepsMessages(t *testing.T) {
	c, err := StartMailCatcher("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	msg := "From: a@demo.invalid\r\nTo: cert-jp@demo.invalid\r\nSubject: =?utf-8?q?Infected_hosts_=E2=80=94_JP?=\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n" +
		"--XX\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n3 hosts =E2=80=94 see CSV\r\n" +
		"--XX\r\nContent-Type: text/csv\r\nContent-Disposition: attachment; filename=\"hosts.csv\"\r\n\r\nip\r\n--XX--\r\n"
	if err := smtpSend(c.Addr(), "a@demo.invalid", []string{"cert-jp@demo.invalid"}, msg); err != nil {
		t.Fatal(err)
	}
	ms := c.Messages()
	if len(ms) != 1 || c.Count() != 1 {
		t.Fatalf("%d messages", len(ms))
	}
	m := ms[0]
	if m.Subject != "Infected hosts — JP" || !strings.Contains(m.Text, "3 hosts — see CSV") || len(m.Attachments) != 1 || m.Attachments[0] != "hosts.csv" || m.To[0] != "cert-jp@demo.invalid" {
		t.Fatalf("parsed %+v", m)
	}
}

// FuzzParseMail: any message bytes parse without panic and keep the text
// bounded.
func FuzzParseMail(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=B\r\n\r\n--B\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n--B--\r\n"))
	f.Add([]byte("not a message"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m := parseMail(b)
		if len(m.Text) > 16<<10+8 {
			t.Fatalf("text of %d bytes", len(m.Text))
		}
	})
}

func TestConfigValidate(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Listen = "0.0.0.0:8080"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("non-loopback listen: %v", err)
	}
	c = DefaultConfig()
	c.Hubs = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "hubs") {
		t.Fatalf("0 hubs: %v", err)
	}
}

// TestFixtureGeoCoversDemoCountries checks the fixture databases give every
// public IPv4 /8 a country, the demo countries included.
func TestFixtureGeoCoversDemoCountries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("JASPER_GEO_DIR", "")
	t.Setenv("JASPER_TEST_GEO_DIR", "")
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	g, err := findGeo("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if g.Kind != "fixture" || !hasGeo(dir) {
		t.Fatalf("geo %+v", g)
	}
	seen := map[string]bool{}
	for n := 1; n < 224; n++ {
		cc, err := lookupCountry(filepath.Join(dir, "country.mmdb"), net.IPv4(byte(n), 1, 2, 3))
		if err != nil || cc == "" {
			t.Fatalf("%d.1.2.3: %q %v", n, cc, err)
		}
		seen[cc] = true
	}
	for _, c := range []string{"JP", "DE", "BR"} {
		if !seen[c] {
			t.Fatalf("no block of %s", c)
		}
	}
}

func webhookKey(s directory.Secret) ([]byte, error) {
	return base64.StdEncoding.DecodeString(strings.TrimPrefix(s.Reveal(), "whsec_"))
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func smtpSend(addr, from string, to []string, msg string) error {
	return smtp.SendMail(addr, nil, from, to, []byte(msg))
}

func lookupCountry(path string, ip net.IP) (string, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return "", err
	}
	defer r.Close()
	a, _ := netip.AddrFromSlice(ip.To4())
	var rec struct {
		CountryCode string `maxminddb:"country_code"`
	}
	if err := r.Lookup(a).Decode(&rec); err != nil {
		return "", err
	}
	return rec.CountryCode, nil
}
