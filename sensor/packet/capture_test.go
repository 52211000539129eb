package packet_test

import (
	"errors"
	"io"
	"path/filepath"
	"testing"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/packet"
)

type fileCounts struct {
	class     map[jasperv1.TrafficClass]int
	res       map[packet.Result]int
	fp        [packet.NumFingerprints]int
	frags     int
	back      int
	inner     int
	icmpType3 int
}

func countFile(t *testing.T, name string) fileCounts {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("..", "testdata", "pcaps", name))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dec, err := packet.NewDecoder(src.LinkType())
	if err != nil {
		t.Fatal(err)
	}
	c := fileCounts{class: map[jasperv1.TrafficClass]int{}, res: map[packet.Result]int{}}
	var info packet.Info
	for {
		data, _, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		r := dec.Decode(data, &info)
		c.res[r]++
		if r != packet.OK {
			continue
		}
		c.class[info.Class]++
		for i := range packet.NumFingerprints {
			if info.Fingerprints&(1<<i) != 0 {
				c.fp[i]++
			}
		}
		if info.Fragment {
			c.frags++
		}
		if info.Backscatter {
			c.back++
		}
		if info.Inner.Valid {
			c.inner++
		}
	}
	if got := dec.Counters; got.Frames != uint64(c.res[packet.OK]+c.res[packet.NonIP]+c.res[packet.DecodeError]) ||
		got.NonIP != uint64(c.res[packet.NonIP]) || got.DecodeErrors != uint64(c.res[packet.DecodeError]) ||
		got.Fragments != uint64(c.frags) {
		t.Errorf("decoder counters %+v disagree with results %v", got, c.res)
	}
	return c
}

const (
	synack = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK
	syn    = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
	rst    = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST
	fin    = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_FIN
	push   = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_PUSH
	ack    = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_ACK
	tother = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_OTHER
	udp    = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
	icmp   = jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP
	other  = jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER
)

// TestRealCaptures compares per-class counts with tshark 4.0.17 on the same
// files, with reassembly off (-o ip.defragment:FALSE), using display filters
// such as "tcp.flags.syn==1 && tcp.flags.ack==1 && !icmp && !icmpv6" for
// tcp_synack, "udp && !icmp && !icmpv6" for udp, "icmp || icmpv6" for icmp
// and "ip.frag_offset > 0" for non-first fragments (the !icmp keeps the
// headers quoted inside ICMP errors out of the TCP/UDP counts).
func TestRealCaptures(t *testing.T) {
	type fps = [packet.NumFingerprints]int // mirai, zmap, masscan
	tests := []struct {
		file    string
		class   map[jasperv1.TrafficClass]int
		nonIP   int
		frags   int
		fp      fps
		back    int
		quoting int
	}{
		{"stopddos__amp.TCP.reflection.SYNACK.pcap", map[jasperv1.TrafficClass]int{
			synack: 6651, syn: 1, rst: 1018, push: 4, ack: 5, udp: 163, icmp: 153, other: 1}, 4, 1, fps{}, 6651 + 1018 + 153, 153},
		{"stopddos__pkt.TCP.synflood.spoofed.pcap", map[jasperv1.TrafficClass]int{syn: 37841}, 0, 0, fps{0, 1, 0}, 0, 0},
		{"stopddos__amp.UDP.snmp.src161.pcapng", map[jasperv1.TrafficClass]int{udp: 4079, icmp: 294}, 0, 0, fps{}, 294, 294},
		{"stopddos__amp.UDP.bacnet.IOT.37810.pcapng", map[jasperv1.TrafficClass]int{udp: 9462, icmp: 155}, 0, 0, fps{0, 1, 0}, 155, 155},
		{"stopddos__amp.UDP.isakmp.pcap", map[jasperv1.TrafficClass]int{udp: 3984}, 0, 0, fps{}, 0, 0},
		// tshark counts 575 UDP: it also decodes the UDP datagram tunnelled
		// inside frame 4194 (IP/GRE/IP). jasper classifies what reached the
		// sensor, the outer packet: class other. 726 non-first fragments +
		// that tunnel = 727 other.
		{"stopddos__amp.dns.RRSIG.fragmented.pcap", map[jasperv1.TrafficClass]int{
			synack: 23, syn: 290, rst: 82, fin: 45, push: 618, ack: 2046, udp: 574, icmp: 7, other: 727}, 0, 726, fps{0, 20, 0}, 105, 0},
		// masscan: 1001 SYN probes + 2 of its 4 RSTs follow the masscan IP
		// ID rule. The UDP probes carry no sequence number, so the rule
		// (IP ID == dst ^ dport ^ seq) cannot flag them.
		{"esnet__masscan_tcp_0_1000_20190821.pcap", map[jasperv1.TrafficClass]int{syn: 1001, rst: 4}, 0, 0, fps{0, 0, 1003}, 4, 0},
		{"esnet__masscan_udp_0_1000_20190821.pcap", map[jasperv1.TrafficClass]int{udp: 1001}, 0, 0, fps{}, 0, 0},
		{"chrissanders__synscan.pcapng", map[jasperv1.TrafficClass]int{synack: 12, syn: 1994, rst: 5}, 0, 0, fps{0, 1, 0}, 17, 0},
		{"chrissanders__ppa1e_osfingerprinting.pcap", map[jasperv1.TrafficClass]int{icmp: 36}, 0, 0, fps{}, 15, 0},
		{"markofu__evilfingers_nmap_UDP_SCAN.pcap", map[jasperv1.TrafficClass]int{udp: 1034, icmp: 993}, 1, 0, fps{}, 993, 993},
		{"markofu__evilfingers_nmap_XMAS_TREE_SCAN.pcap", map[jasperv1.TrafficClass]int{fin: 1000, rst: 1000}, 0, 0, fps{}, 1000, 0},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			c := countFile(t, tt.file)
			for _, cl := range []jasperv1.TrafficClass{synack, syn, rst, fin, push, ack, tother, udp, icmp, other} {
				if c.class[cl] != tt.class[cl] {
					t.Errorf("%s: got %d packets, tshark %d", cl, c.class[cl], tt.class[cl])
				}
			}
			if c.res[packet.NonIP] != tt.nonIP || c.res[packet.DecodeError] != 0 {
				t.Errorf("non-IP %d (want %d), decode errors %d (want 0)", c.res[packet.NonIP], tt.nonIP, c.res[packet.DecodeError])
			}
			if c.frags != tt.frags {
				t.Errorf("fragments %d, want %d", c.frags, tt.frags)
			}
			if c.fp != tt.fp {
				t.Errorf("fingerprints (mirai, zmap, masscan) %v, want %v", c.fp, tt.fp)
			}
			if c.back != tt.back {
				t.Errorf("backscatter %d, want %d", c.back, tt.back)
			}
			if c.inner != tt.quoting {
				t.Errorf("ICMP errors with a quoted header %d, want %d", c.inner, tt.quoting)
			}
		})
	}
}
