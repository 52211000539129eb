package detect

import (
	"fmt"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/internal/benchinput"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// e2eRows is the batch of hub/clustertest's TestEndToEndThroughput
// (hub/internal/benchinput): 500 distinct SYN rows.
func e2eRows(seq uint64) *jasperv1.Rows { return benchinput.Rows(seq, 500) }

// e2eLog is the raft log of TestEndToEndThroughput's saturated phase as
// the hubs apply it: 4 sensors each send sequences 1..1000 of benchBatch
// rows in one 60 s bin, interleaved; the leader's enricher labels every
// source routable (no geo databases: no country); a tick every 500
// batches (the hub ticks every 10 s of a run of about 15 s). 100,000
// distinct sources, each seen 20 times: almost all become infected hosts.
type e2eLog struct {
	bin     int64
	rows    [200]*jasperv1.Rows
	en      *jasperv1.Enrichment
	batches int
}

func newE2ELog() *e2eLog {
	l := &e2eLog{bin: t0.Unix(), batches: 4000}
	for s := range l.rows {
		l.rows[s] = e2eRows(uint64(s))
	}
	l.en = &jasperv1.Enrichment{}
	for range 500 {
		l.en.SrcLabel = append(l.en.SrcLabel, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE)
		l.en.SrcCountry = append(l.en.SrcCountry, "")
		l.en.SrcAsn = append(l.en.SrcAsn, 0)
	}
	return l
}

// batch k of the log (0-based).
func (l *e2eLog) batch(k int) *jasperv1.CommittedBatch {
	seq := uint64(k/4 + 1)
	return &jasperv1.CommittedBatch{
		SensorId:   fmt.Sprintf("bench-%d", k%4),
		Batch:      &jasperv1.Batch{Sequence: seq, BinStart: l.bin, BinSeconds: 60, Rows: l.rows[seq%200]},
		Enrichment: l.en,
	}
}

// feed applies batch k (and the tick after it, if one is due) with raft
// indexes as the FSM would give them.
func (l *e2eLog) feed(d *Detector, k int) {
	idx := uint64(k + k/500 + 1)
	d.OnBatch(idx, l.batch(k))
	if (k+1)%500 == 0 {
		d.OnTick(idx+1, time.Unix(l.bin+int64(2*(k+1)/500), 0))
	}
}

// newE2EDetector is a hub's detector: defaults and the two subscribers
// cmd/jasper attaches, here doing nothing: the log (a view) and alerting.
func newE2EDetector(b testing.TB) *Detector {
	d := mustNew(b, DefaultConfig())
	d.OnFindingView(func(*jasperv1.Finding) {})
	d.OnFinding(func(*jasperv1.Finding) {})
	return d
}

// BenchmarkOnBatchEndToEndInput: the detectors' share of the end-to-end
// benchmark. One op is the whole log (4,000 batches, 2 M rows) into a
// fresh detector, as one run of the test gives each hub.
func BenchmarkOnBatchEndToEndInput(b *testing.B) {
	l := newE2ELog()
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		d := newE2EDetector(b)
		for k := range l.batches {
			l.feed(d, k)
		}
		n++
	}
	b.ReportMetric(float64(n*l.batches*500)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*l.batches*500), "ns/row")
}

// TestEndToEndInputFindings pins what the detectors make of the
// end-to-end log: the findings are part of the cost measured above.
func TestEndToEndInputFindings(t *testing.T) {
	l := newE2ELog()
	d := newE2EDetector(t)
	for k := range l.batches {
		l.feed(d, k)
	}
	st := d.Stats()
	hosts, _ := d.Tracked()
	t.Logf("stats %+v, tracked hosts %d", st, hosts)
	if st.Rows != 2_000_000 || st.FindingsNew != 100_000 || hosts != 100_000 {
		t.Fatalf("rows %d, findings %d, hosts %d: want 2 M rows, 100 k findings and hosts", st.Rows, st.FindingsNew, hosts)
	}
}
