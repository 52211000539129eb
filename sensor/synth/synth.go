// Package synth writes synthetic darknet captures: a fixed seed gives the
// same bytes every time. The traffic imitates what a darknet receives:
// scanning sources with a Zipf-distributed packet count plus a long tail of
// one-off sources, a telnet-heavy port mix (23 and 2323 first, then 22,
// 445, 80, 8080, 3389, 5555, 443, ...), Mirai-, ZMap- and
// Masscan-fingerprinted scanners, some UDP and ping sweeps, and backscatter
// bursts (SYN/ACK, RST and ICMP unreachable) from DoS victims.
package synth

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// Config describes a capture.
type Config struct {
	// Packets to write.
	Packets int
	// Seed of the pseudo-random generator.
	Seed uint64
	// Sources is the number of distinct scanning sources to draw from.
	Sources int
	// Darknet is the destination prefix (IPv4).
	Darknet netip.Prefix
	// Start is the first packet's timestamp.
	Start time.Time
	// Rate is packets per second of capture time.
	Rate float64
	// Victims is the number of DoS victims sending backscatter.
	Victims int
}

// DefaultConfig is 2,000,000 packets from 100,000 sources into
// 198.18.0.0/16 at 40,000 packets/s starting 2026-01-01T00:00:00Z (one 60 s
// bin).
func DefaultConfig() Config {
	return Config{
		Packets: 2_000_000,
		Seed:    1,
		Sources: 100_000,
		Darknet: netip.MustParsePrefix("198.18.0.0/16"),
		Start:   time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
		Rate:    40_000,
		Victims: 200,
	}
}

// Validate names the bad field.
func (c Config) Validate() error {
	switch {
	case c.Packets < 0:
		return errors.New("packets: negative")
	case c.Sources < 1:
		return errors.New("sources: must be at least 1")
	case !c.Darknet.IsValid() || !c.Darknet.Addr().Is4() || c.Darknet.Bits() > 30:
		return errors.New("darknet: need an IPv4 prefix of /30 or larger")
	case c.Rate <= 0:
		return errors.New("rate: must be positive")
	case c.Victims < 1:
		return errors.New("victims: must be at least 1")
	}
	return nil
}

// portMix is the scan destination-port mix, weights in per mille.
var portMix = []struct {
	port   uint16
	weight int
}{
	{23, 300}, {2323, 100}, {22, 90}, {445, 70}, {80, 60}, {8080, 50}, {3389, 45}, {5555, 40},
	{443, 35}, {1433, 20}, {3306, 20}, {5900, 20}, {6379, 15}, {7547, 15}, {37215, 15},
	{52869, 10}, {8443, 10}, {81, 10}, {9200, 10}, {2222, 10}, {8888, 10}, {21, 10}, {25, 10},
	{0, 15}, // any port: a vertical sweep
}

var udpPorts = []uint16{5060, 53, 123, 1900, 161, 389, 11211, 137}

// Generator writes packets one by one.
type Generator struct {
	cfg     Config
	rng     *rand.Rand
	zipf    *rand.Zipf
	cum     []int
	buf     []byte
	next    uint64 // round-robin position in the one-off tail
	darkLo  uint32
	darkN   uint32
	victims []uint32
	burst   int // packets left in the current backscatter burst
	victim  uint32
	kind    int
}

// New returns a generator.
func New(cfg Config) (*Generator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("synth config: %w", err)
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6a6173706572)) // "jasper"
	g := &Generator{cfg: cfg, rng: rng, buf: make([]byte, 0, 128)}
	g.zipf = rand.NewZipf(rng, 1.2, 1, uint64(cfg.Sources-1))
	sum := 0
	for _, p := range portMix {
		sum += p.weight
		g.cum = append(g.cum, sum)
	}
	a := cfg.Darknet.Masked().Addr().As4()
	g.darkLo = binary.BigEndian.Uint32(a[:])
	g.darkN = uint32(1) << (32 - cfg.Darknet.Bits())
	for i := range cfg.Victims {
		g.victims = append(g.victims, publicIP(uint64(i)+1<<40))
	}
	return g, nil
}

