package chstore

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/internal/config"

	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Both benchmarks load the same rows (benchBatches batches of benchBatchRows
// rows, 100,000 per iteration) into summary, views attached, on the server
// at $JASPER_TEST_CLICKHOUSE, and report rows/s.
const (
	benchBatches   = 100
	benchBatchRows = 1000
)

func benchData() []*jasperv1.CommittedBatch {
	r := rand.New(rand.NewPCG(42, 42))
	base := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC).Unix()
	var out []*jasperv1.CommittedBatch
	for i := range benchBatches {
		out = append(out, genBatch(r, "s1", base+int64(i%60)*60, uint64(i+1), benchBatchRows))
	}
	return out
}

// BenchmarkPlainInsert is the baseline: a plain clickhouse-go batch insert,
// row by row Append, one block of 100,000 rows per iteration.
func BenchmarkPlainInsert(b *testing.B) {
	conn, db := chstoretest.NewDatabase(b)
	ctx := context.Background()
	if _, err := Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	var sb summaryBlock
	for _, cb := range benchData() {
		sb.add(cb)
	}
	sb.columns()
	n := sb.len()
	// A plain program holds its times as time.Time.
	binStart, firstSeen, lastSeen := make([]time.Time, n), make([]time.Time, n), make([]time.Time, n)
	for j := range n {
		binStart[j] = time.Unix(sb.binStart[j], 0).UTC()
		firstSeen[j] = time.Unix(sb.firstSeen[j], 0).UTC()
		lastSeen[j] = time.Unix(sb.lastSeen[j], 0).UTC()
	}
	q := "INSERT INTO " + db + ".summary (" + joinNames(summaryColumns) + ")"
	b.ResetTimer()
	start, cpu0 := time.Now(), cpuTime()
	for i := 0; i < b.N; i++ {
		batch, err := conn.PrepareBatch(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		for j := range n {
			if err := batch.Append(binStart[j], sb.sensorID[j], sb.sensorCountry[j], sb.srcIP[j], sb.srcCountry[j],
				sb.srcASN[j], sb.srcLabel[j], sb.protocol[j], sb.dstPort[j], sb.icmpType[j], sb.icmpCode[j], sb.class[j],
				sb.packets[j], sb.bytes[j], sb.dstIPs[j], firstSeen[j], lastSeen[j], sb.ttlMin[j], sb.ttlMax[j],
				sb.distinctPorts[j], sb.overflow[j], sb.fragments[j], sb.fpMirai[j], sb.fpZmap[j], sb.fpMasscan[j],
				uint64(i*benchBatches+j/benchBatchRows+1), sb.seq[j]); err != nil {
				b.Fatal(err)
			}
		}
		if err := batch.Send(); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "rows/s")
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(n*b.N), "cpu_ns/row")
}

// BenchmarkLoader runs the loader over the same rows committed as 100
// batches per iteration: from committed batch to marked loaded (conversion
// from the proto columns, insert into summary and sensor_stats, mark).
func BenchmarkLoader(b *testing.B) {
	conn, db := chstoretest.NewDatabase(b)
	data := benchData()
	mlog := &memLog{}
	src := &memSource{log: mlog, leader: true}
	cfg := testConfig(db)
	cfg.MaxRowsPerInsert = benchBatches * benchBatchRows
	cfg.PollInterval = config.Duration(time.Millisecond)
	cfg.InsertTimeout = config.Duration(time.Minute)
	cfg.LeaderSettle = config.Duration(time.Minute)
	reg := promRegistry()
	l, err := NewLoader(cfg, src, conn, reg, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	l.cfg.LeaderSettle = 0 // one loader only: no previous writer to fence
	if err := l.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = l.Stop(ctx)
	}()
	// Warm up: the leader settle, the migration, the first check.
	mlog.append(proto.Clone(data[0]).(*jasperv1.CommittedBatch))
	waitLoadedB(b, mlog)
	b.ResetTimer()
	var elapsed, cpu time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		batch := make([]*jasperv1.CommittedBatch, len(data))
		for j, cb := range data {
			batch[j] = proto.Clone(cb).(*jasperv1.CommittedBatch)
		}
		b.StartTimer()
		start, cpu0 := time.Now(), cpuTime()
		mlog.append(batch...)
		l.Notify()
		waitLoadedB(b, mlog)
		elapsed += time.Since(start)
		cpu += cpuTime() - cpu0
	}
	b.ReportMetric(float64(benchBatches*benchBatchRows*b.N)/elapsed.Seconds(), "rows/s")
	// The process's CPU (the loader's side: conversion, clickhouse-go
	// encoding, the network) per row; ClickHouse's own work is in its
	// process. Steadier than rows/s on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/float64(benchBatches*benchBatchRows*b.N), "cpu_ns/row")
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "jasper_loader_insert_seconds" {
			for _, m := range mf.Metric {
				b.Logf("%v count %d sum %.3f", m.Label, m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum())
			}
		}
	}
}

func waitLoadedB(b *testing.B, m *memLog) {
	deadline := time.Now().Add(2 * time.Minute)
	for m.loadedThrough() < m.last() {
		if time.Now().After(deadline) {
			b.Fatalf("loaded through %d of %d", m.loadedThrough(), m.last())
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// BenchmarkPlainInsertColumns is a second baseline: the same rows through
// clickhouse-go's column-wise Append (what the loader uses), one block of
// 100,000 rows per iteration.
func BenchmarkPlainInsertColumns(b *testing.B) {
	conn, db := chstoretest.NewDatabase(b)
	ctx := context.Background()
	if _, err := Migrate(ctx, conn, db); err != nil {
		b.Fatal(err)
	}
	var sb summaryBlock
	for _, cb := range benchData() {
		sb.add(cb)
	}
	q := "INSERT INTO " + db + ".summary (" + joinNames(summaryColumns) + ")"
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		batch, err := conn.PrepareBatch(ctx, q)
		if err != nil {
			b.Fatal(err)
		}
		if err := sendColumns(batch, sb.columns()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(sb.len()*b.N)/time.Since(start).Seconds(), "rows/s")
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
