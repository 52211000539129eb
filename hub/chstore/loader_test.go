package chstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func TestLoaderLoadsEveryBatchOnce(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(1, 2))
	mlog := &memLog{perEntry: 3} // several sensor batches per raft entry
	mlog.append(genBatches(r, 60, 300, 1)...)
	src := &memSource{log: mlog, leader: true}
	l := newTestLoader(t, testConfig(db), src, conn)
	waitLoaded(t, mlog, time.Minute)
	// More batches while running.
	mlog.append(genBatches(r, 40, 300, 1000)...)
	l.Notify()
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
	// One check after start, which finds nothing; more only after errors
	// (a slow machine can time an insert out).
	errs := 0.0
	for _, stage := range []string{"check", "rebuild", "insert", "mark"} {
		errs += testutil.ToFloat64(l.m.errors.WithLabelValues(stage))
	}
	if n := testutil.ToFloat64(l.m.checks); n < 1 || (errs == 0 && n != 1) {
		t.Errorf("%v presence checks after %v errors, want 1 when no error", n, errs)
	}
	if got := l.Status().LoadedIndex; got != mlog.last() {
		t.Errorf("status loaded index %d, want %d", got, mlog.last())
	}

	// Column contents of one row survive the trip.
	cb := mlog.batches[0]
	var (
		srcIP, country, class, sensor string
		asn                           uint32
		port                          uint16
		packets, mirai, seq           uint64
		first, bin                    time.Time
	)
	ctx := context.Background()
	err := conn.QueryRow(ctx, "SELECT src_ip, src_country, class, sensor_id, src_asn, dst_port, packets, fp_mirai, seq, first_seen, bin_start FROM "+db+
		".summary WHERE raft_index = ? AND seq = ? AND dst_port = ? AND src_ip = ? LIMIT 1",
		cb.RaftIndex, cb.Batch.Sequence, uint16(cb.Batch.Rows.DstPort[0]), ipString(cb.Batch.Rows.SrcIp[0])).
		Scan(&srcIP, &country, &class, &sensor, &asn, &port, &packets, &mirai, &seq, &first, &bin)
	if err != nil {
		t.Fatal(err)
	}
	wantFirst := time.Unix(cb.Batch.BinStart, 0).Add(time.Duration(cb.Batch.Rows.FirstSeenMs[0]) * time.Millisecond).Truncate(time.Second)
	if country != cb.Enrichment.SrcCountry[0] || class != "tcp_syn" || sensor != cb.SensorId || asn != cb.Enrichment.SrcAsn[0] ||
		packets != cb.Batch.Rows.Packets[0] || mirai != cb.Batch.Rows.Fingerprints[0].Packets[0] || seq != cb.Batch.Sequence ||
		!first.Equal(wantFirst) || bin.Unix() != cb.Batch.BinStart {
		t.Errorf("row 0 came back as %s %s %s %s %d %d %d %d %d %v %v", srcIP, country, class, sensor, asn, port, packets, mirai, seq, first, bin)
	}
}

func ipString(b []byte) string {
	sb := summaryBlock{}
	sb.add(&jasperv1.CommittedBatch{Batch: &jasperv1.Batch{Rows: &jasperv1.Rows{SrcIp: [][]byte{b}}}})
	return sb.columns()[3].([]string)[0]
}

