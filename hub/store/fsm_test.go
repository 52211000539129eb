package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// countModule is a small deterministic module: it counts what it sees.
type countModule struct {
	name    string
	batches uint64
	rows    uint64
	lastIdx uint64
	tickMs  int64
	applied []byte
}

func (m *countModule) Name() string { return m.name }
func (m *countModule) OnBatch(index uint64, b *jasperv1.CommittedBatch) {
	m.batches++
	m.rows += batchRows(b.Batch)
	m.lastIdx = index
}
func (m *countModule) OnTick(index uint64, now time.Time) { m.tickMs = now.UnixMilli() }
func (m *countModule) Apply(index uint64, payload []byte) (any, error) {
	if string(payload) == "fail" {
		return nil, errors.New("module refused")
	}
	m.applied = append(m.applied, payload...)
	return len(m.applied), nil
}
func (m *countModule) Snapshot(w io.Writer) error {
	var b [32]byte
	binary.BigEndian.PutUint64(b[0:], m.batches)
	binary.BigEndian.PutUint64(b[8:], m.rows)
	binary.BigEndian.PutUint64(b[16:], m.lastIdx)
	binary.BigEndian.PutUint64(b[24:], uint64(m.tickMs))
	if _, err := w.Write(b[:]); err != nil {
		return err
	}
	_, err := w.Write(m.applied)
	return err
}
func (m *countModule) Restore(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	*m = countModule{name: m.name}
	if len(data) == 0 {
		return nil
	}
	if len(data) < 32 {
		return errors.New("short module snapshot")
	}
	m.batches = binary.BigEndian.Uint64(data[0:])
	m.rows = binary.BigEndian.Uint64(data[8:])
	m.lastIdx = binary.BigEndian.Uint64(data[16:])
	m.tickMs = int64(binary.BigEndian.Uint64(data[24:]))
	m.applied = append([]byte(nil), data[32:]...)
	return nil
}

func testBatch(sensor string, seq uint64, rows int) *jasperv1.CommittedBatch {
	r := &jasperv1.Rows{}
	for i := range rows {
		r.SrcIp = append(r.SrcIp, []byte{192, 0, 2, byte(i)})
		r.Packets = append(r.Packets, uint64(i+1))
	}
	return &jasperv1.CommittedBatch{
		SensorId:      sensor,
		SensorCountry: "JP",
		ReceivedAtMs:  1_700_000_000_000 + int64(seq),
		Batch:         &jasperv1.Batch{Sequence: seq, BinStart: 1_700_000_000 + int64(seq)*60, BinSeconds: 60, Rows: r},
	}
}

