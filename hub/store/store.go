package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Peer is a hub of the initial cluster.
type Peer struct {
	ID       string
	RaftAddr string
}

// Config configures a Store.
type Config struct {
	// NodeID is this hub's raft server id.
	NodeID string
	// BindAddr is where raft listens ("127.0.0.1:7000").
	BindAddr string
	// AdvertiseAddr is the raft address peers dial ("" = BindAddr).
	AdvertiseAddr string
	// DataDir holds raft.db (log and stable store) and snapshots/.
	DataDir string
	// Bootstrap creates a new cluster of this hub and Peers when the data
	// folder holds no raft state yet.
	Bootstrap bool
	Peers     []Peer
	// TLS are the hub's certificate files (role hub), used for raft mTLS.
	TLS pki.Files
	// IngestAddr is the sensor-facing address of this hub, registered in
	// the FSM when it becomes leader so that followers can redirect.
	IngestAddr string
	// Load keeps committed batches in the pending-load queue for a loader
	// (ClickHouse). When false the leader proposes batches with load=false
	// and the queue stays empty.
	Load bool
	// TickInterval is how often the leader proposes a Tick (0 disables).
	TickInterval time.Duration
	// ProposeWindow is how long the proposer waits to group concurrent
	// batch proposals into one entry; MaxGroupBatches and MaxGroupBytes cap
	// a group.
	ProposeWindow   time.Duration
	MaxGroupBatches int
	MaxGroupBytes   int
	// ApplyTimeout bounds how long a proposal waits to be enqueued in raft.
	ApplyTimeout time.Duration
	// LogCacheEntries and LogCacheBytes bound the in-memory cache of the
	// newest raft entries in front of the bolt log (replication and the
	// followers' apply read them from memory instead of bolt). Entries 0
	// turns the cache off.
	LogCacheEntries int
	LogCacheBytes   int

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotInterval   time.Duration
	SnapshotThreshold  uint64
	TrailingLogs       uint64
	RetainSnapshots    int
}

// DefaultConfig returns production defaults (raft's own timeouts).
func DefaultConfig() Config {
	rc := raft.DefaultConfig()
	return Config{
		Load:               false,
		TickInterval:       10 * time.Second,
		ProposeWindow:      2 * time.Millisecond,
		MaxGroupBatches:    128,
		MaxGroupBytes:      4 << 20,
		ApplyTimeout:       10 * time.Second,
		LogCacheEntries:    512,
		LogCacheBytes:      64 << 20,
		HeartbeatTimeout:   rc.HeartbeatTimeout,
		ElectionTimeout:    rc.ElectionTimeout,
		LeaderLeaseTimeout: rc.LeaderLeaseTimeout,
		CommitTimeout:      rc.CommitTimeout,
		SnapshotInterval:   rc.SnapshotInterval,
		SnapshotThreshold:  rc.SnapshotThreshold,
		TrailingLogs:       rc.TrailingLogs,
		RetainSnapshots:    2,
	}
}

// Validate checks the configuration, naming the field at fault.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("NodeID: missing")
	case c.BindAddr == "":
		return errors.New("BindAddr: missing")
	case c.DataDir == "":
		return errors.New("DataDir: missing")
	case c.MaxGroupBatches < 1:
		return errors.New("MaxGroupBatches: must be at least 1")
	case c.MaxGroupBytes < 1:
		return errors.New("MaxGroupBytes: must be positive")
	case c.ApplyTimeout <= 0:
		return errors.New("ApplyTimeout: must be positive")
	case c.LogCacheEntries < 0:
		return errors.New("LogCacheEntries: must not be negative")
	case c.LogCacheEntries > 0 && c.LogCacheBytes < 1:
		return errors.New("LogCacheBytes: must be positive when the log cache is on")
	case c.HeartbeatTimeout < 5*time.Millisecond:
		return errors.New("HeartbeatTimeout: must be at least 5ms")
	case c.ElectionTimeout < c.HeartbeatTimeout:
		return errors.New("ElectionTimeout: must be at least HeartbeatTimeout")
	case c.LeaderLeaseTimeout > c.HeartbeatTimeout:
		return errors.New("LeaderLeaseTimeout: must not exceed HeartbeatTimeout")
	case c.RetainSnapshots < 1:
		return errors.New("RetainSnapshots: must be at least 1")
	}
	if err := c.TLS.Validate("TLS"); err != nil {
		return err
	}
	for i, p := range c.Peers {
		if p.ID == "" || p.RaftAddr == "" {
			return fmt.Errorf("Peers[%d]: id and raft address required", i)
		}
	}
	return nil
}