// A loader that dies after its inserts but before the raft mark: the next
// loader (a restart, or another hub) finds the batches in ClickHouse and
// does not insert them again. Then the same with the crash between the
// summary and the sensor_stats insert.
func TestLoaderCrashBeforeMarkNoDuplicates(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(3, 4))
	mlog := &memLog{perEntry: 2}
	mlog.append(genBatches(r, 50, 200, 1)...)
	src := &memSource{log: mlog, leader: true}

	crashed := make(chan uint64, 1)
	mlog.markHook = func(ctx context.Context, through uint64) error {
		select {
		case crashed <- through:
		default:
		}
		<-ctx.Done() // the process "dies" here: the mark never applies
		return ctx.Err()
	}
	l1, err := NewLoader(testConfig(db), src, conn, promRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var through uint64
	select {
	case through = <-crashed:
	case <-time.After(time.Minute):
		t.Fatal("loader never reached MarkLoaded")
	}
	stopLoader(t, l1)
	if mlog.loadedThrough() != 0 {
		t.Fatalf("mark applied through %d despite the crash", mlog.loadedThrough())
	}
	var inCH uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".sensor_stats").Scan(&inCH); err != nil {
		t.Fatal(err)
	}
	if want := mlog.batchesThrough(through); inCH == 0 || inCH != want {
		t.Fatalf("after the crash sensor_stats holds %d batches, want the %d inserted before the mark", inCH, want)
	}

	mlog.mu.Lock()
	mlog.markHook = nil
	mlog.mu.Unlock()
	l2 := newTestLoader(t, testConfig(db), src, conn)
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
	if n, want := testutil.ToFloat64(l2.m.skipped.WithLabelValues(TableSensorStats)), mlog.batchesThrough(through); n < float64(want) {
		t.Errorf("restarted loader skipped %v batches in sensor_stats, want at least the %d inserted before the crash", n, want)
	}
	if n := testutil.ToFloat64(l2.m.rebuilds); n == 0 {
		t.Error("restarted loader found batches in summary but rebuilt no rollups")
	}
	stopLoader(t, l2)

	// Crash between the two tables: summary holds the new batches,
	// sensor_stats does not. Model it by loading, then truncating
	// sensor_stats and rolling the mark back.
	mlog.append(genBatches(r, 20, 200, 5000)...)
	l3 := newTestLoader(t, testConfig(db), src, conn)
	waitLoaded(t, mlog, time.Minute)
	stopLoader(t, l3)
	if err := conn.Exec(context.Background(), "TRUNCATE TABLE "+db+".sensor_stats"); err != nil {
		t.Fatal(err)
	}
	mlog.mu.Lock()
	mlog.loaded = 0
	mlog.mu.Unlock()
	l4 := newTestLoader(t, testConfig(db), src, conn)
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
	if n := testutil.ToFloat64(l4.m.rows); n != 0 {
		t.Errorf("loader re-inserted %v summary rows that were already present", n)
	}
}

// Leadership moves between two hubs while batches keep committing; the new
// leader's loader starts from the replicated mark, which may lag its
// predecessor's inserts.
func TestLoaderLeaderChange(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(5, 6))
	mlog := &memLog{}
	a := &memSource{log: mlog, leader: true}
	b := &memSource{log: mlog}
	la := newTestLoader(t, testConfig(db), a, conn)
	lb := newTestLoader(t, testConfig(db), b, conn)
	for round := range 4 {
		mlog.append(genBatches(r, 30, 200, uint64(round*1000))...)
		waitLoaded(t, mlog, time.Minute)
		// Hand over: the old leader loses leadership just as more batches
		// commit; the mark of its last load may not have applied.
		mlog.append(genBatches(r, 10, 200, uint64(round*1000+500))...)
		old, next := a, b
		if round%2 == 1 {
			old, next = b, a
		}
		old.setLeader(false)
		next.setLeader(true)
	}
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
	if n := mlog.batchesThrough(mlog.last()); testutil.ToFloat64(la.m.batches)+testutil.ToFloat64(lb.m.batches) < float64(n) {
		t.Errorf("loaders loaded %v + %v batches, fewer than the %d committed", testutil.ToFloat64(la.m.batches), testutil.ToFloat64(lb.m.batches), n)
	}
}

// ClickHouse is stopped, then killed, while batches keep committing: the
// loader retries, then catches up with every batch exactly once.
func TestLoaderClickHouseDownAndBack(t *testing.T) {
	srv := chstoretest.StartServer(t)
	conn, db := chstoretest.NewDatabaseAt(t, srv.Addr())
	r := rand.New(rand.NewPCG(7, 8))
	mlog := &memLog{perEntry: 4}
	src := &memSource{log: mlog, leader: true}
	l := newTestLoader(t, testConfig(db), src, conn)
	mlog.append(genBatches(r, 30, 300, 1)...)
	waitLoaded(t, mlog, time.Minute)

	feed := func(n int, seq uint64) {
		for i := range n {
			mlog.append(genBatches(r, 3, 300, seq+uint64(i*3))...)
			time.Sleep(10 * time.Millisecond)
		}
	}
	for _, mode := range []string{"stop", "kill"} {
		errsBefore := testutil.ToFloat64(l.m.errors.WithLabelValues("insert")) + testutil.ToFloat64(l.m.errors.WithLabelValues("check"))
		done := make(chan struct{})
		go func() { defer close(done); feed(40, 10000) }()
		time.Sleep(100 * time.Millisecond) // inserts under way
		if mode == "stop" {
			srv.Stop()
		} else {
			srv.Kill()
		}
		<-done
		// Batches committed while the server is down stay pending.
		feed(5, 20000)
		deadline := time.Now().Add(30 * time.Second)
		for testutil.ToFloat64(l.m.errors.WithLabelValues("insert"))+testutil.ToFloat64(l.m.errors.WithLabelValues("check")) == errsBefore {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no insert error while ClickHouse was down", mode)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if mlog.loadedThrough() >= mlog.last() {
			t.Fatalf("%s: everything marked loaded while ClickHouse was down", mode)
		}
		if l.Status().LastError == "" {
			t.Errorf("%s: status shows no error", mode)
		}
		srv.Start()
		waitLoaded(t, mlog, 2*time.Minute)
		verifyExact(t, conn, db, mlog)
		t.Logf("%s: %v presence checks, %v rollup rebuilds so far", mode, testutil.ToFloat64(l.m.checks), testutil.ToFloat64(l.m.rebuilds))
	}
}

