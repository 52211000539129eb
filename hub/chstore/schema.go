package chstore

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Table names, fixed so dashboards and tests can query them (SCHEMA.md).
const (
	TableSummary        = "summary"
	TableSummaryMinute  = "summary_minute"
	TableSummaryHour    = "summary_hour"
	TableSummaryASNHour = "summary_asn_hour"
	TableSensorStats    = "sensor_stats"
	TableMigrations     = "schema_migrations"
)

// PartitionedTables are the tables partitioned by day (toYYYYMMDD of their
// time column); retention drops their old partitions.
var PartitionedTables = []string{
	TableSummary, TableSummaryMinute, TableSummaryHour, TableSummaryASNHour, TableSensorStats,
}

// migration is one numbered schema step. Every statement is idempotent
// (IF NOT EXISTS), because ClickHouse DDL is not transactional: a run that
// stopped half-way is simply run again.
type migration struct {
	version int
	name    string
	stmts   []string
}

// summaryColumns lists summary's columns in insert order. The loader names
// them in its INSERT.
var summaryColumns = []string{
	"bin_start", "sensor_id", "sensor_country", "src_ip", "src_country", "src_asn", "src_label",
	"protocol", "dst_port", "icmp_type", "icmp_code", "class", "packets", "bytes", "dst_ips",
	"first_seen", "last_seen", "ttl_min", "ttl_max", "distinct_ports", "overflow", "fragments",
	"fp_mirai", "fp_zmap", "fp_masscan", "raft_index", "seq",
}

// statsColumns lists sensor_stats's columns in insert order.
var statsColumns = []string{
	"bin_start", "sensor_id", "sensor_country", "bin_seconds", "rows",
	"packets_seen", "outside_darknet", "kernel_drops", "decode_errors", "fragments", "non_ip",
	"overflow_rows", "shed_batches", "shed_rows", "packets_summarised", "geo_db_version",
	"raft_index", "seq",
}

// rollupSelect is the SELECT of each rollup view, by target table; {{db}} is
// replaced by the quoted database. RebuildRollups reuses it with a WHERE.
var rollupSelect = map[string]string{
	TableSummaryMinute: `SELECT toStartOfMinute(bin_start) AS t, sensor_id, src_country, protocol, dst_port, class,
  sum(packets) AS packets, sum(bytes) AS bytes,
  sum(fp_mirai) AS fp_mirai, sum(fp_zmap) AS fp_zmap, sum(fp_masscan) AS fp_masscan,
  uniqState(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, sensor_id, src_country, protocol, dst_port, class`,
	TableSummaryHour: `SELECT toStartOfHour(bin_start) AS t, sensor_id, src_country, protocol, dst_port, class,
  sum(packets) AS packets, sum(bytes) AS bytes,
  sum(fp_mirai) AS fp_mirai, sum(fp_zmap) AS fp_zmap, sum(fp_masscan) AS fp_masscan,
  uniqState(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, sensor_id, src_country, protocol, dst_port, class`,
	TableSummaryASNHour: `SELECT toStartOfHour(bin_start) AS t, src_asn, src_country,
  sum(packets) AS packets, sum(bytes) AS bytes,
  uniqState(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, src_asn, src_country`,
}

func viewSelect(table, where string) string { return fmt.Sprintf(rollupSelect[table], where) }

const rollupColumns = `(
  t DateTime('UTC'),
  sensor_id String,
  src_country String,
  protocol UInt8,
  dst_port UInt16,
  class String,
  packets UInt64,
  bytes UInt64,
  fp_mirai UInt64,
  fp_zmap UInt64,
  fp_masscan UInt64,
  sources AggregateFunction(uniq, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, sensor_id, src_country, protocol, dst_port, class)`

