package ingest

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type fixture struct {
	dir   string
	ca    *pki.CA
	files map[string]pki.Files
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: dir, ca: ca, files: map[string]pki.Files{}}
}

// issue writes a certificate signed by ca (the fixture's CA when nil).
func (f *fixture) issue(t testing.TB, ca *pki.CA, id pki.Identity, notBefore time.Time, validity time.Duration) pki.Files {
	t.Helper()
	if ca == nil {
		ca = f.ca
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: id, Validity: validity, NotBefore: notBefore, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteIssued(f.dir, id.ID, is); err != nil {
		t.Fatal(err)
	}
	fs := pki.Files{CA: filepath.Join(f.dir, "ca.pem"), Cert: filepath.Join(f.dir, id.ID+".pem"), Key: filepath.Join(f.dir, id.ID+"-key.pem")}
	f.files[id.ID] = fs
	return fs
}

func sensorID(id, country string, prefixes ...string) pki.Identity {
	ident := pki.Identity{Role: pki.RoleSensor, ID: id, Country: country}
	for _, p := range prefixes {
		ident.Prefixes = append(ident.Prefixes, netip.MustParsePrefix(p))
	}
	return ident
}

type hubNode struct {
	st  *store.Store
	srv *Server
	reg *prometheus.Registry
	cfg store.Config
}

func startHub(t testing.TB, f *fixture, id string, bootstrap bool, mutate func(*store.Config, *Config)) *hubNode {
	t.Helper()
	files, ok := f.files[id]
	if !ok {
		files = f.issue(t, nil, pki.Identity{Role: pki.RoleHub, ID: id}, time.Time{}, time.Hour)
	}
	sc := store.DefaultConfig()
	sc.NodeID = id
	sc.BindAddr = "127.0.0.1:0"
	sc.DataDir = filepath.Join(f.dir, "data-"+id)
	sc.Bootstrap = bootstrap
	sc.TLS = files
	sc.HeartbeatTimeout = 150 * time.Millisecond
	sc.ElectionTimeout = 150 * time.Millisecond
	sc.LeaderLeaseTimeout = 100 * time.Millisecond
	sc.CommitTimeout = 5 * time.Millisecond
	sc.TickInterval = 0
	sc.ApplyTimeout = 2 * time.Second
	ic := DefaultConfig()
	ic.Listen = "127.0.0.1:0"
	ic.TLS = files
	ic.RetryAfter = 50 * time.Millisecond
	if mutate != nil {
		mutate(&sc, &ic)
	}
	return startHubWith(t, sc, ic)
}

func startHubWith(t testing.TB, sc store.Config, ic Config, opts ...func(*Deps)) *hubNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	st, err := store.New(sc, store.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Store: st, Registerer: reg}
	for _, o := range opts {
		o(&deps)
	}
	srv, err := New(ic, deps)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.SetIngestAddr(srv.Addr())
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Stop(context.Background())
		_ = st.Stop(context.Background())
	})
	return &hubNode{st: st, srv: srv, reg: reg, cfg: sc}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func dial(t testing.TB, addr string, files pki.Files) *grpc.ClientConn {
	t.Helper()
	tc, err := pki.ClientConfig(files)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// validBatch builds a well-formed batch of n rows for the current bin.
func validBatch(seq uint64, binStart int64, n int) *jasperv1.Batch {
	r := &jasperv1.Rows{}
	for i := range n {
		r.SrcIp = append(r.SrcIp, []byte{203, 0, 113, byte(i)})
		r.Protocol = append(r.Protocol, 6)
		r.DstPort = append(r.DstPort, 23)
		r.IcmpType = append(r.IcmpType, 0)
		r.IcmpCode = append(r.IcmpCode, 0)
		r.Class = append(r.Class, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN)
		r.Packets = append(r.Packets, uint64(i+1))
		r.Bytes = append(r.Bytes, uint64(60*(i+1)))
		r.DstIps = append(r.DstIps, 1)
		r.FirstSeenMs = append(r.FirstSeenMs, 10)
		r.LastSeenMs = append(r.LastSeenMs, 20)
		r.TtlMin = append(r.TtlMin, 50)
		r.TtlMax = append(r.TtlMax, 60)
		r.DistinctPorts = append(r.DistinctPorts, 1)
		r.Overflow = append(r.Overflow, false)
		r.Fragments = append(r.Fragments, 0)
	}
	r.Fingerprints = []*jasperv1.FingerprintColumn{{Name: "mirai", Packets: make([]uint64, n)}}
	return &jasperv1.Batch{Sequence: seq, BinStart: binStart, BinSeconds: 60, Rows: r, Stats: &jasperv1.SensorStats{PacketsSeen: uint64(n)}}
}

func nowBin() int64 { return time.Now().Unix() / 60 * 60 }

type sensorStream struct {
	t      testing.TB
	stream grpc.BidiStreamingClient[jasperv1.StreamRequest, jasperv1.StreamResponse]
	cancel context.CancelFunc
}

// open sends a Hello and returns the stream and the hub's first answer.
func open(t testing.TB, cc *grpc.ClientConn, hello *jasperv1.Hello) (*sensorStream, *jasperv1.StreamResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	st, err := jasperv1.NewIngestServiceClient(cc).Stream(ctx)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	t.Cleanup(cancel)
	if err := st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: hello}}); err != nil && err != io.EOF {
		return nil, nil, err
	} // on io.EOF the server ended the stream: Recv returns its status
	resp, err := st.Recv()
	return &sensorStream{t: t, stream: st, cancel: cancel}, resp, err
}

