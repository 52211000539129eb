package detect

import (
	"encoding/binary"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// maxOpenBins bounds the bins waiting to be judged; a batch that would
// open one more forces the oldest to be judged (Stats.BinsForced).
const maxOpenBins = 16

// binSet is the distinct sources of one subject (port, fingerprint,
// country) in one bin; each source maps to the index of its (country,
// sensor) origin in the bin's origin table.
type binSet struct {
	srcs map[uint64]uint32
}

func newBinSet() *binSet { return &binSet{srcs: map[uint64]uint32{}} }

// origin is where a source was seen from and where it is registered.
type origin struct{ country, sensor string }

// openBin gathers one bin for the surge detectors until it is judged.
type openBin struct {
	start int64 // Unix s
	// gen names this bin among all bins the detector opened or restored
	// (transient): a subject remembers the (gen, port) and (gen, country)
	// it was last counted in, and skips the set lookups when it repeats.
	gen       uint64
	ports     map[uint32]*binSet
	fps       map[string]*binSet
	cc        map[string]*binSet
	size      int // entries over all sets
	origins   []origin
	originIdx map[origin]uint32
	// last is a one-entry cache of origin lookups (transient).
	last    origin
	lastIdx uint32
	lastOK  bool
	// lastPort/lastSet cache the port set of the previous row (transient;
	// sets live as long as the bin).
	lastPort uint32
	lastSet  *binSet
}

func newOpenBin(start int64) *openBin {
	return &openBin{start: start, ports: map[uint32]*binSet{}, fps: map[string]*binSet{}, cc: map[string]*binSet{}, originIdx: map[origin]uint32{}}
}

// originOf interns (country, sensor).
func (b *openBin) originOf(country, sensor string) uint32 {
	if b.lastOK && b.last.country == country && b.last.sensor == sensor {
		return b.lastIdx
	}
	o := origin{country, sensor}
	i, ok := b.originIdx[o]
	if !ok {
		i = uint32(len(b.origins))
		b.origins = append(b.origins, o)
		b.originIdx[o] = i
	}
	b.last, b.lastIdx, b.lastOK = o, i, true
	return i
}

// counts returns the distinct sources of a set per country and per sensor.
func (b *openBin) counts(s *binSet) (countries, sensors map[string]uint32) {
	countries, sensors = map[string]uint32{}, map[string]uint32{}
	for _, i := range s.srcs {
		if int(i) < len(b.origins) {
			countries[b.origins[i].country]++
			sensors[b.origins[i].sensor]++
		}
	}
	return countries, sensors
}

// bin returns the open bin starting at start, opening it if needed.
func (d *Detector) bin(index uint64, start int64) *openBin {
	st := d.st
	if b := st.bins[start]; b != nil {
		return b
	}
	for len(st.bins) >= maxOpenBins {
		oldest := int64(0)
		first := true
		for s := range st.bins {
			if first || s < oldest {
				oldest, first = s, false
			}
		}
		if oldest > start {
			// The new bin is older than every open one: judge it never.
			st.stats.BinsForced++
			return nil
		}
		d.closeBin(index, st.bins[oldest])
		delete(st.bins, oldest)
		st.stats.BinsForced++
	}
	b := newOpenBin(start)
	d.binGen++
	b.gen = d.binGen
	st.bins[start] = b
	return b
}

// keyHash mixes a 16-byte address into 64 bits (splitmix64 finaliser on
// both halves): a fixed function, so replicas agree.
func keyHash(k addrKey) uint64 {
	mix := func(z uint64) uint64 {
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		return z ^ (z >> 31)
	}
	return mix(binary.LittleEndian.Uint64(k[:8])^0x9e3779b97f4a7c15) ^ mix(binary.LittleEndian.Uint64(k[8:]))
}

func portKey(proto uint8, port uint32) uint32 { return uint32(proto)<<16 | port&0xffff }

func portName(k uint32) string {
	switch k >> 16 {
	case 6:
		return "tcp/" + strconv.Itoa(int(k&0xffff))
	case 17:
		return "udp/" + strconv.Itoa(int(k&0xffff))
	}
	return fmt.Sprintf("p%d/%d", k>>16, k&0xffff)
}

func parsePortName(s string) (proto, port uint32) {
	p, n, _ := strings.Cut(s, "/")
	v, _ := strconv.Atoi(n)
	switch p {
	case "tcp":
		return 6, uint32(v)
	case "udp":
		return 17, uint32(v)
	}
	pv, _ := strconv.Atoi(strings.TrimPrefix(p, "p"))
	return uint32(pv), uint32(v)
}

// addRow counts a scan-like row's source for its port and fingerprints;
// h is the row's tracked host, if any (its cache of the set it was last
// counted in saves the lookups of a repeated (source, port)).
func (b *openBin) addRow(d *Detector, r *row, sensor string, h *subject) {
	var src uint64
	if r.portKnown {
		k := portKey(r.proto, r.port)
		if h == nil || h.setGen != b.gen || h.setPort != k {
			s := b.lastSet
			if s == nil || b.lastPort != k {
				if s = b.ports[k]; s == nil {
					// Sized like the port's set of the last bin judged
					// (a transient hint: layout only).
					s = &binSet{srcs: make(map[uint64]uint32, d.portHint[k])}
					b.ports[k] = s
				}
				b.lastPort, b.lastSet = k, s
			}
			src = keyHash(r.key)
			if b.addTo(s, src, r.country, sensor, d) && h != nil {
				h.setGen, h.setPort = b.gen, k
			}
		}
	}
	if len(r.fps) > 0 && src == 0 {
		src = keyHash(r.key)
	}
	for _, fp := range r.fps {
		b.add(&b.fps, fp.name, src, r.country, sensor, d.cfg, &d.st.stats)
	}
}

// add counts src in the set of key and reports whether it is in the set
// (false: dropped at max_bin_sources).
func (b *openBin) add(m *map[string]*binSet, key string, src uint64, country, sensor string, cfg Config, stats *Stats) bool {
	s := (*m)[key]
	if s == nil {
		s = newBinSet()
		(*m)[key] = s
	}
	if _, ok := s.srcs[src]; ok {
		return true
	}
	if b.size >= cfg.MaxBinSources {
		stats.BinSetDropped++
		return false
	}
	b.size++
	s.srcs[src] = b.originOf(country, sensor)
	return true
}

// addTo counts src in s and reports whether it is in the set (false:
// dropped at max_bin_sources).
func (b *openBin) addTo(s *binSet, src uint64, country, sensor string, d *Detector) bool {
	if _, ok := s.srcs[src]; ok {
		return true
	}
	if b.size >= d.cfg.MaxBinSources {
		d.st.stats.BinSetDropped++
		return false
	}
	b.size++
	s.srcs[src] = b.originOf(country, sensor)
	return true
}

// closeBin judges a bin: every series (with sources in the bin, or with
// a baseline) observes its value, in key order.
func (d *Detector) closeBin(index uint64, b *openBin) {
	st := d.st
	st.stats.BinsClosed++
	d.m.binsClosed.Inc()
	binEnd := b.start*1000 + d.binMs
	ports := make(map[string]*binSet, len(b.ports))
	if d.portHint == nil || len(d.portHint) > 4*d.cfg.PortSurge.MaxSeries {
		d.portHint = map[uint32]int{}
	}
	for k, s := range b.ports {
		ports[portName(k)] = s
		d.portHint[k] = len(s.srcs)
	}
	warm := st.stats.BinsClosed > uint64(d.cfg.PortSurge.Warmup)
	d.judgeSeries(index, b, &st.ports, ports, &d.cfg.PortSurge, binEnd, func(key string, s *series, x float64, nBefore int64, levelBefore float64, v verdict, set *binSet) {
		proto, port := parsePortName(key)
		np := d.cfg.NewPort
		if np.Enabled && warm && x >= np.MinSources && (nBefore < int64(d.cfg.PortSurge.Warmup) || levelBefore < np.MaxLevel) {
			d.surgeFinding(index, jasperv1.FindingType_FINDING_TYPE_NEW_PORT, "np|"+key, b, binEnd, v, set, func(f *jasperv1.Finding) {
				f.Protocol, f.Port = proto, port
				f.Summary = fmt.Sprintf("%s suddenly gained %.0f distinct sources in the bin of %s (baseline %.1f)", key, x, binTime(b.start), v.expected)
			})
		}
		if v.fire && d.cfg.PortSurge.Enabled {
			d.surgeFinding(index, jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, "ps|"+key, b, binEnd, v, set, func(f *jasperv1.Finding) {
				f.Protocol, f.Port = proto, port
				f.Summary = fmt.Sprintf("%s: %.0f distinct sources in the bin of %s against a baseline of %.1f (score %.1f)", key, x, binTime(b.start), v.expected, v.score)
			})
		}
	})
	d.judgeSeries(index, b, &st.fps, b.fps, &d.cfg.Fingerprint, binEnd, func(key string, s *series, x float64, _ int64, _ float64, v verdict, set *binSet) {
		if v.fire && d.cfg.Fingerprint.Enabled {
			d.surgeFinding(index, jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE, "fs|"+key, b, binEnd, v, set, func(f *jasperv1.Finding) {
				f.Fingerprint = key
				f.Summary = fmt.Sprintf("fingerprint %s: %.0f distinct sources in the bin of %s against a baseline of %.1f (score %.1f)", key, x, binTime(b.start), v.expected, v.score)
			})
		}
	})
	d.judgeSeries(index, b, &st.countries, b.cc, &d.cfg.CountrySurge, binEnd, func(key string, s *series, x float64, _ int64, _ float64, v verdict, set *binSet) {
		if v.fire && d.cfg.CountrySurge.Enabled {
			d.surgeFinding(index, jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE, "cs|"+key, b, binEnd, v, set, func(f *jasperv1.Finding) {
				f.Country = key
				f.Summary = fmt.Sprintf("%s: %.0f infected hosts active in the bin of %s against a baseline of %.1f (score %.1f)", key, x, binTime(b.start), v.expected, v.score)
			})
		}
	})
	st.ports.trim(d.cfg.PortSurge.MaxSeries)
	st.fps.trim(d.cfg.Fingerprint.MaxSeries)
	st.countries.trim(d.cfg.CountrySurge.MaxSeries)
}

func binTime(s int64) string { return time.Unix(s, 0).UTC().Format("2006-01-02 15:04Z") }

type judgeFunc func(key string, s *series, x float64, nBefore int64, levelBefore float64, v verdict, set *binSet)

func (d *Detector) judgeSeries(index uint64, b *openBin, ss *seriesSet, sets map[string]*binSet, cfg *SurgeConfig, binEnd int64, judge judgeFunc) {
	keys := make([]string, 0, len(sets)+len(ss.m))
	for k := range sets {
		keys = append(keys, k)
	}
	for k := range ss.m {
		if _, ok := sets[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		set := sets[k]
		x := 0.0
		if set != nil {
			x = float64(len(set.srcs))
		}
		s := ss.m[k]
		if s == nil {
			if x == 0 {
				continue
			}
			s = ss.get(k)
		}
		nBefore, levelBefore := s.n, s.level
		v := s.observe(cfg, b.start, x)
		judge(k, s, x, nBefore, levelBefore, v, set)
	}
}

// surgeFinding raises or updates the open finding of a surge subject.
func (d *Detector) surgeFinding(index uint64, t jasperv1.FindingType, subject string, b *openBin, binEnd int64, v verdict, set *binSet, fill func(*jasperv1.Finding)) {
	st := d.st
	of := st.open[subject]
	at := max(st.nowMs, binEnd)
	if of == nil {
		f := &jasperv1.Finding{Type: t, FirstSeenMs: b.start * 1000}
		d.raise(index, subject, f, at)
		of = st.open[subject]
	}
	f := of.f
	fill(f)
	f.LastSeenMs = binEnd
	f.Baseline, f.Observed, f.Score = v.expected, v.observed, v.score
	if set != nil {
		countries, sensors := b.counts(set)
		f.TopCountries = topKeys(countries, 5)
		f.Sensors = topKeys(sensors, maxSensorsKept)
		slices.Sort(f.Sensors)
	}
	if d.touch(index, of, at) {
		d.announce(of)
	}
}

// topKeys returns the n keys with the largest counts (ties: key order);
// the empty key (unknown country) is left out.
func topKeys(m map[string]uint32, n int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		if k != "" {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b string) int {
		if m[a] != m[b] {
			if m[a] > m[b] {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	if len(keys) > n {
		keys = keys[:n]
	}
	return keys
}

func encodeSet(e *enc, s *binSet) {
	srcs := make([]uint64, 0, len(s.srcs))
	for k := range s.srcs {
		srcs = append(srcs, k)
	}
	slices.Sort(srcs)
	e.u(uint64(len(srcs)))
	var buf [8]byte
	for _, k := range srcs {
		binary.LittleEndian.PutUint64(buf[:], k)
		e.write(buf[:])
		e.u(uint64(s.srcs[k]))
	}
}

func decodeSet(d *dec) *binSet {
	s := newBinSet()
	n := d.n(maxLen)
	var buf [8]byte
	for i := 0; i < n && d.err == nil; i++ {
		if _, err := io.ReadFull(d.r, buf[:]); err != nil {
			d.fail(err)
			break
		}
		s.srcs[binary.LittleEndian.Uint64(buf[:])] = uint32(d.u())
	}
	return s
}

func (b *openBin) encode(e *enc) {
	e.i(b.start)
	e.u(uint64(b.size))
	e.u(uint64(len(b.origins)))
	for _, o := range b.origins {
		e.s(o.country)
		e.s(o.sensor)
	}
	pk := make([]uint32, 0, len(b.ports))
	for k := range b.ports {
		pk = append(pk, k)
	}
	slices.Sort(pk)
	e.u(uint64(len(pk)))
	for _, k := range pk {
		e.u(uint64(k))
		encodeSet(e, b.ports[k])
	}
	for _, m := range []map[string]*binSet{b.fps, b.cc} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		e.u(uint64(len(keys)))
		for _, k := range keys {
			e.s(k)
			encodeSet(e, m[k])
		}
	}
}

func (b *openBin) decode(d *dec) {
	*b = *newOpenBin(d.i())
	b.size = d.n(maxLen)
	for n, i := d.n(maxLen), 0; i < n && d.err == nil; i++ {
		o := origin{d.s(), d.s()}
		b.originIdx[o] = uint32(len(b.origins))
		b.origins = append(b.origins, o)
	}
	for n, i := d.n(maxLen), 0; i < n && d.err == nil; i++ {
		k := uint32(d.u())
		b.ports[k] = decodeSet(d)
	}
	for _, m := range []map[string]*binSet{b.fps, b.cc} {
		for n, i := d.n(maxLen), 0; i < n && d.err == nil; i++ {
			k := d.s()
			m[k] = decodeSet(d)
		}
	}
}
