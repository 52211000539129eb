package summary

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

// batchOverhead is reserved in every batch for the fields outside the row
// columns: sequence, bin, flags, stats, the columns' tags and lengths, and
// the fingerprint column names.
const batchOverhead = 400

// batchBuilder packs rows into batches no larger than maxBytes encoded.
// Columns are built in scratch slices reused from batch to batch and
// copied out at their exact length, which halves the garbage.
type batchBuilder struct {
	maxBytes int
	cols     scratchCols
}

type scratchCols struct {
	ip                                                                []byte
	ipEnd                                                             []int
	protocol, dstPort, icmpType, icmpCode                             []uint32
	class                                                             []jasperv1.TrafficClass
	packets, bytes                                                    []uint64
	dstIPs, firstMs, lastMs, ttlMin, ttlMax, distinctPorts, fragments []uint32
	overflow                                                          []bool
	fp                                                                [packet.NumFingerprints][]uint64
	hasFP                                                             [packet.NumFingerprints]bool
}

func (c *scratchCols) reset() {
	c.ip, c.ipEnd = c.ip[:0], c.ipEnd[:0]
	c.protocol, c.dstPort, c.icmpType, c.icmpCode = c.protocol[:0], c.dstPort[:0], c.icmpType[:0], c.icmpCode[:0]
	c.class, c.packets, c.bytes = c.class[:0], c.packets[:0], c.bytes[:0]
	c.dstIPs, c.firstMs, c.lastMs, c.ttlMin, c.ttlMax = c.dstIPs[:0], c.firstMs[:0], c.lastMs[:0], c.ttlMin[:0], c.ttlMax[:0]
	c.distinctPorts, c.fragments, c.overflow = c.distinctPorts[:0], c.fragments[:0], c.overflow[:0]
	for f := range c.fp {
		c.fp[f] = c.fp[f][:0]
		c.hasFP[f] = false
	}
}

// rows copies the scratch columns out at their exact lengths.
func (c *scratchCols) rows() *jasperv1.Rows {
	r := &jasperv1.Rows{
		SrcIp:         make([][]byte, len(c.ipEnd)),
		Protocol:      slices.Clone(c.protocol),
		DstPort:       slices.Clone(c.dstPort),
		IcmpType:      slices.Clone(c.icmpType),
		IcmpCode:      slices.Clone(c.icmpCode),
		Class:         slices.Clone(c.class),
		Packets:       slices.Clone(c.packets),
		Bytes:         slices.Clone(c.bytes),
		DstIps:        slices.Clone(c.dstIPs),
		FirstSeenMs:   slices.Clone(c.firstMs),
		LastSeenMs:    slices.Clone(c.lastMs),
		TtlMin:        slices.Clone(c.ttlMin),
		TtlMax:        slices.Clone(c.ttlMax),
		DistinctPorts: slices.Clone(c.distinctPorts),
		Overflow:      slices.Clone(c.overflow),
		Fragments:     slices.Clone(c.fragments),
	}
	ip := slices.Clone(c.ip)
	start := 0
	for i, end := range c.ipEnd {
		r.SrcIp[i] = ip[start:end:end]
		start = end
	}
	for f := range c.fp {
		if c.hasFP[f] {
			r.Fingerprints = append(r.Fingerprints, &jasperv1.FingerprintColumn{Name: packet.FingerprintNames[f], Packets: slices.Clone(c.fp[f])})
		}
	}
	return r
}

func varint(v uint64) int { return protowire.SizeVarint(v) }

// rowBytes is the encoded size of one row in the packed columns, without
// the fingerprint columns.
func rowBytes(r *rowState, distinctPorts uint32, dst uint32) int {
	n := 2 + 4 // src_ip: tag, length, 4 bytes
	if r.key.v6() {
		n += 12
	}
	n += varint(uint64(r.key.proto())) + 1 // protocol, class
	n += varint(uint64(r.key.port())) + 4  // dst_port, or icmp_type and icmp_code (at most 2 bytes each)
	n += varint(r.packets) + varint(r.bytes) + varint(uint64(dst))
	n += varint(uint64(r.firstMs)) + varint(uint64(r.lastMs))
	n += varint(uint64(r.ttlMin())) + varint(uint64(r.ttlMax()))
	n += varint(uint64(distinctPorts)) + 1 + varint(uint64(r.fragments))
	return n
}