// migrations is the ordered schema history. Never edit an applied step:
// append a new one.
var migrations = []migration{
	{1, "summary, sensor_stats, minute/hour/asn rollups", []string{
		`CREATE TABLE IF NOT EXISTS {{db}}.summary (
  bin_start DateTime('UTC'),
  sensor_id String,
  sensor_country String,
  src_ip String,
  src_country String,
  src_asn UInt32,
  src_label UInt8,
  protocol UInt8,
  dst_port UInt16,
  icmp_type UInt8,
  icmp_code UInt8,
  class String,
  packets UInt64,
  bytes UInt64,
  dst_ips UInt32,
  first_seen DateTime('UTC'),
  last_seen DateTime('UTC'),
  ttl_min UInt8,
  ttl_max UInt8,
  distinct_ports UInt32,
  overflow UInt8,
  fragments UInt32,
  fp_mirai UInt64,
  fp_zmap UInt64,
  fp_masscan UInt64,
  raft_index UInt64,
  seq UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(bin_start)
ORDER BY (bin_start, protocol, dst_port, src_ip)`,
		`CREATE TABLE IF NOT EXISTS {{db}}.sensor_stats (
  bin_start DateTime('UTC'),
  sensor_id String,
  sensor_country String,
  bin_seconds UInt32,
  rows UInt32,
  packets_seen UInt64,
  outside_darknet UInt64,
  kernel_drops UInt64,
  decode_errors UInt64,
  fragments UInt64,
  non_ip UInt64,
  overflow_rows UInt64,
  shed_batches UInt64,
  shed_rows UInt64,
  packets_summarised UInt64,
  geo_db_version String,
  raft_index UInt64,
  seq UInt64
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(bin_start)
ORDER BY (bin_start, sensor_id, raft_index)`,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_minute ` + rollupColumns,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_hour ` + rollupColumns,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_asn_hour (
  t DateTime('UTC'),
  src_asn UInt32,
  src_country String,
  packets UInt64,
  bytes UInt64,
  sources AggregateFunction(uniq, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, src_asn, src_country)`,
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_minute_mv TO {{db}}.summary_minute AS ` + viewSelect(TableSummaryMinute, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_hour_mv TO {{db}}.summary_hour AS ` + viewSelect(TableSummaryHour, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_asn_hour_mv TO {{db}}.summary_asn_hour AS ` + viewSelect(TableSummaryASNHour, ""),
	}},
}

// SchemaVersion is the version Migrate brings a database to.
func SchemaVersion() int { return migrations[len(migrations)-1].version }

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,63}$`)

// ValidDatabase reports whether name is a plain identifier usable as a
// database name without quoting surprises.
func ValidDatabase(name string) bool { return identRE.MatchString(name) }

func quoteDB(db string) string { return "`" + db + "`" }

func render(stmt, db string) string { return strings.ReplaceAll(stmt, "{{db}}", quoteDB(db)) }

// Migrate creates database db if needed and applies, in order, every
// migration not yet recorded in db.schema_migrations. It returns how many it
// applied: a second run returns 0. Statements are idempotent, so a run cut
// short (or two hubs migrating at once) is repaired by running it again.
func Migrate(ctx context.Context, conn driver.Conn, db string) (applied int, err error) {
	if !ValidDatabase(db) {
		return 0, fmt.Errorf("migrate: invalid database name %q", db)
	}
	if err := conn.Exec(ctx, "CREATE DATABASE IF NOT EXISTS "+quoteDB(db)); err != nil {
		return 0, fmt.Errorf("migrate: create database %s: %w", db, err)
	}
	if err := conn.Exec(ctx, render(`CREATE TABLE IF NOT EXISTS {{db}}.schema_migrations (
  version UInt32,
  name String,
  applied_at DateTime('UTC')
) ENGINE = MergeTree ORDER BY version`, db)); err != nil {
		return 0, fmt.Errorf("migrate: create schema_migrations: %w", err)
	}
	done, err := appliedVersions(ctx, conn, db)
	if err != nil {
		return 0, err
	}
	for _, m := range migrations {
		if done[m.version] {
			continue
		}
		for i, s := range m.stmts {
			if err := conn.Exec(ctx, render(s, db)); err != nil {
				return applied, fmt.Errorf("migrate: version %d statement %d: %w", m.version, i+1, err)
			}
		}
		// INSERT ... VALUES through Exec hangs on 18.16 (the server waits
		// for data blocks): every insert goes through a batch.
		b, err := conn.PrepareBatch(ctx, render(`INSERT INTO {{db}}.schema_migrations (version, name, applied_at)`, db))
		if err == nil {
			err = b.Append(uint32(m.version), m.name, time.Now().UTC().Truncate(time.Second))
			if err == nil {
				err = b.Send()
			} else {
				_ = b.Abort()
			}
		}
		if err != nil {
			return applied, fmt.Errorf("migrate: record version %d: %w", m.version, err)
		}
		applied++
	}
	return applied, nil
}

// AppliedVersion returns the highest migration version recorded in db (0 for
// none).
func AppliedVersion(ctx context.Context, conn driver.Conn, db string) (int, error) {
	done, err := appliedVersions(ctx, conn, db)
	if err != nil {
		return 0, err
	}
	v := 0
	for k := range done {
		v = max(v, k)
	}
	return v, nil
}

func appliedVersions(ctx context.Context, conn driver.Conn, db string) (map[int]bool, error) {
	if !ValidDatabase(db) {
		return nil, fmt.Errorf("invalid database name %q", db)
	}
	rows, err := conn.Query(ctx, render(`SELECT DISTINCT version FROM {{db}}.schema_migrations`, db))
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v uint32
		if err := rows.Scan(&v); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		done[int(v)] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	return done, nil
}

// RebuildRollups recomputes the rollup tables' partition for one UTC day
// from the raw summary table: it drops the day's partition from each rollup
// and inserts it again from summary. Use it after a server crash left a
// batch in summary but not in the rollups (see the package doc). Data loaded
// for that day while it runs may be counted twice in the rollups: run it
// for a day no longer being loaded, or with the loader stopped.
func RebuildRollups(ctx context.Context, conn driver.Conn, db string, day time.Time) error {
	if !ValidDatabase(db) {
		return fmt.Errorf("rebuild rollups: invalid database name %q", db)
	}
	id := day.UTC().Format("20060102")
	where := "WHERE toYYYYMMDD(bin_start) = " + id
	cols := map[string]string{
		TableSummaryMinute:  "t, sensor_id, src_country, protocol, dst_port, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
		TableSummaryHour:    "t, sensor_id, src_country, protocol, dst_port, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
		TableSummaryASNHour: "t, src_asn, src_country, packets, bytes, sources",
	}
	for _, table := range []string{TableSummaryMinute, TableSummaryHour, TableSummaryASNHour} {
		if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION ID '%s'", quoteDB(db), table, id)); err != nil {
			return fmt.Errorf("rebuild rollups: drop %s partition %s: %w", table, id, err)
		}
		q := fmt.Sprintf("INSERT INTO %s.%s (%s) %s", quoteDB(db), table, cols[table], render(viewSelect(table, where), db))
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("rebuild rollups: fill %s for %s: %w", table, id, err)
		}
	}
	return nil
}
