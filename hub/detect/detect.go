package detect

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ModuleName is the name the detectors register under in the FSM.
const ModuleName = "detect"

// Deps are the Detector's dependencies; nil values are allowed.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Stats counts what the detectors saw and every bound they hit. It is part
// of the replicated state.
type Stats struct {
	Batches         uint64 // batches seen
	Rows            uint64 // rows seen
	BadRows         uint64 // rows with a malformed source address
	BogonRows       uint64 // rows from bogon sources (skipped unless include_bogon_sources)
	ResearchRows    uint64 // rows from research scanners (never alerted on)
	BackscatterRows uint64 // rows judged as backscatter (DoS path)
	LateRows        uint64 // rows for a bin already judged (surges skip them)
	BinsClosed      uint64 // bins judged by the surge detectors
	BinsForced      uint64 // bins judged early because too many were open
	BinSetDropped   uint64 // sources not counted in a bin because it was full
	HostsEvicted    uint64 // infected-host candidates evicted at max_hosts
	VictimsEvicted  uint64 // DoS candidates evicted at max_victims
	SeriesEvicted   uint64 // surge baselines dropped at max_series
	FindingsNew     uint64 // findings raised
	FindingsEnded   uint64 // findings ended (quiet, command or eviction)
	FindingsEvicted uint64 // open findings ended early at max_open_findings
}

// Filter selects findings; zero fields select everything.
type Filter struct {
	Types  []jasperv1.FindingType
	States []jasperv1.FindingState
	// SinceMs keeps findings updated at or after this event time.
	SinceMs int64
	// Country keeps findings whose source country or subject country is it.
	Country string
	// Limit caps the result (0: no cap).
	Limit int
}

// openFinding is a finding still open and when it was last announced.
type openFinding struct {
	f         *jasperv1.Finding
	subject   string
	announced int64
}

// Detector runs every detector as one deterministic FSM module. Build it
// with New; register it with the raft store (it implements store.Module).
//
// Concurrency: OnBatch, OnTick, Apply, Snapshot and Restore are called by
// the FSM one at a time; Findings, Stats and OnFinding may be called from
// any goroutine. OnFinding callbacks run inside OnBatch/OnTick/Apply after
// the state change, with no lock held; they must not block.
type Detector struct {
	cfg     Config
	log     *slog.Logger
	m       *metrics
	fpInst  map[string]bool
	binMs   int64
	mu      sync.Mutex
	st      *state
	subsMu  sync.Mutex
	subs    []func(*jasperv1.Finding)
	views   []func(*jasperv1.Finding)
	pending []*jasperv1.Finding
	epoch   uint64 // transient batch counter for touched-subject dedup
	touched []*subject
	victims []*subject
	binGen  uint64 // transient: the last openBin.gen given out
	// Transient, per batch: the host of the previous scan-like row (a
	// run of rows of one source needs one lookup), the row being read,
	// and whether d.touched needs sorting back into first-touch order.
	lastHost    *subject
	hostHint    []int32 // per row of the batch: its host's entry, or -1
	recent      *[1 << recentBits]recentHost
	sensors     map[string]sensorID // see intern
	nextSID     uint32
	sidFloor    uint32
	portHint    map[uint32]int // transient: sources per port in the last bin judged
	sink        int64          // keeps the look-ahead loads
	rowIdx      int32
	maxFirst    int32
	touchedSort bool
}

// state is everything replicated.
type state struct {
	nowMs       int64
	lastSweepMs int64
	hosts       lru
	victims     lru
	bins        map[int64]*openBin
	ports       seriesSet
	fps         seriesSet
	countries   seriesSet
	open        map[string]*openFinding // by subject key
	ended       []*jasperv1.Finding
	stats       Stats
	// geoVersion is the geo database version of the last enriched batch,
	// recorded on every finding.
	geoVersion string
}

func newState() *state {
	return &state{
		hosts: newLRU(), victims: newLRU(), bins: map[int64]*openBin{},
		ports: newSeriesSet(), fps: newSeriesSet(), countries: newSeriesSet(),
		open: map[string]*openFinding{},
	}
}

// New builds the detectors.
func New(cfg Config, deps Deps) (*Detector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("detect config: %w", err)
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Detector{
		cfg:    cfg,
		log:    log.With("component", "detect"),
		m:      newMetrics(deps.Registerer),
		fpInst: map[string]bool{},
		binMs:  cfg.Bin.Milliseconds(),
		st:     newState(),
		recent: new([1 << recentBits]recentHost),
	}
	for _, f := range cfg.Infected.Fingerprints {
		d.fpInst[f] = true
	}
	return d, nil
}

// Name implements the store's Module interface.
func (d *Detector) Name() string { return ModuleName }

// OnFinding subscribes fn to every new finding, every ended finding, and
// continuing findings whose evidence grew (at most every update_every of
// event time per finding). fn gets its own copy.
func (d *Detector) OnFinding(fn func(*jasperv1.Finding)) {
	d.subsMu.Lock()
	d.subs = append(d.subs, fn)
	d.subsMu.Unlock()
}

// OnFindingView subscribes fn to the same findings as OnFinding, but fn
// reads a copy shared with the other subscribers: it must neither change
// nor keep it (a logger). It saves a copy per finding.
func (d *Detector) OnFindingView(fn func(*jasperv1.Finding)) {
	d.subsMu.Lock()
	d.views = append(d.views, fn)
	d.subsMu.Unlock()
}

