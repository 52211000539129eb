package chstore_test

import (
	"context"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
)

func TestMigrateTwiceAppliesNothing(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := chstore.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if n != chstore.SchemaVersion() || n == 0 {
		t.Fatalf("first run applied %d migrations, want %d", n, chstore.SchemaVersion())
	}
	n, err = chstore.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("second run applied %d migrations, want 0", n)
	}
	v, err := chstore.AppliedVersion(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if v != chstore.SchemaVersion() {
		t.Fatalf("applied version %d, want %d", v, chstore.SchemaVersion())
	}
	// Every documented table exists, with the documented engine.
	want := map[string]string{
		"summary":                        "MergeTree",
		"sensor_stats":                   "MergeTree",
		"summary_minute":                 "SummingMergeTree",
		"summary_hour":                   "SummingMergeTree",
		"summary_asn_hour":               "SummingMergeTree",
		"summary_minute_mv":              "MaterializedView",
		"summary_hour_mv":                "MaterializedView",
		"summary_asn_hour_mv":            "MaterializedView",
		"schema_migrations":              "MergeTree",
		"summary_class_minute":           "SummingMergeTree",
		"summary_class_hour":             "SummingMergeTree",
		"summary_country_hour":           "SummingMergeTree",
		"summary_port_hour":              "SummingMergeTree",
		"summary_class_minute_mv":        "MaterializedView",
		"summary_class_hour_mv":          "MaterializedView",
		"summary_country_hour_mv":        "MaterializedView",
		"summary_port_hour_mv":           "MaterializedView",
		"summary_sensor_class_minute":    "SummingMergeTree",
		"summary_sensor_country_hour":    "SummingMergeTree",
		"summary_sensor_class_minute_mv": "MaterializedView",
		"summary_sensor_country_hour_mv": "MaterializedView",
		"summary_asn_hour_by_asn":        "SummingMergeTree",
		"summary_asn_hour_by_asn_mv":     "MaterializedView",
	}
	rows, err := conn.Query(ctx, "SELECT name, engine FROM system.tables WHERE database = ?", db)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for rows.Next() {
		var name, engine string
		if err := rows.Scan(&name, &engine); err != nil {
			t.Fatal(err)
		}
		got[name] = engine
	}
	rows.Close()
	for name, engine := range want {
		if got[name] != engine {
			t.Errorf("table %s: engine %q, want %q", name, got[name], engine)
		}
	}
	if len(got) != len(want) {
		t.Errorf("tables %v, want %v", got, want)
	}
}

func TestMigrateRepairsHalfApplied(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	// A run that created the tables but died before recording the version
	// must be completed by the next run, not fail on existing tables.
	if err := conn.Exec(ctx, "TRUNCATE TABLE "+db+".schema_migrations"); err != nil {
		t.Fatal(err)
	}
	n, err := chstore.Migrate(ctx, conn, db)
	if err != nil {
		t.Fatal(err)
	}
	if n != chstore.SchemaVersion() {
		t.Fatalf("re-run applied %d, want %d", n, chstore.SchemaVersion())
	}
}

func TestMigrateRefusesBadName(t *testing.T) {
	conn, _ := chstoretest.NewDatabase(t)
	if _, err := chstore.Migrate(context.Background(), conn, "x; DROP DATABASE default"); err == nil {
		t.Fatal("Migrate accepted a database name with SQL in it")
	}
}

