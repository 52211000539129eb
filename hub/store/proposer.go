package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type proposal struct {
	// enc is the ProposedBatch encoded by the caller (pooled: returned to
	// encPool once the group's entry is assembled).
	enc  *[]byte
	size int
	res  chan proposalResult
}

// encPool recycles the buffers batches are encoded into before the
// proposer copies them into one raft entry.
var encPool = sync.Pool{New: func() any { return new([]byte) }}

type proposalResult struct {
	r   BatchResult
	err error
}

// ProposeBatch proposes one sensor batch and waits until it is committed
// and applied: EnqueueBatch then Wait. Leader only.
//
// A nil error with r.Err == nil means the batch is committed on a quorum
// (r.Duplicate: it was committed before). An error, or r.Err set, means
// the batch is not known to be committed; the sensor must resend.
func (s *Store) ProposeBatch(ctx context.Context, b *jasperv1.CommittedBatch, requireWatermark uint64) (BatchResult, error) {
	f, err := s.EnqueueBatch(ctx, b, requireWatermark)
	if err != nil {
		return BatchResult{}, err
	}
	return f.Wait(ctx)
}

// BatchFuture is a batch handed to the proposer.
type BatchFuture struct {
	p *proposal
	s *Store
}

// Wait blocks until the batch's entry is applied (or failed).
func (f *BatchFuture) Wait(ctx context.Context) (BatchResult, error) {
	select {
	case res := <-f.p.res:
		f.p.res <- res // let Wait be called again
		return res.r, res.err
	case <-ctx.Done():
		return BatchResult{}, ctx.Err()
	case <-f.s.done:
		return BatchResult{}, ErrNotOpen
	}
}

// EnqueueBatch hands one sensor batch to the proposer without waiting.
// Batches enqueued one after another (from one goroutine) reach the raft
// log in that order. Concurrent batches are grouped into one raft entry
// (see Config.ProposeWindow). requireWatermark, when non-zero, makes the
// FSM refuse the batch with ErrOutOfOrder unless the sensor's watermark
// has reached it: pass the sequence of the previous batch enqueued on the
// same stream, so that a lost earlier batch is never hidden by a later one.
// Leader only; ErrQueueFull when the proposer is saturated.
func (s *Store) EnqueueBatch(ctx context.Context, b *jasperv1.CommittedBatch, requireWatermark uint64) (*BatchFuture, error) {
	return s.EnqueueBatchRaw(ctx, b, nil, requireWatermark)
}