// flush delivers the pending announcements, outside the state lock.
func (d *Detector) flush() {
	d.mu.Lock()
	p := d.pending
	d.pending = nil
	d.mu.Unlock()
	if len(p) == 0 {
		return
	}
	d.subsMu.Lock()
	subs, views := slices.Clone(d.subs), slices.Clone(d.views)
	d.subsMu.Unlock()
	for _, f := range p {
		// The queued copy is already private: the views read it, then
		// the last subscriber gets it, the others a copy each.
		for _, fn := range views {
			fn(f)
		}
		for i, fn := range subs {
			if i < len(subs)-1 {
				fn(cloneFinding(f))
			} else {
				fn(f)
			}
		}
	}
}

// row is one summary row, decoded for the detectors.
type row struct {
	key           addrKey
	proto         uint8
	port          uint32
	portKnown     bool
	icmpType      uint32
	class         jasperv1.TrafficClass
	packets       uint64
	bytes         uint64
	dstIPs        uint32
	distinctPorts uint32
	overflow      bool
	t0, t1        int64 // event time, Unix ms
	bin           int64 // detector bin start, Unix s
	label         jasperv1.SourceLabel
	country       string
	asn           uint32
	fps           []fpCount
	// sid and sidFloor: the batch's sensor number and the first number of
	// its generation (Detector.intern).
	sid, sidFloor uint32
	// v4 is the IPv4 address of a 4-byte source (is4).
	v4  uint32
	is4 bool
}

func col[T any](c []T, i int) T {
	if i < len(c) {
		return c[i]
	}
	var z T
	return z
}

// backscatter reports the classes answered to spoofed packets (DESIGN.md):
// SYN/ACK, RST, and ICMP echo reply and error types. The ICMP judgement
// uses the outer type only: summary rows carry no quoted inner header.
func backscatter(r *row) bool {
	switch r.class {
	case jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST:
		return true
	case jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP:
		if r.proto == 58 {
			return r.icmpType <= 4 || r.icmpType == 129
		}
		switch r.icmpType {
		case 0, 3, 4, 5, 11, 12, 14, 16, 18:
			return true
		}
	}
	return false
}

// OnBatch feeds one committed batch to every detector. Infected hosts and
// DoS victims are judged at once, on the batch that crosses the
// threshold; surges are judged when their bin closes (OnTick).
func (d *Detector) OnBatch(index uint64, cb *jasperv1.CommittedBatch) {
	d.mu.Lock()
	d.onBatch(index, cb)
	d.mu.Unlock()
	d.flush()
}

func (d *Detector) onBatch(index uint64, cb *jasperv1.CommittedBatch) {
	st := d.st
	b := cb.GetBatch()
	rows := b.GetRows()
	n := len(rows.GetSrcIp())
	st.stats.Batches++
	st.stats.Rows += uint64(n)
	d.m.rows.Add(float64(n))
	if n == 0 {
		return
	}
	en := cb.GetEnrichment()
	if len(en.GetSrcLabel()) != n {
		en = nil
	}
	if v := en.GetGeoDbVersion(); v != "" {
		st.geoVersion = v
	}
	binS := d.cfg.Bin.Milliseconds() / 1000
	bin := b.GetBinStart() - mod(b.GetBinStart(), binS)
	binStartMs := b.GetBinStart() * 1000
	var ob *openBin
	if bin*1000+d.binMs+d.cfg.CloseDelay.Milliseconds() > st.nowMs {
		ob = d.bin(index, bin)
	}
	var fpCols []*jasperv1.FingerprintColumn
	for _, c := range rows.GetFingerprints() {
		if len(c.GetPackets()) == n {
			fpCols = append(fpCols, c)
		}
	}
	sensor, sid := d.intern(cb.GetSensorId())
	d.epoch++
	d.touched, d.victims = d.touched[:0], d.victims[:0]
	d.lastHost, d.maxFirst, d.touchedSort = nil, -1, false
	// Columns at full length (ingest validated them); short ones read as
	// zeros.
	full := func(c []uint32) []uint32 {
		if len(c) < n {
			c = append(make([]uint32, 0, n), c...)
			c = c[:n]
		}
		return c[:n]
	}
	protos, ports, icmpTypes := full(rows.Protocol), full(rows.DstPort), full(rows.IcmpType)
	dsts, dports, firsts, lasts := full(rows.DstIps), full(rows.DistinctPorts), full(rows.FirstSeenMs), full(rows.LastSeenMs)
	if d.cfg.Infected.Enabled {
		d.lookAhead(rows.SrcIp)
	}
	var r row
	r.sid, r.sidFloor = sid, d.sidFloor
	for i := range n {
		d.rowIdx = int32(i)
		// The key is the address's 16 bytes, IPv4 mapped into IPv6
		// (netip's As16 of the unmapped address).
		var v4 []byte
		switch b := rows.SrcIp[i]; len(b) {
		case 4:
			r.key, v4 = v4Key(b), b
			r.v4, r.is4 = binary.BigEndian.Uint32(b), true
		case 16:
			r.key = addrKey(b)
			r.is4 = false
		default:
			st.stats.BadRows++
			continue
		}
		// Field by field: a struct literal costs a copy of the whole row.
		r.proto, r.port, r.icmpType = uint8(protos[i]), ports[i], icmpTypes[i]
		r.class = col(rows.Class, i)
		r.packets, r.bytes = col(rows.Packets, i), col(rows.Bytes, i)
		r.dstIPs, r.distinctPorts = dsts[i], dports[i]
		r.overflow = col(rows.Overflow, i)
		r.t0, r.t1 = binStartMs+int64(firsts[i]), binStartMs+int64(lasts[i])
		r.bin, r.fps = bin, r.fps[:0]
		r.label, r.country, r.asn = 0, "", 0
		r.portKnown = (r.proto == 6 || r.proto == 17) && !r.overflow
		if r.t1 < r.t0 {
			r.t1 = r.t0
		}
		if en != nil {
			r.label, r.country, r.asn = en.SrcLabel[i], col(en.SrcCountry, i), col(en.SrcAsn, i)
		} else if v4 != nil && enrich.IsBogon(netip.AddrFrom4([4]byte(v4))) || v4 == nil && enrich.IsBogon(netip.AddrFrom16(r.key).Unmap()) {
			r.label = jasperv1.SourceLabel_SOURCE_LABEL_BOGON
		}
		for _, c := range fpCols {
			if p := c.Packets[i]; p > 0 {
				r.fps = append(r.fps, fpCount{c.GetName(), p})
			}
		}
		switch r.label {
		case jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH:
			st.stats.ResearchRows++
			d.m.research.Inc()
			continue
		case jasperv1.SourceLabel_SOURCE_LABEL_BOGON:
			st.stats.BogonRows++
			if !d.cfg.IncludeBogonSources {
				continue
			}
		}
		if backscatter(&r) {
			st.stats.BackscatterRows++
			if d.cfg.DoS.Enabled {
				d.dosRow(&r, sensor)
			}
			continue
		}
		var h *subject
		if d.cfg.Infected.Enabled {
			h = d.infectedRow(&r, sensor)
		}
		if ob != nil {
			ob.addRow(d, &r, sensor, h)
		} else {
			st.stats.LateRows++
		}
	}
	if d.touchedSort {
		slices.SortFunc(d.touched, func(a, b *subject) int { return int(a.firstRow) - int(b.firstRow) })
	}
	for _, h := range d.touched {
		d.judgeHost(index, h, ob, sensor)
	}
	for _, v := range d.victims {
		d.judgeVictim(index, v)
	}
	d.m.openFindings.Set(float64(len(st.open)))
}

