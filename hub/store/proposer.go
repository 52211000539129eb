package store

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type proposal struct {
	pb   *jasperv1.ProposedBatch
	size int
	res  chan proposalResult
}

type proposalResult struct {
	r   BatchResult
	err error
}

// ProposeBatch proposes one sensor batch and waits until it is committed
// and applied. Concurrent calls are grouped into one raft entry (see
// Config.ProposeWindow). requireWatermark, when non-zero, makes the FSM
// refuse the batch with ErrOutOfOrder unless the sensor's watermark has
// reached it (use the sequence of the previous batch proposed on the same
// stream while that one is still in flight). Leader only.
//
// A nil error with r.Err == nil means the batch is committed on a quorum
// (r.Duplicate: it was committed before). An error means the outcome is
// unknown or negative; the sensor must resend.
func (s *Store) ProposeBatch(ctx context.Context, b *jasperv1.CommittedBatch, requireWatermark uint64) (BatchResult, error) {
	if _, err := s.open(); err != nil {
		return BatchResult{}, err
	}
	if !s.IsLeader() {
		return BatchResult{}, s.notLeader()
	}
	p := &proposal{
		pb:  &jasperv1.ProposedBatch{Batch: b, RequireWatermark: requireWatermark},
		res: make(chan proposalResult, 1),
	}
	p.size = proto.Size(p.pb)
	select {
	case s.propCh <- p:
	case <-ctx.Done():
		return BatchResult{}, ctx.Err()
	case <-s.done:
		return BatchResult{}, ErrNotOpen
	default:
		return BatchResult{}, ErrQueueFull
	}
	select {
	case res := <-p.res:
		return res.r, res.err
	case <-ctx.Done():
		return BatchResult{}, ctx.Err()
	case <-s.done:
		return BatchResult{}, ErrNotOpen
	}
}

// proposer groups queued batch proposals into raft entries.
func (s *Store) proposer() {
	defer s.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var first *proposal
		select {
		case first = <-s.propCh:
		case <-s.done:
			return
		}
		group := []*proposal{first}
		size := first.size
		if s.cfg.ProposeWindow > 0 {
			timer.Reset(s.cfg.ProposeWindow)
		collect:
			for len(group) < s.cfg.MaxGroupBatches && size < s.cfg.MaxGroupBytes {
				select {
				case p := <-s.propCh:
					group = append(group, p)
					size += p.size
				case <-timer.C:
					break collect
				case <-s.done:
					break collect
				}
			}
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		} else {
		drain:
			for len(group) < s.cfg.MaxGroupBatches && size < s.cfg.MaxGroupBytes {
				select {
				case p := <-s.propCh:
					group = append(group, p)
					size += p.size
				default:
					break drain
				}
			}
		}
		select {
		case s.inflight <- struct{}{}:
		case <-s.done:
			fail(group, ErrNotOpen)
			return
		}
		s.submit(group)
	}
}

func fail(group []*proposal, err error) {
	for _, p := range group {
		p.res <- proposalResult{err: err}
	}
}

// submit proposes one group and hands each caller its own result.
func (s *Store) submit(group []*proposal) {
	cmd := &jasperv1.BatchesCommand{Load: s.cfg.Load}
	for _, p := range group {
		cmd.Batches = append(cmd.Batches, p.pb)
	}
	s.m.proposerBatch.Observe(float64(len(group)))
	go func() {
		defer func() { <-s.inflight }()
		resp, err := s.apply(context.Background(), jasperv1.CommandType_COMMAND_TYPE_BATCHES, cmd)
		if err != nil {
			fail(group, err)
			return
		}
		res, ok := resp.([]BatchResult)
		if !ok || len(res) != len(group) {
			fail(group, fmt.Errorf("batches: unexpected FSM response %T", resp))
			return
		}
		for i, p := range group {
			p.res <- proposalResult{r: res[i]}
		}
	}()
}
