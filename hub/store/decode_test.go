package store

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// fullBatch is a committed batch with every field of the batches payload
// set: stats, every row column, fingerprints, enrichment.
func fullBatch(rng *rand.Rand, sensor string, seq uint64, n int) *jasperv1.CommittedBatch {
	r := &jasperv1.Rows{}
	enr := &jasperv1.Enrichment{GeoDbVersion: "2026-11-01"}
	mirai, zmap := &jasperv1.FingerprintColumn{Name: "mirai"}, &jasperv1.FingerprintColumn{Name: "zmap"}
	for i := range n {
		ip := []byte{198, 51, 100, byte(rng.IntN(256))}
		if i%7 == 3 {
			ip = append(bytes.Repeat([]byte{0x20}, 15), byte(i))
		}
		r.SrcIp = append(r.SrcIp, ip)
		r.Protocol = append(r.Protocol, uint32(rng.IntN(256)))
		r.DstPort = append(r.DstPort, uint32(rng.IntN(65536)))
		r.IcmpType = append(r.IcmpType, uint32(rng.IntN(3)))
		r.IcmpCode = append(r.IcmpCode, uint32(rng.IntN(3)))
		r.Class = append(r.Class, jasperv1.TrafficClass(rng.IntN(12)))
		r.Packets = append(r.Packets, rng.Uint64()>>uint(rng.IntN(64)))
		r.Bytes = append(r.Bytes, rng.Uint64()>>uint(rng.IntN(64)))
		r.DstIps = append(r.DstIps, rng.Uint32())
		r.FirstSeenMs = append(r.FirstSeenMs, uint32(rng.IntN(60000)))
		r.LastSeenMs = append(r.LastSeenMs, uint32(rng.IntN(60000)))
		r.TtlMin = append(r.TtlMin, uint32(rng.IntN(256)))
		r.TtlMax = append(r.TtlMax, uint32(rng.IntN(256)))
		r.DistinctPorts = append(r.DistinctPorts, uint32(rng.IntN(100)))
		r.Overflow = append(r.Overflow, rng.IntN(9) == 0)
		r.Fragments = append(r.Fragments, uint32(rng.IntN(3)))
		mirai.Packets = append(mirai.Packets, uint64(rng.IntN(5)))
		zmap.Packets = append(zmap.Packets, uint64(rng.IntN(5)))
		enr.SrcCountry = append(enr.SrcCountry, []string{"JP", "US", "", "BR", "日本"}[rng.IntN(5)])
		enr.SrcAsn = append(enr.SrcAsn, rng.Uint32())
		enr.SrcLabel = append(enr.SrcLabel, jasperv1.SourceLabel(rng.IntN(4)))
	}
	r.Fingerprints = []*jasperv1.FingerprintColumn{mirai, zmap}
	return &jasperv1.CommittedBatch{
		RaftIndex: uint64(rng.IntN(3)), SensorId: sensor, SensorCountry: "JP", ReceivedAtMs: -5 + int64(rng.IntN(1e9)),
		Batch: &jasperv1.Batch{
			Sequence: seq, BinStart: int64(rng.IntN(2e9)) - 1e9, BinSeconds: 60, Partial: rng.IntN(2) == 0, SealedAtMs: int64(rng.IntN(1e9)),
			Stats: &jasperv1.SensorStats{PacketsSeen: 1, OutsideDarknet: 2, KernelDrops: 3, DecodeErrors: 4, Fragments: 5,
				NonIp: 6, OverflowRows: 7, ShedBatches: 8, ShedRows: 9, PacketsSummarised: 10},
			Rows: r,
		},
		Enrichment: enr,
	}
}