func mod(a, b int64) int64 {
	m := a % b
	if m < 0 {
		m += b
	}
	return m
}

// recentHost is a slot of the look-ahead's cache of IPv4 hosts: entry e-1
// held key v when it was filled (transient; 0: empty). created is the
// batch (Detector.epoch) whose row last created a host noted here, lost
// that in that batch a created host's note was overwritten by another's.
type recentHost struct {
	v       uint32
	e       int32
	created uint64
	lost    bool
}

const recentBits = 12

// intern returns the detector's copy of a sensor id, so that the ids kept
// in evidence share memory (string comparisons check the pointers first),
// and a number for it: numbers are never given twice, and within one
// generation of the table (numbers from sidFloor on) different numbers
// are different ids, so destination slots compare numbers, not strings.
// Transient; the table starts a new generation at 4,096 ids, and stops
// numbering (0: compare strings) near the top of uint32.
func (d *Detector) intern(s string) (string, uint32) {
	if c, ok := d.sensors[s]; ok {
		return c.name, c.id
	}
	if d.sensors == nil || len(d.sensors) >= 4096 {
		d.sensors = map[string]sensorID{}
		if d.nextSID == 0 {
			d.nextSID = 1
		}
		d.sidFloor = d.nextSID
	}
	var id uint32
	if d.nextSID < 1<<31 {
		id = d.nextSID
		d.nextSID++
	}
	d.sensors[s] = sensorID{s, id}
	return s, id
}

type sensorID struct {
	name string
	id   uint32
}

// v4Key is the key of a 4-byte address.
func v4Key(b []byte) (k addrKey) {
	binary.BigEndian.PutUint64(k[8:], 0xffff<<32|uint64(binary.BigEndian.Uint32(b)))
	return k
}

// lookAhead finds the tracked hosts of a batch's sources before the rows
// are read, in a loop of independent lookups (the memory loads of many
// rows overlap instead of one row's waiting for the next), and loads
// each host and its open finding on the way. Nothing changes: the rows
// then check each hint (the entry may have been evicted meanwhile).
func (d *Detector) lookAhead(srcs [][]byte) {
	c := &d.st.hosts
	hint := d.hostHint[:0]
	var sink int64
	misses := 0
	for _, b := range srcs {
		e := int32(-1)
		switch len(b) {
		case 4:
			v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
			// The recent-hosts cache first (a hint too: checked below and
			// by the row), then the index.
			slot := &d.recent[(v*0x9e3779b1)>>(32-recentBits)]
			if slot.v == v && slot.e > 0 {
				e = slot.e - 1
			} else if x, ok := c.m4[v]; ok {
				e = x
				slot.v, slot.e = v, x+1 // (no creation of this batch yet)
			}
		case 16:
			e = c.lookup(addrKey(b))
		}
		if e >= 0 && int(e) < len(c.links) {
			h := c.at(e)
			sink += h.ev.last
			if h.of != nil {
				sink += h.of.f.UpdatedAtMs
			}
		}
		if e < 0 {
			misses++
		}
		hint = append(hint, e)
	}
	// The hosts that the batch's new sources will evict, least recent
	// first: load them and their index slots now too.
	if over := c.n + misses - d.cfg.Infected.MaxHosts; over > 0 && misses > 0 {
		e := c.tail
		for j := 0; j < min(over, misses) && e >= 0; j++ {
			s := c.at(e)
			if v, ok := s.key.v4(); ok {
				sink += int64(c.m4[v])
			}
			e = c.links[e].prev
		}
	}
	d.hostHint = hint
	d.sink += sink
}

