package packet_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

var (
	src4 = net.IP{203, 0, 113, 7}
	dst4 = net.IP{198, 51, 100, 20}
	src6 = net.ParseIP("2001:db8::7")
	dst6 = net.ParseIP("2001:db8:ffff::20")
)

func serialize(t testing.TB, ls ...gopacket.SerializableLayer) []byte {
	t.Helper()
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, ls...); err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf.Bytes()...)
}

func eth(t layers.EthernetType) *layers.Ethernet {
	return &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: t}
}

func ip4(p layers.IPProtocol) *layers.IPv4 {
	return &layers.IPv4{Version: 4, IHL: 5, TTL: 51, Id: 4321, Protocol: p, SrcIP: src4, DstIP: dst4}
}

func ip6(p layers.IPProtocol) *layers.IPv6 {
	return &layers.IPv6{Version: 6, HopLimit: 61, NextHeader: p, SrcIP: src6, DstIP: dst6}
}

func tcp(flags string, seq uint32) *layers.TCP {
	l := &layers.TCP{SrcPort: 40000, DstPort: 23, Seq: seq, Window: 1024}
	for _, f := range flags {
		switch f {
		case 'S':
			l.SYN = true
		case 'A':
			l.ACK = true
		case 'R':
			l.RST = true
		case 'F':
			l.FIN = true
		case 'P':
			l.PSH = true
		case 'U':
			l.URG = true
		case 'E':
			l.ECE = true
		case 'C':
			l.CWR = true
		case 'N':
			l.NS = true
		}
	}
	return l
}

func tcp4(t testing.TB, flags string) []byte {
	ip := ip4(layers.IPProtocolTCP)
	l := tcp(flags, 1000)
	l.SetNetworkLayerForChecksum(ip)
	return serialize(t, eth(layers.EthernetTypeIPv4), ip, l)
}

func decode(t testing.TB, lt layers.LinkType, frame []byte) (packet.Result, packet.Info) {
	t.Helper()
	d, err := packet.NewDecoder(lt)
	if err != nil {
		t.Fatal(err)
	}
	var info packet.Info
	r := d.Decode(frame, &info)
	return r, info
}

func TestClassifyTCPFlags(t *testing.T) {
	tests := []struct {
		flags string
		want  jasperv1.TrafficClass
		back  bool
	}{
		{"SA", synack, true},
		{"SAEC", synack, true},
		{"S", syn, false},
		{"SEC", syn, false},
		{"SR", syn, false},
		{"SF", syn, false},
		{"R", rst, true},
		{"RA", rst, true},
		{"RF", rst, true},
		{"F", fin, false},
		{"FA", fin, false},
		{"FPU", fin, false}, // Xmas scan
		{"PA", push, false},
		{"P", push, false},
		{"A", ack, false},
		{"AE", ack, false},
		{"AU", ack, false},
		{"", tother, false}, // NULL scan
		{"U", tother, false},
		{"ECN", tother, false},
	}
	for _, tt := range tests {
		t.Run("flags_"+tt.flags, func(t *testing.T) {
			r, info := decode(t, layers.LinkTypeEthernet, tcp4(t, tt.flags))
			if r != packet.OK {
				t.Fatalf("result %v", r)
			}
			if info.Class != tt.want || info.Backscatter != tt.back {
				t.Errorf("class %v backscatter %v, want %v %v", info.Class, info.Backscatter, tt.want, tt.back)
			}
			if info.Protocol != 6 || info.DstPort != 23 || info.SrcPort != 40000 || info.TTL != 51 || info.Length != 40 {
				t.Errorf("fields %+v", info)
			}
			if info.Src != netip.MustParseAddr("203.0.113.7") || info.Dst != netip.MustParseAddr("198.51.100.20") {
				t.Errorf("addresses %v -> %v", info.Src, info.Dst)
			}
		})
	}
}

func icmp4Frame(t testing.TB, typ, code uint8, payload []byte) []byte {
	return serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4),
		&layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(typ, code)}, gopacket.Payload(payload))
}

