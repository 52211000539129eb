package rollup

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Errors returned by the module.
var (
	// ErrNoCommands is returned by Apply: the module takes no commands.
	ErrNoCommands = errors.New("rollup: module takes no commands")
	errBadSketch  = errors.New("bad sketch")
)

// ModuleName is what Name returns.
const ModuleName = "rollup"

// OtherPort stands for "other ports" in a cell key: rows of summary
// overflow rows, and rows folded because a bin hit MaxCellsPerBin.
const OtherPort = 65536

// Traffic classes in cell keys are the TrafficClass enum numbers.
const numClasses = 11

// ClassName returns the NICTER class name of c ("tcp_syn", "udp", ...).
func ClassName(c jasperv1.TrafficClass) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "TRAFFIC_CLASS_"))
}

// Classes lists the traffic classes in display order.
func Classes() []jasperv1.TrafficClass {
	out := make([]jasperv1.TrafficClass, 0, numClasses-1)
	for c := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK; c <= jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER; c++ {
		out = append(out, c)
	}
	return out
}

// cellKey is a cell's key in readable form (snapshots and tests).
type cellKey struct {
	Sensor   string
	Country  string
	ASN      uint32
	Protocol uint8
	Port     uint32
	Class    uint8
}

// cellID is a cell's key packed into two words, so that the per-bin cell
// map hashes 16 bytes of plain memory instead of two strings: hi is the
// sensor's and the country's indices in the bin's string table (sensor in
// the upper half), lo is ASN<<32 | protocol<<24 | port<<4 | class (the
// port takes 17 bits for OtherPort).
type cellID struct{ hi, lo uint64 }

func packCell(sensor, country, asn uint32, proto uint8, port uint32, class uint8) cellID {
	return cellID{hi: uint64(sensor)<<32 | uint64(country),
		lo: uint64(asn)<<32 | uint64(proto)<<24 | uint64(port)<<4 | uint64(class)}
}

func (id cellID) sensor() uint32  { return uint32(id.hi >> 32) }
func (id cellID) country() uint32 { return uint32(id.hi) }
func (id cellID) asn() uint32     { return uint32(id.lo >> 32) }
func (id cellID) proto() uint8    { return uint8(id.lo >> 24) }
func (id cellID) port() uint32    { return uint32(id.lo>>4) & 0x1ffff }
func (id cellID) class() uint8    { return uint8(id.lo & 0xf) }

// folded is the "other ports" cell that a row of id folds into when its
// bin is full: same sensor, country, protocol and class; ASN 0.
func (id cellID) folded() cellID {
	return cellID{hi: id.hi, lo: id.lo&^(0xffffffff<<32|0x1ffff<<4) | OtherPort<<4}
}

// cell is one cell of a bin's cube, stored by value in bin.cells.
type cell struct {
	id      cellID
	Packets uint64
	Bytes   uint64
	fp      int32 // 1 + index in bin.fps of its fingerprint packets; 0 none
	Sources Sketch
}

// hostID is a host's key: its address in 16-byte form (IPv4 as
// IPv4-mapped, which Unmap undoes on the way out) and its sensor's index
// in the bin's string table. Three words of plain memory.
type hostID struct{ a, b, sensor uint64 }

func (id hostID) addr() netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], id.a)
	binary.BigEndian.PutUint64(b[8:], id.b)
	return netip.AddrFrom16(b).Unmap()
}

func hostIDOf(a netip.Addr, sensor uint32) hostID {
	b := a.As16()
	return hostID{a: binary.BigEndian.Uint64(b[:8]), b: binary.BigEndian.Uint64(b[8:]), sensor: uint64(sensor)}
}

// maxHostPorts is how many distinct ports a host record lists.
const maxHostPorts = 16

// host is one source host of a bin, stored by value in bin.hosts; it
// holds no pointer, so the garbage collector does not scan the hosts.
type host struct {
	id        hostID
	Packets   uint64
	Bytes     uint64
	FirstMs   int64
	LastMs    int64
	protocols [4]uint64 // bit p set: protocol p seen
	country   uint32    // index in the bin's string table
	ASN       uint32
	ClassMask uint16
	nPorts    uint8
	MorePorts bool
	ports     [maxHostPorts]uint32 // ports[:nPorts] sorted
}

func (h *host) hasProtocol(p uint8) bool { return h.protocols[p>>6]&(1<<(p&63)) != 0 }

// Ports returns the listed ports, sorted.
func (h *host) Ports() []uint32 { return h.ports[:h.nPorts] }

// protocolList returns the protocols seen, sorted.
func (h *host) protocolList() []uint8 {
	var out []uint8
	for p := range 256 {
		if h.hasProtocol(uint8(p)) {
			out = append(out, uint8(p))
		}
	}
	return out
}

