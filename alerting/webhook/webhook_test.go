package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/internal/hooktest"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	"github.com/jasperfed/jasper/alerting/webhook"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func finding(i int) *jasperv1.Finding {
	return &jasperv1.Finding{Id: fmt.Sprintf("ih-%d", i), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
		SrcIp: netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).AsSlice(), SrcCountry: "DE", SrcAsn: 64500, FirstSeenMs: 1764072000000,
		LastSeenMs: 1764072060000, Packets: 42, Ports: []uint32{23}, Fingerprints: map[string]uint64{"mirai": 4}, Sensors: []string{"s"}}
}

func task(url, format string, i int) *outbox.Task {
	r := directory.Recipient{ID: "cert-de", CERT: true, Country: "DE", Webhooks: []directory.Webhook{{URL: url, Secret: secret, Format: format}}}
	return &outbox.Task{Delivery: outbox.Delivery{ID: fmt.Sprintf("msg_%024d", i), Recipient: "cert-de", Channel: r.Webhooks[0].ChannelKey()},
		Attempt: 1, Ticket: fmt.Sprintf("JSP-%06d", i), CreatedMs: 1764072100000, Recipient: r,
		Items: []outbox.TaskItem{{Kind: route.ItemNew, Reason: route.ReasonCountry, Finding: finding(i)}}}
}