func (s *sensorStream) send(b *jasperv1.Batch) {
	s.t.Helper()
	if err := s.stream.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: b}}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *sensorStream) recv() *jasperv1.StreamResponse {
	s.t.Helper()
	r, err := s.stream.Recv()
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

func TestIngestAcksPipelinedAndDedups(t *testing.T) {
	f := newFixture(t)
	sensor := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	h := startHub(t, f, "h1", true, nil)
	waitFor(t, "leader", h.st.IsLeader)
	cc := dial(t, h.srv.Addr(), sensor)
	hello := &jasperv1.Hello{SensorId: "s1", Prefixes: []string{"198.51.100.0/25"}}
	s, resp, err := open(t, cc, hello)
	if err != nil {
		t.Fatal(err)
	}
	w := resp.GetWelcome()
	if w == nil || w.CommittedThrough != 0 || w.HubId != "h1" || w.MaxBatchBytes == 0 {
		t.Fatalf("welcome %v", resp)
	}
	bin := nowBin()
	for seq := uint64(1); seq <= 20; seq++ {
		s.send(validBatch(seq, bin, 5))
	}
	for seq := uint64(1); seq <= 20; seq++ {
		a := s.recv().GetAck()
		if a == nil || a.Sequence != seq || a.Duplicate {
			t.Fatalf("answer %d: %v", seq, a)
		}
	}
	_ = s.stream.CloseSend()
	if _, err := s.stream.Recv(); err != io.EOF {
		t.Fatalf("stream end: %v", err)
	}
	// Reconnect: the Welcome says what is committed; a resend is a duplicate.
	s, resp, err = open(t, cc, hello)
	if err != nil {
		t.Fatal(err)
	}
	if w := resp.GetWelcome(); w.GetCommittedThrough() != 20 {
		t.Fatalf("welcome after reconnect %v", resp)
	}
	s.send(validBatch(19, bin, 5))
	if a := s.recv().GetAck(); !a.GetDuplicate() || a.GetSequence() != 19 {
		t.Fatalf("resend answer %v", a)
	}
	s.send(validBatch(21, bin, 5))
	if a := s.recv().GetAck(); a.GetDuplicate() || a.GetSequence() != 21 {
		t.Fatalf("answer %v", a)
	}
	ss := h.st.Sensors()
	if len(ss) != 1 || ss[0].LastSequence != 21 || ss[0].Batches != 21 || ss[0].Rows != 105 || ss[0].Country != "JP" {
		t.Fatalf("sensor state %v", ss)
	}
	if got := testutil.ToFloat64(h.srv.m.batches.WithLabelValues("acked")); got != 21 {
		t.Errorf("acked counter %v", got)
	}
	if got := testutil.ToFloat64(h.srv.m.batches.WithLabelValues("duplicate")); got != 1 {
		t.Errorf("duplicate counter %v", got)
	}
}

func TestIngestRefusals(t *testing.T) {
	f := newFixture(t)
	good := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	admin := f.issue(t, nil, pki.Identity{Role: pki.RoleAdmin, ID: "ops"}, time.Time{}, time.Hour)
	expired := f.issue(t, nil, sensorID("s-expired", "JP", "198.51.100.0/24"), time.Now().Add(-48*time.Hour), time.Hour)
	other, err := pki.NewCA("rogue CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rogue := f.issue(t, other, sensorID("s-rogue", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	h := startHub(t, f, "h1", true, func(_ *store.Config, ic *Config) { ic.MaxBatchBytes = 4096 })
	waitFor(t, "leader", h.st.IsLeader)
	bin := nowBin()

	t.Run("handshake", func(t *testing.T) {
		for name, files := range map[string]pki.Files{"other CA": rogue, "expired": expired} {
			cc := dial(t, h.srv.Addr(), files)
			_, _, err := open(t, cc, &jasperv1.Hello{SensorId: strings.TrimPrefix(filepath.Base(files.Cert), ".pem")})
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s: got %v, want a failed handshake", name, err)
			}
			t.Logf("%s: %v", name, err)
		}
	})
	t.Run("wrong role", func(t *testing.T) {
		cc := dial(t, h.srv.Addr(), admin)
		_, _, err := open(t, cc, &jasperv1.Hello{SensorId: "ops"})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("admin on Stream: %v", err)
		}
		_, err = jasperv1.NewAdminServiceClient(dial(t, h.srv.Addr(), good)).Status(context.Background(), &jasperv1.StatusRequest{})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("sensor on Status: %v", err)
		}
	})
	cc := dial(t, h.srv.Addr(), good)
	for _, tc := range []struct {
		name  string
		hello *jasperv1.Hello
		want  jasperv1.RefusalReason
	}{
		{"other sensor id", &jasperv1.Hello{SensorId: "s2"}, jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN},
		{"prefix outside certificate", &jasperv1.Hello{SensorId: "s1", Prefixes: []string{"198.51.100.0/24", "192.0.2.0/24"}}, jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN},
		{"wider prefix", &jasperv1.Hello{SensorId: "s1", Prefixes: []string{"198.51.0.0/16"}}, jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN},
		{"bad prefix", &jasperv1.Hello{SensorId: "s1", Prefixes: []string{"nope"}}, jasperv1.RefusalReason_REFUSAL_REASON_INVALID},
	} {
		t.Run("hello "+tc.name, func(t *testing.T) {
			_, resp, err := open(t, cc, tc.hello)
			if err != nil {
				t.Fatal(err)
			}
			r := resp.GetRefusal()
			if r.GetReason() != tc.want {
				t.Fatalf("got %v, want %v", resp, tc.want)
			}
			t.Logf("refused: %s", r.Detail)
		})
	}

	unequal := validBatch(1, bin, 3)
	unequal.Rows.Packets = unequal.Rows.Packets[:2]
	badIP := validBatch(1, bin, 3)
	badIP.Rows.SrcIp[1] = []byte{1, 2, 3, 4, 5}
	badClass := validBatch(1, bin, 3)
	badClass.Rows.Class[2] = 0
	seqZero := validBatch(0, bin, 3)
	for _, tc := range []struct {
		name  string
		batch *jasperv1.Batch
		want  jasperv1.RefusalReason
	}{
		{"unequal columns", unequal, jasperv1.RefusalReason_REFUSAL_REASON_INVALID},
		{"5-byte address", badIP, jasperv1.RefusalReason_REFUSAL_REASON_INVALID},
		{"unknown class", badClass, jasperv1.RefusalReason_REFUSAL_REASON_INVALID},
		{"sequence 0", seqZero, jasperv1.RefusalReason_REFUSAL_REASON_INVALID},
		{"too large", validBatch(1, bin, 400), jasperv1.RefusalReason_REFUSAL_REASON_TOO_LARGE},
		{"future", validBatch(1, bin+3600, 3), jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME},
		{"too old", validBatch(1, bin-8*24*3600, 3), jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME},
	} {
		t.Run("batch "+tc.name, func(t *testing.T) {
			s, resp, err := open(t, cc, &jasperv1.Hello{SensorId: "s1", Prefixes: []string{"198.51.100.0/24"}})
			if err != nil || resp.GetWelcome() == nil {
				t.Fatalf("open: %v %v", resp, err)
			}
			s.send(tc.batch)
			r := s.recv().GetRefusal()
			if r.GetReason() != tc.want || r.GetSequence() != tc.batch.Sequence {
				t.Fatalf("got %v, want %v", r, tc.want)
			}
			t.Logf("refused: %s", r.Detail)
		})
	}
	// Nothing from any of them is stored.
	if ss := h.st.Sensors(); len(ss) != 0 {
		t.Fatalf("refused traffic stored: %v", ss)
	}
	if got := testutil.ToFloat64(h.srv.m.refusals.WithLabelValues("invalid")); got != 5 {
		t.Errorf("invalid refusals %v, want 5", got)
	}
	// After a refusal the stream still carries good batches.
	s, _, err := open(t, cc, &jasperv1.Hello{SensorId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	s.send(unequal)
	s.send(validBatch(1, bin, 3))
	if r := s.recv().GetRefusal(); r == nil {
		t.Fatal("want refusal first")
	}
	if a := s.recv().GetAck(); a.GetSequence() != 1 {
		t.Fatalf("want ack, got %v", a)
	}
}

func TestIngestThrottlesWhenLoaderQueueFull(t *testing.T) {
	f := newFixture(t)
	sensor := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	h := startHub(t, f, "h1", true, func(sc *store.Config, ic *Config) {
		sc.Load = true
		ic.MaxPendingRows = 25
	})
	waitFor(t, "leader", h.st.IsLeader)
	s, _, err := open(t, dial(t, h.srv.Addr(), sensor), &jasperv1.Hello{SensorId: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	bin := nowBin()
	for seq := uint64(1); seq <= 2; seq++ {
		s.send(validBatch(seq, bin, 10))
		if a := s.recv().GetAck(); a.GetSequence() != seq {
			t.Fatalf("ack %d: %v", seq, a)
		}
	}
	s.send(validBatch(3, bin, 10))
	r := s.recv().GetRefusal()
	if r.GetReason() != jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE || r.RetryAfterMs == 0 {
		t.Fatalf("want THROTTLE, got %v", r)
	}
	// Nothing behind the refused batch is taken: the stream ends.
	if _, err := s.stream.Recv(); err != io.EOF {
		t.Fatalf("stream after THROTTLE: %v", err)
	}
	// The loader catches up; the same batch is then taken.
	p := h.st.Pending(0, 1000)
	if err := h.st.MarkLoaded(context.Background(), p[len(p)-1].RaftIndex); err != nil {
		t.Fatal(err)
	}
	s, resp, err := open(t, dial(t, h.srv.Addr(), sensor), &jasperv1.Hello{SensorId: "s1"})
	if err != nil || resp.GetWelcome().GetCommittedThrough() != 2 {
		t.Fatalf("reconnect: %v %v", resp, err)
	}
	s.send(validBatch(3, bin, 10))
	if a := s.recv().GetAck(); a.GetSequence() != 3 || a.Duplicate {
		t.Fatalf("after loading: %v", a)
	}
}

func TestIngestThreeHubs(t *testing.T) {
	f := newFixture(t)
	sensor := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	adminFiles := f.issue(t, nil, pki.Identity{Role: pki.RoleAdmin, ID: "ops"}, time.Time{}, time.Hour)
	hubs := []*hubNode{startHub(t, f, "h1", true, nil)}
	waitFor(t, "leader", hubs[0].st.IsLeader)
	for _, id := range []string{"h2", "h3"} {
		h := startHub(t, f, id, false, nil)
		joinVia(t, hubs, adminFiles, id, h.st.RaftAddr())
		hubs = append(hubs, h)
	}
	leader := func() *hubNode {
		var l *hubNode
		waitFor(t, "leader", func() bool {
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
	l := leader()
	hello := &jasperv1.Hello{SensorId: "s1"}
	bin := nowBin()
	// A follower redirects to the leader's ingest address; so does a
	// follower's Join.
	for _, h := range hubs {
		if h == l {
			continue
		}
		var r *jasperv1.Refusal
		waitFor(t, "redirect with address", func() bool {
			_, resp, err := open(t, dial(t, h.srv.Addr(), sensor), hello)
			if err != nil {
				t.Fatal(err)
			}
			r = resp.GetRefusal()
			return r.GetLeaderAddress() != ""
		})
		if r.Reason != jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER || r.LeaderAddress != l.srv.Addr() {
			t.Fatalf("follower answered %v, leader ingest is %s", r, l.srv.Addr())
		}
		_, err := jasperv1.NewAdminServiceClient(dial(t, h.srv.Addr(), adminFiles)).Join(context.Background(), &jasperv1.JoinRequest{NodeId: "x", RaftAddress: "127.0.0.1:1"})
		if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), string(l.cfg.NodeID)) {
			t.Fatalf("follower join: %v", err)
		}
	}
	send := func(l *hubNode, from, to uint64) {
		t.Helper()
		s, resp, err := open(t, dial(t, l.srv.Addr(), sensor), hello)
		if err != nil || resp.GetWelcome() == nil {
			t.Fatalf("open: %v %v", resp, err)
		}
		if got := resp.GetWelcome().CommittedThrough; got != from-1 {
			t.Fatalf("committed_through %d, want %d", got, from-1)
		}
		for seq := from; seq <= to; seq++ {
			s.send(validBatch(seq, bin, 4))
		}
		for seq := from; seq <= to; seq++ {
			if a := s.recv().GetAck(); a.GetSequence() != seq || a.Duplicate {
				t.Fatalf("ack %d: %v", seq, a)
			}
		}
		_ = s.stream.CloseSend()
	}
	send(l, 1, 30)
	// The leader goes away; the sensor follows the redirect to the new one.
	_ = l.srv.Stop(context.Background())
	_ = l.st.Stop(context.Background())
	for i, h := range hubs {
		if h == l {
			hubs[i] = nil
		}
	}
	l2 := leader()
	send(l2, 31, 60)
	var live []*hubNode
	for _, h := range hubs {
		if h != nil {
			live = append(live, h)
		}
	}
	// Both FSMs hold every batch once and agree; Status shows it.
	waitFor(t, "equal states", func() bool {
		i1, h1, _ := live[0].st.StateHash()
		i2, h2, _ := live[1].st.StateHash()
		return i1 == i2 && h1 == h2
	})
	var hdr metadata.MD
	resp, err := jasperv1.NewAdminServiceClient(dial(t, l2.srv.Addr(), adminFiles)).Status(context.Background(), &jasperv1.StatusRequest{}, grpc.Header(&hdr))
	if err != nil {
		t.Fatal(err)
	}
	if resp.RaftState != "Leader" || len(resp.Members) != 3 || len(resp.Sensors) != 1 || resp.Sensors[0].Batches != 60 || resp.Sensors[0].LastSequence != 60 {
		t.Fatalf("status %v", resp)
	}
	_, h2, _ := live[0].st.StateHash()
	if len(hdr.Get("jasper-state-hash")) != 1 {
		t.Fatalf("no state hash header: %v", hdr)
	}
	t.Logf("status: leader %s applied %d hash %s (node hash %s)", resp.NodeId, resp.AppliedIndex, hdr.Get("jasper-state-hash")[0][:12], h2[:12])
}

// revokedSerials is a revocation list keyed by certificate serial.
type revokedSerials map[string]bool

func (r revokedSerials) RevokedCert(c *x509.Certificate) bool { return r[c.SerialNumber.String()] }

type countryEnricher struct{}

func (countryEnricher) Enrich(b *jasperv1.Batch) *jasperv1.Enrichment {
	e := &jasperv1.Enrichment{GeoDbVersion: "test"}
	for range b.GetRows().GetSrcIp() {
		e.SrcCountry = append(e.SrcCountry, "ZZ")
	}
	return e
}

// TestIngestRevokedAndEnriched checks the two optional hooks: a revoked
// certificate is refused at the Hello, and the enricher's result is
// committed with the batch.
func TestIngestRevokedAndEnriched(t *testing.T) {
	f := newFixture(t)
	good := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	bad := f.issue(t, nil, sensorID("s2", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	badCert, err := pki.ParseCertPEM(mustRead(t, bad.Cert))
	if err != nil {
		t.Fatal(err)
	}
	hubFiles := f.issue(t, nil, pki.Identity{Role: pki.RoleHub, ID: "h1"}, time.Time{}, time.Hour)
	sc := store.DefaultConfig()
	sc.NodeID, sc.BindAddr, sc.DataDir, sc.TLS, sc.Bootstrap, sc.Load = "h1", "127.0.0.1:0", filepath.Join(f.dir, "data"), hubFiles, true, true
	sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
	ic := DefaultConfig()
	ic.Listen, ic.TLS = "127.0.0.1:0", hubFiles
	h := startHubWith(t, sc, ic, func(d *Deps) {
		d.Revocation = revokedSerials{badCert.SerialNumber.String(): true}
		d.Enricher = countryEnricher{}
	})
	waitFor(t, "leader", h.st.IsLeader)
	_, resp, err := open(t, dial(t, h.srv.Addr(), bad), &jasperv1.Hello{SensorId: "s2"})
	if err != nil || resp.GetRefusal().GetReason() != jasperv1.RefusalReason_REFUSAL_REASON_REVOKED {
		t.Fatalf("revoked: %v %v", resp, err)
	}
	s, resp, err := open(t, dial(t, h.srv.Addr(), good), &jasperv1.Hello{SensorId: "s1"})
	if err != nil || resp.GetWelcome() == nil {
		t.Fatalf("good: %v %v", resp, err)
	}
	sent := validBatch(1, nowBin(), 3)
	s.send(sent)
	if a := s.recv().GetAck(); a.GetSequence() != 1 {
		t.Fatalf("ack: %v", a)
	}
	p := h.st.Pending(0, 100)
	if len(p) != 1 || p[0].SensorCountry != "JP" || len(p[0].GetEnrichment().GetSrcCountry()) != 3 || p[0].Enrichment.GeoDbVersion != "test" || p[0].ReceivedAtMs == 0 {
		t.Fatalf("committed batch: %v", p)
	}
	// The batch was proposed as the sensor's bytes: what the FSM decoded
	// is what was sent, and the codec keeps nothing behind.
	if !proto.Equal(p[0].Batch, sent) {
		t.Fatalf("committed batch differs from the one sent: %v", p[0].Batch)
	}
	h.srv.codec.mu.Lock()
	held, kept := len(h.srv.codec.raw), h.srv.codec.kept
	h.srv.codec.mu.Unlock()
	if held != 0 || kept != 1 {
		t.Fatalf("codec kept the bytes of %d batches and still holds %d (want 1 and 0)", kept, held)
	}
}

func mustRead(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// joinVia adds a hub through the admin API of whichever hub leads (a
// loaded two-node cluster may change leader while the second one starts).
func joinVia(t testing.TB, hubs []*hubNode, admin pki.Files, id, raftAddr string) {
	t.Helper()
	var last error
	waitFor(t, "join of "+id, func() bool {
		for _, h := range hubs {
			if !h.st.IsLeader() {
				continue
			}
			_, last = jasperv1.NewAdminServiceClient(dial(t, h.srv.Addr(), admin)).Join(context.Background(), &jasperv1.JoinRequest{NodeId: id, RaftAddress: raftAddr})
			if last == nil {
				return true
			}
			if status.Code(last) != codes.FailedPrecondition {
				t.Fatal(last)
			}
		}
		return false
	})
}

// TestPlaintextNeedsTheFlag checks that a server without TLS files does
// not start unless the insecure flag is set by name.
func TestPlaintextNeedsTheFlag(t *testing.T) {
	c := DefaultConfig()
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "insecure_plaintext_for_demo") || !strings.Contains(err.Error(), "tls.ca") {
		t.Fatalf("validate without TLS: %v", err)
	}
	c.InsecurePlaintextForDemo = true
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func FuzzValidateBatch(f *testing.F) {
	seed := validBatch(7, 1_700_000_040, 3)
	for _, b := range []*jasperv1.Batch{seed, validBatch(1, 0, 0), {}} {
		data, _ := proto.Marshal(b)
		f.Add(data)
	}
	f.Add([]byte{0x32, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		var b jasperv1.Batch
		if err := proto.Unmarshal(data, &b); err != nil {
			return
		}
		if err := ValidateBatch(&b); err != nil {
			return
		}
		// Whatever passes must be safe to index column by column.
		r := b.Rows
		if r == nil {
			return
		}
		n := len(r.SrcIp)
		for i := range n {
			_ = r.Protocol[i] + r.DstPort[i] + r.IcmpType[i] + r.IcmpCode[i] + r.DstIps[i] + r.FirstSeenMs[i] + r.LastSeenMs[i] + r.TtlMin[i] + r.TtlMax[i] + r.DistinctPorts[i] + r.Fragments[i]
			_, _, _, _ = r.Class[i], r.Packets[i], r.Bytes[i], r.Overflow[i]
			if l := len(r.SrcIp[i]); l != 4 && l != 16 {
				t.Fatalf("row %d: %d-byte address passed", i, l)
			}
			for _, fc := range r.Fingerprints {
				_ = fc.Packets[i]
			}
		}
		if b.Sequence == 0 {
			t.Fatal("sequence 0 passed")
		}
	})
}

// mutableRevocations is a revocation list that a test changes while a
// stream is open, as a raft-replicated revocation would.
type mutableRevocations struct {
	mu      sync.Mutex
	serials map[string]bool
}

func (r *mutableRevocations) RevokedCert(c *x509.Certificate) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.serials[c.SerialNumber.String()]
}

func (r *mutableRevocations) revoke(c *x509.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serials[c.SerialNumber.String()] = true
}

// TestIngestRevokedMidStream checks that a revocation cuts a stream that is
// already open: the next batch is refused as REVOKED and not stored.
func TestIngestRevokedMidStream(t *testing.T) {
	f := newFixture(t)
	files := f.issue(t, nil, sensorID("s1", "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
	cert, err := pki.ParseCertPEM(mustRead(t, files.Cert))
	if err != nil {
		t.Fatal(err)
	}
	hubFiles := f.issue(t, nil, pki.Identity{Role: pki.RoleHub, ID: "h1"}, time.Time{}, time.Hour)
	sc := store.DefaultConfig()
	sc.NodeID, sc.BindAddr, sc.DataDir, sc.TLS, sc.Bootstrap, sc.Load = "h1", "127.0.0.1:0", filepath.Join(f.dir, "data"), hubFiles, true, true
	sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
	ic := DefaultConfig()
	ic.Listen, ic.TLS = "127.0.0.1:0", hubFiles
	revs := &mutableRevocations{serials: map[string]bool{}}
	h := startHubWith(t, sc, ic, func(d *Deps) { d.Revocation = revs })
	waitFor(t, "leader", h.st.IsLeader)
	s, resp, err := open(t, dial(t, h.srv.Addr(), files), &jasperv1.Hello{SensorId: "s1"})
	if err != nil || resp.GetWelcome() == nil {
		t.Fatalf("hello: %v %v", resp, err)
	}
	s.send(validBatch(1, nowBin(), 3))
	if a := s.recv().GetAck(); a.GetSequence() != 1 {
		t.Fatalf("ack: %v", a)
	}
	revs.revoke(cert)
	s.send(validBatch(2, nowBin(), 3))
	r := s.recv().GetRefusal()
	if r.GetReason() != jasperv1.RefusalReason_REFUSAL_REASON_REVOKED || r.GetSequence() != 2 {
		t.Fatalf("after revocation: %v", r)
	}
	if got := h.st.Watermark("s1"); got != 1 {
		t.Fatalf("watermark after revoked batch = %d, want 1", got)
	}
}
