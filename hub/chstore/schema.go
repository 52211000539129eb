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
	// Dashboard rollups (migration 2): few keys, uniqHLL12 source states.
	TableClassMinute = "summary_class_minute"
	TableClassHour   = "summary_class_hour"
	TableCountryHour = "summary_country_hour"
	TablePortHour    = "summary_port_hour"
	// Per-sensor dashboard rollups (migration 3).
	TableSensorClassMinute = "summary_sensor_class_minute"
	TableSensorCountryHour = "summary_sensor_country_hour"
	// summary_asn_hour sorted by ASN first (migration 4).
	TableASNHourByASN = "summary_asn_hour_by_asn"
	TableSensorStats  = "sensor_stats"
	TableMigrations   = "schema_migrations"
)

// PartitionedTables are the tables partitioned by day (toYYYYMMDD of their
// time column); retention drops their old partitions.
var PartitionedTables = []string{
	TableSummary, TableSummaryMinute, TableSummaryHour, TableSummaryASNHour, TableSensorStats,
	TableClassMinute, TableClassHour, TableCountryHour, TablePortHour,
	TableSensorClassMinute, TableSensorCountryHour, TableASNHourByASN,
}

// RollupTables are the tables filled by materialized views from summary,
// in the order RebuildRollups recomputes them.
var RollupTables = []string{
	TableSummaryMinute, TableSummaryHour, TableSummaryASNHour,
	TableClassMinute, TableClassHour, TableCountryHour, TablePortHour,
	TableSensorClassMinute, TableSensorCountryHour, TableASNHourByASN,
}

// rollupInsertColumns lists each rollup's columns in the order of its view's
// SELECT; RebuildRollups names them in its INSERT.
var rollupInsertColumns = map[string]string{
	TableSummaryMinute:     "t, sensor_id, src_country, protocol, dst_port, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
	TableSummaryHour:       "t, sensor_id, src_country, protocol, dst_port, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
	TableSummaryASNHour:    "t, src_asn, src_country, packets, bytes, sources",
	TableClassMinute:       "t, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
	TableClassHour:         "t, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
	TableCountryHour:       "t, src_country, packets, bytes, sources",
	TablePortHour:          "t, protocol, dst_port, packets, bytes, sources",
	TableSensorClassMinute: "t, sensor_id, class, packets, bytes, fp_mirai, fp_zmap, fp_masscan, sources",
	TableSensorCountryHour: "t, sensor_id, src_country, packets, bytes, sources",
	TableASNHourByASN:      "t, src_asn, src_country, packets, bytes, sources",
}

