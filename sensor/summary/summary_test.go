package summary_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/packet"
	"github.com/jasperfed/jasper/sensor/summary"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func syn(src, dst string, port uint16) packet.Info {
	return packet.Info{
		Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst),
		IPv6: netip.MustParseAddr(src).Is6(), Protocol: 6, SrcPort: 40000, DstPort: port, TTL: 50, Length: 40,
	}
}

type collector struct {
	batches []*jasperv1.Batch
}

func (c *collector) emit(b *jasperv1.Batch) error {
	// Every batch must survive the wire.
	raw, err := proto.Marshal(b)
	if err != nil {
		return err
	}
	var back jasperv1.Batch
	if err := proto.Unmarshal(raw, &back); err != nil {
		return err
	}
	c.batches = append(c.batches, &back)
	return nil
}

func (c *collector) rows(t *testing.T) []summary.Row {
	t.Helper()
	var out []summary.Row
	for _, b := range c.batches {
		rs, err := summary.DecodeBatch(b)
		if err != nil {
			t.Fatalf("own batch refused: %v", err)
		}
		out = append(out, rs...)
	}
	return out
}

func (c *collector) stats() summary.Stats {
	var s summary.Stats
	for _, b := range c.batches {
		st := b.Stats
		s.PacketsSeen += st.PacketsSeen
		s.PacketsSummarised += st.PacketsSummarised
		s.OutsideDarknet += st.OutsideDarknet
		s.DecodeErrors += st.DecodeErrors
		s.NonIP += st.NonIp
		s.Fragments += st.Fragments
		s.OverflowRows += st.OverflowRows
		s.KernelDrops += st.KernelDrops
	}
	return s
}

