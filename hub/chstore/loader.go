package chstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Source is the replicated store as the loader sees it (hub/store's Store
// implements it).
type Source interface {
	// Pending returns committed batches with a raft index above after that
	// are not yet marked loaded, in raft index order, RaftIndex set, about
	// maxRows summary rows in all (at least one batch when any is pending).
	// Several batches of one raft entry share its index; an entry is never
	// split between two answers.
	Pending(after uint64, maxRows int) []*jasperv1.CommittedBatch
	// MarkLoaded records through raft that every batch up to through is in
	// ClickHouse.
	MarkLoaded(ctx context.Context, through uint64) error
	// IsLeader reports whether this hub is the raft leader.
	IsLeader() bool
}

// Backlog may be implemented by a Source that can count the summary rows
// committed but not yet loaded; the loader then exports the full figure as
// jasper_loader_pending_rows instead of the rows of its last Pending answer.
type Backlog interface {
	PendingRows() uint64
}

// Status is a snapshot of the loader for `jasper hub status`.
type Status struct {
	// Leader is true while the loader is active (this hub leads).
	Leader bool
	// LoadedIndex is the raft index through which this loader has loaded
	// and marked batches.
	LoadedIndex uint64
	// PendingRows is the lag in summary rows (see Backlog).
	PendingRows uint64
	// Lag is the age of the oldest pending batch.
	Lag time.Duration
	// RowsLoaded and BatchesLoaded count since this loader started.
	RowsLoaded    uint64
	BatchesLoaded uint64
	// LastError is the last error and when it happened ("" if none).
	LastError   string
	LastErrorAt time.Time
}

// maxDaysPerInsert bounds the daily partitions one INSERT block touches,
// well under ClickHouse's max_partitions_per_insert_block (100).
const maxDaysPerInsert = 50

// Loader copies committed batches into ClickHouse exactly once (see the
// package doc). It works only while its hub is the raft leader.
type Loader struct {
	cfg  Config
	src  Source
	conn driver.Conn
	log  *slog.Logger
	m    *metrics

	notify chan struct{}

	block summaryBlock // used by the run goroutine only

	mu      sync.Mutex
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
	status  Status
}

// NewLoader builds a loader; it starts nothing. cfg is validated.
func NewLoader(cfg Config, src Source, conn driver.Conn, reg prometheus.Registerer, log *slog.Logger) (*Loader, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if src == nil || conn == nil {
		return nil, errors.New("chstore: loader needs a source and a connection")
	}
	if log == nil {
		log = slog.Default()
	}
	return &Loader{
		cfg:    cfg,
		src:    src,
		conn:   conn,
		log:    log.With("component", "loader"),
		m:      newMetrics(reg),
		notify: make(chan struct{}, 1),
	}, nil
}

// Start launches the loader's goroutine. It returns at once; calling it
// twice, or after Stop, is an error.
func (l *Loader) Start(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return errors.New("chstore: loader stopped")
	}
	if l.done != nil {
		return errors.New("chstore: loader already started")
	}
	ctx, l.cancel = context.WithCancel(context.WithoutCancel(ctx))
	l.done = make(chan struct{})
	go func() {
		defer close(l.done)
		l.run(ctx)
	}()
	return nil
}

// Stop stops the loader and waits for its goroutine, at most until ctx ends.
// An insert in flight is cancelled: the next loader's check finds out
// whether it landed. Stop is idempotent.
func (l *Loader) Stop(ctx context.Context) error {
	l.mu.Lock()
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return nil
	}
	cancel()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("chstore: stop loader: %w", ctx.Err())
	}
}

// Notify wakes an idle loader (call it when a batch commits); it never
// blocks.
func (l *Loader) Notify() {
	select {
	case l.notify <- struct{}{}:
	default:
	}
}

// Status returns a snapshot of the loader's state.
func (l *Loader) Status() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

func (l *Loader) setStatus(f func(*Status)) {
	l.mu.Lock()
	f(&l.status)
	l.mu.Unlock()
}