// infectedRow adds a scan-like row to its host and returns the host.
func (d *Detector) infectedRow(r *row, sensor string) *subject {
	st := d.st
	h := d.lastHost
	if h == nil || h.key != r.key {
		// (A run of rows of one source: the host is already the most
		// recent, nothing touched the list since.)
		var created bool
		if e := d.hostHint[d.rowIdx]; e >= 0 && st.hosts.holds(e, &r.key) {
			h = st.hosts.touchEntry(e)
		} else if e < 0 && r.is4 {
			h, created = d.touchNew4(r)
		} else {
			h, created = st.hosts.touch(r.key, d.cfg.Infected.MaxHosts)
		}
		if created {
			d.noteCreated(&r.key)
			st.stats.HostsEvicted = st.hosts.evicted
			// A host evicted while its finding stayed open comes back to it.
			if st.hosts.mayBeOrphan(&r.key) {
				if of := st.open[subjectKey("ih|", &r.key)]; of != nil {
					h.finding = of.f.Id
					st.hosts.orphans--
				}
			}
		}
		d.lastHost = h
	}
	if h.finding == "" && h.ev.packets > 0 && r.t0 > h.winStart+d.cfg.Infected.Window.Milliseconds() {
		h.ev.reset() // the window expired without reaching the thresholds
	}
	if h.ev.packets == 0 {
		h.winStart = r.t0
	}
	h.ev.addRow(r, sensor, d.epoch)
	h.country, h.asn = r.country, r.asn
	if h.epoch != d.epoch {
		h.epoch = d.epoch
		h.firstRow = d.rowIdx
	}
	// Judge the host after the batch if judging can change anything: it
	// has a finding, or has the packets, or a fingerprint. The others
	// (most sources of a batch: one row, a few packets) are skipped; the
	// list keeps the order of first touch in the batch.
	if h.judgeEpoch != d.epoch && (h.finding != "" || h.ev.packets >= d.cfg.Infected.MinPackets || len(h.ev.fps) > 0) {
		h.judgeEpoch = d.epoch
		if h.firstRow < d.maxFirst {
			d.touchedSort = true
		}
		d.maxFirst = max(d.maxFirst, h.firstRow)
		d.touched = append(d.touched, h)
	}
	return h
}

// touchNew4 finds or creates the host of an IPv4 row that was not held
// when the batch began (look-ahead hint -1): it can only be held now if
// an earlier row of the batch created it, and every creation of the batch
// is noted in the recent-hosts cache, so the index needs no second look
// unless that note was overwritten (lost).
func (d *Detector) touchNew4(r *row) (*subject, bool) {
	c := &d.st.hosts
	slot := &d.recent[(r.v4*0x9e3779b1)>>(32-recentBits)]
	if slot.created == d.epoch {
		switch {
		case slot.v == r.v4:
			if e := slot.e - 1; c.holds(e, &r.key) {
				return c.touchEntry(e), false
			}
		case slot.lost:
			if e := c.lookup(r.key); e >= 0 {
				return c.touchEntry(e), false
			}
		}
	}
	return c.at(c.create(r.key, d.cfg.Infected.MaxHosts)), true
}

// noteCreated notes a host created by a row of this batch in the
// recent-hosts cache (see touchNew4); every creation of an IPv4 host,
// whatever the row's address length, passes here.
func (d *Detector) noteCreated(k *addrKey) {
	v, ok := k.v4()
	if !ok {
		return
	}
	e := d.st.hosts.created
	slot := &d.recent[(v*0x9e3779b1)>>(32-recentBits)]
	if slot.created == d.epoch && slot.v != v {
		slot.lost = true
	} else if slot.created != d.epoch {
		slot.lost = false
	}
	slot.v, slot.e, slot.created = v, e+1, d.epoch
}

