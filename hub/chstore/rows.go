package chstore

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// summaryBlock holds summary rows column by column, in summaryColumns
// order, ready for one INSERT block. The loader keeps one and reuses it
// (reset) from insert to insert. DateTime columns are Unix seconds
// (clickhouse-go converts []int64 for DateTime columns as it does
// []time.Time, without a time.Time per row). Source addresses are written
// as text into one buffer and become strings of a single allocation when
// the block is sent (columns).
type summaryBlock struct {
	binStart      []int64
	sensorID      []string
	sensorCountry []string
	srcIP         []string // built by columns from ipText and ipEnd
	srcCountry    []string
	srcASN        []uint32
	srcLabel      []uint8
	protocol      []uint8
	dstPort       []uint16
	icmpType      []uint8
	icmpCode      []uint8
	class         []string
	packets       []uint64
	bytes         []uint64
	dstIPs        []uint32
	firstSeen     []int64
	lastSeen      []int64
	ttlMin        []uint8
	ttlMax        []uint8
	distinctPorts []uint32
	overflow      []uint8
	fragments     []uint32
	fpMirai       []uint64
	fpZmap        []uint64
	fpMasscan     []uint64
	raftIndex     []uint64
	seq           []uint64

	ipText []byte  // the source addresses as text, one after another
	ipEnd  []int32 // where each row's address ends in ipText
}

func (b *summaryBlock) len() int { return len(b.raftIndex) }

// reset empties the block, keeping its memory (strings are cleared so the
// block does not keep old batches' strings alive).
func (b *summaryBlock) reset() {
	clear(b.sensorID)
	clear(b.sensorCountry)
	clear(b.srcIP)
	clear(b.srcCountry)
	clear(b.class)
	*b = summaryBlock{
		binStart: b.binStart[:0], sensorID: b.sensorID[:0], sensorCountry: b.sensorCountry[:0], srcIP: b.srcIP[:0],
		srcCountry: b.srcCountry[:0], srcASN: b.srcASN[:0], srcLabel: b.srcLabel[:0], protocol: b.protocol[:0],
		dstPort: b.dstPort[:0], icmpType: b.icmpType[:0], icmpCode: b.icmpCode[:0], class: b.class[:0],
		packets: b.packets[:0], bytes: b.bytes[:0], dstIPs: b.dstIPs[:0], firstSeen: b.firstSeen[:0],
		lastSeen: b.lastSeen[:0], ttlMin: b.ttlMin[:0], ttlMax: b.ttlMax[:0], distinctPorts: b.distinctPorts[:0],
		overflow: b.overflow[:0], fragments: b.fragments[:0], fpMirai: b.fpMirai[:0], fpZmap: b.fpZmap[:0],
		fpMasscan: b.fpMasscan[:0], raftIndex: b.raftIndex[:0], seq: b.seq[:0], ipText: b.ipText[:0], ipEnd: b.ipEnd[:0],
	}
}

// grow makes room for n more rows in every column.
func (b *summaryBlock) grow(n int) {
	b.binStart = slices.Grow(b.binStart, n)
	b.sensorID = slices.Grow(b.sensorID, n)
	b.sensorCountry = slices.Grow(b.sensorCountry, n)
	b.srcIP = slices.Grow(b.srcIP, n)
	b.srcCountry = slices.Grow(b.srcCountry, n)
	b.srcASN = slices.Grow(b.srcASN, n)
	b.srcLabel = slices.Grow(b.srcLabel, n)
	b.protocol = slices.Grow(b.protocol, n)
	b.dstPort = slices.Grow(b.dstPort, n)
	b.icmpType = slices.Grow(b.icmpType, n)
	b.icmpCode = slices.Grow(b.icmpCode, n)
	b.class = slices.Grow(b.class, n)
	b.packets = slices.Grow(b.packets, n)
	b.bytes = slices.Grow(b.bytes, n)
	b.dstIPs = slices.Grow(b.dstIPs, n)
	b.firstSeen = slices.Grow(b.firstSeen, n)
	b.lastSeen = slices.Grow(b.lastSeen, n)
	b.ttlMin = slices.Grow(b.ttlMin, n)
	b.ttlMax = slices.Grow(b.ttlMax, n)
	b.distinctPorts = slices.Grow(b.distinctPorts, n)
	b.overflow = slices.Grow(b.overflow, n)
	b.fragments = slices.Grow(b.fragments, n)
	b.fpMirai = slices.Grow(b.fpMirai, n)
	b.fpZmap = slices.Grow(b.fpZmap, n)
	b.fpMasscan = slices.Grow(b.fpMasscan, n)
	b.raftIndex = slices.Grow(b.raftIndex, n)
	b.seq = slices.Grow(b.seq, n)
	b.ipText = slices.Grow(b.ipText, 16*n)
	b.ipEnd = slices.Grow(b.ipEnd, n)
}

