package packet

import (
	"encoding/binary"
	"errors"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// Decoding layers. The gopacket layers are embedded and their
// NextLayerType overridden so that the parser stops where classification
// needs nothing more (transport payloads, tunnels, non-first fragments),
// and errors are preallocated values: decoding never allocates.

var (
	errSLL      = errors.New("linux cooked header too short")
	errSLLAddr  = errors.New("linux cooked address length above 8")
	errVersion4 = errors.New("ip version is not 4")
	errVersion6 = errors.New("ip version is not 6")
	errFrag     = errors.New("ipv6 fragment header too short")
	errShort    = errors.New("header too short")
)

// nextLayer maps an IP protocol number to the decoding layer the parser
// continues with, or stop.
func nextLayer(proto layers.IPProtocol, v6 bool) gopacket.LayerType {
	switch proto {
	case layers.IPProtocolTCP:
		return layers.LayerTypeTCP
	case layers.IPProtocolUDP:
		return layers.LayerTypeUDP
	case layers.IPProtocolICMPv4:
		return layers.LayerTypeICMPv4
	case layers.IPProtocolICMPv6:
		return layers.LayerTypeICMPv6
	}
	if v6 {
		switch proto {
		case layers.IPProtocolIPv6Routing:
			return layers.LayerTypeIPv6Routing
		case layers.IPProtocolIPv6Destination:
			return layers.LayerTypeIPv6Destination
		case layers.IPProtocolIPv6Fragment:
			return layers.LayerTypeIPv6Fragment
		}
	}
	return stop
}

// sllLayer is the Linux cooked capture header (LINKTYPE_LINUX_SLL, 16 bytes).
type sllLayer struct {
	proto   layers.EthernetType
	payload []byte
}

func (l *sllLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < 16 {
		df.SetTruncated()
		return errSLL
	}
	if binary.BigEndian.Uint16(data[4:6]) > 8 {
		return errSLLAddr
	}
	l.proto = layers.EthernetType(binary.BigEndian.Uint16(data[14:16]))
	l.payload = data[16:]
	return nil
}
func (l *sllLayer) CanDecode() gopacket.LayerClass    { return layers.LayerTypeLinuxSLL }
func (l *sllLayer) NextLayerType() gopacket.LayerType { return etherNext(l.proto) }
func (l *sllLayer) LayerPayload() []byte              { return l.payload }

func etherNext(t layers.EthernetType) gopacket.LayerType {
	switch t {
	case layers.EthernetTypeIPv4:
		return layers.LayerTypeIPv4
	case layers.EthernetTypeIPv6:
		return layers.LayerTypeIPv6
	case layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ:
		return layers.LayerTypeDot1Q
	}
	return stop
}

// rawIPLayer starts raw-IP link types: it consumes nothing and picks IPv4
// or IPv6 from the version nibble.
type rawIPLayer struct {
	data []byte
}

func (l *rawIPLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) == 0 {
		df.SetTruncated()
		return errShort
	}
	l.data = data
	return nil
}
func (l *rawIPLayer) CanDecode() gopacket.LayerClass { return layerTypeRawIP }
func (l *rawIPLayer) NextLayerType() gopacket.LayerType {
	switch l.data[0] >> 4 {
	case 4:
		return layers.LayerTypeIPv4
	case 6:
		return layers.LayerTypeIPv6
	}
	return stop
}
func (l *rawIPLayer) LayerPayload() []byte { return l.data }

type ipv4Layer struct{ layers.IPv4 }

func (l *ipv4Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) > 0 && data[0]>>4 != 4 {
		return errVersion4
	}
	return l.IPv4.DecodeFromBytes(data, df)
}

// NextLayerType decodes the transport header of unfragmented packets and of
// first fragments; non-first fragments and tunnels stop here.
func (l *ipv4Layer) NextLayerType() gopacket.LayerType {
	if l.FragOffset != 0 {
		return stop
	}
	return nextLayer(l.Protocol, false)
}

type ipv6Layer struct{ layers.IPv6 }

func (l *ipv6Layer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) > 0 && data[0]>>4 != 6 {
		return errVersion6
	}
	return l.IPv6.DecodeFromBytes(data, df)
}

func (l *ipv6Layer) NextLayerType() gopacket.LayerType {
	if l.HopByHop != nil {
		return nextLayer(l.HopByHop.NextHeader, true)
	}
	return nextLayer(l.NextHeader, true)
}

// extLayer skips IPv6 routing and destination-options headers.
type extLayer struct{ layers.IPv6ExtensionSkipper }

func (l *extLayer) NextLayerType() gopacket.LayerType { return nextLayer(l.NextHeader, true) }

// fragLayer is the IPv6 fragment header; it records whether this is a
// non-first fragment (which carries no transport header).
type fragLayer struct {
	next     uint8
	nonFirst bool
	payload  []byte
}

func (l *fragLayer) DecodeFromBytes(data []byte, df gopacket.DecodeFeedback) error {
	if len(data) < 8 {
		df.SetTruncated()
		return errFrag
	}
	l.next = data[0]
	l.nonFirst = binary.BigEndian.Uint16(data[2:4])>>3 != 0
	l.payload = data[8:]
	return nil
}
func (l *fragLayer) CanDecode() gopacket.LayerClass { return layers.LayerTypeIPv6Fragment }
func (l *fragLayer) NextLayerType() gopacket.LayerType {
	if l.nonFirst {
		return stop
	}
	return nextLayer(layers.IPProtocol(l.next), true)
}
func (l *fragLayer) LayerPayload() []byte { return l.payload }

type tcpLayer struct{ layers.TCP }

func (l *tcpLayer) NextLayerType() gopacket.LayerType { return stop }

type udpLayer struct{ layers.UDP }

func (l *udpLayer) NextLayerType() gopacket.LayerType { return stop }

type icmp4Layer struct{ layers.ICMPv4 }

func (l *icmp4Layer) NextLayerType() gopacket.LayerType { return stop }

type icmp6Layer struct{ layers.ICMPv6 }

func (l *icmp6Layer) NextLayerType() gopacket.LayerType { return stop }