// judgeHost raises or updates the host's infected-host finding.
func (d *Detector) judgeHost(index uint64, h *subject, ob *openBin, sensor string) {
	cfg := &d.cfg.Infected
	st := d.st
	var fp string
	for _, c := range h.ev.fps {
		if d.fpInst[c.name] {
			fp = c.name
			break
		}
	}
	if h.finding == "" {
		dst := h.ev.dst.total()
		byDst := h.ev.packets >= cfg.MinPackets && dst >= cfg.MinDstIPs
		byPorts := cfg.MinPorts > 0 && h.ev.packets >= cfg.MinPackets && h.ev.portsEst >= cfg.MinPorts
		if !byDst && !byPorts && fp == "" {
			return
		}
		// The summary, appended (one allocation instead of fmt's):
		// "ADDR (COUNTRY ASn) WHY[ (fingerprints: NAME N, ...)]: almost
		// surely infected".
		a := netip.AddrFrom16(h.key).Unmap()
		b := make([]byte, 0, 160)
		b = a.AppendTo(b)
		b = append(b, " ("...)
		b = append(b, orUnknown(h.country)...)
		b = append(b, " AS"...)
		b = strconv.AppendUint(b, uint64(h.asn), 10)
		b = append(b, ") sent "...)
		switch {
		case fp != "":
			b = strconv.AppendUint(b, fpPackets(h.ev.fps, fp), 10)
			b = append(b, " packets carrying the "...)
			b = append(b, fp...)
			b = append(b, " fingerprint into the darknet"...)
		case byDst:
			b = strconv.AppendUint(b, h.ev.packets, 10)
			b = append(b, " packets to about "...)
			b = strconv.AppendUint(b, dst, 10)
			b = append(b, " distinct dark addresses"...)
		default:
			b = strconv.AppendUint(b, h.ev.packets, 10)
			b = append(b, " packets to "...)
			b = strconv.AppendUint(b, h.ev.portsEst, 10)
			b = append(b, " distinct ports of dark addresses"...)
		}
		if fp == "" && len(h.ev.fps) > 0 {
			b = append(b, " (fingerprints: "...)
			for i, c := range h.ev.fps {
				if i > 0 {
					b = append(b, ", "...)
				}
				b = append(b, c.name...)
				b = append(b, ' ')
				b = strconv.AppendUint(b, c.n, 10)
			}
			b = append(b, ')')
		}
		b = append(b, ": almost surely infected"...)
		f := &jasperv1.Finding{
			Type:    jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
			SrcIp:   a.AsSlice(),
			Summary: string(b),
		}
		d.raise(index, subjectKey("ih|", &h.key), f, h.ev.last)
		h.finding = f.Id
	}
	of := h.of
	if of == nil || of.f.Id != h.finding || of.f.State == jasperv1.FindingState_FINDING_STATE_ENDED {
		of = st.openOf("ih|", &h.key, h.finding)
		h.of = of
	}
	if of == nil {
		h.finding = ""
		return
	}
	f := of.f
	f.SrcCountry, f.SrcAsn = h.country, h.asn
	h.ev.fillScalars(f)
	if d.touch(index, of, h.ev.last) {
		h.ev.fillLists(f)
		d.announce(of)
	}
	if ob != nil && h.country != "" && d.cfg.CountrySurge.Enabled && (h.ccGen != ob.gen || h.ccCountry != h.country) {
		if ob.add(&ob.cc, h.country, keyHash(h.key), h.country, sensor, d.cfg, &st.stats) {
			h.ccGen, h.ccCountry = ob.gen, h.country
		}
	}
}

// openOf returns the open finding of a host subject if its id is id.
func (st *state) openOf(prefix string, k *addrKey, id string) *openFinding {
	if of := st.open[subjectKey(prefix, k)]; of != nil && of.f.Id == id {
		return of
	}
	return nil
}

// byID returns the open finding with that id (ties, possible only in a
// corrupt snapshot: the smallest subject). A scan: only analysts' end
// commands look findings up by id.
func (st *state) byID(id string) *openFinding {
	var out *openFinding
	for _, of := range st.open {
		if of.f.Id == id && (out == nil || of.subject < out.subject) {
			out = of
		}
	}
	return out
}

// subjectKey is the open-findings key of a host subject; the compiler
// does not allocate for the map lookup of the converted bytes.
func subjectKey(prefix string, k *addrKey) string {
	var b [19]byte
	copy(b[:3], prefix)
	copy(b[3:], k[:])
	return string(b[:])
}

func fpPackets(fps []fpCount, name string) uint64 {
	for _, f := range fps {
		if f.name == name {
			return f.n
		}
	}
	return 0
}

func orUnknown(s string) string {
	if s == "" {
		return "country unknown"
	}
	return s
}

// dosRow adds a backscatter row to its victim.
func (d *Detector) dosRow(r *row, sensor string) {
	st := d.st
	v, created := st.victims.touch(r.key, d.cfg.DoS.MaxVictims)
	if created {
		st.stats.VictimsEvicted = st.victims.evicted
		if st.victims.mayBeOrphan(&r.key) {
			if of := st.open[subjectKey("dv|", &r.key)]; of != nil {
				v.finding = of.f.Id
				st.victims.orphans--
			}
		}
	}
	if v.ev.packets > 0 && r.t0 > v.ev.last+d.cfg.DoS.FlowTimeout.Milliseconds() {
		// A new attack: the previous one ended with the silence.
		v.ev.reset()
		v.minutes, v.maxMinute = nil, 0
	}
	v.ev.addRow(r, sensor, d.epoch)
	// Packets of a row are spread between its first and last packet;
	// attribute them to the minutes they span, evenly.
	m0, m1 := r.t0/60000, r.t1/60000
	if m1-m0 > 60 {
		m0 = m1 - 60
	}
	span := uint64(m1 - m0 + 1)
	for m := m0; m <= m1; m++ {
		share := r.packets / span
		if m == m0 {
			share += r.packets % span
		}
		v.addMinute(m, share)
	}
	v.country, v.asn = r.country, r.asn
	if v.epoch != d.epoch {
		v.epoch = d.epoch
		d.victims = append(d.victims, v)
	}
}

