package rollup

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type row struct {
	src     string
	proto   uint32
	port    uint32
	class   jasperv1.TrafficClass
	packets uint64
	country string
	asn     uint32
	mirai   uint64
}

func mkBatch(sensor string, seq uint64, binStart int64, rows []row) *jasperv1.CommittedBatch {
	r := &jasperv1.Rows{}
	en := &jasperv1.Enrichment{}
	fp := &jasperv1.FingerprintColumn{Name: "mirai"}
	var pk uint64
	for _, x := range rows {
		a := netip.MustParseAddr(x.src)
		r.SrcIp = append(r.SrcIp, a.AsSlice())
		r.Protocol = append(r.Protocol, x.proto)
		r.DstPort = append(r.DstPort, x.port)
		r.Class = append(r.Class, x.class)
		r.Packets = append(r.Packets, x.packets)
		r.Bytes = append(r.Bytes, x.packets*60)
		r.FirstSeenMs = append(r.FirstSeenMs, 100)
		r.LastSeenMs = append(r.LastSeenMs, 200)
		r.Overflow = append(r.Overflow, false)
		fp.Packets = append(fp.Packets, x.mirai)
		en.SrcCountry = append(en.SrcCountry, x.country)
		en.SrcAsn = append(en.SrcAsn, x.asn)
		pk += x.packets
	}
	r.Fingerprints = []*jasperv1.FingerprintColumn{fp}
	return &jasperv1.CommittedBatch{SensorId: sensor, SensorCountry: "JP", Enrichment: en,
		ReceivedAtMs: binStart*1000 + 61000,
		Batch: &jasperv1.Batch{Sequence: seq, BinStart: binStart, BinSeconds: 60, Rows: r,
			SealedAtMs: binStart*1000 + 60000,
			Stats:      &jasperv1.SensorStats{PacketsSeen: pk + 5, PacketsSummarised: pk, KernelDrops: 2, ShedBatches: 1, ShedRows: 7}}}
}

const t0 = 1_780_000_080 // a two-minute boundary

