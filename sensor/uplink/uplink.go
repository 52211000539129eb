// Package uplink streams a sensor's spooled batches to the hubs over mTLS
// gRPC (jasper.v1.IngestService/Stream) and removes them from the spool only
// when a hub acknowledges them.
//
// # Protocol
//
// The uplink dials one hub address at a time, sends a Hello (sensor id,
// version, prefixes, first unacknowledged and last sequence), and waits for
// the Welcome. Every spooled batch with a sequence <= Welcome.committed_through
// is dropped from the spool (the federation already has it). The uplink then
// sends the spooled batches in sequence order, with at most Config.Window
// batches unacknowledged, and new batches as they are spooled.
//
// If committed_through is above every sequence the spool ever assigned, the
// spool was lost or replaced: it is renumbered above committed_through
// (spool.Resequence) rather than having its new batches taken for
// duplicates of what the hub already holds.
//
// # Answers
//
//   - Ack: the batch is removed from the spool (a duplicate ack too).
//   - NOT_LEADER: the stream is closed and the next dial goes to
//     leader_address when the hub named one, else to the next address of
//     the list; after retry_after_ms when given.
//   - THROTTLE: the stream is closed (later batches may already be in
//     flight, and a hub takes a stream's batches in increasing order only);
//     after retry_after_ms (at least Config.BackoffMin) the uplink dials the
//     same hub again and resumes from the Welcome's committed_through.
//   - INVALID, FORBIDDEN, BAD_TIME, TOO_LARGE on a batch: the batch can never
//     be accepted, so resending it would loop forever. It is logged with the
//     hub's detail, counted by reason, and moved from the spool into the
//     spool's quarantine folder (spool.Reject), where an operator can look at
//     it; the stream goes on with the next batch.
//   - A refusal of the Hello (sequence 0), REVOKED, or an unknown reason ends
//     the stream; the uplink reconnects with backoff, keeping the spool.
//
// Failed dials and broken streams are retried with exponential backoff and
// full jitter between Config.BackoffMin and Config.BackoffMax, cycling
// through Config.Hubs. A stream with unacknowledged batches and no answer
// for Config.AckTimeout is abandoned and reopened.
package uplink

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Spool is what the uplink needs of the spool (*spool.Spool has it).
type Spool interface {
	Next(after uint64) (*jasperv1.Batch, error)
	Ack(seq uint64) error
	AckThrough(seq uint64) error
	Reject(seq uint64, reason string) error
	Resequence(floor uint64) (int, error)
	Changed() <-chan struct{}
	FirstUnacked() uint64
	Last() uint64
}

// Config configures the uplink.
type Config struct {
	// SensorID must equal the id bound in the client certificate.
	SensorID string
	// Version is sent in the Hello.
	Version string
	// Prefixes are the darknet prefixes (CIDR) sent in the Hello.
	Prefixes []string
	// Hubs are the ingest addresses (host:port) to dial, in order.
	Hubs []string
	// Window is the most batches sent and not yet answered.
	Window int
	// BackoffMin and BackoffMax bound the reconnect delay.
	BackoffMin, BackoffMax time.Duration
	// AckTimeout abandons a stream that leaves batches unanswered this long.
	AckTimeout time.Duration
	// DialTimeout bounds connecting and the Hello/Welcome exchange.
	DialTimeout time.Duration
}

// DefaultConfig returns the defaults (hubs and identity left empty).
func DefaultConfig() Config {
	return Config{
		Window:      16,
		BackoffMin:  200 * time.Millisecond,
		BackoffMax:  30 * time.Second,
		AckTimeout:  2 * time.Minute,
		DialTimeout: 15 * time.Second,
	}
}

