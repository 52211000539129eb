package detect

import (
	"bytes"
	"testing"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestDeltaRowsOfEarlyFlushesAdd: a sensor's early flushes ship delta rows
// (sensor/summary); the distinct destinations of a source's batches in one
// bin add up (each batch judged by its largest row), so a scanner crossing
// min_dst_ips over several 2 s flushes is found on the crossing batch, not
// at bin close. Rows of one batch never add up (a lower bound across
// ports).
func TestDeltaRowsOfEarlyFlushesAdd(t *testing.T) {
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
	// One batch, two ports to the same two addresses: 2, not 4.
	send(r{src: "45.33.32.156", port: 23, packets: 3, dsts: 2, first: 100, last: 900},
		r{src: "45.33.32.156", port: 2323, packets: 3, dsts: 2, first: 100, last: 900})
	// Next flush: 2 more addresses, packets 8 < 10 in all.
	send(r{src: "45.33.32.156", port: 23, packets: 2, dsts: 2, first: 2100, last: 2900})
	if n := len(f.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST)); n != 0 {
		t.Fatalf("%d findings below min_packets", n)
	}
	// Third flush crosses min_packets with 2+2+1 = 5 >= 3 addresses.
	send(r{src: "45.33.32.156", port: 23, packets: 2, dsts: 1, first: 4100, last: 4100})
	got := f.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST)
	if len(got) != 1 || got[0].Packets != 10 || got[0].DstIps != 5 {
		t.Fatalf("findings %v; want one with 10 packets to 5 addresses", got)
	}

	// The same deltas as rows of a single batch count as a lower bound (2).
	d2 := mustNew(t, cfg)
	f2 := newFeed(t, d2)
	f2.send(f2.batch("s1", bin,
		r{src: "45.33.32.156", port: 23, packets: 3, dsts: 2}, r{src: "45.33.32.156", port: 2323, packets: 3, dsts: 2},
		r{src: "45.33.32.156", port: 80, packets: 4, dsts: 2}))
	if n := len(f2.ofType(jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST)); n != 0 {
		t.Fatalf("rows of one batch added up: %d findings", n)
	}
	// Snapshots keep the per-batch state: a restored detector continues.
	snapA := snapshotBytes(t, d)
	d3 := mustNew(t, cfg)
	if err := d3.Restore(bytesReader(snapA)); err != nil {
		t.Fatal(err)
	}
	if snapB := snapshotBytes(t, d3); string(snapA) != string(snapB) {
		t.Error("snapshot differs after restore")
	}
}

func snapshotBytes(t *testing.T, d *Detector) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := d.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }
