package sensor

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/enrol"
	"github.com/jasperfed/jasper/sensor/spool"
	"github.com/jasperfed/jasper/sensor/summary"
	"github.com/jasperfed/jasper/sensor/uplink"
)

// Dependencies of a sensor.
type Dependencies struct {
	// Registerer for every metric of the sensor; may be nil.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// Version is the software version sent to hubs.
	Version string
}

// Sensor is the running sensor: capture → summary → spool → uplink.
type Sensor struct {
	cfg  Config
	deps Dependencies
	sc   summary.Config
	base *slog.Logger // for the parts, which add their own component
	log  *slog.Logger
	m    *metrics

	mu       sync.Mutex
	started  bool
	stopped  bool
	spool    *spool.Spool
	src      capture.Source
	up       *uplink.Uplink
	renewer  *enrol.Renewer
	cancel   context.CancelFunc
	capDone  chan struct{}
	capErr   error
	failed   chan struct{} // closed when capture ends in error
	stopping atomic.Bool
}

// New checks the configuration and builds a sensor; Start runs it.
func New(cfg Config, deps Dependencies) (*Sensor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("sensor config: %w", err)
	}
	sc, err := cfg.summaryConfig()
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	base := log.With("sensor_id", cfg.ID)
	s := &Sensor{cfg: cfg, deps: deps, sc: sc, base: base, log: base.With("component", "sensor"), m: newMetrics(), failed: make(chan struct{})}
	if deps.Registerer != nil {
		if err := s.m.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("sensor metrics: %w", err)
		}
	}
	return s, nil
}

// Start opens the spool and the source and starts capturing and sending.
func (s *Sensor) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("sensor already started")
	}
	sp, err := spool.Open(s.cfg.Spool.Dir, s.cfg.spoolConfig(), s.deps.Registerer, s.base)
	if err != nil {
		return err
	}
	tlsConf, err := pki.ClientConfig(s.cfg.TLS)
	if err != nil {
		sp.Close()
		return fmt.Errorf("sensor TLS: %w", err)
	}
	up, err := uplink.New(s.cfg.uplinkConfig(s.deps.Version), uplink.Dependencies{Spool: sp, TLS: tlsConf, Registerer: s.deps.Registerer, Log: s.base})
	if err != nil {
		sp.Close()
		return err
	}
	var renewer *enrol.Renewer
	if s.cfg.enrolling() {
		if renewer, err = enrol.New(s.cfg.Enrol, enrol.Deps{Log: s.base, Registerer: s.deps.Registerer}); err != nil {
			sp.Close()
			return err
		}
	}
	src, emit, err := s.openSource(sp)
	if err != nil {
		sp.Close()
		return err
	}
	s.spool, s.up, s.src, s.renewer = sp, up, src, renewer
	s.started = true
	if renewer != nil {
		if err := renewer.Start(ctx); err != nil {
			s.log.Error("cert_renewer_failed", "err", err)
		}
	}
	up.Start(ctx)
	cctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.capDone = make(chan struct{})
	go func() {
		defer close(s.capDone)
		err := summary.Run(cctx, src, s.sc, emit)
		if r, ok := src.(*replay); ok && r.loop {
			// Each pass is its own run, so that its open bin is flushed
			// when the pass ends rather than when the next one starts.
			for err == nil && cctx.Err() == nil && !s.stopping.Load() {
				if err = r.nextPass(); err != nil {
					if errors.Is(err, io.EOF) {
						err = nil
					}
					break
				}
				err = summary.Run(cctx, src, s.sc, emit)
			}
		}
		switch {
		case err == nil:
			s.log.Info("source_finished")
			s.m.sourceDone.Set(1)
		case errors.Is(err, context.Canceled) || s.stopping.Load():
		default:
			s.log.Error("capture_failed", "err", err)
			s.capErr = err
			close(s.failed)
		}
	}()
	s.log.Info("sensor_started", "source", s.sourceName(), "spool", s.cfg.Spool.Dir, "hubs", s.cfg.Hubs)
	return nil
}

