package summary

import (
	"net/netip"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
)

// TestZeroAllocsAfterEarlyFlush: a packet of a known key whose row an early
// flush reset (it queues the row again) allocates nothing once the queue
// has grown.
func TestZeroAllocsAfterEarlyFlush(t *testing.T) {
	a, err := NewAggregator(DefaultConfig(), func(*jasperv1.Batch) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	infos := []packet.Info{
		{Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, Src: netip.MustParseAddr("203.0.113.1"), Dst: netip.MustParseAddr("198.51.100.7"), Protocol: 6, DstPort: 23, TTL: 50, Length: 40},
		{Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, Src: netip.MustParseAddr("203.0.113.2"), Dst: netip.MustParseAddr("198.51.100.8"), Protocol: 6, DstPort: 2323, TTL: 50, Length: 40},
		{Class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, Src: netip.MustParseAddr("2001:db8::1"), Dst: netip.MustParseAddr("2001:db8:1::1"), IPv6: true, Protocol: 6, DstPort: 445, TTL: 50, Length: 40},
	}
	for i := range 100 {
		for _, p := range infos {
			p.Dst = netip.AddrFrom4([4]byte{198, 51, 100, byte(i)})
			if p.IPv6 {
				p.Dst = netip.AddrFrom16([16]byte{0x20, 1, 15: byte(i)})
			}
			if err := a.Add(t0, packet.OK, &p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(a.dirty) != len(infos) {
		t.Fatalf("%d rows queued, want %d", len(a.dirty), len(infos))
	}
	ts := t0.Add(time.Second)
	allocs := testing.AllocsPerRun(1000, func() {
		// What EarlyFlush does to the rows after building its batches.
		for _, i := range a.dirty {
			a.row(i).reset()
		}
		a.dirty = a.dirty[:0]
		for i := range infos {
			if err := a.Add(ts, packet.OK, &infos[i]); err != nil {
				t.Fatal(err)
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per run on rows reset by an early flush", allocs)
	}
	if len(a.dirty) != len(infos) || a.arena.used != 3 {
		t.Errorf("queue %d, slots used %d; want 3, 3 (sets are kept, not remade)", len(a.dirty), a.arena.used)
	}
}
