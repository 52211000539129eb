package store

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ResultCodec is implemented by a module whose Apply results a proposer on
// another hub needs: Propose on a follower forwards the command to the
// leader, which encodes the result with MarshalResult; the follower
// decodes it with UnmarshalResult. A module without it returns a nil
// result to forwarded proposals (its errors still come back).
type ResultCodec interface {
	MarshalResult(v any) ([]byte, error)
	UnmarshalResult(b []byte) (any, error)
}

// ErrorKinds is implemented by a module whose Apply errors wrap sentinel
// errors that callers test with errors.Is. A forwarded error wrapping one
// of them (matched by its Error() text) still satisfies errors.Is on the
// follower.
type ErrorKinds interface {
	ErrorKinds() []error
}

// storeErrorKinds are the store's own errors that survive forwarding.
var storeErrorKinds = []error{ErrNotLeader, ErrNotOpen, ErrUnknownCommand, ErrUnknownModule, ErrBadCommand, ErrQueueFull, ErrOutOfOrder}

// ForwardedError is the error of a module proposal that a follower
// forwarded to the leader, as the leader reported it. It unwraps to the
// well-known error it wrapped on the leader (nil when none).
type ForwardedError struct {
	// Leader is the node id of the hub that applied (or refused) the
	// proposal.
	Leader string
	// Msg is the leader's error text.
	Msg string
	// Kind is the sentinel error the leader's error wrapped, if known.
	Kind error
}

func (e *ForwardedError) Error() string { return e.Msg + " (on leader " + e.Leader + ")" }

// Unwrap returns Kind.
func (e *ForwardedError) Unwrap() error { return e.Kind }

// forwarder holds the client connections to leaders' gRPC ports.
type forwarder struct {
	mu    sync.Mutex
	creds credentials.TransportCredentials
	conns map[string]*grpc.ClientConn
}

func (f *forwarder) conn(files pki.Files, addr string) (*grpc.ClientConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.conns[addr]; ok {
		return c, nil
	}
	if f.creds == nil {
		// ClientConfig requires the server to be role hub.
		tc, err := pki.ClientConfig(files)
		if err != nil {
			return nil, fmt.Errorf("forward TLS: %w", err)
		}
		f.creds = credentials.NewTLS(tc)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(f.creds))
	if err != nil {
		return nil, err
	}
	if f.conns == nil {
		f.conns = map[string]*grpc.ClientConn{}
	}
	f.conns[addr] = c
	return c, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for a, c := range f.conns {
		_ = c.Close()
		delete(f.conns, a)
	}
}

// forward hands a module proposal to the leader's gRPC port
// (ForwardService.Propose).
func (s *Store) forward(ctx context.Context, module string, payload []byte) (any, error) {
	var nl *NotLeaderError
	if !errors.As(s.notLeader(), &nl) {
		return nil, fmt.Errorf("propose %s: %w", module, s.notLeader())
	}
	switch {
	case nl.LeaderID == "":
		s.m.forwarded.WithLabelValues("no_leader").Inc()
		return nil, fmt.Errorf("propose %s on follower %s: cannot forward to the leader: %w", module, s.cfg.NodeID, nl)
	case nl.LeaderID == s.cfg.NodeID:
		// Raft just made this hub leader (or lost it) between the two
		// checks; the caller retries.
		s.m.forwarded.WithLabelValues("no_leader").Inc()
		return nil, fmt.Errorf("propose %s: leadership is changing: %w", module, nl)
	case nl.LeaderIngestAddr == "":
		s.m.forwarded.WithLabelValues("no_leader").Inc()
		return nil, fmt.Errorf("propose %s on follower %s: cannot forward: leader %s has not registered its gRPC address yet: %w", module, s.cfg.NodeID, nl.LeaderID, nl)
	}
	c, err := s.fwd.conn(s.cfg.TLS, nl.LeaderIngestAddr)
	if err != nil {
		s.m.forwarded.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("propose %s: forward to leader %s at %s: %w", module, nl.LeaderID, nl.LeaderIngestAddr, err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 2*s.cfg.ApplyTimeout)
		defer cancel()
	}
	resp, err := jasperv1.NewForwardServiceClient(c).Propose(ctx, &jasperv1.ProposeRequest{Module: module, Payload: payload})
	if err != nil {
		s.m.forwarded.WithLabelValues("error").Inc()
		return nil, fmt.Errorf("propose %s: forward to leader %s at %s: %w", module, nl.LeaderID, nl.LeaderIngestAddr, err)
	}
	if resp.Error != "" {
		s.m.forwarded.WithLabelValues("refused").Inc()
		return nil, &ForwardedError{Leader: nl.LeaderID, Msg: resp.Error, Kind: s.errorKind(module, resp.ErrorKind)}
	}
	s.m.forwarded.WithLabelValues("ok").Inc()
	if !resp.HasResult {
		return nil, nil
	}
	m := s.module(module)
	codec, ok := m.(ResultCodec)
	if !ok {
		return nil, nil
	}
	v, err := codec.UnmarshalResult(resp.Result)
	if err != nil {
		// The command did commit; only its result is unreadable.
		return nil, fmt.Errorf("propose %s: committed on leader %s but its result does not decode: %w", module, nl.LeaderID, err)
	}
	return v, nil
}

