package rollup

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"slices"
)

const snapshotVersion = 1

// The snapshot is JSON of sorted slices (and maps, which encoding/json
// writes in key order), so equal states give equal bytes.
type snapshot struct {
	Version    int                     `json:"version"`
	BinSeconds int64                   `json:"bin_seconds"`
	Newest     int64                   `json:"newest"`
	LastIndex  uint64                  `json:"last_index"`
	Stats      Stats                   `json:"stats"`
	Sensors    map[string]*sensorState `json:"sensors"`
	Bins       []snapBin               `json:"bins"`
}

type snapBin struct {
	Start    int64                 `json:"start"`
	Ordinary int                   `json:"ordinary"`
	Total    sketchState           `json:"total"`
	Cells    []snapCell            `json:"cells"`
	Hosts    []snapHost            `json:"hosts"`
	Sensors  map[string]*sensorBin `json:"sensors"`
}

type snapCell struct {
	cellKey
	Packets      uint64            `json:"p"`
	Bytes        uint64            `json:"b"`
	Fingerprints map[string]uint64 `json:"f,omitempty"`
	Sources      sketchState       `json:"s"`
}

type snapHost struct {
	Sensor string     `json:"sensor"`
	Addr   netip.Addr `json:"addr"`
	hostState
}

// hostState is the serialised form of a host.
type hostState struct {
	Country   string
	ASN       uint32
	Packets   uint64
	Bytes     uint64
	ClassMask uint16
	Ports     []uint32 // sorted, at most maxHostPorts
	MorePorts bool
	Protocols []uint8 // sorted
	FirstMs   int64
	LastMs    int64
}

func cmpCellKey(a, b cellKey) int {
	return cmp.Or(cmp.Compare(a.Sensor, b.Sensor), cmp.Compare(a.Country, b.Country),
		cmp.Compare(a.ASN, b.ASN), cmp.Compare(a.Protocol, b.Protocol),
		cmp.Compare(a.Port, b.Port), cmp.Compare(a.Class, b.Class))
}

// Snapshot writes the module's state. It copies the state under the read
// lock and encodes the copy after releasing it, so a slow writer does not
// hold up OnBatch for long.
func (m *Module) Snapshot(w io.Writer) error {
	m.mu.RLock()
	s := snapshot{Version: snapshotVersion, BinSeconds: m.cfg.BinSeconds, Newest: m.newest,
		LastIndex: m.lastIndex, Stats: m.stats, Sensors: make(map[string]*sensorState, len(m.sensors))}
	for id, ss := range m.sensors {
		c := *ss
		s.Sensors[id] = &c
	}
	for _, start := range slices.Sorted(maps.Keys(m.bins)) {
		bn := m.bins[start]
		t := bn.Total.clone()
		sb := snapBin{Start: start, Ordinary: bn.Ordinary, Total: t.state(), Sensors: make(map[string]*sensorBin, len(bn.Sensors))}
		for id, sn := range bn.Sensors {
			c := *sn
			sb.Sensors[id] = &c
		}
		sb.Cells = make([]snapCell, 0, len(bn.cells))
		for i := range bn.cells {
			c := &bn.cells[i]
			src := c.Sources.clone()
			sb.Cells = append(sb.Cells, snapCell{cellKey: bn.key(c.id), Packets: c.Packets, Bytes: c.Bytes,
				Fingerprints: maps.Clone(bn.fingerprints(c)), Sources: src.state()})
		}
		slices.SortFunc(sb.Cells, func(a, b snapCell) int { return cmpCellKey(a.cellKey, b.cellKey) })
		for i := range bn.hosts {
			h := &bn.hosts[i]
			hs := snapHost{Sensor: bn.strs[h.id.sensor], Addr: h.id.addr(), hostState: hostState{
				Country: bn.strs[h.country], ASN: h.ASN, Packets: h.Packets, Bytes: h.Bytes, ClassMask: h.ClassMask,
				MorePorts: h.MorePorts, Protocols: h.protocolList(), FirstMs: h.FirstMs, LastMs: h.LastMs}}
			if h.nPorts > 0 {
				hs.Ports = slices.Clone(h.Ports())
			}
			sb.Hosts = append(sb.Hosts, hs)
		}
		slices.SortFunc(sb.Hosts, func(a, b snapHost) int {
			return cmp.Or(cmp.Compare(a.Sensor, b.Sensor), a.Addr.Compare(b.Addr))
		})
		s.Bins = append(s.Bins, sb)
	}
	m.mu.RUnlock()
	if err := json.NewEncoder(w).Encode(&s); err != nil {
		return fmt.Errorf("rollup snapshot: %w", err)
	}
	return nil
}

