// Package outbox is the alerting FSM module: it routes and groups findings
// into notifications and keeps every delivery in the replicated state until
// each channel of each recipient has it (DESIGN.md promise 3).
//
// The raft store hosts the Module and calls it in log order on every hub:
// OnFinding for each committed finding, OnTick for leader-proposed ticks
// (the only clock it sees), Apply for commands proposed for it (admin
// changes and delivery-attempt outcomes). It never reads the clock, the
// network or a random source, so every hub computes the same state, and two
// modules fed the same entries produce byte-equal snapshots.
//
// The Worker runs on the leader: it reads due deliveries, sends them through
// the channel senders, and proposes each attempt's outcome; a new leader's
// worker resumes from the replicated state. Reads (Due, Audit, Feed, ...)
// are safe concurrently with applies.
package outbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/route"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// DefaultName is the module name the store registers and proposes to.
const DefaultName = "alerting"

// Config bounds the module. Every hub must run the same values (they shape
// the replicated state).
type Config struct {
	Name                    string             `yaml:"name"`
	MaxItemsPerNotification int                `yaml:"max_items_per_notification"`
	MaxAlertsPerRecipient   int                `yaml:"max_alerts_per_recipient"`
	MaxPendingPerRecipient  int                `yaml:"max_pending_per_recipient"`
	MaxAuditPerRecipient    int                `yaml:"max_audit_per_recipient"`
	MaxFeedPerRecipient     int                `yaml:"max_feed_per_recipient"`
	MaxFailed               int                `yaml:"max_failed"`
	RetryFor                directory.Duration `yaml:"retry_for"`
	ExpireAfter             directory.Duration `yaml:"expire_after"`
}

// DefaultConfig returns the defaults: retry for three days.
func DefaultConfig() Config {
	return Config{
		Name:                    DefaultName,
		MaxItemsPerNotification: 500,
		MaxAlertsPerRecipient:   100000,
		MaxPendingPerRecipient:  10000,
		MaxAuditPerRecipient:    2000,
		MaxFeedPerRecipient:     20000,
		MaxFailed:               10000,
		RetryFor:                directory.Duration(72 * time.Hour),
		ExpireAfter:             directory.Duration(7 * 24 * time.Hour),
	}
}

// Validate names the bad key.
func (c *Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("name: required")
	case c.MaxItemsPerNotification <= 0:
		return errors.New("max_items_per_notification: must be positive")
	case c.MaxAlertsPerRecipient <= 0:
		return errors.New("max_alerts_per_recipient: must be positive")
	case c.MaxPendingPerRecipient <= 0:
		return errors.New("max_pending_per_recipient: must be positive")
	case c.MaxAuditPerRecipient <= 0:
		return errors.New("max_audit_per_recipient: must be positive")
	case c.MaxFeedPerRecipient <= 0:
		return errors.New("max_feed_per_recipient: must be positive")
	case c.MaxFailed <= 0:
		return errors.New("max_failed: must be positive")
	case c.RetryFor <= 0:
		return errors.New("retry_for: must be positive")
	case c.ExpireAfter <= 0:
		return errors.New("expire_after: must be positive")
	}
	return nil
}

// MaxSilences bounds the silences kept.
const MaxSilences = 10000

// Errors returned by Apply.
var (
	ErrUnknownRecipient = errors.New("unknown recipient")
	ErrUnknownDelivery  = errors.New("unknown or finished delivery")
	ErrStaleAttempt     = errors.New("stale attempt")
	ErrNotFound         = errors.New("not found")
)

// Module is the alerting FSM module.
type Module struct {
	cfg     Config
	log     *slog.Logger
	wake    chan struct{}
	initial directory.Directory

	mu    sync.RWMutex
	st    state
	table *route.Table
	sil   []*route.Silence // sorted silences, rebuilt per tick (derived)
}

// New builds a module holding the initial directory (from the YAML every
// hub shares; replicated changes and snapshots override it).
func New(cfg Config, initial directory.Directory, log *slog.Logger) (*Module, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alerting outbox config: %w", err)
	}
	if err := initial.Validate(); err != nil {
		return nil, fmt.Errorf("alerting recipients: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Module{cfg: cfg, log: log.With("component", "alerting_outbox"), wake: make(chan struct{}, 1), st: newState()}
	m.initial = initial.Clone()
	m.st.Directory = initial.Clone()
	m.table = route.Compile(&m.st.Directory)
	return m, nil
}

// Name is the module name.
func (m *Module) Name() string { return m.cfg.Name }

// Wake returns a channel that receives when deliveries may have become due.
func (m *Module) Wake() <-chan struct{} { return m.wake }

func (m *Module) signal() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}