func batchesCmd(t testing.TB, load bool, bs ...*jasperv1.CommittedBatch) []byte {
	c := &jasperv1.BatchesCommand{Load: load}
	for _, b := range bs {
		c.Batches = append(c.Batches, &jasperv1.ProposedBatch{Batch: b})
	}
	data, err := encodeCommand(jasperv1.CommandType_COMMAND_TYPE_BATCHES, c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func mustEncode(t testing.TB, ty jasperv1.CommandType, m proto.Message) []byte {
	data, err := encodeCommand(ty, m)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func newTestFSM() (*fsm, *countModule) {
	f := newFSM(nil)
	m := &countModule{name: "count"}
	f.register(m)
	return f, m
}

func TestFSMDedup(t *testing.T) {
	f, m := newTestFSM()
	res := f.applyCommand(1, batchesCmd(t, true, testBatch("s1", 1, 3), testBatch("s1", 2, 2), testBatch("s1", 2, 2), testBatch("s2", 7, 1)))
	rs, ok := res.([]BatchResult)
	if !ok || len(rs) != 4 {
		t.Fatalf("response %#v", res)
	}
	want := []bool{false, false, true, false}
	for i, r := range rs {
		if r.Duplicate != want[i] || r.Err != nil || r.Index != 1 {
			t.Errorf("result %d = %+v, want duplicate=%v", i, r, want[i])
		}
	}
	// Resend of everything: all duplicates, counters unchanged.
	res = f.applyCommand(2, batchesCmd(t, true, testBatch("s1", 1, 3), testBatch("s1", 2, 2), testBatch("s2", 5, 1)))
	for i, r := range res.([]BatchResult) {
		if !r.Duplicate {
			t.Errorf("resend %d not flagged duplicate", i)
		}
	}
	if got := f.watermark("s1"); got != 2 {
		t.Errorf("watermark s1 = %d, want 2", got)
	}
	if got := f.watermark("s2"); got != 7 {
		t.Errorf("watermark s2 = %d, want 7", got)
	}
	ss := f.sensorStates()
	if len(ss) != 2 || ss[0].Batches != 2 || ss[0].Rows != 5 || ss[0].Packets != 1+2+3+1+2 || ss[0].Duplicates != 3 {
		t.Errorf("sensor s1 state %+v", ss[0])
	}
	if m.batches != 3 || m.rows != 6 {
		t.Errorf("module saw %d batches %d rows, want 3 and 6", m.batches, m.rows)
	}
	if _, _, p := f.counters(); p != 6 {
		t.Errorf("pending rows %d, want 6", p)
	}
}

func TestFSMRequireWatermark(t *testing.T) {
	f, m := newTestFSM()
	f.applyCommand(1, batchesCmd(t, false, testBatch("s1", 3, 1)))
	c := &jasperv1.BatchesCommand{Batches: []*jasperv1.ProposedBatch{
		{Batch: testBatch("s1", 5, 1), RequireWatermark: 4}, // 4 never applied
	}}
	rs := f.applyCommand(2, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_BATCHES, c)).([]BatchResult)
	if !errors.Is(rs[0].Err, ErrOutOfOrder) {
		t.Fatalf("got %+v, want ErrOutOfOrder", rs[0])
	}
	if f.watermark("s1") != 3 || m.batches != 1 {
		t.Fatalf("refused batch changed state: watermark %d, module batches %d", f.watermark("s1"), m.batches)
	}
	c.Batches[0].RequireWatermark = 3
	rs = f.applyCommand(3, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_BATCHES, c)).([]BatchResult)
	if rs[0].Err != nil || rs[0].Duplicate || f.watermark("s1") != 5 {
		t.Fatalf("got %+v watermark %d", rs[0], f.watermark("s1"))
	}
}

func TestFSMPendingAndMarkLoaded(t *testing.T) {
	f, _ := newTestFSM()
	f.applyCommand(10, batchesCmd(t, true, testBatch("a", 1, 4), testBatch("b", 1, 4)))
	f.applyCommand(11, batchesCmd(t, true, testBatch("a", 2, 4)))
	f.applyCommand(12, batchesCmd(t, false, testBatch("a", 3, 4))) // no loader: not queued
	f.applyCommand(13, batchesCmd(t, true, testBatch("a", 4, 4)))
	// maxRows 1 still returns the whole first entry (two batches).
	got := f.pendingBatches(0, 1)
	if len(got) != 2 || got[0].RaftIndex != 10 || got[1].RaftIndex != 10 {
		t.Fatalf("pending(0,1) = %d batches", len(got))
	}
	got = f.pendingBatches(10, 100)
	if len(got) != 2 || got[0].RaftIndex != 11 || got[1].RaftIndex != 13 {
		t.Fatalf("pending(10,100) = %v", got)
	}
	if _, _, p := f.counters(); p != 16 {
		t.Fatalf("pending rows %d, want 16", p)
	}
	f.applyCommand(14, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MARK_LOADED, &jasperv1.MarkLoadedCommand{ThroughIndex: 11}))
	_, loaded, p := f.counters()
	if loaded != 11 || p != 4 {
		t.Fatalf("after mark loaded: loaded %d pending rows %d, want 11 and 4", loaded, p)
	}
	if got := f.pendingBatches(0, 100); len(got) != 1 || got[0].RaftIndex != 13 {
		t.Fatalf("pending after mark = %v", got)
	}
}

func TestFSMUnknownCommandRefused(t *testing.T) {
	f, _ := newTestFSM()
	f.applyCommand(1, batchesCmd(t, true, testBatch("s1", 1, 2)))
	before, _, _ := f.encodeState()
	newer, _ := proto.Marshal(&jasperv1.Command{Version: CommandVersion + 1, Type: jasperv1.CommandType_COMMAND_TYPE_BATCHES,
		Payload: mustEncodePayload(t, &jasperv1.BatchesCommand{Batches: []*jasperv1.ProposedBatch{{Batch: testBatch("s1", 2, 1)}}})})
	unknownType, _ := proto.Marshal(&jasperv1.Command{Version: 1, Type: jasperv1.CommandType(99), Payload: []byte{1, 2}})
	for name, data := range map[string][]byte{"newer version": newer, "unknown type": unknownType, "garbage": {0xff, 0xff, 0xff}, "version 0": {}} {
		res := f.applyCommand(2, data)
		err, ok := res.(error)
		if !ok {
			t.Fatalf("%s: response %#v, want an error", name, res)
		}
		if name != "garbage" && name != "version 0" && !errors.Is(err, ErrUnknownCommand) {
			t.Errorf("%s: err %v, want ErrUnknownCommand", name, err)
		}
		t.Logf("%s: %v", name, err)
	}
	after, _, _ := f.encodeState()
	var a, b jasperv1.FSMState
	_ = proto.Unmarshal(before, &a)
	_ = proto.Unmarshal(after, &b)
	a.AppliedIndex, b.AppliedIndex = 0, 0
	if !proto.Equal(&a, &b) {
		t.Fatal("a refused command changed the state")
	}
}

