package spool

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func batch(rows int, tag uint64) *jasperv1.Batch {
	b := &jasperv1.Batch{BinStart: 1_700_000_000, BinSeconds: 60, Stats: &jasperv1.SensorStats{PacketsSeen: tag}, Rows: &jasperv1.Rows{}}
	for i := range rows {
		b.Rows.SrcIp = append(b.Rows.SrcIp, []byte{192, 0, 2, byte(i)})
		b.Rows.Protocol = append(b.Rows.Protocol, 6)
		b.Rows.DstPort = append(b.Rows.DstPort, 23)
		b.Rows.Packets = append(b.Rows.Packets, tag)
	}
	return b
}

func smallConfig() Config {
	return Config{MaxBytes: 1 << 20, SegmentBytes: 4096, MaxQuarantineFiles: 64}
}

func open(t *testing.T, dir string, cfg Config) (*Spool, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s, err := Open(dir, cfg, reg, nil)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, reg
}

func pendingSeqs(t *testing.T, s *Spool) []uint64 {
	t.Helper()
	var out []uint64
	for b, err := range s.Pending(0) {
		if err != nil {
			t.Fatalf("pending: %v", err)
		}
		out = append(out, b.Sequence)
	}
	return out
}

func seqRange(a, b uint64) []uint64 {
	var out []uint64
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}

func equal(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestAppendAckAndSegments(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, smallConfig())
	for i := 1; i <= 40; i++ {
		seq, err := s.Append(batch(40, uint64(i)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i) {
			t.Fatalf("append %d got sequence %d", i, seq)
		}
	}
	st := s.Stats()
	if st.Batches != 40 || st.Segments < 3 {
		t.Fatalf("stats after 40 appends: %+v", st)
	}
	// Contents come back intact and in order.
	n := uint64(0)
	for b, err := range s.Pending(5) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if b.Sequence != 4+n || b.Stats.PacketsSeen != b.Sequence || len(b.Rows.SrcIp) != 40 {
			t.Fatalf("pending batch %d: %v", n, b)
		}
	}
	if n != 36 {
		t.Fatalf("pending from 5 gave %d batches", n)
	}
	if err := s.Ack(3); err != nil { // out of order
		t.Fatal(err)
	}
	if err := s.AckThrough(30); err != nil {
		t.Fatal(err)
	}
	if got := pendingSeqs(t, s); !equal(got, seqRange(31, 40)) {
		t.Fatalf("pending after ack through 30: %v", got)
	}
	after := s.Stats()
	if after.Segments >= st.Segments || after.Bytes >= st.Bytes {
		t.Fatalf("acked segments not removed: before %+v after %+v", st, after)
	}
	if s.FirstUnacked() != 31 || s.Last() != 40 {
		t.Fatalf("first unacked %d last %d", s.FirstUnacked(), s.Last())
	}
}

func TestSequenceMonotonicAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	var last uint64
	for round := range 4 {
		s, err := Open(dir, smallConfig(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			seq, err := s.Append(batch(3, 1), uint64(round))
			if err != nil {
				t.Fatal(err)
			}
			if seq <= last {
				t.Fatalf("round %d: sequence %d not above %d", round, seq, last)
			}
			last = seq
		}
		if round%2 == 1 {
			// Everything acknowledged: segments go away, numbers must not
			// restart.
			if err := s.AckThrough(last); err != nil {
				t.Fatal(err)
			}
		}
		if round == 3 {
			continue // crash: no Close
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := open(t, dir, smallConfig())
	if s.Last() != last {
		t.Fatalf("Last after reopen %d, want the last assigned %d", s.Last(), last)
	}
	if s.Cursor() != 3 {
		t.Fatalf("cursor after reopen %d, want 3", s.Cursor())
	}
	seq, err := s.Append(batch(1, 1), 0)
	if err != nil {
		t.Fatal(err)
	}
	if seq <= last {
		t.Fatalf("after reopen sequence %d not above %d", seq, last)
	}
}

// TestTornTailEveryOffset cuts the last segment at every byte offset of its
// last record and checks that reopening keeps every complete record, never
// reuses a sequence, and counts the damage.
func TestTornTailEveryOffset(t *testing.T) {
	src := t.TempDir()
	s, err := Open(src, smallConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 6; i++ {
		if _, err := s.Append(batch(4, uint64(i)), uint64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	// crash: the spool is not closed.
	segs, _ := filepath.Glob(filepath.Join(src, "seg-*.log"))
	if len(segs) != 1 {
		t.Fatalf("want one segment, have %v", segs)
	}
	full, _ := os.ReadFile(segs[0])
	state, _ := os.ReadFile(filepath.Join(src, "state"))
	// Find where the last record starts.
	off := len(segMagic)
	var lastStart int
	for off < len(full) {
		_, _, n, err := decodeRecord(full[off:])
		if err != nil {
			t.Fatal(err)
		}
		lastStart = off
		off += n
	}
	for cut := lastStart; cut < len(full); cut++ {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "state"), state, 0o600)
		os.WriteFile(filepath.Join(dir, filepath.Base(segs[0])), full[:cut], 0o600)
		reg := prometheus.NewRegistry()
		s, err := Open(dir, smallConfig(), reg, nil)
		if err != nil {
			t.Fatalf("cut %d: open refused: %v", cut, err)
		}
		if got := pendingSeqs(t, s); !equal(got, seqRange(1, 5)) {
			t.Fatalf("cut %d: pending %v", cut, got)
		}
		q := testutil.ToFloat64(s.m.quarantined)
		wantQ := 1.0
		if cut == lastStart {
			wantQ = 0 // a clean cut between records is no damage
		}
		if q != wantQ {
			t.Fatalf("cut %d: quarantined %v, want %v", cut, q, wantQ)
		}
		if s.Cursor() != 105 {
			t.Fatalf("cut %d: cursor %d want 105", cut, s.Cursor())
		}
		seq, err := s.Append(batch(1, 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		if seq <= 6 {
			t.Fatalf("cut %d: reused sequence %d", cut, seq)
		}
		s.Close()
		// The second open sees a clean spool.
		s2, err := Open(dir, smallConfig(), nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := pendingSeqs(t, s2); len(got) != 6 || got[5] != seq {
			t.Fatalf("cut %d: after append and reopen pending %v", cut, got)
		}
		if s2.Stats().QuarantinedSegments != 0 {
			t.Fatalf("cut %d: damage found twice", cut)
		}
		s2.Close()
	}
}

func TestCorruptSegmentQuarantined(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, smallConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 30; i++ {
		if _, err := s.Append(batch(40, uint64(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments, have %d", len(segs))
	}
	// Count the first segment's records, then flip a byte in the middle of
	// its third record.
	data, _ := os.ReadFile(segs[0])
	var offs []int
	for o := len(segMagic); o < len(data); {
		_, _, n, err := decodeRecord(data[o:])
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, o)
		o += n
	}
	inFirst, before := len(offs), 2
	data[offs[before]+30] ^= 0x40
	os.WriteFile(segs[0], data, 0o600)

	reg := prometheus.NewRegistry()
	s2, err := Open(dir, smallConfig(), reg, nil)
	if err != nil {
		t.Fatalf("open refused on corrupt segment: %v", err)
	}
	defer s2.Close()
	got := pendingSeqs(t, s2)
	want := append(seqRange(1, uint64(before)), seqRange(uint64(inFirst)+1, 30)...)
	if !equal(got, want) {
		t.Fatalf("pending after corruption:\n got %v\nwant %v", got, want)
	}
	if v := testutil.ToFloat64(s2.m.quarantined); v != 1 {
		t.Fatalf("quarantined metric %v", v)
	}
	q, _ := os.ReadDir(filepath.Join(dir, "quarantine"))
	if len(q) != 1 || !strings.HasPrefix(q[0].Name(), filepath.Base(segs[0])) {
		t.Fatalf("quarantine folder: %v", q)
	}
	qdata, _ := os.ReadFile(filepath.Join(dir, "quarantine", q[0].Name()))
	if !bytes.Equal(qdata, data) {
		t.Fatal("quarantined copy differs from the damaged file")
	}
}

func TestFullShedsOldestAndReports(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{MaxBytes: 16384, SegmentBytes: 4096, MaxQuarantineFiles: 4}
	s, reg := open(t, dir, cfg)
	var reported, reportedRows uint64
	const n = 200
	for i := 1; i <= n; i++ {
		b := batch(5, uint64(i))
		if _, err := s.Append(b, 0); err != nil {
			t.Fatal(err)
		}
		reported += b.Stats.ShedBatches
		reportedRows += b.Stats.ShedRows
		if st := s.Stats(); st.Bytes > cfg.MaxBytes {
			t.Fatalf("spool holds %d bytes above max %d", st.Bytes, cfg.MaxBytes)
		}
	}
	st := s.Stats()
	if st.ShedBatches == 0 {
		t.Fatal("nothing shed")
	}
	if uint64(st.Batches)+st.ShedBatches != n {
		t.Fatalf("kept %d + shed %d != appended %d", st.Batches, st.ShedBatches, n)
	}
	if reported != st.ShedBatches || reportedRows != 5*st.ShedBatches || st.ShedRows != reportedRows {
		t.Fatalf("reported %d/%d, counted %d/%d", reported, reportedRows, st.ShedBatches, st.ShedRows)
	}
	if v := testutil.ToFloat64(s.m.shedBatches); v != float64(st.ShedBatches) {
		t.Fatalf("metric shed %v", v)
	}
	// The oldest were shed: pending is a contiguous tail ending at n.
	got := pendingSeqs(t, s)
	if !equal(got, seqRange(n-uint64(len(got))+1, n)) {
		t.Fatalf("pending after shedding: %v", got)
	}
	// The batches carrying the report are spooled with it.
	var inSpool uint64
	for b, err := range s.Pending(0) {
		if err != nil {
			t.Fatal(err)
		}
		inSpool += b.Stats.ShedBatches
	}
	if inSpool == 0 {
		t.Fatal("no spooled batch carries shed counts")
	}
	if mfs, _ := reg.Gather(); len(mfs) == 0 {
		t.Fatal("no metrics registered")
	}
}

func TestRejectQuarantinesBatch(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, smallConfig())
	for i := 1; i <= 3; i++ {
		if _, err := s.Append(batch(2, uint64(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Reject(2, "INVALID"); err != nil {
		t.Fatal(err)
	}
	if got := pendingSeqs(t, s); !equal(got, []uint64{1, 3}) {
		t.Fatalf("pending %v", got)
	}
	data, err := os.ReadFile(filepath.Join(dir, "quarantine", "batch-00000000000000000002.INVALID.pb"))
	if err != nil || len(data) == 0 {
		t.Fatalf("rejected batch not in quarantine: %v", err)
	}
}

func TestTooLarge(t *testing.T) {
	s, _ := open(t, t.TempDir(), Config{MaxBytes: 8192, SegmentBytes: 4096, MaxQuarantineFiles: 1})
	if _, err := s.Append(batch(2000, 1), 0); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("got %v, want ErrTooLarge", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{DefaultConfig(), ""},
		{Config{MaxBytes: 1 << 20, SegmentBytes: 10, MaxQuarantineFiles: 1}, "segment_bytes"},
		{Config{MaxBytes: 5000, SegmentBytes: 4096, MaxQuarantineFiles: 1}, "max_bytes"},
		{Config{MaxBytes: 1 << 20, SegmentBytes: 4096}, ""},
		{Config{MaxBytes: 1 << 20, SegmentBytes: 4096, MaxQuarantineFiles: -1}, "max_quarantine_files"},
	} {
		err := tc.cfg.Validate()
		if (err == nil) != (tc.want == "") || err != nil && !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, recordMeta{Seq: 1, Cursor: 2, Rows: 3}, []byte("payload")))
	f.Add(appendRecord(nil, recordMeta{Seq: 1 << 60}, nil))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, payload, n, err := decodeRecord(b)
		if err != nil {
			if !errors.Is(err, errShort) && !errors.Is(err, errCorrupt) {
				t.Fatalf("unexpected error kind %v", err)
			}
			return
		}
		if n > len(b) || n < recHeaderLen+recFixedBody {
			t.Fatalf("consumed %d of %d", n, len(b))
		}
		// A record that decodes re-encodes to the same bytes.
		if re := appendRecord(nil, m, payload); !bytes.Equal(re, b[:n]) {
			t.Fatalf("re-encoding differs")
		}
	})
}

func TestUnreadableRecordSkipped(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, dir, smallConfig())
	for i := 1; i <= 3; i++ {
		if _, err := s.Append(batch(4, uint64(i)), 0); err != nil {
			t.Fatal(err)
		}
	}
	segs, _ := filepath.Glob(filepath.Join(dir, "seg-*.log"))
	data, _ := os.ReadFile(segs[0])
	_, _, n, err := decodeRecord(data[len(segMagic):])
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.OpenFile(segs[0], os.O_WRONLY, 0)
	f.WriteAt([]byte{0xde, 0xad}, int64(len(segMagic)+n+recHeaderLen+recFixedBody+2)) // inside record 2's payload
	f.Close()
	if got := pendingSeqs(t, s); !equal(got, []uint64{1, 3}) {
		t.Fatalf("pending %v, want [1 3]", got)
	}
	if st := s.Stats(); st.RejectedBatches != 1 || st.Batches != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestResequence(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, smallConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 12; i++ {
		if _, err := s.Append(batch(40, uint64(i)), uint64(1000+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AckThrough(2); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Resequence(5); n != 0 || err != nil { // not behind: nothing to do
		t.Fatalf("resequence below last: %d, %v", n, err)
	}
	n, err := s.Resequence(900)
	if err != nil || n != 10 {
		t.Fatalf("resequence: %d, %v", n, err)
	}
	check := func(s *Spool) {
		t.Helper()
		var i uint64
		for b, err := range s.Pending(0) {
			if err != nil {
				t.Fatal(err)
			}
			i++
			if b.Sequence != 900+i || b.Stats.PacketsSeen != 2+i {
				t.Fatalf("renumbered batch %d: sequence %d, tag %d", i, b.Sequence, b.Stats.PacketsSeen)
			}
		}
		if i != 10 || s.Cursor() != 1012 {
			t.Fatalf("%d pending, cursor %d", i, s.Cursor())
		}
	}
	check(s)
	s.Close()
	s2, err := Open(dir, smallConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	check(s2)
	if seq, _ := s2.Append(batch(1, 1), 0); seq <= 910 {
		t.Fatalf("next sequence %d", seq)
	}
}

// FuzzOpenSegment opens a spool whose only segment holds arbitrary bytes:
// Open must never fail or panic on damage, must keep only well-formed
// records, and must hand out sequences above every record it kept.
func FuzzOpenSegment(f *testing.F) {
	good := []byte(segMagic)
	for i := uint64(1); i <= 3; i++ {
		good = appendRecord(good, recordMeta{Seq: i, Rows: 1}, []byte{0x08, byte(i)})
	}
	f.Add(good)
	f.Add(good[:len(good)-3])
	f.Add([]byte(segMagic))
	f.Add([]byte("JSPSEG2\nxxxx"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, segName(1)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Config{MaxBytes: 1 << 20, SegmentBytes: 4096, MaxQuarantineFiles: 2}, nil, nil)
		if err != nil {
			t.Fatalf("open refused: %v", err)
		}
		defer s.Close()
		var last uint64
		for _, e := range s.entries {
			if e.seq <= last {
				t.Fatalf("sequences not increasing: %d after %d", e.seq, last)
			}
			last = e.seq
		}
		seq, err := s.Append(batch(1, 1), 0)
		if err != nil {
			t.Fatal(err)
		}
		if seq <= last {
			t.Fatalf("append got %d, not above kept %d", seq, last)
		}
	})
}

func BenchmarkAppend(b *testing.B) {
	s, err := Open(b.TempDir(), Config{MaxBytes: 1 << 30, SegmentBytes: 8 << 20, MaxQuarantineFiles: 4}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	bt := batch(1000, 1) // about 12 KiB encoded
	b.SetBytes(int64(len(mustMarshal(b, bt))))
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.Append(bt, 0); err != nil {
			b.Fatal(err)
		}
	}
}

func mustMarshal(tb testing.TB, b *jasperv1.Batch) []byte {
	tb.Helper()
	out, err := proto.Marshal(b)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}