// payloads are BatchesCommand payloads as the proposer writes them.
func payloads(t testing.TB) [][]byte {
	rng := rand.New(rand.NewPCG(11, 12))
	var out [][]byte
	for _, n := range []int{0, 1, 3, 50} {
		cmd := &jasperv1.BatchesCommand{Load: n%2 == 1}
		for i := range 1 + n%4 {
			cmd.Batches = append(cmd.Batches, &jasperv1.ProposedBatch{Batch: fullBatch(rng, "s1", uint64(i+1), n), RequireWatermark: uint64(i)})
		}
		// A batch with no rows, no enrichment, an empty address.
		cmd.Batches = append(cmd.Batches, &jasperv1.ProposedBatch{Batch: &jasperv1.CommittedBatch{SensorId: "s2", Batch: &jasperv1.Batch{Sequence: 9}}},
			&jasperv1.ProposedBatch{Batch: &jasperv1.CommittedBatch{SensorId: "s3", Batch: &jasperv1.Batch{Sequence: 1, Rows: &jasperv1.Rows{SrcIp: [][]byte{{}}}}}},
			&jasperv1.ProposedBatch{})
		b, err := marshalOpts.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestDecodeBatchesFastPath: what the proposer writes takes the fast path
// and decodes to what proto.Unmarshal gives.
func TestDecodeBatchesFastPath(t *testing.T) {
	var d batchesDecoder
	for i, p := range payloads(t) {
		got, err := d.batches(p)
		if err != nil {
			t.Fatalf("payload %d: not on the fast path: %v", i, err)
		}
		var want jasperv1.BatchesCommand
		if err := proto.Unmarshal(p, &want); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, &want) {
			t.Fatalf("payload %d: fast path gave a different message", i)
		}
	}
}

// TestDecodeBatchesAllocations bounds the allocations of decoding a
// 500-row batch: a few per column, none per row (34 in a normal build,
// more under the race detector; proto.Unmarshal makes 950).
func TestDecodeBatchesAllocations(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	b, err := marshalOpts.Marshal(&jasperv1.BatchesCommand{Batches: []*jasperv1.ProposedBatch{{Batch: fullBatch(rng, "s1", 1, 500)}}})
	if err != nil {
		t.Fatal(err)
	}
	var d batchesDecoder
	allocs := testing.AllocsPerRun(20, func() {
		if _, err := d.batches(b); err != nil {
			t.Fatal(err)
		}
	})
	ref := testing.AllocsPerRun(5, func() {
		var c jasperv1.BatchesCommand
		if err := proto.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per 500-row batch: %v (proto.Unmarshal: %v)", allocs, ref)
	if allocs > 64 {
		t.Fatalf("%v allocations per 500-row batch, want at most 64", allocs)
	}
}

// FuzzDecodeBatches checks the fast decoder against proto.Unmarshal: when
// it decodes, proto.Unmarshal decodes the same message; decodeBatches
// fails exactly when proto.Unmarshal fails.
func FuzzDecodeBatches(f *testing.F) {
	for _, p := range payloads(f) {
		f.Add(p)
	}
	for _, e := range randomLog(f, 5, 10) {
		if c, err := parseEnvelope(e); err == nil && c.Type == jasperv1.CommandType_COMMAND_TYPE_BATCHES {
			f.Add(c.Payload)
		}
	}
	// Not canonical: an unpacked repeated scalar, a message field twice,
	// an unknown field, invalid UTF-8 in a string.
	unpacked := protowire.AppendTag(nil, 2, protowire.VarintType)
	unpacked = protowire.AppendVarint(unpacked, 6)
	f.Add(wrap(wrap(wrap(wrap(unpacked, 6), 4), 1), 1))
	twice := append(wrap([]byte{0x08, 0x01}, 4), wrap([]byte{0x10, 0x02}, 4)...)
	f.Add(wrap(wrap(twice, 1), 1))
	f.Add(wrap(wrap([]byte{0xf8, 0x01, 0x01}, 1), 1))
	f.Add(wrap(wrap(append(protowire.AppendTag(nil, 2, protowire.BytesType), 2, 0xff, 0xfe), 1), 1))
	f.Fuzz(func(t *testing.T, data []byte) {
		var d batchesDecoder
		fast, errFast := d.batches(data)
		var want jasperv1.BatchesCommand
		errWant := proto.Unmarshal(data, &want)
		if errFast == nil {
			if errWant != nil {
				t.Fatalf("fast path decoded what proto.Unmarshal refuses: %v", errWant)
			}
			if !proto.Equal(fast, &want) {
				t.Fatal("fast path and proto.Unmarshal disagree")
			}
		}
		got, err := d.decodeBatches(data)
		if (err == nil) != (errWant == nil) {
			t.Fatalf("decodeBatches error %v, proto.Unmarshal error %v", err, errWant)
		}
		if err == nil && !proto.Equal(got, &want) {
			t.Fatal("decodeBatches and proto.Unmarshal disagree")
		}
	})
}

// wrap encodes b as length-delimited field num.
func wrap(b []byte, num protowire.Number) []byte {
	out := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

// BenchmarkDecodeBatches decodes an entry of 16 batches of 500 rows (every
// column set, as fullBatch makes them) on the fast path and with
// proto.Unmarshal.
func BenchmarkDecodeBatches(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	cmd := &jasperv1.BatchesCommand{Load: true}
	for i := range 16 {
		cmd.Batches = append(cmd.Batches, &jasperv1.ProposedBatch{Batch: fullBatch(rng, "s1", uint64(i+1), 500)})
	}
	data, err := marshalOpts.Marshal(cmd)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("fast", func(b *testing.B) {
		var d batchesDecoder
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			if _, err := d.batches(data); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16*500), "ns/row")
	})
	b.Run("proto.Unmarshal", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(data)))
		for b.Loop() {
			var c jasperv1.BatchesCommand
			if err := proto.Unmarshal(data, &c); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*16*500), "ns/row")
	})
}

// TestEncodeProposedRaw: a batch proposed with its sensor's bytes decodes,
// on the fast path and with proto.Unmarshal, to the same ProposedBatch as
// one encoded from the message.
func TestEncodeProposedRaw(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for i, n := range []int{0, 1, 500} {
		cb := fullBatch(rng, "s1", uint64(i+1), n)
		if i == 0 {
			cb.Enrichment, cb.ReceivedAtMs = nil, 0
		}
		raw, err := proto.Marshal(cb.Batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, req := range []uint64{0, 7} {
			want := &jasperv1.ProposedBatch{Batch: cb, RequireWatermark: req}
			enc, err := encodeProposed(nil, cb, raw, req)
			if err != nil {
				t.Fatal(err)
			}
			var got jasperv1.ProposedBatch
			if err := proto.Unmarshal(enc, &got); err != nil || !proto.Equal(&got, want) {
				t.Fatalf("%d rows, watermark %d: proto.Unmarshal gave another batch (%v)", n, req, err)
			}
			entry := encodeGroup([]*proposal{{enc: &enc, size: len(enc)}}, true)
			c, err := parseEnvelope(entry)
			if err != nil {
				t.Fatal(err)
			}
			var d batchesDecoder
			fast, err := d.batches(c.Payload)
			if err != nil {
				t.Fatalf("%d rows: the raw entry is not on the fast path: %v", n, err)
			}
			if len(fast.Batches) != 1 || !proto.Equal(fast.Batches[0], want) || !fast.Load {
				t.Fatalf("%d rows, watermark %d: fast path gave another batch", n, req)
			}
		}
	}
}
