// Package spool keeps a sensor's batches on disk, bounded in size, from the
// moment they are sealed until a hub acknowledges them.
//
// The spool assigns every batch its sequence number: strictly increasing and
// never reused, even across restarts and lost files (numbers are reserved in
// blocks in a small state file before use, so gaps appear after a restart,
// which the wire contract allows).
//
// # Files
//
// A spool folder holds segment files seg-<first sequence>.log, each a magic
// header and length-prefixed records checked with CRC32C (see record.go), a
// state file (done watermark, reserved sequence numbers, replay cursor) and a
// quarantine/ folder.
//
// # Durability (fsync policy)
//
// Append writes the record and fsyncs the segment before it returns, so a
// sequence number handed out is on disk; a new segment also fsyncs the
// folder. The state file is replaced atomically (write, fsync, rename, fsync
// folder) whenever sequence numbers are reserved, before segments are
// deleted, at Close, and otherwise at most once a second as the done
// watermark advances. Segments are deleted only after the state file that
// covers them is durable. After kill -9 a reopened spool therefore holds every
// batch Append returned for and that was not acknowledged; acknowledgements
// above the contiguous watermark (out of order) are not persisted, so those
// batches may be sent again: the hub recognises them by (sensor, sequence).
//
// # Damage
//
// A segment whose tail is torn or whose records fail their checksum is copied
// into quarantine/ (the last MaxQuarantineFiles files are kept), counted,
// logged, and cut back to its good records, which are kept. Damage never
// stops the spool from opening.
//
// # Full spool
//
// When an Append would exceed MaxBytes the oldest segments are shed whole.
// The batches and rows lost are counted (metrics) and added to the
// SensorStats (shed_batches, shed_rows) of the batch being appended, so the
// hub learns of the loss with the next batch.
//
// A Spool is safe for concurrent use.
package spool

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Errors returned by the spool.
var (
	// ErrClosed is returned by calls on a closed spool.
	ErrClosed = errors.New("spool closed")
	// ErrTooLarge is returned by Append for a batch that cannot fit in the
	// spool at all.
	ErrTooLarge = errors.New("batch larger than the spool")
)

// reserveBlock is how many sequence numbers one state write reserves.
const reserveBlock = 1024

// stateEvery bounds how often acknowledgements alone rewrite the state file.
const stateEvery = time.Second

// Config bounds a spool.
type Config struct {
	// MaxBytes is the most the segment files may hold together.
	MaxBytes int64 `yaml:"max_bytes"`
	// SegmentBytes is the size at which a segment is sealed and a new one
	// begun; shedding removes whole segments.
	SegmentBytes int64 `yaml:"segment_bytes"`
	// MaxQuarantineFiles is how many quarantined files are kept (0: 64).
	MaxQuarantineFiles int `yaml:"max_quarantine_files"`
}

// DefaultConfig is 1 GiB in 8 MiB segments.
func DefaultConfig() Config {
	return Config{MaxBytes: 1 << 30, SegmentBytes: 8 << 20, MaxQuarantineFiles: 64}
}

// Validate checks the bounds.
func (c Config) Validate() error {
	switch {
	case c.SegmentBytes < 4096:
		return fmt.Errorf("segment_bytes: %d is below 4096", c.SegmentBytes)
	case c.MaxBytes < 2*c.SegmentBytes:
		return fmt.Errorf("max_bytes: %d is below twice segment_bytes (%d)", c.MaxBytes, 2*c.SegmentBytes)
	case c.MaxQuarantineFiles < 0:
		return fmt.Errorf("max_quarantine_files: %d is negative", c.MaxQuarantineFiles)
	}
	return nil
}

// Stats describe a spool.
type Stats struct {
	// Batches and Bytes not yet acknowledged (Bytes counts the segment
	// files, which may still hold acknowledged records).
	Batches int
	Bytes   int64
	// Segments is the number of segment files.
	Segments int
	// FirstUnacked is the lowest unacknowledged sequence (0: none).
	FirstUnacked uint64
	// Last is the highest sequence assigned so far (0: none yet).
	Last uint64
	// Counters since Open.
	Appended            uint64
	Acked               uint64
	ShedBatches         uint64
	ShedRows            uint64
	QuarantinedSegments uint64
	RejectedBatches     uint64
}

type segment struct {
	first uint64
	path  string
	size  int64
	live  int // unacknowledged records
}

