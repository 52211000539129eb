// Package benchinput builds the input of the hub's end-to-end benchmark
// (hub/clustertest TestEndToEndThroughput), so that the package benchmarks
// of the detectors and the rollups replay exactly the rows the whole
// program is measured with.
package benchinput

import jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"

// Rows returns the n rows of the batch with sequence seq: distinct
// sources 45.(seq%200).(i/250).(i%250), destination port 1+i%1000, 1+i%7
// packets of 60 bytes to one dark address each, TCP SYN, first and last
// seen 10 and 20 ms into the bin. Over a run the 200 source blocks repeat,
// so each source is seen again every 200 sequences.
func Rows(seq uint64, n int) *jasperv1.Rows {
	r := &jasperv1.Rows{}
	for i := range n {
		r.SrcIp = append(r.SrcIp, []byte{45, byte(seq % 200), byte(i / 250), byte(i % 250)})
		r.Protocol = append(r.Protocol, 6)
		r.DstPort = append(r.DstPort, uint32(1+i%1000))
		r.IcmpType = append(r.IcmpType, 0)
		r.IcmpCode = append(r.IcmpCode, 0)
		r.Class = append(r.Class, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN)
		r.Packets = append(r.Packets, uint64(1+i%7))
		r.Bytes = append(r.Bytes, uint64(60*(1+i%7)))
		r.DstIps = append(r.DstIps, 1)
		r.FirstSeenMs = append(r.FirstSeenMs, 10)
		r.LastSeenMs = append(r.LastSeenMs, 20)
		r.TtlMin = append(r.TtlMin, 50)
		r.TtlMax = append(r.TtlMax, 60)
		r.DistinctPorts = append(r.DistinctPorts, 1)
		r.Overflow = append(r.Overflow, false)
		r.Fragments = append(r.Fragments, 0)
	}
	return r
}