func TestClassifyICMP(t *testing.T) {
	for typ := range 256 {
		r, info := decode(t, layers.LinkTypeEthernet, icmp4Frame(t, uint8(typ), 1, nil))
		if r != packet.OK || info.Class != icmp || info.ICMPType != uint8(typ) || info.ICMPCode != 1 {
			t.Fatalf("type %d: %v %+v", typ, r, info)
		}
		want := false
		switch typ {
		case 0, 3, 4, 5, 11, 12, 14, 16, 18:
			want = true
		}
		if info.Backscatter != want {
			t.Errorf("type %d: backscatter %v", typ, info.Backscatter)
		}
	}
	// ICMPv6 echo request (no backscatter) and echo reply (backscatter).
	for _, tc := range []struct {
		typ  uint8
		back bool
	}{{128, false}, {129, true}, {135, false}, {1, true}, {2, true}, {3, true}, {4, true}, {137, true}} {
		ip := ip6(layers.IPProtocolICMPv6)
		ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(tc.typ, 0)}
		ic.SetNetworkLayerForChecksum(ip)
		r, info := decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(make([]byte, 8))))
		if r != packet.OK || info.Class != icmp || !info.IPv6 || info.Protocol != 58 || info.ICMPType != tc.typ || info.Backscatter != tc.back {
			t.Errorf("icmpv6 type %d: %v %+v", tc.typ, r, info)
		}
	}
}

func TestICMPQuotedHeader(t *testing.T) {
	// A port-unreachable quoting the UDP probe 198.51.100.20:53000 -> 192.0.2.9:161.
	inIP := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IP{198, 51, 100, 20}, DstIP: net.IP{192, 0, 2, 9}}
	inUDP := &layers.UDP{SrcPort: 53000, DstPort: 161}
	inUDP.SetNetworkLayerForChecksum(inIP)
	quoted := serialize(t, inIP, inUDP)
	r, info := decode(t, layers.LinkTypeEthernet, icmp4Frame(t, 3, 3, quoted))
	want := packet.Inner{Valid: true, Protocol: 17, Src: netip.MustParseAddr("198.51.100.20"), Dst: netip.MustParseAddr("192.0.2.9"), SrcPort: 53000, DstPort: 161}
	if r != packet.OK || info.Inner != want || !info.Backscatter {
		t.Errorf("v4: %v %+v", r, info.Inner)
	}
	// Echo replies quote nothing.
	if _, info := decode(t, layers.LinkTypeEthernet, icmp4Frame(t, 0, 0, quoted)); info.Inner.Valid {
		t.Errorf("echo reply has an inner header %+v", info.Inner)
	}
	// A quoted header cut short yields no inner header, not an error.
	if r, info := decode(t, layers.LinkTypeEthernet, icmp4Frame(t, 3, 3, quoted[:12])); r != packet.OK || info.Inner.Valid {
		t.Errorf("short quote: %v %+v", r, info.Inner)
	}
	// ICMPv6 destination unreachable quoting TCP behind a destination-options header.
	in6 := &layers.IPv6{Version: 6, HopLimit: 9, NextHeader: layers.IPProtocolIPv6Destination, SrcIP: dst6, DstIP: net.ParseIP("2001:db8:1::1")}
	opts := []byte{6, 0, 1, 4, 0, 0, 0, 0} // next header TCP, length 0, PadN
	inTCP := tcp("S", 1)
	inTCP.DstPort = 443
	inTCP.SetNetworkLayerForChecksum(in6)
	quoted6 := append(serialize(t, in6), opts...)
	quoted6 = append(quoted6, serialize(t, inTCP)[:8]...)
	ip := ip6(layers.IPProtocolICMPv6)
	ic := &layers.ICMPv6{TypeCode: layers.CreateICMPv6TypeCode(1, 4)}
	ic.SetNetworkLayerForChecksum(ip)
	frame := serialize(t, eth(layers.EthernetTypeIPv6), ip, ic, gopacket.Payload(append([]byte{0, 0, 0, 0}, quoted6...)))
	r, info = decode(t, layers.LinkTypeEthernet, frame)
	want6 := packet.Inner{Valid: true, Protocol: 6, Src: netip.MustParseAddr("2001:db8:ffff::20"), Dst: netip.MustParseAddr("2001:db8:1::1"), SrcPort: 40000, DstPort: 443}
	if r != packet.OK || info.Inner != want6 || !info.Backscatter {
		t.Errorf("v6: %v %+v", r, info.Inner)
	}
}

func TestFragments(t *testing.T) {
	payload := gopacket.Payload(make([]byte, 64))
	// Non-first IPv4 fragment of a UDP datagram: other, protocol 17.
	ip := ip4(layers.IPProtocolUDP)
	ip.FragOffset = 185
	r, info := decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), ip, payload))
	if r != packet.OK || info.Class != other || !info.Fragment || info.Protocol != 17 || info.DstPort != 0 {
		t.Errorf("non-first v4 fragment: %v %+v", r, info)
	}
	// First fragment (MF, offset 0): classified by its UDP header.
	ip = ip4(layers.IPProtocolUDP)
	ip.Flags = layers.IPv4MoreFragments
	u := &layers.UDP{SrcPort: 53, DstPort: 4444}
	u.SetNetworkLayerForChecksum(ip)
	r, info = decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), ip, u, payload))
	if r != packet.OK || info.Class != udp || info.Fragment || info.DstPort != 4444 {
		t.Errorf("first v4 fragment: %v %+v", r, info)
	}
	// IPv6 fragment headers: non-first → other of the inner protocol.
	frag := func(offset uint16, next uint8) []byte {
		h := []byte{next, 0, 0, 0, 0, 0, 0, 1}
		binary.BigEndian.PutUint16(h[2:], offset<<3|1)
		return h
	}
	v6 := ip6(layers.IPProtocolIPv6Fragment)
	r, info = decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv6), v6, gopacket.Payload(append(frag(100, 17), payload...))))
	if r != packet.OK || info.Class != other || !info.Fragment || info.Protocol != 17 {
		t.Errorf("non-first v6 fragment: %v %+v", r, info)
	}
	// First IPv6 fragment, behind hop-by-hop and routing headers, carrying TCP SYN.
	v6 = ip6(layers.IPProtocolIPv6HopByHop)
	hbh := []byte{43, 0, 1, 4, 0, 0, 0, 0} // → routing
	rt := []byte{44, 0, 0, 0, 0, 0, 0, 0}  // → fragment
	synSeg := tcp("S", 7)
	synSeg.SetNetworkLayerForChecksum(v6)
	seg := serialize(t, synSeg)
	body := append(append(append(hbh, rt...), frag(0, 6)...), seg...)
	r, info = decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv6), v6, gopacket.Payload(body)))
	if r != packet.OK || info.Class != syn || info.Fragment || info.Protocol != 6 || info.DstPort != 23 {
		t.Errorf("first v6 fragment behind extensions: %v %+v", r, info)
	}
}

func TestLinkTypes(t *testing.T) {
	ip := ip4(layers.IPProtocolTCP)
	seg := tcp("S", 5)
	seg.SetNetworkLayerForChecksum(ip)
	raw4 := serialize(t, ip, seg)
	ipv6 := ip6(layers.IPProtocolUDP)
	u := &layers.UDP{SrcPort: 1, DstPort: 5060}
	u.SetNetworkLayerForChecksum(ipv6)
	raw6 := serialize(t, ipv6, u)
	vlan := func(next layers.EthernetType) *layers.Dot1Q { return &layers.Dot1Q{VLANIdentifier: 943, Type: next} }
	sll := func(proto uint16, b []byte) []byte {
		h := make([]byte, 16)
		binary.BigEndian.PutUint16(h[2:], 1)
		binary.BigEndian.PutUint16(h[4:], 6)
		binary.BigEndian.PutUint16(h[14:], proto)
		return append(h, b...)
	}
	tests := []struct {
		name  string
		lt    layers.LinkType
		frame []byte
		want  jasperv1.TrafficClass
	}{
		{"ethernet", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), gopacket.Payload(raw4)), syn},
		{"802.1q", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeDot1Q), vlan(layers.EthernetTypeIPv4), gopacket.Payload(raw4)), syn},
		{"qinq", layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeQinQ), vlan(layers.EthernetTypeDot1Q), vlan(layers.EthernetTypeIPv6), gopacket.Payload(raw6)), udp},
		{"sll", layers.LinkTypeLinuxSLL, sll(0x0800, raw4), syn},
		{"sll v6", layers.LinkTypeLinuxSLL, sll(0x86dd, raw6), udp},
		{"raw v4", layers.LinkTypeRaw, raw4, syn},
		{"raw v6", layers.LinkTypeRaw, raw6, udp},
		{"ipv4 link", layers.LinkTypeIPv4, raw4, syn},
		{"ipv6 link", layers.LinkTypeIPv6, raw6, udp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, info := decode(t, tt.lt, tt.frame)
			if r != packet.OK || info.Class != tt.want {
				t.Fatalf("%v %+v", r, info)
			}
			if tt.want == udp && (info.DstPort != 5060 || !info.IPv6 || info.Src != netip.MustParseAddr("2001:db8::7")) {
				t.Errorf("v6 fields %+v", info)
			}
		})
	}
	if _, err := packet.NewDecoder(layers.LinkTypePPP); err == nil {
		t.Error("PPP accepted")
	}
}