// judgeVictim raises or updates the DoS-victim finding (RS-DoS rule).
func (d *Detector) judgeVictim(index uint64, v *subject) {
	cfg := &d.cfg.DoS
	if v.finding == "" {
		if v.ev.packets < cfg.MinPackets || v.ev.last-v.ev.first < cfg.MinDuration.Milliseconds() || v.maxMinute < cfg.MinPacketsPerMinute {
			return
		}
		a := netip.AddrFrom16(v.key).Unmap()
		f := &jasperv1.Finding{
			Type:  jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM,
			SrcIp: a.AsSlice(),
			Summary: fmt.Sprintf("%s (%s AS%d) sent %d backscatter packets over %s (up to %d in a minute): a DoS victim answering spoofed packets",
				a, orUnknown(v.country), v.asn, v.ev.packets, time.Duration(v.ev.last-v.ev.first)*time.Millisecond, v.maxMinute),
		}
		d.raise(index, subjectKey("dv|", &v.key), f, v.ev.last)
		v.finding = f.Id
	}
	of := v.of
	if of == nil || of.f.Id != v.finding || of.f.State == jasperv1.FindingState_FINDING_STATE_ENDED {
		of = d.st.openOf("dv|", &v.key, v.finding)
		v.of = of
	}
	if of == nil {
		v.finding = ""
		return
	}
	f := of.f
	f.SrcCountry, f.SrcAsn = v.country, v.asn
	v.ev.fillScalars(f)
	f.Observed = float64(v.maxMinute)
	if d.touch(index, of, v.ev.last) {
		v.ev.fillLists(f)
		d.announce(of)
	}
}

// findingID is stable: the finding's type, subject and the raft index that
// raised it (sha256 of "type|subject|index", type and index in decimal).
func findingID(t jasperv1.FindingType, subject string, index uint64) string {
	var buf [96]byte
	b := strconv.AppendInt(buf[:0], int64(t), 10)
	b = append(b, '|')
	b = append(b, subject...)
	b = append(b, '|')
	b = strconv.AppendUint(b, index, 10)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// raise opens a new finding for subject (the caller fills the evidence and
// then calls touch).
func (d *Detector) raise(index uint64, subject string, f *jasperv1.Finding, atMs int64) {
	st := d.st
	if len(st.open) >= d.cfg.MaxOpenFindings {
		d.evictOldest()
	}
	f.Id = findingID(f.Type, subject, index)
	f.GeoDbVersion = st.geoVersion
	f.State = jasperv1.FindingState_FINDING_STATE_NEW
	f.DetectedAtMs = atMs
	f.UpdatedAtMs = atMs
	f.UpdatedIndex = index
	of := &openFinding{f: f, subject: subject, announced: -1}
	st.open[subject] = of
	st.stats.FindingsNew++
	d.m.finding(f.Type, "new").Inc()
}

// touch records an update of an open finding and reports whether it is
// due for announcement (new, or update_every passed since the last one);
// the caller then completes the evidence and calls announce. Between
// announcements a finding's counters and times are current and its lists
// (ports, classes, fingerprints, sensors) are as of the last announcement.
func (d *Detector) touch(index uint64, of *openFinding, atMs int64) bool {
	f := of.f
	if of.announced >= 0 {
		f.State = jasperv1.FindingState_FINDING_STATE_CONTINUING
	}
	f.UpdatedAtMs = max(f.UpdatedAtMs, atMs)
	f.UpdatedIndex = index
	if d.st.geoVersion != "" {
		f.GeoDbVersion = d.st.geoVersion
	}
	return of.announced < 0 || f.UpdatedAtMs-of.announced >= d.cfg.UpdateEvery.Milliseconds()
}

// announce queues a copy of the finding for the OnFinding subscribers.
func (d *Detector) announce(of *openFinding) {
	of.announced = of.f.UpdatedAtMs
	d.pending = append(d.pending, cloneFinding(of.f))
}

// end closes an open finding and announces it.
func (d *Detector) end(index uint64, of *openFinding, atMs int64, why string) {
	st := d.st
	f := of.f
	f.State = jasperv1.FindingState_FINDING_STATE_ENDED
	f.UpdatedAtMs = max(f.UpdatedAtMs, atMs)
	f.UpdatedIndex = index
	if why != "" {
		f.Summary += "; ended: " + why
	}
	delete(st.open, of.subject)
	st.ended = append(st.ended, f)
	if over := len(st.ended) - d.cfg.MaxEndedFindings; over > 0 {
		st.ended = slices.Delete(st.ended, 0, over)
	}
	st.stats.FindingsEnded++
	d.m.finding(f.Type, "ended").Inc()
	// Free the subject so that new activity opens a new finding.
	var k addrKey
	if len(f.SrcIp) == 4 || len(f.SrcIp) == 16 {
		a, _ := netip.AddrFromSlice(f.SrcIp)
		k = addrKey(a.As16())
	}
	switch f.Type {
	case jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:
		if h := st.hosts.get(k); h != nil && h.finding == f.Id {
			h.ev.fill(f)
			h.finding = ""
			h.ev.reset()
		} else if h == nil && st.hosts.orphans > 0 {
			st.hosts.orphans--
		}
	case jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:
		if v := st.victims.get(k); v != nil && v.finding == f.Id {
			v.ev.fill(f)
			v.finding = ""
			v.ev.reset()
			v.minutes, v.maxMinute = nil, 0
		} else if v == nil && st.victims.orphans > 0 {
			st.victims.orphans--
		}
	}
	d.pending = append(d.pending, cloneFinding(f))
}

// evictOldest ends the open finding updated longest ago (ties: id order).
func (d *Detector) evictOldest() {
	var old *openFinding
	for _, of := range d.st.open {
		if old == nil || of.f.UpdatedAtMs < old.f.UpdatedAtMs ||
			(of.f.UpdatedAtMs == old.f.UpdatedAtMs && of.f.Id < old.f.Id) {
			old = of
		}
	}
	if old != nil {
		d.st.stats.FindingsEvicted++
		d.end(old.f.UpdatedIndex, old, old.f.UpdatedAtMs, "evicted at max_open_findings")
	}
}

func typeName(t jasperv1.FindingType) string {
	return strings.ToLower(strings.TrimPrefix(t.String(), "FINDING_TYPE_"))
}

// OnTick advances event time: it judges the bins whose close time passed
// and ends findings quiet for quiet_period.
func (d *Detector) OnTick(index uint64, now time.Time) {
	d.mu.Lock()
	d.onTick(index, now.UnixMilli())
	d.mu.Unlock()
	d.flush()
}

func (d *Detector) onTick(index uint64, nowMs int64) {
	st := d.st
	if nowMs <= st.nowMs {
		return
	}
	st.nowMs = nowMs
	starts := make([]int64, 0, len(st.bins))
	for s := range st.bins {
		if s*1000+d.binMs+d.cfg.CloseDelay.Milliseconds() <= nowMs {
			starts = append(starts, s)
		}
	}
	slices.Sort(starts)
	for _, s := range starts {
		d.closeBin(index, st.bins[s])
		delete(st.bins, s)
	}
	// Ending and sweeping cost a pass over the open findings and tracked
	// subjects: at most once per 10 s of event time.
	if nowMs-st.lastSweepMs < 10_000 {
		return
	}
	st.lastSweepMs = nowMs
	quiet := d.cfg.QuietPeriod.Milliseconds()
	var ending []*openFinding
	for _, of := range st.open {
		if of.f.LastSeenMs+quiet <= nowMs {
			ending = append(ending, of)
		}
	}
	slices.SortFunc(ending, func(a, b *openFinding) int { return strings.Compare(a.f.Id, b.f.Id) })
	for _, of := range ending {
		d.end(index, of, nowMs, fmt.Sprintf("quiet for %s", d.cfg.QuietPeriod))
	}
	if h, v := st.hosts.orphanFilterStale(), st.victims.orphanFilterStale(); h || v {
		st.countOrphans() // drops the filter bits of orphans gone
	}
	st.hosts.sweep(nowMs - d.cfg.Infected.Window.Milliseconds())
	st.victims.sweep(nowMs - d.cfg.DoS.FlowTimeout.Milliseconds())
	d.m.openFindings.Set(float64(len(st.open)))
	d.m.hosts.Set(float64(st.hosts.Len()))
	d.m.victims.Set(float64(st.victims.Len()))
}

// command is the JSON payload of Apply.
type command struct {
	// Op "end" ends the finding Id (an analyst closes it).
	Op     string `json:"op"`
	ID     string `json:"id"`
	Reason string `json:"reason"`
}

// ErrUnknownFinding: no open finding has that id.
var ErrUnknownFinding = errors.New("unknown finding")

// EndCommand is the payload that ends an open finding through Apply.
func EndCommand(id, reason string) []byte {
	b, _ := json.Marshal(command{Op: "end", ID: id, Reason: reason})
	return b
}

// Apply runs a command proposed for this module: {"op":"end","id":...,
// "reason":...} ends an open finding and returns its final state.
func (d *Detector) Apply(index uint64, payload []byte) (any, error) {
	var c command
	if err := json.Unmarshal(payload, &c); err != nil {
		return nil, fmt.Errorf("detect command: %w", err)
	}
	if c.Op != "end" {
		return nil, fmt.Errorf("detect command: unknown op %q", c.Op)
	}
	d.mu.Lock()
	of := d.st.byID(c.ID)
	if of == nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("end %q: %w", c.ID, ErrUnknownFinding)
	}
	why := "ended by command"
	if c.Reason != "" {
		why += ": " + c.Reason
	}
	d.end(index, of, d.st.nowMs, why)
	out := cloneFinding(of.f)
	d.mu.Unlock()
	d.flush()
	return out, nil
}