// migration is one numbered schema step. Every statement is idempotent
// (IF NOT EXISTS), because ClickHouse DDL is not transactional: a run that
// stopped half-way is simply run again. after, when set, runs once the
// statements succeeded and before the version is recorded; it must be
// idempotent too.
type migration struct {
	version int
	name    string
	stmts   []string
	after   func(ctx context.Context, conn driver.Conn, db string) error
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
	TableClassMinute: `SELECT toStartOfMinute(bin_start) AS t, class,
  sum(packets) AS packets, sum(bytes) AS bytes,
  sum(fp_mirai) AS fp_mirai, sum(fp_zmap) AS fp_zmap, sum(fp_masscan) AS fp_masscan,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, class`,
	TableClassHour: `SELECT toStartOfHour(bin_start) AS t, class,
  sum(packets) AS packets, sum(bytes) AS bytes,
  sum(fp_mirai) AS fp_mirai, sum(fp_zmap) AS fp_zmap, sum(fp_masscan) AS fp_masscan,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, class`,
	TableCountryHour: `SELECT toStartOfHour(bin_start) AS t, src_country,
  sum(packets) AS packets, sum(bytes) AS bytes,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, src_country`,
	TablePortHour: `SELECT toStartOfHour(bin_start) AS t, protocol, dst_port,
  sum(packets) AS packets, sum(bytes) AS bytes,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, protocol, dst_port`,
	TableSensorClassMinute: `SELECT toStartOfMinute(bin_start) AS t, sensor_id, class,
  sum(packets) AS packets, sum(bytes) AS bytes,
  sum(fp_mirai) AS fp_mirai, sum(fp_zmap) AS fp_zmap, sum(fp_masscan) AS fp_masscan,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, sensor_id, class`,
	TableSensorCountryHour: `SELECT toStartOfHour(bin_start) AS t, sensor_id, src_country,
  sum(packets) AS packets, sum(bytes) AS bytes,
  uniqHLL12State(src_ip) AS sources
FROM {{db}}.summary %s
GROUP BY t, sensor_id, src_country`,
	TableASNHourByASN: `SELECT toStartOfHour(bin_start) AS t, src_asn, src_country,
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
	}, nil},
	// The dashboards' questions without a sensor filter (overview by
	// class, map and top countries, top ports) read these: a day holds a
	// few thousand uniqHLL12 states instead of millions of uniq states.
	// The views are created before the backfill, so rows loaded from then
	// on reach the new tables through the views and the backfill (which
	// recomputes whole days from summary) counts every row once.
	{2, "dashboard rollups: class minute/hour, country hour, port hour (uniqHLL12)", []string{
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_class_minute ` + classColumns,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_class_hour ` + classColumns,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_country_hour (
  t DateTime('UTC'),
  src_country String,
  packets UInt64,
  bytes UInt64,
  sources AggregateFunction(uniqHLL12, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, src_country)`,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_port_hour (
  t DateTime('UTC'),
  protocol UInt8,
  dst_port UInt16,
  packets UInt64,
  bytes UInt64,
  sources AggregateFunction(uniqHLL12, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, protocol, dst_port)`,
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_class_minute_mv TO {{db}}.summary_class_minute AS ` + viewSelect(TableClassMinute, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_class_hour_mv TO {{db}}.summary_class_hour AS ` + viewSelect(TableClassHour, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_country_hour_mv TO {{db}}.summary_country_hour AS ` + viewSelect(TableCountryHour, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_port_hour_mv TO {{db}}.summary_port_hour AS ` + viewSelect(TablePortHour, ""),
	}, func(ctx context.Context, conn driver.Conn, db string) error {
		return backfill(ctx, conn, db, []string{TableClassMinute, TableClassHour, TableCountryHour, TablePortHour})
	}},
	// One sensor's overview and map: the fine rollups were slower than raw
	// SQL for them (a sensor filter still merges ~600 K uniq states a day).
	{3, "per-sensor dashboard rollups: sensor class minute, sensor country hour (uniqHLL12)", []string{
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_sensor_class_minute (
  t DateTime('UTC'),
  sensor_id String,
  class String,
  packets UInt64,
  bytes UInt64,
  fp_mirai UInt64,
  fp_zmap UInt64,
  fp_masscan UInt64,
  sources AggregateFunction(uniqHLL12, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, sensor_id, class)`,
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_sensor_country_hour (
  t DateTime('UTC'),
  sensor_id String,
  src_country String,
  packets UInt64,
  bytes UInt64,
  sources AggregateFunction(uniqHLL12, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, sensor_id, src_country)`,
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_sensor_class_minute_mv TO {{db}}.summary_sensor_class_minute AS ` + viewSelect(TableSensorClassMinute, ""),
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_sensor_country_hour_mv TO {{db}}.summary_sensor_country_hour AS ` + viewSelect(TableSensorCountryHour, ""),
	}, func(ctx context.Context, conn driver.Conn, db string) error {
		return backfill(ctx, conn, db, []string{TableSensorClassMinute, TableSensorCountryHour})
	}},
	// The top-ASN list ranks ASNs by packets on summary_asn_hour (sorted
	// by time), then merges the sources of the listed ASNs only: from this
	// copy sorted by ASN, which reads their granules and no others.
	{4, "summary_asn_hour_by_asn: ASN-hour rollup sorted by ASN", []string{
		`CREATE TABLE IF NOT EXISTS {{db}}.summary_asn_hour_by_asn (
  t DateTime('UTC'),
  src_asn UInt32,
  src_country String,
  packets UInt64,
  bytes UInt64,
  sources AggregateFunction(uniq, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (src_asn, t, src_country)`,
		`CREATE MATERIALIZED VIEW IF NOT EXISTS {{db}}.summary_asn_hour_by_asn_mv TO {{db}}.summary_asn_hour_by_asn AS ` + viewSelect(TableASNHourByASN, ""),
	}, func(ctx context.Context, conn driver.Conn, db string) error {
		return backfill(ctx, conn, db, []string{TableASNHourByASN})
	}},
}

const classColumns = `(
  t DateTime('UTC'),
  class String,
  packets UInt64,
  bytes UInt64,
  fp_mirai UInt64,
  fp_zmap UInt64,
  fp_masscan UInt64,
  sources AggregateFunction(uniqHLL12, String)
) ENGINE = SummingMergeTree
PARTITION BY toYYYYMMDD(t)
ORDER BY (t, class)`

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
		if m.after != nil {
			if err := m.after(ctx, conn, db); err != nil {
				return applied, fmt.Errorf("migrate: version %d: %w", m.version, err)
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
// (RollupTables) and inserts it again from summary. Use it after a server
// crash left a batch in summary but not in the rollups (see the package
// doc). Data loaded for that day while it runs may be counted twice in the
// rollups: run it for a day no longer being loaded, or with the loader
// stopped.
func RebuildRollups(ctx context.Context, conn driver.Conn, db string, day time.Time) error {
	if !ValidDatabase(db) {
		return fmt.Errorf("rebuild rollups: invalid database name %q", db)
	}
	return rebuildDay(ctx, conn, db, day.UTC().Format("20060102"), RollupTables)
}

func rebuildDay(ctx context.Context, conn driver.Conn, db, id string, tables []string) error {
	where := "WHERE toYYYYMMDD(bin_start) = " + id
	for _, table := range tables {
		if err := conn.Exec(ctx, fmt.Sprintf("ALTER TABLE %s.%s DROP PARTITION ID '%s'", quoteDB(db), table, id)); err != nil {
			return fmt.Errorf("rebuild rollups: drop %s partition %s: %w", table, id, err)
		}
		q := fmt.Sprintf("INSERT INTO %s.%s (%s) %s", quoteDB(db), table, rollupInsertColumns[table], render(viewSelect(table, where), db))
		if err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("rebuild rollups: fill %s for %s: %w", table, id, err)
		}
	}
	return nil
}

// backfill recomputes tables, for every day present in summary, from
// summary: a migration adding rollups fills them for the data loaded
// before their views existed. Each day is dropped and inserted again, so a
// backfill cut short is completed by running it again.
func backfill(ctx context.Context, conn driver.Conn, db string, tables []string) error {
	rows, err := conn.Query(ctx, `SELECT DISTINCT partition_id FROM system.parts WHERE database = ? AND table = ? AND active ORDER BY partition_id`, db, TableSummary)
	if err != nil {
		return fmt.Errorf("backfill: list summary partitions: %w", err)
	}
	var days []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("backfill: list summary partitions: %w", err)
		}
		days = append(days, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("backfill: list summary partitions: %w", err)
	}
	for _, id := range days {
		if !dayIDRE.MatchString(id) {
			return fmt.Errorf("backfill: unexpected summary partition %q", id)
		}
		if err := rebuildDay(ctx, conn, db, id, tables); err != nil {
			return fmt.Errorf("backfill: %w", err)
		}
	}
	return nil
}

var dayIDRE = regexp.MustCompile(`^[0-9]{8}$`)