func TestNonIPAndErrors(t *testing.T) {
	arp := serialize(t, eth(layers.EthernetTypeARP), &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4,
		HwAddressSize: 6, ProtAddressSize: 4, Operation: 1, SourceHwAddress: make([]byte, 6), SourceProtAddress: make([]byte, 4),
		DstHwAddress: make([]byte, 6), DstProtAddress: make([]byte, 4)})
	full := tcp4(t, "S")
	ipOnlyTCP := append([]byte(nil), full[:14+20]...)
	binary.BigEndian.PutUint16(ipOnlyTCP[16:], 20)
	badVersion := append([]byte(nil), full...)
	badVersion[14] = 0x65
	tests := []struct {
		name  string
		lt    layers.LinkType
		frame []byte
		want  packet.Result
	}{
		{"arp", layers.LinkTypeEthernet, arp, packet.NonIP},
		{"llc", layers.LinkTypeEthernet, append(serialize(t, &layers.Ethernet{SrcMAC: make([]byte, 6), DstMAC: make([]byte, 6), EthernetType: layers.EthernetTypeLLC, Length: 3}), 0x42, 0x42, 3), packet.NonIP},
		{"empty", layers.LinkTypeEthernet, nil, packet.DecodeError},
		{"short ethernet", layers.LinkTypeEthernet, full[:10], packet.DecodeError},
		{"ipv4 ethertype, no payload", layers.LinkTypeEthernet, full[:14], packet.DecodeError},
		{"truncated ip header", layers.LinkTypeEthernet, full[:14+12], packet.DecodeError},
		{"truncated tcp header", layers.LinkTypeEthernet, full[:14+20+10], packet.DecodeError},
		{"tcp protocol, no tcp header", layers.LinkTypeEthernet, ipOnlyTCP, packet.DecodeError},
		{"version 6 in an ipv4 ethertype", layers.LinkTypeEthernet, badVersion, packet.DecodeError},
		{"raw, not ip", layers.LinkTypeRaw, []byte{0x20, 1, 2, 3}, packet.DecodeError},
		{"sll address length 200", layers.LinkTypeLinuxSLL, append([]byte{0, 0, 0, 1, 0, 200}, make([]byte, 40)...), packet.DecodeError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r, _ := decode(t, tt.lt, tt.frame); r != tt.want {
				t.Errorf("got %v, want %v", r, tt.want)
			}
		})
	}
	// Other IP protocols (GRE) are class other, not errors.
	r, info := decode(t, layers.LinkTypeEthernet, serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolGRE), gopacket.Payload(make([]byte, 8))))
	if r != packet.OK || info.Class != other || info.Protocol != 47 {
		t.Errorf("gre: %v %+v", r, info)
	}
}

func TestFingerprints(t *testing.T) {
	d := binary.BigEndian.Uint32(dst4)
	build := func(id uint16, seq uint32) []byte {
		ip := ip4(layers.IPProtocolTCP)
		ip.Id = id
		l := tcp("S", seq)
		l.SetNetworkLayerForChecksum(ip)
		return serialize(t, eth(layers.EthernetTypeIPv4), ip, l)
	}
	tests := []struct {
		name string
		id   uint16
		seq  uint32
		want uint8
	}{
		{"mirai", 1, d, packet.FPMirai},
		{"zmap", 54321, 99, packet.FPZMap},
		{"masscan", uint16((d ^ 23 ^ 0x12345678) & 0xffff), 0x12345678, packet.FPMasscan},
		{"none", 1, 99, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, info := decode(t, layers.LinkTypeEthernet, build(tt.id, tt.seq))
			if info.Fingerprints != tt.want {
				t.Errorf("fingerprints %03b, want %03b", info.Fingerprints, tt.want)
			}
		})
	}
}

// TestDecodeAllocs asserts that decoding allocates nothing.
func TestDecodeAllocs(t *testing.T) {
	frames := [][]byte{tcp4(t, "S"), tcp4(t, "SA"), icmp4Frame(t, 3, 3, make([]byte, 28))}
	d, _ := packet.NewDecoder(layers.LinkTypeEthernet)
	var info packet.Info
	allocs := testing.AllocsPerRun(1000, func() {
		for _, f := range frames {
			d.Decode(f, &info)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run", allocs)
	}
}
