package rollup

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/golden_* from the current code")

// goldenLog is a reproducible log that reaches every branch of OnBatch:
// IPv4, IPv6 and IPv4-mapped sources, malformed rows, overflow rows,
// non-port protocols, fingerprints, unknown countries and ASNs, the cell
// cap (folding), the host cap, late batches and evictions. With runs set,
// each source sends a run of rows in a row (as sensors emit them), ASN 0
// and overflow rows are frequent.
func goldenLog(seed uint64, n int, runs bool) []*jasperv1.CommittedBatch {
	rng := rand.New(rand.NewPCG(seed, 5))
	countries := []string{"JP", "DE", "US", "BR", "", "FR", "CN"}
	classes := []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP,
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST, jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP,
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER}
	var log []*jasperv1.CommittedBatch
	for i := range n {
		r := &jasperv1.Rows{}
		en := &jasperv1.Enrichment{}
		fps := []*jasperv1.FingerprintColumn{{Name: "mirai"}, {Name: "zmap"}, {Name: ""}}
		var pk uint64
		// Batches with a short or no enrichment use sources of their own,
		// so that every source has one country and ASN (Hosts reports the
		// country of one of a host's records, whichever it meets first).
		odd := i%11 == 3 || i%29 == 0
		v, left := 0, 0
		for range 1 + rng.IntN(100) {
			if runs && left > 0 {
				left--
			} else {
				v = rng.IntN(600)
				if runs {
					left = rng.IntN(6)
				}
			}
			var src []byte
			switch {
			case v < 500 && odd:
				src = []byte{10, 9, byte(v), byte(v * 7)}
			case v < 500:
				src = []byte{10, byte(v % 3), byte(v), byte(v * 7)}
			case v < 560:
				a := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i % 2), 15: byte(v)})
				if odd {
					a = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: 9, 15: byte(v)})
				}
				src = a.AsSlice()
			case v < 590:
				a := netip.AddrFrom16(netip.AddrFrom4([4]byte{192, 0, byte(2 + b2i(odd)), byte(v)}).As16())
				src = a.AsSlice()
			default:
				src = []byte{1, 2, 3} // malformed
			}
			c := classes[rng.IntN(len(classes))]
			proto := uint32(6)
			switch c {
			case jasperv1.TrafficClass_TRAFFIC_CLASS_UDP:
				proto = 17
			case jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP:
				proto = 1
			case jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER:
				proto = uint32(47 + rng.IntN(3))
			}
			port := uint32(rng.IntN(40))
			if rng.IntN(4) == 0 {
				port = uint32(rng.IntN(70000))
			}
			p := 1 + rng.Uint64N(40)
			r.SrcIp = append(r.SrcIp, src)
			r.Protocol = append(r.Protocol, proto)
			r.DstPort = append(r.DstPort, port)
			r.Class = append(r.Class, c)
			r.Packets = append(r.Packets, p)
			r.Bytes = append(r.Bytes, p*(40+rng.Uint64N(100)))
			r.FirstSeenMs = append(r.FirstSeenMs, uint32(rng.IntN(30000)))
			r.LastSeenMs = append(r.LastSeenMs, uint32(30000+rng.IntN(30000)))
			r.Overflow = append(r.Overflow, rng.IntN(25) == 0 || runs && rng.IntN(4) == 0)
			for k, fc := range fps {
				var x uint64
				if rng.IntN(5) == 0 {
					x = 1 + rng.Uint64N(p)
				}
				if k == 1 && rng.IntN(3) != 0 {
					x = 0
				}
				fc.Packets = append(fc.Packets, x)
			}
			// Country and ASN are functions of the source, as enrichment is.
			if odd {
				en.SrcCountry = append(en.SrcCountry, "")
				en.SrcAsn = append(en.SrcAsn, 0)
			} else {
				en.SrcCountry = append(en.SrcCountry, countries[v%len(countries)])
				asn := uint32(v % 23)
				if runs {
					asn = uint32(v % 3)
				}
				en.SrcAsn = append(en.SrcAsn, asn)
			}
			pk += p
		}
		if i%11 == 3 {
			// Short enrichment and short columns: missing values read as zero.
			en.SrcCountry = en.SrcCountry[:len(en.SrcCountry)/2]
			en.SrcAsn = en.SrcAsn[:len(en.SrcAsn)/3]
			r.Class = r.Class[:len(r.Class)-1]
		}
		r.Fingerprints = fps
		bin := int64(t0 + 60*(i/4) - 60*rng.IntN(2))
		if i%37 == 36 {
			bin -= 3600 // late
		}
		cb := &jasperv1.CommittedBatch{SensorId: fmt.Sprintf("s%d", i%5), SensorCountry: countries[i%3], Enrichment: en,
			ReceivedAtMs: bin*1000 + 61000 + int64(i),
			Batch: &jasperv1.Batch{Sequence: uint64(i / 5), BinStart: bin + int64(rng.IntN(60)), BinSeconds: 60, Rows: r,
				SealedAtMs: bin*1000 + 60000 + int64(rng.IntN(900)),
				Stats:      &jasperv1.SensorStats{PacketsSeen: pk + 5, PacketsSummarised: pk, KernelDrops: uint64(i % 3), ShedRows: uint64(i % 2)}}}
		if i%29 == 0 {
			cb.Enrichment = nil
		}
		log = append(log, cb)
	}
	return log
}

