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
	host
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
		sb.Cells = make([]snapCell, 0, len(bn.Cells))
		for _, k := range slices.SortedFunc(maps.Keys(bn.Cells), cmpCellKey) {
			c := bn.Cells[k]
			src := c.Sources.clone()
			sb.Cells = append(sb.Cells, snapCell{cellKey: k, Packets: c.Packets, Bytes: c.Bytes,
				Fingerprints: maps.Clone(c.Fingerprints), Sources: src.state()})
		}
		for _, k := range slices.SortedFunc(maps.Keys(bn.Hosts), func(a, b hostKey) int {
			return cmp.Or(cmp.Compare(a.Sensor, b.Sensor), a.Addr.Compare(b.Addr))
		}) {
			h := *bn.Hosts[k]
			h.Ports, h.Protocols = slices.Clone(h.Ports), slices.Clone(h.Protocols)
			sb.Hosts = append(sb.Hosts, snapHost{Sensor: k.Sensor, Addr: k.Addr, host: h})
		}
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
		bn := newBin(sb.Start)
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
			bn.Cells[c.cellKey] = &cell{Packets: c.Packets, Bytes: c.Bytes, Fingerprints: c.Fingerprints, Sources: src}
		}
		for _, h := range sb.Hosts {
			if !h.Addr.IsValid() || len(h.Ports) > maxHostPorts {
				return fmt.Errorf("rollup restore: bin %d: bad host", sb.Start)
			}
			hh := h.host
			bn.Hosts[hostKey{Sensor: h.Sensor, Addr: h.Addr}] = &hh
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
	m.mu.Unlock()
	return nil
}
