package outbox_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

const dirYAML = `
defaults: {group_wait: 1s, group_interval: 1m, repeat_interval: 1h, rate_limit_per_hour: 0}
recipients:
  - id: cert-de
    cert: true
    country: DE
    emails: [soc@cert.example.de]
    webhooks: [{url: "https://hooks.example.de/j", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}]
  - {id: uni-de, country: DE, prefixes: [198.51.100.0/24], emails: [cert@uni.example]}
  - {id: cert-fr, cert: true, country: FR, subscriptions: [port_surge], webhooks: [{url: "https://fr.example/h", secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}]}
`

func newModules(t testing.TB, n int) []*outbox.Module {
	t.Helper()
	d, err := directory.Parse([]byte(dirYAML))
	if err != nil {
		t.Fatal(err)
	}
	var ms []*outbox.Module
	for range n {
		m, err := outbox.New(outbox.DefaultConfig(), d, nil)
		if err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	return ms
}

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func infected(i int, cc string) *jasperv1.Finding {
	a := netip.AddrFrom4([4]byte{198, 51, byte(100 + i%2), byte(i)})
	return &jasperv1.Finding{Id: fmt.Sprintf("ih-%d", i), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
		State: jasperv1.FindingState_FINDING_STATE_NEW, SrcIp: a.AsSlice(), SrcCountry: cc, SrcAsn: 64500,
		FirstSeenMs: t0.UnixMilli(), LastSeenMs: t0.UnixMilli(), Packets: uint64(10 + i), Ports: []uint32{23, 2323},
		Fingerprints: map[string]uint64{"mirai": 3, "zmap": 1}, Sensors: []string{"s1", "s2"}}
}

func snap(t testing.TB, m *outbox.Module) []byte {
	var b bytes.Buffer
	if err := m.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func mustApply(t testing.TB, l *memraft.Log, c outbox.Command) {
	t.Helper()
	if _, err := l.Apply(outbox.Encode(c)); err != nil {
		t.Fatalf("%s: %v", c.Op, err)
	}
}

// TestDeterministicReplicas feeds three replicas the same log (findings,
// ticks, admin commands, attempt outcomes incl. stale and invalid ones)
// and compares snapshots byte for byte; a fourth replica restored from a
// mid-way snapshot and fed the rest ends equal too.
func TestDeterministicReplicas(t *testing.T) {
	ms := newModules(t, 4)
	l := memraft.New(ms[:3]...)
	var mid []byte
	var midIndex uint64
	var rest []func(idx uint64)
	record := func(f func(idx uint64)) {
		if mid != nil {
			rest = append(rest, f)
		}
	}
	now := t0
	for step := range 60 {
		f := infected(step%13, []string{"DE", "FR", "DE"}[step%3])
		if step%5 == 4 {
			f.State = jasperv1.FindingState_FINDING_STATE_CONTINUING
		}
		if step%11 == 10 {
			f.State = jasperv1.FindingState_FINDING_STATE_ENDED
		}
		l.Finding(f)
		record(func(idx uint64) { ms[3].OnFinding(idx, f) })
		now = now.Add(700 * time.Millisecond)
		l.Tick(now)
		tn := now
		record(func(idx uint64) { ms[3].OnTick(idx, tn) })
		if step%7 == 3 {
			for _, d := range ms[0].Due(now.UnixMilli(), 100, nil) {
				outcome := []string{outbox.OutcomeOK, outbox.OutcomeRetry}[step%2]
				c := outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: d.Delivery.ID, Attempt: d.Attempt,
					Outcome: outcome, AtMs: now.UnixMilli(), NextMs: now.UnixMilli() + 1500, Error: "x"}}
				p := outbox.Encode(c)
				l.Apply(p)
				l.Apply(p) // duplicate: stale, rejected identically everywhere
				record(func(idx uint64) { ms[3].Apply(idx-1, p); ms[3].Apply(idx, p) })
			}
		}
		if step == 20 {
			p := outbox.Encode(outbox.Command{Op: outbox.OpPutSilence, Silence: &routeSilence})
			l.Apply(p)
			mid = snap(t, ms[0])
			midIndex = l.Index()
		}
		if step == 40 {
			p := outbox.Encode(outbox.Command{Op: outbox.OpDeleteRecipient, ID: "uni-de"})
			l.Apply(p)
			record(func(idx uint64) { ms[3].Apply(idx, p) })
		}
	}
	a, b, c := snap(t, ms[0]), snap(t, ms[1]), snap(t, ms[2])
	if !bytes.Equal(a, b) || !bytes.Equal(a, c) {
		t.Fatal("replica snapshots differ")
	}
	if err := ms[3].Restore(bytes.NewReader(mid)); err != nil {
		t.Fatal(err)
	}
	idx := midIndex
	for _, f := range rest {
		idx++
		f(idx)
	}
	// Replica 3 applied the same entries (indices may differ for the
	// doubled attempt entries, so compare everything but the index).
	st := ms[0].Stats()
	if st3 := ms[3].Stats(); st3 != st {
		t.Fatalf("restored replica diverged:\n%+v\n%+v", st3, st)
	}
	if st.Notifications == 0 || st.Delivered == 0 || st.Retries == 0 || st.StaleAttempts == 0 || st.Removed == 0 {
		t.Fatalf("test did not exercise enough: %+v", st)
	}
	if len(a) < 1000 {
		t.Fatalf("snapshot suspiciously small: %d", len(a))
	}
}