// OnBatch ignores raw batches: alerting reacts to findings.
func (m *Module) OnBatch(uint64, *jasperv1.CommittedBatch) {}

// OnTick advances event time and flushes due groups.
func (m *Module) OnTick(index uint64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.tick(index, now.UnixMilli())
}

// OnFinding routes one committed finding. The store (or the detection
// module) calls it in log order on every hub.
func (m *Module) OnFinding(index uint64, f *jasperv1.Finding) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		m.log.Error("finding_marshal_failed", "err", err) // cannot happen for a valid message
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe(index, f, b)
}

// ObserveFinding is OnFinding for subscribers that get no index, such as
// hub/detect's Detector.OnFinding(fn func(*jasperv1.Finding)): its
// callbacks run inside the FSM apply, in log order, on every hub.
//
//	det.OnFinding(alerting.Module().ObserveFinding)
func (m *Module) ObserveFinding(f *jasperv1.Finding) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(f)
	if err != nil {
		m.log.Error("finding_marshal_failed", "err", err)
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe(m.st.Index, f, b)
}

func (m *Module) observe(index uint64, f *jasperv1.Finding, b []byte) {
	m.st.Index = index
	m.st.Stats.Findings++
	at := m.st.NowMs // 0 before the first tick: the tick then stamps it
	for _, t := range m.table.Route(f) {
		r := m.st.Directory.Find(t.Recipient)
		if r == nil {
			continue
		}
		g := m.st.Groups[t.Recipient]
		if g == nil {
			g = route.NewGroup(m.st.Directory.EffectiveRouting(r), at)
			m.st.Groups[t.Recipient] = g
		}
		if _, ok := g.Alerts[f.GetId()]; !ok && len(g.Alerts) >= m.cfg.MaxAlertsPerRecipient {
			m.st.Stats.Shed++
			continue
		}
		g.Observe(f, b, t.Reason, at)
		// No group wait: notify within this entry instead of at the next
		// tick (once event time is known).
		if at > 0 && m.st.Directory.EffectiveRouting(r).GroupWait == 0 && m.flush(r, g, at) {
			m.signal()
		}
	}
}

func (m *Module) tick(index uint64, nowMs int64) {
	m.st.Index = index
	first := m.st.NowMs == 0
	if nowMs > m.st.NowMs {
		m.st.NowMs = nowMs
	}
	now := m.st.NowMs
	created := false
	m.sil = m.sil[:0]
	for _, id := range sortedKeys(m.st.Silences) {
		m.sil = append(m.sil, m.st.Silences[id])
	}
	for _, id := range sortedKeys(m.st.Groups) {
		g := m.st.Groups[id]
		r := m.st.Directory.Find(id)
		if r == nil || r.Disabled {
			delete(m.st.Groups, id)
			continue
		}
		m.st.Stats.Expired += uint64(g.Expire(now, now-m.cfg.ExpireAfter.D().Milliseconds(), first))
		created = m.flush(r, g, now) || created
	}
	m.expireRetries(now)
	if created {
		m.signal()
	}
}

// flush runs one group's flush decision at event time now.
func (m *Module) flush(r *directory.Recipient, g *route.Group, now int64) bool {
	if m.pendingFor(r.ID) >= m.cfg.MaxPendingPerRecipient {
		m.st.Stats.Backpressured++
		return false
	}
	rt := m.st.Directory.EffectiveRouting(r)
	items := g.Flush(rt, now, m.cfg.MaxItemsPerNotification, func(f *jasperv1.Finding) bool { return m.silenced(r.ID, f, now) })
	if len(items) == 0 {
		return false
	}
	m.notify(r, items, now)
	return true
}

func (m *Module) silenced(recipient string, f *jasperv1.Finding, now int64) bool {
	if len(m.sil) != len(m.st.Silences) { // outside a tick: rebuild
		m.sil = m.sil[:0]
		for _, id := range sortedKeys(m.st.Silences) {
			m.sil = append(m.sil, m.st.Silences[id])
		}
	}
	for _, s := range m.sil {
		if s.Matches(recipient, f, now) {
			return true
		}
	}
	return false
}

// wakeAll makes every group look again at the next tick (silences or
// routing changed).
func (m *Module) wakeAll() {
	for _, id := range sortedKeys(m.st.Groups) {
		m.st.Groups[id].Wake()
	}
}

