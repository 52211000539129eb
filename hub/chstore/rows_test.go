package chstore

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
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
	case []int64:
		return len(v)
	case []time.Time:
		return len(v)
	}
	return -1
}

// refRow is the row-by-row conversion the loader used before it worked
// column by column (one string per address, time.Time columns): the
// reference the column-wise block must agree with.
func refRow(cb *jasperv1.CommittedBatch, i int) []any {
	batch := cb.GetBatch()
	r := batch.GetRows()
	n := len(r.GetSrcIp())
	enr := cb.GetEnrichment()
	bin := time.Unix(batch.GetBinStart(), 0).UTC()
	var mirai, zmap, masscan []uint64
	for _, fp := range r.GetFingerprints() {
		switch fp.GetName() {
		case "mirai":
			mirai = fp.GetPackets()
		case "zmap":
			zmap = fp.GetPackets()
		case "masscan":
			masscan = fp.GetPackets()
		}
	}
	countries, asns, labels := enr.GetSrcCountry(), enr.GetSrcAsn(), enr.GetSrcLabel()
	if len(countries) != n {
		countries = nil
	}
	if len(asns) != n {
		asns = nil
	}
	if len(labels) != n {
		labels = nil
	}
	addr, _ := netip.AddrFromSlice(r.SrcIp[i])
	var ov uint8
	if at(r.GetOverflow(), i) {
		ov = 1
	}
	return []any{
		bin, cb.GetSensorId(), cb.GetSensorCountry(), addr.Unmap().String(), at(countries, i), at(asns, i), uint8(at(labels, i)),
		u8(at(r.GetProtocol(), i)), u16(at(r.GetDstPort(), i)), u8(at(r.GetIcmpType(), i)), u8(at(r.GetIcmpCode(), i)),
		classString(at(r.GetClass(), i)), at(r.GetPackets(), i), at(r.GetBytes(), i), at(r.GetDstIps(), i),
		bin.Add(time.Duration(at(r.GetFirstSeenMs(), i)) * time.Millisecond).Truncate(time.Second),
		bin.Add(time.Duration(at(r.GetLastSeenMs(), i)) * time.Millisecond).Truncate(time.Second),
		u8(at(r.GetTtlMin(), i)), u8(at(r.GetTtlMax(), i)), at(r.GetDistinctPorts(), i), ov, at(r.GetFragments(), i),
		at(mirai, i), at(zmap, i), at(masscan, i), cb.GetRaftIndex(), batch.GetSequence(),
	}
}

func at[T any](s []T, i int) T {
	if i < len(s) {
		return s[i]
	}
	var zero T
	return zero
}

// blockRow reads row j of the block's columns, DateTime columns as UTC
// times.
func blockRow(cols []any, j int) []any {
	row := make([]any, len(cols))
	for i, c := range cols {
		v := reflect.ValueOf(c).Index(j).Interface()
		if s, ok := v.(int64); ok {
			v = time.Unix(s, 0).UTC()
		}
		row[i] = v
	}
	return row
}

// TestSummaryBlockMatchesRowByRow converts varied batches (IPv4, IPv6 and
// IPv4-mapped sources, columns left out, out-of-range values, unknown
// classes, enrichment of the wrong length, pre-1970 bins) into a reused
// block and compares every value with the row-by-row reference.
func TestSummaryBlockMatchesRowByRow(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var sb summaryBlock
	for round := range 4 {
		sb.reset()
		var batches []*jasperv1.CommittedBatch
		for k := range 12 {
			cb := genBatch(r, fmt.Sprintf("s%d", k%3), 1764064800+int64(k)*60, uint64(round*100+k+1), r.IntN(40))
			cb.RaftIndex = uint64(round*10 + k/4 + 1)
			rows := cb.Batch.Rows
			switch k % 6 {
			case 1: // columns left out, enrichment of the wrong length
				rows.Protocol, rows.FirstSeenMs, rows.Class, rows.Overflow, rows.DstPort = nil, nil, nil, nil, nil
				cb.Enrichment.SrcCountry = cb.Enrichment.SrcCountry[:len(cb.Enrichment.SrcCountry)/2]
				cb.Enrichment.SrcLabel = nil
			case 2: // out of range values, unknown classes, overflow rows
				for i := range rows.SrcIp {
					rows.TtlMax[i], rows.DstPort[i], rows.Protocol[i] = 300+uint32(i), 70000, 256
					rows.Class[i] = jasperv1.TrafficClass(50 + i)
					rows.Overflow[i] = i%2 == 0
				}
				rows.Fingerprints = append(rows.Fingerprints, &jasperv1.FingerprintColumn{Name: "zmap", Packets: rows.Packets},
					&jasperv1.FingerprintColumn{Name: "masscan", Packets: rows.Bytes})
			case 3: // IPv4-mapped IPv6 sources
				for i := range rows.SrcIp {
					rows.SrcIp[i] = netip.AddrFrom16(netip.AddrFrom4([4]byte{203, 0, 113, byte(i)}).As16()).AsSlice()
				}
			case 4: // a bin before 1970, odd milliseconds
				cb.Batch.BinStart = -3601
				for i := range rows.SrcIp {
					rows.FirstSeenMs[i], rows.LastSeenMs[i] = 999, 59_999
				}
			case 5:
				cb.Enrichment = nil
			}
			batches = append(batches, cb)
			sb.add(cb)
		}
		cols := sb.columns()
		j := 0
		for _, cb := range batches {
			for i := range len(cb.Batch.Rows.SrcIp) {
				want, got := refRow(cb, i), blockRow(cols, j)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round %d, row %d of batch %d:\n got %v\nwant %v", round, i, cb.Batch.Sequence, got, want)
				}
				j++
			}
		}
		for i, c := range cols {
			if l := colLen(c); l != j {
				t.Fatalf("column %s has %d entries, want %d", summaryColumns[i], l, j)
			}
		}
	}
}

// TestSummaryBlockAllocations bounds the allocations of converting a
// 500-row batch into a block that has the room already: the address text
// becomes one string, nothing is allocated per row.
func TestSummaryBlockAllocations(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	cb := genBatch(r, "s1", 1764064800, 1, 500)
	var sb summaryBlock
	sb.grow(500)
	allocs := testing.AllocsPerRun(20, func() {
		sb.reset()
		sb.add(cb)
		sb.columns()
	})
	// columns: the address string, the []any and its 27 boxed slices;
	// nothing per row.
	if allocs > 29 {
		t.Fatalf("%v allocations per 500-row batch, want at most 29", allocs)
	}
}