// addPort lists port, or sets MorePorts when the list is full.
func (h *host) addPort(port uint32) {
	ps := h.ports[:h.nPorts]
	i, found := slices.BinarySearch(ps, port)
	if found {
		return
	}
	if int(h.nPorts) >= maxHostPorts {
		h.MorePorts = true
		return
	}
	copy(h.ports[i+1:h.nPorts+1], h.ports[i:h.nPorts])
	h.ports[i] = port
	h.nPorts++
}

type sensorBin struct {
	Batches    uint64
	Stats      SensorCounts
	LastSealed int64
}

// SensorCounts are SensorStats counters summed over a span.
type SensorCounts struct {
	PacketsSeen       uint64 `json:"packets_seen"`
	OutsideDarknet    uint64 `json:"outside_darknet"`
	KernelDrops       uint64 `json:"kernel_drops"`
	DecodeErrors      uint64 `json:"decode_errors"`
	Fragments         uint64 `json:"fragments"`
	NonIP             uint64 `json:"non_ip"`
	OverflowRows      uint64 `json:"overflow_rows"`
	ShedBatches       uint64 `json:"shed_batches"`
	ShedRows          uint64 `json:"shed_rows"`
	PacketsSummarised uint64 `json:"packets_summarised"`
}

func (s *SensorCounts) add(o *SensorCounts) {
	s.PacketsSeen += o.PacketsSeen
	s.OutsideDarknet += o.OutsideDarknet
	s.KernelDrops += o.KernelDrops
	s.DecodeErrors += o.DecodeErrors
	s.Fragments += o.Fragments
	s.NonIP += o.NonIP
	s.OverflowRows += o.OverflowRows
	s.ShedBatches += o.ShedBatches
	s.ShedRows += o.ShedRows
	s.PacketsSummarised += o.PacketsSummarised
}

func statsFrom(p *jasperv1.SensorStats) SensorCounts {
	if p == nil {
		return SensorCounts{}
	}
	return SensorCounts{
		PacketsSeen: p.GetPacketsSeen(), OutsideDarknet: p.GetOutsideDarknet(),
		KernelDrops: p.GetKernelDrops(), DecodeErrors: p.GetDecodeErrors(),
		Fragments: p.GetFragments(), NonIP: p.GetNonIp(), OverflowRows: p.GetOverflowRows(),
		ShedBatches: p.GetShedBatches(), ShedRows: p.GetShedRows(),
		PacketsSummarised: p.GetPacketsSummarised(),
	}
}

// bin is one rollup bin. Sensor ids and countries are interned into the
// bin's string table, so cells and hosts hold small indices; cells and
// hosts live in slices indexed through maps of packed keys.
type bin struct {
	Start    int64
	strs     []string          // the string table
	strIdx   map[string]uint32 // index of each string in strs
	cellIdx  map[cellID]int32  // index in cells
	cells    []cell
	fps      []map[string]uint64 // fingerprint packets of cells with fp != 0
	Ordinary int                 // cells counted against MaxCellsPerBin
	Total    Sketch
	hostIdx  map[hostID]int32 // index in hosts
	hosts    []host
	Sensors  map[string]*sensorBin
}

func newBin(start int64) *bin {
	return &bin{Start: start, strIdx: map[string]uint32{}, cellIdx: map[cellID]int32{},
		hostIdx: map[hostID]int32{}, Sensors: map[string]*sensorBin{}}
}

// intern returns the index of s in the bin's string table, adding it.
func (bn *bin) intern(s string) uint32 {
	if i, ok := bn.strIdx[s]; ok {
		return i
	}
	i := uint32(len(bn.strs))
	bn.strs = append(bn.strs, s)
	bn.strIdx[s] = i
	return i
}

// lookup returns the index of s in the string table, if it is there.
func (bn *bin) lookup(s string) (uint32, bool) {
	i, ok := bn.strIdx[s]
	return i, ok
}

// key returns a cell's key in readable form.
func (bn *bin) key(id cellID) cellKey {
	return cellKey{Sensor: bn.strs[id.sensor()], Country: bn.strs[id.country()], ASN: id.asn(),
		Protocol: id.proto(), Port: id.port(), Class: id.class()}
}

// newCell adds an empty cell.
func (bn *bin) newCell(id cellID) int32 {
	i := int32(len(bn.cells))
	bn.cells = append(bn.cells, cell{id: id})
	bn.cellIdx[id] = i
	return i
}

// fingerprints returns the fingerprint packets of c (nil if none).
func (bn *bin) fingerprints(c *cell) map[string]uint64 {
	if c.fp == 0 {
		return nil
	}
	return bn.fps[c.fp-1]
}

