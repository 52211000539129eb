package detect

import (
	"math"
	"slices"
	"strings"
)

// series is the baseline of one per-bin count (distinct sources of a
// port, of a fingerprint; infected hosts of a country): an additive
// Holt-Winters model (level + hour-of-day term + hour-of-week term), a
// robust spread (mean absolute residual, residuals winsorised at 5 noise
// scales) and a one-sided CUSUM on the scores.
//
// Floating-point updates write every product through an explicit
// float64() conversion, which the Go spec says rounds and so forbids fused
// multiply-add: replicas on different CPUs compute the same bits.
type series struct {
	key        string
	n          int64 // bins observed
	level      float64
	day        [24]float64
	week       [168]float64
	spread     float64
	cusum      float64
	lastActive int64 // last bin start (Unix s) with a non-zero value
	alarm      bool  // the last bin fired
}

// verdict is one bin's judgement of a series.
type verdict struct {
	expected, observed, score, z float64
	fire                         bool
}

// slots returns the hour-of-day and hour-of-week slots of a bin start
// (Unix seconds, UTC; 1970-01-01 was a Thursday, slot 0 is Monday 00h).
func slots(binStart int64) (int, int) {
	h := binStart / 3600
	hod := int(h % 24)
	how := int((h + 72) % 168) // +72 h: Thursday 00h -> slot 72 from Monday
	return hod, how
}

// observe judges value x for the bin and then learns from it.
func (s *series) observe(cfg *SurgeConfig, binStart int64, x float64) verdict {
	hod, how := slots(binStart)
	if s.n == 0 {
		s.level = x
	}
	exp := s.level + s.day[hod] + s.week[how]
	expC := math.Max(exp, 0)
	r := x - expC
	scale := math.Max(math.Max(float64(1.2533*s.spread), math.Sqrt(expC+1)), float64(cfg.RelFloor*expC))
	z := r / scale
	v := verdict{expected: expC, observed: x, z: z}
	if s.n >= int64(cfg.Warmup) {
		s.cusum = math.Max(0, float64(s.cusum+z)-cfg.CUSUMK)
		v.score = math.Max(z, s.cusum)
		if (z >= cfg.ZThreshold || s.cusum >= cfg.CUSUMH) && x >= cfg.MinObserved && r >= cfg.MinIncrease {
			v.fire = true
		}
	}
	// Learn, slowly while the series is in alarm so that a surge does not
	// become its own baseline at once (a lasting new level is learned in
	// about 1/(alpha*0.1) bins).
	w := 1.0
	if v.fire {
		w = 0.1
		s.cusum = 0
	}
	s.alarm = v.fire
	a, gd, gw, b := float64(cfg.Alpha*w), float64(cfg.GammaDay*w), float64(cfg.GammaWeek*w), float64(cfg.Beta*w)
	s.level += float64(a * (x - s.day[hod] - s.week[how] - s.level))
	s.day[hod] += float64(gd * (x - s.level - s.week[how] - s.day[hod]))
	s.week[how] += float64(gw * (x - s.level - s.day[hod] - s.week[how]))
	s.spread += float64(b * (math.Min(math.Abs(r), float64(5*scale)) - s.spread))
	s.n++
	if x > 0 {
		s.lastActive = binStart
	}
	return v
}

func (s *series) encode(e *enc) {
	e.s(s.key)
	e.i(s.n)
	e.f(s.level)
	for _, v := range s.day {
		e.f(v)
	}
	for _, v := range s.week {
		e.f(v)
	}
	e.f(s.spread)
	e.f(s.cusum)
	e.i(s.lastActive)
	e.b(s.alarm)
}

func (s *series) decode(d *dec) {
	s.key = d.s()
	s.n = d.i()
	s.level = d.f()
	for i := range s.day {
		s.day[i] = d.f()
	}
	for i := range s.week {
		s.week[i] = d.f()
	}
	s.spread = d.f()
	s.cusum = d.f()
	s.lastActive = d.i()
	s.alarm = d.b()
}

// seriesSet holds the series of one detector, capped.
type seriesSet struct {
	m       map[string]*series
	evicted uint64
}

func newSeriesSet() seriesSet { return seriesSet{m: map[string]*series{}} }

func (ss *seriesSet) get(key string) *series {
	s := ss.m[key]
	if s == nil {
		s = &series{key: key}
		ss.m[key] = s
	}
	return s
}

// trim drops the series beyond max: lowest level first, then least
// recently active, then key order.
func (ss *seriesSet) trim(max int) {
	if len(ss.m) <= max {
		return
	}
	all := ss.sorted()
	slices.SortFunc(all, func(a, b *series) int {
		switch {
		case a.level != b.level:
			if a.level < b.level {
				return -1
			}
			return 1
		case a.lastActive != b.lastActive:
			if a.lastActive < b.lastActive {
				return -1
			}
			return 1
		}
		return strings.Compare(a.key, b.key)
	})
	for _, s := range all[:len(all)-max] {
		delete(ss.m, s.key)
		ss.evicted++
	}
}

func (ss *seriesSet) sorted() []*series {
	out := make([]*series, 0, len(ss.m))
	for _, s := range ss.m {
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b *series) int { return strings.Compare(a.key, b.key) })
	return out
}

func (ss *seriesSet) encode(e *enc) {
	e.u(ss.evicted)
	all := ss.sorted()
	e.u(uint64(len(all)))
	for _, s := range all {
		s.encode(e)
	}
}

func (ss *seriesSet) decode(d *dec) {
	*ss = newSeriesSet()
	ss.evicted = d.u()
	n := d.n(maxLen)
	for i := 0; i < n && d.err == nil; i++ {
		s := &series{}
		s.decode(d)
		ss.m[s.key] = s
	}
}