func newModule(t testing.TB, mutate func(*Config)) *Module {
	t.Helper()
	cfg := DefaultConfig()
	cfg.BinSeconds, cfg.MaxCellsPerBin, cfg.RateBins = 60, 20000, 5
	if mutate != nil {
		mutate(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAggregates(t *testing.T) {
	m := newModule(t, nil)
	m.OnBatch(10, mkBatch("s1", 1, t0, []row{
		{"192.0.2.1", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 10, "JP", 64500, 10},
		{"192.0.2.1", 6, 2323, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 5, "JP", 64500, 5},
		{"198.51.100.7", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 3, "DE", 64501, 0},
		{"198.51.100.8", 17, 53, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP, 4, "DE", 64501, 0},
		{"2001:db8::1", 1, 0, jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP, 2, "US", 64502, 0},
	}))
	m.OnBatch(11, mkBatch("s2", 1, t0+60, []row{
		{"192.0.2.1", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 1, "JP", 64500, 1},
		{"203.0.113.5", 6, 443, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, 7, "JP", 64503, 0},
	}))

	pts := m.Overview(Filter{}, time.Minute)
	if len(pts) != 2 {
		t.Fatalf("overview points = %d, want 2", len(pts))
	}
	if got := pts[0].Packets["tcp_syn"]; got != 18 {
		t.Errorf("bin 0 tcp_syn = %d, want 18", got)
	}
	if pts[0].Sources != 4 || !pts[0].SourcesExact {
		t.Errorf("bin 0 sources = %d exact=%v, want 4 exact", pts[0].Sources, pts[0].SourcesExact)
	}
	if got := m.Overview(Filter{}, 2*time.Minute); len(got) != 1 || got[0].Sources != 5 {
		t.Errorf("2-minute step: %+v, want one point with 5 sources", got)
	}

	ports := m.Top(Filter{Protocol: 6}, DimPort, 0)
	want := "23:14/2 443:7/1 2323:5/1"
	if got := entriesString(ports); got != want {
		t.Errorf("tcp ports = %s, want %s", got, want)
	}
	if got := entriesString(m.Top(Filter{Country: "DE"}, DimPort, 0)); got != "53:4/1 23:3/1" {
		t.Errorf("DE ports = %s", got)
	}
	if got := entriesString(m.Top(Filter{HasPort: true, Port: 23}, DimCountry, 0)); got != "JP:11/1 DE:3/1" {
		t.Errorf("countries on port 23 = %s", got)
	}
	if got := entriesString(m.Top(Filter{Sensor: "s2"}, DimASN, 0)); got != "64503:7/1 64500:1/1" {
		t.Errorf("s2 ASNs = %s", got)
	}
	if got := m.Top(Filter{}, DimFingerprint, 0); len(got) != 1 || got[0].Key != "mirai" || got[0].Packets != 16 {
		t.Errorf("fingerprints = %+v", got)
	}
	if got := m.Top(Filter{From: time.Unix(t0+60, 0)}, DimClass, 0); entriesString(got) != "tcp_syn:1/1 tcp_synack:7/1" &&
		entriesString(got) != "tcp_synack:7/1 tcp_syn:1/1" {
		t.Errorf("classes from second bin = %s", entriesString(got))
	}

	hosts := m.Hosts(Filter{}, func(a netip.Addr, c string) bool { return c == "JP" }, 0)
	if len(hosts) != 2 || hosts[0].Addr.String() != "192.0.2.1" || hosts[0].Packets != 16 ||
		fmt.Sprint(hosts[0].Ports) != "[23 2323]" || fmt.Sprint(hosts[0].Sensors) != "[s1 s2]" {
		t.Errorf("JP hosts = %+v", hosts)
	}
	if got := m.Hosts(Filter{HasPort: true, Port: 53}, nil, 0); len(got) != 1 || got[0].Addr.String() != "198.51.100.8" {
		t.Errorf("hosts on port 53 = %+v", got)
	}

	sens := m.Sensors()
	if len(sens) != 2 || sens[0].ID != "s1" || sens[0].Totals.KernelDrops != 2 || sens[0].Totals.ShedRows != 7 ||
		sens[0].LastSequence != 1 || sens[0].LastBinStart.Unix() != t0 {
		t.Errorf("sensors = %+v", sens)
	}
	if r := sens[0].PacketRate; r != float64(24+5)/60 {
		t.Errorf("s1 packet rate = %v, want %v", r, float64(29)/60)
	}
	if _, err := m.Apply(12, []byte("x")); err != ErrNoCommands {
		t.Errorf("Apply err = %v", err)
	}
}

func entriesString(es []Entry) string {
	var parts []string
	for _, e := range es {
		parts = append(parts, fmt.Sprintf("%s:%d/%d", e.Key, e.Packets, e.Sources))
	}
	return strings.Join(parts, " ")
}

// randomLog builds a reproducible log with many sources, ports, sensors
// and a few late and out-of-order batches.
func randomLog(seed uint64, n int) []*jasperv1.CommittedBatch {
	rng := rand.New(rand.NewPCG(seed, 1))
	countries := []string{"JP", "DE", "US", "BR", "", "FR"}
	var log []*jasperv1.CommittedBatch
	for i := range n {
		var rows []row
		for range 1 + rng.IntN(200) {
			a := netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))})
			classes := []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP,
				jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST}
			c := classes[rng.IntN(3)]
			proto := uint32(6)
			if c == jasperv1.TrafficClass_TRAFFIC_CLASS_UDP {
				proto = 17
			}
			rows = append(rows, row{a.String(), proto, uint32(rng.IntN(3000)), c, 1 + rng.Uint64N(50),
				countries[rng.IntN(len(countries))], uint32(rng.IntN(20)), rng.Uint64N(3)})
		}
		bin := int64(t0 + 60*(i/3) - 60*rng.IntN(2))
		log = append(log, mkBatch(fmt.Sprintf("s%d", i%3), uint64(i), bin, rows))
	}
	return log
}