// Restore replaces the module's state with a snapshot. The snapshot is
// checked (bin alignment, sketch shapes, caps) before anything changes.
func (m *Module) Restore(r io.Reader) error {
	var s snapshot
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("rollup restore: %w", err)
	}
	if s.Version != snapshotVersion {
		return fmt.Errorf("rollup restore: snapshot version %d, want %d", s.Version, snapshotVersion)
	}
	if s.BinSeconds != m.cfg.BinSeconds {
		return fmt.Errorf("rollup restore: snapshot bin_seconds %d differs from configured %d", s.BinSeconds, m.cfg.BinSeconds)
	}
	bins := make(map[int64]*bin, len(s.Bins))
	for _, sb := range s.Bins {
		if mod(sb.Start, s.BinSeconds) != 0 || bins[sb.Start] != nil {
			return fmt.Errorf("rollup restore: bad or repeated bin start %d", sb.Start)
		}
		if len(sb.Cells) > m.cfg.MaxCellsPerBin*2+1000000 || len(sb.Hosts) > m.cfg.MaxHostsPerBin {
			return fmt.Errorf("rollup restore: bin %d exceeds the configured caps", sb.Start)
		}
		bn := newBin(sb.Start, m.cfg.MaxHostsPerBin, nil)
		bn.Ordinary = sb.Ordinary
		var err error
		if bn.Total, err = sb.Total.sketch(); err != nil {
			return fmt.Errorf("rollup restore: bin %d total: %w", sb.Start, err)
		}
		for _, c := range sb.Cells {
			if c.Class >= numClasses || c.Port > OtherPort {
				return fmt.Errorf("rollup restore: bin %d: bad cell key", sb.Start)
			}
			src, err := c.Sources.sketch()
			if err != nil {
				return fmt.Errorf("rollup restore: bin %d cell: %w", sb.Start, err)
			}
			sensor := bn.intern(c.Sensor)
			id := packCell(bn.origin(bn.originsOf(sensor), sensor, bn.intern(c.Country), c.ASN), c.Protocol, c.Port, c.Class)
			if _, dup := bn.cellIdx[id]; dup {
				return fmt.Errorf("rollup restore: bin %d: repeated cell", sb.Start)
			}
			cl := &bn.cells[bn.newCell(id)]
			cl.Packets, cl.Bytes, cl.Sources = c.Packets, c.Bytes, src
			if len(c.Fingerprints) > 0 {
				bn.fps = append(bn.fps, c.Fingerprints)
				cl.fp = int32(len(bn.fps))
			}
		}
		for _, h := range sb.Hosts {
			if !h.Addr.IsValid() || h.Addr.Zone() != "" || h.Addr.Is4In6() || len(h.Ports) > maxHostPorts ||
				!sortedUnique(h.Ports) || !sortedUnique(h.Protocols) {
				return fmt.Errorf("rollup restore: bin %d: bad host", sb.Start)
			}
			hs := host{id: hostIDOf(h.Addr, bn.intern(h.Sensor)), country: bn.intern(h.Country), ASN: h.ASN,
				Packets: h.Packets, Bytes: h.Bytes, ClassMask: h.ClassMask, MorePorts: h.MorePorts,
				FirstMs: h.FirstMs, LastMs: h.LastMs, nPorts: uint8(len(h.Ports))}
			copy(hs.ports[:], h.Ports)
			for _, p := range h.Protocols {
				hs.addProtocol(p)
			}
			if _, dup := bn.hostIndex(hs.id); dup {
				return fmt.Errorf("rollup restore: bin %d: repeated host", sb.Start)
			}
			bn.addHost(hs)
		}
		for id, sn := range sb.Sensors {
			if sn == nil {
				return fmt.Errorf("rollup restore: bin %d: empty sensor %q", sb.Start, id)
			}
			bn.Sensors[id] = sn
		}
		bins[sb.Start] = bn
	}
	sensors := map[string]*sensorState{}
	for id, sn := range s.Sensors {
		if sn == nil {
			return fmt.Errorf("rollup restore: empty sensor %q", id)
		}
		sensors[id] = sn
	}
	m.mu.Lock()
	m.bins, m.sensors, m.newest, m.lastIndex, m.stats = bins, sensors, s.Newest, s.LastIndex, s.Stats
	m.evicted = false
	m.mu.Unlock()
	return nil
}

// sortedUnique reports whether s is strictly increasing.
func sortedUnique[T cmp.Ordered](s []T) bool {
	for i := 1; i < len(s); i++ {
		if s[i] <= s[i-1] {
			return false
		}
	}
	return true
}