// Deps are the Store's collaborators.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Store is a raft node with the jasper FSM.
type Store struct {
	cfg Config
	log *slog.Logger
	fsm *fsm
	m   *metrics

	mu        sync.Mutex
	started   bool
	stopped   bool
	raft      *raft.Raft
	transport *raft.NetworkTransport
	bolt      *raftboltdb.BoltStore

	propCh   chan *proposal
	inflight chan struct{}
	notifyCh chan bool
	done     chan struct{}
	wg       sync.WaitGroup

	ingestAddr string // guarded by mu

	fwd forwarder // connections to the leader for forwarded proposals

	subsMu   sync.Mutex
	subs     []chan bool
	isLeader bool
}

// New builds a Store; nothing runs until Start.
func New(cfg Config, deps Deps) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("store config: %w", err)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "store")
	s := &Store{
		cfg:      cfg,
		log:      log,
		fsm:      newFSM(log),
		propCh:   make(chan *proposal, 4096),
		inflight: make(chan struct{}, 64),
		notifyCh: make(chan bool, 16),
		done:     make(chan struct{}),
	}
	s.m = newMetrics(deps.Registerer, s)
	return s, nil
}

// RegisterModule adds a module to the FSM. Call it before Start, in the
// same way on every hub.
func (s *Store) RegisterModule(m Module) {
	s.mu.Lock()
	started := s.started
	s.mu.Unlock()
	if started {
		panic("store: RegisterModule after Start")
	}
	s.fsm.register(m)
}

// Start opens the raft stores, listens for peers and starts raft.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("store already started")
	}
	s.started = true
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("create data dir: %w", err)
	}
	bolt, err := raftboltdb.NewBoltStore(filepath.Join(s.cfg.DataDir, "raft.db"))
	if err != nil {
		return fmt.Errorf("open raft log %s: %w", filepath.Join(s.cfg.DataDir, "raft.db"), err)
	}
	hcl := newHCLogger(s.log, "raft")
	snaps, err := raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, s.cfg.RetainSnapshots, hcl)
	if err != nil {
		bolt.Close()
		return fmt.Errorf("open snapshot store: %w", err)
	}
	stream, err := newTLSStream(s.cfg.BindAddr, s.cfg.AdvertiseAddr, s.cfg.TLS)
	if err != nil {
		bolt.Close()
		return err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  hcl,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.NotifyCh = s.notifyCh
	// Let proposals queue while the leader loop fsyncs, and write them
	// to the log together.
	rc.BatchApplyCh = true
	rc.Logger = hcl
	if err := raft.ValidateConfig(rc); err != nil {
		trans.Close()
		bolt.Close()
		return fmt.Errorf("raft config: %w", err)
	}
	if s.cfg.Bootstrap {
		has, err := raft.HasExistingState(bolt, bolt, snaps)
		if err != nil {
			trans.Close()
			bolt.Close()
			return fmt.Errorf("inspect raft state: %w", err)
		}
		if !has {
			conf := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: trans.LocalAddr(), Suffrage: raft.Voter}}}
			for _, p := range s.cfg.Peers {
				if p.ID == s.cfg.NodeID {
					continue
				}
				conf.Servers = append(conf.Servers, raft.Server{ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr), Suffrage: raft.Voter})
			}
			if err := raft.BootstrapCluster(rc, bolt, bolt, snaps, trans, conf); err != nil {
				trans.Close()
				bolt.Close()
				return fmt.Errorf("bootstrap cluster: %w", err)
			}
			s.log.Info("cluster_bootstrapped", "servers", len(conf.Servers))
		}
	}
	var logs raft.LogStore = bolt
	if s.cfg.LogCacheEntries > 0 {
		logs = newLogCache(bolt, s.cfg.LogCacheEntries, s.cfg.LogCacheBytes, s.m.logCacheHits, s.m.logCacheMisses)
	}
	r, err := raft.NewRaft(rc, s.fsm, logs, bolt, snaps, trans)
	if err != nil {
		trans.Close()
		bolt.Close()
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft, s.transport, s.bolt = r, trans, bolt
	s.wg.Add(2)
	go s.proposer()
	go s.watchLeadership()
	s.log.Info("store_started", "node_id", s.cfg.NodeID, "raft_addr", string(trans.LocalAddr()))
	return nil
}

