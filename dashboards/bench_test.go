package dashboards

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
)

// benchGenerate fills db.summary (and through the views the rollups) with
// synthetic summary rows up to want rows, generated inside ClickHouse: a
// week of minute bins, 8 sensors, 2 M sources in 30 countries and 5,000
// ASNs, 70 % TCP, 20 % UDP, 10 % ICMP, most ports among 12 popular ones.
func benchGenerate(b *testing.B, conn driver.Conn, db string, end time.Time, want uint64) {
	ctx := context.Background()
	var have uint64
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+db+".summary").Scan(&have); err != nil {
		b.Fatal(err)
	}
	const chunk = 10_000_000
	perMinute := want / (7 * 1440)
	start := end.Add(-7 * 24 * time.Hour).Unix()
	for have < want {
		n := min(chunk, want-have)
		t0 := time.Now()
		q := fmt.Sprintf(`INSERT INTO %[1]s.summary (bin_start, sensor_id, sensor_country, src_ip, src_country, src_asn, src_label,
  protocol, dst_port, icmp_type, icmp_code, class, packets, bytes, dst_ips, first_seen, last_seen, ttl_min, ttl_max,
  distinct_ports, overflow, fragments, fp_mirai, fp_zmap, fp_masscan, raft_index, seq)
SELECT toDateTime(%[2]d + intDiv(n, %[3]d) * 60) AS bin_start, concat('sensor-', toString(n %% 8)), 'JP',
  IPv4NumToString(toUInt32(intHash32(n %% 2000000) + 16777216)) AS ip,
  arrayElement(['US','CN','BR','RU','IN','KR','VN','TW','ID','NL','GB','IT','TR','MX','AR','ZA','EG','IR','TH','JP','DE','FR','CA','AU','PL','UA','ES','CL','NG','SE'], intHash32(n %% 2000000) %% 30 + 1),
  intHash32(n %% 2000000) %% 5000, 1,
  toUInt8(if(n %% 10 < 7, 6, if(n %% 10 < 9, 17, 1))) AS proto,
  toUInt16(if(proto = 1, 0, if(n %% 3 = 0, n %% 65536, arrayElement([23, 2323, 445, 22, 80, 443, 3389, 8080, 5060, 53, 123, 1900], n %% 12 + 1)))),
  0, 0,
  if(proto = 6, if(n %% 20 = 0, 'tcp_synack', 'tcp_syn'), if(proto = 17, 'udp', 'icmp')),
  1 + n %% 7, (1 + n %% 7) * 60, 1, bin_start, bin_start, 40, 60, 1, 0, 0,
  if(n %% 11 = 0, 1 + n %% 7, 0), 0, 0, intDiv(n, 1000), intDiv(n, 1000)
FROM (SELECT number + %[4]d AS n FROM system.numbers LIMIT %[5]d)`, db, start, perMinute, have, n)
		if err := conn.Exec(ctx, q); err != nil {
			b.Fatalf("generate: %v", err)
		}
		have += n
		b.Logf("generated %d of %d rows (%.0f rows/s)", have, want, float64(n)/time.Since(t0).Seconds())
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

var elapsedRE = regexp.MustCompile(`^([0-9.]+)\s*$`)

// clientTime runs a query through clickhouse-client --time and returns the
// elapsed time it reports.
func clientTime(b *testing.B, port, q string) time.Duration {
	cmd := exec.Command("clickhouse-client", "--port", port, "--time", "--format", "Null", "-q", q)
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("clickhouse-client: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if m := elapsedRE.FindStringSubmatch(line); m != nil {
			f, _ := strconv.ParseFloat(m[1], 64)
			return time.Duration(f * float64(time.Second))
		}
	}
	b.Fatalf("no time in clickhouse-client output: %s", out)
	return 0
}

