package email_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/email"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/outbox"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// Lines returns the log lines that contain every one of subs.
func (l *logBuf) Lines(subs ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
next:
	for _, line := range strings.Split(l.b.String(), "\n") {
		for _, s := range subs {
			if !strings.Contains(line, s) {
				continue next
			}
		}
		if line != "" {
			out = append(out, line)
		}
	}
	return out
}

func relayConfig(r *relay) email.Config {
	cfg := email.DefaultConfig()
	cfg.Host, cfg.Port, cfg.From = "127.0.0.1", r.Port(), "alerts@jasper.example"
	cfg.Username, cfg.Password = r.User, directory.Secret(r.Password)
	cfg.Timeout = directory.Duration(5 * time.Second)
	return cfg
}

func failureClass(t *testing.T, res outbox.Result) string {
	t.Helper()
	var f *email.Failure
	if !errors.As(res.Err, &f) {
		t.Fatalf("result error %v is not an email.Failure", res.Err)
	}
	return f.Class
}

// TestSendJudgesEachReply scripts a real relay's refusals: 5xx to MAIL
// FROM, RCPT TO or DATA park the channel with the reply as the reason; 4xx
// are retried; one 4xx among refused addresses makes the attempt a retry.
// Nothing is accepted while any address is refused.
func TestSendJudgesEachReply(t *testing.T) {
	r := startRelay(t)
	reg := prometheus.NewRegistry()
	s, err := email.New(relayConfig(r), r.ClientTLS, email.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	const soc, duty = "rcpt soc@cert.example.de", "rcpt duty@cert.example.de"
	for _, c := range []struct {
		name    string
		key     string
		code    int
		enh     smtp.EnhancedCode
		text    string
		key2    string // a second refusal, 451
		outcome string
		class   string
		want    []string // in the error
	}{
		{"550 mailbox", duty, 550, smtp.EnhancedCode{5, 1, 1}, "mailbox unavailable", "", outbox.OutcomeGone, email.ClassRejected,
			[]string{"RCPT TO:<duty@cert.example.de>", "550 5.1.1 mailbox unavailable", "parked"}},
		{"451 greylisted", soc, 451, smtp.EnhancedCode{4, 7, 1}, "greylisted, try later", "", outbox.OutcomeRetry, email.ClassTransient,
			[]string{"RCPT TO:<soc@cert.example.de>", "451 4.7.1 greylisted"}},
		{"550 and 451", duty, 550, smtp.EnhancedCode{5, 1, 1}, "mailbox unavailable", soc, outbox.OutcomeRetry, email.ClassTransient,
			[]string{"550 5.1.1 mailbox unavailable", "451 4.3.0 try later", "soc@cert.example.de", "duty@cert.example.de"}},
		{"553 sender", "mail", 553, smtp.EnhancedCode{5, 1, 8}, "sender address rejected", "", outbox.OutcomeGone, email.ClassRejected,
			[]string{"MAIL FROM:<alerts@jasper.example>", "553 5.1.8 sender address rejected"}},
		{"554 content", "data", 554, smtp.EnhancedCode{5, 7, 1}, "message refused by policy", "", outbox.OutcomeGone, email.ClassRejected,
			[]string{"end of DATA", "554 5.7.1 message refused by policy"}},
		{"452 storage", "data", 452, smtp.EnhancedCode{4, 3, 1}, "insufficient storage", "", outbox.OutcomeRetry, email.ClassTransient,
			[]string{"452 4.3.1 insufficient storage"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r.Refuse(c.key, -1, c.code, c.enh, c.text)
			defer r.Refuse(c.key, 0, 0, smtp.EnhancedCode{}, "")
			if c.key2 != "" {
				r.Refuse(c.key2, -1, 451, smtp.EnhancedCode{4, 3, 0}, "try later")
				defer r.Refuse(c.key2, 0, 0, smtp.EnhancedCode{}, "")
			}
			before := len(r.Messages())
			res := s.Send(context.Background(), task())
			if res.Outcome != c.outcome || failureClass(t, res) != c.class {
				t.Fatalf("outcome %s class %s, want %s %s: %v", res.Outcome, failureClass(t, res), c.outcome, c.class, res.Err)
			}
			for _, w := range c.want {
				if !strings.Contains(res.Err.Error(), w) {
					t.Errorf("error %q lacks %q", res.Err, w)
				}
			}
			if n := len(r.Messages()); n != before {
				t.Fatalf("%d messages accepted during a refusal", n-before)
			}
		})
	}
	// Every address was asked each time (the reason names each refused one).
	if a, b := r.Seen(soc), r.Seen(duty); a != b || a < 5 {
		t.Fatalf("RCPT soc %d, duty %d", a, b)
	}
	// The relay accepts again: one message to both addresses.
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeOK || res.Err != nil {
		t.Fatalf("after the refusals: %s %v", res.Outcome, res.Err)
	}
	if m := r.Messages(); len(m) != 1 || strings.Join(m[0].To, ",") != "soc@cert.example.de,duty@cert.example.de" {
		t.Fatalf("messages %+v", m)
	}
	want := `
# HELP jasper_alerting_email_failures_total Failed e-mail sends by class: rejected (channel parked), transient, auth, tls, refused, message.
# TYPE jasper_alerting_email_failures_total counter
jasper_alerting_email_failures_total{class="auth"} 0
jasper_alerting_email_failures_total{class="message"} 0
jasper_alerting_email_failures_total{class="refused"} 0
jasper_alerting_email_failures_total{class="rejected"} 3
jasper_alerting_email_failures_total{class="tls"} 0
jasper_alerting_email_failures_total{class="transient"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "jasper_alerting_email_failures_total"); err != nil {
		t.Fatal(err)
	}
}

// TestRelayConfigurationFailures: a refused password (535), a refused
// session without AUTH (530) and an untrusted certificate are retried, not
// parked, and the operator sees them: an error-level log line when they
// start (not one per attempt), one when the relay accepts again, a counter
// by class, and an error that says what to check.
func TestRelayConfigurationFailures(t *testing.T) {
	r := startRelay(t)
	logs := &logBuf{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	cfg := relayConfig(r)
	cfg.Password = "rotated-yesterday"
	s, err := email.New(cfg, r.ClientTLS, email.WithLog(log), email.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		res := s.Send(context.Background(), task())
		if res.Outcome != outbox.OutcomeRetry || failureClass(t, res) != email.ClassAuth {
			t.Fatalf("bad password: %s %v", res.Outcome, res.Err)
		}
		if msg := res.Err.Error(); !strings.HasPrefix(msg, "relay configuration: authentication refused") || !strings.Contains(msg, "535 5.7.8") {
			t.Fatalf("error %q", msg)
		}
	}
	if n := len(logs.Lines(`"level":"ERROR"`, `"msg":"smtp_relay_misconfigured"`, `"class":"auth"`, "535 5.7.8")); n != 1 {
		t.Fatalf("%d misconfiguration lines for 3 failures:\n%s", n, logs.Lines())
	}
	if got := counter(t, reg, "jasper_alerting_email_failures_total", map[string]string{"class": "auth"}); got != 3 {
		t.Fatalf("auth failures counted %v", got)
	}
	// The relay's admin puts the old password back: delivery resumes on its
	// own, and the recovery is logged once.
	r.SetPassword("rotated-yesterday")
	if res := s.Send(context.Background(), task()); res.Outcome != outbox.OutcomeOK {
		t.Fatalf("after the fix: %s %v", res.Outcome, res.Err)
	}
	if n := len(logs.Lines(`"msg":"smtp_relay_recovered"`, `"was":"auth"`, `"failures":3`)); n != 1 {
		t.Fatalf("%d recovery lines:\n%s", n, logs.Lines())
	}
	for _, l := range logs.Lines() {
		if strings.Contains(l, "rotated-yesterday") {
			t.Fatalf("password in the log: %s", l)
		}
	}

	// No credentials configured: the relay wants AUTH (530 to MAIL FROM).
	cfg = relayConfig(r)
	cfg.Username, cfg.Password = "", ""
	s2, _ := email.New(cfg, r.ClientTLS)
	if res := s2.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry || failureClass(t, res) != email.ClassAuth ||
		!strings.Contains(res.Err.Error(), "530 5.7.0") {
		t.Fatalf("no AUTH: %s %v", res.Outcome, res.Err)
	}
	// The relay's certificate is not trusted (system roots).
	s3, _ := email.New(relayConfig(r), nil)
	if res := s3.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry || failureClass(t, res) != email.ClassTLS ||
		!strings.HasPrefix(res.Err.Error(), "relay configuration: TLS failed") || !strings.Contains(res.Err.Error(), "certificate") {
		t.Fatalf("untrusted relay: %s %v", res.Outcome, res.Err)
	}
	// Implicit TLS against a STARTTLS port: a TLS failure too, not a hang.
	cfg = relayConfig(r)
	cfg.TLS = email.TLSImplicit
	s4, _ := email.New(cfg, r.ClientTLS)
	if res := s4.Send(context.Background(), task()); res.Outcome != outbox.OutcomeRetry || failureClass(t, res) != email.ClassTLS {
		t.Fatalf("implicit TLS on a plain port: %s %v", res.Outcome, res.Err)
	}
	if n := len(r.Messages()); n != 1 {
		t.Fatalf("%d messages accepted", n)
	}
}

// counter reads one counter of reg by name and labels.
func counter(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s%v", name, labels)
	return 0
}

func countryFinding(id, cc string, last byte) *jasperv1.Finding {
	return &jasperv1.Finding{Id: id, Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
		SrcIp: netip.AddrFrom4([4]byte{198, 51, 100, last}).AsSlice(), SrcCountry: cc, SrcAsn: 64500, FirstSeenMs: 1764072000000,
		LastSeenMs: 1764072060000, Packets: 42, Ports: []uint32{23}, Sensors: []string{"s"}}
}

// TestWorkerParks550AndRetries451 runs the outbox module, the leader's
// worker and this sender against a real relay that refuses one CERT's
// address with 550 and greylists another's with 451: the first delivery is
// parked with the relay's reply as the reason (audit log, DisabledChannels,
// the attempts metric, one log line) and kept; the second is retried and
// delivered once the relay accepts. Correcting the first recipient's
// address clears the mark and the kept delivery goes out.
func TestWorkerParks550AndRetries451(t *testing.T) {
	r := startRelay(t)
	r.Refuse("rcpt gone@cert.example.de", -1, 550, smtp.EnhancedCode{5, 1, 1}, "mailbox unavailable")
	r.Refuse("rcpt busy@cert.example.fr", 2, 451, smtp.EnhancedCode{4, 3, 0}, "try again later")
	d, err := directory.Parse([]byte(`
defaults: {group_wait: 0s, group_interval: 1m, repeat_interval: 1h, rate_limit_per_hour: 0}
recipients:
  - {id: cert-de, cert: true, country: DE, emails: [gone@cert.example.de]}
  - {id: cert-fr, cert: true, country: FR, emails: [busy@cert.example.fr]}
`))
	if err != nil {
		t.Fatal(err)
	}
	m, err := outbox.New(outbox.DefaultConfig(), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := memraft.New(m)
	logs := &logBuf{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	reg := prometheus.NewRegistry()
	s, err := email.New(relayConfig(r), r.ClientTLS, email.WithLog(log), email.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	wcfg := outbox.DefaultWorkerConfig()
	wcfg.Poll, wcfg.BackoffBase, wcfg.BackoffMax = directory.Duration(5*time.Millisecond), directory.Duration(10*time.Millisecond), directory.Duration(40*time.Millisecond)
	w, err := outbox.NewWorker(wcfg, outbox.WorkerDeps{Module: m, Store: l.Node(0), Senders: map[string]outbox.Sender{"email": s},
		Log: log, Registerer: reg, Node: "hub-1"})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(t.Context())
	defer w.Stop()
	l.Finding(countryFinding("ih-de", "DE", 7))
	l.Finding(countryFinding("ih-fr", "FR", 8))
	l.Tick(time.Now())
	waitFor(t, func() bool { return m.Stats().Delivered == 1 && len(m.DisabledChannels()) == 1 })

	// cert-de: parked with the relay's reply, the delivery kept.
	reason := m.DisabledChannels()["cert-de email"]
	if !strings.Contains(reason, "550 5.1.1 mailbox unavailable") || !strings.Contains(reason, "gone@cert.example.de") {
		t.Fatalf("disabled %v", m.DisabledChannels())
	}
	audit := m.Audit("cert-de")
	if len(audit) != 1 || audit[0].Outcome != outbox.OutcomeGone || !strings.Contains(audit[0].Error, "550 5.1.1 mailbox unavailable") {
		t.Fatalf("cert-de audit %+v", audit)
	}
	if ds := m.Deliveries("cert-de"); len(ds) != 1 || ds[0].State != outbox.StatePending || ds[0].Attempts != 1 {
		t.Fatalf("parked delivery %+v", ds)
	}
	// It is not retried: nothing of cert-de is due, even an hour on.
	for _, tk := range m.Due(time.Now().Add(time.Hour).UnixMilli(), 100, nil) {
		if tk.Delivery.Recipient == "cert-de" {
			t.Fatalf("parked delivery still due: %+v", tk.Delivery)
		}
	}
	if n := r.Seen("rcpt gone@cert.example.de"); n != 1 {
		t.Fatalf("gone@ asked %d times", n)
	}
	if n := len(logs.Lines(`"msg":"delivery_attempt_failed"`, `"recipient":"cert-de"`, `"outcome":"disabled"`, "550 5.1.1")); n != 1 {
		t.Fatalf("%d log lines for the parked delivery:\n%s", n, logs.Lines())
	}

	// cert-fr: two 451s retried, then delivered once.
	audit = m.Audit("cert-fr")
	if len(audit) != 3 || audit[0].Outcome != outbox.OutcomeRetry || audit[1].Outcome != outbox.OutcomeRetry ||
		audit[2].Outcome != outbox.OutcomeOK || !strings.Contains(audit[0].Error, "451 4.3.0 try again later") {
		t.Fatalf("cert-fr audit %+v", audit)
	}
	if got := r.To("busy@cert.example.fr"); len(got) != 1 {
		t.Fatalf("busy@ got %d messages", len(got))
	}
	if got := r.To("gone@cert.example.de"); len(got) != 0 {
		t.Fatalf("gone@ got %d messages", len(got))
	}
	for outcome, want := range map[string]float64{outbox.OutcomeGone: 1, outbox.OutcomeRetry: 2, outbox.OutcomeOK: 1} {
		if got := counter(t, reg, "jasper_alerting_attempts_total", map[string]string{"channel": "email", "outcome": outcome}); got != want {
			t.Errorf("attempts{outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	if got := counter(t, reg, "jasper_alerting_email_failures_total", map[string]string{"class": email.ClassRejected}); got != 1 {
		t.Errorf("rejected failures %v", got)
	}

	// The operator corrects cert-de's address: the mark clears and the
	// kept delivery goes to the new address.
	rec, _ := m.Recipient("cert-de")
	rec.Emails = []string{"soc@cert.example.de"}
	if _, err := l.Apply(outbox.Encode(outbox.Command{Op: outbox.OpPutRecipient, Recipient: &rec})); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return m.Stats().Delivered == 2 })
	if got := r.To("soc@cert.example.de"); len(got) != 1 {
		t.Fatalf("soc@ got %d messages", len(got))
	}
	if len(m.DisabledChannels()) != 0 {
		t.Fatalf("still disabled %v", m.DisabledChannels())
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not reached in 15s")
}
