package summary

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

// Stats are the counters of one bin (or of the span since the previous
// batch of the bin). They map one to one onto jasperv1.SensorStats, plus
// RowLimitDrops, which SensorStats carries only implicitly.
type Stats struct {
	PacketsSeen       uint64
	OutsideDarknet    uint64
	KernelDrops       uint64
	DecodeErrors      uint64
	Fragments         uint64
	NonIP             uint64
	OverflowRows      uint64
	PacketsSummarised uint64
	// RowLimitDrops are darknet packets not summarised because the bin
	// already held MaxRowsPerBin rows.
	RowLimitDrops uint64
	// EarlyRowsDeferred counts rows with new packets that an early flush
	// left for later because it reached MaxEarlyRows (not in SensorStats).
	EarlyRowsDeferred uint64
}

// Proto returns the stats as a jasperv1.SensorStats.
func (s Stats) Proto() *jasperv1.SensorStats {
	return &jasperv1.SensorStats{
		PacketsSeen:       s.PacketsSeen,
		OutsideDarknet:    s.OutsideDarknet,
		KernelDrops:       s.KernelDrops,
		DecodeErrors:      s.DecodeErrors,
		Fragments:         s.Fragments,
		NonIp:             s.NonIP,
		OverflowRows:      s.OverflowRows,
		PacketsSummarised: s.PacketsSummarised,
	}
}

// rowKey packs a row's identity into 64 bits, so that the row table is a
// map[uint64]uint32 (12-byte slots, the runtime's fast path):
//
//	bits  0-31  source: the IPv4 address, or the index of the IPv6 source
//	            in Aggregator.v6addrs
//	bits 32-47  destination port, ICMP type<<8|code, or 0 (other protocols,
//	            non-first fragments, overflow rows)
//	bits 48-55  IP protocol
//	bits 56-59  traffic class
//	bit  60     overflow row
//	bit  61     IPv6 source
type rowKey uint64

const (
	keyOverflow rowKey = 1 << 60
	keyV6       rowKey = 1 << 61
)

func packKey(src uint32, port uint16, proto uint8, class jasperv1.TrafficClass, v6 bool) rowKey {
	k := rowKey(src) | rowKey(port)<<32 | rowKey(proto)<<48 | rowKey(class&0xf)<<56
	if v6 {
		k |= keyV6
	}
	return k
}

func (k rowKey) src() uint32                  { return uint32(k) }
func (k rowKey) port() uint16                 { return uint16(k >> 32) }
func (k rowKey) proto() uint8                 { return uint8(k >> 48) }
func (k rowKey) class() jasperv1.TrafficClass { return jasperv1.TrafficClass(k >> 56 & 0xf) }
func (k rowKey) overflow() bool               { return k&keyOverflow != 0 }
func (k rowKey) v6() bool                     { return k&keyV6 != 0 }

// overflowKey is the key of the overflow row that k folds into.
func (k rowKey) overflowKey() rowKey { return k&^(0xffff<<32) | keyOverflow }

type srcState struct {
	rows uint16 // ordinary (non-overflow) rows of this source in the bin
	_    uint16
}

// rowState is 64 bytes, one cache line (chunks are page-aligned): a
// packet of a known key touches one line of the row table. dst.aux holds
// the TTL range (min, max).
type rowState struct {
	key            rowKey
	packets, bytes uint64
	firstMs        uint32
	lastMs         uint32
	fragments      uint32
	fp             [packet.NumFingerprints]uint32
	dst            distinct
}

func (r *rowState) ttlMin() uint8 { return r.dst.aux[0] }
func (r *rowState) ttlMax() uint8 { return r.dst.aux[1] }

const rowChunk = 4096

// Aggregator summarises frames into bins. Add frames in capture order;
// sealed bins are handed to the emit function as batches.
type Aggregator struct {
	cfg     Config
	binSec  int64
	darknet []netip.Prefix
	emit    func(*jasperv1.Batch) error
	// kernelDrops, when set, reports the source's cumulative kernel drops.
	kernelDrops func() uint64
	lastDrops   uint64

	open     bool
	binStart int64 // Unix seconds
	binNano  int64

	table   rowTable // row key → row index
	srcs4   srcTable // IPv4 source → index in st4
	st4     []srcState
	v6idx   map[[16]byte]uint32 // IPv6 source → index in v6addrs and st6
	v6addrs [][16]byte
	st6     []srcState
	chunks  []*[rowChunk]rowState
	nrows   int
	ovPorts map[uint32]uint32 // overflow row index → index in ports
	ports   []distinct        // distinct ports of the overflow rows
	arena   slotArena
	stats   Stats

	// early flush: rows with packets since the last flush, in the order
	// of their first such packet
	dirty    []uint32
	flushDue int64 // Unix nanoseconds of the next early flush (event time)

	batches batchBuilder
	sink    uint64 // keeps Prefetch's loads alive
	// Totals are the counters summed over every bin so far.
	Totals Stats
}