// Validate checks the configuration and names the bad key.
func (c Config) Validate() error {
	switch {
	case c.SensorID == "":
		return errors.New("id: missing")
	case len(c.Hubs) == 0:
		return errors.New("hubs: at least one hub address is needed")
	case c.Window < 1 || c.Window > 1024:
		return fmt.Errorf("uplink.window: %d is not between 1 and 1024", c.Window)
	case c.BackoffMin <= 0:
		return fmt.Errorf("uplink.backoff_min: %v must be positive", c.BackoffMin)
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("uplink.backoff_max: %v is below backoff_min %v", c.BackoffMax, c.BackoffMin)
	case c.AckTimeout <= 0:
		return fmt.Errorf("uplink.ack_timeout: %v must be positive", c.AckTimeout)
	case c.DialTimeout <= 0:
		return fmt.Errorf("uplink.dial_timeout: %v must be positive", c.DialTimeout)
	}
	for i, h := range c.Hubs {
		if h == "" {
			return fmt.Errorf("hubs[%d]: empty address", i)
		}
	}
	return nil
}

// Dependencies of an uplink.
type Dependencies struct {
	Spool Spool
	// TLS is the client configuration (pki.ClientConfig). Required.
	TLS *tls.Config
	// Registerer for the metrics; may be nil.
	Registerer prometheus.Registerer
	Log        *slog.Logger
}

// Uplink is the sending side of a sensor.
type Uplink struct {
	cfg   Config
	spool Spool
	creds credentials.TransportCredentials
	log   *slog.Logger
	m     *metrics

	connected atomic.Bool
	hub       atomic.Value // string: address of the current hub

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	started bool
}

// New builds an uplink; Start runs it.
func New(cfg Config, deps Dependencies) (*Uplink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("uplink config: %w", err)
	}
	if deps.Spool == nil {
		return nil, errors.New("uplink: no spool")
	}
	if deps.TLS == nil {
		return nil, errors.New("uplink: no TLS configuration (mTLS is required)")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &Uplink{
		cfg:   cfg,
		spool: deps.Spool,
		creds: credentials.NewTLS(deps.TLS),
		log:   log.With("component", "uplink"),
		m:     newMetrics(),
	}
	u.hub.Store("")
	if deps.Registerer != nil {
		if err := u.m.register(deps.Registerer); err != nil {
			return nil, fmt.Errorf("uplink metrics: %w", err)
		}
	}
	return u, nil
}

// Connected reports whether a hub has welcomed the current stream.
func (u *Uplink) Connected() bool { return u.connected.Load() }

// Hub is the address of the hub of the current stream ("" when none).
func (u *Uplink) Hub() string { return u.hub.Load().(string) }

// Start runs the uplink in the background until Stop or ctx ends.
func (u *Uplink) Start(ctx context.Context) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.started {
		return
	}
	u.started = true
	ctx, u.cancel = context.WithCancel(ctx)
	u.done = make(chan struct{})
	go func() {
		defer close(u.done)
		u.loop(ctx)
	}()
}