// Stop shuts raft down and closes the stores. It is idempotent.
func (s *Store) Stop(ctx context.Context) error {
	s.mu.Lock()
	if !s.started || s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.stopped = true
	r, trans, bolt := s.raft, s.transport, s.bolt
	s.mu.Unlock()
	close(s.done)
	s.fwd.close()
	var errs []error
	if r != nil {
		f := r.Shutdown()
		ch := make(chan error, 1)
		go func() { ch <- f.Error() }()
		select {
		case err := <-ch:
			if err != nil {
				errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
			}
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("raft shutdown: %w", ctx.Err()))
		}
	}
	if trans != nil {
		_ = trans.Close()
	}
	s.wg.Wait()
	if bolt != nil {
		if err := bolt.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	s.setLeader(false)
	return errors.Join(errs...)
}

func (s *Store) open() (*raft.Raft, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.raft == nil || s.stopped {
		return nil, ErrNotOpen
	}
	return s.raft, nil
}

// IsLeader reports whether this hub is the raft leader and has applied
// every entry committed before its term.
func (s *Store) IsLeader() bool {
	r, err := s.open()
	if err != nil || r.State() != raft.Leader {
		return false
	}
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	return s.isLeader
}

// SetIngestAddr sets the ingest address this hub registers when it
// becomes leader (overrides Config.IngestAddr; call before Start, e.g. once
// the ingest port is bound).
func (s *Store) SetIngestAddr(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ingestAddr = addr
}

// SetLoad turns the pending-load queue on (a loader is attached) or off.
// Call before Start.
func (s *Store) SetLoad(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("store: SetLoad after Start")
	}
	s.cfg.Load = on
	return nil
}

// IngestAddr is the ingest address this hub registers.
func (s *Store) IngestAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ingestAddr != "" {
		return s.ingestAddr
	}
	return s.cfg.IngestAddr
}

// NodeID is this hub's raft server id.
func (s *Store) NodeID() string { return s.cfg.NodeID }

// RaftAddr is the raft address peers use for this hub.
func (s *Store) RaftAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.transport == nil {
		return ""
	}
	return string(s.transport.LocalAddr())
}

// LeaderChanges returns a new subscription to leadership changes: it
// receives the current state at once, then true on gaining leadership
// (after the new leader applied everything committed before its term) and
// false on losing it. A slow reader sees only the latest value. The channel
// is closed when the store stops.
func (s *Store) LeaderChanges() <-chan bool {
	ch := make(chan bool, 1)
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	ch <- s.isLeader
	select {
	case <-s.done:
		close(ch)
		return ch
	default:
	}
	s.subs = append(s.subs, ch)
	return ch
}

func (s *Store) setLeader(v bool) {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	s.isLeader = v
	for _, ch := range s.subs {
		select {
		case <-ch:
		default:
		}
		ch <- v
	}
}

func (s *Store) closeSubs() {
	s.subsMu.Lock()
	defer s.subsMu.Unlock()
	for _, ch := range s.subs {
		close(ch)
	}
	s.subs = nil
}

// watchLeadership runs the leader's duties while this hub leads: register
// its ingest address, propose ticks.
func (s *Store) watchLeadership() {
	defer s.wg.Done()
	defer s.closeSubs()
	var stopDuties func()
	stop := func() {
		if stopDuties != nil {
			stopDuties()
			stopDuties = nil
		}
	}
	defer stop()
	for {
		select {
		case <-s.done:
			return
		case lead := <-s.notifyCh:
			stop()
			s.log.Info("leadership_changed", "leader", lead)
			if lead {
				ctx, cancel := context.WithCancel(context.Background())
				var duties sync.WaitGroup
				duties.Go(func() { s.leaderDuties(ctx) })
				stopDuties = func() { cancel(); duties.Wait() }
			} else {
				s.setLeader(false)
			}
		}
	}
}