func TestDeterministicSnapshots(t *testing.T) {
	small := func(c *Config) { c.MaxCellsPerBin, c.MaxHostsPerBin, c.Window = 300, 150, 20*time.Minute }
	a, b := newModule(t, small), newModule(t, small)
	for i, cb := range randomLog(7, 90) {
		a.OnBatch(uint64(i+1), cb)
		b.OnBatch(uint64(i+1), cb)
		if i%17 == 0 {
			now := time.Unix(t0+int64(30*i), 0)
			a.OnTick(uint64(i+1), now)
			b.OnTick(uint64(i+1), now)
		}
	}
	var sa, sb bytes.Buffer
	if err := a.Snapshot(&sa); err != nil {
		t.Fatal(err)
	}
	if err := b.Snapshot(&sb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sa.Bytes(), sb.Bytes()) {
		t.Fatal("two modules fed the same log wrote different snapshots")
	}
	st := a.Stats()
	if st.FoldedRows == 0 || st.DroppedHosts == 0 || st.EvictedBins == 0 {
		t.Errorf("test log did not reach the caps: %+v", st)
	}
	// Restore into a fresh module: same snapshot bytes and same answers.
	c := newModule(t, small)
	if err := c.Restore(bytes.NewReader(sa.Bytes())); err != nil {
		t.Fatal(err)
	}
	var sc bytes.Buffer
	if err := c.Snapshot(&sc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sa.Bytes(), sc.Bytes()) {
		t.Fatal("restored module wrote a different snapshot")
	}
	if x, y := entriesString(a.Top(Filter{}, DimPort, 10)), entriesString(c.Top(Filter{}, DimPort, 10)); x != y {
		t.Errorf("top ports differ after restore: %s vs %s", x, y)
	}
	// Both continue identically after the restore.
	more := randomLog(8, 6)
	for i, cb := range more {
		a.OnBatch(uint64(100+i), cb)
		c.OnBatch(uint64(100+i), cb)
	}
	sa.Reset()
	sc.Reset()
	_ = a.Snapshot(&sa)
	_ = c.Snapshot(&sc)
	if !bytes.Equal(sa.Bytes(), sc.Bytes()) {
		t.Fatal("original and restored modules diverged on the same further log")
	}
}

func TestWindowEviction(t *testing.T) {
	m := newModule(t, func(c *Config) { c.Window = 5 * time.Minute })
	r := []row{{"192.0.2.1", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 1, "JP", 1, 0}}
	for i := range 10 {
		m.OnBatch(uint64(i+1), mkBatch("s1", uint64(i+1), t0+int64(60*i), r))
	}
	pts := m.Overview(Filter{}, time.Minute)
	if len(pts) != 5 || pts[0].Start.Unix() != t0+5*60 || pts[4].Start.Unix() != t0+9*60 {
		t.Fatalf("window holds %d bins from %v, want 5 from %d", len(pts), pts[0].Start.Unix(), t0+5*60)
	}
	// A batch older than the window is counted and ignored.
	m.OnBatch(20, mkBatch("s1", 20, t0, r))
	if st := m.Stats(); st.LateBatches != 1 || st.EvictedBins != 5 {
		t.Errorf("stats = %+v, want 1 late batch and 5 evicted bins", st)
	}
	if got := len(m.Overview(Filter{}, time.Minute)); got != 5 {
		t.Errorf("after late batch: %d bins", got)
	}
	// Ticks advance the window even without batches.
	m.OnTick(21, time.Unix(t0+12*60+30, 0))
	pts = m.Overview(Filter{}, time.Minute)
	if len(pts) != 2 || pts[0].Start.Unix() != t0+8*60 {
		t.Errorf("after tick: %d bins from %v", len(pts), pts)
	}
	m.OnTick(22, time.Unix(t0+3600, 0))
	if o, n := m.Span(); !o.IsZero() || !n.IsZero() {
		t.Errorf("after a long tick the window should be empty, span %v %v", o, n)
	}
	if s := m.Sensors(); len(s) != 1 || s[0].Batches != 11 || s[0].PacketRate != 0 {
		t.Errorf("sensor health outlives the window: %+v", s)
	}
}