// columns returns the block's columns in summaryColumns order.
func (b *summaryBlock) columns() []any {
	if len(b.srcIP) != len(b.ipEnd) {
		text := string(b.ipText) // one allocation; the rows' strings are slices of it
		b.srcIP = b.srcIP[:0]
		start := int32(0)
		for _, end := range b.ipEnd {
			b.srcIP = append(b.srcIP, text[start:end])
			start = end
		}
	}
	return []any{
		b.binStart, b.sensorID, b.sensorCountry, b.srcIP, b.srcCountry, b.srcASN, b.srcLabel,
		b.protocol, b.dstPort, b.icmpType, b.icmpCode, b.class, b.packets, b.bytes, b.dstIPs,
		b.firstSeen, b.lastSeen, b.ttlMin, b.ttlMax, b.distinctPorts, b.overflow, b.fragments,
		b.fpMirai, b.fpZmap, b.fpMasscan, b.raftIndex, b.seq,
	}
}

// classNames maps a traffic class to its name in the class column
// (TRAFFIC_CLASS_TCP_SYN → tcp_syn), indexed by the enum value.
var classNames = func() []string {
	maxV := int32(0)
	for v := range jasperv1.TrafficClass_name {
		maxV = max(maxV, v)
	}
	names := make([]string, maxV+1)
	for v, name := range jasperv1.TrafficClass_name {
		if v >= 0 {
			names[v] = strings.ToLower(strings.TrimPrefix(name, "TRAFFIC_CLASS_"))
		}
	}
	return names
}()

func classString(c jasperv1.TrafficClass) string {
	if c >= 0 && int(c) < len(classNames) && classNames[c] != "" {
		return classNames[c]
	}
	return fmt.Sprintf("class_%d", int32(c))
}

// batchRows returns the number of summary rows a committed batch carries
// (the length of its src_ip column).
func batchRows(cb *jasperv1.CommittedBatch) int {
	return len(cb.GetBatch().GetRows().GetSrcIp())
}

// checkRows verifies that every column of rows has n entries (or none,
// for a column the sensor left out, read as zeros) and that every address
// has 4 or 16 bytes.
func checkRows(r *jasperv1.Rows) error {
	n := len(r.GetSrcIp())
	for _, c := range [...]struct {
		name string
		l    int
	}{
		{"protocol", len(r.GetProtocol())}, {"dst_port", len(r.GetDstPort())},
		{"icmp_type", len(r.GetIcmpType())}, {"icmp_code", len(r.GetIcmpCode())},
		{"class", len(r.GetClass())}, {"packets", len(r.GetPackets())}, {"bytes", len(r.GetBytes())},
		{"dst_ips", len(r.GetDstIps())}, {"first_seen_ms", len(r.GetFirstSeenMs())},
		{"last_seen_ms", len(r.GetLastSeenMs())}, {"ttl_min", len(r.GetTtlMin())},
		{"ttl_max", len(r.GetTtlMax())}, {"distinct_ports", len(r.GetDistinctPorts())},
		{"overflow", len(r.GetOverflow())}, {"fragments", len(r.GetFragments())},
	} {
		if c.l != n && c.l != 0 {
			return fmt.Errorf("column %s has %d entries, src_ip has %d", c.name, c.l, n)
		}
	}
	for _, fp := range r.GetFingerprints() {
		if l := len(fp.GetPackets()); l != n && l != 0 {
			return fmt.Errorf("fingerprint column %q has %d entries, src_ip has %d", fp.GetName(), l, n)
		}
	}
	for i, ip := range r.GetSrcIp() {
		if len(ip) != 4 && len(ip) != 16 {
			return fmt.Errorf("row %d: src_ip has %d bytes", i, len(ip))
		}
	}
	return nil
}

