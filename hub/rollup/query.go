package rollup

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Filter selects cells. Zero fields select everything.
type Filter struct {
	// From and To bound bin starts: From <= start < To. Zero means open.
	From, To time.Time
	Sensor   string
	// Country is the source country (ISO alpha-2).
	Country string
	// Protocol is an IP protocol number; 0 selects every protocol.
	Protocol uint8
	// Port selects one destination port of TCP/UDP when HasPort is set
	// (OtherPort selects folded and overflow rows).
	Port    uint32
	HasPort bool
}

func (f *Filter) binOK(start int64) bool {
	if !f.From.IsZero() && start < f.From.Unix() {
		return false
	}
	if !f.To.IsZero() && start >= f.To.Unix() {
		return false
	}
	return true
}

// binFilter is a Filter resolved against one bin's string table.
type binFilter struct {
	sensor, country     uint32
	bySensor, byCountry bool
	proto               uint8
	hasPort             bool
	port                uint32
}

// resolve returns f for bn, or false when no cell or host of bn can match
// (the sensor or country filtered on does not occur in the bin).
func (f *Filter) resolve(bn *bin) (binFilter, bool) {
	bf := binFilter{proto: f.Protocol, hasPort: f.HasPort, port: f.Port}
	var ok bool
	if f.Sensor != "" {
		if bf.sensor, ok = bn.lookup(f.Sensor); !ok {
			return bf, false
		}
		bf.bySensor = true
	}
	if f.Country != "" {
		if bf.country, ok = bn.lookup(f.Country); !ok {
			return bf, false
		}
		bf.byCountry = true
	}
	return bf, true
}

func (bf *binFilter) cellOK(bn *bin, id cellID) bool {
	if bf.bySensor || bf.byCountry {
		o := &bn.origins[id.origin()]
		if bf.bySensor && o.sensor != bf.sensor || bf.byCountry && o.country != bf.country {
			return false
		}
	}
	switch {
	case bf.proto != 0 && id.proto() != bf.proto:
		return false
	case bf.hasPort && (id.port() != bf.port || (id.proto() != 6 && id.proto() != 17)):
		return false
	}
	return true
}

// Point is one step of a time series.
type Point struct {
	Start   time.Time
	Packets map[string]uint64 // by class name
	Bytes   uint64
	// Sources counts distinct source addresses in the step.
	Sources uint64
	// SourcesExact is false when Sources is a sketch estimate.
	SourcesExact bool
}

// Span returns the oldest and newest bin start held (zero times if empty).
func (m *Module) Span() (oldest, newest time.Time) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if len(m.bins) == 0 {
		return time.Time{}, time.Time{}
	}
	keys := slices.Sorted(maps.Keys(m.bins))
	return time.Unix(keys[0], 0).UTC(), time.Unix(keys[len(keys)-1], 0).UTC()
}

// Overview returns packets by class and distinct sources per step (a
// multiple of the bin width; smaller values mean one bin). Steps without
// matching traffic are left out.
func (m *Module) Overview(f Filter, step time.Duration) []Point {
	m.mu.RLock()
	defer m.mu.RUnlock()
	st := int64(step / time.Second)
	if st < m.cfg.BinSeconds {
		st = m.cfg.BinSeconds
	}
	st -= st % m.cfg.BinSeconds
	type acc struct {
		p   Point
		src Sketch
	}
	steps := map[int64]*acc{}
	all := f.Sensor == "" && f.Country == "" && f.Protocol == 0 && !f.HasPort
	var src Sketch
	for start, bn := range m.bins {
		if !f.binOK(start) {
			continue
		}
		bf, ok := f.resolve(bn)
		if !ok {
			continue
		}
		s := start - mod(start, st)
		var classes [numClasses]uint64
		var bytes uint64
		matched := false
		for i := range bn.cells {
			c := &bn.cells[i]
			if !bf.cellOK(bn, c.id) {
				continue
			}
			matched = true
			classes[c.id.class()] += c.Packets
			bytes += c.Bytes
			if !all {
				src.Merge(&c.Sources)
			}
		}
		if !matched {
			continue
		}
		a := steps[s]
		if a == nil {
			a = &acc{p: Point{Start: time.Unix(s, 0).UTC(), Packets: map[string]uint64{}}}
			steps[s] = a
		}
		for c, n := range classes {
			if n > 0 {
				a.p.Packets[ClassName(jasperv1.TrafficClass(c))] += n
			}
		}
		a.p.Bytes += bytes
		// Without a cell filter the bin's total sketch holds every source.
		if all {
			a.src.Merge(&bn.Total)
		} else {
			a.src.Merge(&src)
			src = Sketch{}
		}
	}
	out := make([]Point, 0, len(steps))
	for _, s := range slices.Sorted(maps.Keys(steps)) {
		a := steps[s]
		a.p.Sources, a.p.SourcesExact = a.src.Count(), a.src.Exact()
		out = append(out, a.p)
	}
	return out
}

// Dim is a dimension of a top list.
type Dim int