// NewAggregator returns an aggregator that hands sealed batches to emit.
func NewAggregator(cfg Config, emit func(*jasperv1.Batch) error) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("summary config: %w", err)
	}
	a := &Aggregator{
		cfg:     cfg,
		binSec:  int64(cfg.Bin / time.Second),
		darknet: cfg.Darknet,
		emit:    emit,
		v6idx:   make(map[[16]byte]uint32),
		ovPorts: make(map[uint32]uint32),
	}
	a.arena.max = cfg.MaxSketches
	a.table.init()
	a.srcs4.init()
	a.batches.maxBytes = cfg.MaxBatchBytes
	return a, nil
}

// SetKernelDrops sets the function reporting a source's cumulative kernel
// drops; each sealed bin carries the delta.
func (a *Aggregator) SetKernelDrops(f func() uint64) {
	a.kernelDrops = f
	if f != nil {
		a.lastDrops = f()
	}
}

// Open reports whether a bin is open, and its start.
func (a *Aggregator) Open() (time.Time, bool) {
	return time.Unix(a.binStart, 0).UTC(), a.open
}

// Rows is the number of rows in the open bin.
func (a *Aggregator) Rows() int { return a.nrows }

// Add counts one frame captured at ts, with the decoder's verdict r and,
// when r is packet.OK, the packet's info. A frame of a later bin seals the
// open bin first. A frame of an earlier bin (out of order) is counted in
// the open bin, its time clamped to the bin start.
func (a *Aggregator) Add(ts time.Time, r packet.Result, info *packet.Info) error {
	ns := ts.UnixNano()
	sec := ns / 1e9
	if ns < 0 && ns%1e9 != 0 {
		sec--
	}
	start := sec - mod(sec, a.binSec)
	if !a.open {
		a.startBin(start, ns)
	} else if start > a.binStart {
		if err := a.seal(false); err != nil {
			return err
		}
		a.startBin(start, ns)
	} else if a.cfg.EarlyFlush > 0 && ns >= a.flushDue {
		if err := a.EarlyFlush(); err != nil {
			return err
		}
		a.flushDue = ns + int64(a.cfg.EarlyFlush)
	}
	a.stats.PacketsSeen++
	switch r {
	case packet.OK:
	case packet.NonIP:
		a.stats.NonIP++
		return nil
	default:
		a.stats.DecodeErrors++
		return nil
	}
	if info.Fragment {
		a.stats.Fragments++
	}
	if len(a.darknet) > 0 && !a.inDarknet(info.Dst) {
		a.stats.OutsideDarknet++
		return nil
	}
	a.addPacket(info, ns)
	return nil
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

func (a *Aggregator) inDarknet(dst netip.Addr) bool {
	for _, p := range a.darknet {
		if p.Contains(dst) {
			return true
		}
	}
	return false
}

func (a *Aggregator) startBin(start, ns int64) {
	a.open = true
	a.binStart = start
	a.binNano = start * 1e9
	a.flushDue = ns + int64(a.cfg.EarlyFlush)
}

func (a *Aggregator) row(i uint32) *rowState {
	return &a.chunks[i/rowChunk][i%rowChunk]
}

// rowPort is the port part of a packet's row key.
func rowPort(info *packet.Info) uint16 {
	if !info.Fragment {
		switch info.Protocol {
		case packet.ProtoTCP, packet.ProtoUDP:
			return info.DstPort
		case packet.ProtoICMP, packet.ProtoICMPv6:
			return uint16(info.ICMPType)<<8 | uint16(info.ICMPCode)
		}
	}
	return 0
}

// Prefetch touches the table entries and rows that the IPv4 packets of a
// block will need, so that their cache misses overlap (the loads are
// independent) instead of stalling one packet at a time in Add. It changes
// nothing; calling Add without it gives the same result, only slower.
func (a *Aggregator) Prefetch(res []packet.Result, infos []packet.Info) {
	var sink uint64
	rows := a.table.slots
	rmask := uint64(len(rows) - 1)
	srcs := a.srcs4.slots
	smask := uint64(len(srcs) - 1)
	for i := range infos {
		info := &infos[i]
		if res[i] != packet.OK || info.IPv6 {
			continue
		}
		s4 := info.Src.As4()
		src := binary.BigEndian.Uint32(s4[:])
		k := packKey(src, rowPort(info), info.Protocol, info.Class, false)
		e := rows[mix64(uint64(k))&rmask]
		sink += e + srcs[mix64(uint64(src))&smask]
		if idx := uint32(e); e != 0 && int(idx) < a.nrows {
			sink += uint64(a.row(idx).key)
		}
	}
	a.sink += sink
}

func (a *Aggregator) addPacket(info *packet.Info, ns int64) {
	port := rowPort(info)
	var src uint32
	if info.IPv6 {
		addr := info.Src.As16()
		i, ok := a.v6idx[addr]
		if !ok {
			if a.nrows >= a.cfg.MaxRowsPerBin {
				a.stats.RowLimitDrops++
				return
			}
			i = uint32(len(a.v6addrs))
			a.v6addrs = append(a.v6addrs, addr)
			a.st6 = append(a.st6, srcState{})
			a.v6idx[addr] = i
		}
		src = i
	} else {
		s4 := info.Src.As4()
		src = binary.BigEndian.Uint32(s4[:])
	}
	k := packKey(src, port, info.Protocol, info.Class, info.IPv6)
	idx, pos, ok := a.findRow(k)
	if !ok {
		idx, ok = a.newRow(k, pos)
		if !ok {
			a.stats.RowLimitDrops++
			return
		}
	}
	a.stats.PacketsSummarised++
	r := a.row(idx)
	r.packets++
	r.bytes += uint64(info.Length)
	ms := uint32(0)
	if off := ns - a.binNano; off > 0 {
		ms = uint32(off / 1e6)
	}
	if r.packets == 1 {
		r.firstMs, r.lastMs = ms, ms
		r.dst.aux = [2]uint8{info.TTL, info.TTL}
		if a.cfg.EarlyFlush > 0 {
			// New, or reset by the last early flush: queue it for the next.
			a.dirty = append(a.dirty, idx)
		}
	} else {
		if ms < r.firstMs {
			r.firstMs = ms
		}
		if ms > r.lastMs {
			r.lastMs = ms
		}
		if info.TTL < r.dst.aux[0] {
			r.dst.aux[0] = info.TTL
		}
		if info.TTL > r.dst.aux[1] {
			r.dst.aux[1] = info.TTL
		}
	}
	if info.Fragment {
		r.fragments++
	}
	if fp := info.Fingerprints; fp != 0 {
		for i := range packet.NumFingerprints {
			if fp&(1<<i) != 0 {
				r.fp[i]++
			}
		}
	}
	var dv uint32
	if info.IPv6 {
		d := info.Dst.As16()
		dv = uint32(mix32(binary.LittleEndian.Uint32(d[0:4])^uint32(mix32(binary.LittleEndian.Uint32(d[4:8])))) ^
			mix32(binary.LittleEndian.Uint32(d[8:12])^uint32(mix32(binary.LittleEndian.Uint32(d[12:16])))>>7))
	} else {
		d := info.Dst.As4()
		dv = binary.BigEndian.Uint32(d[:])
	}
	r.dst.add(dv, &a.arena)
	if r.key.overflow() {
		a.ports[a.ovPorts[idx]].add(uint32(port), &a.arena)
	}
}

// newRow creates the row for k, or finds or creates the overflow row of
// k's source when the source is at the port cap. It returns false when the
// bin is full.
// pos is where findRow would put k.
func (a *Aggregator) newRow(k rowKey, pos int) (uint32, bool) {
	var ss *srcState
	if k.v6() {
		ss = &a.st6[k.src()]
	} else {
		var si uint32
		if a.nrows >= a.cfg.MaxRowsPerBin {
			// Only an existing overflow row can take the packet; a new
			// source is not recorded, which keeps the source table
			// bounded by the rows.
			var seen bool
			if si, seen = a.srcs4.lookup(k.src()); !seen {
				return 0, false
			}
		} else {
			var seen bool
			if si, seen = a.srcs4.get(k.src(), uint32(len(a.st4))); !seen {
				a.st4 = append(a.st4, srcState{})
			}
		}
		ss = &a.st4[si]
	}
	if int(ss.rows) >= a.cfg.PortCap {
		ok := k.overflowKey()
		idx, opos, found := a.findRow(ok)
		if !found {
			var made bool
			if idx, made = a.insert(ok, opos); !made {
				return 0, false
			}
			a.ovPorts[idx] = uint32(len(a.ports))
			a.ports = append(a.ports, distinct{})
		}
		// The caller adds k's port to the row's port set.
		return idx, true
	}
	idx, made := a.insert(k, pos)
	if !made {
		return 0, false
	}
	ss.rows++
	return idx, true
}

// srcAddr is the source address of a row.
func (a *Aggregator) srcAddr(k rowKey) netip.Addr {
	if k.v6() {
		return netip.AddrFrom16(a.v6addrs[k.src()])
	}
	s := k.src()
	return netip.AddrFrom4([4]byte{byte(s >> 24), byte(s >> 16), byte(s >> 8), byte(s)})
}

func (a *Aggregator) insert(k rowKey, pos int) (uint32, bool) {
	if a.nrows >= a.cfg.MaxRowsPerBin {
		return 0, false
	}
	idx := uint32(a.nrows)
	if a.nrows/rowChunk == len(a.chunks) {
		a.chunks = append(a.chunks, new([rowChunk]rowState))
	}
	a.nrows++
	r := a.row(idx)
	*r = rowState{key: k}
	a.putRow(k, idx, pos)
	return idx, true
}

// Flush seals the open bin, if any, and emits its batches.
func (a *Aggregator) Flush() error {
	if !a.open {
		return nil
	}
	return a.seal(false)
}

// SealBefore seals the open bin if it ends at or before t (used with the
// wall clock minus a grace period for live sources).
func (a *Aggregator) SealBefore(t time.Time) error {
	if !a.open || (a.binStart+a.binSec)*1e9 > t.UnixNano() {
		return nil
	}
	return a.seal(false)
}

func (a *Aggregator) seal(partial bool) error {
	if a.kernelDrops != nil {
		d := a.kernelDrops()
		if d >= a.lastDrops {
			a.stats.KernelDrops += d - a.lastDrops
		}
		a.lastDrops = d
	}
	for _, pi := range a.ovPorts {
		a.stats.OverflowRows += uint64(a.ports[pi].count(&a.arena))
	}
	err := a.batches.build(a, nil, partial, a.emit)
	a.addTotals()
	a.reset()
	return err
}

func (a *Aggregator) addTotals() {
	t, s := &a.Totals, &a.stats
	t.PacketsSeen += s.PacketsSeen
	t.OutsideDarknet += s.OutsideDarknet
	t.KernelDrops += s.KernelDrops
	t.DecodeErrors += s.DecodeErrors
	t.Fragments += s.Fragments
	t.NonIP += s.NonIP
	t.OverflowRows += s.OverflowRows
	t.PacketsSummarised += s.PacketsSummarised
	t.RowLimitDrops += s.RowLimitDrops
	t.EarlyRowsDeferred += s.EarlyRowsDeferred
}

func (a *Aggregator) reset() {
	a.open = false
	a.table.reset()
	a.srcs4.reset()
	a.st4 = a.st4[:0]
	clear(a.v6idx)
	a.v6addrs = a.v6addrs[:0]
	a.st6 = a.st6[:0]
	clear(a.ovPorts)
	a.nrows = 0
	a.ports = a.ports[:0]
	a.arena.reset()
	a.stats = Stats{}
	a.dirty = a.dirty[:0]
}

// EarlyFlush emits, as Partial batches, delta rows for the rows with new
// packets since the previous early flush (new sources and known ones), at
// most Config.MaxEarlyRows of them, oldest activity first, then resets
// their counters so that later batches of the bin carry only what comes
// after (dst_ips and distinct_ports stay counts for the bin so far).
// Rows left over stay queued (Stats.EarlyRowsDeferred counts them). The
// open bin's stats so far go with the first batch.
func (a *Aggregator) EarlyFlush() error {
	if !a.open || len(a.dirty) == 0 {
		return nil
	}
	n := len(a.dirty)
	if max := a.cfg.MaxEarlyRows; max > 0 && n > max {
		a.stats.EarlyRowsDeferred += uint64(n - max)
		n = max
	}
	ship := a.dirty[:n]
	err := a.batches.build(a, ship, true, a.emit)
	a.addTotals()
	a.stats = Stats{}
	for _, i := range ship {
		a.row(i).reset()
	}
	a.dirty = a.dirty[:copy(a.dirty, a.dirty[n:])]
	return err
}

// reset empties a row shipped by an early flush, keeping its key and its
// distinct-destination set (and an overflow row's port set, which lives
// apart): counters restart, so later batches carry deltas, while dst_ips
// and distinct_ports stay the row's distinct counts for the bin so far.
func (r *rowState) reset() {
	d := r.dst
	*r = rowState{key: r.key}
	r.dst = d
}