// appendCol appends src (n entries) to dst, or n zeros when src does not
// have n entries (a column the sensor left out).
func appendCol[T any](dst, src []T, n int) []T {
	if len(src) == n {
		return append(dst, src...)
	}
	var zero T
	for range n {
		dst = append(dst, zero)
	}
	return dst
}

// appendSame appends v n times.
func appendSame[T any](dst []T, v T, n int) []T {
	for range n {
		dst = append(dst, v)
	}
	return dst
}

// appendU8 appends src clamped to 255 (zeros when src does not have n
// entries).
func appendU8(dst []uint8, src []uint32, n int) []uint8 {
	if len(src) != n {
		return appendSame(dst, 0, n)
	}
	for _, v := range src {
		dst = append(dst, u8(v))
	}
	return dst
}

// appendSeen appends bin + ms, truncated to the second, as Unix seconds
// (ms is never negative, so truncating is flooring).
func appendSeen(dst []int64, bin int64, ms []uint32, n int) []int64 {
	if len(ms) != n {
		return appendSame(dst, bin, n)
	}
	for _, v := range ms {
		dst = append(dst, bin+int64(v/1000))
	}
	return dst
}

func u8(v uint32) uint8 {
	if v > 255 {
		return 255
	}
	return uint8(v)
}

func u16(v uint32) uint16 {
	if v > 65535 {
		return 65535
	}
	return uint16(v)
}

// add appends the rows of cb, column by column. The caller has run
// checkRows.
func (b *summaryBlock) add(cb *jasperv1.CommittedBatch) {
	batch := cb.GetBatch()
	r := batch.GetRows()
	n := len(r.GetSrcIp())
	enr := cb.GetEnrichment()
	bin := batch.GetBinStart()
	var mirai, zmap, masscan []uint64
	for _, fp := range r.GetFingerprints() {
		switch fp.GetName() {
		case "mirai":
			mirai = fp.GetPackets()
		case "zmap":
			zmap = fp.GetPackets()
		case "masscan":
			masscan = fp.GetPackets()
		}
	}
	for _, ip := range r.GetSrcIp() {
		addr, _ := netip.AddrFromSlice(ip)
		b.ipText = addr.Unmap().AppendTo(b.ipText)
		b.ipEnd = append(b.ipEnd, int32(len(b.ipText)))
	}
	b.binStart = appendSame(b.binStart, bin, n)
	b.sensorID = appendSame(b.sensorID, cb.GetSensorId(), n)
	b.sensorCountry = appendSame(b.sensorCountry, cb.GetSensorCountry(), n)
	b.srcCountry = appendCol(b.srcCountry, enr.GetSrcCountry(), n)
	b.srcASN = appendCol(b.srcASN, enr.GetSrcAsn(), n)
	if labels := enr.GetSrcLabel(); len(labels) == n {
		for _, l := range labels {
			b.srcLabel = append(b.srcLabel, uint8(l))
		}
	} else {
		b.srcLabel = appendSame(b.srcLabel, 0, n)
	}
	b.protocol = appendU8(b.protocol, r.GetProtocol(), n)
	if ports := r.GetDstPort(); len(ports) == n {
		for _, p := range ports {
			b.dstPort = append(b.dstPort, u16(p))
		}
	} else {
		b.dstPort = appendSame(b.dstPort, 0, n)
	}
	b.icmpType = appendU8(b.icmpType, r.GetIcmpType(), n)
	b.icmpCode = appendU8(b.icmpCode, r.GetIcmpCode(), n)
	if classes := r.GetClass(); len(classes) == n {
		for _, c := range classes {
			b.class = append(b.class, classString(c))
		}
	} else {
		b.class = appendSame(b.class, classString(0), n)
	}
	b.packets = appendCol(b.packets, r.GetPackets(), n)
	b.bytes = appendCol(b.bytes, r.GetBytes(), n)
	b.dstIPs = appendCol(b.dstIPs, r.GetDstIps(), n)
	b.firstSeen = appendSeen(b.firstSeen, bin, r.GetFirstSeenMs(), n)
	b.lastSeen = appendSeen(b.lastSeen, bin, r.GetLastSeenMs(), n)
	b.ttlMin = appendU8(b.ttlMin, r.GetTtlMin(), n)
	b.ttlMax = appendU8(b.ttlMax, r.GetTtlMax(), n)
	b.distinctPorts = appendCol(b.distinctPorts, r.GetDistinctPorts(), n)
	if ov := r.GetOverflow(); len(ov) == n {
		for _, o := range ov {
			var v uint8
			if o {
				v = 1
			}
			b.overflow = append(b.overflow, v)
		}
	} else {
		b.overflow = appendSame(b.overflow, 0, n)
	}
	b.fragments = appendCol(b.fragments, r.GetFragments(), n)
	b.fpMirai = appendCol(b.fpMirai, mirai, n)
	b.fpZmap = appendCol(b.fpZmap, zmap, n)
	b.fpMasscan = appendCol(b.fpMasscan, masscan, n)
	b.raftIndex = appendSame(b.raftIndex, cb.GetRaftIndex(), n)
	b.seq = appendSame(b.seq, batch.GetSequence(), n)
}

