package packet

import (
	"encoding/binary"
	"net/netip"
)

// quotedIPv4 reads the IPv4 header (and the first bytes of its transport
// header) quoted in an ICMPv4 error message.
func quotedIPv4(b []byte) Inner {
	if len(b) < 20 || b[0]>>4 != 4 {
		return Inner{}
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return Inner{}
	}
	in := Inner{
		Valid:    true,
		Protocol: b[9],
		Src:      netip.AddrFrom4([4]byte(b[12:16])),
		Dst:      netip.AddrFrom4([4]byte(b[16:20])),
	}
	fragOff := binary.BigEndian.Uint16(b[6:8]) & 0x1fff
	if fragOff == 0 {
		in.SrcPort, in.DstPort = quotedPorts(in.Protocol, b[ihl:])
	}
	return in
}

// quotedIPv6 reads the IPv6 header quoted in an ICMPv6 error message,
// skipping extension headers.
func quotedIPv6(b []byte) Inner {
	if len(b) < 40 || b[0]>>4 != 6 {
		return Inner{}
	}
	in := Inner{
		Valid: true,
		Src:   netip.AddrFrom16([16]byte(b[8:24])),
		Dst:   netip.AddrFrom16([16]byte(b[24:40])),
	}
	next := b[6]
	rest := b[40:]
	// At most 8 extension headers; each is at least 8 bytes long.
	for range 8 {
		switch next {
		case 0, 43, 60: // hop-by-hop, routing, destination options
			if len(rest) < 2 {
				in.Protocol = next
				return in
			}
			n := int(rest[1])*8 + 8
			if len(rest) < n {
				in.Protocol = next
				return in
			}
			next, rest = rest[0], rest[n:]
			continue
		case 44: // fragment
			if len(rest) < 8 {
				in.Protocol = next
				return in
			}
			nonFirst := binary.BigEndian.Uint16(rest[2:4])>>3 != 0
			next, rest = rest[0], rest[8:]
			if nonFirst {
				in.Protocol = next
				return in
			}
			continue
		}
		break
	}
	in.Protocol = next
	in.SrcPort, in.DstPort = quotedPorts(next, rest)
	return in
}

func quotedPorts(proto uint8, b []byte) (src, dst uint16) {
	if (proto == ProtoTCP || proto == ProtoUDP) && len(b) >= 4 {
		return binary.BigEndian.Uint16(b[0:2]), binary.BigEndian.Uint16(b[2:4])
	}
	return 0, 0
}