// wait sleeps d, or until ctx ends or (when wake) Notify is called. It
// reports false when ctx ended.
func (l *Loader) wait(ctx context.Context, d time.Duration, wake bool) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	var n chan struct{}
	if wake {
		n = l.notify
	}
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-n:
		return true
	}
}

// errUncertain marks an insert whose outcome is unknown: the block may
// have been sent in full and land after the error.
type errUncertain struct{ err error }

func (e errUncertain) Error() string { return e.err.Error() }
func (e errUncertain) Unwrap() error { return e.err }

func (l *Loader) run(ctx context.Context) {
	var (
		leader      bool
		verified    bool   // everything up to cursor is known to be in ClickHouse
		cursor      uint64 // raft index through which this loader loaded
		migrated    bool
		settleUntil time.Time
		backoff     = l.cfg.RetryMin.D()
		nextRetain  time.Time
	)
	fail := func(stage string, err error) {
		l.m.errors.WithLabelValues(stage).Inc()
		l.log.Warn("loader_error", "stage", stage, "err", err, "retry_in", backoff)
		now := time.Now()
		l.setStatus(func(s *Status) { s.LastError, s.LastErrorAt = stage+": "+err.Error(), now })
		verified, cursor = false, 0
		var u errUncertain
		if errors.As(err, &u) {
			settleUntil = now.Add(l.cfg.LeaderSettle.D())
		}
		l.wait(ctx, backoff, false)
		backoff = min(2*backoff, l.cfg.RetryMax.D())
	}
	defer l.m.leader.Set(0)
	for ctx.Err() == nil {
		if !l.src.IsLeader() {
			if leader {
				l.log.Info("loader_paused", "reason", "not_leader")
				l.m.leader.Set(0)
				l.setStatus(func(s *Status) { s.Leader = false })
			}
			leader, verified, cursor = false, false, 0
			l.wait(ctx, l.cfg.PollInterval.D(), false)
			continue
		}
		if !leader {
			leader = true
			settleUntil = time.Now().Add(l.cfg.LeaderSettle.D())
			l.log.Info("loader_active", "settle", l.cfg.LeaderSettle.D())
			l.m.leader.Set(1)
			l.setStatus(func(s *Status) { s.Leader = true })
		}
		if d := time.Until(settleUntil); d > 0 {
			// Keep checking leadership while settling.
			l.wait(ctx, min(d, l.cfg.PollInterval.D()), false)
			continue
		}
		if !migrated {
			n, err := Migrate(ctx, l.conn, l.cfg.Database)
			if err != nil {
				fail("migrate", err)
				continue
			}
			migrated = true
			l.log.Info("schema_ready", "database", l.cfg.Database, "applied", n, "version", SchemaVersion())
		}
		if l.cfg.RetentionDays > 0 && time.Now().After(nextRetain) {
			n, err := DropPartitionsOlderThan(ctx, l.conn, l.cfg.Database, l.cfg.RetentionDays)
			if err != nil {
				l.m.errors.WithLabelValues("retention").Inc()
				l.log.Warn("retention_failed", "err", err)
				nextRetain = time.Now().Add(l.cfg.RetryMax.D())
			} else {
				l.m.droppedParts.Add(float64(n))
				if n > 0 {
					l.log.Info("retention_dropped", "partitions", n, "days", l.cfg.RetentionDays)
				}
				nextRetain = time.Now().Add(l.cfg.RetentionInterval.D())
			}
		}
		batches, err := checkOrder(l.src.Pending(cursor, l.cfg.MaxRowsPerInsert), cursor)
		if err != nil {
			fail("source", err)
			continue
		}
		l.observeLag(batches)
		if len(batches) == 0 {
			l.wait(ctx, l.cfg.PollInterval.D(), true)
			continue
		}
		through, clean, err := l.load(ctx, batches, !verified)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var se stageError
			stage := "insert"
			if errors.As(err, &se) {
				stage = se.stage
			}
			fail(stage, err)
			continue
		}
		backoff = l.cfg.RetryMin.D()
		// Stay in checking mode until a check finds none of its batches in
		// ClickHouse: a new leader's FSM may not have applied its
		// predecessor's last marks, so more than one Pending answer can be
		// loaded already. Earlier writers inserted in raft index order, so
		// past a clean check nothing can be present.
		verified, cursor = clean, through
	}
}