var routeSilence = route.Silence{ID: "quiet-fr", Recipient: "cert-fr", Type: "infected_host", StartsMs: 0, EndsMs: 1 << 62}

func TestAttemptLifecycle(t *testing.T) {
	ms := newModules(t, 1)
	m := ms[0]
	l := memraft.New(m)
	l.Finding(infected(1, "DE")) // 198.51.101.1: cert-de only
	l.Tick(t0)
	if d := m.Due(t0.UnixMilli(), 10, nil); len(d) != 0 {
		t.Fatalf("due before group wait: %d", len(d))
	}
	l.Tick(t0.Add(time.Second))
	due := m.Due(t0.Add(time.Second).UnixMilli(), 10, nil)
	if len(due) != 2 {
		t.Fatalf("want email+webhook deliveries, got %d", len(due))
	}
	for _, d := range due {
		if d.Recipient.ID != "cert-de" || d.Ticket != "JSP-000001" || len(d.Items) != 1 || d.Items[0].Finding.GetId() != "ih-1" {
			t.Fatalf("task %+v", d)
		}
	}
	email, hook := due[0], due[1]
	at := t0.Add(2 * time.Second).UnixMilli()
	// Retry the webhook; deliver the e-mail.
	mustApply(t, l, outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: hook.Delivery.ID, Attempt: 1, Outcome: outbox.OutcomeRetry, AtMs: at, NextMs: at + 5000, Error: "503"}})
	mustApply(t, l, outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: email.Delivery.ID, Attempt: 1, Outcome: outbox.OutcomeOK, AtMs: at}})
	if _, err := l.Apply(outbox.Encode(outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: hook.Delivery.ID, Attempt: 1, Outcome: outbox.OutcomeOK, AtMs: at}})); !errors.Is(err, outbox.ErrStaleAttempt) {
		t.Fatalf("stale attempt: %v", err)
	}
	if d := m.Due(at+4999, 10, nil); len(d) != 0 {
		t.Fatalf("retry due too early: %d", len(d))
	}
	d := m.Due(at+5000, 10, nil)
	if len(d) != 1 || d[0].Delivery.ID != hook.Delivery.ID || d[0].Attempt != 2 {
		t.Fatalf("retry: %+v", d)
	}
	// 410: channel parked, delivery kept, reported.
	mustApply(t, l, outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: hook.Delivery.ID, Attempt: 2, Outcome: outbox.OutcomeGone, AtMs: at + 5000, Error: "410 Gone"}})
	if d := m.Due(at+1e9, 10, nil); len(d) != 0 {
		t.Fatal("disabled channel still due")
	}
	if dis := m.DisabledChannels(); len(dis) != 1 {
		t.Fatalf("disabled %v", dis)
	}
	mustApply(t, l, outbox.Command{Op: outbox.OpEnableChannel, Channel: &outbox.ChannelRef{Recipient: "cert-de", Channel: hook.Delivery.Channel}})
	if d := m.Due(at+1e9, 10, nil); len(d) != 1 || d[0].Attempt != 3 || d[0].Delivery.ID != hook.Delivery.ID {
		t.Fatalf("re-enabled: %+v", d)
	}
	audit := m.Audit("cert-de")
	var outcomes []string
	for _, a := range audit {
		outcomes = append(outcomes, a.Outcome)
	}
	if fmt.Sprint(outcomes) != "[retry delivered disabled]" || audit[0].Ticket != "JSP-000001" {
		t.Fatalf("audit %v", outcomes)
	}
}

