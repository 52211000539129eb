package chstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// DropPartitionsOlderThan drops, from every daily-partitioned table of db
// (PartitionedTables), each partition older than the last days days: it
// keeps today (UTC) and the days-1 days before it. With days = 30 on
// 2026-11-25, partitions up to and including 2026-10-26 go. It reads the partitions from system.parts and
// drops them with ALTER TABLE ... DROP PARTITION ID, which works on every
// ClickHouse version. It returns the number of partitions dropped. days < 1
// is refused, so a zero value never empties the store.
func DropPartitionsOlderThan(ctx context.Context, conn driver.Conn, db string, days int) (int, error) {
	return dropPartitionsBefore(ctx, conn, db, time.Now().UTC().AddDate(0, 0, -days), days)
}

func dropPartitionsBefore(ctx context.Context, conn driver.Conn, db string, cutoff time.Time, days int) (int, error) {
	if days < 1 {
		return 0, fmt.Errorf("retention: days must be at least 1, got %d", days)
	}
	if !ValidDatabase(db) {
		return 0, fmt.Errorf("retention: invalid database name %q", db)
	}
	// Partition ids of toYYYYMMDD partitions are the day as 8 digits, so
	// string order is day order.
	keep := cutoff.UTC().Format("20060102")
	rows, err := conn.Query(ctx, `SELECT DISTINCT table, partition_id FROM system.parts
WHERE database = ? AND active AND table IN ('`+strings.Join(PartitionedTables, "', '")+`') AND partition_id <= ?
ORDER BY table, partition_id`, db, keep)
	if err != nil {
		return 0, fmt.Errorf("retention: list partitions: %w", err)
	}
	type part struct{ table, id string }
	var drop []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.table, &p.id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("retention: list partitions: %w", err)
		}
		if len(p.id) == 8 && strings.Trim(p.id, "0123456789") == "" {
			drop = append(drop, p)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("retention: list partitions: %w", err)
	}
	n := 0
	for _, p := range drop {
		q := fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION ID '%s'", quoteDB(db), p.table, p.id)
		if err := conn.Exec(ctx, q); err != nil {
			return n, fmt.Errorf("retention: drop %s partition %s: %w", p.table, p.id, err)
		}
		n++
	}
	return n, nil
}