// batchKey identifies a batch in ClickHouse. One raft entry may carry
// several sensor batches, so the raft index alone is not enough; (sensor,
// sequence) is unique in the log (the FSM drops resends).
type batchKey struct {
	raftIndex uint64
	sensorID  string
	seq       uint64
}

func keyOf(cb *jasperv1.CommittedBatch) batchKey {
	return batchKey{cb.GetRaftIndex(), cb.GetSensorId(), cb.GetBatch().GetSequence()}
}

// checkOrder enforces the Source contract the exactly-once argument rests
// on: batches above after, raft indexes in order (batches of one raft
// entry share its index), no batch twice.
func checkOrder(batches []*jasperv1.CommittedBatch, after uint64) ([]*jasperv1.CommittedBatch, error) {
	prev := after
	seen := map[batchKey]bool{}
	for i, cb := range batches {
		idx := cb.GetRaftIndex()
		if idx <= after || idx < prev {
			return nil, fmt.Errorf("pending batch %d has raft index %d after %d (cursor %d)", i, idx, prev, after)
		}
		if seen[keyOf(cb)] {
			return nil, fmt.Errorf("pending batch %d (raft index %d, sensor %s, seq %d) appears twice", i, idx, cb.GetSensorId(), cb.GetBatch().GetSequence())
		}
		seen[keyOf(cb)] = true
		prev = idx
	}
	return batches, nil
}

func (l *Loader) observeLag(pending []*jasperv1.CommittedBatch) {
	var rows uint64
	if b, ok := l.src.(Backlog); ok {
		rows = b.PendingRows()
	} else {
		for _, cb := range pending {
			rows += uint64(batchRows(cb))
		}
	}
	var lag time.Duration
	if len(pending) > 0 && pending[0].GetReceivedAtMs() > 0 {
		lag = max(0, time.Since(time.UnixMilli(pending[0].GetReceivedAtMs())))
	}
	l.m.pendingRows.Set(float64(rows))
	l.m.lagSeconds.Set(lag.Seconds())
	l.setStatus(func(s *Status) { s.PendingRows, s.Lag = rows, lag })
}

type stageError struct {
	stage string
	err   error
}

func (e stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e stageError) Unwrap() error { return e.err }

// asStage wraps err in a stageError unless it already is one.
func asStage(stage string, err error) error {
	var se stageError
	if errors.As(err, &se) {
		return err
	}
	return stageError{stage, err}
}

// load inserts batches (in raft index order) and marks them loaded. With
// check set it first asks ClickHouse which of them each table already
// holds and skips those. It returns the raft index it marked through, and
// clean: true when it checked and found none of the batches present.
func (l *Loader) load(ctx context.Context, batches []*jasperv1.CommittedBatch, check bool) (through uint64, clean bool, err error) {
	clean = true
	for _, group := range splitGroups(batches, l.cfg.MaxRowsPerInsert) {
		found, err := l.loadGroup(ctx, group, check)
		if err != nil {
			return 0, false, err
		}
		clean = clean && !found
	}
	through = batches[len(batches)-1].GetRaftIndex()
	if err := l.src.MarkLoaded(ctx, through); err != nil {
		return 0, false, stageError{"mark", fmt.Errorf("mark loaded through %d: %w", through, err)}
	}
	l.m.batches.Add(float64(len(batches)))
	l.m.loadedIndex.Set(float64(through))
	l.setStatus(func(s *Status) {
		s.LoadedIndex = through
		s.BatchesLoaded += uint64(len(batches))
	})
	return through, clean, nil
}