func TestSignedPostsVerifiedByReferenceLibrary(t *testing.T) {
	rcv := hooktest.Start(t)
	s := webhook.New(nil)
	for i := range 3 {
		if res := s.Send(context.Background(), task(rcv.URL, "", i)); res.Outcome != outbox.OutcomeOK {
			t.Fatalf("send %d: %s %v", i, res.Outcome, res.Err)
		}
	}
	if res := s.Send(context.Background(), task(rcv.URL, directory.FormatSTIX, 9)); res.Outcome != outbox.OutcomeOK {
		t.Fatalf("stix send: %v", res.Err)
	}
	reqs := rcv.Requests()
	if len(reqs) != 4 {
		t.Fatalf("%d requests", len(reqs))
	}
	// Content: IntelMQ names.
	var p webhook.Payload
	if err := json.Unmarshal(reqs[1].Body, &p); err != nil {
		t.Fatal(err)
	}
	ev := p.Data.Events[0]
	if p.Type != "jasper.alert" || p.Data.Ticket != "JSP-000001" || ev["source.ip"] != "198.51.100.1" || ev["source.asn"] != float64(64500) ||
		ev["source.geolocation.cc"] != "DE" || ev["classification.taxonomy"] != "malicious-code" || ev["classification.type"] != "infected-system" ||
		ev["classification.identifier"] != "mirai" || ev["feed.name"] != "jasper-darknet" || ev["time.source"] != "2025-11-25T12:01:00.000+00:00" ||
		ev["time.observation"] == nil || ev["extra.finding_id"] != "ih-1" {
		t.Fatalf("event %v", ev)
	}
	if reqs[1].Header.Get("webhook-id") != "msg_000000000000000000000001" {
		t.Fatalf("webhook-id %q", reqs[1].Header.Get("webhook-id"))
	}
	if !strings.Contains(string(reqs[3].Body), `"type":"bundle"`) || !strings.HasPrefix(reqs[3].Header.Get("Content-Type"), "application/stix+json") {
		t.Fatalf("stix body %s", reqs[3].Body)
	}
	// Our own verifier accepts them...
	for _, r := range reqs {
		if err := webhook.Verify(secret, r.Header, r.Body, time.Now(), 5*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	// ...and so does the independent reference library; a tampered body
	// and a wrong secret do not pass it.
	tampered := hooktest.Request{Header: reqs[0].Header, Body: append([]byte(nil), reqs[0].Body...)}
	tampered.Body[10] ^= 1
	got := hooktest.VerifyWithNode(t, secret, append(reqs, tampered))
	for i := range reqs {
		if got[i] != "ok" {
			t.Fatalf("reference library rejected request %d: %s", i, got[i])
		}
	}
	if !strings.HasPrefix(got[len(reqs)], "error") {
		t.Fatalf("tampered body accepted: %v", got)
	}
	if bad := hooktest.VerifyWithNode(t, "whsec_"+strings.Repeat("QUFB", 8), reqs[:1]); !strings.HasPrefix(bad[0], "error") {
		t.Fatalf("wrong secret accepted: %v", bad)
	}
}

func TestOutcomes(t *testing.T) {
	rcv := hooktest.Start(t)
	s := webhook.New(nil)
	rcv.SetStatus(http.StatusServiceUnavailable)
	if res := s.Send(context.Background(), task(rcv.URL, "", 1)); res.Outcome != outbox.OutcomeRetry {
		t.Fatalf("503: %s", res.Outcome)
	}
	rcv.SetStatus(http.StatusGone)
	if res := s.Send(context.Background(), task(rcv.URL, "", 1)); res.Outcome != outbox.OutcomeGone {
		t.Fatalf("410: %s", res.Outcome)
	}
	rcv.SetStatus(http.StatusBadRequest)
	if res := s.Send(context.Background(), task(rcv.URL, "", 1)); res.Outcome != outbox.OutcomeRetry {
		t.Fatalf("400: %s", res.Outcome)
	}
	rcv.SetStatus(http.StatusAccepted)
	if res := s.Send(context.Background(), task(rcv.URL, "", 1)); res.Outcome != outbox.OutcomeOK {
		t.Fatalf("202: %s", res.Outcome)
	}
	// Retry-After is honoured as a lower bound.
	ra := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer ra.Close()
	if res := s.Send(context.Background(), task(ra.URL, "", 1)); res.Outcome != outbox.OutcomeRetry || res.RetryAfter != 2*time.Minute {
		t.Fatalf("429: %s %v", res.Outcome, res.RetryAfter)
	}
	// Redirects are not followed (the signature would go elsewhere).
	redir := httptest.NewServer(http.RedirectHandler(rcv.URL, http.StatusFound))
	defer redir.Close()
	n := len(rcv.Requests())
	if res := s.Send(context.Background(), task(redir.URL, "", 1)); res.Outcome != outbox.OutcomeRetry || len(rcv.Requests()) != n {
		t.Fatalf("redirect: %s, followed=%v", res.Outcome, len(rcv.Requests()) != n)
	}
	rcv.Stop()
	if res := s.Send(context.Background(), task(rcv.URL, "", 1)); res.Outcome != outbox.OutcomeRetry {
		t.Fatalf("down: %s", res.Outcome)
	}
}

// TestWorkerRetriesThen410 runs the module, worker and sender against a
// real receiver: retried 503s deliver under one id; a 410 parks the channel
// and is reported in the audit log and DisabledChannels.
func TestWorkerRetriesThen410(t *testing.T) {
	rcv := hooktest.Start(t)
	d, err := directory.Parse([]byte(fmt.Sprintf(`
defaults: {group_wait: 0s, group_interval: 1m, repeat_interval: 1h, rate_limit_per_hour: 0}
recipients:
  - {id: cert-de, cert: true, country: DE, webhooks: [{url: %q, secret: %s}]}
`, rcv.URL, secret)))
	if err != nil {
		t.Fatal(err)
	}
	m, err := outbox.New(outbox.DefaultConfig(), d, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := memraft.New(m)
	wcfg := outbox.DefaultWorkerConfig()
	wcfg.Poll, wcfg.BackoffBase, wcfg.BackoffMax = directory.Duration(5*time.Millisecond), directory.Duration(10*time.Millisecond), directory.Duration(40*time.Millisecond)
	w, err := outbox.NewWorker(wcfg, outbox.WorkerDeps{Module: m, Store: l.Node(0), Senders: map[string]outbox.Sender{"webhook": webhook.New(nil)}})
	if err != nil {
		t.Fatal(err)
	}
	w.Start(t.Context())
	defer w.Stop()
	rcv.FailFirst(3)
	l.Finding(finding(1))
	l.Tick(time.Now())
	waitFor(t, func() bool { return m.Stats().Delivered == 1 })
	ids, seen := rcv.Processed()
	reqs := rcv.Requests()
	if len(reqs) != 4 || len(ids) != 1 || seen[ids[0]] != 1 {
		t.Fatalf("requests %d, processed %v %v", len(reqs), ids, seen)
	}
	for _, r := range reqs {
		if r.Header.Get("webhook-id") != ids[0] {
			t.Fatal("retry changed the webhook-id")
		}
	}
	rcv.SetStatus(http.StatusGone)
	l.Finding(finding(2))
	l.Tick(time.Now())
	waitFor(t, func() bool { return len(m.DisabledChannels()) == 1 })
	if st := m.Stats(); st.Disabled != 1 || st.Delivered != 1 {
		t.Fatalf("stats %+v", st)
	}
	audit := m.Audit("cert-de")
	if last := audit[len(audit)-1]; last.Outcome != outbox.OutcomeGone || !strings.Contains(last.Error, "410") {
		t.Fatalf("audit %+v", last)
	}
	if ds := m.Deliveries("cert-de"); len(ds) != 1 || ds[0].State != outbox.StatePending {
		t.Fatalf("parked delivery %+v", ds)
	}
	// The operator re-enables it: the kept delivery goes out.
	rcv.SetStatus(0)
	for k := range m.DisabledChannels() {
		_, ch, _ := strings.Cut(k, " ")
		if _, err := l.Apply(outbox.Encode(outbox.Command{Op: outbox.OpEnableChannel, Channel: &outbox.ChannelRef{Recipient: "cert-de", Channel: ch}})); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return m.Stats().Delivered == 2 })
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

// FuzzVerify feeds arbitrary headers and bodies to the receiver-side
// verifier: it never panics, and accepts only what Sign produced.
func FuzzVerify(f *testing.F) {
	now := time.Unix(1764072000, 0)
	key, _ := (&directory.Webhook{Secret: secret}).Key()
	body := []byte(`{"type":"jasper.alert"}`)
	f.Add("msg_1", "1764072000", webhook.Sign(key, "msg_1", 1764072000, body), body)
	f.Add("msg_1", "x", "v1,abc v1,def", []byte{})
	f.Add("", "", "", []byte("{}"))
	f.Fuzz(func(t *testing.T, id, ts, sig string, b []byte) {
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		if webhook.Verify(secret, h, b, now, 5*time.Minute) == nil {
			n, _ := strconv.ParseInt(ts, 10, 64)
			if !strings.Contains(sig, webhook.Sign(key, id, n, b)) {
				t.Fatalf("accepted a signature Sign did not make: %q", sig)
			}
		}
	})
}
