package dashboards

import (
	"context"
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
	"github.com/jasperfed/jasper/hub/rollup"
	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// logSource hands a fixed committed log to the ClickHouse loader, standing
// in for the raft store of a leader.
type logSource struct {
	mu     sync.Mutex
	log    []*jasperv1.CommittedBatch
	loaded uint64
}

func (l *logSource) Pending(after uint64, maxRows int) []*jasperv1.CommittedBatch {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*jasperv1.CommittedBatch
	rows := 0
	for _, cb := range l.log {
		if cb.GetRaftIndex() <= after {
			continue
		}
		n := len(cb.GetBatch().GetRows().GetSrcIp())
		if len(out) > 0 && rows+n > maxRows {
			break
		}
		out = append(out, cb)
		rows += n
	}
	return out
}

func (l *logSource) MarkLoaded(_ context.Context, through uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.loaded = max(l.loaded, through)
	return nil
}

func (l *logSource) IsLeader() bool { return true }

func (l *logSource) loadedThrough() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.loaded
}

// loadClickHouse loads the replay into a fresh database through the hub's
// loader and returns a source over it.
func loadClickHouse(t *testing.T, log []*jasperv1.CommittedBatch) *ClickHouseSource {
	t.Helper()
	conn, db := chstoretest.NewDatabase(t)
	ctx := context.Background()
	if _, err := chstore.Migrate(ctx, conn, db); err != nil {
		t.Fatal(err)
	}
	cfg := chstore.DefaultConfig()
	cfg.Addr, cfg.Database = chstoretest.Addr(t), db
	cfg.InsertTimeout, cfg.LeaderSettle = config.Duration(10*time.Second), config.Duration(10*time.Second)
	cfg.PollInterval = config.Duration(50 * time.Millisecond)
	src := &logSource{log: log}
	ld, err := chstore.NewLoader(cfg, src, conn, prometheus.NewRegistry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// LeaderSettle makes a fresh leader wait before its first insert.
	if err := ld.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ld.Stop(ctx) }()
	last := log[len(log)-1].GetRaftIndex()
	deadline := time.Now().Add(3 * time.Minute)
	for src.loadedThrough() < last {
		if time.Now().After(deadline) {
			t.Fatalf("loader reached %d of %d: %+v", src.loadedThrough(), last, ld.Status())
		}
		time.Sleep(100 * time.Millisecond)
	}
	cs, err := NewClickHouseSource(conn, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func near(a, b uint64, tol float64) bool {
	if a == b {
		return true
	}
	return math.Abs(float64(a)-float64(b)) <= tol*math.Max(float64(a), float64(b))
}

// TestClickHouseSourceAgreesWithRollups loads the replayed captures into a
// real ClickHouse through the hub's loader and into the embedded rollups,
// and asks both sources the same questions.
func TestClickHouseSourceAgreesWithRollups(t *testing.T) {
	chstoretest.Addr(t) // skip early without a server
	now := time.Now().UTC().Truncate(time.Minute)
	log := replayLog(t, now)
	cfg := minuteRollups()
	cfg.MaxHostsPerBin, cfg.MaxCellsPerBin = 20000, 20000
	mod, err := rollup.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, cb := range log {
		mod.OnBatch(cb.GetRaftIndex(), cb)
	}
	emb := NewEmbeddedSource(mod)
	ch := loadClickHouse(t, log)
	ctx := context.Background()

	day := func(q Query) Query {
		q.From, q.To, q.Step = now.Add(-24*time.Hour), now.Truncate(time.Hour).Add(time.Hour), time.Hour
		return q
	}
	compare := func(q Query, overview bool, dims []Dim) {
		t.Helper()
		name := fmt.Sprintf("%+v", q)
		a, err := emb.Overview(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ch.Overview(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !overview {
			a, b = nil, nil
		}
		if overview && (len(a) != len(b) || len(a) == 0) {
			t.Errorf("%s: overview has %d points embedded, %d in ClickHouse", name, len(a), len(b))
			return
		}
		for i := range a {
			if !a[i].Start.Equal(b[i].Start) || fmt.Sprint(a[i].Packets) != fmt.Sprint(b[i].Packets) || a[i].Bytes != b[i].Bytes ||
				!near(a[i].Sources, b[i].Sources, 0.1) {
				t.Errorf("%s: point %d embedded %+v, ClickHouse %+v", name, i, a[i], b[i])
				break
			}
		}
		for _, d := range dims {
			q := q
			q.Limit = 5
			if d == DimPort && q.Protocol == 0 {
				q.Protocol = 6
			}
			ea, err := emb.Top(ctx, q, d)
			if err != nil {
				t.Fatal(err)
			}
			eb, err := ch.Top(ctx, q, d)
			if err != nil {
				t.Fatalf("%s top %s: %v", name, d, err)
			}
			want := map[string]Entry{}
			for _, e := range ea {
				want[e.Key] = e
			}
			// Folded ports are "other" embedded and port 0 in ClickHouse.
			if w, ok := want["other"]; ok && d == DimPort {
				want["0"] = w
			}
			if len(ea) != len(eb) {
				t.Errorf("%s top %s: %d entries embedded, %d in ClickHouse", name, d, len(ea), len(eb))
			}
			for _, e := range eb {
				w, ok := want[e.Key]
				if d == DimPort && e.Key == "0" {
					continue // port 0 also holds real port-0 probes in ClickHouse
				}
				if !ok || w.Packets != e.Packets || !near(w.Sources, e.Sources, 0.1) {
					t.Errorf("%s top %s: ClickHouse %+v, embedded %+v", name, d, e, w)
				}
			}
		}
	}
	allDims := []Dim{DimCountry, DimClass, DimSensor, DimFingerprint, DimASN, DimPort}
	for _, q := range []Query{
		{From: now.Add(-6 * time.Hour), To: now, Step: 15 * time.Minute},
		{From: now.Add(-90 * time.Minute), To: now, Step: 5 * time.Minute, Country: "JP"},
		{From: now.Add(-3 * time.Hour), To: now, Step: time.Hour, Sensor: "berlin-1"},
		{From: now.Add(-6 * time.Hour), To: now, Step: time.Minute, Protocol: 17},
		{From: now.Add(-6 * time.Hour), To: now, Step: 5 * time.Minute, HasPort: true, Port: 443},
		// 24 hours: lists read the hour rollups (countries and ASNs the
		// ASN rollup); the replay lies inside whole hours of the range.
		{From: now.Add(-24 * time.Hour), To: now.Truncate(time.Hour).Add(time.Hour), Step: time.Hour},
		{From: now.Add(-24 * time.Hour), To: now.Truncate(time.Hour).Add(time.Hour), Step: time.Hour, Sensor: "saopaulo-1"},
		// The dashboard rollups with the filters they keep: countries
		// from summary_country_hour with a country, ports from
		// summary_port_hour with a port.
		day(Query{Country: "JP"}),
		day(Query{HasPort: true, Port: 443}),
		day(Query{Protocol: 17}),
		// One sensor with a country: the fine rollups (checked below to
		// have data).
		day(Query{Sensor: "saopaulo-1", Country: "JP"}),
	} {
		compare(q, true, allDims)
	}

	// Host-level data: the same hosts, in scope only.
	q := Query{From: now.Add(-6 * time.Hour), To: now, Limit: 100000}
	for _, sc := range []Scope{
		{Countries: []string{"JP"}},
		{Countries: []string{"DE", "FR"}},
		{Prefixes: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}},
		{Prefixes: []netip.Prefix{netip.MustParsePrefix("2001:db8::/32")}},
		{All: true},
	} {
		ha, err := emb.Hosts(ctx, q, sc)
		if err != nil {
			t.Fatal(err)
		}
		hb, err := ch.Hosts(ctx, q, sc)
		if err != nil {
			t.Fatalf("hosts %+v: %v", sc, err)
		}
		got := map[netip.Addr]Host{}
		for _, h := range hb {
			if !sc.Contains(h.Addr, h.Country) {
				t.Errorf("scope %+v: ClickHouse returned %s (%s)", sc, h.Addr, h.Country)
			}
			got[h.Addr] = h
		}
		if len(ha) != len(hb) {
			t.Errorf("scope %+v: %d hosts embedded, %d in ClickHouse", sc, len(ha), len(hb))
		}
		for _, h := range ha {
			g, ok := got[h.Addr]
			if !ok || g.Packets != h.Packets || g.Country != h.Country || g.ASN != h.ASN {
				t.Errorf("scope %+v: host %s embedded %+v, ClickHouse %+v", sc, h.Addr, h, g)
				break
			}
		}
	}
	if got := sqlString(`a'b\c`); got != `'a\'b\\c'` {
		t.Errorf("sqlString = %s", got)
	}
	if hs, _ := ch.Hosts(ctx, Query{From: now.Add(-6 * time.Hour), To: now, Limit: 5}, Scope{Prefixes: []netip.Prefix{netip.MustParsePrefix("172.16.0.0/12")}}); len(hs) != 2 {
		t.Errorf("org prefix hosts = %+v, want the two scanners", hs)
	}

	// Sensor health from sensor_stats.
	ss, err := ch.Sensors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	es, _ := emb.Sensors(ctx)
	if len(ss) != 3 || len(es) != 3 {
		t.Fatalf("sensors: ClickHouse %+v, embedded %+v", ss, es)
	}
	for i := range ss {
		if ss[i].ID != es[i].ID || ss[i].Batches != es[i].Batches || ss[i].PacketsSeen != es[i].PacketsSeen ||
			ss[i].LastSequence != es[i].LastSequence || !ss[i].LastBinStart.Equal(es[i].LastBinStart) {
			t.Errorf("sensor %d: ClickHouse %+v, embedded %+v", i, ss[i], es[i])
		}
	}

	// The API over ClickHouse keeps the constituency rule.
	cfgS := DefaultConfig()
	cfgS.AccountsFile = writeAccounts(t, t.TempDir())
	srv, err := New(cfgS, Deps{Source: ch, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{srv: srv, ts: newHTTPServer(t, srv)}
	c := f.client(t)
	c.auth = tokenJP
	var hr hostsResp
	c.get("/api/hosts?range=6h&limit=50", &hr)
	if len(hr.Hosts) != 50 || hr.Hosts[0].Addr.String() != "172.31.15.102" {
		t.Errorf("JP hosts over ClickHouse: %d, first %+v", len(hr.Hosts), hr.Hosts)
	}
	for _, h := range hr.Hosts {
		if h.Country != "JP" {
			t.Errorf("JP analyst got %s of %s over ClickHouse", h.Addr, h.Country)
		}
	}
	if code, _, _ := c.do("GET", "/api/hosts?country=DE", nil, nil); code != 403 {
		t.Errorf("JP analyst asking DE hosts over ClickHouse = %d", code)
	}
	var lr listResp
	c.get("/api/top/countries?range=6h&limit=3", &lr)
	if len(lr.Entries) != 3 || lr.Entries[0].Key != "DE" {
		t.Errorf("top countries over ClickHouse = %+v", lr.Entries)
	}

	// Most questions read the dashboard rollups only: with the fine
	// rollups emptied they still agree with the embedded ones.
	for _, table := range []string{"summary_minute", "summary_hour"} {
		if err := ch.conn.Exec(ctx, "TRUNCATE TABLE "+ch.db+"."+table); err != nil {
			t.Fatal(err)
		}
	}
	compare(Query{From: now.Add(-6 * time.Hour), To: now, Step: 15 * time.Minute}, true, []Dim{DimClass, DimFingerprint})
	compare(day(Query{}), true, []Dim{DimCountry, DimClass, DimFingerprint, DimPort, DimASN})
	compare(day(Query{Country: "JP"}), false, []Dim{DimCountry})
	compare(day(Query{HasPort: true, Port: 443}), false, []Dim{DimPort})
	compare(day(Query{Protocol: 17}), false, []Dim{DimPort})
	// The ASN list counts sources on summary_asn_hour_by_asn: emptied, the
	// list keeps its ranking (summary_asn_hour) without sources.
	if err := ch.conn.Exec(ctx, "TRUNCATE TABLE "+ch.db+".summary_asn_hour_by_asn"); err != nil {
		t.Fatal(err)
	}
	if es, err := ch.Top(ctx, day(Query{Limit: 5}), DimASN); err != nil || len(es) == 0 || es[0].Packets == 0 || es[0].Sources != 0 {
		t.Errorf("ASN list without summary_asn_hour_by_asn = %+v, %v; want ranked entries with no sources", es, err)
	}
	// One sensor: summary_sensor_class_minute and summary_sensor_country_hour.
	compare(Query{From: now.Add(-3 * time.Hour), To: now, Step: time.Hour, Sensor: "berlin-1"}, true, []Dim{DimClass, DimFingerprint})
	compare(day(Query{Sensor: "saopaulo-1"}), true, []Dim{DimCountry, DimClass, DimFingerprint})
	compare(day(Query{Sensor: "saopaulo-1", Country: "JP"}), false, []Dim{DimCountry})
	// A sensor with a country filter still reads the fine rollups, now
	// empty.
	if pts, err := ch.Overview(ctx, day(Query{Sensor: "saopaulo-1", Country: "JP"})); err != nil || len(pts) != 0 {
		t.Errorf("sensor and country overview after emptying the fine rollups: %d points, %v", len(pts), err)
	}
}
