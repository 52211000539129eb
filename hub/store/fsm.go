package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// BatchResult is what applying one proposed batch gave.
type BatchResult struct {
	// Index is the raft index of the entry holding the batch.
	Index uint64
	// Duplicate is true when the sequence was at or below the sensor's
	// watermark: the batch was committed before and was not applied again.
	Duplicate bool
	// Err is ErrOutOfOrder when the batch was refused (nothing applied).
	Err error
}

// moduleResult carries a module's Apply result through the future.
type moduleResult struct {
	val any
	err error
}

// fsm is the deterministic state machine. All state is guarded by mu.
type fsm struct {
	log *slog.Logger

	mu          sync.RWMutex
	modules     map[string]Module
	moduleNames []string // sorted
	// Module states found in a snapshot for modules this hub does not run;
	// carried over unchanged into the next snapshot.
	foreign map[string][]byte

	appliedIndex uint64
	lastTickMs   int64
	loadedIndex  uint64
	sensors      map[string]*jasperv1.SensorState
	nodes        map[string]*jasperv1.RegisterNodeCommand
	pending      []*jasperv1.CommittedBatch // raft index order
	pendingRows  uint64

	dec batchesDecoder // guarded by mu

	// The state hash is costly (it encodes the whole state, modules
	// included), and status polls ask for it often: it is computed at most
	// once per applied index. Not replicated state: only a cache of a pure
	// function of it. (A time-based cache would make two hubs' answers
	// taken together disagree on the index, so there is none.)
	hashMu    sync.Mutex
	hashOK    bool
	hashIndex uint64
	hashValue string
}

func newFSM(log *slog.Logger) *fsm {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &fsm{
		log:     log,
		modules: map[string]Module{},
		foreign: map[string][]byte{},
		sensors: map[string]*jasperv1.SensorState{},
		nodes:   map[string]*jasperv1.RegisterNodeCommand{},
	}
}

func (f *fsm) register(m Module) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := m.Name()
	if _, dup := f.modules[name]; dup {
		panic("store: duplicate module " + name)
	}
	f.modules[name] = m
	f.moduleNames = append(f.moduleNames, name)
	sort.Strings(f.moduleNames)
}

func batchRows(b *jasperv1.Batch) uint64 {
	if b == nil || b.Rows == nil {
		return 0
	}
	return uint64(len(b.Rows.SrcIp))
}

func batchPackets(b *jasperv1.Batch) uint64 {
	var n uint64
	if b != nil && b.Rows != nil {
		for _, p := range b.Rows.Packets {
			n += p
		}
	}
	return n
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.applyCommand(l.Index, l.Data)
}

// applyCommand applies one encoded command at index. It returns a value
// for the proposer: an error, []BatchResult, or a moduleResult.
func (f *fsm) applyCommand(index uint64, data []byte) any {
	cmd, err := decodeCommand(data)
	f.mu.Lock()
	defer f.mu.Unlock()
	if index > f.appliedIndex {
		f.appliedIndex = index
	}
	if err != nil {
		f.log.Error("command_refused", "index", index, "err", err)
		return err
	}
	switch cmd.Type {
	case jasperv1.CommandType_COMMAND_TYPE_BATCHES:
		c, err := f.dec.decodeBatches(cmd.Payload)
		if err != nil {
			return fmt.Errorf("%w: batches: %v", ErrBadCommand, err)
		}
		return f.applyBatches(index, c)
	case jasperv1.CommandType_COMMAND_TYPE_TICK:
		var c jasperv1.TickCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return fmt.Errorf("%w: tick: %v", ErrBadCommand, err)
		}
		if c.NowMs > f.lastTickMs {
			f.lastTickMs = c.NowMs
		}
		now := time.UnixMilli(c.NowMs).UTC()
		for _, n := range f.moduleNames {
			f.modules[n].OnTick(index, now)
		}
		return nil
	case jasperv1.CommandType_COMMAND_TYPE_MARK_LOADED:
		var c jasperv1.MarkLoadedCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return fmt.Errorf("%w: mark loaded: %v", ErrBadCommand, err)
		}
		f.markLoaded(c.ThroughIndex)
		return nil
	case jasperv1.CommandType_COMMAND_TYPE_REGISTER_NODE:
		var c jasperv1.RegisterNodeCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return fmt.Errorf("%w: register node: %v", ErrBadCommand, err)
		}
		if c.NodeId == "" {
			return fmt.Errorf("%w: register node: empty node id", ErrBadCommand)
		}
		f.nodes[c.NodeId] = &c
		return nil
	case jasperv1.CommandType_COMMAND_TYPE_MODULE:
		var c jasperv1.ModuleCommand
		if err := proto.Unmarshal(cmd.Payload, &c); err != nil {
			return fmt.Errorf("%w: module: %v", ErrBadCommand, err)
		}
		m, ok := f.modules[c.Module]
		if !ok {
			return fmt.Errorf("%w: %q", ErrUnknownModule, c.Module)
		}
		v, err := m.Apply(index, c.Payload)
		return moduleResult{val: v, err: err}
	}
	return fmt.Errorf("%w: type %s", ErrUnknownCommand, cmd.Type)
}