func (s *Store) leaderDuties(ctx context.Context) {
	// A new leader first applies everything committed before its term
	// (a barrier), so that watermarks and the loader queue it serves are
	// complete; only then does it call itself leader.
	for {
		r, err := s.open()
		if err != nil {
			return
		}
		if err := waitFuture(ctx, r.Barrier(s.cfg.ApplyTimeout)); err == nil {
			break
		} else if ctx.Err() != nil || errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	s.setLeader(true)
	defer s.setLeader(false)
	reg := &jasperv1.RegisterNodeCommand{NodeId: s.cfg.NodeID, IngestAddress: s.IngestAddr(), RaftAddress: s.RaftAddr(), MaxCommandVersion: CommandVersion}
	for attempt := 0; ; attempt++ {
		if _, err := s.apply(ctx, jasperv1.CommandType_COMMAND_TYPE_REGISTER_NODE, reg); err == nil {
			break
		} else if ctx.Err() != nil || errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNotOpen) {
			return
		} else if attempt > 20 {
			s.log.Error("register_node_failed", "err", err)
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
	if s.cfg.TickInterval <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(s.cfg.TickInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if _, err := s.apply(ctx, jasperv1.CommandType_COMMAND_TYPE_TICK, &jasperv1.TickCommand{NowMs: now.UnixMilli()}); err != nil && ctx.Err() == nil {
				s.log.Warn("tick_failed", "err", err)
			}
		}
	}
}

// notLeader builds the redirect error.
func (s *Store) notLeader() error {
	e := &NotLeaderError{}
	if r, err := s.open(); err == nil {
		addr, id := r.LeaderWithID()
		e.LeaderID, e.LeaderRaftAddr = string(id), string(addr)
		if n := s.fsm.node(string(id)); n != nil {
			e.LeaderIngestAddr = n.IngestAddress
		}
	}
	return e
}

// LeaderIngestAddr returns the leader's id and registered ingest address
// ("" when unknown).
func (s *Store) LeaderIngestAddr() (id, addr string) {
	var e *NotLeaderError
	if errors.As(s.notLeader(), &e) {
		return e.LeaderID, e.LeaderIngestAddr
	}
	return "", ""
}

func mapRaftErr(s *Store, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return s.notLeader()
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrNotOpen
	}
	return err
}

// apply proposes one command and waits for the FSM's answer.
func (s *Store) apply(ctx context.Context, t jasperv1.CommandType, msg proto.Message) (any, error) {
	f, start, err := s.applyAsync(t, msg)
	if err != nil {
		return nil, err
	}
	return s.wait(ctx, t, f, start)
}

// applyAsync hands one command to raft without waiting; raft keeps the
// order of applyAsync calls.
func (s *Store) applyAsync(t jasperv1.CommandType, msg proto.Message) (raft.ApplyFuture, time.Time, error) {
	data, err := encodeCommand(t, msg)
	if err != nil {
		return nil, time.Time{}, err
	}
	return s.applyEncoded(t, data)
}

// applyEncoded is applyAsync for a command already encoded (data is the
// envelope of a command of type t).
func (s *Store) applyEncoded(t jasperv1.CommandType, data []byte) (raft.ApplyFuture, time.Time, error) {
	r, err := s.open()
	if err != nil {
		return nil, time.Time{}, err
	}
	if r.State() != raft.Leader {
		return nil, time.Time{}, s.notLeader()
	}
	// Version 1 commands every hub applies; newer ones only once every
	// member has registered support (hub/DESIGN.md).
	if need := commandMinVersion[t]; need > 1 && need > s.clusterVersion(r) {
		return nil, time.Time{}, fmt.Errorf("%w: %s needs command version %d but a hub of the cluster applies only up to %d: upgrade every hub first", ErrUnknownCommand, t, need, s.clusterVersion(r))
	}
	return r.Apply(data, s.cfg.ApplyTimeout), time.Now(), nil
}

