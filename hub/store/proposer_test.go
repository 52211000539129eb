package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
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

// TestEncodeGroupMatchesEncodeCommand checks that the proposer's entry,
// assembled from batches its callers encoded, is byte for byte the
// BatchesCommand envelope encodeCommand gives, so that hubs of this
// version and older ones read the same log.
func TestEncodeGroupMatchesEncodeCommand(t *testing.T) {
	for _, n := range []int{1, 2, 7, 128} {
		for _, load := range []bool{false, true} {
			var group []*proposal
			cmd := &jasperv1.BatchesCommand{Load: load}
			for i := range n {
				cb := testBatch(fmt.Sprintf("s%d", i%3), uint64(i+1), 1+i*37%600)
				cb.Enrichment = &jasperv1.Enrichment{GeoDbVersion: "test", SrcCountry: []string{"JP"}}
				pb := &jasperv1.ProposedBatch{Batch: cb, RequireWatermark: uint64(i)}
				cmd.Batches = append(cmd.Batches, pb)
				enc, err := marshalOpts.Marshal(pb)
				if err != nil {
					t.Fatal(err)
				}
				group = append(group, &proposal{enc: &enc, size: len(enc)})
			}
			want, err := encodeCommand(jasperv1.CommandType_COMMAND_TYPE_BATCHES, cmd)
			if err != nil {
				t.Fatal(err)
			}
			got := encodeGroup(group, load)
			if !bytes.Equal(got, want) {
				t.Fatalf("%d batches, load %v: entry of %d bytes differs from encodeCommand's %d bytes", n, load, len(got), len(want))
			}
			if cap(got) != len(got) {
				t.Fatalf("entry has capacity %d for %d bytes: size computed wrong", cap(got), len(got))
			}
		}
	}
}
