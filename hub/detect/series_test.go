package detect

import (
	"math"
	"math/rand/v2"
	"testing"
)

// poisson draws a Poisson variate (Knuth for small means, normal
// approximation above 50).
func poisson(rng *rand.Rand, mean float64) float64 {
	if mean <= 0 {
		return 0
	}
	if mean > 50 {
		return math.Max(0, math.Round(mean+math.Sqrt(mean)*rng.NormFloat64()))
	}
	l, k, p := math.Exp(-mean), 0.0, 1.0
	for {
		p *= rng.Float64()
		if p <= l {
			return k
		}
		k++
	}
}

// rhythm is a benign darknet rhythm: a daily sine (peak 15h UTC) of
// relative amplitude amp and weekends at weekend times the weekday level.
func rhythm(binStart int64, base, amp, weekend float64) float64 {
	h := float64(binStart%86400) / 3600
	m := base * (1 + amp*math.Sin(2*math.Pi*(h-9)/24))
	if _, how := slots(binStart); how >= 120 { // Saturday, Sunday
		m *= weekend
	}
	return m
}

type seriesCase struct {
	name  string
	mean  func(bin int) float64 // expected count of bin i
	onset int                   // first anomalous bin, -1: none
	// want the first firing bin within [onset, onset+maxDelay].
	maxDelay int
}

const binSec = 60

func runSeries(t *testing.T, c seriesCase, bins int, seed uint64) (first int, fires int) {
	t.Helper()
	cfg := DefaultConfig().PortSurge
	rng := rand.New(rand.NewPCG(seed, 7))
	var s series
	first = -1
	for i := range bins {
		start := t0.Unix() + int64(i*binSec)
		x := poisson(rng, c.mean(i))
		v := s.observe(&cfg, start, x)
		if v.fire {
			fires++
			if first < 0 {
				first = i
			}
		}
	}
	return first, fires
}

func TestSeriesGenerated(t *testing.T) {
	day := 1440
	start := func(i int) int64 { return t0.Unix() + int64(i*binSec) }
	cases := []seriesCase{
		{"steady", func(i int) float64 { return 40 }, -1, 0},
		{"daily rhythm", func(i int) float64 { return rhythm(start(i), 40, 0.6, 0.7) }, -1, 0},
		{"slow drift (x2 over 10 days)", func(i int) float64 { return 30 * (1 + float64(i)/float64(10*day)) }, -1, 0},
		{"sharp onset (x3 on day 3 at 14h)", func(i int) float64 {
			m := rhythm(start(i), 40, 0.6, 0.7)
			if i >= 9*day+14*60 {
				m *= 3
			}
			return m
		}, 9*day + 14*60, 0},
		{"ramp onset (+2 sources a bin)", func(i int) float64 {
			m := rhythm(start(i), 40, 0.6, 0.7)
			if o := 9*day + 3*60; i >= o {
				m += float64(2 * (i - o + 1))
			}
			return m
		}, 9*day + 3*60, 20},
		{"small port onset (2 -> 25)", func(i int) float64 {
			if i >= 10*day+600 {
				return 25
			}
			return 2
		}, 10*day + 600, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			first, fires := runSeries(t, c, 12*day, 1)
			if c.onset < 0 {
				if fires != 0 {
					t.Fatalf("%d false alarms, first at bin %d", fires, first)
				}
				return
			}
			if first < c.onset || first > c.onset+c.maxDelay {
				t.Fatalf("first alarm at bin %d, want within [%d, %d]", first, c.onset, c.onset+c.maxDelay)
			}
			t.Logf("onset bin %d, detected at bin %d (delay %d bins)", c.onset, first, first-c.onset)
		})
	}
}

// TestSeriesNoFalseAlarmOverMonth: pure baseline noise (Poisson around a
// daily/weekly rhythm) for 31 days at several levels, fixed seeds.
func TestSeriesNoFalseAlarmOverMonth(t *testing.T) {
	month := 31 * 1440
	for _, base := range []float64{0.5, 3, 15, 60, 400} {
		for seed := uint64(1); seed <= 3; seed++ {
			c := seriesCase{mean: func(i int) float64 { return rhythm(t0.Unix()+int64(i*binSec), base, 0.5, 0.75) }, onset: -1}
			if first, fires := runSeries(t, c, month, seed); fires != 0 {
				t.Errorf("base %v seed %d: %d false alarms, first at bin %d (day %.1f)", base, seed, fires, first, float64(first)/1440)
			}
		}
	}
}

func TestSlots(t *testing.T) {
	hod, how := slots(t0.Unix()) // Monday 00:00
	if hod != 0 || how != 0 {
		t.Errorf("Monday 00h: %d %d", hod, how)
	}
	hod, how = slots(t0.Unix() + 6*86400 + 23*3600) // Sunday 23h
	if hod != 23 || how != 167 {
		t.Errorf("Sunday 23h: %d %d", hod, how)
	}
}
