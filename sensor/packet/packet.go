// Package packet decodes captured frames and classifies each IP packet into
// exactly one traffic class of DESIGN.md, with the backscatter bit, tool
// fingerprints (Mirai, ZMap, Masscan) and, for ICMP errors, the quoted inner
// header.
//
// A Decoder is built for one link type and reuses preallocated gopacket
// layers through a DecodingLayerParser: decoding a frame allocates nothing.
// A Decoder is not safe for concurrent use; use one per goroutine.
package packet

import (
	"fmt"
	"net/netip"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// IP protocol numbers the classifier names.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// Fingerprint bits in Info.Fingerprints.
const (
	FPMirai uint8 = 1 << iota
	FPZMap
	FPMasscan
	// NumFingerprints is the number of fingerprint bits.
	NumFingerprints = 3
)

// FingerprintNames are the wire names of the fingerprint bits, in bit order.
var FingerprintNames = [NumFingerprints]string{"mirai", "zmap", "masscan"}

// Result says what a frame turned out to be.
type Result uint8

const (
	// OK: an IPv4/IPv6 packet, classified; Info is valid.
	OK Result = iota
	// NonIP: a well-formed frame that carries no IP packet (ARP, LLDP, ...).
	NonIP
	// DecodeError: a truncated or malformed frame.
	DecodeError
)

func (r Result) String() string {
	switch r {
	case OK:
		return "ok"
	case NonIP:
		return "non_ip"
	case DecodeError:
		return "decode_error"
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// Inner is the header an ICMP error message quotes (the packet that caused
// the error). Valid is false when the message quotes nothing usable.
type Inner struct {
	Valid    bool
	Protocol uint8
	Src, Dst netip.Addr
	// SrcPort and DstPort are set for quoted TCP and UDP headers.
	SrcPort, DstPort uint16
}

// Info is what the classifier learnt about one IP packet. The decoder
// overwrites it on every call.
type Info struct {
	Class jasperv1.TrafficClass
	// IPv6 is true for IPv6 packets.
	IPv6     bool
	Src, Dst netip.Addr
	// Protocol is the transport protocol, after IPv6 extension headers.
	Protocol uint8
	// SrcPort and DstPort for TCP and UDP, else 0.
	SrcPort, DstPort uint16
	// ICMPType and ICMPCode for ICMP and ICMPv6, else 0.
	ICMPType, ICMPCode uint8
	// TCPFlags is the TCP flags byte (FIN 0x01 ... CWR 0x80).
	TCPFlags uint8
	// TTL (IPv4) or hop limit (IPv6).
	TTL uint8
	// Length is the IP packet length from the IP header (total length for
	// IPv4, payload length + 40 for IPv6).
	Length uint16
	// IPID is the IPv4 identification field (0 for IPv6).
	IPID uint16
	// Seq is the TCP sequence number.
	Seq uint32
	// Fragment is true for a non-first fragment (no transport header).
	Fragment bool
	// Backscatter is true for packets that answer someone else's traffic:
	// SYN+ACK, RST, and ICMP replies/errors (see IsBackscatterICMP).
	Backscatter bool
	// Fingerprints is a set of FP* bits.
	Fingerprints uint8
	// Inner is the header quoted by an ICMP error.
	Inner Inner
}

// Counters count every frame a Decoder saw, by outcome.
type Counters struct {
	Frames       uint64
	IP           uint64
	NonIP        uint64
	DecodeErrors uint64
	Fragments    uint64
}

// layer type numbers for the decoding layers gopacket does not have. They
// are above gopacket's own range and never registered globally.
const layerTypeRawIP gopacket.LayerType = 1900

// stop ends the parser without error: the caller inspects what was decoded.
var stop = gopacket.LayerTypeZero

// Decoder decodes and classifies frames of one link type.
type Decoder struct {
	linkType layers.LinkType
	parser   *gopacket.DecodingLayerParser
	decoded  []gopacket.LayerType

	eth   layers.Ethernet
	dot1q layers.Dot1Q
	sll   sllLayer
	raw   rawIPLayer
	ip4   ipv4Layer
	ip6   ipv6Layer
	ext   extLayer
	frag  fragLayer
	tcp   tcpLayer
	udp   udpLayer
	icmp4 icmp4Layer
	icmp6 icmp6Layer

	// Counters of every frame given to Decode.
	Counters Counters
}

// Supported reports whether NewDecoder accepts a link type.
func Supported(lt layers.LinkType) bool {
	_, ok := firstLayer(lt)
	return ok
}

func firstLayer(lt layers.LinkType) (gopacket.LayerType, bool) {
	switch lt {
	case layers.LinkTypeEthernet:
		return layers.LayerTypeEthernet, true
	case layers.LinkTypeLinuxSLL:
		return layers.LayerTypeLinuxSLL, true
	case layers.LinkTypeRaw, layers.LinkTypeIPv4, layers.LinkTypeIPv6, 12, 14: // 12/14: DLT_RAW on some BSDs
		return layerTypeRawIP, true
	}
	return 0, false
}

// NewDecoder returns a decoder for frames of link type lt.
func NewDecoder(lt layers.LinkType) (*Decoder, error) {
	first, ok := firstLayer(lt)
	if !ok {
		return nil, fmt.Errorf("unsupported link type %d (%s)", int(lt), lt)
	}
	d := &Decoder{linkType: lt, decoded: make([]gopacket.LayerType, 0, 32)}
	d.parser = gopacket.NewDecodingLayerParser(first)
	d.parser.SetDecodingLayerContainer(gopacket.DecodingLayerSparse(nil))
	for _, l := range []gopacket.DecodingLayer{
		&d.eth, &d.dot1q, &d.sll, &d.raw,
		&d.ip4, &d.ip6, &d.ext, &d.frag,
		&d.tcp, &d.udp, &d.icmp4, &d.icmp6,
	} {
		d.parser.AddDecodingLayer(l)
	}
	d.parser.IgnoreUnsupported = true
	return d, nil
}

// LinkType is the link type the decoder was built for.
func (d *Decoder) LinkType() layers.LinkType { return d.linkType }

// Decode decodes one frame into info and counts it. Info is valid only when
// the result is OK. It never panics on malformed input.
func (d *Decoder) Decode(data []byte, info *Info) Result {
	d.Counters.Frames++
	r := d.decode(data, info)
	switch r {
	case OK:
		d.Counters.IP++
		if info.Fragment {
			d.Counters.Fragments++
		}
	case NonIP:
		d.Counters.NonIP++
	default:
		d.Counters.DecodeErrors++
	}
	return r
}

func (d *Decoder) decode(data []byte, info *Info) Result {
	d.frag.nonFirst = false
	err := d.parser.DecodeLayers(data, &d.decoded)
	var (
		haveIP4, haveIP6 bool
		transport        gopacket.LayerType
		linkNext         layers.EthernetType
		raw              bool
	)
	for _, t := range d.decoded {
		switch t {
		case layers.LayerTypeIPv4:
			haveIP4 = true
		case layers.LayerTypeIPv6:
			haveIP6 = true
		case layers.LayerTypeTCP, layers.LayerTypeUDP, layers.LayerTypeICMPv4, layers.LayerTypeICMPv6:
			transport = t
		case layers.LayerTypeEthernet:
			linkNext = d.eth.EthernetType
		case layers.LayerTypeDot1Q:
			linkNext = d.dot1q.Type
		case layers.LayerTypeLinuxSLL:
			linkNext = d.sll.proto
		case layerTypeRawIP:
			raw = true
		}
	}
	if !haveIP4 && !haveIP6 {
		if err != nil || raw {
			return DecodeError
		}
		switch linkNext {
		case layers.EthernetTypeIPv4, layers.EthernetTypeIPv6, layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ:
			// An IP ethertype with no usable payload, or a VLAN tag
			// with nothing after it: malformed, not "non-IP".
			return DecodeError
		}
		return NonIP
	}
	*info = Info{}
	if haveIP4 {
		ip := &d.ip4.IPv4
		info.Src = netip.AddrFrom4([4]byte(ip.SrcIP))
		info.Dst = netip.AddrFrom4([4]byte(ip.DstIP))
		info.Protocol = uint8(ip.Protocol)
		info.TTL = ip.TTL
		info.Length = ip.Length
		info.IPID = ip.Id
		info.Fragment = ip.FragOffset != 0
		if info.IPID == 54321 {
			info.Fingerprints |= FPZMap
		}
	} else {
		ip := &d.ip6.IPv6
		info.IPv6 = true
		info.Src = netip.AddrFrom16([16]byte(ip.SrcIP))
		info.Dst = netip.AddrFrom16([16]byte(ip.DstIP))
		info.Protocol = uint8(ip.NextHeader)
		info.TTL = ip.HopLimit
		info.Length = ip.Length + 40
		if ip.HopByHop != nil {
			info.Protocol = uint8(ip.HopByHop.NextHeader)
		}
		for _, t := range d.decoded {
			switch t {
			case layers.LayerTypeIPv6Routing, layers.LayerTypeIPv6Destination, layers.LayerTypeIPv6HopByHop:
				info.Protocol = uint8(d.ext.NextHeader)
			case layers.LayerTypeIPv6Fragment:
				info.Protocol = d.frag.next
			}
		}
		info.Fragment = d.frag.nonFirst
	}
	if err != nil {
		// The IP header was fine but what follows is not (truncated
		// transport header, bad extension header).
		return DecodeError
	}
	if info.Fragment {
		info.Class = jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER
		return OK
	}
	switch info.Protocol {
	case ProtoTCP:
		if transport != layers.LayerTypeTCP {
			return DecodeError
		}
		t := &d.tcp.TCP
		info.SrcPort, info.DstPort = uint16(t.SrcPort), uint16(t.DstPort)
		info.Seq = t.Seq
		info.TCPFlags = tcpFlags(t)
		info.Class = ClassifyTCP(info.TCPFlags)
		info.Backscatter = info.Class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK || info.Class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST
		if haveIP4 {
			dst := info.Dst.As4()
			d32 := uint32(dst[0])<<24 | uint32(dst[1])<<16 | uint32(dst[2])<<8 | uint32(dst[3])
			if t.Seq == d32 {
				info.Fingerprints |= FPMirai
			}
			if uint16((d32^uint32(info.DstPort)^t.Seq)&0xffff) == info.IPID {
				info.Fingerprints |= FPMasscan
			}
		}
	case ProtoUDP:
		if transport != layers.LayerTypeUDP {
			return DecodeError
		}
		info.SrcPort, info.DstPort = uint16(d.udp.SrcPort), uint16(d.udp.DstPort)
		info.Class = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
	case ProtoICMP:
		if transport != layers.LayerTypeICMPv4 {
			return DecodeError
		}
		info.ICMPType, info.ICMPCode = d.icmp4.TypeCode.Type(), d.icmp4.TypeCode.Code()
		info.Class = jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP
		info.Backscatter = IsBackscatterICMP(false, info.ICMPType)
		if isICMPv4Error(info.ICMPType) {
			info.Inner = quotedIPv4(d.icmp4.Payload)
		}
	case ProtoICMPv6:
		if transport != layers.LayerTypeICMPv6 {
			return DecodeError
		}
		info.ICMPType, info.ICMPCode = d.icmp6.TypeCode.Type(), d.icmp6.TypeCode.Code()
		info.Class = jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP
		info.Backscatter = IsBackscatterICMP(true, info.ICMPType)
		if info.ICMPType >= 1 && info.ICMPType <= 4 && len(d.icmp6.Payload) >= 4 {
			info.Inner = quotedIPv6(d.icmp6.Payload[4:])
		}
	default:
		info.Class = jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER
	}
	return OK
}

func tcpFlags(t *layers.TCP) uint8 {
	var f uint8
	if t.FIN {
		f |= 0x01
	}
	if t.SYN {
		f |= 0x02
	}
	if t.RST {
		f |= 0x04
	}
	if t.PSH {
		f |= 0x08
	}
	if t.ACK {
		f |= 0x10
	}
	if t.URG {
		f |= 0x20
	}
	if t.ECE {
		f |= 0x40
	}
	if t.CWR {
		f |= 0x80
	}
	return f
}

// ClassifyTCP maps TCP flags to a class, first match wins, ignoring
// ECE/CWR/NS/URG: SYN+ACK, SYN, RST (with or without ACK), FIN, PSH, ACK
// only, anything else.
func ClassifyTCP(flags uint8) jasperv1.TrafficClass {
	const fin, syn, rst, psh, ack = 0x01, 0x02, 0x04, 0x08, 0x10
	f := flags & (fin | syn | rst | psh | ack)
	switch {
	case f&(syn|ack) == syn|ack:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK
	case f&syn != 0:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
	case f&rst != 0:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST
	case f&fin != 0:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_FIN
	case f&psh != 0:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_PUSH
	case f == ack:
		return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_ACK
	}
	return jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_OTHER
}

// IsBackscatterICMP reports whether an ICMP type is a reply or error, i.e.
// backscatter. ICMPv4: types 0, 3, 4, 5, 11, 12, 14, 16, 18 (CAIDA). ICMPv6:
// the equivalents that exist — destination unreachable (1), packet too big
// (2), time exceeded (3), parameter problem (4), echo reply (129) and
// redirect (137); ICMPv6 has no source quench, timestamp, information or
// address-mask messages.
func IsBackscatterICMP(v6 bool, typ uint8) bool {
	if v6 {
		switch typ {
		case 1, 2, 3, 4, 129, 137:
			return true
		}
		return false
	}
	switch typ {
	case 0, 3, 4, 5, 11, 12, 14, 16, 18:
		return true
	}
	return false
}

// isICMPv4Error reports the ICMPv4 types that quote the offending packet.
func isICMPv4Error(typ uint8) bool {
	switch typ {
	case 3, 4, 5, 11, 12:
		return true
	}
	return false
}
