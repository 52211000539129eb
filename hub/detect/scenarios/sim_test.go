package scenarios

import (
	"net/netip"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

type countSink struct {
	ticks   int
	batches []time.Time
}

func (c *countSink) Batch(at time.Time, _ *jasperv1.CommittedBatch) {
	c.batches = append(c.batches, at)
}
func (c *countSink) Tick(time.Time) { c.ticks++ }

// TestSimEarlyFlushAndGaps: a new source's first packet is applied within
// early flush + commit delay; two captures two years apart do not tick
// through the silence.
func TestSimEarlyFlushAndGaps(t *testing.T) {
	enr, err := enrich.New(enrich.DefaultConfig(), enrich.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	sink := &countSink{}
	cfg := DefaultSimConfig()
	sm, err := newSim(cfg, []string{"a", "b"}, nil, enr, sink)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2019, 8, 21, 18, 16, 47, 0, time.UTC)
	info := packet.Info{Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, Src: netip.MustParseAddr("45.1.2.3"),
		Dst: netip.MustParseAddr("150.0.0.1"), Protocol: 6, DstPort: 23, TTL: 50, Length: 60}
	sm.packet(0, t0, packet.OK, &info)
	sm.packet(0, t0.Add(500*time.Millisecond), packet.OK, &info)
	t1 := t0.Add(2 * 365 * 24 * time.Hour)
	sm.packet(1, t1, packet.OK, &info)
	if err := sm.finish(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(sink.batches) < 3 {
		t.Fatalf("%d batches", len(sink.batches))
	}
	// First batch: the early flush of the new source, within 2 s + 250 ms.
	if d := sink.batches[0].Sub(t0); d > cfg.EarlyFlush+cfg.CommitDelay+cfg.Check {
		t.Errorf("first batch applied %v after the first packet", d)
	}
	if sink.ticks > 3000 {
		t.Errorf("%d ticks: the clock ticked through a two-year gap", sink.ticks)
	}
}