func (f *fsm) applyBatches(index uint64, c *jasperv1.BatchesCommand) []BatchResult {
	res := make([]BatchResult, len(c.Batches))
	for i, pb := range c.Batches {
		res[i].Index = index
		cb := pb.GetBatch()
		if cb == nil || cb.Batch == nil || cb.SensorId == "" {
			res[i].Err = fmt.Errorf("%w: batch without sensor id or body", ErrBadCommand)
			continue
		}
		st := f.sensors[cb.SensorId]
		if st == nil {
			st = &jasperv1.SensorState{SensorId: cb.SensorId}
			f.sensors[cb.SensorId] = st
		}
		seq := cb.Batch.Sequence
		if seq <= st.LastSequence {
			res[i].Duplicate = true
			st.Duplicates++
			continue
		}
		if pb.RequireWatermark != 0 && st.LastSequence < pb.RequireWatermark {
			res[i].Err = ErrOutOfOrder
			continue
		}
		cb.RaftIndex = index
		rows := batchRows(cb.Batch)
		st.Country = cb.SensorCountry
		st.LastSequence = seq
		st.Batches++
		st.Rows += rows
		st.Packets += batchPackets(cb.Batch)
		if cb.Batch.BinStart > st.LastBinStart {
			st.LastBinStart = cb.Batch.BinStart
		}
		st.LastBatchAtMs = cb.ReceivedAtMs
		if c.Load {
			f.pending = append(f.pending, cb)
			f.pendingRows += rows
		}
		for _, n := range f.moduleNames {
			f.modules[n].OnBatch(index, cb)
		}
	}
	return res
}

func (f *fsm) markLoaded(through uint64) {
	n := sort.Search(len(f.pending), func(i int) bool { return f.pending[i].RaftIndex > through })
	for _, b := range f.pending[:n] {
		f.pendingRows -= batchRows(b.Batch)
	}
	f.pending = slices.Clone(f.pending[n:])
	if through > f.loadedIndex {
		f.loadedIndex = through
	}
}

// pendingBatches returns committed batches not yet loaded with raft index
// > afterIndex, whole entries only, stopping once maxRows is reached (at
// least one entry is returned when any is pending).
func (f *fsm) pendingBatches(afterIndex uint64, maxRows int) []*jasperv1.CommittedBatch {
	f.mu.RLock()
	defer f.mu.RUnlock()
	i := sort.Search(len(f.pending), func(i int) bool { return f.pending[i].RaftIndex > afterIndex })
	var out []*jasperv1.CommittedBatch
	rows := 0
	for ; i < len(f.pending); i++ {
		b := f.pending[i]
		if rows >= maxRows && len(out) > 0 && b.RaftIndex != out[len(out)-1].RaftIndex {
			break
		}
		out = append(out, b)
		rows += int(batchRows(b.Batch))
	}
	return out
}

// state builds the FSM's own snapshot record; f.mu must be held. Sensor
// records are cloned (they change in place); batches and nodes are
// immutable once applied and are shared.
func (f *fsm) state() *jasperv1.FSMState {
	st := &jasperv1.FSMState{
		AppliedIndex: f.appliedIndex,
		LastTickMs:   f.lastTickMs,
		LoadedIndex:  f.loadedIndex,
		Pending:      slices.Clone(f.pending),
	}
	for _, id := range sortedKeys(f.sensors) {
		st.Sensors = append(st.Sensors, proto.CloneOf(f.sensors[id]))
	}
	for _, id := range sortedKeys(f.nodes) {
		st.Nodes = append(st.Nodes, f.nodes[id])
	}
	return st
}

