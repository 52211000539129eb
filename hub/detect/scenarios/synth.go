package scenarios

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

// SynthSpec describes a synthetic scenario; the generator is
// deterministic (a fixed seed gives the same packets).
type SynthSpec struct {
	Seed uint64 `yaml:"seed"`
	// Start of the traffic (UTC) and how long it lasts.
	Start    time.Time     `yaml:"start"`
	Duration time.Duration `yaml:"duration"`
	// Sensors and their dark prefixes (IPv4).
	Sensors []SynthSensor `yaml:"sensors"`
	// Countries maps source prefixes to countries: a tiny country database
	// is built from it for enrichment.
	Countries map[string]string `yaml:"countries"`
	// Background is benign darknet rhythm: per port, distinct sources per
	// bin following a daily sine and a weekend factor, drawn from pools.
	Background []BackgroundPort `yaml:"background"`
	// Research scanners sweep every background port every bin.
	Research []ResearchNoise `yaml:"research_noise"`
	// Outbreaks plant infected hosts scanning a port.
	Outbreaks []Outbreak `yaml:"outbreaks"`
	// Attacks plant DoS victims sending backscatter.
	Attacks []Attack `yaml:"attacks"`
}

// SynthSensor is one synthetic sensor.
type SynthSensor struct {
	ID      string `yaml:"id"`
	Darknet string `yaml:"darknet"`
}

// BackgroundPort is benign scanning of one port.
type BackgroundPort struct {
	Protocol string  `yaml:"protocol"`
	Port     uint16  `yaml:"port"`
	Sources  float64 `yaml:"sources"`   // mean distinct sources a bin
	Amp      float64 `yaml:"amplitude"` // daily relative amplitude
	Weekend  float64 `yaml:"weekend"`   // weekend factor (1: none)
	// Pool prefixes the sources are drawn from (uniformly).
	Pool []string `yaml:"pool"`
	// Mirai is the share of these sources carrying the mirai fingerprint.
	Mirai float64 `yaml:"mirai"`
}

// ResearchNoise is a research scanner sweeping every background port.
type ResearchNoise struct {
	Prefix  string `yaml:"prefix"`
	Hosts   int    `yaml:"hosts"`
	Packets int    `yaml:"packets"` // packets per host, port and bin
}

// Outbreak plants bots: from Start, Rate new bots a minute join (up to
// Max), each sending Packets (mean, per bin) to Port. A share Mirai of the
// bots carry the mirai fingerprint; the others are a variant without it.
type Outbreak struct {
	Protocol string        `yaml:"protocol"`
	Port     uint16        `yaml:"port"`
	Start    time.Time     `yaml:"start"`
	Duration time.Duration `yaml:"duration"`
	Prefix   string        `yaml:"prefix"`
	Rate     float64       `yaml:"rate"`
	Max      int           `yaml:"max"`
	Packets  float64       `yaml:"packets"`
	Mirai    float64       `yaml:"mirai"`
}

// Attack plants a DoS victim sending backscatter of Class ("synack",
// "rst" or "icmp") at PerMinute packets a minute into the darknets.
type Attack struct {
	Victim    string        `yaml:"victim"`
	Start     time.Time     `yaml:"start"`
	Duration  time.Duration `yaml:"duration"`
	PerMinute float64       `yaml:"per_minute"`
	Class     string        `yaml:"class"`
}

