package scenarios

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/jasperfed/jasper/hub/enrich"
	"github.com/jasperfed/jasper/internal/config"
)

// Labels is a scenario's labels.yaml: what the traffic is (capture files
// per sensor, or a synthetic generator spec) and the ground truth the
// detectors are measured against. See doc.go for the format.
type Labels struct {
	// Description says in words what the scenario is.
	Description string `yaml:"description"`
	// Captures maps a sensor id to its capture files (pcap or pcapng),
	// relative to the scenario folder. Empty, with no synthetic spec:
	// every subfolder is a sensor and its *.pcap / *.pcapng files its
	// captures.
	Captures map[string][]string `yaml:"captures"`
	// Darknet maps a sensor id to its dark prefixes; a sensor without
	// prefixes treats every destination as dark.
	Darknet map[string][]string `yaml:"darknet"`
	// Synthetic generates the traffic instead of captures.
	Synthetic *SynthSpec `yaml:"synthetic"`
	// Research scanners known benign (labelled by enrichment, never
	// alerted on).
	Research []enrich.ResearchScanner `yaml:"research"`
	// IncludeBogonSources lets private/reserved sources be judged (for
	// captures whose hosts use private addresses).
	IncludeBogonSources bool `yaml:"include_bogon_sources"`
	// Infected lists infected sources (an address or a prefix).
	Infected []SourceMark `yaml:"infected"`
	// DoSVictims lists DoS victims (sources of backscatter).
	DoSVictims []SourceMark `yaml:"dos_victims"`
	// PortSurges lists port surges and when they start.
	PortSurges []PortMark `yaml:"port_surges"`
	// CountrySurges lists countries whose infected-host count surges.
	CountrySurges []CountryMark `yaml:"country_surges"`
}

// SourceMark is a labelled source: an address or a prefix, and
// optionally when its activity starts.
type SourceMark struct {
	Source string    `yaml:"source"`
	Start  time.Time `yaml:"start"`
	prefix netip.Prefix
}

// PortMark is a labelled port surge.
type PortMark struct {
	Protocol string    `yaml:"protocol"` // tcp or udp
	Port     uint16    `yaml:"port"`
	Start    time.Time `yaml:"start"`
}

// CountryMark is a labelled country surge.
type CountryMark struct {
	Country string    `yaml:"country"`
	Start   time.Time `yaml:"start"`
}

// ParseLabels decodes labels.yaml strictly (unknown keys are errors) and
// validates it, naming the bad key.
func ParseLabels(b []byte) (*Labels, error) {
	var l Labels
	if err := config.Decode(b, &l); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	if err := l.validate(); err != nil {
		return nil, fmt.Errorf("labels: %w", err)
	}
	return &l, nil
}

func parseSource(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, err
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (l *Labels) validate() error {
	if l.Synthetic != nil && len(l.Captures) > 0 {
		return errors.New("synthetic and captures: give one of them")
	}
	for s, files := range l.Captures {
		if s == "" || strings.ContainsAny(s, "/\\") {
			return fmt.Errorf("captures: bad sensor id %q", s)
		}
		for i, f := range files {
			if f == "" {
				return fmt.Errorf("captures.%s[%d]: empty path", s, i)
			}
		}
	}
	for s, ps := range l.Darknet {
		for i, p := range ps {
			if _, err := netip.ParsePrefix(p); err != nil {
				return fmt.Errorf("darknet.%s[%d]: %w", s, i, err)
			}
		}
	}
	if err := (enrich.Config{Research: l.Research}).Validate(); err != nil {
		return err
	}
	for key, marks := range map[string][]SourceMark{"infected": l.Infected, "dos_victims": l.DoSVictims} {
		for i := range marks {
			p, err := parseSource(marks[i].Source)
			if err != nil {
				return fmt.Errorf("%s[%d].source: %w", key, i, err)
			}
			marks[i].prefix = p
		}
	}
	for i, p := range l.PortSurges {
		if p.Protocol != "tcp" && p.Protocol != "udp" {
			return fmt.Errorf("port_surges[%d].protocol: %q is not tcp or udp", i, p.Protocol)
		}
		if p.Start.IsZero() {
			return fmt.Errorf("port_surges[%d].start: missing", i)
		}
	}
	for i, c := range l.CountrySurges {
		if len(c.Country) != 2 {
			return fmt.Errorf("country_surges[%d].country: %q is not a two-letter code", i, c.Country)
		}
		if c.Start.IsZero() {
			return fmt.Errorf("country_surges[%d].start: missing", i)
		}
	}
	if l.Synthetic != nil {
		if err := l.Synthetic.validate(); err != nil {
			return fmt.Errorf("synthetic.%w", err)
		}
	}
	return nil
}

// match returns the first mark whose prefix holds a, if any.
func match(marks []SourceMark, a netip.Addr) (SourceMark, bool) {
	for _, m := range marks {
		if m.prefix.Contains(a) {
			return m, true
		}
	}
	return SourceMark{}, false
}

func protoNumber(s string) uint32 {
	if s == "udp" {
		return 17
	}
	return 6
}
