package ingest

import (
	"bytes"
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func unmarshalWith(t *testing.T, c *rawCodec, data []byte, v any) error {
	t.Helper()
	return c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(data)}, v)
}

// TestRawCodecKeepsBatchBytes: a StreamRequest that is one batch keeps the
// batch's bytes for the leader to propose, once; anything else keeps none.
func TestRawCodecKeepsBatchBytes(t *testing.T) {
	c := newRawCodec()
	batch := validBatch(1, nowBin(), 5)
	wantRaw, err := proto.Marshal(batch)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := proto.Marshal(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: batch}})
	if err != nil {
		t.Fatal(err)
	}
	var req jasperv1.StreamRequest
	if err := unmarshalWith(t, c, enc, &req); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(req.GetBatch(), batch) {
		t.Fatal("decoded batch differs")
	}
	if raw := c.take(req.GetBatch()); !bytes.Equal(raw, wantRaw) {
		t.Fatalf("kept %d bytes, want the batch's %d", len(raw), len(wantRaw))
	}
	if c.take(req.GetBatch()) != nil || len(c.raw) != 0 {
		t.Fatal("bytes kept after take")
	}

	// The batch field twice: proto merges them, so no single span of
	// bytes is the decoded batch.
	var twice jasperv1.StreamRequest
	if err := unmarshalWith(t, c, append(append([]byte{}, enc...), enc...), &twice); err != nil {
		t.Fatal(err)
	}
	if c.take(twice.GetBatch()) != nil {
		t.Fatal("bytes kept for a batch given twice")
	}
	// A Hello, and another message type, go through the plain codec.
	hello, _ := proto.Marshal(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: &jasperv1.Hello{SensorId: "s1"}}})
	var hreq jasperv1.StreamRequest
	if err := unmarshalWith(t, c, hello, &hreq); err != nil || hreq.GetHello().GetSensorId() != "s1" || len(c.raw) != 0 {
		t.Fatalf("hello: %v %v, %d kept", &hreq, err, len(c.raw))
	}
	var h jasperv1.Hello
	helloOnly, _ := proto.Marshal(&jasperv1.Hello{SensorId: "s2"})
	if err := unmarshalWith(t, c, helloOnly, &h); err != nil || h.SensorId != "s2" {
		t.Fatalf("plain message: %v %v", &h, err)
	}
	if err := unmarshalWith(t, c, []byte{0x12, 0x05, 0x01}, &req); err == nil {
		t.Fatal("truncated message decoded")
	}
	// Bounded: past maxRawBatches undelivered batches nothing more is kept.
	for range maxRawBatches + 10 {
		var r jasperv1.StreamRequest
		if err := unmarshalWith(t, c, enc, &r); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.raw) != maxRawBatches {
		t.Fatalf("%d batches kept, bound %d", len(c.raw), maxRawBatches)
	}
}

// FuzzRawCodec: whatever a sensor sends, when bytes are kept for a batch
// they decode to that batch.
func FuzzRawCodec(f *testing.F) {
	b := validBatch(1, 1764064800, 3)
	enc, _ := proto.Marshal(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: b}})
	f.Add(enc)
	f.Add(append(append([]byte{}, enc...), enc...))
	f.Add([]byte{0x12, 0x00})
	f.Add([]byte{0x12, 0x02, 0x08, 0x01, 0x0a, 0x00})
	full, _ := proto.Marshal(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Batch{Batch: &jasperv1.Batch{
		Sequence: 3, BinStart: -60, BinSeconds: 60, Partial: true, SealedAtMs: 9,
		Stats: &jasperv1.SensorStats{PacketsSeen: 5, ShedRows: 1},
		Rows: &jasperv1.Rows{SrcIp: [][]byte{{1, 2, 3, 4}, make([]byte, 16)}, Protocol: []uint32{6, 300}, Class: []jasperv1.TrafficClass{1, 99},
			Overflow: []bool{true, false}, Packets: []uint64{1, 1 << 40},
			Fingerprints: []*jasperv1.FingerprintColumn{{Name: "mirai", Packets: []uint64{1, 0}}}},
	}}})
	f.Add(full)
	f.Fuzz(func(t *testing.T, data []byte) {
		c := newRawCodec()
		var req, want jasperv1.StreamRequest
		err := unmarshalWith(t, c, data, &req)
		werr := proto.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("codec error %v, proto.Unmarshal error %v", err, werr)
		}
		if err != nil {
			return
		}
		if !proto.Equal(&req, &want) {
			t.Fatal("codec and proto.Unmarshal decode differently")
		}
		raw := c.take(req.GetBatch())
		if raw == nil {
			return
		}
		var got jasperv1.Batch
		if err := proto.Unmarshal(raw, &got); err != nil || !proto.Equal(&got, req.GetBatch()) {
			t.Fatalf("kept bytes decode to another batch (%v)", err)
		}
	})
}
