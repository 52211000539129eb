package hub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/jasperfed/jasper/hub/ingest"
	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/obs"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Service is a background component started after the store and stopped
// before it (the ClickHouse loader, alert delivery, a dashboard server).
// Services that act only on the leader follow Store().LeaderChanges().
type Service interface {
	Start(ctx context.Context) error
	Stop(ctx context.Context) error
}

// Extension attaches an optional component to a hub between New and
// Start. Name is also the top-level config section it owns ("" for none);
// read it with Hub.Section.
type Extension struct {
	Name   string
	Attach func(h *Hub) error
	// Check, optional, validates the extension's section of a configuration
	// without starting anything: `jasper hub run --check` calls it, so a bad
	// key or value inside the section is named before a hub is started.
	Check func(cfg Config) error
}

// Deps are the hub's collaborators.
type Deps struct {
	Log *slog.Logger
	// Registry receives every metric and is served on metrics_listen.
	Registry *prometheus.Registry
	// Version is reported in jasper_hub_info.
	Version string
}

// Hub is one regional hub.
type Hub struct {
	cfg   Config
	base  *slog.Logger // for components, which add their own "component"
	log   *slog.Logger
	reg   *prometheus.Registry
	store *store.Store
	m     *metrics

	mu         sync.Mutex
	started    bool
	stopped    bool
	enricher   ingest.Enricher
	revocation ingest.RevocationChecker
	grpcRegs   []func(*grpc.Server)
	services   []Service
	running    []Service
	ingest     *ingest.Server
	obs        *obs.Server
}

// New validates cfg and builds the hub; nothing runs until Start.
func New(cfg Config, deps Deps) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("hub config: %w", err)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	reg := deps.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	st, err := store.New(cfg.storeConfig(), store.Deps{Log: log, Registerer: reg})
	if err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, base: log, log: log.With("component", "hub"), reg: reg, store: st}
	h.m = newMetrics(reg, cfg.NodeID, deps.Version)
	// Followers forward module proposals (alert acknowledgements,
	// silences, enrolments) to the leader's port.
	h.grpcRegs = append(h.grpcRegs, func(s *grpc.Server) {
		jasperv1.RegisterForwardServiceServer(s, store.NewForwardServer(st))
	})
	return h, nil
}

// Attach runs extensions in order, after checking that every top-level
// config section belongs to one of them.
func (h *Hub) Attach(exts ...Extension) error {
	var names []string
	for _, e := range exts {
		if e.Name != "" {
			names = append(names, e.Name)
		}
	}
	if err := h.cfg.CheckSections(names...); err != nil {
		return fmt.Errorf("config %s: %w", h.cfg.Path, err)
	}
	if h.cfg.HasSection("clickhouse") && !slices.Contains(names, "clickhouse") {
		return fmt.Errorf("config %s: line %d: clickhouse: this binary has no ClickHouse loader to read it", h.cfg.Path, h.cfg.ClickHouse.Line)
	}
	for _, e := range exts {
		if err := e.Attach(h); err != nil {
			return fmt.Errorf("attach %s: %w", e.Name, err)
		}
	}
	return nil
}

// Config is the hub's configuration.
func (h *Hub) Config() Config { return h.cfg }

// Section decodes the named top-level config section strictly into dst.
func (h *Hub) Section(name string, dst any) error { return h.cfg.Section(name, dst) }

// Log is the base logger for components (add your own "component").
func (h *Hub) Log() *slog.Logger { return h.base }

// Registerer is where components register their metrics.
func (h *Hub) Registerer() prometheus.Registerer { return h.reg }

// Store is the raft store (RegisterModule, Propose, loader interface).
func (h *Hub) Store() *store.Store { return h.store }

func (h *Hub) beforeStart(what string) {
	if h.started {
		panic("hub: " + what + " after Start")
	}
}

// RegisterModule adds a replicated FSM module. Before Start.
func (h *Hub) RegisterModule(m store.Module) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeStart("RegisterModule")
	h.store.RegisterModule(m)
}

// SetEnricher sets the enricher the leader runs before proposing a batch.
func (h *Hub) SetEnricher(e ingest.Enricher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeStart("SetEnricher")
	h.enricher = e
}

// SetRevocation sets the revocation check of sensor certificates.
func (h *Hub) SetRevocation(r ingest.RevocationChecker) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeStart("SetRevocation")
	h.revocation = r
}