// publicIP maps a source number to a stable, routable-looking IPv4 address
// outside 0/8, 10/8, 127/8, 198.18/15 and the multicast/reserved space.
func publicIP(n uint64) uint32 {
	z := n*0x9e3779b97f4a7c15 + 0x632be59bd9b4e019
	z = (z ^ (z >> 29)) * 0xbf58476d1ce4e5b9
	z ^= z >> 32
	ip := uint32(z)
	first := byte(ip >> 24)
	if first == 0 || first == 10 || first == 127 || first >= 224 || first == 198 {
		ip = ip&0x00ffffff | uint32(first%200+11)<<24
	}
	return ip
}

func (g *Generator) darkIP() uint32 { return g.darkLo + g.rng.Uint32N(g.darkN) }

// WriteTo writes a whole capture (pcap, Ethernet) to w.
func (g *Generator) WriteTo(w io.Writer) (int64, error) {
	bw := bufio.NewWriterSize(w, 1<<20)
	cw := &countWriter{w: bw}
	pw := pcapgo.NewWriterNanos(cw)
	if err := pw.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		return cw.n, err
	}
	step := float64(time.Second) / g.cfg.Rate
	start := g.cfg.Start.UnixNano()
	for i := range g.cfg.Packets {
		frame := g.packet()
		ts := start + int64(float64(i)*step)
		ci := gopacket.CaptureInfo{Timestamp: time.Unix(0, ts).UTC(), CaptureLength: len(frame), Length: len(frame)}
		if err := pw.WritePacket(ci, frame); err != nil {
			return cw.n, fmt.Errorf("write packet %d: %w", i, err)
		}
	}
	if err := bw.Flush(); err != nil {
		return cw.n, err
	}
	return cw.n, nil
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// packet returns the next frame (valid until the next call).
func (g *Generator) packet() []byte {
	if g.burst > 0 {
		g.burst--
		return g.backscatter()
	}
	r := g.rng.IntN(10000)
	switch {
	case r < 8: // a new backscatter burst: about 9 % of all packets
		g.victim = g.victims[g.rng.IntN(len(g.victims))]
		g.kind = g.rng.IntN(3)
		g.burst = 20 + g.rng.IntN(200)
		return g.backscatter()
	case r < 300: // ping sweep
		src := g.source()
		return g.icmp(src, g.darkIP(), 8, 0, 64-uint8(src%20), nil)
	case r < 1100: // UDP scan
		src := g.source()
		return g.udp(src, g.darkIP(), uint16(1024+src%50000), udpPorts[g.rng.IntN(len(udpPorts))], 50-uint8(src%30))
	}
	// TCP SYN scan.
	src := g.source()
	dst := g.darkIP()
	port := g.port()
	ttl := 40 + uint8(src%80)
	seq := g.rng.Uint32()
	id := uint16(g.rng.Uint32())
	switch src % 16 {
	case 3, 7: // Mirai: seq = destination address, telnet
		seq = dst
		if g.rng.IntN(10) < 9 {
			port = 23
		} else {
			port = 2323
		}
	case 5: // ZMap
		id = 54321
	case 11: // Masscan
		id = uint16((dst ^ uint32(port) ^ seq) & 0xffff)
	}
	return g.tcp(src, dst, uint16(1024+src%60000), port, seq, 0, 0x02, ttl, id)
}

// source draws a scanning source: 40 % from a Zipf distribution over the
// sources (a few heavy scanners), 60 % walking through all of them in turn
// (the long tail of sources seen once or twice).
func (g *Generator) source() uint32 {
	var n uint64
	if g.rng.IntN(10) < 4 {
		n = g.zipf.Uint64()
	} else {
		n = g.next % uint64(g.cfg.Sources)
		g.next++
	}
	return publicIP(n)
}

func (g *Generator) port() uint16 {
	r := g.rng.IntN(g.cum[len(g.cum)-1])
	for i, c := range g.cum {
		if r < c {
			if portMix[i].port == 0 {
				return uint16(1 + g.rng.IntN(65535))
			}
			return portMix[i].port
		}
	}
	return 23
}

func (g *Generator) backscatter() []byte {
	dst := g.darkIP() // the spoofed address the victim answers
	ttl := uint8(50 + g.victim%40)
	sport := uint16(80)
	if g.victim%3 == 0 {
		sport = 443
	}
	dport := uint16(1024 + g.rng.IntN(64000))
	switch g.kind {
	case 0:
		return g.tcp(g.victim, dst, sport, dport, g.rng.Uint32(), g.rng.Uint32(), 0x12, ttl, uint16(g.rng.Uint32()))
	case 1:
		return g.tcp(g.victim, dst, sport, dport, g.rng.Uint32(), g.rng.Uint32(), 0x14, ttl, uint16(g.rng.Uint32()))
	}
	// ICMP port unreachable quoting the spoofed UDP packet dst -> victim.
	var q [28]byte
	ipHeader(q[:20], dst, g.victim, 17, 44, 52, 0)
	binary.BigEndian.PutUint16(q[20:], dport)
	binary.BigEndian.PutUint16(q[22:], 53)
	binary.BigEndian.PutUint16(q[24:], 24)
	return g.icmp(g.victim, dst, 3, 3, ttl, q[:])
}