func newAgg(t *testing.T, cfg summary.Config) (*summary.Aggregator, *collector) {
	t.Helper()
	c := &collector{}
	a, err := summary.NewAggregator(cfg, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func add(t *testing.T, a *summary.Aggregator, ts time.Time, info packet.Info) {
	t.Helper()
	if err := a.Add(ts, packet.OK, &info); err != nil {
		t.Fatal(err)
	}
}

func TestRowFields(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.EarlyFlush = 0 // whole-bin rows
	a, c := newAgg(t, cfg)
	p := syn("203.0.113.5", "198.51.100.1", 23)
	p.Fingerprints = packet.FPMirai | packet.FPMasscan
	add(t, a, t0.Add(1500*time.Millisecond), p)
	p.Dst = netip.MustParseAddr("198.51.100.2")
	p.TTL, p.Length, p.Fingerprints = 47, 60, packet.FPMirai
	add(t, a, t0.Add(2500*time.Millisecond), p)
	icmp := packet.Info{Class: jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::1"),
		IPv6: true, Protocol: 58, ICMPType: 1, ICMPCode: 4, TTL: 64, Length: 100, Backscatter: true}
	add(t, a, t0.Add(3*time.Second), icmp)
	frag := syn("203.0.113.5", "198.51.100.1", 0)
	frag.Class, frag.Protocol, frag.Fragment = jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER, 17, true
	add(t, a, t0.Add(4*time.Second), frag)
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	rows := c.rows(t)
	if len(rows) != 3 || len(c.batches) != 1 {
		t.Fatalf("%d rows in %d batches", len(rows), len(c.batches))
	}
	b := c.batches[0]
	if b.BinStart != t0.Unix() || b.BinSeconds != 60 || b.Partial || b.Sequence != 0 || b.SealedAtMs == 0 {
		t.Errorf("batch header %+v", b)
	}
	r := rows[0]
	want := summary.Row{SrcIP: netip.MustParseAddr("203.0.113.5"), Protocol: 6, DstPort: 23, Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN,
		Packets: 2, Bytes: 100, DstIPs: 2, FirstSeen: t0.Add(1500 * time.Millisecond), LastSeen: t0.Add(2500 * time.Millisecond),
		TTLMin: 47, TTLMax: 50, DistinctPorts: 1, Fingerprints: map[string]uint64{"mirai": 2, "masscan": 1}}
	if fmt.Sprint(r) != fmt.Sprint(want) {
		t.Errorf("tcp row\n got %+v\nwant %+v", r, want)
	}
	r = rows[1]
	if r.SrcIP != icmp.Src || r.Protocol != 58 || r.DstPort != 0 || r.ICMPType != 1 || r.ICMPCode != 4 || r.Packets != 1 || r.Bytes != 100 || r.Fingerprints != nil {
		t.Errorf("icmpv6 row %+v", r)
	}
	r = rows[2]
	if r.Protocol != 17 || r.Class != jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER || r.Fragments != 1 || r.DstPort != 0 {
		t.Errorf("fragment row %+v", r)
	}
	if s := c.stats(); s.PacketsSeen != 4 || s.PacketsSummarised != 4 || s.Fragments != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestPortCapOverflow(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.PortCap = 10
	a, c := newAgg(t, cfg)
	// One scanner sweeps 100 ports, twice; another source stays under the cap.
	for round := range 2 {
		for port := range 100 {
			add(t, a, t0.Add(time.Duration(round)*time.Second), syn("203.0.113.9", "198.51.100.1", uint16(1000+port)))
		}
	}
	for port := range 5 {
		add(t, a, t0, syn("203.0.113.10", "198.51.100.1", uint16(port+1)))
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	rows := c.rows(t)
	var normal, overflow int
	var packets uint64
	var ovPorts uint32
	for _, r := range rows {
		packets += r.Packets
		if r.SrcIP == netip.MustParseAddr("203.0.113.9") {
			if r.Overflow {
				overflow++
				ovPorts = r.DistinctPorts
				// 90 ports: above the 64 held exactly, so estimated.
				if r.DstPort != 0 || r.DistinctPorts < 81 || r.DistinctPorts > 99 || r.Packets != 180 {
					t.Errorf("overflow row %+v", r)
				}
			} else {
				normal++
				if r.Packets != 2 || r.DistinctPorts != 1 {
					t.Errorf("row %+v", r)
				}
			}
		}
	}
	if normal != 10 || overflow != 1 || len(rows) != 16 || packets != 205 {
		t.Errorf("%d normal + %d overflow rows of the scanner, %d rows, %d packets", normal, overflow, len(rows), packets)
	}
	if s := c.stats(); s.OverflowRows != uint64(ovPorts) || s.PacketsSummarised != 205 {
		t.Errorf("stats %+v", s)
	}
}

func TestDarknetFilter(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.Darknet = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:1::/48")}
	a, c := newAgg(t, cfg)
	add(t, a, t0, syn("203.0.113.1", "198.51.100.7", 23))
	add(t, a, t0, syn("203.0.113.1", "198.51.101.7", 23))
	add(t, a, t0, syn("2001:db8::1", "2001:db8:1::5", 23))
	add(t, a, t0, syn("2001:db8::1", "2001:db8:2::5", 23))
	if err := a.Add(t0, packet.NonIP, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Add(t0, packet.DecodeError, nil); err != nil {
		t.Fatal(err)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	rows := c.rows(t)
	if len(rows) != 2 {
		t.Fatalf("%d rows", len(rows))
	}
	s := c.stats()
	if s.PacketsSeen != 6 || s.OutsideDarknet != 2 || s.PacketsSummarised != 2 || s.NonIP != 1 || s.DecodeErrors != 1 {
		t.Errorf("stats %+v", s)
	}
}

func TestBinBoundary(t *testing.T) {
	a, c := newAgg(t, summary.DefaultConfig())
	add(t, a, t0.Add(59999*time.Millisecond), syn("203.0.113.1", "198.51.100.7", 23))
	if len(c.batches) != 0 {
		t.Fatal("bin sealed early")
	}
	add(t, a, t0.Add(60*time.Second), syn("203.0.113.1", "198.51.100.7", 23))
	if len(c.batches) != 1 {
		t.Fatalf("%d batches after the first packet of the next bin", len(c.batches))
	}
	// A late packet of the first bin is counted in the open bin at its start.
	add(t, a, t0.Add(30*time.Second), syn("203.0.113.2", "198.51.100.7", 23))
	// Quiet minutes, then a packet three bins later.
	add(t, a, t0.Add(200*time.Second), syn("203.0.113.1", "198.51.100.7", 23))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if len(c.batches) != 3 {
		t.Fatalf("%d batches", len(c.batches))
	}
	for i, want := range []int64{0, 60, 180} {
		b := c.batches[i]
		if b.BinStart != t0.Unix()+want {
			t.Errorf("batch %d: bin_start %d, want %d", i, b.BinStart, t0.Unix()+want)
		}
	}
	rows, _ := summary.DecodeBatch(c.batches[0])
	if len(rows) != 1 || rows[0].LastSeen != t0.Add(59999*time.Millisecond) {
		t.Errorf("first bin rows %+v", rows)
	}
	rows, _ = summary.DecodeBatch(c.batches[1])
	if len(rows) != 2 || rows[1].FirstSeen != t0.Add(60*time.Second) || c.batches[1].Stats.PacketsSeen != 2 {
		t.Errorf("second bin rows %+v stats %v", rows, c.batches[1].Stats)
	}
}

func TestRowLimit(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.MaxRowsPerBin = 5
	a, c := newAgg(t, cfg)
	for i := range 8 {
		add(t, a, t0, syn(fmt.Sprintf("203.0.113.%d", i), "198.51.100.7", 23))
		add(t, a, t0, syn(fmt.Sprintf("203.0.113.%d", i), "198.51.100.7", 23))
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	if rows := c.rows(t); len(rows) != 5 {
		t.Errorf("%d rows", len(rows))
	}
	s := c.stats()
	if s.PacketsSummarised != 10 || s.PacketsSeen != 16 || a.Totals.RowLimitDrops != 6 {
		t.Errorf("stats %+v, row-limit drops %d", s, a.Totals.RowLimitDrops)
	}
}

// TestRowLimitKeepsOverflowRows: a full bin still folds the ports of a
// source into its existing overflow row.
func TestRowLimitKeepsOverflowRows(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.MaxRowsPerBin, cfg.PortCap = 3, 1
	a, c := newAgg(t, cfg)
	add(t, a, t0, syn("203.0.113.1", "198.51.100.7", 1)) // row
	add(t, a, t0, syn("203.0.113.1", "198.51.100.7", 2)) // overflow row
	add(t, a, t0, syn("203.0.113.2", "198.51.100.7", 1)) // row: the bin is full
	add(t, a, t0, syn("203.0.113.1", "198.51.100.7", 3)) // into the overflow row
	add(t, a, t0, syn("203.0.113.3", "198.51.100.7", 1)) // dropped
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	rows := c.rows(t)
	if len(rows) != 3 || !rows[1].Overflow || rows[1].Packets != 2 || rows[1].DistinctPorts != 2 {
		t.Errorf("rows %+v", rows)
	}
	if a.Totals.RowLimitDrops != 1 || a.Totals.PacketsSummarised != 4 {
		t.Errorf("totals %+v", a.Totals)
	}
}

func TestBatchSizeBound(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.MaxBatchBytes = 4096
	cfg.EarlyFlush = 0 // one seal: only its first batch carries the stats
	a, c := newAgg(t, cfg)
	const n = 20000
	for i := range n {
		p := syn(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), "198.51.100.7", uint16(i))
		if i%3 == 0 {
			p.Fingerprints = packet.FPZMap
		}
		if i%7 == 0 {
			p.Src = netip.AddrFrom16([16]byte{0x20, 1, 0xd, 0xb8, 15: byte(i)})
			p.IPv6 = true
		}
		p.Length = uint16(i)
		add(t, a, t0.Add(time.Duration(i)*time.Millisecond), p)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	var rows int
	for i, b := range c.batches {
		if sz := proto.Size(b); sz > cfg.MaxBatchBytes {
			t.Errorf("batch %d: %d bytes > %d", i, sz, cfg.MaxBatchBytes)
		}
		if i > 0 && b.Stats.PacketsSeen != 0 {
			t.Errorf("batch %d repeats the stats", i)
		}
		rows += len(b.Rows.SrcIp)
	}
	if rows != n || len(c.batches) < 10 {
		t.Errorf("%d rows in %d batches", rows, len(c.batches))
	}
	if c.stats().PacketsSeen != n {
		t.Errorf("stats %+v", c.stats())
	}
}

func TestDistinctDestinations(t *testing.T) {
	for _, n := range []int{1, 4, 5, 64, 65, 200, 1000, 20000, 300000} {
		a, c := newAgg(t, summary.DefaultConfig())
		for i := range n {
			p := syn("203.0.113.1", netip.AddrFrom4([4]byte{198, byte(i >> 16), byte(i >> 8), byte(i)}).String(), 23)
			add(t, a, t0, p)
			add(t, a, t0, p) // repeats do not count
		}
		if err := a.Flush(); err != nil {
			t.Fatal(err)
		}
		rows := c.rows(t)
		got := float64(rows[0].DstIPs)
		tol := 0.0
		if n > 64 {
			tol = 0.2 * float64(n) // HyperLogLog with 256 registers: 6.5 % standard error
		}
		if d := got - float64(n); d > tol || -d > tol {
			t.Errorf("%d destinations counted as %v", n, got)
		}
	}
}

func TestZeroAllocsOnKnownKeys(t *testing.T) {
	a, _ := newAgg(t, summary.DefaultConfig())
	infos := []packet.Info{
		syn("203.0.113.1", "198.51.100.7", 23),
		syn("203.0.113.2", "198.51.100.8", 2323),
		syn("2001:db8::1", "2001:db8:1::1", 445),
	}
	// Warm up: create the keys, and push one row into a sketch slot.
	for i := range 100 {
		for _, p := range infos {
			p.Dst = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			if p.IPv6 {
				p.Dst = netip.AddrFrom16([16]byte{0x20, 1, 15: byte(i)})
			}
			add(t, a, t0, p)
		}
	}
	ts := t0.Add(time.Second)
	allocs := testing.AllocsPerRun(1000, func() {
		for i := range infos {
			if err := a.Add(ts, packet.OK, &infos[i]); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run on known keys", allocs)
	}
}

func TestRunOnCapture(t *testing.T) {
	src, err := capture.OpenFile(filepath.Join("..", "testdata", "pcaps", "stopddos__amp.TCP.reflection.SYNACK.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	c := &collector{}
	if err := summary.Run(context.Background(), src, summary.DefaultConfig(), c.emit); err != nil {
		t.Fatal(err)
	}
	// A file is binned on its own timestamps, never on the wall clock: the
	// 0.15 s capture is one bin, split into batches.
	for _, b := range c.batches {
		if b.BinStart != c.batches[0].BinStart || b.Partial {
			t.Errorf("batch of bin %d partial=%v, first bin %d", b.BinStart, b.Partial, c.batches[0].BinStart)
		}
	}
	rows := c.rows(t)
	byClass := map[jasperv1.TrafficClass]uint64{}
	srcs := map[netip.Addr]bool{}
	for _, r := range rows {
		byClass[r.Class] += r.Packets
		srcs[r.SrcIP] = true
	}
	// The same numbers as tshark's (see sensor/packet TestRealCaptures).
	want := map[jasperv1.TrafficClass]uint64{
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK: 6651, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN: 1,
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST: 1018, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_PUSH: 4,
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_ACK: 5, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP: 163,
		jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP: 153, jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER: 1,
	}
	if fmt.Sprint(byClass) != fmt.Sprint(want) {
		t.Errorf("packets by class %v, want %v", byClass, want)
	}
	s := c.stats()
	if s.PacketsSeen != 8000 || s.NonIP != 4 || s.PacketsSummarised != 7996 || s.Fragments != 1 {
		t.Errorf("stats %+v", s)
	}
	// 7,055 distinct sources per the capture's MANIFEST, plus the victim's own traffic.
	if len(srcs) < 7055 {
		t.Errorf("%d sources", len(srcs))
	}
}

// TestRunDarknetOnCapture: the DNS amplification capture sends 4,397 IPv4
// packets to 10.10.10.10 and 15 IPv6 packets, 12 of them to
// 2a01:4f8:221:17d3::2 (counted with tshark -T fields -e ip.dst -e ipv6.dst).
func TestRunDarknetOnCapture(t *testing.T) {
	src, err := capture.OpenFile(filepath.Join("..", "testdata", "pcaps", "stopddos__amp.dns.RRSIG.fragmented.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	cfg := summary.DefaultConfig()
	cfg.Darknet = []netip.Prefix{netip.MustParsePrefix("10.10.10.0/24"), netip.MustParsePrefix("2a01:4f8:221:17d3::/64")}
	c := &collector{}
	totals, err := summary.RunStats(context.Background(), src, cfg, c.emit)
	if err != nil {
		t.Fatal(err)
	}
	s := c.stats()
	if s.PacketsSeen != 4412 || s.PacketsSummarised != 4409 || s.OutsideDarknet != 3 || s.Fragments != 726 {
		t.Errorf("stats %+v", s)
	}
	if s.PacketsSeen != s.PacketsSummarised+s.OutsideDarknet+s.DecodeErrors+s.NonIP+totals.RowLimitDrops {
		t.Errorf("stats do not add up: %+v, row-limit drops %d", s, totals.RowLimitDrops)
	}
	var packets, frags uint64
	var v6 bool
	for _, r := range c.rows(t) {
		packets += r.Packets
		frags += uint64(r.Fragments)
		v6 = v6 || r.SrcIP.Is6()
	}
	if packets != 4409 || frags != 726 || !v6 {
		t.Errorf("rows hold %d packets, %d fragments, ipv6 %v", packets, frags, v6)
	}
}