// splitGroups cuts batches into insert groups of at most maxRows rows (a
// larger batch goes alone) touching at most maxDaysPerInsert days. Batches
// are never split.
func splitGroups(batches []*jasperv1.CommittedBatch, maxRows int) [][]*jasperv1.CommittedBatch {
	var groups [][]*jasperv1.CommittedBatch
	start, rows := 0, 0
	days := map[int64]bool{}
	for i, cb := range batches {
		n := batchRows(cb)
		day := cb.GetBatch().GetBinStart() / 86400
		if i > start && (rows+n > maxRows || (!days[day] && len(days) >= maxDaysPerInsert)) {
			groups = append(groups, batches[start:i])
			start, rows = i, 0
			clear(days)
		}
		rows += n
		days[day] = true
	}
	return append(groups, batches[start:])
}

// loadGroup inserts one group, each table in one block. found reports
// whether the check found any of the group's batches already present.
func (l *Loader) loadGroup(ctx context.Context, group []*jasperv1.CommittedBatch, check bool) (found bool, err error) {
	var inSummary, inStats map[batchKey]bool
	if check {
		inSummary, inStats, err = l.present(ctx, group)
		if err != nil {
			return false, stageError{"check", err}
		}
		found = len(inSummary)+len(inStats) > 0
		if len(inSummary) > 0 {
			if err := l.rebuildRollups(ctx, group, inSummary); err != nil {
				return found, asStage("rebuild", err)
			}
		}
	}
	// The summary block is the loader's, reused from insert to insert.
	sb := &l.block
	sb.reset()
	var st statsBlock
	total := 0
	for _, cb := range group {
		total += batchRows(cb)
	}
	sb.grow(total)
	for _, cb := range group {
		rows := batchRows(cb)
		if err := checkRows(cb.GetBatch().GetRows()); err != nil {
			l.m.invalid.Inc()
			l.log.Error("batch_rows_invalid", "raft_index", cb.GetRaftIndex(), "sensor", cb.GetSensorId(),
				"seq", cb.GetBatch().GetSequence(), "err", err)
			rows = 0
		} else if rows > 0 {
			if inSummary[keyOf(cb)] {
				l.m.skipped.WithLabelValues(TableSummary).Inc()
			} else {
				sb.add(cb)
			}
		}
		if inStats[keyOf(cb)] {
			l.m.skipped.WithLabelValues(TableSensorStats).Inc()
		} else {
			st.add(cb, rows)
		}
	}
	if sb.len() > 0 {
		if err := l.insert(ctx, TableSummary, summaryColumns, sb.columns()); err != nil {
			return found, asStage("insert", err)
		}
		l.m.rows.Add(float64(sb.len()))
		l.setStatus(func(s *Status) { s.RowsLoaded += uint64(sb.len()) })
	}
	if st.len() > 0 {
		if err := l.insert(ctx, TableSensorStats, statsColumns, st.columns()); err != nil {
			return found, asStage("insert", err)
		}
	}
	return found, nil
}

// ErrNotLeader stops a load when the hub lost leadership part-way.
var ErrNotLeader = errors.New("chstore: not the raft leader")

// insert writes one block into table with named columns. It starts only
// while this hub leads, and ends within insert_timeout: with leader_settle
// at least that long, a new leader's check runs after it ended.
func (l *Loader) insert(ctx context.Context, table string, names []string, cols []any) error {
	if !l.src.IsLeader() {
		return stageError{"leader", ErrNotLeader}
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.InsertTimeout.D())
	defer cancel()
	start := time.Now()
	q := fmt.Sprintf("INSERT INTO %s.%s (%s)", quoteDB(l.cfg.Database), table, joinNames(names))
	b, err := l.conn.PrepareBatch(ctx, q)
	if err != nil {
		// Nothing was sent yet.
		return fmt.Errorf("prepare insert into %s: %w", table, err)
	}
	if err := sendColumns(b, cols); err != nil {
		return errUncertain{fmt.Errorf("insert into %s: %w", table, err)}
	}
	l.m.insertSeconds.WithLabelValues(table).Observe(time.Since(start).Seconds())
	return nil
}