func TestCellCapFolds(t *testing.T) {
	m := newModule(t, func(c *Config) { c.MaxCellsPerBin = 3 })
	var rows []row
	for p := range 10 {
		rows = append(rows, row{fmt.Sprintf("192.0.2.%d", p+1), 6, uint32(1000 + p), jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 2, "JP", 9, 0})
	}
	m.OnBatch(1, mkBatch("s1", 1, t0, rows))
	got := m.Top(Filter{}, DimPort, 0)
	if entriesString(got) != "other:14/7 1000:2/1 1001:2/1 1002:2/1" {
		t.Errorf("ports after cap = %s", entriesString(got))
	}
	if st := m.Stats(); st.FoldedRows != 7 {
		t.Errorf("folded rows = %d, want 7", st.FoldedRows)
	}
	// Packets are never lost by folding.
	if pts := m.Overview(Filter{}, time.Minute); pts[0].Packets["tcp_syn"] != 20 || pts[0].Sources != 10 {
		t.Errorf("overview after fold = %+v", pts[0])
	}
}

func TestBadRowsCounted(t *testing.T) {
	m := newModule(t, nil)
	cb := mkBatch("s1", 1, t0, []row{{"192.0.2.1", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 1, "JP", 1, 0}})
	cb.Batch.Rows.SrcIp = append(cb.Batch.Rows.SrcIp, []byte{1, 2, 3}) // 3-byte address, short columns
	m.OnBatch(1, cb)
	if st := m.Stats(); st.BadRows != 1 || st.Rows != 2 {
		t.Errorf("stats = %+v", st)
	}
}

func TestSketch(t *testing.T) {
	var s Sketch
	for i := range 64 {
		s.Add(hashUint(uint64(i)))
		s.Add(hashUint(uint64(i)))
	}
	if !s.Exact() || s.Count() != 64 {
		t.Fatalf("64 values: exact=%v count=%d", s.Exact(), s.Count())
	}
	for _, n := range []int{1000, 100000} {
		var s Sketch
		for i := range n {
			s.Add(hashAddr(netip.AddrFrom4([4]byte{byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)})))
		}
		got := float64(s.Count())
		if s.Exact() || got < float64(n)*0.88 || got > float64(n)*1.12 {
			t.Errorf("%d values estimated %v (exact=%v)", n, got, s.Exact())
		}
	}
	// Merge of exact and estimated forms.
	var a, b Sketch
	for i := range 50 {
		a.Add(hashUint(uint64(i)))
	}
	for i := 25; i < 75; i++ {
		b.Add(hashUint(uint64(i)))
	}
	a.Merge(&b)
	if a.Exact() || a.Count() < 70 || a.Count() > 80 {
		t.Errorf("merged count %d exact=%v, want about 75", a.Count(), a.Exact())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.BinSeconds = 7 }, "bin_seconds"},
		{func(c *Config) { c.Window = time.Second }, "window"},
		{func(c *Config) { c.MaxCellsPerBin = 0 }, "max_cells_per_bin"},
		{func(c *Config) { c.RateBins = 0 }, "rate_bins"},
	} {
		c := DefaultConfig()
		tc.mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want an error naming %s", err, tc.want)
		}
	}
}