func (s *Store) module(name string) Module {
	s.fsm.mu.RLock()
	defer s.fsm.mu.RUnlock()
	return s.fsm.modules[name]
}

// errorKinds lists the sentinels that survive forwarding for module.
func (s *Store) errorKinds(module string) []error {
	kinds := storeErrorKinds
	if k, ok := s.module(module).(ErrorKinds); ok {
		kinds = append(append([]error(nil), storeErrorKinds...), k.ErrorKinds()...)
	}
	return kinds
}

// errorKind finds the sentinel named by text ("" or unknown: nil).
func (s *Store) errorKind(module, text string) error {
	if text == "" {
		return nil
	}
	for _, k := range s.errorKinds(module) {
		if k.Error() == text {
			return k
		}
	}
	return nil
}

// kindOf names the first sentinel err wraps ("" when none).
func (s *Store) kindOf(module string, err error) string {
	for _, k := range s.errorKinds(module) {
		if errors.Is(err, k) {
			return k.Error()
		}
	}
	return ""
}

// NewForwardServer returns the ForwardService of this store, to register
// on the hub's mTLS gRPC port. It accepts callers of role hub only and
// commits on this hub only (it never forwards again).
func NewForwardServer(s *Store) jasperv1.ForwardServiceServer { return &forwardServer{s: s} }

type forwardServer struct {
	jasperv1.UnimplementedForwardServiceServer
	s *Store
}

// Propose implements ForwardService.Propose.
func (f *forwardServer) Propose(ctx context.Context, req *jasperv1.ProposeRequest) (*jasperv1.ProposeResponse, error) {
	id, err := peerHub(ctx)
	if err != nil {
		return nil, status.Errorf(codes.PermissionDenied, "forwarded proposals are accepted from hubs only: %v", err)
	}
	res, err := f.s.proposeLocal(ctx, req.Module, req.Payload)
	out := &jasperv1.ProposeResponse{}
	if err != nil {
		out.Error, out.ErrorKind = err.Error(), f.s.kindOf(req.Module, err)
		f.s.log.Debug("forwarded_proposal_refused", "module", req.Module, "from", id.ID, "err", err)
		return out, nil
	}
	if res == nil {
		return out, nil
	}
	if codec, ok := f.s.module(req.Module).(ResultCodec); ok {
		b, err := codec.MarshalResult(res)
		if err != nil {
			// Committed: say so, since a retry would apply it twice.
			out.Error = fmt.Sprintf("committed, but the result of module %s does not encode: %v", req.Module, err)
			return out, nil
		}
		out.Result, out.HasResult = b, true
	}
	return out, nil
}

// peerHub returns the verified identity of the caller, which must be a hub.
func peerHub(ctx context.Context) (pki.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, errors.New("no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.PeerCertificates) == 0 {
		return pki.Identity{}, errors.New("no verified client certificate")
	}
	id, err := pki.FromCertificate(ti.State.PeerCertificates[0])
	if err != nil {
		return pki.Identity{}, err
	}
	if id.Role != pki.RoleHub {
		return pki.Identity{}, fmt.Errorf("caller is %s, want role hub", id)
	}
	return id, nil
}
