package dashboards

import (
	"context"
	"fmt"

	"github.com/jasperfed/jasper/hub/rollup"
)

// EmbeddedSource answers from the hub's embedded rollups module.
type EmbeddedSource struct{ m *rollup.Module }

// NewEmbeddedSource wraps the rollup module the raft store hosts.
func NewEmbeddedSource(m *rollup.Module) *EmbeddedSource { return &EmbeddedSource{m: m} }

func (q *Query) filter() rollup.Filter {
	return rollup.Filter{From: q.From, To: q.To, Sensor: q.Sensor, Country: q.Country,
		Protocol: q.Protocol, Port: q.Port, HasPort: q.HasPort}
}

// Overview implements Source.
func (s *EmbeddedSource) Overview(_ context.Context, q Query) ([]Point, error) {
	pts := s.m.Overview(q.filter(), q.Step)
	out := make([]Point, len(pts))
	for i, p := range pts {
		out[i] = Point{Start: p.Start, Packets: p.Packets, Bytes: p.Bytes, Sources: p.Sources, Approx: !p.SourcesExact}
	}
	return out, nil
}

// Top implements Source.
func (s *EmbeddedSource) Top(_ context.Context, q Query, d Dim) ([]Entry, error) {
	var rd rollup.Dim
	switch d {
	case DimPort:
		rd = rollup.DimPort
	case DimCountry:
		rd = rollup.DimCountry
	case DimASN:
		rd = rollup.DimASN
	case DimFingerprint:
		rd = rollup.DimFingerprint
	case DimClass:
		rd = rollup.DimClass
	case DimSensor:
		rd = rollup.DimSensor
	default:
		return nil, fmt.Errorf("unknown dimension %q", d)
	}
	es := s.m.Top(q.filter(), rd, q.Limit)
	out := make([]Entry, len(es))
	for i, e := range es {
		out[i] = Entry{Key: e.Key, Packets: e.Packets, Bytes: e.Bytes, Sources: e.Sources}
	}
	return out, nil
}

// Hosts implements Source.
func (s *EmbeddedSource) Hosts(_ context.Context, q Query, scope Scope) ([]Host, error) {
	hs := s.m.Hosts(q.filter(), scope.Contains, q.Limit)
	out := make([]Host, len(hs))
	for i, h := range hs {
		out[i] = Host{Addr: h.Addr, Country: h.Country, ASN: h.ASN, Packets: h.Packets, Bytes: h.Bytes,
			Classes: h.Classes, Ports: h.Ports, MorePorts: h.MorePorts, Sensors: h.Sensors,
			FirstSeen: h.FirstSeen, LastSeen: h.LastSeen}
	}
	return out, nil
}

// Sensors implements Source.
func (s *EmbeddedSource) Sensors(context.Context) ([]SensorHealth, error) {
	return sensorsFromRollup(s.m), nil
}

func sensorsFromRollup(m *rollup.Module) []SensorHealth {
	hs := m.Sensors()
	out := make([]SensorHealth, len(hs))
	for i, h := range hs {
		out[i] = SensorHealth{ID: h.ID, Country: h.Country, Batches: h.Batches, LastSequence: h.LastSequence,
			LastBinStart: h.LastBinStart, LastReceivedAt: h.LastReceivedAt, PacketRate: h.PacketRate,
			PacketsSeen: h.Window.PacketsSeen, PacketsSummarised: h.Window.PacketsSummarised,
			KernelDrops: h.Window.KernelDrops, DecodeErrors: h.Window.DecodeErrors,
			OverflowRows: h.Window.OverflowRows, ShedBatches: h.Window.ShedBatches, ShedRows: h.Window.ShedRows}
	}
	return out
}
