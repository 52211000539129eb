package rollup

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/internal/benchinput"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// darknetLog is the batches of fullWindow: a default module's whole window
// (288 five-minute bins) with rowsPerBin rows per bin from 8 sensors, 30
// countries and 20,000 sources, 70 % TCP mostly on popular ports.
func darknetLog(rowsPerBin int) []*jasperv1.CommittedBatch {
	rng := rand.New(rand.NewPCG(1, 2))
	countries := []string{"US", "CN", "BR", "RU", "IN", "KR", "VN", "TW", "ID", "NL", "GB", "IT", "TR", "MX",
		"AR", "ZA", "EG", "IR", "TH", "JP", "DE", "FR", "CA", "AU", "PL", "UA", "ES", "CL", "NG", "SE"}
	popular := []uint32{23, 2323, 445, 22, 80, 443, 3389, 8080, 5060, 53, 123, 1900}
	start := int64(1_780_000_200)
	var idx uint64
	var log []*jasperv1.CommittedBatch
	for bin := range 288 {
		for s := range 8 {
			var rows []row
			for range rowsPerBin / 8 {
				src := rng.IntN(20000)
				proto, class := uint32(6), jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
				if rng.IntN(10) >= 7 {
					proto, class = 17, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
				}
				port := popular[rng.IntN(len(popular))]
				if rng.IntN(3) == 0 {
					port = uint32(rng.IntN(65536))
				}
				a := netip.AddrFrom4([4]byte{byte(1 + src>>16), byte(src >> 8), byte(src), 7})
				rows = append(rows, row{a.String(), proto, port, class, 1 + uint64(rng.IntN(5)), countries[src%30], uint32(src % 500), 0})
			}
			idx++
			log = append(log, mkBatch(fmt.Sprintf("sensor-%d", s), idx, start+int64(bin)*300, rows))
		}
	}
	return log
}

// fullWindow is a default module fed darknetLog(rowsPerBin).
func fullWindow(b *testing.B, rowsPerBin int) *Module {
	m, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	for i, cb := range darknetLog(rowsPerBin) {
		m.OnBatch(uint64(i+1), cb)
	}
	return m
}

// e2eLog mimics the hub's input in the end-to-end benchmark
// (hub/clustertest TestEndToEndThroughput): 4 sensors each send the same
// sequence of benchBatch batches (500 distinct rows, source
// 45.(seq%200).(i/250).(i%250), TCP SYN to port 1+i%1000, 1+i%7 packets,
// all in one 60 s bin), 4,000 batches in all, interleaved by sensor, each
// with an Enrichment of one entry per row as hub/ingest attaches it. With
// geo false the enrichment is what the benchmark's hubs (no geo databases)
// attach: country "" and ASN 0 for every row; with geo true each /24 gets
// one of 30 countries and one of 400 ASNs, as real databases would.
func e2eLog(geo bool) []*jasperv1.CommittedBatch {
	const sensors, perSensor, n = 4, 1000, 500
	countries := []string{"US", "CN", "BR", "RU", "IN", "KR", "VN", "TW", "ID", "NL", "GB", "IT", "TR", "MX",
		"AR", "ZA", "EG", "IR", "TH", "JP", "DE", "FR", "CA", "AU", "PL", "UA", "ES", "CL", "NG", "SE"}
	bin := int64(1_780_000_020)
	var log []*jasperv1.CommittedBatch
	for k := range perSensor {
		for s := range sensors {
			seq := uint64(1 + k)
			r := benchinput.Rows(seq, n)
			en := &jasperv1.Enrichment{SrcCountry: make([]string, n), SrcAsn: make([]uint32, n),
				SrcLabel: make([]jasperv1.SourceLabel, n), GeoDbVersion: "none"}
			for i := range n {
				en.SrcLabel[i] = jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE
				if geo {
					net24 := int(seq%200)*2 + i/250
					en.SrcCountry[i] = countries[net24%len(countries)]
					en.SrcAsn[i] = 64500 + uint32(net24%400)
				}
			}
			log = append(log, &jasperv1.CommittedBatch{SensorId: fmt.Sprintf("bench-%d", s), SensorCountry: "JP",
				Enrichment: en, ReceivedAtMs: bin*1000 + 61000,
				Batch: &jasperv1.Batch{Sequence: seq, BinStart: bin, BinSeconds: 60, Rows: r, SealedAtMs: bin*1000 + 60000,
					Stats: &jasperv1.SensorStats{PacketsSeen: 2000, PacketsSummarised: 2000}}})
		}
	}
	return log
}