// wait waits for an applied future; an error from the FSM comes back
// through Response().
func (s *Store) wait(ctx context.Context, t jasperv1.CommandType, f raft.ApplyFuture, start time.Time) (any, error) {
	done := make(chan struct{})
	go func() { _ = f.Error(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrNotOpen
	}
	if err := f.Error(); err != nil {
		s.m.proposals.WithLabelValues(t.String(), "error").Inc()
		return nil, mapRaftErr(s, err)
	}
	s.m.applyLatency.Observe(time.Since(start).Seconds())
	s.m.proposals.WithLabelValues(t.String(), "ok").Inc()
	resp := f.Response()
	if err, ok := resp.(error); ok {
		return nil, err
	}
	return resp, nil
}

func (s *Store) clusterVersion(r *raft.Raft) uint32 {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return CommandVersion
	}
	var ids []string
	for _, srv := range f.Configuration().Servers {
		ids = append(ids, string(srv.ID))
	}
	return s.fsm.clusterVersion(ids)
}

// Propose applies a command for the named module through raft and
// returns the module's Apply result. On a follower it forwards the command
// to the leader's gRPC port (ForwardService, mTLS between hubs): the
// result comes back only when the module implements ResultCodec (nil
// otherwise), and the error as a *ForwardedError that unwraps to the
// store's errors and the sentinels the module lists in ErrorKinds. With
// no leader known it returns a *NotLeaderError.
func (s *Store) Propose(ctx context.Context, module string, payload []byte) (any, error) {
	// Forward only when this hub was not leader to begin with: an entry
	// whose leader lost office while it waited may still commit, and
	// sending it again would apply it twice.
	if r, err := s.open(); err == nil && r.State() != raft.Leader {
		if s.module(module) == nil {
			return nil, fmt.Errorf("%w: %q", ErrUnknownModule, module)
		}
		return s.forward(ctx, module, payload)
	}
	return s.proposeLocal(ctx, module, payload)
}

// proposeLocal commits a module command through this hub's raft (leader
// only).
func (s *Store) proposeLocal(ctx context.Context, module string, payload []byte) (any, error) {
	s.fsm.mu.RLock()
	_, ok := s.fsm.modules[module]
	s.fsm.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownModule, module)
	}
	resp, err := s.apply(ctx, jasperv1.CommandType_COMMAND_TYPE_MODULE, &jasperv1.ModuleCommand{Module: module, Payload: payload})
	if err != nil {
		return nil, err
	}
	mr, ok := resp.(moduleResult)
	if !ok {
		return nil, fmt.Errorf("module %s: unexpected FSM response %T", module, resp)
	}
	return mr.val, mr.err
}

// Pending returns committed batches not yet marked loaded with raft index
// > afterIndex, in raft index order (RaftIndex set). Batches grouped into
// one raft entry share its index and are never split across calls; the
// result stops once maxRows is reached, but holds at least one entry when
// any is pending. The batches are shared with the FSM: do not modify them.
func (s *Store) Pending(afterIndex uint64, maxRows int) []*jasperv1.CommittedBatch {
	return s.fsm.pendingBatches(afterIndex, maxRows)
}

// MarkLoaded proposes through raft that every batch with raft index <=
// throughIndex is loaded; every FSM drops them from the queue.
func (s *Store) MarkLoaded(ctx context.Context, throughIndex uint64) error {
	_, err := s.apply(ctx, jasperv1.CommandType_COMMAND_TYPE_MARK_LOADED, &jasperv1.MarkLoadedCommand{ThroughIndex: throughIndex})
	return err
}

// PendingRows is the number of rows in the pending-load queue.
func (s *Store) PendingRows() uint64 {
	_, _, p := s.fsm.counters()
	return p
}

// LoadedIndex is the raft index the loader marked loaded through.
func (s *Store) LoadedIndex() uint64 {
	_, l, _ := s.fsm.counters()
	return l
}

// LoadEnabled reports whether batches are queued for a loader.
func (s *Store) LoadEnabled() bool { return s.cfg.Load }