// build emits the rows (all rows of the bin when idx is nil, else the rows
// listed) as one or more batches. The first batch carries the stats.
func (b *batchBuilder) build(a *Aggregator, idx []uint32, partial bool, emit func(*jasperv1.Batch) error) error {
	n := a.nrows
	if idx != nil {
		n = len(idx)
	}
	rowIndex := func(i int) uint32 {
		if idx != nil {
			return idx[i]
		}
		return uint32(i)
	}
	at := func(i int) *rowState { return a.row(rowIndex(i)) }
	c := &b.cols
	stats := a.stats.Proto()
	first := true
	i := 0
	for first || i < n {
		batch := &jasperv1.Batch{
			BinStart:   a.binStart,
			BinSeconds: uint32(a.binSec),
			Partial:    partial,
		}
		if first {
			batch.Stats = stats
		} else {
			batch.Stats = &jasperv1.SensorStats{}
		}
		first = false
		size := batchOverhead
		c.reset()
		nb := 0
		for ; i < n; i++ {
			r := at(i)
			if r.packets == 0 {
				continue // reset by an early flush and not seen since
			}
			dp := uint32(1)
			if r.key.overflow() {
				dp = a.ports[a.ovPorts[rowIndex(i)]].count(&a.arena)
			}
			dst := r.dst.count(&a.arena)
			need := rowBytes(r, dp, dst)
			for f := range packet.NumFingerprints {
				if c.hasFP[f] {
					need += varint(uint64(r.fp[f]))
				} else if r.fp[f] != 0 {
					need += nb + varint(uint64(r.fp[f])) // zeros for the rows before
				}
			}
			if nb > 0 && size+need > b.maxBytes {
				break
			}
			size += need
			src := a.srcAddr(r.key)
			if src.Is4() {
				a4 := src.As4()
				c.ip = append(c.ip, a4[:]...)
			} else {
				a16 := src.As16()
				c.ip = append(c.ip, a16[:]...)
			}
			c.ipEnd = append(c.ipEnd, len(c.ip))
			c.protocol = append(c.protocol, uint32(r.key.proto()))
			var port, typ, code uint32
			if !r.key.overflow() {
				switch r.key.proto() {
				case packet.ProtoICMP, packet.ProtoICMPv6:
					typ, code = uint32(r.key.port()>>8), uint32(r.key.port()&0xff)
				default:
					port = uint32(r.key.port())
				}
			}
			c.dstPort = append(c.dstPort, port)
			c.icmpType = append(c.icmpType, typ)
			c.icmpCode = append(c.icmpCode, code)
			c.class = append(c.class, r.key.class())
			c.packets = append(c.packets, r.packets)
			c.bytes = append(c.bytes, r.bytes)
			c.dstIPs = append(c.dstIPs, dst)
			c.firstMs = append(c.firstMs, r.firstMs)
			c.lastMs = append(c.lastMs, r.lastMs)
			c.ttlMin = append(c.ttlMin, uint32(r.ttlMin()))
			c.ttlMax = append(c.ttlMax, uint32(r.ttlMax()))
			c.distinctPorts = append(c.distinctPorts, dp)
			c.overflow = append(c.overflow, r.key.overflow())
			c.fragments = append(c.fragments, r.fragments)
			for f := range packet.NumFingerprints {
				if !c.hasFP[f] && r.fp[f] != 0 {
					c.hasFP[f] = true
					c.fp[f] = append(c.fp[f][:0], make([]uint64, nb)...)
				}
				if c.hasFP[f] {
					c.fp[f] = append(c.fp[f], uint64(r.fp[f]))
				}
			}
			nb++
		}
		batch.Rows = c.rows()
		if nb == 0 && batch.Stats != stats {
			break // nothing left but reset rows
		}
		batch.SealedAtMs = time.Now().UnixMilli()
		if err := emit(batch); err != nil {
			return fmt.Errorf("emit batch of bin %d: %w", a.binStart, err)
		}
	}
	return nil
}

// Row is one decoded summary row.
type Row struct {
	SrcIP              netip.Addr
	Protocol           uint8
	DstPort            uint16
	ICMPType, ICMPCode uint8
	Class              jasperv1.TrafficClass
	Packets, Bytes     uint64
	DstIPs             uint32
	FirstSeen          time.Time
	LastSeen           time.Time
	TTLMin, TTLMax     uint8
	DistinctPorts      uint32
	Overflow           bool
	Fragments          uint32
	Fingerprints       map[string]uint64
}

// Errors of ValidateBatch and DecodeBatch.
var (
	ErrInvalidBatch = errors.New("invalid batch")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidBatch, fmt.Sprintf(format, args...))
}