// Dimensions of Top.
const (
	DimPort Dim = iota + 1
	DimCountry
	DimASN
	DimFingerprint
	DimSensor
	DimClass
	DimProtocol
)

// Entry is one line of a top list.
type Entry struct {
	// Key is the dimension's value: a port number ("other" for OtherPort), a
	// country code ("" unknown), an ASN in decimal ("0" unknown), a
	// fingerprint name, a sensor id, a class name or a protocol number.
	Key     string
	Packets uint64
	Bytes   uint64
	// Sources counts distinct sources (not kept for fingerprints: 0).
	Sources      uint64
	SourcesExact bool
}

func dimKey(d Dim, k cellKey) string {
	switch d {
	case DimPort:
		if k.Port == OtherPort {
			return "other"
		}
		return strconv.FormatUint(uint64(k.Port), 10)
	case DimCountry:
		return k.Country
	case DimASN:
		return strconv.FormatUint(uint64(k.ASN), 10)
	case DimSensor:
		return k.Sensor
	case DimClass:
		return ClassName(jasperv1.TrafficClass(k.Class))
	case DimProtocol:
		return strconv.FormatUint(uint64(k.Protocol), 10)
	}
	return ""
}

// Top returns the entries of one dimension under f, by packets descending
// (ties by key); limit <= 0 returns all. DimPort counts only TCP and UDP.
func (m *Module) Top(f Filter, d Dim, limit int) []Entry {
	m.mu.RLock()
	defer m.mu.RUnlock()
	type acc struct {
		e   Entry
		src Sketch
	}
	// Numeric dimensions aggregate under their number and string ones under
	// the cell's own string: no key is built per cell.
	byNum := map[uint64]*acc{}
	byStr := map[string]*acc{}
	get := func(bn *bin, id cellID) *acc {
		var a *acc
		switch d {
		case DimCountry, DimSensor:
			o := &bn.origins[id.origin()]
			s := bn.strs[o.country]
			if d == DimSensor {
				s = bn.strs[o.sensor]
			}
			if a = byStr[s]; a == nil {
				a = &acc{e: Entry{Key: s}}
				byStr[s] = a
			}
		default:
			var n uint64
			switch d {
			case DimPort:
				n = uint64(id.port())
			case DimASN:
				n = uint64(bn.origins[id.origin()].asn)
			case DimClass:
				n = uint64(id.class())
			case DimProtocol:
				n = uint64(id.proto())
			}
			if a = byNum[n]; a == nil {
				a = &acc{e: Entry{Key: dimKey(d, bn.key(id))}}
				byNum[n] = a
			}
		}
		return a
	}
	for start, bn := range m.bins {
		if !f.binOK(start) {
			continue
		}
		bf, ok := f.resolve(bn)
		if !ok {
			continue
		}
		for i := range bn.cells {
			c := &bn.cells[i]
			if !bf.cellOK(bn, c.id) {
				continue
			}
			if d == DimFingerprint {
				for name, n := range bn.fingerprints(c) {
					a := byStr[name]
					if a == nil {
						a = &acc{e: Entry{Key: name}}
						byStr[name] = a
					}
					a.e.Packets += n
				}
				continue
			}
			if p := c.id.proto(); d == DimPort && p != 6 && p != 17 {
				continue
			}
			a := get(bn, c.id)
			a.e.Packets += c.Packets
			a.e.Bytes += c.Bytes
			a.src.Merge(&c.Sources)
		}
	}
	out := make([]Entry, 0, len(byNum)+len(byStr))
	for _, as := range []map[uint64]*acc{byNum} {
		for _, a := range as {
			a.e.Sources, a.e.SourcesExact = a.src.Count(), a.src.Exact()
			out = append(out, a.e)
		}
	}
	for _, a := range byStr {
		if d != DimFingerprint {
			a.e.Sources, a.e.SourcesExact = a.src.Count(), a.src.Exact()
		}
		out = append(out, a.e)
	}
	slices.SortFunc(out, func(a, b Entry) int {
		return cmp.Or(cmp.Compare(b.Packets, a.Packets), cmp.Compare(a.Key, b.Key))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// Host is a source address seen in the window: host-level data that the
// caller must scope to the reader's constituency.
type Host struct {
	Addr      netip.Addr
	Country   string
	ASN       uint32
	Packets   uint64
	Bytes     uint64
	Classes   []string
	Ports     []uint32 // some of its TCP/UDP destination ports
	MorePorts bool     // true when it hit more ports than listed
	Sensors   []string
	FirstSeen time.Time
	LastSeen  time.Time
}

// Hosts returns the source hosts under f that keep(addr, country) accepts,
// by packets descending; limit <= 0 returns all. A host's country and ASN
// are those of its record in the newest bin that holds it. The port filter
// matches hosts whose listed ports include it or that hit more ports than
// listed.
func (m *Module) Hosts(f Filter, keep func(netip.Addr, string) bool, limit int) []Host {
	m.mu.RLock()
	defer m.mu.RUnlock()
	type acc struct {
		h       Host
		classes uint16
		ports   map[uint32]bool
		sensors map[string]bool
	}
	hosts := map[netip.Addr]*acc{}
	// Newest bin first, so that a host whose records disagree on country
	// or ASN (a geo database update in the window) is reported with its
	// newest one, the same on every call and every replica.
	starts := slices.Sorted(maps.Keys(m.bins))
	slices.Reverse(starts)
	for _, start := range starts {
		bn := m.bins[start]
		if !f.binOK(start) {
			continue
		}
		bf, ok := f.resolve(bn)
		if !ok {
			continue
		}
		for i := range bn.hosts {
			h := &bn.hosts[i]
			if (bf.bySensor && uint32(h.id.sensor) != bf.sensor) || (bf.byCountry && h.country != bf.country) {
				continue
			}
			if f.Protocol != 0 && !h.hasProtocol(f.Protocol) {
				continue
			}
			if f.HasPort && !h.MorePorts && !slices.Contains(h.Ports(), f.Port) {
				continue
			}
			addr, country := h.id.addr(), bn.strs[h.country]
			if keep != nil && !keep(addr, country) {
				continue
			}
			a := hosts[addr]
			if a == nil {
				a = &acc{h: Host{Addr: addr, Country: country, ASN: h.ASN,
					FirstSeen: time.UnixMilli(h.FirstMs).UTC(), LastSeen: time.UnixMilli(h.LastMs).UTC()},
					ports: map[uint32]bool{}, sensors: map[string]bool{}}
				hosts[addr] = a
			}
			a.h.Packets += h.Packets
			a.h.Bytes += h.Bytes
			a.classes |= h.ClassMask
			a.h.MorePorts = a.h.MorePorts || h.MorePorts
			for _, p := range h.Ports() {
				a.ports[p] = true
			}
			a.sensors[bn.strs[h.id.sensor]] = true
			if t := time.UnixMilli(h.FirstMs).UTC(); t.Before(a.h.FirstSeen) {
				a.h.FirstSeen = t
			}
			if t := time.UnixMilli(h.LastMs).UTC(); t.After(a.h.LastSeen) {
				a.h.LastSeen = t
			}
		}
	}
	out := make([]Host, 0, len(hosts))
	for _, a := range hosts {
		for c := range numClasses {
			if a.classes&(1<<uint(c)) != 0 {
				a.h.Classes = append(a.h.Classes, ClassName(jasperv1.TrafficClass(c)))
			}
		}
		a.h.Ports = slices.Sorted(maps.Keys(a.ports))
		if len(a.h.Ports) > maxHostPorts {
			a.h.Ports, a.h.MorePorts = a.h.Ports[:maxHostPorts], true
		}
		a.h.Sensors = slices.Sorted(maps.Keys(a.sensors))
		out = append(out, a.h)
	}
	slices.SortFunc(out, func(a, b Host) int {
		return cmp.Or(cmp.Compare(b.Packets, a.Packets), a.Addr.Compare(b.Addr))
	})
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out
}

// SensorHealth is the state of one sensor as the committed log shows it.
type SensorHealth struct {
	ID             string
	Country        string
	Batches        uint64
	LastSequence   uint64
	LastIndex      uint64
	LastBinStart   time.Time
	LastReceivedAt time.Time // hub clock at receipt of the newest batch
	LastSealedAt   time.Time // sensor clock when it sealed the newest batch
	// Totals since the module first saw the sensor; Window within the
	// rollup window.
	Totals SensorCounts
	Window SensorCounts
	// PacketRate is packets seen per second over the sensor's RateBins
	// most recent bins in the window (0 when none).
	PacketRate float64
}

// Sensors returns the health of every sensor seen, by id.
func (m *Module) Sensors() []SensorHealth {
	m.mu.RLock()
	defer m.mu.RUnlock()
	starts := slices.Sorted(maps.Keys(m.bins))
	out := make([]SensorHealth, 0, len(m.sensors))
	for _, id := range slices.Sorted(maps.Keys(m.sensors)) {
		s := m.sensors[id]
		h := SensorHealth{ID: id, Country: s.Country, Batches: s.Batches, LastSequence: s.LastSequence,
			LastIndex: s.LastIndex, Totals: s.Totals}
		if s.LastBinStart != 0 {
			h.LastBinStart = time.Unix(s.LastBinStart, 0).UTC()
		}
		if s.LastReceivedMs != 0 {
			h.LastReceivedAt = time.UnixMilli(s.LastReceivedMs).UTC()
		}
		if s.LastSealedMs != 0 {
			h.LastSealedAt = time.UnixMilli(s.LastSealedMs).UTC()
		}
		var recent uint64
		n := 0
		for i := len(starts) - 1; i >= 0; i-- {
			sb := m.bins[starts[i]].Sensors[id]
			if sb == nil {
				continue
			}
			h.Window.add(&sb.Stats)
			if n < m.cfg.RateBins {
				recent += sb.Stats.PacketsSeen
				n++
			}
		}
		if n > 0 {
			h.PacketRate = float64(recent) / float64(int64(n)*m.cfg.BinSeconds)
		}
		out = append(out, h)
	}
	return out
}