func (s *Sensor) sourceName() string {
	if s.cfg.Source.Interface != "" {
		return "interface:" + s.cfg.Source.Interface
	}
	return "replay:" + s.cfg.Source.Replay.File
}

// openSource opens the live interface or the replay, and returns the emit
// function that spools batches.
func (s *Sensor) openSource(sp *spool.Spool) (capture.Source, func(*jasperv1.Batch) error, error) {
	if s.cfg.Source.Interface != "" {
		src, err := capture.OpenAFPacket(s.cfg.Source.Interface, capture.AFPacketOptions{Sockets: s.cfg.Source.Fanout})
		if err != nil {
			return nil, nil, err
		}
		if s.deps.Registerer != nil {
			for i := range s.cfg.Source.Fanout {
				c := prometheus.NewCounterFunc(prometheus.CounterOpts{
					Name:        "jasper_sensor_capture_socket_frames_total",
					Help:        "Frames read from each AF_PACKET socket of the fanout group.",
					ConstLabels: prometheus.Labels{"socket": strconv.Itoa(i)},
				}, func() float64 { return float64(src.SocketReceived()[i]) })
				if err := s.deps.Registerer.Register(c); err != nil {
					src.Close()
					return nil, nil, fmt.Errorf("sensor metrics: %w", err)
				}
			}
		}
		return src, func(b *jasperv1.Batch) error { return s.spoolBatch(sp, b, 0) }, nil
	}
	return s.openReplay(sp)
}

// A replay resumes after a restart: the spool stores with every batch a
// cursor made of a fingerprint of the file and settings (top 24 bits) and
// the number of batches the replay had emitted (low 40 bits). Summaries of a
// file are deterministic, so a restarted replay re-reads the file and drops
// the batches it already spooled before: nothing is lost or counted twice
// across kill -9. On a clean stop the open bin is not flushed (the next run
// makes it again from the file).
const cursorBits = 40

func (s *Sensor) openReplay(sp *spool.Spool) (capture.Source, func(*jasperv1.Batch) error, error) {
	path := s.cfg.Source.Replay.File
	fp, err := s.replayFingerprint(path)
	if err != nil {
		return nil, nil, err
	}
	rc := s.cfg.Source.Replay
	src, err := openReplaySource(path, rc.Speed, rc.Rebase, rc.Loop, time.Now())
	if err != nil {
		return nil, nil, err
	}
	var skip uint64
	if c := sp.Cursor(); c>>cursorBits == fp && !rc.Rebase {
		skip = c & (1<<cursorBits - 1)
	}
	src.pace.Store(skip == 0)
	var emitted uint64
	if skip > 0 {
		s.log.Info("replay_resuming", "file", path, "skip_batches", skip)
	}
	emit := func(b *jasperv1.Batch) error {
		if s.stopping.Load() {
			return errStopping
		}
		emitted++
		if emitted <= skip {
			s.m.replaySkipped.Inc()
			if emitted == skip {
				src.pace.Store(true)
			}
			return nil
		}
		return s.spoolBatch(sp, b, fp<<cursorBits|emitted)
	}
	return src, emit, nil
}

var errStopping = errors.New("sensor stopping")

func (s *Sensor) replayFingerprint(path string) (uint64, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("replay file: %w", err)
	}
	abs, _ := filepath.Abs(path)
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%d|%d|%v|%v|%d|%d|%d|%v", abs, st.Size(), st.ModTime().UnixNano(),
		s.sc.Bin, s.sc.Darknet, s.sc.PortCap, s.sc.MaxRowsPerBin, s.sc.MaxBatchBytes, s.sc.EarlyFlush)
	return h.Sum64() >> cursorBits, nil
}