// statsBlock holds sensor_stats rows (one per batch) in statsColumns order.
type statsBlock struct {
	binStart          []int64 // Unix seconds
	sensorID          []string
	sensorCountry     []string
	binSeconds        []uint32
	rows              []uint32
	packetsSeen       []uint64
	outsideDarknet    []uint64
	kernelDrops       []uint64
	decodeErrors      []uint64
	fragments         []uint64
	nonIP             []uint64
	overflowRows      []uint64
	shedBatches       []uint64
	shedRows          []uint64
	packetsSummarised []uint64
	geoDBVersion      []string
	raftIndex         []uint64
	seq               []uint64
}

func (b *statsBlock) len() int { return len(b.raftIndex) }

func (b *statsBlock) columns() []any {
	return []any{
		b.binStart, b.sensorID, b.sensorCountry, b.binSeconds, b.rows,
		b.packetsSeen, b.outsideDarknet, b.kernelDrops, b.decodeErrors, b.fragments, b.nonIP,
		b.overflowRows, b.shedBatches, b.shedRows, b.packetsSummarised, b.geoDBVersion,
		b.raftIndex, b.seq,
	}
}

// add appends the stats row of cb; rows is the number of summary rows
// loaded for it (0 for a malformed batch whose rows were skipped).
func (b *statsBlock) add(cb *jasperv1.CommittedBatch, rows int) {
	batch := cb.GetBatch()
	st := batch.GetStats()
	b.binStart = append(b.binStart, batch.GetBinStart())
	b.sensorID = append(b.sensorID, cb.GetSensorId())
	b.sensorCountry = append(b.sensorCountry, cb.GetSensorCountry())
	b.binSeconds = append(b.binSeconds, batch.GetBinSeconds())
	b.rows = append(b.rows, uint32(rows))
	b.packetsSeen = append(b.packetsSeen, st.GetPacketsSeen())
	b.outsideDarknet = append(b.outsideDarknet, st.GetOutsideDarknet())
	b.kernelDrops = append(b.kernelDrops, st.GetKernelDrops())
	b.decodeErrors = append(b.decodeErrors, st.GetDecodeErrors())
	b.fragments = append(b.fragments, st.GetFragments())
	b.nonIP = append(b.nonIP, st.GetNonIp())
	b.overflowRows = append(b.overflowRows, st.GetOverflowRows())
	b.shedBatches = append(b.shedBatches, st.GetShedBatches())
	b.shedRows = append(b.shedRows, st.GetShedRows())
	b.packetsSummarised = append(b.packetsSummarised, st.GetPacketsSummarised())
	b.geoDBVersion = append(b.geoDBVersion, cb.GetEnrichment().GetGeoDbVersion())
	b.raftIndex = append(b.raftIndex, cb.GetRaftIndex())
	b.seq = append(b.seq, batch.GetSequence())
}

// sendColumns appends each column to a prepared batch and sends it as one
// block.
func sendColumns(b driver.Batch, cols []any) error {
	for i, c := range cols {
		if err := b.Column(i).Append(c); err != nil {
			_ = b.Abort()
			return fmt.Errorf("column %d: %w", i, err)
		}
	}
	return b.Send()
}