// Findings returns copies of the findings that match, open ones and the
// ended ones kept, newest update first (ties: id).
func (d *Detector) Findings(fl Filter) []*jasperv1.Finding {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*jasperv1.Finding
	match := func(f *jasperv1.Finding) bool {
		if len(fl.Types) > 0 && !slices.Contains(fl.Types, f.Type) {
			return false
		}
		if len(fl.States) > 0 && !slices.Contains(fl.States, f.State) {
			return false
		}
		if f.UpdatedAtMs < fl.SinceMs {
			return false
		}
		if fl.Country != "" && f.SrcCountry != fl.Country && f.Country != fl.Country {
			return false
		}
		return true
	}
	for _, of := range d.st.open {
		if match(of.f) {
			out = append(out, of.f)
		}
	}
	for _, f := range d.st.ended {
		if match(f) {
			out = append(out, f)
		}
	}
	slices.SortFunc(out, func(a, b *jasperv1.Finding) int {
		if a.UpdatedAtMs != b.UpdatedAtMs {
			if a.UpdatedAtMs > b.UpdatedAtMs {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Id, b.Id)
	})
	if fl.Limit > 0 && len(out) > fl.Limit {
		out = out[:fl.Limit]
	}
	for i, f := range out {
		out[i] = cloneFinding(f)
	}
	return out
}

// Stats returns the counters.
func (d *Detector) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.st.stats
	s.HostsEvicted, s.VictimsEvicted = d.st.hosts.evicted, d.st.victims.evicted
	s.SeriesEvicted = d.st.ports.evicted + d.st.fps.evicted + d.st.countries.evicted
	return s
}

// Tracked returns how many candidate infected hosts and backscatter
// sources (candidate DoS victims) the detectors hold.
func (d *Detector) Tracked() (hosts, victims int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.st.hosts.Len(), d.st.victims.Len()
}

