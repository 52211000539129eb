package clustertest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

var jasperBin string

func TestMain(m *testing.M) {
	flag.Parse()
	code := func() int {
		if testing.Short() {
			return m.Run()
		}
		dir, err := os.MkdirTemp("", "jasper-clustertest")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			fmt.Fprintln(os.Stderr, "go env GOMOD:", err)
			return 1
		}
		jasperBin = filepath.Join(dir, "jasper")
		// JASPER_CLUSTERTEST_TAGS: build tags for the jasper binary, e.g.
		// jasper_nodetect to measure the end-to-end benchmark without the
		// detectors (hub/detect/BENCHMARKS.md).
		build := exec.Command("go", "build", "-tags", os.Getenv("JASPER_CLUSTERTEST_TAGS"), "-o", jasperBin, "./cmd/jasper")
		build.Dir = filepath.Dir(strings.TrimSpace(string(out)))
		if out, err := build.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build jasper: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}()
	os.Exit(code)
}

func needBinary(t *testing.T) {
	if testing.Short() || jasperBin == "" {
		t.Skip("process-level test: skipped with -short")
	}
}

func freePort(t *testing.T, ip string) string {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

type procHub struct {
	id, ip   string
	cfgPath  string
	ingest   string
	raftBind string
	proxy    *proxy
	logPath  string

	mu  sync.Mutex
	cmd *exec.Cmd
}

type cluster struct {
	t      *testing.T
	dir    string
	ca     *pki.CA
	caPath string
	admin  pki.Files
	hubs   []*procHub
	conns  sync.Map // addr+cert → *grpc.ClientConn
}

func (c *cluster) files(id string) pki.Files {
	return pki.Files{CA: c.caPath, Cert: filepath.Join(c.dir, id+".pem"), Key: filepath.Join(c.dir, id+"-key.pem")}
}

func (c *cluster) issue(id pki.Identity) pki.Files {
	c.t.Helper()
	is, err := c.ca.Issue(pki.IssueRequest{Identity: id, Validity: 2 * time.Hour})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := pki.WriteIssued(c.dir, id.ID, is); err != nil {
		c.t.Fatal(err)
	}
	return c.files(id.ID)
}

// newCluster starts n hub processes; hub i binds raft on 127.0.0.(i+1)
// behind its own proxy, which is the address the other hubs know.
func newCluster(t *testing.T, n int) *cluster { return newClusterWith(t, n, "") }

// newClusterWith adds extraYAML (top-level sections, e.g. clickhouse:) to
// every hub's configuration.
func newClusterWith(t *testing.T, n int, extraYAML string) *cluster {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("clustertest CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t, dir: dir, ca: ca, caPath: filepath.Join(dir, "ca.pem")}
	c.admin = c.issue(pki.Identity{Role: pki.RoleAdmin, ID: "ops"})
	var peers []string
	for i := range n {
		ip := fmt.Sprintf("127.0.0.%d", i+1)
		h := &procHub{id: fmt.Sprintf("hub-%d", i+1), ip: ip}
		h.raftBind = freePort(t, ip)
		h.ingest = freePort(t, "127.0.0.1")
		h.proxy, err = newProxy(ip+":0", h.raftBind)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.proxy.Close)
		c.issue(pki.Identity{Role: pki.RoleHub, ID: h.id})
		peers = append(peers, fmt.Sprintf("{id: %s, address: %q}", h.id, h.proxy.Addr()))
		c.hubs = append(c.hubs, h)
	}
	for _, h := range c.hubs {
		f := c.files(h.id)
		cfg := fmt.Sprintf(`node_id: %s
data_dir: data-%s
tls: {ca: %q, cert: %q, key: %q}
log: {level: info}
raft:
  bind: %q
  advertise: %q
  bootstrap: true
  peers: [%s]
  heartbeat_timeout: 300ms
  election_timeout: 300ms
  leader_lease_timeout: 150ms
  commit_timeout: 10ms
  apply_timeout: 5s
  snapshot_threshold: 16
  snapshot_interval: 300ms
  trailing_logs: 4
ingest:
  listen: %q
  retry_after: 50ms
metrics_listen: ""
tick_interval: 200ms
%s`, h.id, h.id, f.CA, f.Cert, f.Key, h.raftBind, h.proxy.Addr(), strings.Join(peers, ", "), h.ingest, extraYAML)
		h.cfgPath = filepath.Join(dir, h.id+".yaml")
		h.logPath = filepath.Join(dir, h.id+".log")
		if err := os.WriteFile(h.cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		c.start(h)
	}
	t.Cleanup(func() {
		for _, h := range c.hubs {
			c.kill(h, syscall.SIGKILL)
		}
		if t.Failed() || os.Getenv("JASPER_CLUSTERTEST_LOGS") != "" {
			for _, h := range c.hubs {
				b, _ := os.ReadFile(h.logPath)
				lines := strings.Split(string(b), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				t.Logf("--- last log lines of %s:\n%s", h.id, strings.Join(lines, "\n"))
			}
		}
	})
	return c
}

func (c *cluster) start(h *procHub) {
	c.t.Helper()
	logf, err := os.OpenFile(h.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		c.t.Fatal(err)
	}
	cmd := exec.Command(jasperBin, "hub", "run", "--config", h.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() { _ = cmd.Wait(); logf.Close() }()
	h.mu.Lock()
	h.cmd = cmd
	h.mu.Unlock()
}

// kill signals the hub's process and waits for it to exit.
func (c *cluster) kill(h *procHub, sig syscall.Signal) {
	h.mu.Lock()
	cmd := h.cmd
	h.cmd = nil
	h.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(sig)
	for range 200 {
		if err := cmd.Process.Signal(syscall.Signal(0)); err != nil {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
}

func (c *cluster) conn(addr string, files pki.Files) *grpc.ClientConn {
	c.t.Helper()
	key := addr + "|" + files.Cert
	if v, ok := c.conns.Load(key); ok {
		return v.(*grpc.ClientConn)
	}
	tc, err := pki.ClientConfig(files)
	if err != nil {
		c.t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		c.t.Fatal(err)
	}
	if v, loaded := c.conns.LoadOrStore(key, cc); loaded {
		cc.Close()
		return v.(*grpc.ClientConn)
	}
	c.t.Cleanup(func() { cc.Close() })
	return cc
}

type hubStatus struct {
	*jasperv1.StatusResponse
	fsmIndex uint64
	hash     string
}

func (c *cluster) status(h *procHub) (hubStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var hdr metadata.MD
	r, err := jasperv1.NewAdminServiceClient(c.conn(h.ingest, c.admin)).Status(ctx, &jasperv1.StatusRequest{}, grpc.Header(&hdr), grpc.WaitForReady(false))
	if err != nil {
		return hubStatus{}, err
	}
	var idx uint64
	if v := hdr.Get("jasper-fsm-index"); len(v) == 1 {
		idx, _ = strconv.ParseUint(v[0], 10, 64)
	}
	hash := ""
	if v := hdr.Get("jasper-state-hash"); len(v) == 1 {
		hash = v[0]
	}
	return hubStatus{r, idx, hash}, nil
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderAmong waits until one of hubs reports itself leader.
func (c *cluster) leaderAmong(hubs ...*procHub) *procHub {
	c.t.Helper()
	var l *procHub
	waitFor(c.t, "a leader", 30*time.Second, func() bool {
		for _, h := range hubs {
			if st, err := c.status(h); err == nil && st.RaftState == "Leader" {
				l = h
				return true
			}
		}
		return false
	})
	return l
}

// equalStates waits until every hub reports the same FSM index and state
// hash, and returns one status.
func (c *cluster) equalStates(hubs ...*procHub) hubStatus {
	c.t.Helper()
	var out hubStatus
	waitFor(c.t, "equal FSM states on "+fmt.Sprint(len(hubs))+" hubs", 60*time.Second, func() bool {
		var sts []hubStatus
		for _, h := range hubs {
			st, err := c.status(h)
			if err != nil || st.hash == "" {
				return false
			}
			sts = append(sts, st)
		}
		for _, st := range sts[1:] {
			if st.fsmIndex != sts[0].fsmIndex || st.hash != sts[0].hash {
				return false
			}
		}
		out = sts[0]
		return true
	})
	return out
}

// validBatch is a well-formed batch of n rows in the current bin.
func validBatch(seq uint64, n int) *jasperv1.Batch {
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
	return &jasperv1.Batch{Sequence: seq, BinStart: time.Now().Unix() / 60 * 60, BinSeconds: 60, Rows: r}
}

// sensor is a minimal sensor uplink: a spool of unacked batches sent in
// order, resent after any failure, following NOT_LEADER redirects.
type sensor struct {
	c     *cluster
	id    string
	files pki.Files

	mu      sync.Mutex
	next    uint64
	spool   []*jasperv1.Batch
	acked   map[uint64]bool
	packets uint64 // packets of acked batches
	rows    uint64
}

func (c *cluster) newSensor(id string) *sensor {
	f := c.issue(pki.Identity{Role: pki.RoleSensor, ID: id, Country: "JP", Prefixes: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}})
	return &sensor{c: c, id: id, files: f, next: 1, acked: map[uint64]bool{}}
}

func (s *sensor) add(n, rows int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.spool = append(s.spool, validBatch(s.next, rows))
		s.next++
	}
}

func (s *sensor) pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.spool)
}

// ackThrough removes acked batches from the spool.
func (s *sensor) ack(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, b := range s.spool {
		if b.Sequence == seq {
			s.spool = append(s.spool[:i:i], s.spool[i+1:]...)
			s.record(b)
			return
		}
	}
}

func (s *sensor) record(b *jasperv1.Batch) {
	if s.acked[b.Sequence] {
		return
	}
	s.acked[b.Sequence] = true
	s.rows += uint64(len(b.Rows.SrcIp))
	for _, p := range b.Rows.Packets {
		s.packets += p
	}
}

func (s *sensor) committedThrough(ct uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := s.spool[:0:0]
	for _, b := range s.spool {
		if b.Sequence <= ct {
			s.record(b)
		} else {
			keep = append(keep, b)
		}
	}
	s.spool = keep
}

// session runs one stream against addr; it returns the redirect address
// (if any) and why the session ended.
func (s *sensor) session(ctx context.Context, addr string) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := jasperv1.NewIngestServiceClient(s.c.conn(addr, s.files)).Stream(ctx)
	if err != nil {
		return "", err
	}
	if err := st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: &jasperv1.Hello{SensorId: s.id, Prefixes: []string{"198.51.100.0/24"}}}}); err != nil {
		return "", err
	}
	resp, err := st.Recv()
	if err != nil {
		return "", err
	}
	if r := resp.GetRefusal(); r != nil {
		return r.LeaderAddress, fmt.Errorf("hello refused: %s %s", r.Reason, r.Detail)
	}
	s.committedThrough(resp.GetWelcome().GetCommittedThrough())
	s.mu.Lock()
	batch := append([]*jasperv1.Batch(nil), s.spool...)
	s.mu.Unlock()
	if len(batch) == 0 {
		return "", nil
	}
	go func() {
		for _, b := range batch {
			if st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: b}}) != nil {
				return
			}
		}
	}()
	for range batch {
		resp, err := st.Recv()
		if err != nil {
			return "", err
		}
		if a := resp.GetAck(); a != nil {
			s.ack(a.Sequence)
			continue
		}
		r := resp.GetRefusal()
		return r.GetLeaderAddress(), fmt.Errorf("refused %d: %s %s", r.GetSequence(), r.GetReason(), r.GetDetail())
	}
	return "", nil
}