// EnqueueBatchRaw is EnqueueBatch for a batch whose encoded form is at
// hand (rawBatch: the bytes b.Batch was decoded from, as the sensor sent
// them), so that it is not encoded again: the entry carries rawBatch as
// the committed batch's batch field. Every hub decodes the same bytes, so
// the replicas agree whatever the sensor's encoder did; rawBatch must
// decode to b.Batch. A nil rawBatch encodes b.Batch.
func (s *Store) EnqueueBatchRaw(ctx context.Context, b *jasperv1.CommittedBatch, rawBatch []byte, requireWatermark uint64) (*BatchFuture, error) {
	if _, err := s.open(); err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, s.notLeader()
	}
	// Encode here, in the caller's goroutine (one per sensor stream), so
	// that the single proposer goroutine only concatenates.
	buf := encPool.Get().(*[]byte)
	enc, err := encodeProposed((*buf)[:0], b, rawBatch, requireWatermark)
	if err != nil {
		encPool.Put(buf)
		return nil, fmt.Errorf("%w: encode batch: %v", ErrBadCommand, err)
	}
	*buf = enc
	p := &proposal{enc: buf, size: len(enc), res: make(chan proposalResult, 1)}
	select {
	case s.propCh <- p:
		return &BatchFuture{p: p, s: s}, nil
	case <-ctx.Done():
		encPool.Put(buf)
		return nil, ctx.Err()
	case <-s.done:
		encPool.Put(buf)
		return nil, ErrNotOpen
	default:
		encPool.Put(buf)
		return nil, ErrQueueFull
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

var cachedSizeOpts = proto.MarshalOptions{Deterministic: true, UseCachedSize: true}

// encodeProposed appends the encoded ProposedBatch{cb, requireWatermark}
// to dst. With raw set (the encoding of cb.Batch) the batch is not
// encoded again: the committed batch's other fields are encoded, then raw
// as field 4 (after field 6: decoders take fields in any order).
func encodeProposed(dst []byte, cb *jasperv1.CommittedBatch, raw []byte, requireWatermark uint64) ([]byte, error) {
	if raw == nil {
		return marshalOpts.MarshalAppend(dst, &jasperv1.ProposedBatch{Batch: cb, RequireWatermark: requireWatermark})
	}
	head := &jasperv1.CommittedBatch{RaftIndex: cb.RaftIndex, SensorId: cb.SensorId, SensorCountry: cb.SensorCountry,
		Enrichment: cb.Enrichment, ReceivedAtMs: cb.ReceivedAtMs}
	n := marshalOpts.Size(head)
	dst = protowire.AppendTag(dst, 1, protowire.BytesType)
	dst = protowire.AppendVarint(dst, uint64(n+protowire.SizeTag(4)+protowire.SizeBytes(len(raw))))
	start := len(dst)
	// The sizes Size just cached are those of head as it is now.
	dst, err := cachedSizeOpts.MarshalAppend(dst, head)
	if err != nil {
		return nil, err
	}
	if len(dst)-start != n {
		return nil, fmt.Errorf("encode batch: %d bytes written, %d expected", len(dst)-start, n)
	}
	dst = protowire.AppendTag(dst, 4, protowire.BytesType)
	dst = protowire.AppendBytes(dst, raw)
	if requireWatermark != 0 {
		dst = protowire.AppendTag(dst, 2, protowire.VarintType)
		dst = protowire.AppendVarint(dst, requireWatermark)
	}
	return dst, nil
}

// maxPooledEnc is the largest encode buffer kept for reuse.
const maxPooledEnc = 1 << 20

// encodeGroup builds the raft entry of a group: the versioned envelope
// around a BatchesCommand, byte for byte what encodeCommand gives for it
// (fields in number order, the batches already encoded by their
// callers), in one allocation. The proposals' buffers go back to the pool.
func encodeGroup(group []*proposal, load bool) []byte {
	payload := 0
	for _, p := range group {
		payload += protowire.SizeTag(1) + protowire.SizeBytes(p.size)
	}
	if load {
		payload += protowire.SizeTag(2) + protowire.SizeVarint(1)
	}
	t := jasperv1.CommandType_COMMAND_TYPE_BATCHES
	v := uint64(commandMinVersion[t])
	n := protowire.SizeTag(1) + protowire.SizeVarint(v) + protowire.SizeTag(2) + protowire.SizeVarint(uint64(t)) +
		protowire.SizeTag(3) + protowire.SizeBytes(payload)
	b := make([]byte, 0, n)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, v)
	b = protowire.AppendTag(b, 2, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(t))
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(payload))
	for _, p := range group {
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendBytes(b, *p.enc)
		if cap(*p.enc) <= maxPooledEnc {
			encPool.Put(p.enc)
		}
		p.enc = nil
	}
	if load {
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	return b
}

// submit proposes one group (in the proposer goroutine, so that raft
// sees groups in queue order) and hands each caller its own result.
func (s *Store) submit(group []*proposal) {
	s.m.proposerBatch.Observe(float64(len(group)))
	t := jasperv1.CommandType_COMMAND_TYPE_BATCHES
	f, start, err := s.applyEncoded(t, encodeGroup(group, s.cfg.Load))
	if err != nil {
		<-s.inflight
		fail(group, err)
		return
	}
	go func() {
		defer func() { <-s.inflight }()
		resp, err := s.wait(context.Background(), t, f, start)
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
