package email_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/email"
	"github.com/jasperfed/jasper/alerting/internal/smtptest"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func task() *outbox.Task {
	return &outbox.Task{
		Delivery:  outbox.Delivery{ID: "msg_0123456789abcdef01234567", Recipient: "cert-de", Channel: "email"},
		Attempt:   1,
		Ticket:    "JSP-000042",
		CreatedMs: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC).UnixMilli(),
		Recipient: directory.Recipient{ID: "cert-de", Name: "CERT-Bund", Country: "DE", CERT: true,
			Emails: []string{"soc@cert.example.de", "duty@cert.example.de"}, Format: directory.FormatSTIX},
		Items: []outbox.TaskItem{
			{Kind: route.ItemNew, Reason: route.ReasonCountry, Finding: &jasperv1.Finding{Id: "ih-1", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
				State: jasperv1.FindingState_FINDING_STATE_NEW, SrcIp: netip.MustParseAddr("198.51.100.7").AsSlice(), SrcCountry: "DE", SrcAsn: 64500,
				FirstSeenMs: 1764072000000, LastSeenMs: 1764072060000, DetectedAtMs: 1764072060000, Packets: 420, DstIps: 300,
				Ports: []uint32{23, 2323}, Fingerprints: map[string]uint64{"mirai": 400}, Sensors: []string{"de-1"}, Summary: "=cmd telnet scanning with the Mirai signature"}},
			{Kind: route.ItemNew, Reason: route.ReasonCountry, Finding: &jasperv1.Finding{Id: "dos-1", Type: jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM,
				SrcIp: netip.MustParseAddr("2001:db8::5").AsSlice(), SrcCountry: "DE", SrcAsn: 64501, Packets: 9000, FirstSeenMs: 1764072000000, LastSeenMs: 1764072000000}},
		},
	}
}

func TestSendOverRealSMTP(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := email.DefaultConfig()
	cfg.Host, cfg.Port, cfg.From = "127.0.0.1", srv.Port(), "alerts@jasper.example"
	cfg.Username, cfg.Password = srv.User, directory.Secret(srv.Password)
	s, err := email.New(cfg, srv.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	res := s.Send(context.Background(), task())
	if res.Outcome != outbox.OutcomeOK {
		t.Fatalf("send: %s %v", res.Outcome, res.Err)
	}
	msgs := srv.Messages()
	if len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
	m := msgs[0]
	if !m.TLS || m.Auth != srv.User || m.From != "alerts@jasper.example" || strings.Join(m.To, ",") != "soc@cert.example.de,duty@cert.example.de" {
		t.Fatalf("envelope tls=%v auth=%q from=%q to=%v", m.TLS, m.Auth, m.From, m.To)
	}
	p, err := smtptest.Parse(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	h := p.Header
	for k, want := range map[string]string{
		"Auto-Submitted":       "auto-generated",
		"X-Jasper-Delivery-Id": "msg_0123456789abcdef01234567",
		"X-Jasper-Ticket":      "JSP-000042",
		"Message-Id":           "<msg_0123456789abcdef01234567@jasper.example>",
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if subj := h.Get("Subject"); !strings.HasPrefix(subj, "[JSP-000042] jasper: ") || !strings.Contains(subj, "1 new infected host") || !strings.Contains(subj, "(DE)") {
		t.Errorf("subject %q", subj)
	}
	if !strings.Contains(p.Text, "Ticket JSP-000042 for CERT-Bund") || !strings.Contains(p.Text, "198.51.100.7") ||
		!strings.Contains(p.Text, "2001:db8::5") || !strings.Contains(p.Text, "TLP:") || !strings.Contains(p.Text, "mirai") {
		t.Errorf("body:\n%s", p.Text)
	}
	rows, err := csv.NewReader(bytes.NewReader(p.Attachments["JSP-000042-evidence.csv"])).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("csv %d rows %v: %q", len(rows), err, p.Attachments)
	}
	col := map[string]int{}
	for i, c := range rows[0] {
		col[c] = i
	}
	r := rows[1]
	if r[col["source.ip"]] != "198.51.100.7" || r[col["source.asn"]] != "64500" || r[col["classification.identifier"]] != "mirai" ||
		r[col["extra.destination_ports"]] != "23 2323" || r[col["extra.ticket"]] != "JSP-000042" || !strings.HasPrefix(r[col["event_description.text"]], "'=") {
		t.Fatalf("csv row %v", r)
	}
	if rows[2][col["classification.type"]] != "ddos" {
		t.Fatalf("dos row %v", rows[2])
	}
	if b := p.Attachments["JSP-000042-stix.json"]; !bytes.Contains(b, []byte(`"type": "bundle"`)) || !bytes.Contains(b, []byte("ipv6-addr")) {
		t.Fatalf("stix attachment %s", b)
	}
	// The same task again (a retry) carries the same ids.
	s.Send(context.Background(), task())
	p2, _ := smtptest.Parse(srv.Messages()[1].Data)
	if p2.Header.Get("Message-Id") != h.Get("Message-Id") || p2.Header.Get("Date") != h.Get("Date") {
		t.Fatal("retry changed ids or date")
	}
}

func TestSendFailsWithoutTLSOrAuth(t *testing.T) {
	srv := smtptest.Start(t)
	cfg := email.DefaultConfig()
	cfg.Host, cfg.Port, cfg.From = "127.0.0.1", srv.Port(), "alerts@jasper.example"
	cfg.Username, cfg.Password = srv.User, "wrong"
	s, _ := email.New(cfg, srv.ClientTLS)
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry || res.Err == nil {
		t.Fatalf("bad password: %s %v", res.Outcome, res.Err)
	}
	// The server certificate is not trusted by default: refused.
	cfg.Password = directory.Secret(srv.Password)
	s, _ = email.New(cfg, nil)
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry {
		t.Fatalf("untrusted relay accepted: %s", res.Outcome)
	}
	srv.Stop()
	s, _ = email.New(cfg, srv.ClientTLS)
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry {
		t.Fatalf("down relay: %s", res.Outcome)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Fatalf("%d messages accepted", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		mut  func(*email.Config)
		want string
	}{
		{func(c *email.Config) { c.Host = "" }, "host"},
		{func(c *email.Config) { c.TLS = "maybe" }, "tls"},
		{func(c *email.Config) { c.From = "nobody" }, "from"},
		{func(c *email.Config) { c.Username = ""; c.Password = "x" }, "username"},
	} {
		cfg := email.DefaultConfig()
		cfg.Host, cfg.From = "relay", "a@b.c"
		c.mut(&cfg)
		if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("err %v, want %s", err, c.want)
		}
	}
}
