package chstore

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// summaryBlock holds summary rows column by column, in summaryColumns
// order, ready for one INSERT block.
type summaryBlock struct {
	binStart      []time.Time
	sensorID      []string
	sensorCountry []string
	srcIP         []string
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
	firstSeen     []time.Time
	lastSeen      []time.Time
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
}

func (b *summaryBlock) len() int { return len(b.raftIndex) }

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
}

func (b *summaryBlock) columns() []any {
	return []any{
		b.binStart, b.sensorID, b.sensorCountry, b.srcIP, b.srcCountry, b.srcASN, b.srcLabel,
		b.protocol, b.dstPort, b.icmpType, b.icmpCode, b.class, b.packets, b.bytes, b.dstIPs,
		b.firstSeen, b.lastSeen, b.ttlMin, b.ttlMax, b.distinctPorts, b.overflow, b.fragments,
		b.fpMirai, b.fpZmap, b.fpMasscan, b.raftIndex, b.seq,
	}
}

// className maps a traffic class to its name in the class column
// (TRAFFIC_CLASS_TCP_SYN → tcp_syn).
var className = func() map[jasperv1.TrafficClass]string {
	m := map[jasperv1.TrafficClass]string{}
	for v, name := range jasperv1.TrafficClass_name {
		m[jasperv1.TrafficClass(v)] = strings.ToLower(strings.TrimPrefix(name, "TRAFFIC_CLASS_"))
	}
	return m
}()

func classString(c jasperv1.TrafficClass) string {
	if s, ok := className[c]; ok {
		return s
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
	lens := map[string]int{
		"protocol": len(r.GetProtocol()), "dst_port": len(r.GetDstPort()),
		"icmp_type": len(r.GetIcmpType()), "icmp_code": len(r.GetIcmpCode()),
		"class": len(r.GetClass()), "packets": len(r.GetPackets()), "bytes": len(r.GetBytes()),
		"dst_ips": len(r.GetDstIps()), "first_seen_ms": len(r.GetFirstSeenMs()),
		"last_seen_ms": len(r.GetLastSeenMs()), "ttl_min": len(r.GetTtlMin()),
		"ttl_max": len(r.GetTtlMax()), "distinct_ports": len(r.GetDistinctPorts()),
		"overflow": len(r.GetOverflow()), "fragments": len(r.GetFragments()),
	}
	for name, l := range lens {
		if l != n && l != 0 {
			return fmt.Errorf("column %s has %d entries, src_ip has %d", name, l, n)
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

func at[T any](s []T, i int) T {
	if i < len(s) {
		return s[i]
	}
	var zero T
	return zero
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

// add appends the rows of cb. The caller has run checkRows.
func (b *summaryBlock) add(cb *jasperv1.CommittedBatch) {
	batch := cb.GetBatch()
	r := batch.GetRows()
	n := len(r.GetSrcIp())
	enr := cb.GetEnrichment()
	bin := time.Unix(batch.GetBinStart(), 0).UTC()
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
	countries, asns, labels := enr.GetSrcCountry(), enr.GetSrcAsn(), enr.GetSrcLabel()
	if len(countries) != n {
		countries = nil
	}
	if len(asns) != n {
		asns = nil
	}
	if len(labels) != n {
		labels = nil
	}
	for i := range n {
		addr, _ := netip.AddrFromSlice(r.SrcIp[i])
		b.binStart = append(b.binStart, bin)
		b.sensorID = append(b.sensorID, cb.GetSensorId())
		b.sensorCountry = append(b.sensorCountry, cb.GetSensorCountry())
		b.srcIP = append(b.srcIP, addr.Unmap().String())
		b.srcCountry = append(b.srcCountry, at(countries, i))
		b.srcASN = append(b.srcASN, at(asns, i))
		b.srcLabel = append(b.srcLabel, uint8(at(labels, i)))
		b.protocol = append(b.protocol, u8(at(r.GetProtocol(), i)))
		b.dstPort = append(b.dstPort, u16(at(r.GetDstPort(), i)))
		b.icmpType = append(b.icmpType, u8(at(r.GetIcmpType(), i)))
		b.icmpCode = append(b.icmpCode, u8(at(r.GetIcmpCode(), i)))
		b.class = append(b.class, classString(at(r.GetClass(), i)))
		b.packets = append(b.packets, at(r.GetPackets(), i))
		b.bytes = append(b.bytes, at(r.GetBytes(), i))
		b.dstIPs = append(b.dstIPs, at(r.GetDstIps(), i))
		b.firstSeen = append(b.firstSeen, bin.Add(time.Duration(at(r.GetFirstSeenMs(), i))*time.Millisecond).Truncate(time.Second))
		b.lastSeen = append(b.lastSeen, bin.Add(time.Duration(at(r.GetLastSeenMs(), i))*time.Millisecond).Truncate(time.Second))
		b.ttlMin = append(b.ttlMin, u8(at(r.GetTtlMin(), i)))
		b.ttlMax = append(b.ttlMax, u8(at(r.GetTtlMax(), i)))
		b.distinctPorts = append(b.distinctPorts, at(r.GetDistinctPorts(), i))
		var ov uint8
		if at(r.GetOverflow(), i) {
			ov = 1
		}
		b.overflow = append(b.overflow, ov)
		b.fragments = append(b.fragments, at(r.GetFragments(), i))
		b.fpMirai = append(b.fpMirai, at(mirai, i))
		b.fpZmap = append(b.fpZmap, at(zmap, i))
		b.fpMasscan = append(b.fpMasscan, at(masscan, i))
		b.raftIndex = append(b.raftIndex, cb.GetRaftIndex())
		b.seq = append(b.seq, batch.GetSequence())
	}
}

// statsBlock holds sensor_stats rows (one per batch) in statsColumns order.
type statsBlock struct {
	binStart          []time.Time
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
	b.binStart = append(b.binStart, time.Unix(batch.GetBinStart(), 0).UTC())
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