func mustEncodePayload(t testing.TB, m proto.Message) []byte {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFSMModuleCommands(t *testing.T) {
	f, m := newTestFSM()
	res := f.applyCommand(1, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MODULE, &jasperv1.ModuleCommand{Module: "count", Payload: []byte("ab")}))
	mr, ok := res.(moduleResult)
	if !ok || mr.err != nil || mr.val.(int) != 2 {
		t.Fatalf("module result %#v", res)
	}
	res = f.applyCommand(2, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MODULE, &jasperv1.ModuleCommand{Module: "count", Payload: []byte("fail")}))
	if mr := res.(moduleResult); mr.err == nil {
		t.Fatal("module error lost")
	}
	res = f.applyCommand(3, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MODULE, &jasperv1.ModuleCommand{Module: "nope"}))
	if err, _ := res.(error); !errors.Is(err, ErrUnknownModule) {
		t.Fatalf("unknown module: %#v", res)
	}
	f.applyCommand(4, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_TICK, &jasperv1.TickCommand{NowMs: 1234}))
	if m.tickMs != 1234 {
		t.Fatalf("module tick %d", m.tickMs)
	}
}

// randomLog builds a reproducible log mixing every command type,
// including resends, refusals and garbage.
func randomLog(t testing.TB, seed uint64, n int) [][]byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	seqs := map[string]uint64{}
	var out [][]byte
	for i := range n {
		switch k := rng.IntN(10); {
		case k < 6:
			var bs []*jasperv1.CommittedBatch
			for range 1 + rng.IntN(4) {
				s := fmt.Sprintf("s%d", rng.IntN(3))
				if rng.IntN(5) > 0 {
					seqs[s] += uint64(1 + rng.IntN(2))
				}
				bs = append(bs, testBatch(s, seqs[s], rng.IntN(5)))
			}
			out = append(out, batchesCmd(t, rng.IntN(4) > 0, bs...))
		case k == 6:
			out = append(out, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_TICK, &jasperv1.TickCommand{NowMs: int64(i) * 1000}))
		case k == 7:
			out = append(out, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MARK_LOADED, &jasperv1.MarkLoadedCommand{ThroughIndex: uint64(rng.IntN(i + 1))}))
		case k == 8:
			out = append(out, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_REGISTER_NODE, &jasperv1.RegisterNodeCommand{NodeId: fmt.Sprintf("h%d", rng.IntN(3)), IngestAddress: fmt.Sprintf("127.0.0.1:%d", i)}))
		default:
			out = append(out, mustEncode(t, jasperv1.CommandType_COMMAND_TYPE_MODULE, &jasperv1.ModuleCommand{Module: "count", Payload: []byte{byte(i)}}))
		}
	}
	return out
}

func TestFSMDeterminism(t *testing.T) {
	log := randomLog(t, 42, 500)
	a, _ := newTestFSM()
	b, _ := newTestFSM()
	for i, e := range log {
		a.applyCommand(uint64(i+1), e)
	}
	for i, e := range log {
		b.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: e})
	}
	sa, ia, _ := a.encodeState()
	sb, ib, _ := b.encodeState()
	if ia != 500 || ib != 500 || !bytes.Equal(sa, sb) {
		t.Fatalf("states differ: index %d vs %d, %d vs %d bytes", ia, ib, len(sa), len(sb))
	}
	_, ha, _ := a.stateHash()
	_, hb, _ := b.stateHash()
	if ha != hb {
		t.Fatalf("hashes differ %s %s", ha, hb)
	}
	// A different log gives a different state (the check can fail).
	c, _ := newTestFSM()
	for i, e := range randomLog(t, 43, 500) {
		c.applyCommand(uint64(i+1), e)
	}
	if _, hc, _ := c.stateHash(); hc == ha {
		t.Fatal("different logs gave the same state hash")
	}
}

type bufSink struct {
	bytes.Buffer
	canceled bool
}

