package detect

import (
	"net/netip"
	"sort"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// r is a test row.
type r struct {
	src           string
	proto         uint32
	port          uint32
	icmpType      uint32
	class         jasperv1.TrafficClass
	packets       uint64
	dsts          uint32
	first, last   uint32 // ms after bin start
	fps           map[string]uint64
	overflow      bool
	distinctPorts uint32
}

type geo struct {
	cc    string
	asn   uint32
	label jasperv1.SourceLabel
}

// logFeed builds committed batches and feeds them with increasing raft
// indexes, like the FSM.
type logFeed struct {
	t     testing.TB
	index uint64
	geo   map[string]geo
	mods  []*Detector
	found []*jasperv1.Finding
}

func newFeed(t testing.TB, mods ...*Detector) *logFeed {
	f := &logFeed{t: t, geo: map[string]geo{}, mods: mods}
	if len(mods) > 0 {
		mods[0].OnFinding(func(x *jasperv1.Finding) { f.found = append(f.found, x) })
	}
	return f
}

func (f *logFeed) batch(sensor string, binStart int64, rows ...r) *jasperv1.CommittedBatch {
	rw := &jasperv1.Rows{}
	en := &jasperv1.Enrichment{GeoDbVersion: "2026-06-17"}
	fpNames := map[string]bool{}
	for _, x := range rows {
		for n := range x.fps {
			fpNames[n] = true
		}
	}
	var names []string
	for n := range fpNames {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		rw.Fingerprints = append(rw.Fingerprints, &jasperv1.FingerprintColumn{Name: n})
	}
	for _, x := range rows {
		a := netip.MustParseAddr(x.src)
		rw.SrcIp = append(rw.SrcIp, a.AsSlice())
		if x.proto == 0 {
			x.proto = 6
		}
		if x.class == 0 {
			x.class = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
		}
		if x.packets == 0 {
			x.packets = 1
		}
		if x.dsts == 0 {
			x.dsts = 1
		}
		if x.last < x.first {
			x.last = x.first
		}
		dp := x.distinctPorts
		if dp == 0 {
			dp = 1
		}
		rw.Protocol = append(rw.Protocol, x.proto)
		rw.DstPort = append(rw.DstPort, x.port)
		rw.IcmpType = append(rw.IcmpType, x.icmpType)
		rw.IcmpCode = append(rw.IcmpCode, 0)
		rw.Class = append(rw.Class, x.class)
		rw.Packets = append(rw.Packets, x.packets)
		rw.Bytes = append(rw.Bytes, x.packets*60)
		rw.DstIps = append(rw.DstIps, x.dsts)
		rw.FirstSeenMs = append(rw.FirstSeenMs, x.first)
		rw.LastSeenMs = append(rw.LastSeenMs, x.last)
		rw.TtlMin = append(rw.TtlMin, 50)
		rw.TtlMax = append(rw.TtlMax, 60)
		rw.DistinctPorts = append(rw.DistinctPorts, dp)
		rw.Overflow = append(rw.Overflow, x.overflow)
		rw.Fragments = append(rw.Fragments, 0)
		for _, c := range rw.Fingerprints {
			c.Packets = append(c.Packets, x.fps[c.Name])
		}
		g, ok := f.geo[x.src]
		if !ok {
			g = geo{cc: "JP", asn: 64500, label: jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE}
			if enrich.IsBogon(a) {
				g = geo{label: jasperv1.SourceLabel_SOURCE_LABEL_BOGON}
			}
		}
		en.SrcCountry = append(en.SrcCountry, g.cc)
		en.SrcAsn = append(en.SrcAsn, g.asn)
		en.SrcLabel = append(en.SrcLabel, g.label)
	}
	return &jasperv1.CommittedBatch{
		SensorId: sensor, SensorCountry: "JP",
		Batch:      &jasperv1.Batch{BinStart: binStart, BinSeconds: 60, Rows: rw, Partial: true},
		Enrichment: en,
	}
}

// send feeds a batch and returns its raft index.
func (f *logFeed) send(cb *jasperv1.CommittedBatch) uint64 {
	f.index++
	cb.RaftIndex = f.index
	for _, m := range f.mods {
		m.OnBatch(f.index, cb)
	}
	return f.index
}

func (f *logFeed) tick(now time.Time) {
	f.index++
	for _, m := range f.mods {
		m.OnTick(f.index, now)
	}
}

func (f *logFeed) ofType(t jasperv1.FindingType) []*jasperv1.Finding {
	var out []*jasperv1.Finding
	for _, x := range f.found {
		if x.Type == t {
			out = append(out, x)
		}
	}
	return out
}

func mustNew(t testing.TB, cfg Config) *Detector {
	t.Helper()
	d, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// t0 is a Monday 00:00 UTC.
var t0 = time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
