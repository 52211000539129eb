package summary_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jasperfed/jasper/sensor/summary"
)

// TestEarlyFlushShipsKnownSources: every early flush ships delta rows for
// every row with new packets since the previous one, known sources too, so
// a scanner's growth reaches the hub within the interval; rows stay
// additive over the bin and stats add up.
func TestEarlyFlushShipsKnownSources(t *testing.T) {
	cfg := summary.DefaultConfig()
	if cfg.EarlyFlush != 2*time.Second {
		t.Fatalf("default early flush %v, want 2s (the fast path is on by default)", cfg.EarlyFlush)
	}
	a, c := newAgg(t, cfg)
	dst := func(i int) string { return fmt.Sprintf("198.51.100.%d", i) }
	// A scanner sends one packet per 500 ms to a new address; a second
	// source appears once.
	for i := range 20 {
		add(t, a, t0.Add(time.Duration(i)*500*time.Millisecond), syn("203.0.113.1", dst(i), 23))
	}
	add(t, a, t0.Add(3*time.Second), syn("203.0.113.2", dst(1), 80))
	var early, dsts []int
	for _, b := range c.batches {
		if !b.Partial {
			t.Fatal("a batch before the seal is not partial")
		}
		for i, ip := range b.Rows.SrcIp {
			if netip.AddrFrom4([4]byte(ip)) == netip.MustParseAddr("203.0.113.1") {
				early = append(early, int(b.Rows.Packets[i]))
				dsts = append(dsts, int(b.Rows.DstIps[i]))
			}
		}
	}
	// Flushes at 2 s, 4 s, 6 s, 8 s of event time (each before the packet
	// that is due at or after it): 4 packets each, to 4, 8, 12, 16
	// addresses of the bin so far.
	if fmt.Sprint(early) != "[4 4 4 4]" || fmt.Sprint(dsts) != "[4 8 12 16]" {
		t.Errorf("scanner's delta rows: packets %v dst_ips %v, want [4 4 4 4] [4 8 12 16]", early, dsts)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	per := map[string]uint64{}
	for _, r := range c.rows(t) {
		per[r.SrcIP.String()] += r.Packets
	}
	if per["203.0.113.1"] != 20 || per["203.0.113.2"] != 1 {
		t.Errorf("rows are not additive: %v", per)
	}
	if s := c.stats(); s.PacketsSeen != 21 || s.PacketsSummarised != 21 {
		t.Errorf("stats over the batches %+v", s)
	}
}

// TestEarlyFlushCap: one early flush ships at most MaxEarlyRows rows,
// oldest activity first; the rest wait for the next flush or the seal,
// counted, and nothing is lost.
func TestEarlyFlushCap(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.MaxEarlyRows = 2
	a, c := newAgg(t, cfg)
	for i := range 5 {
		add(t, a, t0.Add(time.Duration(i)*100*time.Millisecond), syn(fmt.Sprintf("203.0.113.%d", i+1), "198.51.100.1", 23))
	}
	if err := a.EarlyFlush(); err != nil {
		t.Fatal(err)
	}
	if len(c.batches) != 1 || len(c.batches[0].Rows.SrcIp) != 2 {
		t.Fatalf("first flush: %d batches", len(c.batches))
	}
	if got := netip.AddrFrom4([4]byte(c.batches[0].Rows.SrcIp[0])).String(); got != "203.0.113.1" {
		t.Errorf("first flush starts with %s, want the oldest activity", got)
	}
	// New activity of the first source queues behind the deferred rows.
	add(t, a, t0.Add(time.Second), syn("203.0.113.1", "198.51.100.2", 23))
	if err := a.EarlyFlush(); err != nil {
		t.Fatal(err)
	}
	second := c.batches[len(c.batches)-1]
	if len(second.Rows.SrcIp) != 2 || netip.AddrFrom4([4]byte(second.Rows.SrcIp[0])).String() != "203.0.113.3" {
		t.Errorf("second flush rows %v", second.Rows.SrcIp)
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	var rows int
	var pk uint64
	for _, r := range c.rows(t) {
		rows++
		pk += r.Packets
	}
	if rows != 6 || pk != 6 {
		t.Errorf("%d rows, %d packets; want 6, 6", rows, pk)
	}
	if d := a.Totals.EarlyRowsDeferred; d != 3+2 {
		t.Errorf("deferred %d, want 5 (3 at the first flush, 2 at the second)", d)
	}
}

// TestEarlyFlushKeepsDistinctSets: a row flushed again and again keeps its
// distinct set, so dst_ips is the bin's count so far (the same address in
// two flushes counts once), and the sets use no more sketch slots than
// whole bins would.
func TestEarlyFlushKeepsDistinctSets(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.MaxSketches = 1
	a, c := newAgg(t, cfg)
	for round := range 3 {
		// 20 addresses per round: 10 new, 10 seen in the previous round.
		for i := range 20 {
			add(t, a, t0.Add(time.Duration(round)*time.Second), syn("203.0.113.1", fmt.Sprintf("198.51.100.%d", round*10+i), 23))
		}
		if err := a.EarlyFlush(); err != nil {
			t.Fatal(err)
		}
	}
	rows := c.rows(t)
	if len(rows) != 3 {
		t.Fatalf("%d rows, want 3", len(rows))
	}
	for i, want := range []uint32{20, 30, 40} {
		r := rows[i]
		if r.Packets != 20 || r.DstIPs != want || r.TTLMin != 50 || r.FirstSeen != t0.Add(time.Duration(i)*time.Second) {
			t.Errorf("delta %d: %+v, want 20 packets to %d addresses so far", i, r, want)
		}
	}
}
