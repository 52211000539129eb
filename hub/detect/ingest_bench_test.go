package detect

import (
	"fmt"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// BenchmarkOnBatchIngestInput feeds the batches of hub/ingest's
// BenchmarkIngestThreeHubs (500 rows, the same 256 documentation sources
// on port 23 every batch, 4 sensors, include_bogon_sources so that every
// row is judged): the detectors' share of that benchmark, in rows/s.
func BenchmarkOnBatchIngestInput(b *testing.B) {
	cfg := DefaultConfig()
	cfg.IncludeBogonSources = true
	d := mustNew(b, cfg)
	bin := time.Now().Unix() / 60 * 60
	mk := func(sensor string, seq uint64) *jasperv1.CommittedBatch {
		r := &jasperv1.Rows{}
		for i := range 500 {
			r.SrcIp = append(r.SrcIp, []byte{203, 0, 113, byte(i)})
			r.Protocol = append(r.Protocol, 6)
			r.DstPort = append(r.DstPort, 23)
			r.IcmpType = append(r.IcmpType, 0)
			r.IcmpCode = append(r.IcmpCode, 0)
			r.Class = append(r.Class, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN)
			r.Packets = append(r.Packets, uint64(i+1))
			r.Bytes = append(r.Bytes, uint64(60*(i+1)))
			r.DstIps = append(r.DstIps, 1)
			r.FirstSeenMs = append(r.FirstSeenMs, 10)
			r.LastSeenMs = append(r.LastSeenMs, 20)
			r.TtlMin = append(r.TtlMin, 50)
			r.TtlMax = append(r.TtlMax, 60)
			r.DistinctPorts = append(r.DistinctPorts, 1)
			r.Overflow = append(r.Overflow, false)
			r.Fragments = append(r.Fragments, 0)
		}
		r.Fingerprints = []*jasperv1.FingerprintColumn{{Name: "mirai", Packets: make([]uint64, 500)}}
		return &jasperv1.CommittedBatch{SensorId: sensor, Batch: &jasperv1.Batch{Sequence: seq, BinStart: bin, BinSeconds: 60, Rows: r}}
	}
	var batches []*jasperv1.CommittedBatch
	for i := range 64 {
		batches = append(batches, mk(fmt.Sprintf("bench-%d", i%4), uint64(i/4+1)))
	}
	b.ReportAllocs()
	b.ResetTimer()
	var rows int
	i := 0
	for b.Loop() {
		cb := batches[i%len(batches)]
		cb.Batch.Sequence = uint64(i/4 + 1)
		d.OnBatch(uint64(i+1), cb)
		rows += 500
		i++
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