// ValidateBatch checks a batch's structure cheaply: bin fields, equal column
// lengths, address lengths, value ranges, fingerprint columns. The hub uses
// it before accepting a batch.
func ValidateBatch(b *jasperv1.Batch) error {
	if b == nil {
		return invalid("nil batch")
	}
	if b.BinSeconds == 0 || b.BinSeconds > 86400 {
		return invalid("bin_seconds %d not in 1..86400", b.BinSeconds)
	}
	if b.BinStart%int64(b.BinSeconds) != 0 {
		return invalid("bin_start %d not aligned to bin_seconds %d", b.BinStart, b.BinSeconds)
	}
	r := b.Rows
	if r == nil {
		return nil
	}
	n := len(r.SrcIp)
	cols := []struct {
		name string
		n    int
	}{
		{"protocol", len(r.Protocol)}, {"dst_port", len(r.DstPort)}, {"icmp_type", len(r.IcmpType)},
		{"icmp_code", len(r.IcmpCode)}, {"class", len(r.Class)}, {"packets", len(r.Packets)},
		{"bytes", len(r.Bytes)}, {"dst_ips", len(r.DstIps)}, {"first_seen_ms", len(r.FirstSeenMs)},
		{"last_seen_ms", len(r.LastSeenMs)}, {"ttl_min", len(r.TtlMin)}, {"ttl_max", len(r.TtlMax)},
		{"distinct_ports", len(r.DistinctPorts)}, {"overflow", len(r.Overflow)}, {"fragments", len(r.Fragments)},
	}
	for _, c := range cols {
		if c.n != n {
			return invalid("column %s has %d entries, src_ip has %d", c.name, c.n, n)
		}
	}
	seen := map[string]bool{}
	for _, fc := range r.Fingerprints {
		if fc == nil || fc.Name == "" {
			return invalid("fingerprint column without a name")
		}
		if seen[fc.Name] {
			return invalid("fingerprint column %q repeated", fc.Name)
		}
		seen[fc.Name] = true
		if len(fc.Packets) != n {
			return invalid("fingerprint column %q has %d entries, src_ip has %d", fc.Name, len(fc.Packets), n)
		}
	}
	binMs := uint32(b.BinSeconds) * 1000
	for i := range n {
		if l := len(r.SrcIp[i]); l != 4 && l != 16 {
			return invalid("row %d: src_ip has %d bytes", i, l)
		}
		if r.Protocol[i] > 255 {
			return invalid("row %d: protocol %d", i, r.Protocol[i])
		}
		if r.DstPort[i] > 65535 || r.IcmpType[i] > 255 || r.IcmpCode[i] > 255 {
			return invalid("row %d: dst_port/icmp_type/icmp_code out of range", i)
		}
		if c := r.Class[i]; c <= jasperv1.TrafficClass_TRAFFIC_CLASS_UNSPECIFIED || c > jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER {
			return invalid("row %d: class %d", i, int32(c))
		}
		if r.Packets[i] == 0 {
			return invalid("row %d: zero packets", i)
		}
		if r.FirstSeenMs[i] > r.LastSeenMs[i] || r.LastSeenMs[i] >= binMs {
			return invalid("row %d: first/last seen %d/%d outside the bin", i, r.FirstSeenMs[i], r.LastSeenMs[i])
		}
		if r.TtlMin[i] > r.TtlMax[i] || r.TtlMax[i] > 255 {
			return invalid("row %d: ttl range %d..%d", i, r.TtlMin[i], r.TtlMax[i])
		}
		if r.Overflow[i] && r.DstPort[i] != 0 {
			return invalid("row %d: overflow row with dst_port %d", i, r.DstPort[i])
		}
	}
	return nil
}

// DecodeBatch validates a batch and returns its rows.
func DecodeBatch(b *jasperv1.Batch) ([]Row, error) {
	if err := ValidateBatch(b); err != nil {
		return nil, err
	}
	r := b.Rows
	if r == nil {
		return nil, nil
	}
	start := time.Unix(b.BinStart, 0).UTC()
	out := make([]Row, len(r.SrcIp))
	for i := range out {
		ip, _ := netip.AddrFromSlice(r.SrcIp[i])
		row := Row{
			SrcIP:         ip,
			Protocol:      uint8(r.Protocol[i]),
			DstPort:       uint16(r.DstPort[i]),
			ICMPType:      uint8(r.IcmpType[i]),
			ICMPCode:      uint8(r.IcmpCode[i]),
			Class:         r.Class[i],
			Packets:       r.Packets[i],
			Bytes:         r.Bytes[i],
			DstIPs:        r.DstIps[i],
			FirstSeen:     start.Add(time.Duration(r.FirstSeenMs[i]) * time.Millisecond),
			LastSeen:      start.Add(time.Duration(r.LastSeenMs[i]) * time.Millisecond),
			TTLMin:        uint8(r.TtlMin[i]),
			TTLMax:        uint8(r.TtlMax[i]),
			DistinctPorts: r.DistinctPorts[i],
			Overflow:      r.Overflow[i],
			Fragments:     r.Fragments[i],
		}
		for _, fc := range r.Fingerprints {
			if v := fc.Packets[i]; v != 0 {
				if row.Fingerprints == nil {
					row.Fingerprints = make(map[string]uint64, len(r.Fingerprints))
				}
				row.Fingerprints[fc.Name] = v
			}
		}
		out[i] = row
	}
	return out, nil
}