// spoolBatch counts a sealed batch and appends it to the spool. A batch the
// spool cannot take (disk error) is logged and counted as lost, and capture
// goes on: stopping would lose every later packet too.
func (s *Sensor) spoolBatch(sp *spool.Spool, b *jasperv1.Batch, cursor uint64) error {
	s.m.observe(b)
	seq, err := sp.Append(b, cursor)
	if err != nil {
		s.m.lost.Inc()
		s.m.lostRows.Add(float64(len(b.GetRows().GetSrcIp())))
		s.log.Error("batch_lost", "bin_start", b.BinStart, "rows", len(b.GetRows().GetSrcIp()), "err", err)
		return nil
	}
	s.log.Debug("batch_spooled", "sequence", seq, "bin_start", b.BinStart, "rows", len(b.GetRows().GetSrcIp()), "partial", b.Partial)
	return nil
}

// Ready is nil when a hub has welcomed the uplink.
func (s *Sensor) Ready() error {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if up == nil || !up.Connected() {
		return errors.New("not connected to a hub")
	}
	return nil
}

// Failed is closed when capture stops on an error (see Err).
func (s *Sensor) Failed() <-chan struct{} { return s.failed }

// Err is the capture error after Failed is closed.
func (s *Sensor) Err() error {
	select {
	case <-s.failed:
		return s.capErr
	default:
		return nil
	}
}

// Stop stops capture (a live source's open bin is flushed to the spool),
// then the uplink, then closes the spool. It is idempotent; ctx bounds the
// wait for capture.
func (s *Sensor) Stop(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return nil
	}
	s.stopped = true
	if s.cfg.Source.Replay.File != "" {
		s.stopping.Store(true) // a replay remakes its open bin on restart
	}
	s.cancel()
	if r, ok := s.src.(*replay); ok {
		r.closed.Store(true) // wake a paced replay
	}
	var err error
	select {
	case <-s.capDone:
	case <-ctx.Done():
		err = fmt.Errorf("capture did not stop: %w", ctx.Err())
	}
	if cerr := s.src.Close(); cerr != nil && err == nil {
		err = cerr
	}
	s.drain(ctx)
	s.up.Stop()
	if s.renewer != nil {
		s.renewer.Stop()
	}
	if cerr := s.spool.Close(); cerr != nil && err == nil {
		err = cerr
	}
	s.log.Info("sensor_stopped", "spool_batches", s.spool.Stats().Batches)
	return err
}

// drain gives a connected uplink up to Uplink.DrainTimeout to send what is
// spooled, so that a clean stop leaves little behind.
func (s *Sensor) drain(ctx context.Context) {
	limit := s.cfg.Uplink.DrainTimeout.D()
	if limit <= 0 || !s.up.Connected() {
		return
	}
	deadline := time.Now().Add(limit)
	for s.spool.Stats().Batches > 0 && s.up.Connected() && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	s.log.Info("sensor_drained", "spool_batches", s.spool.Stats().Batches)
}

// replay paces a capture file at speed times its own pace (0: no pacing).
// With rebase it shifts timestamps by offset and holds each packet until
// the wall clock reaches its timestamp; with loop, nextPass reopens the
// file for another pass that continues in time.
type replay struct {
	capture.Source
	path   string
	speed  float64
	rebase bool
	loop   bool
	// offset is added to every timestamp (rebase); span is the file's
	// first-to-last packet time.
	offset time.Duration
	span   time.Duration
	read   uint64 // packets handed out in this pass
	pace   atomic.Bool
	paced  bool
	t0     time.Time
	ts0    time.Time
	closed atomic.Bool
	mu     sync.Mutex // guards Source against Close during nextPass
}

// passGap separates two passes of a looped replay.
const passGap = time.Second

// openReplaySource opens a capture file for replay. With rebase the file is
// read once first to find its time span, and shifted so that its last
// packet falls on now.
func openReplaySource(path string, speed float64, rebase, loop bool, now time.Time) (*replay, error) {
	r := &replay{path: path, speed: speed, rebase: rebase, loop: loop}
	if rebase {
		first, last, err := captureSpan(path)
		if err != nil {
			return nil, err
		}
		r.span = last.Sub(first)
		r.offset = now.Sub(last)
	}
	inner, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	r.Source = inner
	return r, nil
}

