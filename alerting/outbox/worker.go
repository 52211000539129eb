package outbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/alerting/directory"
)

// Proposer is what the worker needs from the raft store.
type Proposer interface {
	Propose(ctx context.Context, module string, payload []byte) (any, error)
	IsLeader() bool
}

// Result is a sender's verdict on one attempt.
type Result struct {
	Outcome string // OutcomeOK, OutcomeRetry or OutcomeGone
	Err     error
	// RetryAfter is the receiver's hint (e.g. HTTP Retry-After), zero when
	// none; the backoff is never shorter than it.
	RetryAfter time.Duration
}

// Sender delivers a task over one kind of channel. It must not retry on
// its own: the worker records each attempt.
type Sender interface {
	Send(ctx context.Context, t *Task) Result
}

// WorkerConfig tunes delivery on the leader.
type WorkerConfig struct {
	Poll        directory.Duration `yaml:"poll"`
	Parallel    int                `yaml:"parallel"`
	SendTimeout directory.Duration `yaml:"send_timeout"`
	BackoffBase directory.Duration `yaml:"backoff_base"`
	BackoffMax  directory.Duration `yaml:"backoff_max"`
	// Jitter is the fraction added at random to each backoff (0.2 = up to +20%).
	Jitter float64 `yaml:"jitter"`
}

// DefaultWorkerConfig: first retry after ~30 s, doubling to at most 1 h.
func DefaultWorkerConfig() WorkerConfig {
	return WorkerConfig{
		Poll:        directory.Duration(time.Second),
		Parallel:    16,
		SendTimeout: directory.Duration(30 * time.Second),
		BackoffBase: directory.Duration(30 * time.Second),
		BackoffMax:  directory.Duration(time.Hour),
		Jitter:      0.2,
	}
}

// Validate names the bad key.
func (c *WorkerConfig) Validate() error {
	switch {
	case c.Poll <= 0:
		return errors.New("poll: must be positive")
	case c.Parallel <= 0:
		return errors.New("parallel: must be positive")
	case c.SendTimeout <= 0:
		return errors.New("send_timeout: must be positive")
	case c.BackoffBase <= 0:
		return errors.New("backoff_base: must be positive")
	case c.BackoffMax < c.BackoffBase:
		return errors.New("backoff_max: must be at least backoff_base")
	case c.Jitter < 0 || c.Jitter > 1:
		return errors.New("jitter: must be between 0 and 1")
	}
	return nil
}

// WorkerDeps are the worker's collaborators.
type WorkerDeps struct {
	Module *Module
	Store  Proposer
	// Senders by channel kind: "email", "webhook".
	Senders map[string]Sender
	Log     *slog.Logger
	// Registerer for metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Node names this hub in the audit log.
	Node string
	// Now is the leader's clock (time.Now when nil).
	Now func() time.Time
}

// Worker delivers due deliveries while this hub is the leader.
type Worker struct {
	cfg  WorkerConfig
	deps WorkerDeps
	log  *slog.Logger
	now  func() time.Time

	mu       sync.Mutex
	inflight map[string]bool
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	stopOnce sync.Once

	attempts *prometheus.CounterVec
	latency  prometheus.Histogram
}

// NewWorker builds a worker; Start runs it.
func NewWorker(cfg WorkerConfig, deps WorkerDeps) (*Worker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alerting worker config: %w", err)
	}
	if deps.Module == nil || deps.Store == nil {
		return nil, errors.New("alerting worker: module and store required")
	}
	w := &Worker{cfg: cfg, deps: deps, now: deps.Now, inflight: map[string]bool{}, log: deps.Log}
	if w.now == nil {
		w.now = time.Now
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.log = w.log.With("component", "alerting_worker")
	w.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_alerting_attempts_total", Help: "Delivery attempts by channel kind and outcome.",
	}, []string{"channel", "outcome"})
	w.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "jasper_alerting_delivery_seconds", Help: "From notification to successful delivery (leader clock).",
		Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400},
	})
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{w.attempts, w.latency} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("alerting worker metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Start launches the delivery loop.
func (w *Worker) Start(ctx context.Context) {
	ctx, w.cancel = context.WithCancel(ctx)
	w.wg.Go(func() { w.run(ctx) })
}

// Stop ends the loop and waits for sends in flight (bounded by
// send_timeout). It is idempotent.
func (w *Worker) Stop() {
	w.stopOnce.Do(func() {
		if w.cancel != nil {
			w.cancel()
		}
		w.wg.Wait()
	})
}

func (w *Worker) run(ctx context.Context) {
	t := time.NewTicker(w.cfg.Poll.D())
	defer t.Stop()
	for {
		w.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.deps.Module.Wake():
		}
	}
}