// Stop ends the uplink and waits for it. Unacknowledged batches stay in the
// spool. It is idempotent.
func (u *Uplink) Stop() {
	u.mu.Lock()
	cancel, done := u.cancel, u.done
	u.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// redirect is a session end that names where to go next (the leader, or
// the same hub after a throttle) and after how long.
type redirect struct {
	addr  string
	after time.Duration
}

func (r *redirect) Error() string { return "hub sends the sensor to " + r.addr }

// errFatalSession ends a session with a refusal that is not about one batch.
var errFatalSession = errors.New("hub refused the stream")

func (u *Uplink) loop(ctx context.Context) {
	backoff := u.cfg.BackoffMin
	idx := 0
	next := ""
	redirects := 0
	for ctx.Err() == nil {
		addr := next
		if addr == "" {
			addr = u.cfg.Hubs[idx%len(u.cfg.Hubs)]
			idx++
		}
		next = ""
		progressed, err := u.session(ctx, addr)
		u.connected.Store(false)
		u.hub.Store("")
		u.m.connected.Set(0)
		if ctx.Err() != nil {
			return
		}
		if progressed {
			backoff = u.cfg.BackoffMin
			redirects = 0
		}
		var rd *redirect
		if errors.As(err, &rd) {
			redirects++
			next = rd.addr
			wait := rd.after
			if redirects > 3 { // hubs disagree about the leader: slow down
				wait = max(wait, u.jitter(backoff))
				backoff = min(2*backoff, u.cfg.BackoffMax)
			}
			u.log.Info("uplink_redirect", "from", addr, "to", rd.addr, "wait", wait)
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		wait := u.jitter(backoff)
		u.log.Warn("uplink_disconnected", "hub", addr, "err", err, "retry_in", wait)
		u.m.reconnects.Inc()
		if !sleep(ctx, wait) {
			return
		}
		backoff = min(2*backoff, u.cfg.BackoffMax)
	}
}

// jitter draws a delay in [d/2, d).
func (u *Uplink) jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// session runs one stream to addr. It reports whether the stream made
// progress (welcomed, and then acked a batch or lasted a while), which resets
// the backoff: a hub that welcomes and drops every stream at once must not
// be redialled in a tight loop.
func (u *Uplink) session(ctx context.Context, addr string) (bool, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(u.creds))
	if err != nil {
		return false, fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	client := jasperv1.NewIngestServiceClient(cc)

	helloCtx, helloCancel := context.WithTimeout(sctx, u.cfg.DialTimeout)
	defer helloCancel()
	// Opening the stream, the Hello and the Welcome are bounded together by
	// DialTimeout; the stream itself lives on sctx.
	welcomeCh := make(chan error, 1)
	var (
		welcome *jasperv1.Welcome
		stream  grpc.BidiStreamingClient[jasperv1.StreamRequest, jasperv1.StreamResponse]
	)
	go func() {
		var err error
		stream, err = client.Stream(sctx)
		if err != nil {
			welcomeCh <- fmt.Errorf("open stream to %s: %w", addr, err)
			return
		}
		err = stream.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: &jasperv1.Hello{
			SensorId:             u.cfg.SensorID,
			SoftwareVersion:      u.cfg.Version,
			Prefixes:             u.cfg.Prefixes,
			FirstUnackedSequence: u.spool.FirstUnacked(),
			LastSequence:         u.spool.Last(),
		}}})
		if err != nil {
			welcomeCh <- fmt.Errorf("send hello: %w", err)
			return
		}
		resp, err := stream.Recv()
		if err != nil {
			welcomeCh <- fmt.Errorf("await welcome: %w", err)
			return
		}
		switch m := resp.Msg.(type) {
		case *jasperv1.StreamResponse_Welcome:
			welcome = m.Welcome
			welcomeCh <- nil
		case *jasperv1.StreamResponse_Refusal:
			welcomeCh <- u.helloRefused(addr, m.Refusal)
		default:
			welcomeCh <- fmt.Errorf("hub %s answered the hello with %T", addr, resp.Msg)
		}
	}()
	select {
	case err := <-welcomeCh:
		if err != nil {
			return false, err
		}
	case <-helloCtx.Done():
		cancel()
		<-welcomeCh
		return false, fmt.Errorf("hub %s: no welcome within %v", addr, u.cfg.DialTimeout)
	}
	if last := u.spool.Last(); welcome.CommittedThrough > last {
		// The hub holds sequences this spool never assigned: the spool was
		// lost or replaced. Reusing them would make new batches look like
		// duplicates, so move above them.
		n, err := u.spool.Resequence(welcome.CommittedThrough)
		if err != nil {
			return false, fmt.Errorf("resequence spool above %d: %w", welcome.CommittedThrough, err)
		}
		u.log.Warn("uplink_spool_behind_hub", "hub", addr, "committed_through", welcome.CommittedThrough, "spool_last", last, "renumbered", n)
	}
	if err := u.spool.AckThrough(welcome.CommittedThrough); err != nil {
		return false, fmt.Errorf("drop committed batches: %w", err)
	}
	u.connected.Store(true)
	u.hub.Store(addr)
	u.m.connected.Set(1)
	u.log.Info("uplink_connected", "hub", addr, "hub_id", welcome.HubId, "committed_through", welcome.CommittedThrough, "max_batch_bytes", welcome.MaxBatchBytes)
	s := &session{u: u, addr: addr, stream: stream, maxBytes: int(welcome.MaxBatchBytes), inflight: map[uint64]time.Time{}, kick: make(chan struct{}, 1), cursor: welcome.CommittedThrough}
	began := time.Now()
	err = s.run(sctx, cancel)
	return s.acks.Load() > 0 || time.Since(began) > 10*time.Second, err
}