// captureSpan reads a capture file's first and last packet times.
func captureSpan(path string) (first, last time.Time, err error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return first, last, err
	}
	defer src.Close()
	for n := 0; ; n++ {
		_, ci, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			return first, last, nil
		}
		if err != nil {
			return first, last, fmt.Errorf("replay file %s: %w", path, err)
		}
		if n == 0 {
			first = ci.Timestamp
		}
		last = ci.Timestamp
	}
}

// nextPass reopens the file for another pass whose times continue passGap
// after the previous pass's. It returns io.EOF when the replay is closed or
// the last pass held no packet (a loop over nothing would spin).
func (r *replay) nextPass() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() || r.read == 0 {
		return io.EOF
	}
	inner, err := capture.OpenFile(r.path)
	if err != nil {
		return err
	}
	r.Source.Close()
	r.Source = inner
	r.offset += r.span + passGap
	r.read, r.paced = 0, false
	return nil
}

func (r *replay) ReadPacket() ([]byte, gopacket.CaptureInfo, error) {
	if r.closed.Load() {
		return nil, gopacket.CaptureInfo{}, io.EOF
	}
	data, ci, err := r.Source.ReadPacket()
	if err != nil {
		return data, ci, err
	}
	r.read++
	if r.rebase {
		ci.Timestamp = ci.Timestamp.Add(r.offset)
	}
	if r.speed != 0 && r.pace.Load() {
		if !r.paced {
			r.paced, r.t0, r.ts0 = true, time.Now(), ci.Timestamp
		} else if !r.sleepUntil(r.t0.Add(time.Duration(float64(ci.Timestamp.Sub(r.ts0)) / r.speed))) {
			return nil, ci, io.EOF
		}
	}
	if r.rebase && !r.sleepUntil(ci.Timestamp) {
		return nil, ci, io.EOF
	}
	return data, ci, nil
}

// sleepUntil waits for the wall clock to reach due; false when the replay
// was closed meanwhile.
func (r *replay) sleepUntil(due time.Time) bool {
	for wait := time.Until(due); wait > time.Millisecond; wait = time.Until(due) {
		if r.closed.Load() {
			return false
		}
		time.Sleep(min(wait, 50*time.Millisecond))
	}
	return true
}

func (r *replay) LinkType() layers.LinkType { return r.Source.LinkType() }

// Close closes the file. Stop sets closed first, which makes ReadPacket
// return io.EOF.
func (r *replay) Close() error {
	r.closed.Store(true)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.Source.Close()
}

// Serve runs a sensor with its metrics and health server until ctx ends (a
// signal), then stops it in order. It is what `jasper sensor run` does.
func Serve(ctx context.Context, cfg Config, version string, logOut io.Writer) error {
	log := obs.NewLogger(logOut, cfg.Log.Format, cfg.Log.Level)
	reg := obs.NewRegistry()
	s, err := New(cfg, Dependencies{Registerer: reg, Log: log, Version: version})
	if err != nil {
		return err
	}
	var srv *obs.Server
	if cfg.Metrics.Listen != "" {
		srv, err = obs.Listen(cfg.Metrics.Listen, reg, s.Ready, log)
		if err != nil {
			return fmt.Errorf("metrics listen %s: %w", cfg.Metrics.Listen, err)
		}
		srv.Start()
		log.Info("metrics_listening", "addr", srv.Addr())
	}
	if err := s.Start(ctx); err != nil {
		if srv != nil {
			srv.Stop(context.Background())
		}
		return err
	}
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("sensor_stopping", "reason", "signal")
	case <-s.Failed():
		runErr = s.Err()
	}
	// Stop order: capture (flush to spool), uplink, spool, then the
	// metrics server last so that a scrape sees the end.
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil && runErr == nil {
		runErr = err
	}
	if srv != nil {
		_ = srv.Stop(stopCtx)
	}
	return runErr
}
