package detect

import (
	"slices"
	"strings"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// addrKey is a source address as 16 bytes (IPv4 mapped into IPv6).
type addrKey [16]byte

// dstSlot is the largest dst_ips of one row of a source in one (sensor,
// bin): a lower bound of the distinct dark addresses it reached there.
type dstSlot struct {
	sensor string
	bin    int64
	max    uint32
	sid    uint32 // transient: the sensor's number (Detector.intern), 0 unknown
}

// maxDstSlots bounds the slots kept per source; older slots are folded
// into settled.
const maxDstSlots = 8

// dstEst estimates a source's distinct dark destinations: the sum over
// (sensor, bin) of the largest per-row count. Within a bin it never counts
// an address twice (a sensor's partial rows carry the row's distinct
// destinations of the bin so far, so the maximum over its batches is the
// bin's count);
// across bins an address reached again is counted again, which is why the
// infected-host rule also asks for packets.
type dstEst struct {
	settled uint64
	slots   []dstSlot
}

// add counts n for (sensor, bin) and returns the slot's index and whether
// the slot was there. sid is the sensor's number and floor the first of
// its generation (Detector.intern; 0: unknown): two numbers of the
// generation that differ are different sensors, no string compared.
func (e *dstEst) add(sensor string, sid, floor uint32, bin int64, n uint32) (int, bool) {
	for i := range e.slots {
		s := &e.slots[i]
		if s.bin != bin {
			continue
		}
		switch {
		case sid != 0 && s.sid == sid:
		case sid != 0 && s.sid >= floor && floor != 0:
			continue // a number of this generation, another sensor
		case s.sensor == sensor:
			s.sid = sid
		default:
			continue
		}
		s.max = max(s.max, n)
		return i, true
	}
	if len(e.slots) == maxDstSlots {
		e.settled += uint64(e.slots[0].max)
		copy(e.slots, e.slots[1:])
		e.slots = e.slots[:maxDstSlots-1]
	}
	if e.slots == nil {
		// Room for a few sensors at once: most sources are seen by one to
		// four, and the memory stays with the subject when it is reused.
		e.slots = make([]dstSlot, 0, 4)
	}
	e.slots = append(e.slots, dstSlot{sensor: sensor, bin: bin, max: n, sid: sid})
	return len(e.slots) - 1, false
}

func (e *dstEst) total() uint64 {
	t := e.settled
	for _, s := range e.slots {
		t += uint64(s.max)
	}
	return t
}

func (e *dstEst) encode(w *enc) {
	w.u(e.settled)
	w.u(uint64(len(e.slots)))
	for _, s := range e.slots {
		w.s(s.sensor)
		w.i(s.bin)
		w.u(uint64(s.max))
	}
}

func (e *dstEst) decode(d *dec) {
	e.settled = d.u()
	n := d.n(maxDstSlots)
	e.slots = nil
	for i := 0; i < n && d.err == nil; i++ {
		e.slots = append(e.slots, dstSlot{sensor: d.s(), bin: d.i(), max: uint32(d.u())})
	}
}

// Caps on evidence lists kept per subject.
const (
	maxPortsKept   = 64
	maxSensorsKept = 32
	maxFPsKept     = 16
)

// evidence is what a host or victim accumulates.
type evidence struct {
	first, last    int64
	packets, bytes uint64
	dst            dstEst
	ports          []uint32 // sorted, at most maxPortsKept
	portsEst       uint64   // distinct ports, including overflow rows' counts
	classes        uint32   // bit per TrafficClass
	fps            []fpCount
	sensors        []string // sorted, at most maxSensorsKept
	// batch and slot (transient, cleared with the evidence): in batch
	// number batch (Detector.epoch) the (sensor, bin) of the batch is
	// dst.slots[slot] and the sensor is in sensors (or sensors is full),
	// so the batch's next rows of the source skip both searches.
	batch uint64
	slot  int
}

type fpCount struct {
	name string
	n    uint64
}

func (ev *evidence) reset() { *ev = evidence{} }

// addRow adds a row of batch number batch (Detector.epoch; 0: none), from
// sensor.
func (ev *evidence) addRow(r *row, sensor string, batch uint64) {
	if ev.packets == 0 || r.t0 < ev.first {
		ev.first = r.t0
	}
	ev.last = max(ev.last, r.t1)
	ev.packets += r.packets
	ev.bytes += r.bytes
	// Every row of a batch has the batch's sensor and bin.
	known := batch != 0 && ev.batch == batch
	if known {
		s := &ev.dst.slots[ev.slot]
		s.max = max(s.max, r.dstIPs)
	} else {
		var had bool
		ev.slot, had = ev.dst.add(sensor, r.sid, r.sidFloor, r.bin, r.dstIPs)
		// A slot of the sensor was there: its first row already put the
		// sensor in the list (or found the list full); both are cleared
		// together.
		known = had
	}
	if r.overflow {
		ev.portsEst += uint64(r.distinctPorts)
	} else if r.portKnown {
		i, found := slices.BinarySearch(ev.ports, r.port)
		if !found {
			ev.portsEst++
			if len(ev.ports) < maxPortsKept {
				ev.ports = slices.Insert(ev.ports, i, r.port)
			}
		}
	}
	ev.classes |= 1 << uint(r.class)
	for _, fp := range r.fps {
		i, found := slices.BinarySearchFunc(ev.fps, fp.name, func(a fpCount, n string) int { return strings.Compare(a.name, n) })
		if found {
			ev.fps[i].n += fp.n
		} else if len(ev.fps) < maxFPsKept {
			ev.fps = slices.Insert(ev.fps, i, fpCount{fp.name, fp.n})
		}
	}
	if !known {
		// Interned ids compare by pointer: a scan of the few kept is
		// cheaper than a binary search of string comparisons.
		if !slices.Contains(ev.sensors, sensor) && len(ev.sensors) < maxSensorsKept {
			if ev.sensors == nil {
				ev.sensors = make([]string, 0, 4) // as dst.slots
			}
			i, _ := slices.BinarySearch(ev.sensors, sensor)
			ev.sensors = slices.Insert(ev.sensors, i, sensor)
		}
	}
	ev.batch = batch
}

// fill writes the evidence into a finding.
func (ev *evidence) fill(f *jasperv1.Finding) {
	ev.fillScalars(f)
	ev.fillLists(f)
}

// fillScalars writes the counters and times (cheap: every batch).
func (ev *evidence) fillScalars(f *jasperv1.Finding) {
	f.FirstSeenMs, f.LastSeenMs = ev.first, ev.last
	f.Packets, f.Bytes, f.DstIps = ev.packets, ev.bytes, ev.dst.total()
}

// fillLists writes ports, classes, fingerprints and sensors (when the
// finding is announced or ends).
func (ev *evidence) fillLists(f *jasperv1.Finding) {
	f.Ports = slices.Clone(ev.ports)
	f.Classes = f.Classes[:0]
	for c := jasperv1.TrafficClass(1); c <= jasperv1.TrafficClass_TRAFFIC_CLASS_OTHER; c++ {
		if ev.classes&(1<<uint(c)) != 0 {
			f.Classes = append(f.Classes, c)
		}
	}
	if len(ev.fps) > 0 {
		f.Fingerprints = make(map[string]uint64, len(ev.fps))
		for _, fp := range ev.fps {
			f.Fingerprints[fp.name] = fp.n
		}
	}
	f.Sensors = slices.Clone(ev.sensors)
}

func (ev *evidence) encode(e *enc) {
	e.i(ev.first)
	e.i(ev.last)
	e.u(ev.packets)
	e.u(ev.bytes)
	ev.dst.encode(e)
	e.u(uint64(len(ev.ports)))
	for _, p := range ev.ports {
		e.u(uint64(p))
	}
	e.u(ev.portsEst)
	e.u(uint64(ev.classes))
	e.u(uint64(len(ev.fps)))
	for _, fp := range ev.fps {
		e.s(fp.name)
		e.u(fp.n)
	}
	e.u(uint64(len(ev.sensors)))
	for _, s := range ev.sensors {
		e.s(s)
	}
}

func (ev *evidence) decode(d *dec) {
	ev.first = d.i()
	ev.last = d.i()
	ev.packets = d.u()
	ev.bytes = d.u()
	ev.dst.decode(d)
	ev.ports = nil
	for n, i := d.n(maxPortsKept), 0; i < n && d.err == nil; i++ {
		ev.ports = append(ev.ports, uint32(d.u()))
	}
	ev.portsEst = d.u()
	ev.classes = uint32(d.u())
	ev.fps = nil
	for n, i := d.n(maxFPsKept), 0; i < n && d.err == nil; i++ {
		ev.fps = append(ev.fps, fpCount{d.s(), d.u()})
	}
	ev.sensors = nil
	for n, i := d.n(maxSensorsKept), 0; i < n && d.err == nil; i++ {
		ev.sensors = append(ev.sensors, d.s())
	}
}

// subject is a tracked source: a candidate infected host or DoS victim.
type subject struct {
	key       addrKey
	winStart  int64 // infected: start of the counting window
	ev        evidence
	minutes   []minuteCount // DoS: packets per minute, recent minutes
	maxMinute uint64        // DoS: largest minute count of the attack
	country   string
	asn       uint32
	finding   string // id of the open finding, if any
	epoch     uint64 // transient: last batch that touched it
	firstRow  int32  // transient: its first row in that batch
	// judgeEpoch is the last batch that queued it for judging (transient).
	judgeEpoch uint64
	// of caches the open finding named by finding (transient: checked
	// against finding and the state before use, never snapshotted).
	of *openFinding
	// setGen/setPort and ccGen/ccCountry: the open bin (openBin.gen) and
	// port set, and the bin and country set, this subject was last
	// counted in (transient; gen 0 is no bin).
	setGen    uint64
	setPort   uint32
	ccGen     uint64
	ccCountry string
}

type minuteCount struct {
	minute int64
	n      uint64
}

const maxMinutes = 8

func (s *subject) addMinute(m int64, n uint64) {
	i, found := slices.BinarySearchFunc(s.minutes, m, func(a minuteCount, m int64) int {
		switch {
		case a.minute < m:
			return -1
		case a.minute > m:
			return 1
		}
		return 0
	})
	if found {
		s.minutes[i].n += n
		s.maxMinute = max(s.maxMinute, s.minutes[i].n)
		return
	}
	if len(s.minutes) == maxMinutes {
		if i == 0 {
			return // older than everything kept: too late to matter
		}
		s.minutes = s.minutes[1:]
		i--
	}
	s.minutes = slices.Insert(s.minutes, i, minuteCount{m, n})
	s.maxMinute = max(s.maxMinute, n)
}

func (s *subject) encode(e *enc) {
	e.bytes(s.key[:])
	e.i(s.winStart)
	s.ev.encode(e)
	e.u(uint64(len(s.minutes)))
	for _, m := range s.minutes {
		e.i(m.minute)
		e.u(m.n)
	}
	e.u(s.maxMinute)
	e.s(s.country)
	e.u(uint64(s.asn))
	e.s(s.finding)
}

func (s *subject) decode(d *dec) {
	if k := d.bytes(); len(k) == 16 {
		s.key = addrKey(k)
	} else {
		d.fail(errSnapshot)
	}
	s.winStart = d.i()
	s.ev.decode(d)
	for n, i := d.n(maxMinutes), 0; i < n && d.err == nil; i++ {
		s.minutes = append(s.minutes, minuteCount{d.i(), d.u()})
	}
	s.maxMinute = d.u()
	s.country = d.s()
	s.asn = uint32(d.u())
	s.finding = d.s()
}

// lru holds subjects, most recently seen first; at the cap the least
// recently seen is evicted. The subjects live in fixed pages (their
// addresses never change, freed ones are reused); the recency order is a
// doubly linked list of entry numbers in one dense array, and IPv4
// subjects are indexed by a uint32 key (the map's fast path, no pointers
// for the collector to scan), IPv6 ones by the 16 bytes. Nothing iterates
// the maps: every walk follows the list, so layouts never reach outputs.
type lru struct {
	m4      map[uint32]int32
	m6      map[addrKey]int32
	pages   [][]subject
	links   []lruLink // by entry
	head    int32     // most recent entry, -1 if empty
	tail    int32     // least recent entry, -1 if empty
	free    []int32   // entries not in use
	n       int
	evicted uint64
	// orphans bounds from above the open findings whose subject is not
	// held (evicted with its finding open): while it is 0, a new subject
	// needs no look-up of an open finding. Transient: counted again after
	// a restore (Detector.countOrphans).
	orphans int
	// orphanBits is a filter of the orphans' keys: every orphan's bit is
	// set (false hits cost a look-up, nothing else). Transient: set on
	// eviction, rebuilt with the orphans count.
	orphanBits *[orphanWords]uint64
	orphanSet  int   // bits set in orphanBits
	created    int32 // transient: the entry of the last subject created
}

const orphanWords = 1024 // 65,536 bits

// orphanBit is k's bit in orphanBits.
func orphanBit(k *addrKey) (int, uint64) {
	h := keyHash(*k)
	return int(h>>6) % orphanWords, 1 << (h & 63)
}

// orphan notes that k's subject left with its finding open.
func (c *lru) orphan(k *addrKey) {
	c.orphans++
	if c.orphanBits == nil {
		c.orphanBits = new([orphanWords]uint64)
	}
	w, b := orphanBit(k)
	if c.orphanBits[w]&b == 0 {
		c.orphanBits[w] |= b
		c.orphanSet++
	}
}

// orphanFilterStale reports whether most of the filter's bits are of
// orphans gone (rebuild it), and clears it at once when none is left.
func (c *lru) orphanFilterStale() bool {
	if c.orphans == 0 && c.orphanSet > 0 {
		clear(c.orphanBits[:])
		c.orphanSet = 0
	}
	return c.orphanSet > 2*c.orphans+64
}

// mayBeOrphan reports whether k may have an open finding while not held.
func (c *lru) mayBeOrphan(k *addrKey) bool {
	if c.orphans == 0 || c.orphanBits == nil {
		return false
	}
	w, b := orphanBit(k)
	return c.orphanBits[w]&b != 0
}

// lruLink is an entry's neighbours in recency order (-1: none; prev
// lruFree: the entry is free).
type lruLink struct{ prev, next int32 }

const lruFree = -2

const lruPage = 256

func newLRU() lru {
	return lru{m4: map[uint32]int32{}, m6: map[addrKey]int32{}, head: -1, tail: -1}
}

// Len is the number of subjects held.
func (c *lru) Len() int { return c.n }

func (c *lru) at(e int32) *subject { return &c.pages[e/lruPage][e%lruPage] }

// v4 reports whether k is an IPv4-mapped key, and its IPv4 value.
func (k *addrKey) v4() (uint32, bool) {
	if k[10] == 0xff && k[11] == 0xff && k[0]|k[1]|k[2]|k[3]|k[4]|k[5]|k[6]|k[7]|k[8]|k[9] == 0 {
		return uint32(k[12])<<24 | uint32(k[13])<<16 | uint32(k[14])<<8 | uint32(k[15]), true
	}
	return 0, false
}

func (c *lru) lookup(k addrKey) int32 {
	if v, ok := k.v4(); ok {
		if e, ok := c.m4[v]; ok {
			return e
		}
		return -1
	}
	if e, ok := c.m6[k]; ok {
		return e
	}
	return -1
}

func (c *lru) put(k addrKey, e int32) {
	if v, ok := k.v4(); ok {
		c.m4[v] = e
	} else {
		c.m6[k] = e
	}
}

func (c *lru) del(k addrKey) {
	if v, ok := k.v4(); ok {
		delete(c.m4, v)
	} else {
		delete(c.m6, k)
	}
}

func (c *lru) get(k addrKey) *subject {
	if e := c.lookup(k); e >= 0 {
		return c.at(e)
	}
	return nil
}

// unlink takes e out of the recency list.
func (c *lru) unlink(e int32) {
	l := c.links[e]
	if l.prev >= 0 {
		c.links[l.prev].next = l.next
	} else {
		c.head = l.next
	}
	if l.next >= 0 {
		c.links[l.next].prev = l.prev
	} else {
		c.tail = l.prev
	}
}

// pushFront makes e the most recent.
func (c *lru) pushFront(e int32) {
	c.links[e] = lruLink{prev: -1, next: c.head}
	if c.head >= 0 {
		c.links[c.head].prev = e
	} else {
		c.tail = e
	}
	c.head = e
}

// alloc returns a free entry, its subject zeroed but for the evidence
// slices' memory.
func (c *lru) alloc() int32 {
	if n := len(c.free); n > 0 {
		e := c.free[n-1]
		c.free = c.free[:n-1]
		return e
	}
	e := int32(len(c.links))
	if int(e)%lruPage == 0 {
		c.pages = append(c.pages, make([]subject, lruPage))
	}
	c.links = append(c.links, lruLink{})
	return e
}

// release frees entry e (already unlinked and out of the index).
func (c *lru) release(e int32) {
	c.at(e).clear(addrKey{})
	c.links[e] = lruLink{prev: lruFree, next: lruFree}
	c.free = append(c.free, e)
	c.n--
}

// clear resets the subject for key k, keeping the evidence slices' memory.
func (s *subject) clear(k addrKey) {
	ev := s.ev
	*s = subject{key: k}
	s.ev.ports, s.ev.fps, s.ev.sensors, s.ev.dst.slots = ev.ports[:0], ev.fps[:0], ev.sensors[:0], ev.dst.slots[:0]
}

// holds reports whether entry e is in use and holds key k.
func (c *lru) holds(e int32, k *addrKey) bool {
	return int(e) < len(c.links) && c.links[e].prev != lruFree && c.at(e).key == *k
}

// touchEntry marks entry e (in use) most recent and returns its subject.
func (c *lru) touchEntry(e int32) *subject {
	if e != c.head {
		c.unlink(e)
		c.pushFront(e)
	}
	return c.at(e)
}

// touch returns the subject for k, created if needed, and marks it most
// recent. At capacity the least recent subject is evicted and its memory
// reused.
func (c *lru) touch(k addrKey, capacity int) (*subject, bool) {
	if e := c.lookup(k); e >= 0 {
		return c.touchEntry(e), false
	}
	return c.at(c.create(k, capacity)), true
}

// create adds k, known not to be held, as the most recent subject (at
// capacity evicting the least recent) and returns its entry.
func (c *lru) create(k addrKey, capacity int) int32 {
	for c.n > capacity {
		old := c.tail
		c.unlink(old)
		c.del(c.at(old).key)
		if c.at(old).finding != "" {
			c.orphan(&c.at(old).key)
		}
		c.release(old)
		c.evicted++
	}
	if c.n == capacity {
		e := c.tail
		s := c.at(e)
		c.del(s.key)
		if s.finding != "" {
			c.orphan(&s.key)
		}
		c.evicted++
		s.clear(k)
		c.unlink(e)
		c.pushFront(e)
		c.put(k, e)
		c.created = e
		return e
	}
	e := c.alloc()
	c.n++
	c.at(e).clear(k)
	c.pushFront(e)
	c.put(k, e)
	c.created = e
	return e
}

// sweep removes, from the least recently touched end, subjects last seen
// before cutoff that have no open finding. It stops at the first subject
// seen since cutoff: the list is in touch (log) order, so what lies beyond
// was touched later; a subject whose event time lags its touch order waits
// for a later sweep or for eviction.
func (c *lru) sweep(cutoff int64) {
	for e := c.tail; e >= 0; {
		prev := c.links[e].prev
		s := c.at(e)
		switch {
		case s.finding != "":
		case s.ev.last < cutoff:
			c.unlink(e)
			c.del(s.key)
			c.release(e)
		default:
			return
		}
		e = prev
	}
}

func (c *lru) encode(e *enc) {
	e.u(c.evicted)
	e.u(uint64(c.n))
	for el := c.tail; el >= 0; el = c.links[el].prev {
		c.at(el).encode(e)
	}
}

func (c *lru) decode(d *dec) {
	*c = newLRU()
	c.evicted = d.u()
	n := d.n(maxLen)
	for i := 0; i < n && d.err == nil; i++ {
		var s subject
		s.decode(d)
		if d.err != nil {
			return
		}
		if c.lookup(s.key) >= 0 {
			d.fail(errSnapshot)
			return
		}
		e := c.alloc()
		c.n++
		*c.at(e) = s
		c.pushFront(e)
		c.put(s.key, e)
	}
}