func joinNames(names []string) string { return strings.Join(names, ", ") }

// present returns the raft indexes of group already held by summary and by
// sensor_stats. raft_index is not in the sort key, so the query also names
// the group's bin_start values (every batch has one), which lets ClickHouse
// read only those granules of those partitions.
func (l *Loader) present(ctx context.Context, group []*jasperv1.CommittedBatch) (map[batchKey]bool, map[batchKey]bool, error) {
	l.m.checks.Inc()
	lo, hi := group[0].GetRaftIndex(), group[len(group)-1].GetRaftIndex()
	bins := map[int64]bool{}
	for _, cb := range group {
		bins[cb.GetBatch().GetBinStart()] = true
		lo, hi = min(lo, cb.GetRaftIndex()), max(hi, cb.GetRaftIndex())
	}
	binList := slices.Sorted(maps.Keys(bins))
	var binCond string
	if len(binList) <= 1000 {
		var sb strings.Builder
		for i, b := range binList {
			if i > 0 {
				sb.WriteString(", ")
			}
			sb.WriteString(strconv.FormatInt(b, 10))
		}
		binCond = "bin_start IN (" + sb.String() + ")"
	} else {
		binCond = fmt.Sprintf("bin_start >= toDateTime(%d) AND bin_start <= toDateTime(%d)", binList[0], binList[len(binList)-1])
	}
	get := func(table string) (map[batchKey]bool, error) {
		q := fmt.Sprintf("SELECT DISTINCT raft_index, sensor_id, seq FROM %s.%s WHERE %s AND raft_index >= %d AND raft_index <= %d",
			quoteDB(l.cfg.Database), table, binCond, lo, hi)
		rows, err := l.conn.Query(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", table, err)
		}
		defer rows.Close()
		got := map[batchKey]bool{}
		for rows.Next() {
			var k batchKey
			if err := rows.Scan(&k.raftIndex, &k.sensorID, &k.seq); err != nil {
				return nil, fmt.Errorf("check %s: %w", table, err)
			}
			got[k] = true
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("check %s: %w", table, err)
		}
		return got, nil
	}
	s, err := get(TableSummary)
	if err != nil {
		return nil, nil, err
	}
	st, err := get(TableSensorStats)
	if err != nil {
		return nil, nil, err
	}
	return s, st, nil
}

// rebuildRollups recomputes, from summary, the rollups of every day that
// holds a batch found already present in summary. Such a batch was
// inserted by a writer that then failed (crash, ClickHouse killed, lost
// leadership), and ClickHouse writes the views after the table, not
// atomically with it: its rollup rows may be missing. Rebuilding runs
// before the range is marked loaded, so a failure here is retried (by this
// loader or the next one, whose check finds the same batches again). No
// other insert runs meanwhile: this loader is the only writer.
func (l *Loader) rebuildRollups(ctx context.Context, group []*jasperv1.CommittedBatch, inSummary map[batchKey]bool) error {
	days := map[int64]bool{}
	for _, cb := range group {
		if inSummary[keyOf(cb)] {
			days[cb.GetBatch().GetBinStart()/86400] = true
		}
	}
	for day := range days {
		t := time.Unix(day*86400, 0).UTC()
		// Like an insert: started only while leading, bounded by
		// insert_timeout, so it cannot overlap a new leader's loads.
		if !l.src.IsLeader() {
			return stageError{"leader", ErrNotLeader}
		}
		rctx, cancel := context.WithTimeout(ctx, l.cfg.InsertTimeout.D())
		err := RebuildRollups(rctx, l.conn, l.cfg.Database, t)
		cancel()
		if err != nil {
			return errUncertain{err}
		}
		l.m.rebuilds.Inc()
		l.log.Info("rollups_rebuilt", "day", t.Format(time.DateOnly))
	}
	return nil
}