// flush sends until the spool is empty, trying hubs in turn.
func (s *sensor) flush(ctx context.Context, addrs []string) error {
	addr := addrs[0]
	for i := 0; s.pending() > 0; i++ {
		if ctx.Err() != nil {
			return fmt.Errorf("sensor %s: %d batches still spooled: %w", s.id, s.pending(), ctx.Err())
		}
		redirect, err := s.session(ctx, addr)
		if err == nil {
			continue
		}
		if redirect != "" {
			addr = redirect
		} else {
			addr = addrs[(i+1)%len(addrs)]
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

func (c *cluster) ingestAddrs(hubs ...*procHub) []string {
	var out []string
	for _, h := range hubs {
		out = append(out, h.ingest)
	}
	return out
}

// checkSensor asserts that every hub's FSM holds the sensor's acked
// batches exactly once: last sequence, batch, row and packet counts.
func checkSensor(t *testing.T, st hubStatus, s *sensor) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	var got *jasperv1.SensorStatus
	for _, ss := range st.Sensors {
		if ss.SensorId == s.id {
			got = ss
		}
	}
	if got == nil {
		t.Fatalf("sensor %s missing from %s", s.id, st.NodeId)
	}
	want := uint64(len(s.acked))
	if got.LastSequence != s.next-1 || got.Batches != want || got.Rows != s.rows || got.Packets != s.packets {
		t.Fatalf("%s on %s: last seq %d batches %d rows %d packets %d; sensor acked %d batches through %d, %d rows, %d packets",
			s.id, st.NodeId, got.LastSequence, got.Batches, got.Rows, got.Packets, want, s.next-1, s.rows, s.packets)
	}
}

var errNoAnswer = errors.New("no answer")
