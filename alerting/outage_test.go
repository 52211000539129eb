package alerting_test

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/alerting"
	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/internal/hooktest"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/internal/smtptest"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/webhook"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func hostFinding(i int) *jasperv1.Finding {
	return &jasperv1.Finding{Id: fmt.Sprintf("ih-%03d", i), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
		SrcIp: netip.AddrFrom4([4]byte{198, 51, byte(100 + i%2), byte(i)}).AsSlice(), SrcCountry: "DE", SrcAsn: 64500,
		FirstSeenMs: time.Now().UnixMilli(), LastSeenMs: time.Now().UnixMilli(), Packets: uint64(i + 1), Ports: []uint32{23}}
}

// rig is a full alerting pipeline against a real SMTP server and real
// webhook receivers.
type rig struct {
	smtp     *smtptest.Server
	hookDE   *hooktest.Receiver
	hookUni  *hooktest.Receiver
	logs     *syncBuf
	dirYAML  string
	cfg      alerting.Config
	smtpPass string
	regs     []*prometheus.Registry
}

func newRig(t testing.TB) *rig {
	r := &rig{smtp: smtptest.Start(t), hookDE: hooktest.Start(t), hookUni: hooktest.Start(t), logs: &syncBuf{}}
	r.dirYAML = fmt.Sprintf(`
defaults: {group_wait: 0s, group_interval: 1s, repeat_interval: 1h, rate_limit_per_hour: 0}
recipients:
  - {id: cert-de, cert: true, country: DE, emails: [soc@cert.example.de], webhooks: [{url: %q, secret: %s}]}
  - {id: uni-de, country: DE, prefixes: [198.51.100.0/24], webhooks: [{url: %q, secret: %s}]}
`, r.hookDE.URL, hookSecret, r.hookUni.URL, hookSecret)
	cfg := alerting.DefaultConfig()
	cfg.Worker.Poll = directory.Duration(20 * time.Millisecond)
	cfg.Worker.BackoffBase = directory.Duration(50 * time.Millisecond)
	cfg.Worker.BackoffMax = directory.Duration(300 * time.Millisecond)
	cfg.Worker.SendTimeout = directory.Duration(3 * time.Second)
	sc := cfg.SMTP
	sc.Host, sc.Port, sc.From = "127.0.0.1", r.smtp.Port(), "alerts@jasper.example"
	sc.Username, sc.Password = r.smtp.User, directory.Secret(r.smtp.Password)
	sc.Timeout = directory.Duration(3 * time.Second)
	cfg.SMTP = sc
	r.cfg = cfg
	return r
}

func (r *rig) build(t testing.TB, store outbox.Proposer, node string) *alerting.Alerting {
	d, err := directory.Parse([]byte(r.dirYAML))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	a, err := alerting.New(r.cfg, alerting.Deps{Store: store, Directory: &d, Log: log, Node: node,
		Registerer: reg, SMTPTLS: r.smtp.ClientTLS})
	if err != nil {
		t.Fatal(err)
	}
	log.Info("config", "cfg", r.cfg, "smtp", r.cfg.SMTP, "directory", d, "recipient", d.Recipients[0])
	r.regs = append(r.regs, reg)
	return a
}