// BenchmarkAPIOverClickHouse measures the API's overview, map and top lists
// over many summary rows (JASPER_BENCH_ROWS, default 10 M) in the database
// JASPER_BENCH_DB (default jasper_bench, kept between runs) on the server of
// $JASPER_TEST_CLICKHOUSE, and the same questions asked as plain SQL on the
// raw table through clickhouse-client. It reports p50/p95 in ms.
func BenchmarkAPIOverClickHouse(b *testing.B) {
	addr := chstoretest.Addr(b)
	conn := chstoretest.Connect(b, addr)
	db := os.Getenv("JASPER_BENCH_DB")
	if db == "" {
		db = "jasper_bench"
	}
	want := uint64(10_000_000)
	if v := os.Getenv("JASPER_BENCH_ROWS"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			b.Fatal(err)
		}
		want = n
	}
	ctx := context.Background()
	t0 := time.Now()
	applied, err := chstore.Migrate(ctx, conn, db)
	if err != nil {
		b.Fatal(err)
	}
	// A database made by an older schema is migrated here; migration 2
	// backfills its rollups from summary.
	b.Logf("migrate: applied %d migrations in %s", applied, time.Since(t0).Round(time.Millisecond))
	// The data ends at the end of the current day, so it stays in range
	// for a few runs.
	end := time.Now().UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	var tmax uint32
	_ = conn.QueryRow(ctx, "SELECT toUInt32(max(bin_start)) FROM "+db+".summary").Scan(&tmax)
	if tmax != 0 {
		end = time.Unix(int64(tmax)+60, 0).UTC()
	}
	benchGenerate(b, conn, db, end, want)
	var rows uint64
	_ = conn.QueryRow(ctx, "SELECT count() FROM "+db+".summary").Scan(&rows)
	b.Logf("summary rows: %d", rows)

	cs, err := NewClickHouseSource(conn, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.AccountsFile = writeAccounts(b, b.TempDir())
	srv, err := New(cfg, Deps{Source: cs, Now: func() time.Time { return end }})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	_, port, _ := strings.Cut(addr, ":")
	from24, to := end.Add(-24*time.Hour).Unix(), end.Unix()
	raw := func(sel, group string) string {
		return fmt.Sprintf("SELECT %s FROM %s.summary WHERE bin_start >= toDateTime(%d) AND bin_start < toDateTime(%d) %s", sel, db, from24, to, group)
	}
	cases := []struct {
		name, path, sql string
	}{
		{"overview_24h", "/api/overview?range=24h", raw("toStartOfFifteenMinutes(bin_start) AS t, class, sum(packets), uniq(src_ip)", "GROUP BY t, class")},
		{"map_24h", "/api/map?range=24h", raw("src_country, sum(packets), uniq(src_ip)", "GROUP BY src_country")},
		{"top_tcp_ports_24h", "/api/top/tcp_ports?range=24h&limit=20", raw("dst_port, sum(packets) AS p, uniq(src_ip)", "AND protocol = 6 GROUP BY dst_port ORDER BY p DESC LIMIT 20")},
		{"top_countries_7d", "/api/top/countries?range=168h&limit=20", fmt.Sprintf("SELECT src_country, sum(packets) AS p, uniq(src_ip) FROM %s.summary GROUP BY src_country ORDER BY p DESC LIMIT 20", db)},
		{"top_asns_24h", "/api/top/asns?range=24h&limit=20", raw("src_asn, sum(packets) AS p, uniq(src_ip)", "GROUP BY src_asn ORDER BY p DESC LIMIT 20")},
		// Filtered questions that the dashboard rollups cannot answer
		// (sensor; country with ports): they read summary_minute/hour.
		{"overview_24h_sensor", "/api/overview?range=24h&sensor=sensor-3", raw("toStartOfFifteenMinutes(bin_start) AS t, class, sum(packets), uniq(src_ip)", "AND sensor_id = 'sensor-3' GROUP BY t, class")},
		{"top_tcp_ports_24h_country", "/api/top/tcp_ports?range=24h&limit=20&country=US", raw("dst_port, sum(packets) AS p, uniq(src_ip)", "AND protocol = 6 AND src_country = 'US' GROUP BY dst_port ORDER BY p DESC LIMIT 20")},
		{"overview_1h_port_23", "/api/overview?range=1h&port=23", fmt.Sprintf("SELECT toStartOfMinute(bin_start) AS t, class, sum(packets), uniq(src_ip) FROM %s.summary WHERE bin_start >= toDateTime(%d) AND bin_start < toDateTime(%d) AND dst_port = 23 AND protocol IN (6, 17) GROUP BY t, class", db, to-3600, to)},
	}
	const n = 10
	client := ts.Client()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			var api, sql []time.Duration
			for range b.N {
				api, sql = api[:0], sql[:0]
				for range n {
					req, _ := http.NewRequest("GET", ts.URL+c.path, nil)
					req.Header.Set("Authorization", "Bearer "+tokenJP)
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatalf("%s = %d %s", c.path, resp.StatusCode, body)
					}
					api = append(api, time.Since(t0))
				}
				for range 3 {
					sql = append(sql, clientTime(b, port, c.sql))
				}
			}
			b.ReportMetric(float64(percentile(api, 0.5).Microseconds())/1000, "api_p50_ms")
			b.ReportMetric(float64(percentile(api, 0.95).Microseconds())/1000, "api_p95_ms")
			b.ReportMetric(float64(percentile(sql, 0.5).Microseconds())/1000, "rawsql_p50_ms")
			b.ReportMetric(float64(percentile(sql, 0.95).Microseconds())/1000, "rawsql_p95_ms")
			b.ReportMetric(float64(rows), "summary_rows")
		})
	}
}
