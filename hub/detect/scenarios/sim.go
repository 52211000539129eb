package scenarios

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/packet"
	"github.com/jasperfed/jasper/sensor/summary"
)

// SimConfig is how the sensors and the hub are simulated.
type SimConfig struct {
	// Bin, EarlyFlush and Grace configure each sensor's real aggregator
	// (sensor/summary); the clock is the packets' event time, checked
	// every Check as a live sensor does.
	Bin        time.Duration
	EarlyFlush time.Duration
	Grace      time.Duration
	Check      time.Duration
	// CommitDelay is the assumed time from a sealed batch to its apply on
	// the hub (uplink, raft commit). It is an assumption of the
	// simulation, not a measurement.
	CommitDelay time.Duration
	// Tick is the leader's tick interval.
	Tick time.Duration
}

// DefaultSimConfig: 60 s bins, 2 s early flush, 5 s grace, 100 ms checks,
// 250 ms commit delay, 1 s ticks.
func DefaultSimConfig() SimConfig {
	return SimConfig{Bin: time.Minute, EarlyFlush: 2 * time.Second, Grace: 5 * time.Second,
		Check: 100 * time.Millisecond, CommitDelay: 250 * time.Millisecond, Tick: time.Second}
}

// Sink receives the simulated hub's log: batches as they are applied and
// ticks, in time order.
type Sink interface {
	Batch(at time.Time, cb *jasperv1.CommittedBatch)
	Tick(at time.Time)
}

type pendingBatch struct {
	at time.Time
	cb *jasperv1.CommittedBatch
}

// sim runs one aggregator per sensor on a simulated clock.
type sim struct {
	cfg       SimConfig
	sensors   []string
	aggs      []*summary.Aggregator
	enr       *enrich.Enricher
	sink      Sink
	clock     time.Time
	nextCheck time.Time
	nextTick  time.Time
	lastFlush time.Time
	pending   []pendingBatch
	seq       []uint64
	started   bool
	lastPkt   time.Time
	err       error
	batches   int
}

func newSim(cfg SimConfig, sensors []string, darknet map[string][]netip.Prefix, enr *enrich.Enricher, sink Sink) (*sim, error) {
	s := &sim{cfg: cfg, sensors: sensors, enr: enr, sink: sink, seq: make([]uint64, len(sensors))}
	for i, id := range sensors {
		sc := summary.DefaultConfig()
		sc.Bin, sc.EarlyFlush, sc.Grace, sc.Darknet = cfg.Bin, cfg.EarlyFlush, cfg.Grace, darknet[id]
		a, err := summary.NewAggregator(sc, func(b *jasperv1.Batch) error {
			s.emit(i, b)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("sensor %s: %w", id, err)
		}
		s.aggs = append(s.aggs, a)
	}
	return s, nil
}

func (s *sim) emit(i int, b *jasperv1.Batch) {
	b = proto.Clone(b).(*jasperv1.Batch)
	s.seq[i]++
	b.Sequence = s.seq[i]
	b.SealedAtMs = s.clock.UnixMilli()
	cb := &jasperv1.CommittedBatch{SensorId: s.sensors[i], Batch: b, Enrichment: s.enr.Enrich(b), ReceivedAtMs: s.clock.UnixMilli()}
	s.pending = append(s.pending, pendingBatch{at: s.clock.Add(s.cfg.CommitDelay), cb: cb})
	s.batches++
}

// advance runs the clock to t: checks (seal, early flush), ticks and
// deliveries, in time order.
func (s *sim) advance(t time.Time) {
	if !s.started {
		s.started = true
		s.clock = t
		s.nextCheck, s.nextTick, s.lastFlush = t, t.Truncate(s.cfg.Tick).Add(s.cfg.Tick), t
	}
	for {
		// A long silence (captures days apart): once everything is sealed
		// and delivered, jump the clock instead of ticking through it.
		if len(s.pending) == 0 && s.nextCheck.Sub(s.lastPkt) > gapJump && t.Sub(s.nextCheck) > gapJump {
			j := t.Add(-time.Second).Truncate(s.cfg.Tick)
			s.nextCheck, s.nextTick, s.clock = j, j, j
		}
		next := t
		kind := 0
		if s.nextCheck.Before(next) || s.nextCheck.Equal(next) {
			next, kind = s.nextCheck, 1
		}
		if s.nextTick.Before(next) {
			next, kind = s.nextTick, 2
		}
		if len(s.pending) > 0 && s.pending[0].at.Before(next) {
			next, kind = s.pending[0].at, 3
		}
		if next.After(s.clock) {
			s.clock = next
		}
		switch kind {
		case 0:
			return
		case 1:
			s.nextCheck = s.nextCheck.Add(s.cfg.Check)
			for _, a := range s.aggs {
				if err := a.SealBefore(s.clock.Add(-s.cfg.Grace)); err != nil && s.err == nil {
					s.err = err
				}
			}
			if s.cfg.EarlyFlush > 0 && s.clock.Sub(s.lastFlush) >= s.cfg.EarlyFlush {
				s.lastFlush = s.clock
				for _, a := range s.aggs {
					if err := a.EarlyFlush(); err != nil && s.err == nil {
						s.err = err
					}
				}
			}
		case 2:
			s.nextTick = s.nextTick.Add(s.cfg.Tick)
			s.sink.Tick(s.clock)
		case 3:
			p := s.pending[0]
			s.pending = s.pending[1:]
			s.sink.Batch(p.at, p.cb)
		}
	}
}

// gapJump is the silence after which the clock jumps ahead.
const gapJump = 10 * time.Minute

// packet feeds one frame of sensor i captured at ts.
func (s *sim) packet(i int, ts time.Time, r packet.Result, info *packet.Info) {
	s.advance(ts)
	if ts.After(s.lastPkt) {
		s.lastPkt = ts
	}
	if err := s.aggs[i].Add(ts, r, info); err != nil && s.err == nil {
		s.err = err
	}
}

// finish flushes the sensors, then runs the clock on by extra so that the
// last bins are judged and quiet findings end.
func (s *sim) finish(extra time.Duration) error {
	if !s.started {
		return s.err
	}
	for _, a := range s.aggs {
		if err := a.Flush(); err != nil && s.err == nil {
			s.err = err
		}
	}
	slices.SortStableFunc(s.pending, func(a, b pendingBatch) int { return a.at.Compare(b.at) })
	s.advance(s.clock.Add(extra))
	return s.err
}
