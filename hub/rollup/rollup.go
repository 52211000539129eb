package rollup

import (
	"errors"
	"fmt"
	"io"
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
	// adds is addRows' scratch space (not state).
	adds []sketchAdd
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
		bn = newBin(start, m.cfg.MaxHostsPerBin, m.bins[start-m.cfg.BinSeconds])
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