// sensorState is the cumulative health of one sensor.
type sensorState struct {
	Country        string       `json:"country"`
	Batches        uint64       `json:"batches"`
	LastIndex      uint64       `json:"last_index"`
	LastSequence   uint64       `json:"last_sequence"`
	LastBinStart   int64        `json:"last_bin_start"`
	LastReceivedMs int64        `json:"last_received_ms"`
	LastSealedMs   int64        `json:"last_sealed_ms"`
	Totals         SensorCounts `json:"totals"`
}

// Stats counts what the module did with its input.
type Stats struct {
	Batches      uint64 `json:"batches"`
	Rows         uint64 `json:"rows"`
	BadRows      uint64 `json:"bad_rows"`
	FoldedRows   uint64 `json:"folded_rows"`
	DroppedHosts uint64 `json:"dropped_hosts"`
	LateBatches  uint64 `json:"late_batches"`
	EvictedBins  uint64 `json:"evicted_bins"`
}

// Module is the rollup FSM module. Build it with New.
type Module struct {
	cfg Config

	mu        sync.RWMutex
	bins      map[int64]*bin
	newest    int64 // newest bin start or tick seen (Unix seconds), 0 if none
	lastIndex uint64
	sensors   map[string]*sensorState
	stats     Stats
	// evictedBelow is the window start of the last eviction (when
	// evicted is set): no bin older than it is held, so evict has nothing
	// to do until the window moves. Derived state, not in snapshots.
	evictedBelow int64
	evicted      bool
}

// New builds an empty module.
func New(cfg Config) (*Module, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("rollup config: %w", err)
	}
	return &Module{cfg: cfg, bins: map[int64]*bin{}, sensors: map[string]*sensorState{}}, nil
}

// Name returns ModuleName.
func (m *Module) Name() string { return ModuleName }

// Config returns the module's configuration.
func (m *Module) Config() Config { return m.cfg }

// Apply refuses every command: the module is fed by OnBatch and OnTick.
func (m *Module) Apply(index uint64, payload []byte) (any, error) {
	return nil, ErrNoCommands
}

// OnTick advances the window to the tick's time and evicts old bins.
func (m *Module) OnTick(index uint64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastIndex = index
	if t := now.Unix(); t > m.newest {
		m.newest = t
	}
	m.evict()
}

func (m *Module) windowStart() int64 {
	ws := m.newest - m.cfg.windowSeconds()
	return ws - mod(ws, m.cfg.BinSeconds) + m.cfg.BinSeconds
}

func mod(a, b int64) int64 {
	r := a % b
	if r < 0 {
		r += b
	}
	return r
}

func (m *Module) evict() {
	if m.newest == 0 {
		return
	}
	ws := m.windowStart()
	if m.evicted && ws <= m.evictedBelow {
		return
	}
	m.evictedBelow, m.evicted = ws, true
	for s := range m.bins {
		if s < ws {
			delete(m.bins, s)
			m.stats.EvictedBins++
		}
	}
}

func col[T any](c []T, i int) T {
	if i < len(c) {
		return c[i]
	}
	var z T
	return z
}

// OnBatch folds one committed batch into the rollups.
func (m *Module) OnBatch(index uint64, cb *jasperv1.CommittedBatch) {
	b := cb.GetBatch()
	if b == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.lastIndex = index
	m.stats.Batches++

	sid := cb.GetSensorId()
	ss := m.sensors[sid]
	if ss == nil {
		ss = &sensorState{}
		m.sensors[sid] = ss
	}
	ss.Country = cb.GetSensorCountry()
	ss.Batches++
	ss.LastIndex = index
	ss.LastSequence = max(ss.LastSequence, b.GetSequence())
	ss.LastBinStart = max(ss.LastBinStart, b.GetBinStart())
	ss.LastReceivedMs = max(ss.LastReceivedMs, cb.GetReceivedAtMs())
	ss.LastSealedMs = max(ss.LastSealedMs, b.GetSealedAtMs())
	st := statsFrom(b.GetStats())
	ss.Totals.add(&st)

	start := b.GetBinStart() - mod(b.GetBinStart(), m.cfg.BinSeconds)
	m.newest = max(m.newest, start)
	if start < m.windowStart() {
		m.stats.LateBatches++
		return
	}
	bn := m.bins[start]
	if bn == nil {
		bn = newBin(start)
		m.bins[start] = bn
	}
	sb := bn.Sensors[sid]
	if sb == nil {
		sb = &sensorBin{}
		bn.Sensors[sid] = sb
	}
	sb.Batches++
	sb.Stats.add(&st)
	sb.LastSealed = max(sb.LastSealed, b.GetSealedAtMs())

	m.addRows(bn, sid, b, cb.GetEnrichment())
	m.evict()
}