func TestSplitGroups(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	var bs []*jasperv1.CommittedBatch
	for i, n := range []int{10, 10, 10, 25, 0, 5, 30, 1} {
		bs = append(bs, genBatch(r, "s", int64(i)*86400, uint64(i), n))
	}
	groups := splitGroups(bs, 20)
	var sizes [][]int
	total := 0
	for _, g := range groups {
		var s []int
		rows := 0
		for _, cb := range g {
			s = append(s, batchRows(cb))
			rows += batchRows(cb)
			total++
		}
		if rows > 20 && len(g) > 1 {
			t.Errorf("group %v has %d rows > 20 with more than one batch", s, rows)
		}
		sizes = append(sizes, s)
	}
	if total != len(bs) {
		t.Fatalf("groups hold %d batches, want %d", total, len(bs))
	}
	want := "[[10 10] [10] [25] [0 5] [30] [1]]"
	if got := fmt.Sprint(sizes); got != want {
		t.Errorf("groups %s, want %s", got, want)
	}
	// Many days: at most maxDaysPerInsert per group.
	bs = bs[:0]
	for i := range 120 {
		bs = append(bs, genBatch(r, "s", int64(i)*86400, uint64(i), 1))
	}
	for _, g := range splitGroups(bs, 1000) {
		if len(g) > maxDaysPerInsert {
			t.Errorf("group spans %d days", len(g))
		}
	}
}