func (u *Uplink) helloRefused(addr string, r *jasperv1.Refusal) error {
	u.m.refusals.WithLabelValues(reasonLabel(r.Reason)).Inc()
	if r.Reason == jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER {
		return &redirect{addr: r.LeaderAddress, after: time.Duration(r.RetryAfterMs) * time.Millisecond}
	}
	if r.Reason == jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE {
		return &redirect{addr: addr, after: max(time.Duration(r.RetryAfterMs)*time.Millisecond, u.cfg.BackoffMin)}
	}
	u.log.Error("uplink_hello_refused", "hub", addr, "reason", reasonLabel(r.Reason), "detail", r.Detail)
	return fmt.Errorf("%w: %s: %s", errFatalSession, reasonLabel(r.Reason), r.Detail)
}

func reasonLabel(r jasperv1.RefusalReason) string {
	switch r {
	case jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER:
		return "not_leader"
	case jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE:
		return "throttle"
	case jasperv1.RefusalReason_REFUSAL_REASON_INVALID:
		return "invalid"
	case jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN:
		return "forbidden"
	case jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME:
		return "bad_time"
	case jasperv1.RefusalReason_REFUSAL_REASON_TOO_LARGE:
		return "too_large"
	case jasperv1.RefusalReason_REFUSAL_REASON_REVOKED:
		return "revoked"
	}
	return "unknown"
}

// session is one welcomed stream.
type session struct {
	u        *Uplink
	addr     string
	stream   grpc.BidiStreamingClient[jasperv1.StreamRequest, jasperv1.StreamResponse]
	maxBytes int

	mu         sync.Mutex
	inflight   map[uint64]time.Time
	acks       atomic.Uint64
	cursor     uint64 // highest sequence sent (or known committed)
	lastAnswer time.Time
	kick       chan struct{}
}

func (s *session) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *session) run(ctx context.Context, cancel context.CancelFunc) error {
	recvErr := make(chan error, 1)
	go func() {
		err := s.receive()
		recvErr <- err
		cancel()
	}()
	sendErr := s.send(ctx)
	cancel()
	rerr := <-recvErr
	s.u.m.inflight.Set(0)
	var rd *redirect
	if errors.As(rerr, &rd) || errors.Is(rerr, errFatalSession) {
		return rerr
	}
	if sendErr != nil && !errors.Is(sendErr, context.Canceled) {
		return sendErr
	}
	return rerr
}

// send writes batches while the window allows.
func (s *session) send(ctx context.Context) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	s.mu.Lock()
	s.lastAnswer = time.Now()
	s.mu.Unlock()
	for {
		changed := s.u.spool.Changed()
		s.mu.Lock()
		now := time.Now()
		if len(s.inflight) > 0 && now.Sub(s.lastAnswer) > s.u.cfg.AckTimeout {
			s.mu.Unlock()
			return fmt.Errorf("hub %s: no answer for %v", s.addr, s.u.cfg.AckTimeout)
		}
		full := len(s.inflight) >= s.u.cfg.Window
		cursor := s.cursor
		s.mu.Unlock()

		var b *jasperv1.Batch
		if !full {
			var err error
			if b, err = s.u.spool.Next(cursor); err != nil {
				return fmt.Errorf("read spool: %w", err)
			}
		}
		if b == nil {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-changed:
			case <-s.kick:
			case <-tick.C:
			}
			continue
		}
		if s.maxBytes > 0 && proto.Size(b) > s.maxBytes {
			s.u.log.Error("uplink_batch_too_large", "sequence", b.Sequence, "bytes", proto.Size(b), "max_batch_bytes", s.maxBytes)
			s.u.m.refusals.WithLabelValues("too_large_local").Inc()
			if err := s.u.spool.Reject(b.Sequence, "too_large_local"); err != nil {
				return err
			}
			s.mu.Lock()
			s.cursor = max(s.cursor, b.Sequence)
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		if len(s.inflight) == 0 {
			s.lastAnswer = time.Now() // the ack clock starts with the first batch in flight
		}
		s.inflight[b.Sequence] = time.Now()
		s.cursor = max(s.cursor, b.Sequence)
		n := len(s.inflight)
		s.mu.Unlock()
		s.u.m.inflight.Set(float64(n))
		if err := s.stream.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: b}}); err != nil {
			return fmt.Errorf("send batch %d: %w", b.Sequence, err)
		}
		s.u.m.sent.Inc()
	}
}