func (m *Module) pendingFor(recipient string) int {
	n := 0
	r := m.st.Directory.Find(recipient)
	if r == nil {
		return 0
	}
	for _, c := range r.Channels() {
		n += len(m.st.Queues[queueKey(recipient, c)])
	}
	return n
}

func (m *Module) notify(r *directory.Recipient, items []route.Item, now int64) {
	m.st.Seq++
	seq := m.st.Seq
	n := &Notification{
		ID:        fmt.Sprintf("n%d", seq),
		Ticket:    fmt.Sprintf("JSP-%06d", seq),
		Recipient: r.ID,
		CreatedMs: now,
		Items:     items,
	}
	m.st.Stats.Notifications++
	for _, c := range r.Channels() {
		d := &Delivery{
			ID:           DeliveryID(r.ID, seq, c, now, items),
			Notification: n.ID,
			Recipient:    r.ID,
			Channel:      c,
			CreatedMs:    now,
			NextMs:       now,
			State:        StatePending,
		}
		m.st.Deliveries[d.ID] = d
		k := queueKey(r.ID, c)
		m.st.Queues[k] = append(m.st.Queues[k], d.ID)
		n.Pending++
		m.st.Stats.Deliveries++
	}
	if n.Pending > 0 {
		m.st.Notifications[n.ID] = n
	}
	// The TAXII collection.
	feed := m.st.Feed[r.ID]
	next := now * 1000
	if len(feed) > 0 && feed[len(feed)-1].DateAddedUs+FeedStride > next {
		next = feed[len(feed)-1].DateAddedUs + FeedStride
	}
	for _, it := range items {
		feed = append(feed, FeedItem{DateAddedUs: next, Notification: n.ID, FindingBytes: it.FindingBytes})
		next += FeedStride
	}
	if over := len(feed) - m.cfg.MaxFeedPerRecipient; over > 0 {
		feed = append([]FeedItem(nil), feed[over:]...)
		m.st.Stats.FeedEvicted += uint64(over)
	}
	m.st.Feed[r.ID] = feed
}

