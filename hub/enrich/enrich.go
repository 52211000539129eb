// Package enrich looks up, before a batch is proposed to raft, what the
// detectors need to know about every row's source: its country, its origin
// ASN and a label (routable, bogon, research scanner). The FSM never looks
// anything up (DESIGN.md promise 5); it reads the Enrichment committed with
// the batch.
//
// Order of decisions per source: bogon and reserved ranges (RFC 6890 tables,
// see IsBogon) are labelled first and never looked up; other sources are
// looked up in the country and ASN databases (MaxMind DB format, built by
// `jasper geo build`); a source inside a configured research scanner's
// prefixes or ASNs is then labelled research (it keeps its country and ASN).
//
// An Enricher is safe for concurrent use by many ingest streams.
package enrich

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ResearchScanner is a known benign research scanner (a census project, a
// university): its sources are labelled, counted and never alerted on.
type ResearchScanner struct {
	Name     string   `yaml:"name"`
	Prefixes []string `yaml:"prefixes"`
	ASNs     []uint32 `yaml:"asns"`
}

// Config names the databases and the research scanners.
type Config struct {
	// CountryDB is a MaxMind DB whose records hold "country_code" (the
	// ip-location-db layout) or "country": {"iso_code"} (the GeoLite2
	// layout). Empty: no country lookups.
	CountryDB string `yaml:"country_db"`
	// ASNDB is a MaxMind DB whose records hold "autonomous_system_number".
	// Empty: no ASN lookups.
	ASNDB string `yaml:"asn_db"`
	// Research lists known benign research scanners.
	Research []ResearchScanner `yaml:"research"`
}

// DefaultConfig returns a configuration without databases or scanners:
// labels only.
func DefaultConfig() Config { return Config{} }

// Validate names the first bad key.
func (c Config) Validate() error {
	for i, r := range c.Research {
		if r.Name == "" {
			return fmt.Errorf("research[%d].name: must not be empty", i)
		}
		if len(r.Prefixes) == 0 && len(r.ASNs) == 0 {
			return fmt.Errorf("research[%d] (%s): needs prefixes or asns", i, r.Name)
		}
		for j, p := range r.Prefixes {
			if _, err := netip.ParsePrefix(p); err != nil {
				return fmt.Errorf("research[%d].prefixes[%d]: %w", i, j, err)
			}
		}
		for j, a := range r.ASNs {
			if a == 0 {
				return fmt.Errorf("research[%d].asns[%d]: ASN 0 is reserved", i, j)
			}
		}
	}
	return nil
}

// Deps are the Enricher's dependencies; a nil Registerer registers nothing.
type Deps struct {
	Registerer prometheus.Registerer
}

type researchPrefix struct {
	p    netip.Prefix
	name string
}

// Enricher looks up sources. Build it with New, release it with Close.
type Enricher struct {
	country  *maxminddb.Reader
	asn      *maxminddb.Reader
	version  string
	prefixes []researchPrefix
	asns     map[uint32]string
	m        *metrics
}

// New opens the databases named in cfg.
func New(cfg Config, deps Deps) (*Enricher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("enrich config: %w", err)
	}
	e := &Enricher{asns: map[uint32]string{}, m: newMetrics(deps.Registerer)}
	var dates []string
	if cfg.CountryDB != "" {
		r, err := maxminddb.Open(cfg.CountryDB)
		if err != nil {
			return nil, fmt.Errorf("open country db %s: %w", cfg.CountryDB, err)
		}
		e.country = r
		dates = append(dates, "country:"+buildDate(r))
	}
	if cfg.ASNDB != "" {
		r, err := maxminddb.Open(cfg.ASNDB)
		if err != nil {
			e.Close()
			return nil, fmt.Errorf("open asn db %s: %w", cfg.ASNDB, err)
		}
		e.asn = r
		dates = append(dates, "asn:"+buildDate(r))
	}
	e.version = versionString(dates)
	for _, r := range cfg.Research {
		for _, s := range r.Prefixes {
			p := netip.MustParsePrefix(s).Masked()
			e.prefixes = append(e.prefixes, researchPrefix{p: netip.PrefixFrom(p.Addr().Unmap(), unmapBits(p)), name: r.Name})
		}
		for _, a := range r.ASNs {
			e.asns[a] = r.Name
		}
	}
	// Longest prefixes first so that the most specific scanner names a source.
	slices.SortStableFunc(e.prefixes, func(a, b researchPrefix) int { return b.p.Bits() - a.p.Bits() })
	return e, nil
}

func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		return p.Bits() - 96
	}
	return p.Bits()
}

// buildDate is the UTC day of a database's build epoch.
func buildDate(r *maxminddb.Reader) string {
	return time.Unix(int64(r.Metadata.BuildEpoch), 0).UTC().Format(time.DateOnly)
}

// versionString is "2026-06-17" when every database was built that day,
// else "country:2026-06-17 asn:2026-06-18"; "" without databases.
func versionString(dates []string) string {
	if len(dates) == 0 {
		return ""
	}
	day := func(s string) string { _, d, _ := cut(s); return d }
	same := true
	for _, d := range dates[1:] {
		same = same && day(d) == day(dates[0])
	}
	if same {
		return day(dates[0])
	}
	out := dates[0]
	for _, d := range dates[1:] {
		out += " " + d
	}
	return out
}

func cut(s string) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == ':' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// Close releases the databases.
func (e *Enricher) Close() error {
	var errs []error
	if e.country != nil {
		errs = append(errs, e.country.Close())
	}
	if e.asn != nil {
		errs = append(errs, e.asn.Close())
	}
	return errors.Join(errs...)
}

// Version is the geo database version recorded with every enrichment and
// finding ("" without databases).
func (e *Enricher) Version() string { return e.version }

// Result is what Lookup tells about one source.
type Result struct {
	Country  string
	ASN      uint32
	Label    jasperv1.SourceLabel
	Research string // scanner name when Label is research
}

type countryRecord struct {
	Code    string `maxminddb:"country_code"`
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
}

type asnRecord struct {
	ASN uint32 `maxminddb:"autonomous_system_number"`
}

// Lookup enriches one source address.
func (e *Enricher) Lookup(a netip.Addr) Result {
	a = a.Unmap()
	if IsBogon(a) {
		return Result{Label: jasperv1.SourceLabel_SOURCE_LABEL_BOGON}
	}
	var res Result
	if e.country != nil {
		e.m.lookups.country.Inc()
		var rec countryRecord
		if err := e.country.Lookup(a).Decode(&rec); err != nil {
			e.m.errors.Inc()
		}
		res.Country = rec.Code
		if res.Country == "" {
			res.Country = rec.Country.ISOCode
		}
		if res.Country == "" {
			e.m.misses.country.Inc()
		}
	}
	if e.asn != nil {
		e.m.lookups.asn.Inc()
		var rec asnRecord
		if err := e.asn.Lookup(a).Decode(&rec); err != nil {
			e.m.errors.Inc()
		}
		res.ASN = rec.ASN
		if res.ASN == 0 {
			e.m.misses.asn.Inc()
		}
	}
	res.Label = jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE
	for _, p := range e.prefixes {
		if p.p.Contains(a) {
			res.Label, res.Research = jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH, p.name
			return res
		}
	}
	if name, ok := e.asns[res.ASN]; ok && res.ASN != 0 {
		res.Label, res.Research = jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH, name
	}
	return res
}

// Enrich returns one entry per row of b, in row order. Rows with the same
// source as the previous row reuse its result (sensors emit a source's rows
// together), so a port sweep costs one lookup. A malformed source address
// (not 4 or 16 bytes) is labelled bogon.
func (e *Enricher) Enrich(b *jasperv1.Batch) *jasperv1.Enrichment {
	rows := b.GetRows()
	n := len(rows.GetSrcIp())
	out := &jasperv1.Enrichment{
		SrcCountry:   make([]string, n),
		SrcAsn:       make([]uint32, n),
		SrcLabel:     make([]jasperv1.SourceLabel, n),
		GeoDbVersion: e.version,
	}
	var prev []byte
	var res Result
	var counts [4]float64
	for i, ip := range rows.GetSrcIp() {
		if i == 0 || string(ip) != string(prev) {
			a, ok := netip.AddrFromSlice(ip)
			if !ok {
				res = Result{Label: jasperv1.SourceLabel_SOURCE_LABEL_BOGON}
			} else {
				res = e.Lookup(a)
			}
			prev = ip
			if res.Research != "" {
				e.m.research.WithLabelValues(res.Research).Inc()
			}
		}
		out.SrcCountry[i], out.SrcAsn[i], out.SrcLabel[i] = res.Country, res.ASN, res.Label
		counts[res.Label]++
	}
	e.m.rows.routable.Add(counts[jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE])
	e.m.rows.bogon.Add(counts[jasperv1.SourceLabel_SOURCE_LABEL_BOGON])
	e.m.rows.research.Add(counts[jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH])
	return out
}