func (s *bufSink) ID() string    { return "test" }
func (s *bufSink) Cancel() error { s.canceled = true; return nil }
func (s *bufSink) Close() error  { return nil }

func TestFSMSnapshotRestore(t *testing.T) {
	log := randomLog(t, 7, 300)
	a, ma := newTestFSM()
	for i, e := range log[:200] {
		a.applyCommand(uint64(i+1), e)
	}
	// Carry a state of a module this hub does not run.
	a.foreign["future"] = []byte("opaque")
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot() must not leak into the persisted snapshot.
	a.applyCommand(201, log[200])
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	b, mb := newTestFSM()
	b.applyCommand(1, batchesCmd(t, true, testBatch("junk", 1, 3))) // replaced by Restore
	if err := b.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if b.watermark("junk") != 0 || mb.batches == 0 && ma.batches != 0 {
		t.Fatal("restore kept old state")
	}
	if string(b.foreign["future"]) != "opaque" {
		t.Fatal("foreign module state lost")
	}
	for i, e := range log[200:] {
		b.applyCommand(uint64(i+201), e)
	}
	for i, e := range log[201:] {
		a.applyCommand(uint64(i+202), e)
	}
	sa, _, _ := a.encodeState()
	sb, _, _ := b.encodeState()
	if !bytes.Equal(sa, sb) {
		t.Fatal("restored FSM diverged from the original")
	}
	if ma.batches != mb.batches || ma.rows != mb.rows || !bytes.Equal(ma.applied, mb.applied) {
		t.Fatalf("module state differs: %+v vs %+v", ma, mb)
	}
	// A snapshot without the module resets it.
	c := newFSM(nil)
	var sink2 bufSink
	s2, _ := c.Snapshot()
	_ = s2.Persist(&sink2)
	if err := b.Restore(io.NopCloser(bytes.NewReader(sink2.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if mb.batches != 0 || len(b.sensors) != 0 {
		t.Fatal("restore of an empty snapshot kept state")
	}
	if err := b.Restore(io.NopCloser(bytes.NewReader([]byte{0xff, 0x01}))); err == nil {
		t.Fatal("garbage snapshot restored")
	}
}

func FuzzApplyCommand(f *testing.F) {
	for _, e := range randomLog(f, 1, 30) {
		f.Add(e)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x02, 0x10, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		a, _ := newTestFSM()
		b, _ := newTestFSM()
		seed := batchesCmd(t, true, testBatch("s1", 1, 2))
		a.applyCommand(1, seed)
		b.applyCommand(1, seed)
		ra := a.applyCommand(2, data)
		b.applyCommand(2, data)
		if err, ok := ra.(error); ok && errors.Is(err, ErrUnknownCommand) {
			if a.watermark("s1") != 1 {
				t.Fatal("refused command changed state")
			}
		}
		sa, _, errA := a.encodeState()
		sb, _, errB := b.encodeState()
		if (errA == nil) != (errB == nil) || !bytes.Equal(sa, sb) {
			t.Fatal("the same command gave different states")
		}
		// The state must survive a snapshot round trip.
		c, _ := newTestFSM()
		if err := c.restoreBytes(sa); err != nil {
			t.Fatalf("restore own snapshot: %v", err)
		}
		sc, _, _ := c.encodeState()
		if !bytes.Equal(sa, sc) {
			t.Fatal("snapshot round trip changed the state")
		}
	})
}

// TestStateHashCache checks that the cached state hash is reused while the
// applied index stays, and recomputed when it moves.
func TestStateHashCache(t *testing.T) {
	f, _ := newTestFSM()
	log := randomLog(t, 7, 20)
	for i, e := range log[:10] {
		f.applyCommand(uint64(i+1), e)
	}
	i1, h1, err := f.stateHash()
	if err != nil || i1 != 10 {
		t.Fatalf("first hash: index %d err %v", i1, err)
	}
	f.hashMu.Lock()
	f.hashValue = "cached"
	f.hashMu.Unlock()
	if _, h, _ := f.stateHash(); h != "cached" {
		t.Fatalf("same index: hash recomputed (%s), want the cached value", h)
	}
	for i, e := range log[10:] {
		f.applyCommand(uint64(i+11), e)
	}
	i3, h3, _ := f.stateHash()
	if i3 != 20 || h3 == h1 || h3 == "cached" {
		t.Fatalf("after more entries: got (%d, %s), want index 20 and a new hash", i3, h3)
	}
	b, _, _ := f.encodeState()
	if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != h3 {
		t.Fatal("cached hash differs from the hash of the encoded state")
	}
}
