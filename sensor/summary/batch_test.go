package summary_test

import (
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
	"github.com/jasperfed/jasper/sensor/summary"
)

func sampleBatch(t testing.TB) *jasperv1.Batch {
	c := &collector{}
	a, err := summary.NewAggregator(summary.DefaultConfig(), c.emit)
	if err != nil {
		t.Fatal(err)
	}
	p := syn("203.0.113.5", "198.51.100.1", 23)
	p.Fingerprints = packet.FPMirai
	for _, info := range []packet.Info{p, syn("2001:db8::1", "2001:db8:1::1", 80), syn("203.0.113.6", "198.51.100.1", 2323)} {
		if err := a.Add(t0.Add(time.Second), packet.OK, &info); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	return c.batches[0]
}

func TestValidateBatchRefuses(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(b *jasperv1.Batch)
	}{
		{"short column", func(b *jasperv1.Batch) { b.Rows.Packets = b.Rows.Packets[:2] }},
		{"long column", func(b *jasperv1.Batch) { b.Rows.TtlMax = append(b.Rows.TtlMax, 1) }},
		{"bad address length", func(b *jasperv1.Batch) { b.Rows.SrcIp[1] = []byte{1, 2, 3} }},
		{"protocol above 255", func(b *jasperv1.Batch) { b.Rows.Protocol[0] = 300 }},
		{"port above 65535", func(b *jasperv1.Batch) { b.Rows.DstPort[0] = 70000 }},
		{"unspecified class", func(b *jasperv1.Batch) { b.Rows.Class[0] = 0 }},
		{"unknown class", func(b *jasperv1.Batch) { b.Rows.Class[0] = 99 }},
		{"zero packets", func(b *jasperv1.Batch) { b.Rows.Packets[0] = 0 }},
		{"last seen after the bin", func(b *jasperv1.Batch) { b.Rows.LastSeenMs[0] = 60000 }},
		{"first after last", func(b *jasperv1.Batch) { b.Rows.FirstSeenMs[0] = b.Rows.LastSeenMs[0] + 1 }},
		{"ttl range", func(b *jasperv1.Batch) { b.Rows.TtlMin[0] = 200 }},
		{"fingerprint column length", func(b *jasperv1.Batch) { b.Rows.Fingerprints[0].Packets = nil }},
		{"fingerprint column twice", func(b *jasperv1.Batch) {
			b.Rows.Fingerprints = append(b.Rows.Fingerprints, b.Rows.Fingerprints[0])
		}},
		{"zero bin", func(b *jasperv1.Batch) { b.BinSeconds = 0 }},
		{"unaligned bin", func(b *jasperv1.Batch) { b.BinStart++ }},
	}
	if err := summary.ValidateBatch(sampleBatch(t)); err != nil {
		t.Fatalf("sample refused: %v", err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := sampleBatch(t)
			tt.mutate(b)
			err := summary.ValidateBatch(b)
			if !errors.Is(err, summary.ErrInvalidBatch) {
				t.Fatalf("accepted (err %v)", err)
			}
			if _, derr := summary.DecodeBatch(b); derr == nil {
				t.Error("DecodeBatch accepted what ValidateBatch refused")
			}
		})
	}
}

// FuzzDecodeBatch unmarshals arbitrary bytes as a Batch and decodes it:
// DecodeBatch never panics, and whatever it accepts survives a re-encode
// and decodes to the same rows.
func FuzzDecodeBatch(f *testing.F) {
	good, err := proto.Marshal(sampleBatch(f))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Add([]byte{0x32, 0x02, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, raw []byte) {
		var b jasperv1.Batch
		if err := proto.Unmarshal(raw, &b); err != nil {
			return
		}
		rows, err := summary.DecodeBatch(&b)
		if err != nil {
			if !errors.Is(err, summary.ErrInvalidBatch) {
				t.Fatalf("error without ErrInvalidBatch: %v", err)
			}
			return
		}
		again, err := proto.Marshal(&b)
		if err != nil {
			t.Fatal(err)
		}
		var b2 jasperv1.Batch
		if err := proto.Unmarshal(again, &b2); err != nil {
			t.Fatal(err)
		}
		rows2, err := summary.DecodeBatch(&b2)
		if err != nil {
			t.Fatalf("re-encoded batch refused: %v", err)
		}
		if len(rows) != len(rows2) {
			t.Fatalf("%d rows, then %d", len(rows), len(rows2))
		}
		for i := range rows {
			r1, r2 := rows[i], rows2[i]
			if r1.SrcIP != r2.SrcIP || r1.Packets != r2.Packets || r1.Class != r2.Class || r1.DstPort != r2.DstPort ||
				!r1.FirstSeen.Equal(r2.FirstSeen) || len(r1.Fingerprints) != len(r2.Fingerprints) {
				t.Fatalf("row %d differs: %+v vs %+v", i, r1, r2)
			}
			if !r1.SrcIP.IsValid() || r1.Packets == 0 {
				t.Fatalf("accepted row %d: %+v", i, r1)
			}
		}
	})
}
