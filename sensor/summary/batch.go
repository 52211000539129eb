package summary

import (
	"errors"
	"fmt"
	"net/netip"
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
type batchBuilder struct {
	maxBytes int
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
	var ipBuf []byte
	stats := a.stats.Proto()
	first := true
	i := 0
	for first || i < n {
		batch := &jasperv1.Batch{
			BinStart:   a.binStart,
			BinSeconds: uint32(a.binSec),
			Partial:    partial,
			Rows:       &jasperv1.Rows{},
		}
		if first {
			batch.Stats = stats
		} else {
			batch.Stats = &jasperv1.SensorStats{}
		}
		first = false
		size := batchOverhead
		var fpCols [packet.NumFingerprints]*jasperv1.FingerprintColumn
		rows := batch.Rows
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
				if fpCols[f] != nil {
					need += varint(uint64(r.fp[f]))
				} else if r.fp[f] != 0 {
					need += nb + varint(uint64(r.fp[f])) // zeros for the rows before
				}
			}
			if nb > 0 && size+need > b.maxBytes {
				break
			}
			size += need
			// Addresses share one backing array per batch.
			src := a.srcAddr(r.key)
			if cap(ipBuf)-len(ipBuf) < 16 {
				ipBuf = make([]byte, 0, 16<<10)
			}
			start := len(ipBuf)
			if src.Is4() {
				a4 := src.As4()
				ipBuf = append(ipBuf, a4[:]...)
			} else {
				a16 := src.As16()
				ipBuf = append(ipBuf, a16[:]...)
			}
			rows.SrcIp = append(rows.SrcIp, ipBuf[start:len(ipBuf):len(ipBuf)])
			rows.Protocol = append(rows.Protocol, uint32(r.key.proto()))
			var port, typ, code uint32
			if !r.key.overflow() {
				switch r.key.proto() {
				case packet.ProtoICMP, packet.ProtoICMPv6:
					typ, code = uint32(r.key.port()>>8), uint32(r.key.port()&0xff)
				default:
					port = uint32(r.key.port())
				}
			}
			rows.DstPort = append(rows.DstPort, port)
			rows.IcmpType = append(rows.IcmpType, typ)
			rows.IcmpCode = append(rows.IcmpCode, code)
			rows.Class = append(rows.Class, r.key.class())
			rows.Packets = append(rows.Packets, r.packets)
			rows.Bytes = append(rows.Bytes, r.bytes)
			rows.DstIps = append(rows.DstIps, dst)
			rows.FirstSeenMs = append(rows.FirstSeenMs, r.firstMs)
			rows.LastSeenMs = append(rows.LastSeenMs, r.lastMs)
			rows.TtlMin = append(rows.TtlMin, uint32(r.ttlMin()))
			rows.TtlMax = append(rows.TtlMax, uint32(r.ttlMax()))
			rows.DistinctPorts = append(rows.DistinctPorts, dp)
			rows.Overflow = append(rows.Overflow, r.key.overflow())
			rows.Fragments = append(rows.Fragments, r.fragments)
			for f := range packet.NumFingerprints {
				if fpCols[f] == nil && r.fp[f] != 0 {
					fpCols[f] = &jasperv1.FingerprintColumn{Name: packet.FingerprintNames[f], Packets: make([]uint64, nb, nb+64)}
				}
				if fpCols[f] != nil {
					fpCols[f].Packets = append(fpCols[f].Packets, uint64(r.fp[f]))
				}
			}
			nb++
		}
		for _, c := range fpCols {
			if c != nil {
				rows.Fingerprints = append(rows.Fingerprints, c)
			}
		}
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