// goldenAnswers runs every query the dashboards use over a few filters.
func goldenAnswers(m *Module) map[string]any {
	o, n := m.Span()
	filters := map[string]Filter{
		"all": {}, "s1": {Sensor: "s1"}, "jp": {Country: "JP"}, "unknown_country": {Country: ""},
		"tcp": {Protocol: 6}, "udp": {Protocol: 17}, "gre": {Protocol: 47}, "port7": {HasPort: true, Port: 7},
		"other_port": {HasPort: true, Port: OtherPort}, "recent": {From: n.Add(-5 * time.Minute)},
		"early": {To: o.Add(3 * time.Minute)}, "s2_de_tcp": {Sensor: "s2", Country: "DE", Protocol: 6},
		"nosuch": {Sensor: "nosuch"},
	}
	out := map[string]any{"stats": m.Stats(), "sensors": m.Sensors(), "span": []time.Time{o, n}}
	for name, f := range filters {
		out["overview_1m_"+name] = m.Overview(f, time.Minute)
		out["overview_3m_"+name] = m.Overview(f, 3*time.Minute)
		limit := 25
		if name == "all" {
			limit = 0
		}
		for _, d := range []Dim{DimPort, DimCountry, DimASN, DimFingerprint, DimSensor, DimClass, DimProtocol} {
			out[fmt.Sprintf("top_%d_%s", d, name)] = m.Top(f, d, limit)
		}
		out["top5_port_"+name] = m.Top(f, DimPort, 5)
		out["hosts_"+name] = m.Hosts(f, nil, limit)
		out["hosts_v4_"+name] = m.Hosts(f, func(a netip.Addr, c string) bool { return a.Is4() && c != "FR" }, 7)
	}
	return out
}

// goldenConfig is the configuration of the golden scenarios.
func goldenConfig(runs bool) func(*Config) {
	if runs {
		return func(c *Config) { c.MaxCellsPerBin, c.MaxHostsPerBin, c.Window = 60, 40, 25*time.Minute }
	}
	return func(c *Config) { c.MaxCellsPerBin, c.MaxHostsPerBin, c.Window = 400, 120, 25*time.Minute }
}

func goldenModule(t *testing.T, runs bool) *Module {
	t.Helper()
	m := newModule(t, goldenConfig(runs))
	for i, cb := range goldenLog(42, 160, runs) {
		m.OnBatch(uint64(i+1), cb)
		if i%23 == 22 {
			m.OnTick(uint64(i+1), time.Unix(t0+int64(15*i), 0))
		}
	}
	st := m.Stats()
	if st.FoldedRows == 0 || st.DroppedHosts == 0 || st.EvictedBins == 0 || st.LateBatches == 0 || st.BadRows == 0 {
		t.Fatalf("golden log did not reach every branch: %+v", st)
	}
	return m
}

// readGolden returns the content of the gzipped file testdata/name.gz.
func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	if *updateGolden {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		_, _ = zw.Write(got)
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", name+".gz"), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want := readGolden(t, name)
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the golden file (%d vs %d bytes)", name, len(got), len(want))
	}
}

// TestGoldenAnswers pins the answers and the snapshot of logs that reach
// every branch to those of the original implementation
// (testdata/golden_*.gz, written by the map-of-structs version of the
// module before the packed-key rewrite): faster code must give the same
// answers.
func TestGoldenAnswers(t *testing.T) {
	for _, runs := range []bool{false, true} {
		suffix := ""
		if runs {
			suffix = "_runs"
		}
		t.Run("runs="+fmt.Sprint(runs), func(t *testing.T) {
			m := goldenModule(t, runs)
			ans, err := json.MarshalIndent(goldenAnswers(m), "", " ")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "golden_answers"+suffix+".json", ans)
			var snap bytes.Buffer
			if err := m.Snapshot(&snap); err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "golden_snapshot"+suffix+"_v1.json", snap.Bytes())
			// The restored module answers the same.
			r := newModule(t, goldenConfig(runs))
			if err := r.Restore(bytes.NewReader(snap.Bytes())); err != nil {
				t.Fatal(err)
			}
			ans2, err := json.MarshalIndent(goldenAnswers(r), "", " ")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ans, ans2) {
				t.Error("the restored module answers differently")
			}
		})
	}
}

// TestRestoreOldSnapshot restores the snapshot that the original
// implementation wrote (a hub before the rewrite, in a rolling upgrade):
// the new module answers as the old one did and writes the same bytes.
func TestRestoreOldSnapshot(t *testing.T) {
	old := readGolden(t, "golden_snapshot_v1.json")
	m := newModule(t, goldenConfig(false))
	if err := m.Restore(bytes.NewReader(old)); err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if err := m.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(snap.Bytes(), old) {
		t.Error("the old snapshot restored and written again differs")
	}
	ans, err := json.MarshalIndent(goldenAnswers(m), "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ans, readGolden(t, "golden_answers.json")) {
		t.Error("the module restored from the old snapshot answers differently")
	}
	// And it goes on like a module that applied the log itself.
	more := goldenLog(43, 20, true)
	live := goldenModule(t, false)
	for i, cb := range more {
		m.OnBatch(uint64(1000+i), cb)
		live.OnBatch(uint64(1000+i), cb)
	}
	var a, b bytes.Buffer
	if err := m.Snapshot(&a); err != nil {
		t.Fatal(err)
	}
	if err := live.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("the module restored from the old snapshot diverged from one that applied the log")
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
