package chstore

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// FuzzBatchRows feeds arbitrary encoded Rows (as a committed batch could
// carry them if ingest let a bad one through) to the loader's conversion:
// it must refuse or convert without panicking, and a converted block has
// one entry per row in every column.
func FuzzBatchRows(f *testing.F) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 5} {
		b, err := proto.Marshal(genBatch(r, "s", 1764064800, 1, n).Batch.Rows)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x03, 1, 2, 3})                      // a 3-byte address
	f.Add([]byte{0x0a, 0x04, 1, 2, 3, 4, 0x12, 0x02, 6, 6}) // protocol column too long
	f.Fuzz(func(t *testing.T, data []byte) {
		rows := &jasperv1.Rows{}
		if err := proto.Unmarshal(data, rows); err != nil {
			return
		}
		cb := &jasperv1.CommittedBatch{
			RaftIndex:  7,
			Batch:      &jasperv1.Batch{Sequence: 3, BinStart: 1764064800, Rows: rows},
			Enrichment: &jasperv1.Enrichment{SrcCountry: []string{"JP"}},
		}
		if err := checkRows(rows); err != nil {
			return
		}
		var sb summaryBlock
		sb.add(cb)
		n := len(rows.GetSrcIp())
		for i, c := range sb.columns() {
			if l := colLen(c); l != n {
				t.Fatalf("column %s has %d entries, want %d", summaryColumns[i], l, n)
			}
		}
		var st statsBlock
		st.add(cb, n)
		if st.len() != 1 {
			t.Fatalf("stats block has %d rows", st.len())
		}
	})
}

func colLen(c any) int {
	switch v := c.(type) {
	case []string:
		return len(v)
	case []uint8:
		return len(v)
	case []uint16:
		return len(v)
	case []uint32:
		return len(v)
	case []uint64:
		return len(v)
	case []time.Time:
		return len(v)
	}
	return -1
}
