package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jasperfed/jasper/internal/pki"
)

// TestProposerGroupsInOrder enqueues a pipelined stream of batches: the
// proposer groups them into few entries, keeps their order, and the
// require-watermark chain holds.
func TestProposerGroupsInOrder(t *testing.T) {
	dir := t.TempDir()
	files := testPKI(t, dir, map[string]pki.Role{"h1": pki.RoleHub})
	cfg := fastConfig("h1", dir, files["h1"])
	cfg.Bootstrap = true
	cfg.ProposeWindow = 50 * time.Millisecond
	cfg.MaxGroupBatches = 16
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	waitFor(t, "leader", 10*time.Second, s.IsLeader)
	leaderCh := s.LeaderChanges()
	if v := <-leaderCh; !v {
		t.Fatal("LeaderChanges did not start with true on the leader")
	}
	ctx := context.Background()
	var futs []*BatchFuture
	var prev uint64
	for seq := uint64(1); seq <= 50; seq++ {
		f, err := s.EnqueueBatch(ctx, testBatch("s1", seq, 2), prev)
		if err != nil {
			t.Fatal(err)
		}
		futs = append(futs, f)
		prev = seq
	}
	var last uint64
	for i, f := range futs {
		r, err := f.Wait(ctx)
		if err != nil || r.Err != nil || r.Duplicate {
			t.Fatalf("batch %d: %+v %v", i+1, r, err)
		}
		if r.Index < last {
			t.Fatalf("batch %d applied at index %d before %d", i+1, r.Index, last)
		}
		last = r.Index
	}
	if s.Watermark("s1") != 50 {
		t.Fatalf("watermark %d", s.Watermark("s1"))
	}
	// The histogram counts entries; its sum counts batches.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var h *dto.Histogram
	for _, mf := range mfs {
		if mf.GetName() == "jasper_hub_proposer_batches_per_entry" {
			h = mf.GetMetric()[0].GetHistogram()
		}
	}
	if h == nil || h.GetSampleSum() != 50 || h.GetSampleCount() >= 50 {
		t.Fatalf("grouping: %v", h)
	}
	t.Logf("50 batches in %d raft entries", h.GetSampleCount())

	// A batch whose predecessor never arrived is refused, not applied.
	r, err := s.ProposeBatch(ctx, testBatch("s1", 52, 2), 51)
	if err != nil || !errors.Is(r.Err, ErrOutOfOrder) || s.Watermark("s1") != 50 {
		t.Fatalf("gap: %+v %v watermark %d", r, err, s.Watermark("s1"))
	}
	if err := s.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	for v := range leaderCh {
		if v {
			t.Fatal("leader after stop")
		}
	}
	if _, err := s.ProposeBatch(ctx, testBatch("s1", 53, 1), 0); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("propose after stop: %v", err)
	}
}