func TestRollupsAndRebuild(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	ins := func(bin time.Time, src string, packets uint64) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".summary (bin_start, sensor_id, src_ip, src_country, src_asn, protocol, dst_port, class, packets, bytes, fp_mirai)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(bin, "s1", src, "JP", uint32(64500), uint8(6), uint16(23), "tcp_syn", packets, packets*60, packets); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	// Several inserts: the rollup rows only merge later, so queries must
	// aggregate (sum, uniqMerge).
	ins(day.Add(10*time.Hour), "192.0.2.1", 5)
	ins(day.Add(10*time.Hour+30*time.Second), "192.0.2.2", 7)
	ins(day.Add(10*time.Hour+1*time.Minute), "192.0.2.1", 11)
	ins(day.Add(11*time.Hour), "192.0.2.3", 13)

	check := func(label string) {
		t.Helper()
		var packets, bytes, mirai, sources uint64
		if err := conn.QueryRow(ctx, "SELECT sum(packets), sum(bytes), sum(fp_mirai), uniqMerge(sources) FROM "+db+".summary_hour WHERE t = ?", day.Add(10*time.Hour)).Scan(&packets, &bytes, &mirai, &sources); err != nil {
			t.Fatal(err)
		}
		if packets != 23 || bytes != 23*60 || mirai != 23 || sources != 2 {
			t.Errorf("%s: hour 10: packets %d bytes %d mirai %d sources %d, want 23 1380 23 2", label, packets, bytes, mirai, sources)
		}
		var minutes uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM (SELECT t FROM "+db+".summary_minute GROUP BY t)").Scan(&minutes); err != nil {
			t.Fatal(err)
		}
		if minutes != 3 {
			t.Errorf("%s: %d distinct minutes, want 3", label, minutes)
		}
		if err := conn.QueryRow(ctx, "SELECT sum(packets), uniqMerge(sources) FROM "+db+".summary_asn_hour WHERE src_asn = 64500").Scan(&packets, &sources); err != nil {
			t.Fatal(err)
		}
		if packets != 36 || sources != 3 {
			t.Errorf("%s: asn rollup packets %d sources %d, want 36 3", label, packets, sources)
		}
	}
	check("views")
	if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+".summary_hour FINAL"); err != nil {
		t.Fatal(err)
	}
	check("after merge")
	// Lose the rollups of the day (as a crash between table and view
	// would), then rebuild them from summary.
	if err := conn.Exec(ctx, "ALTER TABLE "+db+".summary_hour DROP PARTITION ID '20261120'"); err != nil {
		t.Fatal(err)
	}
	if err := chstore.RebuildRollups(ctx, conn, db, day.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("rebuilt")
}

// dashRollup is what the dashboard rollups (migrations 2 and 3) hold for a
// selection: packets, bytes and distinct sources.
type dashRollup struct{ packets, bytes, sources uint64 }

var dashTables = []string{"summary_class_minute", "summary_class_hour", "summary_country_hour", "summary_port_hour",
	"summary_sensor_class_minute", "summary_sensor_country_hour", "summary_asn_hour_by_asn"}

func TestDashboardRollupsRebuildAndBackfill(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC)
	sensor := "s1"
	ins := func(bin time.Time, src, country string, proto uint8, port uint16, class string, packets uint64) {
		t.Helper()
		b, err := conn.PrepareBatch(ctx, "INSERT INTO "+db+".summary (bin_start, sensor_id, src_ip, src_country, src_asn, protocol, dst_port, class, packets, bytes, fp_zmap)")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Append(bin, sensor, src, country, uint32(64500), proto, port, class, packets, packets*60, packets); err != nil {
			t.Fatal(err)
		}
		if err := b.Send(); err != nil {
			t.Fatal(err)
		}
	}
	ins(day.Add(10*time.Hour), "192.0.2.1", "JP", 6, 23, "tcp_syn", 5)
	ins(day.Add(10*time.Hour+30*time.Second), "192.0.2.2", "JP", 6, 23, "tcp_syn", 7)
	ins(day.Add(10*time.Hour+1*time.Minute), "192.0.2.1", "US", 17, 53, "udp", 11)
	ins(day.Add(10*time.Hour+2*time.Minute), "192.0.2.3", "US", 6, 445, "tcp_syn", 13)
	ins(day.Add(11*time.Hour), "192.0.2.3", "US", 6, 23, "tcp_syn", 17)
	// A second day, to see the backfill cover every day, from another
	// sensor.
	sensor = "s2"
	ins(day.Add(30*time.Hour), "198.51.100.9", "BR", 6, 23, "tcp_syn", 19)
	sensor = "s1"

	get := func(q string, args ...any) dashRollup {
		t.Helper()
		var r dashRollup
		if err := conn.QueryRow(ctx, q, args...).Scan(&r.packets, &r.bytes, &r.sources); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return r
	}
	h10 := day.Add(10 * time.Hour)
	check := func(label string) {
		t.Helper()
		want := map[string]dashRollup{
			// hour 10, tcp_syn: 5+7+13 packets from .1 .2 .3
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_class_hour WHERE t = ? AND class = 'tcp_syn'": {25, 25 * 60, 3},
			// minute 10:00 all classes: .1 and .2
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_class_minute WHERE t = ?": {12, 12 * 60, 2},
			// hour 10, US: 11+13 from .1 .3
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_country_hour WHERE t = ? AND src_country = 'US'": {24, 24 * 60, 2},
			// hour 10, tcp/23: 5+7 from .1 .2
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_port_hour WHERE t = ? AND protocol = 6 AND dst_port = 23": {12, 12 * 60, 2},
			// sensor s1, hour 10 (minutes 10:00-10:59): 5+7+11+13 from .1 .2 .3
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_sensor_class_minute WHERE toStartOfHour(t) = ? AND sensor_id = 's1'": {36, 36 * 60, 3},
			// sensor s1, hour 10, US: 11+13 from .1 .3
			"SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + ".summary_sensor_country_hour WHERE t = ? AND sensor_id = 's1' AND src_country = 'US'": {24, 24 * 60, 2},
			// ASN 64500, hour 10: 5+7+11+13 from .1 .2 .3 (uniq states)
			"SELECT sum(packets), sum(bytes), uniqMerge(sources) FROM " + db + ".summary_asn_hour_by_asn WHERE t = ? AND src_asn = 64500": {36, 36 * 60, 3},
		}
		for q, w := range want {
			if got := get(q, h10); got != w {
				t.Errorf("%s: %s = %+v, want %+v", label, q, got, w)
			}
		}
		// Whole tables, both days: every row counted once.
		for _, table := range dashTables {
			merge := "uniqHLL12Merge"
			if table == "summary_asn_hour_by_asn" {
				merge = "uniqMerge"
			}
			if got := get("SELECT sum(packets), sum(bytes), " + merge + "(sources) FROM " + db + "." + table); got != (dashRollup{72, 72 * 60, 4}) {
				t.Errorf("%s: %s totals %+v, want {72 4320 4}", label, table, got)
			}
		}
		for table, col := range map[string]string{"summary_sensor_class_minute": "class", "summary_sensor_country_hour": "src_country"} {
			if got := get("SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM " + db + "." + table + " WHERE sensor_id = 's2' AND " + col + " != ''"); got != (dashRollup{19, 19 * 60, 1}) {
				t.Errorf("%s: %s for s2 %+v, want {19 1140 1}", label, table, got)
			}
		}
		var fp uint64
		if err := conn.QueryRow(ctx, "SELECT sum(fp_zmap) FROM "+db+".summary_class_hour").Scan(&fp); err != nil || fp != 72 {
			t.Errorf("%s: class_hour fp_zmap %d (%v), want 72", label, fp, err)
		}
	}
	check("views")
	for _, table := range dashTables {
		if err := conn.Exec(ctx, "OPTIMIZE TABLE "+db+"."+table+" FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	check("after merge")
	// A crash between summary and the views: RebuildRollups restores the
	// new tables too (and leaves the other day alone).
	for _, table := range []string{"summary_class_minute", "summary_country_hour", "summary_port_hour", "summary_sensor_class_minute", "summary_sensor_country_hour", "summary_asn_hour_by_asn"} {
		if err := conn.Exec(ctx, "ALTER TABLE "+db+"."+table+" DROP PARTITION ID '20261120'"); err != nil {
			t.Fatal(err)
		}
	}
	if err := chstore.RebuildRollups(ctx, conn, db, day.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check("rebuilt")
	if err := chstore.RebuildRollups(ctx, conn, db, day); err != nil {
		t.Fatal(err)
	}
	check("rebuilt twice")

	// A database of schema version 1 with data: migrations 2 and 3 must
	// fill the new tables from summary. Remove them and the records.
	for _, name := range dashTables {
		if err := conn.Exec(ctx, "DROP TABLE "+db+"."+name+"_mv"); err != nil {
			t.Fatal(err)
		}
		if err := conn.Exec(ctx, "DROP TABLE "+db+"."+name); err != nil {
			t.Fatal(err)
		}
	}
	if err := conn.Exec(ctx, "TRUNCATE TABLE "+db+".schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if n, err := chstore.Migrate(ctx, conn, db); err != nil || n != chstore.SchemaVersion() {
		t.Fatalf("migrate from version 1: applied %d, %v", n, err)
	}
	check("backfilled")
	// A backfill that ran but was not recorded runs again without
	// counting twice.
	if err := conn.Exec(ctx, "TRUNCATE TABLE "+db+".schema_migrations"); err != nil {
		t.Fatal(err)
	}
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	check("backfilled twice")
	// The views keep working after the migration.
	ins(day.Add(10*time.Hour+5*time.Second), "192.0.2.4", "JP", 6, 23, "tcp_syn", 1)
	if got := get("SELECT sum(packets), sum(bytes), uniqHLL12Merge(sources) FROM "+db+".summary_port_hour WHERE t = ? AND protocol = 6 AND dst_port = 23", h10); got != (dashRollup{13, 13 * 60, 3}) {
		t.Errorf("after a new insert: port hour %+v, want {13 780 3}", got)
	}
}
