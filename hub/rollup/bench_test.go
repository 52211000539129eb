package rollup

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// fullWindow fills a default module's whole window (288 five-minute bins)
// with rowsPerBin rows per bin from 8 sensors, 30 countries and 20,000
// sources, 70 % TCP mostly on popular ports.
func fullWindow(b *testing.B, rowsPerBin int) *Module {
	m, err := New(DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	countries := []string{"US", "CN", "BR", "RU", "IN", "KR", "VN", "TW", "ID", "NL", "GB", "IT", "TR", "MX",
		"AR", "ZA", "EG", "IR", "TH", "JP", "DE", "FR", "CA", "AU", "PL", "UA", "ES", "CL", "NG", "SE"}
	popular := []uint32{23, 2323, 445, 22, 80, 443, 3389, 8080, 5060, 53, 123, 1900}
	start := int64(1_780_000_200)
	var idx uint64
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
			m.OnBatch(idx, mkBatch(fmt.Sprintf("sensor-%d", s), idx, start+int64(bin)*300, rows))
		}
	}
	return m
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
