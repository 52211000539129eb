package detect

import (
	"testing"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestEarlyFlushDeltaRows: a sensor's early flushes ship delta rows whose
// packets add up and whose dst_ips is the row's count for the bin so far
// (sensor/summary). A scanner crossing the thresholds over several 2 s
// flushes is found on the crossing batch, not at bin close; a host that
// hits one dark address again and again over many flushes is not a
// scanner of several addresses.
func TestEarlyFlushDeltaRows(t *testing.T) {
	cfg := DefaultConfig() // 10 packets to 3 addresses
	d := mustNew(t, cfg)
	f := newFeed(t, d)
	bin := t0.Unix()
	seq := uint64(0)
	send := func(rows ...r) {
		cb := f.batch("s1", bin, rows...)
		seq++
		cb.Batch.Sequence = seq
		f.send(cb)
	}
	send(r{src: "45.33.32.156", port: 23, packets: 3, dsts: 2, first: 100, last: 900},
		r{src: "45.33.32.156", port: 2323, packets: 3, dsts: 2, first: 100, last: 900})
	send(r{src: "45.33.32.156", port: 23, packets: 2, dsts: 4, first: 2100, last: 2900})
	if n := len(f.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST)); n != 0 {
		t.Fatalf("%d findings below min_packets", n)
	}
	send(r{src: "45.33.32.156", port: 23, packets: 2, dsts: 5, first: 4100, last: 4100})
	got := f.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST)
	if len(got) != 1 || got[0].Packets != 10 || got[0].DstIps != 5 {
		t.Fatalf("findings %v; want one with 10 packets to 5 addresses", got)
	}

	// One address, 30 flushes of 3 packets each in one bin: 90 packets to
	// 1 address, no finding.
	d2 := mustNew(t, cfg)
	f2 := newFeed(t, d2)
	for i := range 30 {
		cb := f2.batch("s1", bin, r{src: "45.33.32.157", port: 443, packets: 3, dsts: 1, first: uint32(i * 2000), last: uint32(i*2000 + 1000)})
		cb.Batch.Sequence = uint64(i + 1)
		f2.send(cb)
	}
	if got := f2.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST); len(got) != 0 {
		t.Fatalf("a host hitting one address became %v", got)
	}
}
