package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/internal/pki"
)

// testPKI writes a CA and one certificate per (role, id) under dir.
func testPKI(t testing.TB, dir string, certs map[string]pki.Role) map[string]pki.Files {
	t.Helper()
	ca, err := pki.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	out := map[string]pki.Files{}
	for id, role := range certs {
		ident := pki.Identity{Role: role, ID: id}
		is, err := ca.Issue(pki.IssueRequest{Identity: ident, Validity: time.Hour, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
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

// FastConfig returns a Config with timeouts short enough for tests.
func fastConfig(id, dir string, files pki.Files) Config {
	c := DefaultConfig()
	c.NodeID = id
	c.BindAddr = "127.0.0.1:0"
	c.DataDir = filepath.Join(dir, id)
	c.TLS = files
	c.IngestAddr = "ingest-" + id
	c.HeartbeatTimeout = 150 * time.Millisecond
	c.ElectionTimeout = 150 * time.Millisecond
	c.LeaderLeaseTimeout = 100 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
	c.TickInterval = 50 * time.Millisecond
	c.ApplyTimeout = 2 * time.Second
	c.Load = true
	return c
}

type testNode struct {
	cfg Config
	s   *Store
	mod *countModule
}

func startNode(t testing.TB, cfg Config) *testNode {
	t.Helper()
	s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	m := &countModule{name: "count"}
	s.RegisterModule(m)
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return &testNode{cfg: cfg, s: s, mod: m}
}

func waitFor(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func leaderOf(t testing.TB, nodes []*testNode) *testNode {
	t.Helper()
	var l *testNode
	waitFor(t, "a leader", 10*time.Second, func() bool {
		for _, n := range nodes {
			if n != nil && n.s.IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

// sameState waits until every node reports the same FSM index and hash.
func sameState(t testing.TB, nodes []*testNode) string {
	t.Helper()
	var hash string
	waitFor(t, "equal FSM states", 10*time.Second, func() bool {
		var first string
		var idx uint64
		for i, n := range nodes {
			ix, h, err := n.s.StateHash()
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first, idx = h, ix
			} else if h != first || ix != idx {
				return false
			}
		}
		hash = first
		return true
	})
	return hash
}

func TestClusterReplicatesAndFailsOver(t *testing.T) {
	dir := t.TempDir()
	files := testPKI(t, dir, map[string]pki.Role{"h1": pki.RoleHub, "h2": pki.RoleHub, "h3": pki.RoleHub})
	c1 := fastConfig("h1", dir, files["h1"])
	c1.Bootstrap = true
	n1 := startNode(t, c1)
	leaderOf(t, []*testNode{n1})
	nodes := []*testNode{n1}
	for _, id := range []string{"h2", "h3"} {
		n := startNode(t, fastConfig(id, dir, files[id]))
		// Whoever leads adds it (a loaded two-node cluster may change
		// leader while the second node starts).
		var err error
		waitFor(t, "join of "+id, 15*time.Second, func() bool {
			for _, m := range nodes {
				if m.s.IsLeader() {
					if err = m.s.Join(context.Background(), id, n.s.RaftAddr()); err == nil {
						return true
					}
					if !errors.Is(err, ErrNotLeader) {
						t.Fatal(err)
					}
				}
			}
			return false
		})
		nodes = append(nodes, n)
	}
	ctx := context.Background()
	// Concurrent proposals from several sensors, grouped by the proposer.
	propose := func(l *testNode, sensor string, from, to uint64) {
		t.Helper()
		errs := make(chan error, 16)
		for _, s := range []string{sensor + "a", sensor + "b", sensor + "c"} {
			go func() {
				for seq := from; seq <= to; seq++ {
					r, err := l.s.ProposeBatch(ctx, testBatch(s, seq, 3), 0)
					if err == nil && (r.Err != nil || r.Duplicate) {
						err = fmt.Errorf("seq %d: %+v", seq, r)
					}
					if err != nil {
						errs <- err
						return
					}
				}
				errs <- nil
			}()
		}
		for range 3 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	l := leaderOf(t, nodes)
	propose(l, "s", 1, 20)
	// A resend is acknowledged as a duplicate.
	r, err := l.s.ProposeBatch(ctx, testBatch("sa", 5, 3), 0)
	if err != nil || !r.Duplicate {
		t.Fatalf("resend: %+v %v", r, err)
	}
	// Followers refuse and name the leader's ingest address.
	for _, n := range nodes {
		if n == l {
			continue
		}
		_, err := n.s.ProposeBatch(ctx, testBatch("sa", 21, 3), 0)
		var nl *NotLeaderError
		if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower answered %v", err)
		}
		waitFor(t, "leader ingest address", 5*time.Second, func() bool {
			_, addr := n.s.LeaderIngestAddr()
			return addr == "ingest-"+l.cfg.NodeID
		})
		if err := n.s.Join(ctx, "x", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
			t.Fatalf("follower join: %v", err)
		}
	}
	// Module commands come back with the module's result.
	v, err := l.s.Propose(ctx, "count", []byte("xy"))
	if err != nil || v.(int) != 2 {
		t.Fatalf("module propose: %v %v", v, err)
	}
	if _, err := l.s.Propose(ctx, "count", []byte("fail")); err == nil || err.Error() != "module refused" {
		t.Fatalf("module error: %v", err)
	}
	if _, err := l.s.Propose(ctx, "nope", nil); !errors.Is(err, ErrUnknownModule) {
		t.Fatalf("unknown module: %v", err)
	}
	// Loader interface.
	if got := l.s.PendingRows(); got != 3*20*3 {
		t.Fatalf("pending rows %d, want 180", got)
	}
	p := l.s.Pending(0, 10)
	if len(p) == 0 || p[0].RaftIndex == 0 {
		t.Fatal("no pending batches")
	}
	if err := l.s.MarkLoaded(ctx, p[len(p)-1].RaftIndex); err != nil {
		t.Fatal(err)
	}
	if l.s.PendingRows() >= 180 || l.s.LoadedIndex() != p[len(p)-1].RaftIndex {
		t.Fatalf("mark loaded: pending %d loaded %d", l.s.PendingRows(), l.s.LoadedIndex())
	}
	sameState(t, nodes)

	// Leader stops: the others elect a new one and go on.
	old := l
	old.cfg.BindAddr = old.s.RaftAddr() // restart on the same address
	if err := old.s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	var rest []*testNode
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	l2 := leaderOf(t, rest)
	propose(l2, "s", 21, 30)
	sameState(t, rest)
	// The old leader restarts from its data folder and catches up.
	restarted := startNode(t, old.cfg)
	all := append(rest, restarted)
	sameState(t, all)
	if wm := restarted.s.Watermark("sa"); wm != 30 {
		t.Fatalf("restarted node watermark %d, want 30", wm)
	}
	st, err := l2.s.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 3 || len(st.StateHash) != 64 || st.FSMIndex == 0 || len(st.Sensors) != 3 || st.Sensors[0].LastSequence != 30 {
		t.Fatalf("status %+v", st)
	}
	for _, n := range all {
		if n.mod.batches != 90 {
			t.Errorf("%s module saw %d batches, want 90", n.cfg.NodeID, n.mod.batches)
		}
	}
	// Leave removes a member.
	if err := l2.s.Leave(ctx, restarted.cfg.NodeID); err != nil {
		t.Fatal(err)
	}
	st, _ = l2.s.Status()
	if len(st.Members) != 2 {
		t.Fatalf("members after leave: %+v", st.Members)
	}
}

func TestRaftTLSRefusesNonHub(t *testing.T) {
	dir := t.TempDir()
	files := testPKI(t, dir, map[string]pki.Role{"h1": pki.RoleHub, "s1": pki.RoleAdmin})
	c1 := fastConfig("h1", dir, files["h1"])
	c1.Bootstrap = true
	n1 := startNode(t, c1)
	leaderOf(t, []*testNode{n1})
	// An admin certificate from the right CA is still not a hub.
	f := files["s1"]
	kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", n1.s.RaftAddr(), &tls.Config{InsecureSkipVerify: true, Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS13})
	if err == nil {
		// TLS 1.3: the client learns of the refusal on first read.
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	if err == nil {
		t.Fatal("a non-hub certificate reached the raft port")
	}
	t.Logf("refused: %v", err)
	// A hub certificate works through the stream layer.
	st, err := newTLSStream("127.0.0.1:0", "", files["h1"])
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := st.Dial("127.0.0.1:1", time.Second)
	if err == nil {
		c.Close()
		t.Fatal("dial to a closed port succeeded")
	}
}