// Watermark is the highest sequence of the sensor applied in this hub's
// FSM (0 when none).
func (s *Store) Watermark(sensorID string) uint64 { return s.fsm.watermark(sensorID) }

// Sensors returns the sensor registry, sorted by id (copies).
func (s *Store) Sensors() []*jasperv1.SensorState { return s.fsm.sensorStates() }

// StateHash returns the FSM's applied index and the SHA-256 of its whole
// canonical state, modules included.
func (s *Store) StateHash() (uint64, string, error) { return s.fsm.stateHash() }

// Join adds a hub as a voter. Leader only.
func (s *Store) Join(ctx context.Context, id, raftAddr string) error {
	r, err := s.open()
	if err != nil {
		return err
	}
	if id == "" || raftAddr == "" {
		return errors.New("join: node id and raft address are required")
	}
	if r.State() != raft.Leader {
		return s.notLeader()
	}
	f := r.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, s.cfg.ApplyTimeout)
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("join %s at %s: %w", id, raftAddr, mapRaftErr(s, err))
	}
	s.log.Info("node_joined", "node_id", id, "raft_addr", raftAddr)
	return nil
}

// Leave removes a hub from the cluster. Leader only.
func (s *Store) Leave(ctx context.Context, id string) error {
	r, err := s.open()
	if err != nil {
		return err
	}
	if id == "" {
		return errors.New("leave: node id is required")
	}
	if r.State() != raft.Leader {
		return s.notLeader()
	}
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	found := false
	for _, srv := range cf.Configuration().Servers {
		found = found || string(srv.ID) == id
	}
	if !found {
		return fmt.Errorf("leave: %s is not a member of the cluster", id)
	}
	f := r.RemoveServer(raft.ServerID(id), 0, s.cfg.ApplyTimeout)
	if err := waitFuture(ctx, f); err != nil {
		return fmt.Errorf("leave %s: %w", id, mapRaftErr(s, err))
	}
	s.log.Info("node_left", "node_id", id)
	return nil
}

func waitFuture(ctx context.Context, f raft.Future) error {
	ch := make(chan error, 1)
	go func() { ch <- f.Error() }()
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Member is a server of the raft configuration.
type Member struct {
	ID       string
	RaftAddr string
	Suffrage string
}

// Status is a point-in-time view of the node.
type Status struct {
	NodeID       string
	State        string
	LeaderID     string
	LeaderAddr   string
	Members      []Member
	CommitIndex  uint64
	AppliedIndex uint64
	LastIndex    uint64
	LoadedIndex  uint64
	PendingRows  uint64
	Sensors      []*jasperv1.SensorState
	// FSMIndex and StateHash: see StateHash.
	FSMIndex  uint64
	StateHash string
}

type indexes struct{ commit, applied, last uint64 }

func (s *Store) raftIndexes() indexes {
	r, err := s.open()
	if err != nil {
		return indexes{}
	}
	return indexes{r.CommitIndex(), r.AppliedIndex(), r.LastIndex()}
}

// Status reports the node's raft role, members, indexes, loader state and
// sensors.
func (s *Store) Status() (Status, error) {
	r, err := s.open()
	if err != nil {
		return Status{}, err
	}
	st := Status{NodeID: s.cfg.NodeID, State: r.State().String()}
	addr, id := r.LeaderWithID()
	st.LeaderID, st.LeaderAddr = string(id), string(addr)
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return Status{}, fmt.Errorf("raft configuration: %w", err)
	}
	for _, srv := range cf.Configuration().Servers {
		st.Members = append(st.Members, Member{ID: string(srv.ID), RaftAddr: string(srv.Address), Suffrage: srv.Suffrage.String()})
	}
	ix := s.raftIndexes()
	st.CommitIndex, st.AppliedIndex, st.LastIndex = ix.commit, ix.applied, ix.last
	_, st.LoadedIndex, st.PendingRows = s.fsm.counters()
	st.Sensors = s.fsm.sensorStates()
	st.FSMIndex, st.StateHash, err = s.fsm.stateHash()
	if err != nil {
		return Status{}, err
	}
	return st, nil
}