// DeliveryID is the stable id of the delivery of notification seq to one
// channel of a recipient: the idempotency key of every attempt.
func DeliveryID(recipient string, seq uint64, channel string, createdMs int64, items []route.Item) string {
	// The notification's event time and content are part of the id, so a
	// federation whose state was reset (a new cluster) never reuses an id a
	// receiver already processed for a different alert: receivers dedup by id.
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%d\x00%s\x00%d", recipient, seq, channel, createdMs)
	for _, it := range items {
		fmt.Fprintf(h, "\x00%v\x00%v\x00", it.Kind, it.Reason)
		h.Write(it.FindingBytes)
	}
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// expireRetries gives up on head deliveries that have been retried for
// longer than RetryFor, so the queue behind them moves.
func (m *Module) expireRetries(now int64) {
	limit := m.cfg.RetryFor.D().Milliseconds()
	for _, k := range sortedKeys(m.st.Queues) {
		q := m.st.Queues[k]
		for len(q) > 0 {
			d := m.st.Deliveries[q[0]]
			if d == nil || d.Attempts == 0 || now-d.CreatedMs < limit {
				break
			}
			d.State = StateFailed
			m.audit(d, Attempt{Index: m.st.Index, Delivery: d.ID, Channel: d.Channel, Attempt: d.Attempts, AtMs: now, Outcome: OutcomeFailed, Error: "gave up after retry_for: " + d.LastError})
			m.st.Stats.Failed++
			m.finish(d, false)
			m.st.Failed = append(m.st.Failed, d.ID)
			q = m.st.Queues[k]
		}
	}
	if over := len(m.st.Failed) - m.cfg.MaxFailed; over > 0 {
		for _, id := range m.st.Failed[:over] {
			delete(m.st.Deliveries, id)
		}
		m.st.Failed = append([]string(nil), m.st.Failed[over:]...)
		m.st.Stats.FailedEvicted += uint64(over)
	}
}

// finish takes a delivery off its queue and releases its notification when
// it was the last one; drop also forgets the delivery.
func (m *Module) finish(d *Delivery, drop bool) {
	k := queueKey(d.Recipient, d.Channel)
	q := m.st.Queues[k]
	for i, id := range q {
		if id == d.ID {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(m.st.Queues, k)
	} else {
		m.st.Queues[k] = q
	}
	if n := m.st.Notifications[d.Notification]; n != nil {
		n.Pending--
		if n.Pending <= 0 {
			delete(m.st.Notifications, n.ID)
		}
	}
	if drop {
		delete(m.st.Deliveries, d.ID)
	}
}

func (m *Module) audit(d *Delivery, a Attempt) {
	if n := m.st.Notifications[d.Notification]; n != nil {
		a.Ticket = n.Ticket
	}
	log := append(m.st.Audit[d.Recipient], a)
	if over := len(log) - m.cfg.MaxAuditPerRecipient; over > 0 {
		log = append([]Attempt(nil), log[over:]...)
		m.st.Stats.AuditEvicted += uint64(over)
	}
	m.st.Audit[d.Recipient] = log
}

// Apply applies one command proposed for the module. Errors are returned
// as the result (the same on every hub) and leave the state unchanged.
func (m *Module) Apply(index uint64, payload []byte) (any, error) {
	c, err := Decode(payload)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.st.Index = index
	switch c.Op {
	case OpFinding:
		var f jasperv1.Finding
		if err := proto.Unmarshal(c.Finding, &f); err != nil {
			return nil, fmt.Errorf("%w: finding: %w", ErrBadCommand, err)
		}
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(&f)
		if err != nil {
			return nil, fmt.Errorf("%w: finding: %w", ErrBadCommand, err)
		}
		m.observe(index, &f, b)
	case OpTick:
		m.tick(index, c.TickMs)
	case OpLoadDirectory:
		m.setDirectory(c.Directory.Clone())
	case OpPutRecipient:
		d := m.st.Directory.Clone()
		d.Put(*c.Recipient)
		if err := d.Validate(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadCommand, err)
		}
		m.setDirectory(d)
	case OpDeleteRecipient:
		d := m.st.Directory.Clone()
		if !d.Delete(c.ID) {
			return nil, fmt.Errorf("%w %q", ErrUnknownRecipient, c.ID)
		}
		m.setDirectory(d)
	case OpPutSilence:
		s := *c.Silence
		if _, ok := m.st.Silences[s.ID]; !ok && len(m.st.Silences) >= MaxSilences {
			return nil, fmt.Errorf("%w: more than %d silences", ErrBadCommand, MaxSilences)
		}
		m.st.Silences[s.ID] = &s
		m.sil = m.sil[:0]
		m.wakeAll() // replacing a silence may unmute
	case OpDeleteSilence:
		if m.st.Silences[c.ID] == nil {
			return nil, fmt.Errorf("silence %q: %w", c.ID, ErrNotFound)
		}
		delete(m.st.Silences, c.ID)
		m.sil = m.sil[:0]
		m.wakeAll()
	case OpAck:
		n := 0
		for _, id := range sortedKeys(m.st.Groups) {
			if (c.Ack.Recipient == "" || c.Ack.Recipient == id) && m.st.Groups[id].Ack(c.Ack.FindingID) {
				n++
			}
		}
		if n == 0 && c.Ack.Recipient == "" {
			return nil, fmt.Errorf("finding %q held by no recipient: %w", c.Ack.FindingID, ErrNotFound)
		}
		if n == 0 {
			return nil, fmt.Errorf("finding %q of %q: %w", c.Ack.FindingID, c.Ack.Recipient, ErrNotFound)
		}
		return n, nil
	case OpAttempt:
		return m.attempt(c.Attempt)
	case OpEnableChannel:
		k := queueKey(c.Channel.Recipient, c.Channel.Channel)
		if _, ok := m.st.Disabled[k]; !ok {
			return nil, fmt.Errorf("channel %q of %q: %w", c.Channel.Channel, c.Channel.Recipient, ErrNotFound)
		}
		delete(m.st.Disabled, k)
		m.signal()
	}
	return nil, nil
}

func (m *Module) attempt(a *AttemptCommand) (any, error) {
	d := m.st.Deliveries[a.Delivery]
	if d == nil || d.State != StatePending {
		m.st.Stats.StaleAttempts++
		return nil, fmt.Errorf("%w: %s", ErrUnknownDelivery, a.Delivery)
	}
	if a.Attempt != d.Attempts+1 {
		m.st.Stats.StaleAttempts++
		return nil, fmt.Errorf("%w: %s attempt %d, have %d", ErrStaleAttempt, a.Delivery, a.Attempt, d.Attempts)
	}
	d.Attempts = a.Attempt
	row := Attempt{Index: m.st.Index, Delivery: d.ID, Channel: d.Channel, Attempt: a.Attempt, AtMs: a.AtMs, Outcome: a.Outcome, Error: a.Error, Leader: a.Leader, LatencyMs: a.LatencyMs}
	switch a.Outcome {
	case OutcomeOK:
		m.audit(d, row)
		m.st.Stats.Delivered++
		m.finish(d, true)
	case OutcomeRetry:
		d.NextMs, d.LastError = a.NextMs, a.Error
		row.NextMs = a.NextMs
		m.audit(d, row)
		m.st.Stats.Retries++
	case OutcomeGone:
		// The endpoint is gone: park the channel (its deliveries stay) and
		// report it until an operator fixes or re-enables it.
		d.LastError = a.Error
		m.st.Disabled[queueKey(d.Recipient, d.Channel)] = fmt.Sprintf("attempt %d at %d: %s", a.Attempt, a.AtMs, a.Error)
		m.audit(d, row)
		m.st.Stats.Disabled++
	}
	m.signal()
	return nil, nil
}

// setDirectory installs a new directory: queues of channels that left are
// dropped (audited), disabled marks of channels still present are cleared
// (the operator changed them), groups of removed recipients are forgotten.
func (m *Module) setDirectory(d directory.Directory) {
	m.st.Directory = d
	m.st.DirVersion++
	m.wakeAll()
	m.st.Stats.DirectoryLoads++
	m.table = route.Compile(&m.st.Directory)
	live := map[string]bool{}
	for i := range d.Recipients {
		r := &d.Recipients[i]
		for _, c := range r.Channels() {
			live[queueKey(r.ID, c)] = true
		}
		if r.Disabled {
			delete(m.st.Groups, r.ID)
		}
	}
	for _, k := range sortedKeys(m.st.Queues) {
		if live[k] {
			continue
		}
		for _, id := range append([]string(nil), m.st.Queues[k]...) {
			if dl := m.st.Deliveries[id]; dl != nil {
				m.audit(dl, Attempt{Index: m.st.Index, Delivery: id, Channel: dl.Channel, Attempt: dl.Attempts, AtMs: m.st.NowMs, Outcome: StateRemoved, Error: "channel or recipient left the directory"})
				m.st.Stats.Removed++
				m.finish(dl, true)
			}
		}
	}
	for _, k := range sortedKeys(m.st.Disabled) {
		delete(m.st.Disabled, k)
	}
	for _, id := range sortedKeys(m.st.Groups) {
		if d.Find(id) == nil {
			delete(m.st.Groups, id)
		}
	}
	for _, id := range sortedKeys(m.st.Feed) {
		if d.Find(id) == nil {
			delete(m.st.Feed, id)
		}
	}
	m.signal()
}

// Snapshot writes the whole state as JSON (deterministic: sorted keys).
func (m *Module) Snapshot(w io.Writer) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	b, err := json.Marshal(&m.st)
	if err != nil {
		return fmt.Errorf("alerting snapshot: %w", err)
	}
	_, err = w.Write(b)
	return err
}

