package chstore

import (
	"context"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
)

func TestDropPartitionsOlderThan(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	today := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	for d := range 5 { // 11-25, 11-24, 11-23, 11-22, 11-21
		bin := today.AddDate(0, 0, -d)
		insertRow(t, conn, "INSERT INTO "+db+".summary (bin_start, src_ip, packets, raft_index)", bin, "192.0.2.1", uint64(1), uint64(d+1))
		insertRow(t, conn, "INSERT INTO "+db+".sensor_stats (bin_start, sensor_id, raft_index)", bin, "s", uint64(d+1))
	}
	if _, err := dropPartitionsBefore(ctx, conn, db, today, 0); err == nil {
		t.Fatal("days = 0 accepted")
	}
	// Keep 3 days: 11-25, 11-24, 11-23. Drop 11-22 and 11-21 from summary,
	// sensor_stats and the seven rollups: 2 days of every partitioned table.
	n, err := dropPartitionsBefore(ctx, conn, db, today.AddDate(0, 0, -3), 3)
	if err != nil {
		t.Fatal(err)
	}
	if want := 2 * len(PartitionedTables); n != want || want != 24 {
		t.Errorf("dropped %d partitions, want %d (2 days of 12 tables)", n, want)
	}
	for _, table := range PartitionedTables {
		col := "bin_start"
		if table != TableSummary && table != TableSensorStats {
			col = "t"
		}
		var days uint64
		var oldest time.Time
		if err := conn.QueryRow(ctx, "SELECT uniqExact(toDate("+col+")), min("+col+") FROM "+db+"."+table).Scan(&days, &oldest); err != nil {
			t.Fatal(err)
		}
		if days != 3 || !oldest.Equal(today.AddDate(0, 0, -2)) {
			t.Errorf("%s: %d days left, oldest %v; want 3 days from 2026-11-23", table, days, oldest)
		}
	}
	// A second run finds nothing more to drop.
	n, err = dropPartitionsBefore(ctx, conn, db, today.AddDate(0, 0, -3), 3)
	if err != nil || n != 0 {
		t.Fatalf("second run dropped %d (%v), want 0", n, err)
	}
	// The exported form uses today's date: nothing inserted here is in the
	// future of 2026-11-25 minus 10000 days.
	if n, err := DropPartitionsOlderThan(ctx, conn, db, 10000); err != nil || n != 0 {
		t.Fatalf("DropPartitionsOlderThan(10000) = %d, %v; want 0", n, err)
	}
}

// insertRow inserts one row through a batch: INSERT ... VALUES through
// Exec hangs on 18.16.
func insertRow(t *testing.T, conn driver.Conn, insert string, values ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := conn.PrepareBatch(ctx, insert)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Append(values...); err != nil {
		t.Fatal(err)
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}