// check asserts what arrived: every finding at every channel of every
// recipient it was routed to, each delivery processed once, tickets in
// order per channel.
func (r *rig) check(t testing.TB, n int) {
	t.Helper()
	all, uni := map[string]bool{}, map[string]bool{}
	for i := range n {
		f := hostFinding(i)
		all[f.Id] = true
		if i%2 == 0 {
			uni[f.Id] = true
		}
	}
	// E-mail.
	got := map[string]bool{}
	seen := map[string]int{}
	lastTicket := ""
	for _, m := range r.smtp.Messages() {
		p, err := smtptest.Parse(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		id := p.Header.Get("X-Jasper-Delivery-Id")
		seen[id]++
		if seen[id] > 1 {
			continue // a duplicate the receiver drops by Message-ID
		}
		tk := p.Header.Get("X-Jasper-Ticket")
		if tk <= lastTicket {
			t.Fatalf("e-mail tickets out of order: %s after %s", tk, lastTicket)
		}
		lastTicket = tk
		for name, b := range p.Attachments {
			if strings.HasSuffix(name, ".csv") {
				rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
				if err != nil {
					t.Fatal(err)
				}
				for _, row := range rows[1:] {
					got[row[2]] = true
				}
			}
		}
	}
	if len(got) != len(all) {
		t.Fatalf("e-mail carried %d of %d findings", len(got), len(all))
	}
	// Webhooks.
	for _, c := range []struct {
		name string
		h    *hooktest.Receiver
		want map[string]bool
	}{{"cert-de", r.hookDE, all}, {"uni-de", r.hookUni, uni}} {
		ids, counts := c.h.Processed()
		got := map[string]bool{}
		last := ""
		byID := map[string]webhook.Payload{}
		for _, req := range c.h.Requests() {
			var p webhook.Payload
			if err := json.Unmarshal(req.Body, &p); err != nil {
				t.Fatal(err)
			}
			byID[req.Header.Get("webhook-id")] = p
		}
		for _, id := range ids {
			p := byID[id]
			if p.Data.Ticket <= last {
				t.Fatalf("%s tickets out of order: %s after %s", c.name, p.Data.Ticket, last)
			}
			last = p.Data.Ticket
			for _, ev := range p.Data.Events {
				got[ev["extra.finding_id"].(string)] = true
			}
			if counts[id] < 1 {
				t.Fatalf("%s: %s not processed", c.name, id)
			}
		}
		if len(got) != len(c.want) {
			t.Fatalf("%s received %d of %d findings", c.name, len(got), len(c.want))
		}
		for id := range c.want {
			if !got[id] {
				t.Fatalf("%s lost %s", c.name, id)
			}
		}
	}
	// No secret in any log line (and the logs did see the failures and the
	// configuration, so the check is not vacuous).
	logs := r.logs.String()
	if !strings.Contains(logs, "delivery_attempt_failed") || !strings.Contains(logs, `"password"`) && !strings.Contains(logs, "smtp") {
		t.Fatalf("logs lack the expected lines:\n%s", logs)
	}
	for _, s := range []string{strings.TrimPrefix(hookSecret, "whsec_"), r.smtp.Password} {
		if strings.Contains(logs, s) {
			t.Fatalf("secret %q in logs", s)
		}
	}
}

func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestOutageNothingLost takes the SMTP server and the CERT's webhook
// receiver down while findings stream in (time compressed: 50 ms between
// findings, backoff 50-300 ms), brings them back, and checks that every
// finding reached every channel, in order, each delivery processed once.
func TestOutageNothingLost(t *testing.T) {
	r := newRig(t)
	l := memraft.New()
	a := r.build(t, l.Node(0), "hub-1")
	l.Add(a.Module())
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(t.Context())
	r.smtp.Stop()
	r.hookDE.Stop()
	const n = 60
	for i := range n {
		if i == 40 {
			r.smtp.Restart()
			r.hookDE.Restart()
		}
		l.Finding(hostFinding(i))
		l.Tick(time.Now())
		time.Sleep(50 * time.Millisecond)
	}
	waitUntil(t, 60*time.Second, "an empty outbox", func() bool {
		l.Tick(time.Now())
		return len(a.Module().Deliveries("")) == 0
	})
	st := a.Module().Stats()
	if st.Delivered != st.Deliveries || st.Retries == 0 {
		t.Fatalf("stats %+v", st)
	}
	r.check(t, n)
	// The metrics tell the same story.
	reg := r.regs[0]
	if v := gather(t, reg, "jasper_alerting_outbox_pending"); v != 0 {
		t.Fatalf("pending gauge %v", v)
	}
	if v := gather(t, reg, "jasper_alerting_attempts_total"); v < float64(st.Deliveries+st.Retries) {
		t.Fatalf("attempts counter %v < %d", v, st.Deliveries+st.Retries)
	}
	t.Logf("%d notifications, %d deliveries, %d retries during the outage", st.Notifications, st.Deliveries, st.Retries)
}

// gather sums every series of a metric family.
func gather(t testing.TB, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return sum
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