const snapshotMagic = "jasper-detect-v1"

// Snapshot writes the whole state; equal states give equal bytes.
func (d *Detector) Snapshot(w io.Writer) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	bw := bufio.NewWriterSize(w, 1<<16)
	e := &enc{w: bw}
	st := d.st
	e.s(snapshotMagic)
	e.i(st.nowMs)
	e.i(st.lastSweepMs)
	st.hosts.encode(e)
	st.victims.encode(e)
	starts := make([]int64, 0, len(st.bins))
	for s := range st.bins {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	e.u(uint64(len(starts)))
	for _, s := range starts {
		st.bins[s].encode(e)
	}
	st.ports.encode(e)
	st.fps.encode(e)
	st.countries.encode(e)
	subjects := make([]string, 0, len(st.open))
	for s := range st.open {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	e.u(uint64(len(subjects)))
	mo := proto.MarshalOptions{Deterministic: true}
	for _, s := range subjects {
		of := st.open[s]
		e.s(s)
		e.i(of.announced)
		b, err := mo.Marshal(of.f)
		if err != nil {
			return fmt.Errorf("snapshot finding: %w", err)
		}
		e.bytes(b)
	}
	e.u(uint64(len(st.ended)))
	for _, f := range st.ended {
		b, err := mo.Marshal(f)
		if err != nil {
			return fmt.Errorf("snapshot finding: %w", err)
		}
		e.bytes(b)
	}
	s := st.stats
	for _, v := range []uint64{s.Batches, s.Rows, s.BadRows, s.BogonRows, s.ResearchRows, s.BackscatterRows,
		s.LateRows, s.BinsClosed, s.BinsForced, s.BinSetDropped, s.HostsEvicted, s.VictimsEvicted,
		s.SeriesEvicted, s.FindingsNew, s.FindingsEnded, s.FindingsEvicted} {
		e.u(v)
	}
	e.s(st.geoVersion)
	if e.err != nil {
		return fmt.Errorf("write detect snapshot: %w", e.err)
	}
	return bw.Flush()
}

// Restore replaces the state with a snapshot's; an empty reader resets.
func (d *Detector) Restore(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<16)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		d.mu.Lock()
		d.st = newState()
		clear(d.recent[:])
		d.mu.Unlock()
		return nil
	}
	st, err := decodeState(br)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.st = st
	d.epoch = 0
	clear(d.recent[:])
	for _, b := range st.bins {
		d.binGen++
		b.gen = d.binGen
	}
	d.mu.Unlock()
	return nil
}

func decodeState(r *bufio.Reader) (*state, error) {
	dc := &dec{r: r}
	if m := dc.s(); m != snapshotMagic && dc.err == nil {
		return nil, fmt.Errorf("%w: magic %q", errSnapshot, m)
	}
	st := newState()
	st.nowMs = dc.i()
	st.lastSweepMs = dc.i()
	st.hosts.decode(dc)
	st.victims.decode(dc)
	for n, i := dc.n(maxLen), 0; i < n && dc.err == nil; i++ {
		b := &openBin{}
		b.decode(dc)
		st.bins[b.start] = b
	}
	st.ports.decode(dc)
	st.fps.decode(dc)
	st.countries.decode(dc)
	for n, i := dc.n(maxLen), 0; i < n && dc.err == nil; i++ {
		of := &openFinding{subject: dc.s(), announced: dc.i()}
		of.f = &jasperv1.Finding{}
		if b := dc.bytes(); dc.err == nil {
			if err := proto.Unmarshal(b, of.f); err != nil {
				dc.fail(err)
			}
		}
		st.open[of.subject] = of
	}
	for n, i := dc.n(maxLen), 0; i < n && dc.err == nil; i++ {
		f := &jasperv1.Finding{}
		if b := dc.bytes(); dc.err == nil {
			if err := proto.Unmarshal(b, f); err != nil {
				dc.fail(err)
			}
		}
		st.ended = append(st.ended, f)
	}
	s := &st.stats
	for _, p := range []*uint64{&s.Batches, &s.Rows, &s.BadRows, &s.BogonRows, &s.ResearchRows, &s.BackscatterRows,
		&s.LateRows, &s.BinsClosed, &s.BinsForced, &s.BinSetDropped, &s.HostsEvicted, &s.VictimsEvicted,
		&s.SeriesEvicted, &s.FindingsNew, &s.FindingsEnded, &s.FindingsEvicted} {
		*p = dc.u()
	}
	st.geoVersion = dc.s()
	if dc.err != nil {
		return nil, dc.err
	}
	st.countOrphans()
	return st, nil
}

// countOrphans sets the hosts' and victims' orphans: the open findings of
// a subject that is not held (count and filter).
func (st *state) countOrphans() {
	for _, c := range []*lru{&st.hosts, &st.victims} {
		c.orphans, c.orphanSet = 0, 0
		if c.orphanBits != nil {
			clear(c.orphanBits[:])
		}
	}
	for _, of := range st.open {
		f := of.f
		var c *lru
		switch f.Type {
		case jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:
			c = &st.hosts
		case jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:
			c = &st.victims
		default:
			continue
		}
		var k addrKey
		if a, ok := netip.AddrFromSlice(f.SrcIp); ok {
			k = addrKey(a.Unmap().As16())
		}
		if c.get(k) == nil {
			c.orphan(&k)
		}
	}
}