func (m *Module) addRows(bn *bin, sid string, b *jasperv1.Batch, en *jasperv1.Enrichment) {
	r := b.GetRows()
	if r == nil {
		return
	}
	binMs := b.GetBinStart() * 1000
	src := r.GetSrcIp()
	protos, classes, dports, overflow := r.GetProtocol(), r.GetClass(), r.GetDstPort(), r.GetOverflow()
	packets, bytes, firsts, lasts := r.GetPackets(), r.GetBytes(), r.GetFirstSeenMs(), r.GetLastSeenMs()
	fps := r.GetFingerprints()
	countries, asns := en.GetSrcCountry(), en.GetSrcAsn()
	sensor := bn.intern(sid)
	// Rows of one source come together and share their enrichment: the
	// country's index is looked up only when it changes.
	prevCountry, country := "", bn.intern("")
	m.stats.Rows += uint64(len(src))
	for i, raw := range src {
		var ha, hb uint64
		switch len(raw) {
		case 4:
			ha, hb = 0, 0xffff<<32|uint64(binary.BigEndian.Uint32(raw))
		case 16:
			ha, hb = binary.BigEndian.Uint64(raw[:8]), binary.BigEndian.Uint64(raw[8:])
		default:
			m.stats.BadRows++
			continue
		}
		proto := col(protos, i)
		class := col(classes, i)
		if proto > 255 || class < 0 || int(class) >= numClasses {
			m.stats.BadRows++
			continue
		}
		port := uint32(0)
		if proto == 6 || proto == 17 {
			port = col(dports, i)
			if port > 65535 || col(overflow, i) {
				port = OtherPort
			}
		}
		if c := col(countries, i); c != prevCountry {
			prevCountry, country = c, bn.intern(c)
		}
		asn := col(asns, i)
		id := packCell(sensor, country, asn, uint8(proto), port, uint8(class))
		ci, ok := bn.cellIdx[id]
		if !ok {
			if bn.Ordinary >= m.cfg.MaxCellsPerBin {
				m.stats.FoldedRows++
				id = id.folded()
				ci, ok = bn.cellIdx[id]
			}
			if !ok {
				ci = bn.newCell(id)
				if id.port() != OtherPort || id.asn() != 0 {
					bn.Ordinary++
				}
			}
		}
		c := &bn.cells[ci]
		pk, by := col(packets, i), col(bytes, i)
		c.Packets += pk
		c.Bytes += by
		h := mix64(ha*0x9e3779b97f4a7c15 ^ hb) // hashAddr of the address
		c.Sources.Add(h)
		bn.Total.Add(h)
		for _, fc := range fps {
			if n := col(fc.GetPackets(), i); n > 0 && fc.GetName() != "" {
				if c.fp == 0 {
					bn.fps = append(bn.fps, map[string]uint64{})
					c.fp = int32(len(bn.fps))
				}
				bn.fps[c.fp-1][fc.GetName()] += n
			}
		}

		hk := hostID{a: ha, b: hb, sensor: uint64(sensor)}
		hi, ok := bn.hostIdx[hk]
		if !ok {
			if len(bn.hosts) >= m.cfg.MaxHostsPerBin {
				m.stats.DroppedHosts++
				continue
			}
			first := binMs + int64(col(firsts, i))
			hi = int32(len(bn.hosts))
			bn.hosts = append(bn.hosts, host{id: hk, country: country, ASN: asn, FirstMs: first, LastMs: first})
			bn.hostIdx[hk] = hi
		}
		hs := &bn.hosts[hi]
		hs.Packets += pk
		hs.Bytes += by
		hs.ClassMask |= 1 << uint(class)
		hs.protocols[proto>>6] |= 1 << (proto & 63)
		if proto == 6 || proto == 17 {
			if port == OtherPort {
				hs.MorePorts = true
			} else {
				hs.addPort(port)
			}
		}
		hs.FirstMs = min(hs.FirstMs, binMs+int64(col(firsts, i)))
		hs.LastMs = max(hs.LastMs, binMs+int64(col(lasts, i)))
	}
}

// Stats returns the module's counters.
func (m *Module) Stats() Stats {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.stats
}

// fsmModule mirrors the raft store's module interface (hub/store), which
// this package does not import.
type fsmModule interface {
	Name() string
	OnBatch(index uint64, b *jasperv1.CommittedBatch)
	OnTick(index uint64, now time.Time)
	Apply(index uint64, payload []byte) (any, error)
	Snapshot(w io.Writer) error
	Restore(r io.Reader) error
}

var _ fsmModule = (*Module)(nil)
