package ingest

import (
	"fmt"
	"sync"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub/store"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// maxRawBatches bounds the batches whose bytes are kept between their
// decoding and their handling (a few per stream in flight; past the bound
// a batch is simply encoded again).
const maxRawBatches = 4096

// rawCodec is the gRPC codec of the hub's port: gRPC's proto codec, except
// that a StreamRequest that carries a Batch and nothing else keeps the
// batch's bytes as they came, so that the leader proposes them as they are
// (store.EnqueueBatchRaw) instead of encoding the batch again. The bytes
// are looked up once, by the decoded batch, with take.
type rawCodec struct {
	base encoding.CodecV2

	mu   sync.Mutex
	raw  map[*jasperv1.Batch][]byte
	kept uint64 // batches whose bytes were kept, guarded by mu
}

func newRawCodec() *rawCodec {
	return &rawCodec{base: encoding.GetCodecV2("proto"), raw: map[*jasperv1.Batch][]byte{}}
}

func (c *rawCodec) Name() string { return c.base.Name() }

func (c *rawCodec) Marshal(v any) (mem.BufferSlice, error) { return c.base.Marshal(v) }

func (c *rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*jasperv1.StreamRequest)
	if !ok {
		return c.base.Unmarshal(data, v)
	}
	// A buffer of its own (the batch's bytes stay in it), not gRPC's
	// pooled one.
	buf := data.Materialize()
	raw, ok := onlyBatch(buf)
	if !ok {
		if err := proto.Unmarshal(buf, req); err != nil {
			return fmt.Errorf("failed to unmarshal %T: %w", v, err)
		}
		return nil
	}
	// The request is one batch: decoded by the store's batch decoder (a
	// few allocations per column instead of one per source address).
	b, err := store.DecodeBatch(raw)
	if err != nil {
		return fmt.Errorf("failed to unmarshal %T: %w", v, err)
	}
	proto.Reset(req)
	req.Msg = &jasperv1.StreamRequest_Batch{Batch: b}
	c.mu.Lock()
	if len(c.raw) < maxRawBatches {
		c.raw[b] = raw
		c.kept++
	}
	c.mu.Unlock()
	return nil
}

// take returns (and forgets) the bytes b was decoded from, or nil.
func (c *rawCodec) take(b *jasperv1.Batch) []byte {
	if c == nil || b == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	raw, ok := c.raw[b]
	if ok {
		delete(c.raw, b)
	}
	return raw
}

// onlyBatch returns the value of the StreamRequest's batch field (2) when
// the message is that one field and nothing else: then the decoded Batch
// is exactly what those bytes decode to (no second occurrence merged into
// it, no hello replacing it).
func onlyBatch(b []byte) ([]byte, bool) {
	num, typ, n := protowire.ConsumeTag(b)
	if n < 0 || num != 2 || typ != protowire.BytesType {
		return nil, false
	}
	v, m := protowire.ConsumeBytes(b[n:])
	if m < 0 || n+m != len(b) {
		return nil, false
	}
	return v, true
}