func TestRetryForGivesUp(t *testing.T) {
	d, _ := directory.Parse([]byte(dirYAML))
	cfg := outbox.DefaultConfig()
	cfg.RetryFor = directory.Duration(10 * time.Second)
	m, err := outbox.New(cfg, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := memraft.New(m)
	l.Tick(t0)
	l.Finding(infected(3, "FR")) // cert-fr: one webhook
	l.Tick(t0.Add(time.Second))
	task := m.Due(t0.Add(time.Second).UnixMilli(), 10, nil)[0]
	mustApply(t, l, outbox.Command{Op: outbox.OpAttempt, Attempt: &outbox.AttemptCommand{Delivery: task.Delivery.ID, Attempt: 1, Outcome: outbox.OutcomeRetry, AtMs: t0.UnixMilli() + 2000, NextMs: t0.UnixMilli() + 60000}})
	l.Tick(t0.Add(12 * time.Second))
	ds := m.Deliveries("cert-fr")
	if len(ds) != 1 || ds[0].State != outbox.StateFailed || m.Stats().Failed != 1 {
		t.Fatalf("deliveries %+v", ds)
	}
}

// fakeSender fails the first failN attempts of every delivery, records the
// order of successful deliveries per channel.
type fakeSender struct {
	mu    sync.Mutex
	seen  map[string]int
	done  map[string]bool
	order map[string][]string
	failN int
	gone  bool
}

func (s *fakeSender) Send(_ context.Context, t *outbox.Task) outbox.Result {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen[t.Delivery.ID]++
	if s.gone {
		return outbox.Result{Outcome: outbox.OutcomeGone, Err: errors.New("410")}
	}
	if s.seen[t.Delivery.ID] <= s.failN {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: errors.New("down")}
	}
	// A receiver processes each id once: record the first success only
	// (a leader that lost office may have delivered without recording it).
	if !s.done[t.Delivery.ID] {
		s.done[t.Delivery.ID] = true
		k := t.Recipient.ID + " " + t.Delivery.Channel
		s.order[k] = append(s.order[k], t.Ticket)
	}
	return outbox.Result{Outcome: outbox.OutcomeOK}
}

func TestWorkerRetriesInOrderAndFailsOver(t *testing.T) {
	ms := newModules(t, 3)
	l := memraft.New(ms...)
	snd := &fakeSender{seen: map[string]int{}, done: map[string]bool{}, order: map[string][]string{}, failN: 2}
	wcfg := outbox.DefaultWorkerConfig()
	wcfg.Poll = directory.Duration(5 * time.Millisecond)
	wcfg.BackoffBase = directory.Duration(5 * time.Millisecond)
	wcfg.BackoffMax = directory.Duration(20 * time.Millisecond)
	// Event time runs ahead of the wall clock (1.1 s per step); the
	// leaders' clocks follow it.
	var offset atomic.Int64
	clock := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	var workers []*outbox.Worker
	for i, m := range ms {
		w, err := outbox.NewWorker(wcfg, outbox.WorkerDeps{Module: m, Store: l.Node(i), Node: fmt.Sprint("hub", i), Now: clock,
			Senders: map[string]outbox.Sender{"email": snd, "webhook": snd}})
		if err != nil {
			t.Fatal(err)
		}
		w.Start(t.Context())
		workers = append(workers, w)
	}
	defer func() {
		for _, w := range workers {
			w.Stop()
		}
	}()
	for i := range 30 {
		l.Finding(infected(i, "DE"))
		offset.Add(int64(1100 * time.Millisecond))
		l.Tick(clock())
		if i == 10 {
			l.SetLeader(1)
		}
		if i == 20 {
			l.SetLeader(2)
		}
		time.Sleep(2 * time.Millisecond)
	}
	deadline := time.Now().Add(20 * time.Second)
	for len(ms[0].Deliveries("")) > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if left := ms[0].Deliveries(""); len(left) > 0 {
		t.Fatalf("%d deliveries left, first %+v", len(left), left[0])
	}
	st := ms[0].Stats()
	if st.Delivered != st.Deliveries || st.Retries == 0 {
		t.Fatalf("stats %+v", st)
	}
	snd.mu.Lock()
	defer snd.mu.Unlock()
	// Every delivery went through its two failures first (some attempts of
	// a leader that lost office are not recorded, hence the sender's count).
	if len(snd.seen) != int(st.Deliveries) {
		t.Fatalf("sender saw %d ids, %d deliveries", len(snd.seen), st.Deliveries)
	}
	for id, n := range snd.seen {
		if n < 3 {
			t.Fatalf("%s delivered after %d sends", id, n)
		}
	}
	for k, tickets := range snd.order {
		for i := 1; i < len(tickets); i++ {
			if tickets[i] <= tickets[i-1] {
				t.Fatalf("%s out of order: %v", k, tickets)
			}
		}
	}
	if !bytes.Equal(snap(t, ms[0]), snap(t, ms[2])) {
		t.Fatal("replicas differ")
	}
}