type entry struct {
	seq  uint64
	seg  *segment
	off  int64
	n    int64
	rows uint32
}

// Spool is an on-disk queue of batches.
type Spool struct {
	dir string
	cfg Config
	log *slog.Logger
	m   *metrics

	mu       sync.Mutex
	closed   bool
	segs     []*segment // oldest first
	active   *os.File   // file of the last segment when appendable
	entries  []entry    // unacknowledged records, by sequence
	next     uint64     // next sequence to assign (reservations skip ahead after a restart)
	last     uint64     // highest sequence assigned to a batch
	reserved uint64
	done     uint64 // every sequence <= done needs no sending
	saved    uint64 // done as last written to the state file
	savedAt  time.Time
	cursor   uint64
	bytes    int64
	changed  chan struct{}
	st       Stats
	buf      []byte
	rd       *os.File // cached read handle
	rdPath   string
}

// Open opens (or creates) the spool in dir, recovering from torn or corrupt
// segments. reg may be nil.
func Open(dir string, cfg Config, reg prometheus.Registerer, log *slog.Logger) (*Spool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("spool config: %w", err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxQuarantineFiles == 0 {
		cfg.MaxQuarantineFiles = DefaultConfig().MaxQuarantineFiles
	}
	if err := os.MkdirAll(filepath.Join(dir, "quarantine"), 0o700); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	s := &Spool{dir: dir, cfg: cfg, log: log.With("component", "spool"), changed: make(chan struct{})}
	s.m = newMetrics(s)
	if reg != nil {
		if err := s.m.register(reg); err != nil {
			return nil, fmt.Errorf("spool metrics: %w", err)
		}
	}
	if err := s.load(); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	return s, nil
}

// state file: magic, done, reserved, last, cursor, crc32c.
const stateMagic = "JSPSTAT1"

func (s *Spool) statePath() string { return filepath.Join(s.dir, "state") }

func (s *Spool) writeState() error {
	b := make([]byte, 0, 44)
	b = append(b, stateMagic...)
	b = binary.LittleEndian.AppendUint64(b, s.done)
	b = binary.LittleEndian.AppendUint64(b, s.reserved)
	b = binary.LittleEndian.AppendUint64(b, s.last)
	b = binary.LittleEndian.AppendUint64(b, s.cursor)
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	tmp := s.statePath() + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write spool state: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write spool state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync spool state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close spool state: %w", err)
	}
	if err := os.Rename(tmp, s.statePath()); err != nil {
		return fmt.Errorf("rename spool state: %w", err)
	}
	s.saved, s.savedAt = s.done, time.Now()
	return syncDir(s.dir)
}

type state struct{ done, reserved, last, cursor uint64 }