func (g *Generator) eth() []byte {
	b := g.buf[:0]
	b = append(b, 0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00)
	return b
}

func ipHeader(h []byte, src, dst uint32, proto uint8, ttl uint8, total int, id uint16) {
	h[0], h[1] = 0x45, 0
	binary.BigEndian.PutUint16(h[2:], uint16(total))
	binary.BigEndian.PutUint16(h[4:], id)
	h[6], h[7] = 0, 0
	h[8], h[9] = ttl, proto
	h[10], h[11] = 0, 0
	binary.BigEndian.PutUint32(h[12:], src)
	binary.BigEndian.PutUint32(h[16:], dst)
	binary.BigEndian.PutUint16(h[10:], ^fold(sum(h[:20], 0)))
}

func sum(b []byte, s uint32) uint32 {
	for len(b) >= 2 {
		s += uint32(b[0])<<8 | uint32(b[1])
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

func pseudo(src, dst uint32, proto uint8, n int) uint32 {
	return src>>16 + src&0xffff + dst>>16 + dst&0xffff + uint32(proto) + uint32(n)
}

func (g *Generator) tcp(src, dst uint32, sport, dport uint16, seq, ack uint32, flags, ttl uint8, id uint16) []byte {
	b := g.eth()
	b = b[:14+40]
	ipHeader(b[14:34], src, dst, 6, ttl, 40, id)
	t := b[34:54]
	binary.BigEndian.PutUint16(t[0:], sport)
	binary.BigEndian.PutUint16(t[2:], dport)
	binary.BigEndian.PutUint32(t[4:], seq)
	binary.BigEndian.PutUint32(t[8:], ack)
	t[12], t[13] = 5<<4, flags
	binary.BigEndian.PutUint16(t[14:], 1024)
	t[16], t[17], t[18], t[19] = 0, 0, 0, 0
	binary.BigEndian.PutUint16(t[16:], ^fold(sum(t, pseudo(src, dst, 6, 20))))
	g.buf = b
	return pad(b)
}

func (g *Generator) udp(src, dst uint32, sport, dport uint16, ttl uint8) []byte {
	b := g.eth()
	const payload = 12
	b = b[:14+28+payload]
	ipHeader(b[14:34], src, dst, 17, ttl, 28+payload, uint16(g.rng.Uint32()))
	u := b[34:]
	binary.BigEndian.PutUint16(u[0:], sport)
	binary.BigEndian.PutUint16(u[2:], dport)
	binary.BigEndian.PutUint16(u[4:], 8+payload)
	u[6], u[7] = 0, 0
	for i := range payload {
		u[8+i] = byte(i)
	}
	binary.BigEndian.PutUint16(u[6:], ^fold(sum(u, pseudo(src, dst, 17, 8+payload))))
	g.buf = b
	return pad(b)
}

func (g *Generator) icmp(src, dst uint32, typ, code, ttl uint8, quote []byte) []byte {
	b := g.eth()
	n := 8 + len(quote)
	if quote == nil {
		n = 8 + 16
	}
	b = b[:14+20+n]
	ipHeader(b[14:34], src, dst, 1, ttl, 20+n, uint16(g.rng.Uint32()))
	ic := b[34:]
	ic[0], ic[1], ic[2], ic[3] = typ, code, 0, 0
	binary.BigEndian.PutUint32(ic[4:], 0)
	if quote != nil {
		copy(ic[8:], quote)
	} else {
		binary.BigEndian.PutUint32(ic[4:], src)
		clear(ic[8:])
	}
	binary.BigEndian.PutUint16(ic[2:], ^fold(sum(ic, 0)))
	g.buf = b
	return pad(b)
}

// pad extends a frame to Ethernet's 60-byte minimum.
func pad(b []byte) []byte {
	for len(b) < 60 {
		b = append(b, 0)
	}
	return b
}