func (s *SynthSpec) validate() error {
	switch {
	case s.Start.IsZero():
		return errors.New("start: missing")
	case s.Duration <= 0 || s.Duration > 62*24*time.Hour:
		return fmt.Errorf("duration: %v not in (0, 62 days]", s.Duration)
	case len(s.Sensors) == 0:
		return errors.New("sensors: none")
	}
	for i, se := range s.Sensors {
		p, err := netip.ParsePrefix(se.Darknet)
		if err != nil || !p.Addr().Is4() || p.Bits() < 8 {
			return fmt.Errorf("sensors[%d].darknet: want an IPv4 prefix of /8 or longer", i)
		}
		if se.ID == "" {
			return fmt.Errorf("sensors[%d].id: empty", i)
		}
	}
	for p, cc := range s.Countries {
		if _, err := netip.ParsePrefix(p); err != nil || len(cc) != 2 {
			return fmt.Errorf("countries.%s: want prefix: CC", p)
		}
	}
	for i, b := range s.Background {
		if len(b.Pool) == 0 || b.Sources < 0 || (b.Protocol != "tcp" && b.Protocol != "udp") {
			return fmt.Errorf("background[%d]: needs protocol tcp|udp, sources >= 0 and a pool", i)
		}
		for _, p := range b.Pool {
			if pp, err := netip.ParsePrefix(p); err != nil || !pp.Addr().Is4() {
				return fmt.Errorf("background[%d].pool: %q is not an IPv4 prefix", i, p)
			}
		}
	}
	for i, r := range s.Research {
		if pp, err := netip.ParsePrefix(r.Prefix); err != nil || !pp.Addr().Is4() || r.Hosts < 1 {
			return fmt.Errorf("research_noise[%d]: needs an IPv4 prefix and hosts", i)
		}
	}
	for i, o := range s.Outbreaks {
		if pp, err := netip.ParsePrefix(o.Prefix); err != nil || !pp.Addr().Is4() || o.Rate <= 0 || o.Max < 1 {
			return fmt.Errorf("outbreaks[%d]: needs an IPv4 prefix, rate > 0 and max", i)
		}
	}
	for i, a := range s.Attacks {
		if _, err := netip.ParseAddr(a.Victim); err != nil || a.PerMinute <= 0 {
			return fmt.Errorf("attacks[%d]: needs a victim address and per_minute", i)
		}
		if a.Class != "synack" && a.Class != "rst" && a.Class != "icmp" {
			return fmt.Errorf("attacks[%d].class: %q", i, a.Class)
		}
	}
	return nil
}

// synthPacket is one generated packet.
type synthPacket struct {
	at     time.Time
	sensor int
	info   packet.Info
}

// generator yields a synthetic scenario's packets minute by minute, in
// time order.
type generator struct {
	spec    *SynthSpec
	rng     *rand.Rand
	minute  int
	minutes int
	dark    []netip.Prefix
	buf     []synthPacket
}

func newGenerator(spec *SynthSpec) *generator {
	g := &generator{spec: spec, rng: rand.New(rand.NewPCG(spec.Seed, 0x6a6173706572)), minutes: int(spec.Duration / time.Minute)}
	for _, s := range spec.Sensors {
		g.dark = append(g.dark, netip.MustParsePrefix(s.Darknet).Masked())
	}
	return g
}