func decodeState(b []byte) (state, error) {
	if len(b) != 44 || string(b[:8]) != stateMagic {
		return state{}, errors.New("bad state file header")
	}
	if crc32.Checksum(b[:40], castagnoli) != binary.LittleEndian.Uint32(b[40:]) {
		return state{}, errors.New("state file checksum mismatch")
	}
	return state{
		done:     binary.LittleEndian.Uint64(b[8:]),
		reserved: binary.LittleEndian.Uint64(b[16:]),
		last:     binary.LittleEndian.Uint64(b[24:]),
		cursor:   binary.LittleEndian.Uint64(b[32:]),
	}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func segName(first uint64) string { return fmt.Sprintf("seg-%020d.log", first) }

func parseSegName(name string) (uint64, bool) {
	if !strings.HasPrefix(name, "seg-") || !strings.HasSuffix(name, ".log") {
		return 0, false
	}
	v, err := strconv.ParseUint(name[4:len(name)-4], 10, 64)
	return v, err == nil
}

// load reads the state file and every segment.
func (s *Spool) load() error {
	var st state
	if b, err := os.ReadFile(s.statePath()); err == nil {
		if st, err = decodeState(b); err != nil {
			s.log.Error("spool_state_corrupt", "err", err)
			s.quarantineFile(s.statePath(), b)
			st = state{}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	_ = os.Remove(s.statePath() + ".tmp")
	s.done = st.done
	s.saved = st.done
	names, err := os.ReadDir(s.dir)
	if err != nil {
		return err
	}
	type named struct {
		first uint64
		name  string
	}
	var files []named
	for _, de := range names {
		if first, ok := parseSegName(de.Name()); ok && de.Type().IsRegular() {
			files = append(files, named{first, de.Name()})
		}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].first < files[j].first })

	var lastSeq, lastCursor uint64
	for _, fn := range files {
		path := filepath.Join(s.dir, fn.name)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		seg := &segment{first: fn.first, path: path}
		good := 0
		var bad error
		if len(data) < len(segMagic) || string(data[:len(segMagic)]) != segMagic {
			bad = fmt.Errorf("%w: bad segment header", errCorrupt)
		} else {
			good = len(segMagic)
			var segEntries []entry
			for good < len(data) {
				m, _, n, err := decodeRecord(data[good:])
				if err == nil && m.Seq <= lastSeq {
					err = fmt.Errorf("%w: sequence %d not above %d", errCorrupt, m.Seq, lastSeq)
				}
				if err != nil {
					bad = err
					break
				}
				lastSeq, lastCursor = m.Seq, m.Cursor
				if m.Seq > s.done {
					segEntries = append(segEntries, entry{seq: m.Seq, seg: seg, off: int64(good), n: int64(n), rows: m.Rows})
				}
				good += n
			}
			s.entries = append(s.entries, segEntries...)
			seg.live = len(segEntries)
		}
		if bad != nil {
			s.st.QuarantinedSegments++
			s.m.quarantined.Inc()
			s.log.Error("spool_segment_quarantined", "segment", fn.name, "good_bytes", good, "file_bytes", len(data), "err", bad)
			s.quarantineFile(path, data)
			if good <= len(segMagic) {
				if err := os.Remove(path); err != nil {
					return err
				}
				continue
			}
			if err := truncateSync(path, int64(good)); err != nil {
				return err
			}
		}
		seg.size = int64(good)
		if seg.live == 0 {
			// Everything in it is acknowledged: it only waited for deletion.
			if err := os.Remove(path); err != nil {
				return err
			}
			continue
		}
		s.segs = append(s.segs, seg)
		s.bytes += seg.size
	}
	s.next = max(lastSeq, st.reserved, st.done, st.last) + 1
	s.reserved = s.next - 1
	s.last = max(lastSeq, st.last)
	if lastSeq > st.last {
		s.cursor = lastCursor
	} else {
		s.cursor = st.cursor
	}
	s.advanceDone()
	if err := syncDir(s.dir); err != nil {
		return err
	}
	s.m.setDepth(len(s.entries), s.bytes)
	s.log.Info("spool_opened", "batches", len(s.entries), "bytes", s.bytes, "segments", len(s.segs), "next_sequence", s.next)
	return nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

// quarantineFile stores a copy of data in quarantine/ and prunes the oldest
// quarantined files beyond the limit. Failures are logged, not returned: a
// quarantine that cannot be written must not stop the sensor.
func (s *Spool) quarantineFile(path string, data []byte) {
	qdir := filepath.Join(s.dir, "quarantine")
	name := fmt.Sprintf("%s.%d", filepath.Base(path), time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(qdir, name), data, 0o600); err != nil {
		s.log.Error("spool_quarantine_write_failed", "file", name, "err", err)
		return
	}
	s.pruneQuarantine()
}

func (s *Spool) pruneQuarantine() {
	qdir := filepath.Join(s.dir, "quarantine")
	des, err := os.ReadDir(qdir)
	if err != nil || len(des) <= s.cfg.MaxQuarantineFiles {
		return
	}
	type f struct {
		name string
		mod  time.Time
	}
	var fs []f
	for _, de := range des {
		if info, err := de.Info(); err == nil {
			fs = append(fs, f{de.Name(), info.ModTime()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mod.Before(fs[j].mod) })
	for i := 0; i < len(fs)-s.cfg.MaxQuarantineFiles; i++ {
		_ = os.Remove(filepath.Join(qdir, fs[i].name))
	}
}

// advanceDone moves the done watermark up to just below the first
// unacknowledged record.
func (s *Spool) advanceDone() {
	d := s.last
	if len(s.entries) > 0 {
		d = s.entries[0].seq - 1
	}
	if d > s.done {
		s.done = d
	}
}

// Append stores b durably, assigns it the next sequence number (written into
// b.Sequence) and returns it. If the spool is full the oldest segments are
// shed first and the loss is added to b.Stats. cursor is an opaque position
// of the caller's source stored with the record (see Cursor); pass 0 when
// unused.
func (s *Spool) Append(b *jasperv1.Batch, cursor uint64) (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.appendLocked(b, cursor)
}

func (s *Spool) appendLocked(b *jasperv1.Batch, cursor uint64) (uint64, error) {
	seq := s.next
	if seq > s.reserved {
		s.reserved = seq + reserveBlock - 1
		if err := s.writeState(); err != nil {
			s.reserved = seq - 1
			return 0, err
		}
	}
	b.Sequence = seq
	// Shed with room for the stats we are about to add.
	est := int64(recHeaderLen+recFixedBody+proto.Size(b)) + 32
	if est+int64(len(segMagic)) > s.cfg.MaxBytes {
		return 0, fmt.Errorf("%w: %d bytes", ErrTooLarge, est)
	}
	var shed []*segment
	var shedBatches, shedRows uint64
	for len(s.segs) > 0 && s.bytes+est+int64(len(segMagic)) > s.cfg.MaxBytes {
		seg := s.segs[0]
		s.segs = s.segs[1:]
		if s.active != nil && len(s.segs) == 0 {
			s.active.Close()
			s.active = nil
		}
		s.bytes -= seg.size
		kept := s.entries[:0]
		for _, e := range s.entries {
			if e.seg == seg {
				shedBatches++
				shedRows += uint64(e.rows)
				continue
			}
			kept = append(kept, e)
		}
		s.entries = kept
		shed = append(shed, seg)
	}
	if len(shed) > 0 {
		if b.Stats == nil {
			b.Stats = &jasperv1.SensorStats{}
		}
		b.Stats.ShedBatches += shedBatches
		b.Stats.ShedRows += shedRows
		s.st.ShedBatches += shedBatches
		s.st.ShedRows += shedRows
		s.m.shedBatches.Add(float64(shedBatches))
		s.m.shedRows.Add(float64(shedRows))
		s.log.Warn("spool_full_shed", "segments", len(shed), "batches", shedBatches, "rows", shedRows)
	}
	payload, err := proto.Marshal(b)
	if err != nil {
		return 0, fmt.Errorf("encode batch: %w", err)
	}
	rows := uint32(len(b.GetRows().GetSrcIp()))
	s.buf = appendRecord(s.buf[:0], recordMeta{Seq: seq, Cursor: cursor, Rows: rows}, payload)
	rec := s.buf
	if s.active != nil {
		last := s.segs[len(s.segs)-1]
		if last.size+int64(len(rec)) > s.cfg.SegmentBytes {
			s.active.Close()
			s.active = nil
		}
	}
	if s.active == nil {
		if err := s.newSegment(seq); err != nil {
			return 0, err
		}
	}
	seg := s.segs[len(s.segs)-1]
	if _, err := s.active.Write(rec); err != nil {
		s.active.Close()
		s.active = nil // the next append starts a fresh segment
		return 0, fmt.Errorf("append to spool: %w", err)
	}
	if err := s.active.Sync(); err != nil {
		s.active.Close()
		s.active = nil
		return 0, fmt.Errorf("sync spool: %w", err)
	}
	s.entries = append(s.entries, entry{seq: seq, seg: seg, off: seg.size, n: int64(len(rec)), rows: rows})
	seg.size += int64(len(rec))
	seg.live++
	s.bytes += int64(len(rec))
	s.next = seq + 1
	s.last = seq
	s.cursor = cursor
	s.st.Appended++
	s.m.appended.Inc()
	for _, sh := range shed {
		if err := os.Remove(sh.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("spool_remove_failed", "segment", sh.path, "err", err)
		}
	}
	s.m.setDepth(len(s.entries), s.bytes)
	close(s.changed)
	s.changed = make(chan struct{})
	return seq, nil
}

func (s *Spool) newSegment(first uint64) error {
	path := filepath.Join(s.dir, segName(first))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("new spool segment: %w", err)
	}
	if _, err := f.Write([]byte(segMagic)); err != nil {
		f.Close()
		return fmt.Errorf("new spool segment: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("new spool segment: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		f.Close()
		return err
	}
	s.active = f
	s.segs = append(s.segs, &segment{first: first, path: path, size: int64(len(segMagic))})
	s.bytes += int64(len(segMagic))
	return nil
}

func (s *Spool) find(seq uint64) int {
	return sort.Search(len(s.entries), func(i int) bool { return s.entries[i].seq >= seq })
}

// Next returns the first unacknowledged batch with a sequence above after,
// or nil when there is none. A record that can no longer be read or decoded
// (the disk changed under the spool) is moved to quarantine, counted as
// rejected and skipped, so that one bad record cannot stall the uplink.
func (s *Spool) Next(after uint64) (*jasperv1.Batch, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	for {
		i := s.find(after + 1)
		if i >= len(s.entries) {
			return nil, nil
		}
		e := s.entries[i]
		_, payload, err := s.readLocked(e)
		b := new(jasperv1.Batch)
		if err == nil {
			if err = proto.Unmarshal(payload, b); err == nil {
				return b, nil
			}
		}
		s.log.Error("spool_record_unreadable", "sequence", e.seq, "segment", e.seg.path, "err", err)
		if payload != nil {
			name := fmt.Sprintf("batch-%020d.unreadable.pb", e.seq)
			_ = os.WriteFile(filepath.Join(s.dir, "quarantine", name), payload, 0o600)
		}
		s.removeLocked(i, i+1)
		s.st.RejectedBatches++
		s.m.rejected.Inc()
		if err := s.settleLocked(); err != nil {
			return nil, err
		}
	}
}

// Pending iterates over the unacknowledged batches with sequence >= from, in
// order, reading each from disk when it is reached. Batches appended during
// the iteration are included.
func (s *Spool) Pending(from uint64) iter.Seq2[*jasperv1.Batch, error] {
	return func(yield func(*jasperv1.Batch, error) bool) {
		after := uint64(0)
		if from > 0 {
			after = from - 1
		}
		for {
			b, err := s.Next(after)
			if err != nil {
				yield(nil, err)
				return
			}
			if b == nil || !yield(b, nil) {
				return
			}
			after = b.Sequence
		}
	}
}

func (s *Spool) readLocked(e entry) (recordMeta, []byte, error) {
	if s.rd == nil || s.rdPath != e.seg.path {
		if s.rd != nil {
			s.rd.Close()
			s.rd = nil
		}
		f, err := os.Open(e.seg.path)
		if err != nil {
			return recordMeta{}, nil, fmt.Errorf("read spool: %w", err)
		}
		s.rd, s.rdPath = f, e.seg.path
	}
	buf := make([]byte, e.n)
	if _, err := s.rd.ReadAt(buf, e.off); err != nil && !errors.Is(err, io.EOF) {
		return recordMeta{}, nil, fmt.Errorf("read spool: %w", err)
	}
	m, payload, _, err := decodeRecord(buf)
	if err != nil {
		return m, nil, fmt.Errorf("read spooled batch %d: %w", e.seq, err)
	}
	return m, payload, nil
}

// Ack removes one batch (acknowledged by a hub). Unknown sequences are
// ignored.
func (s *Spool) Ack(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	i := s.find(seq)
	if i >= len(s.entries) || s.entries[i].seq != seq {
		return nil
	}
	s.removeLocked(i, i+1)
	s.st.Acked++
	s.m.acked.Inc()
	return s.settleLocked()
}

// AckThrough removes every batch with a sequence <= seq.
func (s *Spool) AckThrough(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	i := s.find(seq + 1)
	if i == 0 {
		return nil
	}
	s.st.Acked += uint64(i)
	s.m.acked.Add(float64(i))
	s.removeLocked(0, i)
	return s.settleLocked()
}

// Reject removes one batch that a hub refused for good (invalid, forbidden,
// ...) after saving a copy in quarantine/ named after its sequence and
// reason, so that it is neither resent forever nor silently lost.
func (s *Spool) Reject(seq uint64, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	i := s.find(seq)
	if i >= len(s.entries) || s.entries[i].seq != seq {
		return nil
	}
	if _, payload, err := s.readLocked(s.entries[i]); err == nil {
		name := fmt.Sprintf("batch-%020d.%s.pb", seq, sanitize(reason))
		if err := os.WriteFile(filepath.Join(s.dir, "quarantine", name), payload, 0o600); err != nil {
			s.log.Error("spool_quarantine_write_failed", "file", name, "err", err)
		}
		s.pruneQuarantine()
	}
	s.removeLocked(i, i+1)
	s.st.RejectedBatches++
	s.m.rejected.Inc()
	return s.settleLocked()
}

func sanitize(r string) string {
	r = strings.Map(func(c rune) rune {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' {
			return c
		}
		return '_'
	}, r)
	if r == "" {
		return "unknown"
	}
	return r
}

// removeLocked drops entries [i, j).
func (s *Spool) removeLocked(i, j int) {
	for _, e := range s.entries[i:j] {
		e.seg.live--
	}
	if i == 0 {
		s.entries = s.entries[j:]
	} else {
		s.entries = slices.Delete(s.entries, i, j)
	}
}

// settleLocked persists the watermark and deletes segments that hold no
// unacknowledged record (the active one stays until it is sealed).
func (s *Spool) settleLocked() error {
	s.advanceDone()
	var dead []*segment
	kept := s.segs[:0]
	for k, seg := range s.segs {
		if seg.live == 0 && !(s.active != nil && k == len(s.segs)-1) {
			dead = append(dead, seg)
			continue
		}
		kept = append(kept, seg)
	}
	s.segs = kept
	// The watermark is saved when segments go and at most once a second
	// otherwise: a stale watermark after a crash only resends batches the
	// hub recognises, and sequence safety rests on the reservation.
	if len(dead) > 0 || s.done != s.saved && time.Since(s.savedAt) >= stateEvery {
		if err := s.writeState(); err != nil {
			return err
		}
	}
	for _, seg := range dead {
		s.bytes -= seg.size
		if s.rdPath == seg.path && s.rd != nil {
			s.rd.Close()
			s.rd, s.rdPath = nil, ""
		}
		if err := os.Remove(seg.path); err != nil && !errors.Is(err, os.ErrNotExist) {
			s.log.Error("spool_remove_failed", "segment", seg.path, "err", err)
		}
	}
	s.m.setDepth(len(s.entries), s.bytes)
	return nil
}

// Resequence handles a spool that is behind the federation: a hub's
// Welcome says it holds this sensor's sequences up to floor, yet the spool
// never assigned floor (its folder was lost or replaced). Sequences would be
// reused and new batches taken for duplicates, so Resequence moves the next
// sequence above floor and appends the pending batches again under new
// numbers (in order, cursors kept), then drops the old records. It returns
// how many batches were renumbered. A crash in the middle may leave both
// copies, which are then sent twice under different numbers.
func (s *Spool) Resequence(floor uint64) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, ErrClosed
	}
	if floor < s.next {
		return 0, nil
	}
	type pending struct {
		b      *jasperv1.Batch
		cursor uint64
	}
	var ps []pending
	for _, e := range s.entries {
		m, payload, err := s.readLocked(e)
		if err != nil {
			continue
		}
		b := new(jasperv1.Batch)
		if proto.Unmarshal(payload, b) != nil {
			continue
		}
		ps = append(ps, pending{b, m.Cursor})
	}
	s.removeLocked(0, len(s.entries))
	if s.active != nil { // the renumbered records start a fresh segment
		s.active.Close()
		s.active = nil
	}
	s.next = floor + 1
	for _, p := range ps {
		if _, err := s.appendLocked(p.b, p.cursor); err != nil {
			return 0, err
		}
	}
	s.done = floor
	s.log.Warn("spool_resequenced", "floor", floor, "batches", len(ps))
	return len(ps), s.settleLocked()
}

// Changed returns a channel closed at the next Append.
func (s *Spool) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// FirstUnacked is the lowest unacknowledged sequence, 0 when none.
func (s *Spool) FirstUnacked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) == 0 {
		return 0
	}
	return s.entries[0].seq
}

// Last is the highest sequence assigned to a batch so far (0 before the
// first). After a restart the next sequence may be well above it: numbers
// reserved before the restart are skipped.
func (s *Spool) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// Cursor is the cursor stored with the most recently appended batch: a
// replaying source uses it to resume after a restart where the spooled data
// ends.
func (s *Spool) Cursor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cursor
}

// Stats returns the spool's current depth and counters.
func (s *Spool) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Batches = len(s.entries)
	st.Bytes = s.bytes
	st.Segments = len(s.segs)
	st.Last = s.last
	if len(s.entries) > 0 {
		st.FirstUnacked = s.entries[0].seq
	}
	return st
}

// Close persists the state and closes the files. It is idempotent.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	var err error
	if s.active != nil {
		err = s.active.Close()
		s.active = nil
	}
	if s.rd != nil {
		s.rd.Close()
		s.rd = nil
	}
	if werr := s.writeState(); werr != nil && err == nil {
		err = werr
	}
	return err
}
