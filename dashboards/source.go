package dashboards

import (
	"context"
	"net/netip"
	"slices"
	"time"
)

// Query is what a view asks a Source. Zero fields select everything.
type Query struct {
	From, To time.Time
	Sensor   string
	Country  string
	// Protocol is an IP protocol number; 0 selects all.
	Protocol uint8
	Port     uint32
	HasPort  bool
	// Step is the time-series resolution (Overview only).
	Step time.Duration
	// Limit bounds top lists and host lists (<= 0: the source's default).
	Limit int
}

// Dim names a top-list dimension.
type Dim string

// Top-list dimensions.
const (
	DimPort        Dim = "port" // TCP or UDP by Query.Protocol
	DimCountry     Dim = "country"
	DimASN         Dim = "asn"
	DimFingerprint Dim = "fingerprint"
	DimClass       Dim = "class"
	DimSensor      Dim = "sensor"
)

// Point is one step of the overview series.
type Point struct {
	Start time.Time `json:"t"`
	// Packets by NICTER traffic class name.
	Packets map[string]uint64 `json:"packets"`
	Bytes   uint64            `json:"bytes"`
	// Sources is the number of distinct source addresses in the step.
	Sources uint64 `json:"sources"`
	// Approx is true when Sources is a sketch estimate.
	Approx bool `json:"approx,omitempty"`
}

// Entry is one line of a top list or of the map.
type Entry struct {
	Key     string `json:"key"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
	Sources uint64 `json:"sources"`
}

// Host is host-level data: one source address.
type Host struct {
	Addr      netip.Addr `json:"ip"`
	Country   string     `json:"country"`
	ASN       uint32     `json:"asn"`
	Packets   uint64     `json:"packets"`
	Bytes     uint64     `json:"bytes"`
	Classes   []string   `json:"classes,omitempty"`
	Ports     []uint32   `json:"ports,omitempty"`
	MorePorts bool       `json:"more_ports,omitempty"`
	Sensors   []string   `json:"sensors,omitempty"`
	FirstSeen time.Time  `json:"first_seen"`
	LastSeen  time.Time  `json:"last_seen"`
}

// SensorHealth is what the sensors view shows of one sensor.
type SensorHealth struct {
	ID             string    `json:"id"`
	Country        string    `json:"country"`
	Batches        uint64    `json:"batches"`
	LastSequence   uint64    `json:"last_sequence"`
	LastBinStart   time.Time `json:"last_bin_start"`
	LastReceivedAt time.Time `json:"last_received_at"`
	// PacketRate is packets seen per second over the recent bins.
	PacketRate float64 `json:"packet_rate"`
	// Counters within the window shown.
	PacketsSeen       uint64 `json:"packets_seen"`
	PacketsSummarised uint64 `json:"packets_summarised"`
	KernelDrops       uint64 `json:"kernel_drops"`
	DecodeErrors      uint64 `json:"decode_errors"`
	OverflowRows      uint64 `json:"overflow_rows"`
	ShedBatches       uint64 `json:"shed_batches"`
	ShedRows          uint64 `json:"shed_rows"`
	// CertExpiry is the sensor certificate's NotAfter, when known.
	CertExpiry *time.Time `json:"cert_expiry,omitempty"`
}

// Scope is whose host-level data a reader may see: everything (All), or
// sources of the listed countries or inside the listed prefixes.
type Scope struct {
	All       bool
	Countries []string
	Prefixes  []netip.Prefix
}

// Contains reports whether a host with this address and country is in scope.
func (s *Scope) Contains(addr netip.Addr, country string) bool {
	if s.All {
		return true
	}
	if country != "" && slices.Contains(s.Countries, country) {
		return true
	}
	addr = addr.Unmap()
	for _, p := range s.Prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Source answers the dashboard questions: the embedded rollups (see
// NewEmbeddedSource) or ClickHouse (see NewClickHouseSource). Hosts must
// return only hosts in scope (the API layer filters again).
type Source interface {
	Overview(ctx context.Context, q Query) ([]Point, error)
	Top(ctx context.Context, q Query, d Dim) ([]Entry, error)
	Hosts(ctx context.Context, q Query, scope Scope) ([]Host, error)
	Sensors(ctx context.Context) ([]SensorHealth, error)
}