// processCPU returns the user and system CPU time of the process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchOnBatch feeds the whole log into a fresh default module per
// iteration and reports the cost per row.
func benchOnBatch(b *testing.B, log []*jasperv1.CommittedBatch) {
	rows := 0
	for _, cb := range log {
		rows += len(cb.GetBatch().GetRows().GetSrcIp())
	}
	b.ReportAllocs()
	var m *Module
	cpu0 := processCPU(b)
	for b.Loop() {
		var err error
		if m, err = New(DefaultConfig()); err != nil {
			b.Fatal(err)
		}
		for i, cb := range log {
			m.OnBatch(uint64(i+1), cb)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(rows), "ns/row")
	// CPU time of the whole process (the loop and the garbage collector's
	// workers) per row: steadier than wall time on a shared machine.
	b.ReportMetric(float64((processCPU(b)-cpu0).Nanoseconds())/float64(b.N)/float64(rows), "cpu-ns/row")
	if st := m.Stats(); st.Rows != uint64(rows) || st.BadRows != 0 {
		b.Fatalf("stats %+v, want %d good rows", st, rows)
	}
}

// BenchmarkOnBatchE2E: the end-to-end benchmark's input, 2 M rows.
func BenchmarkOnBatchE2E(b *testing.B) { benchOnBatch(b, e2eLog(false)) }

// BenchmarkOnBatchE2EGeo: the same rows with countries and ASNs filled.
func BenchmarkOnBatchE2EGeo(b *testing.B) { benchOnBatch(b, e2eLog(true)) }

// BenchmarkOnBatchDarknet: a realistic darknet mix over the whole default
// window (fullWindow's 288 bins of 4,000 rows).
func BenchmarkOnBatchDarknet(b *testing.B) { benchOnBatch(b, darknetLog(4000)) }

// BenchmarkGCFullWindow is the garbage collector's cost of a full
// window's state: one forced collection with a fullWindow module live (the
// state's pointers are what the collector marks every cycle).
func BenchmarkGCFullWindow(b *testing.B) {
	m := fullWindow(b, 4000)
	runtime.GC()
	for b.Loop() {
		runtime.GC()
	}
	runtime.KeepAlive(m)
}

func BenchmarkQueriesFullWindow(b *testing.B) {
	m := fullWindow(b, 4000)
	o, n := m.Span()
	b.Logf("window %s .. %s, stats %+v", o, n, m.Stats())
	day := Filter{}
	for _, c := range []struct {
		name string
		f    func()
	}{
		{"overview_24h_15m", func() { m.Overview(day, 15*time.Minute) }},
		{"top_countries_24h", func() { m.Top(day, DimCountry, 20) }},
		{"top_tcp_ports_24h", func() { m.Top(Filter{Protocol: 6}, DimPort, 20) }},
		{"top_asns_24h", func() { m.Top(day, DimASN, 20) }},
		{"overview_1h_port_23", func() { m.Overview(Filter{From: n.Add(-time.Hour), HasPort: true, Port: 23}, 5*time.Minute) }},
		{"hosts_country_JP_24h", func() { m.Hosts(Filter{Country: "JP"}, nil, 50) }},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.f()
			}
		})
	}
}