func TestCheckRowsRefusesMismatch(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	cb := genBatch(r, "s", 0, 1, 3)
	if err := checkRows(cb.Batch.Rows); err != nil {
		t.Fatalf("valid rows refused: %v", err)
	}
	cb.Batch.Rows.Packets = cb.Batch.Rows.Packets[:2]
	if err := checkRows(cb.Batch.Rows); err == nil {
		t.Error("short packets column accepted")
	}
	cb = genBatch(r, "s", 0, 1, 3)
	cb.Batch.Rows.SrcIp[1] = []byte{1, 2, 3}
	if err := checkRows(cb.Batch.Rows); err == nil {
		t.Error("3-byte address accepted")
	}
	cb = genBatch(r, "s", 0, 1, 3)
	cb.Batch.Rows.Fragments = nil // an omitted column reads as zeros
	if err := checkRows(cb.Batch.Rows); err != nil {
		t.Errorf("omitted column refused: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		key string
		mod func(*Config)
	}{
		{"clickhouse.addr", func(c *Config) { c.Addr = "nohost" }},
		{"clickhouse.database", func(c *Config) { c.Database = "a-b" }},
		{"clickhouse.max_rows_per_insert", func(c *Config) { c.MaxRowsPerInsert = MaxInsertRows + 1 }},
		{"clickhouse.leader_settle", func(c *Config) { c.LeaderSettle = c.InsertTimeout - 1 }},
		{"clickhouse.retention_days", func(c *Config) { c.RetentionDays = -1 }},
	} {
		c := DefaultConfig()
		tc.mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%s: Validate() = %v, want an error naming it", tc.key, err)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("defaults invalid: %v", err)
	}
	if s := Secret("hunter2").String(); s == "hunter2" {
		t.Error("secret printed in clear")
	}
}

// The leader's loader applies retention: old days go from every table,
// recent ones stay.
func TestLoaderRetention(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(11, 12))
	today := time.Now().UTC().Truncate(24 * time.Hour)
	mlog := &memLog{}
	mlog.append(
		genBatch(r, "s1", today.AddDate(0, 0, -10).Unix(), 1, 20),
		genBatch(r, "s1", today.AddDate(0, 0, -1).Unix(), 2, 20),
		genBatch(r, "s1", today.Unix(), 3, 20),
	)
	src := &memSource{log: mlog, leader: true}
	cfg := testConfig(db)
	cfg.RetentionDays = 2
	cfg.RetentionInterval = config.Duration(50 * time.Millisecond)
	l := newTestLoader(t, cfg, src, conn)
	waitLoaded(t, mlog, time.Minute)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var days uint64
		var oldest time.Time
		if err := conn.QueryRow(context.Background(), "SELECT uniqExact(toDate(bin_start)), min(bin_start) FROM "+db+".summary").Scan(&days, &oldest); err != nil {
			t.Fatal(err)
		}
		dropped := testutil.ToFloat64(l.m.droppedParts)
		if days == 2 && oldest.Equal(today.AddDate(0, 0, -1)) && dropped == float64(len(PartitionedTables)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("summary holds %d days from %v, %v partitions dropped; want 2 days from %v, %d partitions (one day of every partitioned table)",
				days, oldest, dropped, today.AddDate(0, 0, -1), len(PartitionedTables))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// deposingSource loses leadership right after answering Pending, as a
// leader cut off from its quorum would.
type deposingSource struct{ *memSource }

func (s deposingSource) Pending(after uint64, maxRows int) []*jasperv1.CommittedBatch {
	out := s.memSource.Pending(after, maxRows)
	if len(out) > 0 {
		s.setLeader(false)
	}
	return out
}

// A loader that loses leadership between reading the pending batches and
// inserting them inserts nothing: a new leader's check must not race it.
func TestLoaderDeposedInsertsNothing(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(13, 14))
	mlog := &memLog{}
	mlog.append(genBatches(r, 10, 100, 1)...)
	src := deposingSource{&memSource{log: mlog, leader: true}}
	l := newTestLoader(t, testConfig(db), src, conn)
	deadline := time.Now().Add(time.Minute)
	for testutil.ToFloat64(l.m.errors.WithLabelValues("leader")) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("loader never noticed it lost leadership")
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopLoader(t, l)
	var n uint64
	if err := conn.QueryRow(context.Background(), "SELECT count() FROM "+db+".sensor_stats").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 || mlog.loadedThrough() != 0 {
		t.Fatalf("deposed loader inserted %d batches, marked through %d", n, mlog.loadedThrough())
	}
	// Leadership back: everything loads.
	newTestLoader(t, testConfig(db), &memSource{log: mlog, leader: true}, conn)
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
}

// The presence check names each batch's bin_start, or a range of them past
// 1000 distinct bins; both find exactly what is loaded.
func TestPresentBinsListAndRange(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	r := rand.New(rand.NewPCG(15, 16))
	mlog := &memLog{}
	base := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC).Unix()
	for i := range 1100 {
		mlog.append(genBatch(r, "s1", base+int64(i)*60, uint64(i+1), i%2))
	}
	src := &memSource{log: mlog, leader: true}
	cfg := testConfig(db)
	l := newTestLoader(t, cfg, src, conn)
	waitLoaded(t, mlog, time.Minute)
	verifyExact(t, conn, db, mlog)
	for _, n := range []int{10, 1100} {
		group := mlog.batches[:n]
		inSummary, inStats, err := l.present(context.Background(), group)
		if err != nil {
			t.Fatal(err)
		}
		if len(inStats) != n || len(inSummary) != n/2 {
			t.Errorf("%d bins: present in stats %d, in summary %d; want %d and %d", n, len(inStats), len(inSummary), n, n/2)
		}
	}
	// Unloaded indexes are not reported.
	extra := []*jasperv1.CommittedBatch{genBatch(r, "s1", base, 1, 3)}
	extra[0].RaftIndex = 5000
	if s, st, err := l.present(context.Background(), extra); err != nil || len(s)+len(st) != 0 {
		t.Errorf("unloaded batch reported present: %v %v %v", s, st, err)
	}
}

func TestCheckOrder(t *testing.T) {
	mk := func(idx ...uint64) []*jasperv1.CommittedBatch {
		var out []*jasperv1.CommittedBatch
		for j, i := range idx {
			seq := uint64(j)
			if j > 0 && i == idx[j-1] && i == 5 {
				seq = uint64(j - 1) // {5, 5}: the same batch twice
			}
			out = append(out, &jasperv1.CommittedBatch{RaftIndex: i, Batch: &jasperv1.Batch{Sequence: seq}})
		}
		return out
	}
	for _, tc := range []struct {
		idx   []uint64
		after uint64
		ok    bool
	}{
		{[]uint64{5, 6, 9}, 4, true},
		{nil, 4, true},
		{[]uint64{4, 6}, 4, false},
		{[]uint64{5, 5}, 0, false}, // the same batch twice
		{[]uint64{5, 6, 6}, 0, true},
		{[]uint64{7, 6}, 0, false},
	} {
		_, err := checkOrder(mk(tc.idx...), tc.after)
		if (err == nil) != tc.ok {
			t.Errorf("checkOrder(%v, %d) = %v, want ok %v", tc.idx, tc.after, err, tc.ok)
		}
	}
}