// round starts a send for every due delivery not already in flight.
func (w *Worker) round(ctx context.Context) {
	if !w.deps.Store.IsLeader() {
		return
	}
	w.mu.Lock()
	free := w.cfg.Parallel - len(w.inflight)
	w.mu.Unlock()
	if free <= 0 {
		return
	}
	tasks := w.deps.Module.Due(w.now().UnixMilli(), free, func(id string) bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.inflight[id]
	})
	for i := range tasks {
		t := tasks[i]
		w.mu.Lock()
		w.inflight[t.Delivery.ID] = true
		w.mu.Unlock()
		w.wg.Go(func() {
			defer func() {
				w.mu.Lock()
				delete(w.inflight, t.Delivery.ID)
				w.mu.Unlock()
				w.deps.Module.signal()
			}()
			w.deliver(ctx, &t)
		})
	}
}

func kindOf(channel string) string {
	k, _, _ := strings.Cut(channel, "/")
	return k
}

func (w *Worker) deliver(ctx context.Context, t *Task) {
	kind := kindOf(t.Delivery.Channel)
	start := w.now()
	var res Result
	if s := w.deps.Senders[kind]; s == nil {
		res = Result{Outcome: OutcomeRetry, Err: fmt.Errorf("no sender for channel kind %q", kind)}
	} else {
		sctx, cancel := context.WithTimeout(ctx, w.cfg.SendTimeout.D())
		res = s.Send(sctx, t)
		cancel()
	}
	if ctx.Err() != nil && res.Outcome != OutcomeOK {
		return // shutting down: the next leader retries with the same id
	}
	at := w.now()
	cmd := &AttemptCommand{
		Delivery: t.Delivery.ID, Attempt: t.Attempt, Outcome: res.Outcome, AtMs: at.UnixMilli(),
		Leader: w.deps.Node, LatencyMs: at.Sub(start).Milliseconds(),
	}
	if res.Err != nil {
		cmd.Error = res.Err.Error()
	}
	if res.Outcome == OutcomeRetry {
		cmd.NextMs = at.Add(w.Backoff(t.Attempt, res.RetryAfter)).UnixMilli()
	}
	w.attempts.WithLabelValues(kind, res.Outcome).Inc()
	if res.Outcome == OutcomeOK {
		w.latency.Observe(float64(at.UnixMilli()-t.CreatedMs) / 1000)
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := w.deps.Store.Propose(pctx, w.deps.Module.Name(), Encode(Command{Op: OpAttempt, Attempt: cmd})); err != nil {
		// Lost leadership or quorum: the delivery stays due and whoever
		// leads next sends it again under the same id.
		w.log.Warn("attempt_not_recorded", "delivery", t.Delivery.ID, "outcome", res.Outcome, "err", err)
		return
	}
	if res.Outcome != OutcomeOK {
		w.log.Info("delivery_attempt_failed", "delivery", t.Delivery.ID, "recipient", t.Delivery.Recipient,
			"channel", t.Delivery.Channel, "attempt", t.Attempt, "outcome", res.Outcome, "err", res.Err)
	}
}

// Backoff is the wait before the attempt after attempt n (1-based):
// base*2^(n-1) capped at max, plus up to Jitter of it at random, and never
// less than the receiver's hint. The leader draws the jitter and puts the
// result in the command, so the FSM stays deterministic.
func (w *Worker) Backoff(n int, hint time.Duration) time.Duration {
	d := w.cfg.BackoffBase.D()
	for i := 1; i < n && d < w.cfg.BackoffMax.D(); i++ {
		d *= 2
	}
	d = min(d, w.cfg.BackoffMax.D())
	d += time.Duration(rand.Float64() * w.cfg.Jitter * float64(d))
	return max(d, min(hint, w.cfg.BackoffMax.D()))
}
