package chstore

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// memLog is an in-memory stand-in for the raft store: committed batches in
// index order and the replicated "loaded through" mark. Like hub/store, it
// may put several sensor batches in one raft entry (same index), and
// indexes have gaps (other entry types).
type memLog struct {
	mu      sync.Mutex
	batches []*jasperv1.CommittedBatch
	index   uint64
	loaded  uint64
	marks   int
	// perEntry, when above 1, packs up to that many batches into one raft
	// entry in append.
	perEntry int
	// markHook, when set, runs inside MarkLoaded before the mark applies;
	// an error from it fails the mark.
	markHook func(ctx context.Context, through uint64) error
}

func (m *memLog) append(cbs ...*jasperv1.CommittedBatch) {
	m.mu.Lock()
	defer m.mu.Unlock()
	per := max(1, m.perEntry)
	for i, cb := range cbs {
		if i%per == 0 {
			m.index += 2 // a tick or other command between batches
		}
		cb.RaftIndex = m.index
		m.batches = append(m.batches, cb)
	}
}

func (m *memLog) last() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.batches) == 0 {
		return 0
	}
	return m.batches[len(m.batches)-1].RaftIndex
}

// batchesThrough counts the batches with a raft index up to idx.
func (m *memLog) batchesThrough(idx uint64) uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := uint64(0)
	for _, cb := range m.batches {
		if cb.RaftIndex <= idx {
			n++
		}
	}
	return n
}

func (m *memLog) loadedThrough() uint64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.loaded
}

// memSource is one hub's view of the log: it shares the log but has its own
// leadership flag.
type memSource struct {
	log    *memLog
	mu     sync.Mutex
	leader bool
}

func (s *memSource) setLeader(v bool) {
	s.mu.Lock()
	s.leader = v
	s.mu.Unlock()
}

func (s *memSource) IsLeader() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.leader
}

func (s *memSource) Pending(after uint64, maxRows int) []*jasperv1.CommittedBatch {
	m := s.log
	m.mu.Lock()
	defer m.mu.Unlock()
	from := max(after, m.loaded)
	i := sort.Search(len(m.batches), func(i int) bool { return m.batches[i].RaftIndex > from })
	var out []*jasperv1.CommittedBatch
	rows := 0
	for _, cb := range m.batches[i:] {
		n := batchRows(cb)
		// Never split a raft entry between answers.
		if len(out) > 0 && rows+n > maxRows && cb.RaftIndex != out[len(out)-1].RaftIndex {
			break
		}
		out = append(out, cb)
		rows += n
	}
	return out
}

func (s *memSource) MarkLoaded(ctx context.Context, through uint64) error {
	m := s.log
	m.mu.Lock()
	hook := m.markHook
	m.mu.Unlock()
	if hook != nil {
		if err := hook(ctx, through); err != nil {
			return err
		}
	}
	if !s.IsLeader() {
		return errors.New("not leader")
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.loaded = max(m.loaded, through)
	m.marks++
	return nil
}

// genBatch makes a committed batch of n rows for sensor, bin and seq.
func genBatch(r *rand.Rand, sensor string, bin int64, seq uint64, n int) *jasperv1.CommittedBatch {
	rows := &jasperv1.Rows{}
	enr := &jasperv1.Enrichment{GeoDbVersion: "2026-11-01"}
	mirai := make([]uint64, n)
	for i := range n {
		ip := []byte{198, 51, byte(r.IntN(4)), byte(r.IntN(256))}
		if r.IntN(10) == 0 {
			ip = []byte{0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, byte(r.IntN(256))}
		}
		rows.SrcIp = append(rows.SrcIp, ip)
		rows.Protocol = append(rows.Protocol, 6)
		rows.DstPort = append(rows.DstPort, uint32(r.IntN(65536)))
		rows.IcmpType = append(rows.IcmpType, 0)
		rows.IcmpCode = append(rows.IcmpCode, 0)
		rows.Class = append(rows.Class, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN)
		p := uint64(1 + r.IntN(100))
		rows.Packets = append(rows.Packets, p)
		rows.Bytes = append(rows.Bytes, p*60)
		rows.DstIps = append(rows.DstIps, uint32(1+r.IntN(50)))
		rows.FirstSeenMs = append(rows.FirstSeenMs, uint32(r.IntN(30000)))
		rows.LastSeenMs = append(rows.LastSeenMs, uint32(30000+r.IntN(30000)))
		rows.TtlMin = append(rows.TtlMin, 40)
		rows.TtlMax = append(rows.TtlMax, 64)
		rows.DistinctPorts = append(rows.DistinctPorts, 1)
		rows.Overflow = append(rows.Overflow, false)
		rows.Fragments = append(rows.Fragments, 0)
		if r.IntN(3) == 0 {
			mirai[i] = p
		}
		enr.SrcCountry = append(enr.SrcCountry, []string{"JP", "US", "BR", ""}[r.IntN(4)])
		enr.SrcAsn = append(enr.SrcAsn, uint32(64500+r.IntN(10)))
		enr.SrcLabel = append(enr.SrcLabel, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE)
	}
	rows.Fingerprints = []*jasperv1.FingerprintColumn{{Name: "mirai", Packets: mirai}}
	return &jasperv1.CommittedBatch{
		SensorId:      sensor,
		SensorCountry: "JP",
		Batch: &jasperv1.Batch{
			Sequence:   seq,
			BinStart:   bin,
			BinSeconds: 60,
			Stats:      &jasperv1.SensorStats{PacketsSeen: uint64(10 * n), PacketsSummarised: uint64(n)},
			Rows:       rows,
		},
		Enrichment:   enr,
		ReceivedAtMs: time.Now().UnixMilli(),
	}
}

// genBatches makes k batches from two sensors over bins that span two UTC
// days, with some batches empty.
func genBatches(r *rand.Rand, k, maxRows int, seqBase uint64) []*jasperv1.CommittedBatch {
	base := time.Date(2026, 11, 24, 23, 30, 0, 0, time.UTC).Unix()
	var out []*jasperv1.CommittedBatch
	for i := range k {
		n := r.IntN(maxRows + 1)
		if i%7 == 3 {
			n = 0
		}
		bin := base + int64(i%90)*60
		out = append(out, genBatch(r, fmt.Sprintf("s%d", i%2), bin, seqBase+uint64(i), n))
	}
	return out
}

func testConfig(db string) Config {
	cfg := DefaultConfig()
	cfg.Database = db
	cfg.MaxRowsPerInsert = 2000
	cfg.PollInterval = config.Duration(20 * time.Millisecond)
	cfg.RetryMin = config.Duration(50 * time.Millisecond)
	cfg.RetryMax = config.Duration(500 * time.Millisecond)
	cfg.InsertTimeout = config.Duration(4 * time.Second)
	cfg.LeaderSettle = config.Duration(5 * time.Second)
	return cfg
}

func newTestLoader(t *testing.T, cfg Config, src Source, conn driver.Conn) *Loader {
	t.Helper()
	l, err := NewLoader(cfg, src, conn, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stopLoader(t, l) })
	return l
}