// receive handles the hub's answers until the stream ends.
func (s *session) receive() error {
	for {
		resp, err := s.stream.Recv()
		if err != nil {
			return fmt.Errorf("receive from %s: %w", s.addr, err)
		}
		s.mu.Lock()
		s.lastAnswer = time.Now()
		s.mu.Unlock()
		switch m := resp.Msg.(type) {
		case *jasperv1.StreamResponse_Ack:
			s.acked(m.Ack)
		case *jasperv1.StreamResponse_Refusal:
			if err := s.refused(m.Refusal); err != nil {
				return err
			}
		default:
			s.u.log.Warn("uplink_unexpected_message", "hub", s.addr, "type", fmt.Sprintf("%T", resp.Msg))
		}
		s.wake()
	}
}

func (s *session) acked(a *jasperv1.Ack) {
	s.acks.Add(1)
	s.mu.Lock()
	sent, ok := s.inflight[a.Sequence]
	delete(s.inflight, a.Sequence)
	n := len(s.inflight)
	s.mu.Unlock()
	if ok {
		s.u.m.ackLatency.Observe(time.Since(sent).Seconds())
	}
	s.u.m.inflight.Set(float64(n))
	if a.Duplicate {
		s.u.m.acks.WithLabelValues("duplicate").Inc()
	} else {
		s.u.m.acks.WithLabelValues("new").Inc()
	}
	if err := s.u.spool.Ack(a.Sequence); err != nil {
		s.u.log.Error("uplink_spool_ack_failed", "sequence", a.Sequence, "err", err)
	}
}

func (s *session) refused(r *jasperv1.Refusal) error {
	reason := reasonLabel(r.Reason)
	s.u.m.refusals.WithLabelValues(reason).Inc()
	s.mu.Lock()
	delete(s.inflight, r.Sequence)
	s.mu.Unlock()
	switch r.Reason {
	case jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER:
		return &redirect{addr: r.LeaderAddress, after: time.Duration(r.RetryAfterMs) * time.Millisecond}
	case jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE:
		// Batches after the refused one may already be in flight, and a
		// hub takes a stream's batches in increasing order only: end the
		// stream, and resume after the pause from the Welcome's
		// committed_through.
		pause := max(time.Duration(r.RetryAfterMs)*time.Millisecond, s.u.cfg.BackoffMin)
		s.u.log.Info("uplink_throttled", "hub", s.addr, "sequence", r.Sequence, "pause", pause, "detail", r.Detail)
		return &redirect{addr: s.addr, after: pause}
	case jasperv1.RefusalReason_REFUSAL_REASON_INVALID,
		jasperv1.RefusalReason_REFUSAL_REASON_FORBIDDEN,
		jasperv1.RefusalReason_REFUSAL_REASON_BAD_TIME,
		jasperv1.RefusalReason_REFUSAL_REASON_TOO_LARGE:
		if r.Sequence == 0 {
			s.u.log.Error("uplink_stream_refused", "hub", s.addr, "reason", reason, "detail", r.Detail)
			return fmt.Errorf("%w: %s: %s", errFatalSession, reason, r.Detail)
		}
		s.u.log.Error("uplink_batch_refused", "hub", s.addr, "sequence", r.Sequence, "reason", reason, "detail", r.Detail)
		if err := s.u.spool.Reject(r.Sequence, reason); err != nil {
			s.u.log.Error("uplink_spool_reject_failed", "sequence", r.Sequence, "err", err)
		}
		return nil
	default: // REVOKED, unknown
		s.u.log.Error("uplink_stream_refused", "hub", s.addr, "sequence", r.Sequence, "reason", reason, "detail", r.Detail)
		return fmt.Errorf("%w: %s: %s", errFatalSession, reason, r.Detail)
	}
}
