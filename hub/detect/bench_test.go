package detect

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// benchBatches builds n batches of 1,000 rows each: mostly single-packet
// rows of short-lived scanners over 40 ports, some repeat sources, 10%
// backscatter, 1% mirai; 30 batches a 60 s bin.
func benchBatches(b *testing.B, n int) []*jasperv1.CommittedBatch {
	f := newFeed(b)
	rng := rand.New(rand.NewPCG(1, 2))
	out := make([]*jasperv1.CommittedBatch, n)
	for i := range out {
		rows := make([]r, 0, 1000)
		for k := range 1000 {
			x := r{
				src:   fmt.Sprintf("%d.%d.%d.%d", 11+rng.IntN(180), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254)),
				port:  uint32([]int{23, 2323, 22, 445, 80, 443, 3389, 8080, 5555, 37215}[rng.IntN(10)] + (k%4)*1000),
				dsts:  1 + uint32(rng.IntN(3)),
				first: uint32(rng.IntN(60000)),
			}
			switch {
			case k%10 == 0:
				x.class = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK
				x.packets = uint64(1 + rng.IntN(20))
			case k%100 == 1:
				x.fps = map[string]uint64{"mirai": 1}
			case k%5 == 2:
				x.src = fmt.Sprintf("45.0.%d.%d", rng.IntN(4), rng.IntN(256)) // repeat sources
			}
			rows = append(rows, x)
		}
		out[i] = f.batch(fmt.Sprintf("s%d", i%3), t0.Unix()+int64(i/30)*60, rows...)
	}
	return out
}

// BenchmarkOnBatch measures the detectors' throughput through OnBatch
// (with a tick per batch), in rows per second.
func BenchmarkOnBatch(b *testing.B) {
	batches := benchBatches(b, 600)
	d := mustNew(b, DefaultConfig())
	b.ReportAllocs()
	b.ResetTimer()
	var rows int
	i := 0
	for b.Loop() {
		cb := batches[i%len(batches)]
		// Keep event time moving forward across passes over the batches.
		bin := t0.Unix() + int64(i/30)*60
		cb.Batch.BinStart = bin
		d.OnBatch(uint64(2*i+1), cb)
		d.OnTick(uint64(2*i+2), time.Unix(bin+30, 0))
		rows += len(cb.Batch.Rows.SrcIp)
		i++
	}
	b.ReportMetric(float64(rows)/b.Elapsed().Seconds(), "rows/s")
}
