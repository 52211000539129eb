package ingest

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Config configures the server.
type Config struct {
	// Listen is the gRPC address ("0.0.0.0:7443").
	Listen string
	// TLS names the hub's certificate (role hub) and the federation CA.
	TLS pki.Files
	// InsecurePlaintextForDemo serves without TLS and without client
	// authentication. Only for a local demo; must be asked for by name.
	InsecurePlaintextForDemo bool
	// MaxBatchBytes is the largest encoded Batch accepted.
	MaxBatchBytes int
	// MaxBatchAge refuses bins that ended longer ago than this.
	MaxBatchAge time.Duration
	// MaxClockSkew refuses bins that start further than this in the future.
	MaxClockSkew time.Duration
	// MaxPendingRows is the loader queue bound: past it, batches are
	// refused with THROTTLE.
	MaxPendingRows uint64
	// MaxInFlight is the per-stream pipeline depth.
	MaxInFlight int
	// RetryAfter is the wait suggested in THROTTLE and NOT_LEADER refusals.
	RetryAfter time.Duration
	// AdminIDs restricts the AdminService to these admin certificate ids
	// (empty: any certificate of role admin).
	AdminIDs []string
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Listen:         "127.0.0.1:7443",
		MaxBatchBytes:  4 << 20,
		MaxBatchAge:    7 * 24 * time.Hour,
		MaxClockSkew:   5 * time.Minute,
		MaxPendingRows: 5_000_000,
		MaxInFlight:    16,
		RetryAfter:     time.Second,
	}
}

// Validate checks the configuration, naming the key at fault.
func (c Config) Validate() error {
	switch {
	case c.Listen == "":
		return errors.New("listen: missing")
	case c.MaxBatchBytes < 1024:
		return errors.New("max_batch_bytes: must be at least 1024")
	case c.MaxBatchAge <= 0:
		return errors.New("max_batch_age: must be positive")
	case c.MaxClockSkew < 0:
		return errors.New("max_clock_skew: must not be negative")
	case c.MaxPendingRows == 0:
		return errors.New("max_pending_rows: must be positive")
	case c.MaxInFlight < 1:
		return errors.New("max_in_flight: must be at least 1")
	}
	if !c.InsecurePlaintextForDemo {
		if err := c.TLS.Validate("tls"); err != nil {
			return fmt.Errorf("%w (or set insecure_plaintext_for_demo: true for a local demo)", err)
		}
	}
	return nil
}

// Enricher looks up what the FSM must not (country, ASN, labels) for each
// row of a batch; it runs on the leader before the batch is proposed.
type Enricher interface {
	Enrich(b *jasperv1.Batch) *jasperv1.Enrichment
}

// RevocationChecker reports revoked certificates (see hub/enrol).
type RevocationChecker interface {
	RevokedCert(cert *x509.Certificate) bool
}

// Deps are the server's collaborators.
type Deps struct {
	Store *store.Store
	// Enricher is optional.
	Enricher Enricher
	// Revocation is optional.
	Revocation RevocationChecker
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Now is the wall clock for timestamp checks; nil: time.Now.
	Now func() time.Time
}

// Server serves IngestService and AdminService.
type Server struct {
	jasperv1.UnimplementedIngestServiceServer

	cfg   Config
	deps  Deps
	log   *slog.Logger
	m     *metrics
	admin *adminServer
	codec *rawCodec

	mu       sync.Mutex
	extra    []func(*grpc.Server)
	grpc     *grpc.Server
	ln       net.Listener
	started  bool
	stopped  bool
	serveErr chan error
}

// New builds a server; nothing listens until Start.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ingest config: %w", err)
	}
	if deps.Store == nil {
		return nil, errors.New("ingest: no store")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	s := &Server{cfg: cfg, deps: deps, log: deps.Log.With("component", "ingest"), m: newMetrics(deps.Registerer), codec: newRawCodec()}
	s.admin = &adminServer{s: s}
	return s, nil
}

// RegisterService adds another gRPC service to the hub's port (e.g. the
// enrolment service). Call before Start.
func (s *Server) RegisterService(register func(*grpc.Server)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.extra = append(s.extra, register)
}

// Start listens and serves in the background.
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("ingest already started")
	}
	s.started = true
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxBatchBytes + 1<<20),
		// Find dead sensors behind half-open connections; let clients
		// ping every 10 s without being told to calm down.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		// Keeps sensor batches' bytes for proposing them as they came.
		grpc.ForceServerCodecV2(s.codec),
	}
	if s.cfg.InsecurePlaintextForDemo {
		s.log.Warn("insecure_plaintext_for_demo", "listen", s.cfg.Listen, "detail", "no TLS and no client authentication: for a local demo only")
	} else {
		tc, err := pki.ServerConfig(s.cfg.TLS)
		if err != nil {
			return fmt.Errorf("ingest TLS: %w", err)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("ingest listen %s: %w", s.cfg.Listen, err)
	}
	g := grpc.NewServer(opts...)
	jasperv1.RegisterIngestServiceServer(g, s)
	jasperv1.RegisterAdminServiceServer(g, s.admin)
	for _, r := range s.extra {
		r(g)
	}
	s.grpc, s.ln = g, ln
	s.serveErr = make(chan error, 1)
	go func() { s.serveErr <- g.Serve(ln) }()
	s.log.Info("ingest_listening", "addr", ln.Addr().String(), "tls", !s.cfg.InsecurePlaintextForDemo)
	return nil
}

// Addr is the bound address ("" before Start).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return ""
	}
	return s.ln.Addr().String()
}

// Stop stops serving: it lets in-flight answers go out for up to a second
// (or until ctx ends), then closes every stream. Idempotent.
func (s *Server) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped || s.grpc == nil {
		s.stopped = true
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	g := s.grpc
	s.mu.Unlock()
	// Sensor streams are long-lived and nothing is acked before its
	// commit, so a short grace period for in-flight answers is enough.
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	g.Stop()
	<-done
	return nil
}

// errNoTLS is returned when a client identity is asked of a plaintext
// connection.
var errNoTLS = errors.New("no TLS client certificate")

// peerCert returns the verified client certificate of the call.
func peerCert(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, errNoTLS
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil, errNoTLS
	}
	return ti.State.PeerCertificates[0], nil
}

// authorize returns the caller's identity, requiring role want. In
// insecure demo mode it returns a nil identity and no error.
func (s *Server) authorize(ctx context.Context, want pki.Role) (*pki.Identity, *x509.Certificate, error) {
	cert, err := peerCert(ctx)
	if err != nil {
		if s.cfg.InsecurePlaintextForDemo {
			return nil, nil, nil
		}
		return nil, nil, status.Error(codes.Unauthenticated, "client certificate required")
	}
	id, err := pki.FromCertificate(cert)
	if err != nil {
		return nil, nil, status.Errorf(codes.PermissionDenied, "client certificate: %v", err)
	}
	if id.Role != want {
		return nil, nil, status.Errorf(codes.PermissionDenied, "%s may not call this service (role %s required)", id, want)
	}
	if want == pki.RoleAdmin && len(s.cfg.AdminIDs) > 0 && !slices.Contains(s.cfg.AdminIDs, id.ID) {
		return nil, nil, status.Errorf(codes.PermissionDenied, "%s is not listed in admin.ids", id)
	}
	return &id, cert, nil
}

// stateHeader sets the state hash headers on admin responses.
func stateHeader(ctx context.Context, idx uint64, hash string) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("jasper-fsm-index", fmt.Sprint(idx), "jasper-state-hash", hash))
}