func FuzzRestore(f *testing.F) {
	m := newModule(f, nil)
	for i, cb := range randomLog(3, 4) {
		m.OnBatch(uint64(i), cb)
	}
	var buf bytes.Buffer
	_ = m.Snapshot(&buf)
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"bin_seconds":60,"bins":[{"start":60,"total":{"r":"AA=="}}]}`))
	f.Add([]byte(`{"version":1,"bin_seconds":60,"bins":[{"start":60,"cells":[{"Class":200}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m := newModule(t, nil)
		if err := m.Restore(bytes.NewReader(data)); err != nil {
			return
		}
		// A restored state must answer queries and snapshot again.
		m.Overview(Filter{}, time.Minute)
		m.Top(Filter{}, DimPort, 5)
		m.Hosts(Filter{}, nil, 5)
		m.Sensors()
		var out bytes.Buffer
		if err := m.Snapshot(&out); err != nil {
			t.Fatal(err)
		}
	})
}

// TestConcurrentQueriesAndSnapshots runs queries and snapshots while
// batches apply (run with -race).
func TestConcurrentQueriesAndSnapshots(t *testing.T) {
	m := newModule(t, nil)
	log := randomLog(11, 60)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i, cb := range log {
			m.OnBatch(uint64(i+1), cb)
		}
		close(done)
	})
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				m.Overview(Filter{Country: "JP"}, 5*time.Minute)
				m.Top(Filter{Protocol: 6}, DimPort, 10)
				m.Hosts(Filter{}, nil, 10)
				m.Sensors()
				if err := m.Snapshot(io.Discard); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if st := m.Stats(); st.Batches != uint64(len(log)) {
		t.Errorf("batches = %d", st.Batches)
	}
}

// TestHostFilterSizes checks the host filter at the edges of
// max_hosts_per_bin (none, one, more than the filter's cap): the hosts
// kept and dropped are those of the map, whatever the filter's size.
func TestHostFilterSizes(t *testing.T) {
	for _, maxHosts := range []int{0, 1, 3, 20000} {
		m := newModule(t, func(c *Config) { c.MaxHostsPerBin = maxHosts })
		var rows []row
		for i := range 30 {
			rows = append(rows, row{fmt.Sprintf("192.0.2.%d", i%10), 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 1, "JP", 1, 0})
		}
		m.OnBatch(1, mkBatch("s1", 1, t0, rows))
		kept := min(maxHosts, 10)
		hosts := m.Hosts(Filter{}, nil, 0)
		if len(hosts) != kept {
			t.Errorf("max %d: %d hosts, want %d", maxHosts, len(hosts), kept)
		}
		for _, h := range hosts {
			if h.Packets != 3 {
				t.Errorf("max %d: host %s has %d packets, want 3", maxHosts, h.Addr, h.Packets)
			}
		}
		if st := m.Stats(); st.DroppedHosts != uint64(3*(10-kept)) {
			t.Errorf("max %d: dropped %d, want %d", maxHosts, st.DroppedHosts, 3*(10-kept))
		}
	}
}

// TestHostsNewestCountry: a source whose enrichment changed inside the
// window (a geo database update) is reported with its newest country and
// ASN, on every call.
func TestHostsNewestCountry(t *testing.T) {
	m := newModule(t, nil)
	for i := range 6 {
		country, asn := "DE", uint32(64500)
		if i >= 3 {
			country, asn = "NL", 64501
		}
		m.OnBatch(uint64(i+1), mkBatch(fmt.Sprintf("s%d", i%2), uint64(i+1), t0+int64(60*i), []row{
			{"192.0.2.9", 6, 23, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, 2, country, asn, 0}}))
	}
	for range 20 {
		hs := m.Hosts(Filter{}, nil, 0)
		if len(hs) != 1 || hs[0].Country != "NL" || hs[0].ASN != 64501 || hs[0].Packets != 12 ||
			fmt.Sprint(hs[0].Sensors) != "[s0 s1]" {
			t.Fatalf("hosts = %+v, want one NL/64501 host with 12 packets from s0 and s1", hs)
		}
	}
	// Filtering on the older country still finds the older records.
	if hs := m.Hosts(Filter{Country: "DE"}, nil, 0); len(hs) != 1 || hs[0].Country != "DE" || hs[0].Packets != 6 {
		t.Errorf("DE hosts = %+v", hs)
	}
}
