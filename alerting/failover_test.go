package alerting_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
)

type hubNode struct {
	id  string
	cfg store.Config
	st  *store.Store
	a   *alerting.Alerting
}

func failoverPKI(t testing.TB, dir string, ids ...string) map[string]pki.Files {
	ca, err := pki.NewCA("failover CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	out := map[string]pki.Files{}
	for _, id := range ids {
		is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: id}, Validity: time.Hour, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteIssued(dir, id, is); err != nil {
			t.Fatal(err)
		}
		out[id] = pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, id+".pem"), Key: filepath.Join(dir, id+"-key.pem")}
	}
	return out
}

func (r *rig) startHub(t testing.TB, cfg store.Config) *hubNode {
	t.Helper()
	st, err := store.New(cfg, store.Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	a := r.build(t, st, cfg.NodeID)
	st.RegisterModule(a.Module())
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := a.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := &hubNode{id: cfg.NodeID, cfg: cfg, st: st, a: a}
	t.Cleanup(func() { h.stop() })
	return h
}

// stop is the kill: the worker stops mid-flight, then raft goes away.
func (h *hubNode) stop() {
	h.a.Stop(context.Background())
	h.st.Stop(context.Background()) //nolint:errcheck // second stop is a no-op
}

func leader(t testing.TB, hubs []*hubNode) *hubNode {
	t.Helper()
	var l *hubNode
	waitUntil(t, 15*time.Second, "a leader", func() bool {
		for _, h := range hubs {
			if h != nil && h.st.IsLeader() {
				l = h
				return true
			}
		}
		return false
	})
	return l
}

// TestFailoverLeaderKilledTwice runs three in-process hubs (real raft over
// mTLS, real SMTP server and webhook receivers). Findings are committed
// while the receivers are down, so deliveries are pending when the leader
// is killed; this happens twice. Every finding must reach every channel of
// every recipient; each receiver sees each delivery id at least once and
// processes it once.
func TestFailoverLeaderKilledTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("three-hub cluster: skipped with -short")
	}
	r := newRig(t)
	dir := t.TempDir()
	files := failoverPKI(t, dir, "h1", "h2", "h3")
	mk := func(id string) store.Config {
		c := store.DefaultConfig()
		c.NodeID, c.BindAddr, c.DataDir, c.TLS, c.IngestAddr = id, "127.0.0.1:0", filepath.Join(dir, id), files[id], "ingest-"+id
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
		c.CommitTimeout, c.TickInterval, c.ApplyTimeout = 5*time.Millisecond, 50*time.Millisecond, 2*time.Second
		c.SnapshotInterval, c.SnapshotThreshold, c.TrailingLogs = 200*time.Millisecond, 64, 32
		return c
	}
	c1 := mk("h1")
	c1.Bootstrap = true
	hubs := []*hubNode{r.startHub(t, c1)}
	leader(t, hubs)
	for _, id := range []string{"h2", "h3"} {
		h := r.startHub(t, mk(id))
		var err error
		waitUntil(t, 20*time.Second, "join "+id, func() bool {
			err = leader(t, hubs).st.Join(context.Background(), id, h.st.RaftAddr())
			return err == nil
		})
		hubs = append(hubs, h)
	}
	live := func() []*hubNode {
		var out []*hubNode
		for _, h := range hubs {
			if h != nil {
				out = append(out, h)
			}
		}
		return out
	}
	propose := func(i int) {
		b, err := proto.Marshal(hostFinding(i))
		if err != nil {
			t.Fatal(err)
		}
		p := outbox.Encode(outbox.Command{Op: outbox.OpFinding, Finding: b})
		waitUntil(t, 20*time.Second, "finding committed", func() bool {
			l := leader(t, live())
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := l.st.Propose(ctx, outbox.DefaultName, p)
			return err == nil
		})
	}
	kill := func() (int, store.Config) {
		l := leader(t, live())
		for i, h := range hubs {
			if h == l {
				cfg := h.cfg
				cfg.BindAddr, cfg.Bootstrap = h.st.RaftAddr(), false
				h.stop()
				hubs[i] = nil
				return i, cfg
			}
		}
		t.Fatal("leader not found")
		return 0, store.Config{}
	}
	pendingAt := func(h *hubNode) int { return len(h.a.Module().Deliveries("")) }

	next := 0
	stream := func(n int) {
		for range n {
			propose(next)
			next++
			time.Sleep(20 * time.Millisecond)
		}
	}
	stream(10)
	// Receivers down: deliveries pile up in the replicated outbox.
	r.smtp.Stop()
	r.hookDE.Stop()
	r.hookUni.Stop()
	stream(10)
	waitUntil(t, 10*time.Second, "pending deliveries", func() bool { return pendingAt(leader(t, live())) >= 10 })
	i1, cfg1 := kill()
	t.Logf("killed leader %s with %d deliveries pending", cfg1.NodeID, pendingAt(leader(t, live())))
	r.smtp.Restart()
	r.hookDE.Restart()
	r.hookUni.Restart()
	stream(10)
	// The killed hub comes back (three voters again), then the second kill.
	hubs[i1] = r.startHub(t, cfg1)
	r.smtp.Stop()
	r.hookDE.Stop()
	stream(10)
	waitUntil(t, 10*time.Second, "pending deliveries", func() bool { return pendingAt(leader(t, live())) >= 10 })
	_, cfg2 := kill()
	t.Logf("killed leader %s with %d deliveries pending", cfg2.NodeID, pendingAt(leader(t, live())))
	r.smtp.Restart()
	r.hookDE.Restart()
	stream(10)
	// (A proposal that timed out may still have committed: a finding can be
	// observed twice, hence >=.)
	deadline := time.Now().Add(90 * time.Second)
	for {
		l := leader(t, live())
		if l.a.Module().Stats().Findings >= uint64(next) && pendingAt(l) == 0 {
			break
		}
		if time.Now().After(deadline) {
			ds := l.a.Module().Deliveries("")
			t.Fatalf("leader %s: %d deliveries left, first %+v; disabled %v; stats %+v", l.id, len(ds), ds[0], l.a.Module().DisabledChannels(), l.a.Module().Stats())
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.check(t, next)
	// Replicas agree.
	var snaps []outbox.Stats
	for _, h := range live() {
		waitUntil(t, 10*time.Second, "replica caught up", func() bool { return pendingAt(h) == 0 && h.a.Module().Stats().Findings >= uint64(next) })
		snaps = append(snaps, h.a.Module().Stats())
	}
	for _, s := range snaps[1:] {
		if s.Delivered != snaps[0].Delivered || s.Notifications != snaps[0].Notifications {
			t.Fatalf("replicas disagree: %+v vs %+v", s, snaps[0])
		}
	}
	// Each delivery the outbox recorded as delivered to a webhook reached
	// its receiver (at least once), and the receiver processed every id once.
	l := leader(t, live())
	for _, c := range []struct {
		rcpt string
		h    interface {
			Processed() ([]string, map[string]int)
		}
	}{{"cert-de", r.hookDE}, {"uni-de", r.hookUni}} {
		ids, _ := c.h.Processed()
		got := map[string]bool{}
		for _, id := range ids {
			if got[id] {
				t.Fatalf("%s processed %s twice", c.rcpt, id)
			}
			got[id] = true
		}
		n := 0
		for _, a := range l.a.Module().Audit(c.rcpt) {
			if a.Outcome == outbox.OutcomeOK && a.Channel != "email" {
				n++
				if !got[a.Delivery] {
					t.Fatalf("%s: delivery %s recorded delivered but never received", c.rcpt, a.Delivery)
				}
			}
		}
		if n != len(ids) {
			t.Fatalf("%s: %d deliveries recorded, %d ids processed", c.rcpt, n, len(ids))
		}
	}
	_, counts := r.hookDE.Processed()
	dups := 0
	for _, c := range counts {
		if c > 1 {
			dups++
		}
	}
	t.Logf("%d findings, %d notifications, %d deliveries delivered; %d webhook ids arrived more than once (dropped by id)", next, snaps[0].Notifications, snaps[0].Delivered, dups)
}