func stopLoader(t *testing.T, l *Loader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := l.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

// waitLoaded waits (bounded) until the log is marked loaded through its
// last batch.
func waitLoaded(t *testing.T, m *memLog, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for m.loadedThrough() < m.last() {
		if time.Now().After(deadline) {
			t.Fatalf("loaded through %d of %d after %s", m.loadedThrough(), m.last(), within)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// verifyExact checks that ClickHouse holds every batch of m exactly once:
// per batch (raft index, sensor, seq), summary has exactly the batch's rows
// and sensor_stats one row; packet sums match.
func verifyExact(t *testing.T, conn driver.Conn, db string, m *memLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m.mu.Lock()
	wantRows := map[batchKey]uint64{}
	var all []batchKey
	var wantPackets, wantTotal uint64
	for _, cb := range m.batches {
		all = append(all, keyOf(cb))
		if n := batchRows(cb); n > 0 {
			wantRows[keyOf(cb)] = uint64(n)
			wantTotal += uint64(n)
		}
		for _, p := range cb.Batch.Rows.GetPackets() {
			wantPackets += p
		}
	}
	m.mu.Unlock()

	counts := func(q string) map[batchKey]uint64 {
		t.Helper()
		rows, err := conn.Query(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		got := map[batchKey]uint64{}
		for rows.Next() {
			var k batchKey
			var n uint64
			if err := rows.Scan(&k.raftIndex, &k.sensorID, &k.seq, &n); err != nil {
				t.Fatal(err)
			}
			got[k] = n
		}
		return got
	}
	gotRows := counts("SELECT raft_index, sensor_id, seq, count() FROM " + db + ".summary GROUP BY raft_index, sensor_id, seq")
	bad := 0
	for k, n := range wantRows {
		if gotRows[k] != n && bad < 10 {
			t.Errorf("summary batch %+v: %d rows, want %d", k, gotRows[k], n)
			bad++
		}
	}
	if len(gotRows) != len(wantRows) {
		t.Errorf("summary holds %d batches, want %d", len(gotRows), len(wantRows))
	}
	gotStats := counts("SELECT raft_index, sensor_id, seq, count() FROM " + db + ".sensor_stats GROUP BY raft_index, sensor_id, seq")
	for _, k := range all {
		if gotStats[k] != 1 && bad < 20 {
			t.Errorf("sensor_stats batch %+v: %d rows, want 1", k, gotStats[k])
			bad++
		}
	}
	if len(gotStats) != len(all) {
		t.Errorf("sensor_stats holds %d batches, want %d", len(gotStats), len(all))
	}
	var total, packets, statRows, hourPackets uint64
	if err := conn.QueryRow(ctx, "SELECT count(), sum(packets) FROM "+db+".summary").Scan(&total, &packets); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(rows) FROM "+db+".sensor_stats").Scan(&statRows); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT sum(packets) FROM "+db+".summary_hour").Scan(&hourPackets); err != nil {
		t.Fatal(err)
	}
	if total != wantTotal || packets != wantPackets || statRows != wantTotal {
		t.Errorf("summary: %d rows, %d packets, sensor_stats rows %d; want %d rows, %d packets", total, packets, statRows, wantTotal, wantPackets)
	}
	if hourPackets != wantPackets {
		t.Errorf("summary_hour: %d packets, want %d", hourPackets, wantPackets)
	}
}

func promRegistry() *prometheus.Registry { return prometheus.NewRegistry() }
