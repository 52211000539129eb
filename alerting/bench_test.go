package alerting_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/webhook"
	"github.com/jasperfed/jasper/hub/store"
)

// BenchmarkFindingToWebhook measures, on a three-hub in-process cluster
// (real raft over mTLS, tick interval 1 s, group_wait 0), the time from a
// finding's proposal on the leader (so the raft commit is included) to its arrival at the
// CERT's webhook receiver, at 1,000 findings per minute (one every 60 ms).
// Run with -benchtime=Nx (N findings); reports p50/p99/max in ms.
func BenchmarkFindingToWebhook(b *testing.B) {
	r := newRig(b)
	dir := b.TempDir()
	files := failoverPKI(b, dir, "h1", "h2", "h3")
	mk := func(id string) store.Config {
		c := store.DefaultConfig()
		c.NodeID, c.BindAddr, c.DataDir, c.TLS, c.IngestAddr = id, "127.0.0.1:0", filepath.Join(dir, id), files[id], "ingest-"+id
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
		c.CommitTimeout, c.TickInterval = 5*time.Millisecond, time.Second
		return c
	}
	c1 := mk("h1")
	c1.Bootstrap = true
	hubs := []*hubNode{r.startHub(b, c1)}
	l := leader(b, hubs)
	for _, id := range []string{"h2", "h3"} {
		h := r.startHub(b, mk(id))
		if err := l.st.Join(context.Background(), id, h.st.RaftAddr()); err != nil {
			b.Fatal(err)
		}
		hubs = append(hubs, h)
	}
	waitUntil(b, 10*time.Second, "the first tick", func() bool { return l.a.Module().NowMs() > 0 })
	commit := map[string]time.Time{}
	b.ResetTimer()
	tick := time.NewTicker(60 * time.Millisecond)
	defer tick.Stop()
	for i := range b.N {
		<-tick.C
		f := hostFinding(i)
		p, _ := proto.Marshal(f)
		start := time.Now()
		l = leader(b, hubs)
		if _, err := l.st.Propose(context.Background(), outbox.DefaultName, outbox.Encode(outbox.Command{Op: outbox.OpFinding, Finding: p})); err != nil {
			b.Fatalf("propose on %s: %v", l.id, err)
		}
		commit[f.Id] = start // conservative: includes the raft commit itself
	}
	first := map[string]time.Time{}
	waitUntil(b, 30*time.Second, "every finding at the receiver", func() bool {
		for _, req := range r.hookDE.Requests() {
			var p webhook.Payload
			if err := json.Unmarshal(req.Body, &p); err != nil {
				b.Fatal(err)
			}
			for _, ev := range p.Data.Events {
				id := ev["extra.finding_id"].(string)
				if _, ok := first[id]; !ok {
					first[id] = req.At
				}
			}
		}
		l = leader(b, hubs)
		return len(first) == len(commit)
	})
	b.StopTimer()
	var lat []float64
	for id, c := range commit {
		at, ok := first[id]
		if !ok {
			b.Fatalf("%s never arrived", id)
		}
		lat = append(lat, float64(at.Sub(c).Microseconds())/1000)
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(q(0.5), "p50_ms")
	b.ReportMetric(q(0.99), "p99_ms")
	b.ReportMetric(lat[len(lat)-1], "max_ms")
}