// moduleStates snapshots every module (and carried foreign states) sorted
// by name; f.mu must be held.
func (f *fsm) moduleStates() ([]*jasperv1.ModuleState, error) {
	var out []*jasperv1.ModuleState
	for _, n := range f.moduleNames {
		var buf bytes.Buffer
		if err := f.modules[n].Snapshot(&buf); err != nil {
			return nil, fmt.Errorf("snapshot module %s: %w", n, err)
		}
		out = append(out, &jasperv1.ModuleState{Name: n, Data: buf.Bytes()})
	}
	for n, d := range f.foreign {
		out = append(out, &jasperv1.ModuleState{Name: n, Data: d})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// Snapshot implements raft.FSM. Module states are taken here, between
// applies; the FSM record is encoded later in Persist.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state()
	mods, err := f.moduleStates()
	if err != nil {
		return nil, err
	}
	st.Modules = mods
	return &fsmSnapshot{state: st}, nil
}

// encodeState is the canonical byte form of the whole replicated state:
// what snapshots hold and what the state hash covers.
func (f *fsm) encodeState() ([]byte, uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.state()
	mods, err := f.moduleStates()
	if err != nil {
		return nil, 0, err
	}
	st.Modules = mods
	b, err := marshalOpts.Marshal(st)
	return b, f.appliedIndex, err
}

// stateHash is the SHA-256 of the canonical state and the FSM's applied
// index: two hubs that applied the same log report the same hash.
func (f *fsm) stateHash() (uint64, string, error) {
	f.mu.RLock()
	idx := f.appliedIndex
	f.mu.RUnlock()
	f.hashMu.Lock()
	defer f.hashMu.Unlock()
	if f.hashOK && f.hashIndex == idx {
		return f.hashIndex, f.hashValue, nil
	}
	b, idx, err := f.encodeState()
	if err != nil {
		return 0, "", err
	}
	h := sha256.Sum256(b)
	f.hashOK, f.hashIndex, f.hashValue = true, idx, hex.EncodeToString(h[:])
	return f.hashIndex, f.hashValue, nil
}

// Restore implements raft.FSM.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data, err := io.ReadAll(rc)
	if err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	return f.restoreBytes(data)
}

func (f *fsm) restoreBytes(data []byte) error {
	var st jasperv1.FSMState
	if err := proto.Unmarshal(data, &st); err != nil {
		return fmt.Errorf("decode snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.appliedIndex = st.AppliedIndex
	f.lastTickMs = st.LastTickMs
	f.loadedIndex = st.LoadedIndex
	f.sensors = map[string]*jasperv1.SensorState{}
	for _, s := range st.Sensors {
		f.sensors[s.SensorId] = s
	}
	f.nodes = map[string]*jasperv1.RegisterNodeCommand{}
	for _, n := range st.Nodes {
		f.nodes[n.NodeId] = n
	}
	f.pending = st.Pending
	f.pendingRows = 0
	for _, b := range f.pending {
		f.pendingRows += batchRows(b.Batch)
	}
	got := map[string][]byte{}
	for _, m := range st.Modules {
		got[m.Name] = m.Data
	}
	var errs []error
	for _, n := range f.moduleNames {
		if err := f.modules[n].Restore(bytes.NewReader(got[n])); err != nil {
			errs = append(errs, fmt.Errorf("restore module %s: %w", n, err))
		}
		delete(got, n)
	}
	f.foreign = got
	return errors.Join(errs...)
}

type fsmSnapshot struct {
	state *jasperv1.FSMState
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	b, err := marshalOpts.Marshal(s.state)
	if err == nil {
		_, err = sink.Write(b)
	}
	if err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}

// Read accessors (for the store's API).

func (f *fsm) watermark(sensorID string) uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if st := f.sensors[sensorID]; st != nil {
		return st.LastSequence
	}
	return 0
}

func (f *fsm) node(id string) *jasperv1.RegisterNodeCommand {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.nodes[id]
}

func (f *fsm) clusterVersion(ids []string) uint32 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v := uint32(CommandVersion)
	for _, id := range ids {
		n := f.nodes[id]
		mv := uint32(1)
		if n != nil && n.MaxCommandVersion > 0 {
			mv = n.MaxCommandVersion
		}
		v = min(v, mv)
	}
	return v
}

func (f *fsm) counters() (applied, loaded, pendingRows uint64) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.appliedIndex, f.loadedIndex, f.pendingRows
}

func (f *fsm) sensorStates() []*jasperv1.SensorState {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make([]*jasperv1.SensorState, 0, len(f.sensors))
	for _, id := range sortedKeys(f.sensors) {
		out = append(out, proto.CloneOf(f.sensors[id]))
	}
	return out
}
