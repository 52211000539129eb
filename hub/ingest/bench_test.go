package ingest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// BenchmarkIngestThreeHubs streams batches of 500 rows from 4 sensors over
// mTLS gRPC into a 3-hub raft cluster on loopback (every batch acked after
// the quorum commit, fsync'd bolt logs) and reports rows/s and the 50th and
// 99th percentile ack latency; a single hub (no replication) is the
// baseline.
func BenchmarkIngestThreeHubs(b *testing.B) {
	for _, hubs := range []int{1, 3} {
		for _, window := range []int{8, 64} {
			b.Run(fmt.Sprintf("hubs=%d/window=%d", hubs, window), func(b *testing.B) { benchIngest(b, hubs, window, 0) })
		}
		// A sustained rate below saturation: what ack latency sensors see.
		b.Run(fmt.Sprintf("hubs=%d/window=8/paced=100k_rows_per_s", hubs), func(b *testing.B) { benchIngest(b, hubs, 8, 100_000) })
	}
}

// benchIngest keeps at most window unacked batches per sensor, as a
// sensor's uplink does.
// A rate > 0 paces the sensors to that many rows per second in total.
func benchIngest(b *testing.B, nhubs, window int, rate int) {
	const sensors, rows = 4, 500
	f := newFixture(b)
	admin := f.issue(b, nil, pki.Identity{Role: pki.RoleAdmin, ID: "ops"}, time.Time{}, time.Hour)
	// Production raft timeouts: the short test ones make a loaded leader
	// on this shared machine step down.
	prod := func(sc *store.Config, _ *Config) {
		d := store.DefaultConfig()
		sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout, sc.CommitTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout, d.CommitTimeout
	}
	hubs := []*hubNode{startHub(b, f, "h1", true, prod)}
	waitFor(b, "leader", hubs[0].st.IsLeader)
	for _, id := range []string{"h2", "h3"}[:nhubs-1] {
		h := startHub(b, f, id, false, prod)
		joinVia(b, hubs, admin, id, h.st.RaftAddr())
		hubs = append(hubs, h)
	}
	streamBench(b, hubs[0].srv.Addr(), f, sensors, rows, window, rate)
}

// streamBench opens one mTLS stream per sensor to addr, sends b.N batches
// of rows rows in all (at most window unacked per stream; rate > 0 paces
// the sensors to that many rows per second in total) and reports rows/s,
// the process's CPU per row and the ack latency. It returns the rows acked.
func streamBench(b *testing.B, addr string, f *fixture, sensors, rows, window, rate int) int {
	bin := nowBin()
	per := b.N/sensors + 1
	type stream struct {
		s      *sensorStream
		sent   []time.Time
		lat    []time.Duration
		batch  []*jasperv1.Batch
		credit chan struct{}
	}
	var streams []*stream
	for i := range sensors {
		id := fmt.Sprintf("bench-%d", i)
		files := f.issue(b, nil, sensorID(id, "JP", "198.51.100.0/24"), time.Time{}, time.Hour)
		s, resp, err := open(b, dial(b, addr, files), &jasperv1.Hello{SensorId: id})
		if err != nil || resp.GetWelcome() == nil {
			b.Fatalf("open: %v %v", resp, err)
		}
		st := &stream{s: s, sent: make([]time.Time, per+1), credit: make(chan struct{}, window)}
		for seq := 1; seq <= per; seq++ {
			st.batch = append(st.batch, validBatch(uint64(seq), bin, rows))
		}
		streams = append(streams, st)
	}
	b.ResetTimer()
	cpu0 := cpuTime()
	start := time.Now()
	var wg sync.WaitGroup
	for _, st := range streams {
		wg.Go(func() {
			go func() {
				var tick <-chan time.Time
				if rate > 0 {
					t := time.NewTicker(time.Duration(float64(time.Second) * float64(sensors*rows) / float64(rate)))
					defer t.Stop()
					tick = t.C
				}
				for i, bt := range st.batch {
					if tick != nil {
						<-tick
					}
					st.credit <- struct{}{}
					st.sent[i+1] = time.Now()
					if st.s.stream.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: bt}}) != nil {
						return
					}
				}
			}()
			for range st.batch {
				r, err := st.s.stream.Recv()
				if err != nil || r.GetAck() == nil {
					b.Errorf("answer: %v %v", r, err)
					return
				}
				st.lat = append(st.lat, time.Since(st.sent[r.GetAck().Sequence]))
				<-st.credit
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	cpu := cpuTime() - cpu0
	b.StopTimer()
	var lat []time.Duration
	for _, st := range streams {
		lat = append(lat, st.lat...)
	}
	slices.Sort(lat)
	total := float64(len(lat) * rows)
	b.ReportMetric(total/el.Seconds(), "rows/s")
	// CPU time of the whole process (every hub and the sensor clients)
	// per row: steadier than the wall rate on a shared machine.
	b.ReportMetric(float64(cpu.Nanoseconds())/total, "cpu_ns/row")
	if len(lat) > 0 {
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99_ack_ms")
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50_ack_ms")
	}
	b.ReportMetric(0, "ns/op")
	return len(lat) * rows
}