func addrIn(p netip.Prefix, i uint32) netip.Addr {
	b := p.Masked().Addr().As4()
	v := binary.BigEndian.Uint32(b[:])
	host := uint32(1)<<(32-p.Bits()) - 1
	v += i & host
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

func poisson(rng *rand.Rand, mean float64) int {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		return max(0, int(math.Round(mean+math.Sqrt(mean)*rng.NormFloat64())))
	}
	l, k, p := math.Exp(-mean), 0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// rhythmAt is the daily sine (peak 15h UTC) and weekend factor.
func rhythmAt(t time.Time, amp, weekend float64) float64 {
	h := float64(t.Hour()) + float64(t.Minute())/60
	m := 1 + amp*math.Sin(2*math.Pi*(h-9)/24)
	if wd := t.Weekday(); (wd == time.Saturday || wd == time.Sunday) && weekend > 0 {
		m *= weekend
	}
	return m
}

func protoOf(s string) uint8 {
	if s == "udp" {
		return 17
	}
	return 6
}

// emit adds a packet from src at a random time of the minute.
func (g *generator) emit(minStart time.Time, src netip.Addr, proto uint8, port uint16, class jasperv1.TrafficClass, fp uint8, icmpType uint8) {
	s := g.rng.IntN(len(g.dark))
	dst := addrIn(g.dark[s], g.rng.Uint32())
	p := synthPacket{at: minStart.Add(time.Duration(g.rng.Int64N(int64(time.Minute)))), sensor: s}
	in := &p.info
	in.Class, in.Src, in.Dst, in.Protocol, in.TTL, in.Length = class, src, dst, proto, 50, 60
	switch proto {
	case 6, 17:
		in.DstPort, in.SrcPort = port, uint16(1024+g.rng.IntN(60000))
	case 1:
		in.ICMPType = icmpType
	}
	in.Fingerprints = fp
	in.Backscatter = class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK || class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST ||
		(class == jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP && packet.IsBackscatterICMP(false, icmpType))
	g.buf = append(g.buf, p)
}

// next returns the packets of the next minute, sorted by time; false
// when the scenario is over.
func (g *generator) next() ([]synthPacket, bool) {
	if g.minute >= g.minutes {
		return nil, false
	}
	spec := g.spec
	t := spec.Start.Add(time.Duration(g.minute) * time.Minute)
	g.minute++
	g.buf = g.buf[:0]
	for _, b := range spec.Background {
		n := poisson(g.rng, b.Sources*rhythmAt(t, b.Amp, b.Weekend))
		cls := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
		if b.Protocol == "udp" {
			cls = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
		}
		for range n {
			pool := netip.MustParsePrefix(b.Pool[g.rng.IntN(len(b.Pool))])
			src := addrIn(pool, g.rng.Uint32())
			var fp uint8
			if b.Mirai > 0 && g.rng.Float64() < b.Mirai {
				fp = packet.FPMirai
			}
			for range 1 + g.rng.IntN(2) {
				g.emit(t, src, protoOf(b.Protocol), b.Port, cls, fp, 0)
			}
		}
	}
	for _, r := range spec.Research {
		p := netip.MustParsePrefix(r.Prefix)
		for h := range r.Hosts {
			src := addrIn(p, uint32(h+1))
			for _, b := range spec.Background {
				cls := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
				if b.Protocol == "udp" {
					cls = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
				}
				for range r.Packets {
					g.emit(t, src, protoOf(b.Protocol), b.Port, cls, packet.FPZMap, 0)
				}
			}
		}
	}
	for _, o := range spec.Outbreaks {
		if t.Before(o.Start) || (o.Duration > 0 && !t.Before(o.Start.Add(o.Duration))) {
			continue
		}
		since := int(t.Sub(o.Start) / time.Minute)
		bots := min(o.Max, int(o.Rate*float64(since+1)))
		p := netip.MustParsePrefix(o.Prefix)
		cls := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
		if o.Protocol == "udp" {
			cls = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
		}
		for b := range bots {
			src := addrIn(p, uint32(b*7919+11))
			var fp uint8
			if float64(b%100) < o.Mirai*100 {
				fp = packet.FPMirai
			}
			for range max(1, poisson(g.rng, o.Packets)) {
				g.emit(t, src, protoOf(o.Protocol), o.Port, cls, fp, 0)
			}
		}
	}
	for _, a := range spec.Attacks {
		if t.Before(a.Start) || !t.Before(a.Start.Add(a.Duration)) {
			continue
		}
		v := netip.MustParseAddr(a.Victim)
		cls, proto, it := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, uint8(6), uint8(0)
		switch a.Class {
		case "rst":
			cls = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST
		case "icmp":
			cls, proto, it = jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP, 1, 3
		}
		for range poisson(g.rng, a.PerMinute) {
			g.emit(t, v, proto, uint16(1024+g.rng.IntN(60000)), cls, 0, it)
		}
	}
	slices.SortFunc(g.buf, func(a, b synthPacket) int {
		if c := a.at.Compare(b.at); c != 0 {
			return c
		}
		return a.info.Src.Compare(b.info.Src)
	})
	return g.buf, true
}
