package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

var errNoSuchThing = errors.New("no such thing")

// listModule appends payloads; its result (the list length and the
// applying index) crosses the wire as JSON.
type listModule struct {
	countModule
}

type listResult struct {
	Len   int
	Index uint64
}

func (m *listModule) Apply(index uint64, payload []byte) (any, error) {
	if string(payload) == "missing" {
		return nil, fmt.Errorf("thing %q: %w", "x", errNoSuchThing)
	}
	n, err := m.countModule.Apply(index, payload)
	if err != nil {
		return nil, err
	}
	return listResult{Len: n.(int), Index: index}, nil
}
func (m *listModule) Snapshot(w io.Writer) error { return m.countModule.Snapshot(w) }
func (m *listModule) MarshalResult(v any) ([]byte, error) {
	return json.Marshal(v)
}
func (m *listModule) UnmarshalResult(b []byte) (any, error) {
	var r listResult
	err := json.Unmarshal(b, &r)
	return r, err
}
func (m *listModule) ErrorKinds() []error { return []error{errNoSuchThing} }

type fwdNode struct {
	s    *Store
	list *listModule
	srv  *grpc.Server
}

// startFwdNode starts a store with a gRPC port serving ForwardService, as
// a hub does.
func startFwdNode(t *testing.T, cfg Config) *fwdNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tc, err := pki.ServerConfig(cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	cfg.IngestAddr = ln.Addr().String()
	s, err := New(cfg, Deps{Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	m := &listModule{countModule{name: "list"}}
	s.RegisterModule(m)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)))
	jasperv1.RegisterForwardServiceServer(srv, NewForwardServer(s))
	go func() { _ = srv.Serve(ln) }()
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Stop()
		_ = s.Stop(context.Background())
	})
	return &fwdNode{s: s, list: m, srv: srv}
}

func TestProposeOnFollowerIsForwarded(t *testing.T) {
	dir := t.TempDir()
	files := testPKI(t, dir, map[string]pki.Role{"h1": pki.RoleHub, "h2": pki.RoleHub, "h3": pki.RoleHub, "a1": pki.RoleAdmin})
	c1 := fastConfig("h1", dir, files["h1"])
	c1.Bootstrap = true
	c1.Peers = nil
	var nodes []*fwdNode
	nodes = append(nodes, startFwdNode(t, c1))
	waitFor(t, "h1 leads", 10*time.Second, nodes[0].s.IsLeader)
	for _, id := range []string{"h2", "h3"} {
		n := startFwdNode(t, fastConfig(id, dir, files[id]))
		waitFor(t, "join of "+id, 15*time.Second, func() bool {
			for _, m := range nodes {
				if m.s.IsLeader() && m.s.Join(context.Background(), id, n.s.RaftAddr()) == nil {
					return true
				}
			}
			return false
		})
		nodes = append(nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var follower *fwdNode
	var leaderID string
	waitFor(t, "a follower knowing the leader's gRPC address", 10*time.Second, func() bool {
		for _, n := range nodes {
			if !n.s.IsLeader() {
				if id, addr := n.s.LeaderIngestAddr(); id != "" && addr != "" {
					follower, leaderID = n, id
					return true
				}
			}
		}
		return false
	})
	res, err := follower.s.Propose(ctx, "list", []byte("abc"))
	if err != nil {
		t.Fatalf("propose on follower: %v", err)
	}
	r, ok := res.(listResult)
	if !ok || r.Len != 3 || r.Index == 0 {
		t.Fatalf("forwarded result = %#v, want listResult{Len: 3, Index>0}", res)
	}
	// Committed on every node, the follower included.
	waitFor(t, "the forwarded command on every node", 10*time.Second, func() bool {
		for _, n := range nodes {
			n.s.fsm.mu.RLock()
			got := string(n.list.applied)
			n.s.fsm.mu.RUnlock()
			if got != "abc" {
				return false
			}
		}
		return true
	})
	// A module error comes back with its message and keeps errors.Is.
	_, err = follower.s.Propose(ctx, "list", []byte("missing"))
	var fe *ForwardedError
	if !errors.As(err, &fe) || !errors.Is(err, errNoSuchThing) || fe.Leader != leaderID || !strings.Contains(err.Error(), `thing "x"`) {
		t.Fatalf("forwarded module error = %v (%T), want ForwardedError wrapping errNoSuchThing from %s", err, err, leaderID)
	}
	// An unknown module is refused locally.
	if _, err := follower.s.Propose(ctx, "nope", nil); !errors.Is(err, ErrUnknownModule) {
		t.Fatalf("unknown module: %v", err)
	}
	// The leader's ForwardService refuses a caller that is not a hub (an admin).
	id, addr := follower.s.LeaderIngestAddr()
	adminTLS, err := pki.ClientConfig(files["a1"])
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(adminTLS)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = jasperv1.NewForwardServiceClient(cc).Propose(ctx, &jasperv1.ProposeRequest{Module: "list", Payload: []byte("zzz")})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin calling ForwardService on %s: %v, want PermissionDenied", id, err)
	}

	// With the other two hubs gone, the last follower knows no leader and
	// says so.
	for _, n := range nodes {
		if n != follower {
			n.srv.Stop()
			_ = n.s.Stop(context.Background())
		}
	}
	waitFor(t, "the follower to lose the leader", 20*time.Second, func() bool {
		id, _ := follower.s.LeaderIngestAddr()
		return id == "" && !follower.s.IsLeader()
	})
	_, err = follower.s.Propose(ctx, "list", []byte("def"))
	var nl *NotLeaderError
	if !errors.As(err, &nl) || !errors.Is(err, ErrNotLeader) || !strings.Contains(err.Error(), "no leader known") {
		t.Fatalf("propose without leader = %v, want NotLeaderError naming no leader", err)
	}
}