func TestCommandDecodeRejects(t *testing.T) {
	for _, p := range []string{``, `{}`, `{"op":"nope"}`, `{"op":"tick"}`, `{"op":"attempt","attempt":{"delivery":"x","attempt":0}}`,
		`{"op":"put_recipient","recipient":{"id":"BAD"}}`, `{"op":"tick","tick_ms":1,"extra":1}`, `{"op":"tick","tick_ms":1} {}`,
		`{"op":"put_silence","silence":{"id":"s","starts_ms":1,"ends_ms":2}}`} {
		if _, err := outbox.Decode([]byte(p)); !errors.Is(err, outbox.ErrBadCommand) {
			t.Errorf("%s: %v", p, err)
		}
	}
}

// FuzzApply feeds arbitrary payloads to two replicas: neither may panic,
// both must answer alike and stay byte-equal.
func FuzzApply(f *testing.F) {
	f.Add([]byte(`{"op":"tick","tick_ms":1764072000000}`))
	f.Add([]byte(`{"op":"put_silence","silence":{"id":"s","type":"infected_host","starts_ms":1,"ends_ms":2}}`))
	f.Add([]byte(`{"op":"ack","ack":{"recipient":"cert-de","finding_id":"ih-1"}}`))
	f.Add([]byte(`{"op":"attempt","attempt":{"delivery":"msg_x","attempt":1,"outcome":"retry","at_ms":5,"next_ms":9}}`))
	f.Add([]byte(`{"op":"finding","finding":"CgNpaC0xEAEYAQ=="}`))
	f.Add([]byte(`{"op":"put_recipient","recipient":{"id":"x","cert":true,"country":"NL","emails":["a@b.nl"]}}`))
	f.Add([]byte(`{"op":"delete_recipient","id":"cert-de"}`))
	f.Fuzz(func(t *testing.T, p []byte) {
		ms := newModules(t, 2)
		l := memraft.New(ms...)
		l.Finding(infected(1, "DE"))
		l.Tick(t0.Add(5 * time.Second))
		_, err1 := ms[0].Apply(10, p)
		_, err2 := ms[1].Apply(10, p)
		if fmt.Sprint(err1) != fmt.Sprint(err2) {
			t.Fatalf("replicas answered differently: %v / %v", err1, err2)
		}
		l.Tick(t0.Add(time.Minute))
		if !bytes.Equal(snap(t, ms[0]), snap(t, ms[1])) {
			t.Fatal("replicas differ")
		}
	})
}

func TestNoGroupWaitNotifiesWithoutTick(t *testing.T) {
	d, err := directory.Parse([]byte(`
defaults: {group_wait: 0s, group_interval: 1m, repeat_interval: 1h}
recipients: [{id: cert-de, cert: true, country: DE, emails: [a@b.de]}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := outbox.New(outbox.DefaultConfig(), d, nil)
	l := memraft.New(m)
	l.Finding(infected(1, "DE")) // before any tick: event time unknown, waits
	if len(m.Due(1<<62, 10, nil)) != 0 {
		t.Fatal("notified before event time was known")
	}
	l.Tick(t0) // the first tick notifies the early finding
	if ds := m.Deliveries("cert-de"); len(ds) != 1 {
		t.Fatalf("after the first tick: %+v", ds)
	}
	l.Finding(infected(2, "DE")) // notified inside its own entry, no tick
	l.Finding(infected(3, "DE"))
	ds := m.Deliveries("cert-de")
	if len(ds) != 3 || ds[0].Notification != "n1" || ds[1].Notification != "n2" || ds[2].Notification != "n3" {
		t.Fatalf("deliveries %+v", ds)
	}
	due := m.Due(t0.UnixMilli(), 10, nil)
	if len(due) != 1 || due[0].Delivery.ID != ds[0].ID {
		t.Fatalf("due %+v", due) // one channel: only its head, in order
	}
}