// RegisterGRPC adds a gRPC service to the hub's mTLS port.
func (h *Hub) RegisterGRPC(register func(*grpc.Server)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeStart("RegisterGRPC")
	h.grpcRegs = append(h.grpcRegs, register)
}

// AddService adds a background service (started in order after the store,
// stopped in reverse before it).
func (h *Hub) AddService(s Service) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.beforeStart("AddService")
	h.services = append(h.services, s)
}

// EnableLoader keeps committed batches in the store's pending-load queue
// for a loader (the ClickHouse loader calls it when attached). Without it
// the queue stays empty.
func (h *Hub) EnableLoader() error { return h.store.SetLoad(true) }

// IngestAddr is the bound gRPC address (after Start).
func (h *Hub) IngestAddr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.ingest == nil {
		return ""
	}
	return h.ingest.Addr()
}

// MetricsAddr is the bound metrics address (after Start; "" if disabled).
func (h *Hub) MetricsAddr() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.obs == nil {
		return ""
	}
	return h.obs.Addr()
}

// Ready reports whether the hub serves: raft is running and a leader is
// known.
func (h *Hub) Ready() error {
	st, err := h.store.Status()
	if err != nil {
		return err
	}
	if st.LeaderID == "" {
		return errors.New("no raft leader known")
	}
	return nil
}

// Start binds the gRPC port, starts raft, the services and the metrics
// endpoint. On error, whatever started is stopped again.
func (h *Hub) Start(ctx context.Context) (err error) {
	h.mu.Lock()
	if h.started {
		h.mu.Unlock()
		return errors.New("hub already started")
	}
	h.started = true
	h.mu.Unlock()
	defer func() {
		if err != nil {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = h.Stop(stopCtx)
		}
	}()

	// 1. The gRPC port first, so that its address is known to the store.
	srv, err := ingest.New(h.cfg.ingestConfig(), ingest.Deps{
		Store: h.store, Enricher: h.enricher, Revocation: h.revocation,
		Log: h.base, Registerer: h.reg,
	})
	if err != nil {
		return err
	}
	for _, r := range h.grpcRegs {
		srv.RegisterService(r)
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	h.mu.Lock()
	h.ingest = srv
	h.mu.Unlock()
	if h.cfg.Ingest.Advertise == "" {
		h.store.SetIngestAddr(srv.Addr())
	}
	// 2. Raft and the FSM.
	if err := h.store.Start(ctx); err != nil {
		return err
	}
	// 3. Services, in order.
	for _, s := range h.services {
		if err := s.Start(ctx); err != nil {
			return fmt.Errorf("start service %T: %w", s, err)
		}
		h.mu.Lock()
		h.running = append(h.running, s)
		h.mu.Unlock()
	}
	// 4. Metrics and health.
	if h.cfg.MetricsListen != "" {
		o, err := obs.Listen(h.cfg.MetricsListen, h.reg, h.Ready, h.log)
		if err != nil {
			return fmt.Errorf("metrics_listen %s: %w", h.cfg.MetricsListen, err)
		}
		if h.cfg.MetricsPprof {
			o.EnablePprof()
		}
		o.Start()
		h.mu.Lock()
		h.obs = o
		h.mu.Unlock()
	}
	h.m.started.SetToCurrentTime()
	h.log.Info("hub_started", "node_id", h.cfg.NodeID, "ingest", srv.Addr(), "raft", h.store.RaftAddr(), "metrics", h.MetricsAddr())
	return nil
}

// Stop stops everything in reverse order of Start: metrics, services,
// the gRPC port (draining streams until ctx ends), raft. Idempotent.
func (h *Hub) Stop(ctx context.Context) error {
	h.mu.Lock()
	if h.stopped {
		h.mu.Unlock()
		return nil
	}
	h.stopped = true
	o, running, srv := h.obs, slices.Clone(h.running), h.ingest
	h.mu.Unlock()
	var errs []error
	if o != nil {
		errs = append(errs, o.Stop(ctx))
	}
	for i := len(running) - 1; i >= 0; i-- {
		if err := running[i].Stop(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop service %T: %w", running[i], err))
		}
	}
	if srv != nil {
		errs = append(errs, srv.Stop(ctx))
	}
	errs = append(errs, h.store.Stop(ctx))
	h.log.Info("hub_stopped", "node_id", h.cfg.NodeID)
	return errors.Join(errs...)
}