// Restore replaces the state with a snapshot. An empty snapshot (one that
// predates the module) resets to the initial state.
func (m *Module) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("alerting restore: %w", err)
	}
	st := newState()
	if len(b) == 0 {
		st.Directory = m.initial.Clone()
	} else if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("alerting restore: %w", err)
	}
	if st.Version != 1 {
		return fmt.Errorf("alerting restore: snapshot version %d", st.Version)
	}
	for id, g := range st.Groups {
		if g.Alerts == nil {
			g.Alerts = map[string]*route.Alert{}
		}
		for fid, a := range g.Alerts {
			var f jasperv1.Finding
			if err := proto.Unmarshal(a.FindingBytes, &f); err != nil {
				return fmt.Errorf("alerting restore: group %s finding %s: %w", id, fid, err)
			}
			a.Finding = &f
		}
	}
	m.mu.Lock()
	m.st = st
	m.sil = nil
	m.table = route.Compile(&m.st.Directory)
	m.mu.Unlock()
	m.signal()
	return nil
}

func sortedKeys[V any](mp map[string]V) []string {
	ks := make([]string, 0, len(mp))
	for k := range mp {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// ErrorKinds lists the errors Apply wraps, so that a proposal a follower
// hub forwards to the leader keeps errors.Is (hub/store ErrorKinds).
func (m *Module) ErrorKinds() []error {
	return []error{ErrBadCommand, ErrUnknownRecipient, ErrUnknownDelivery, ErrStaleAttempt, ErrNotFound}
}
