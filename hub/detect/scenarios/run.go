package scenarios

import (
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/jasperfed/jasper/hub/detect"
	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/packet"
)

//go:embed builtin testdata/pcaps
var builtinFS embed.FS

// Scenario is a labelled scenario: a folder with labels.yaml and, for
// capture scenarios, capture files.
type Scenario struct {
	Name   string
	Labels *Labels
	fsys   fs.FS
	dir    string
	osDir  string // set when the scenario is on disk
}

// Builtin returns the scenarios kept in the repository
// (hub/detect/scenarios/builtin), in name order.
func Builtin() ([]*Scenario, error) {
	ents, err := fs.ReadDir(builtinFS, "builtin")
	if err != nil {
		return nil, err
	}
	var out []*Scenario
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		s, err := load(builtinFS, path.Join("builtin", e.Name()), e.Name(), "")
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// LoadDir loads a scenario a user brings: DIR/labels.yaml and the capture
// files it names (or DIR/<sensor>/*.pcap|*.pcapng).
func LoadDir(dir string) (*Scenario, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return load(os.DirFS(abs), ".", filepath.Base(abs), abs)
}

func load(fsys fs.FS, dir, name, osDir string) (*Scenario, error) {
	b, err := fs.ReadFile(fsys, path.Join(dir, "labels.yaml"))
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", name, err)
	}
	l, err := ParseLabels(b)
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", name, err)
	}
	s := &Scenario{Name: name, Labels: l, fsys: fsys, dir: dir, osDir: osDir}
	if l.Synthetic == nil && len(l.Captures) == 0 {
		l.Captures = map[string][]string{}
		ents, err := fs.ReadDir(fsys, dir)
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", name, err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			files, _ := fs.ReadDir(fsys, path.Join(dir, e.Name()))
			for _, f := range files {
				if n := f.Name(); !f.IsDir() && (strings.HasSuffix(n, ".pcap") || strings.HasSuffix(n, ".pcapng")) {
					l.Captures[e.Name()] = append(l.Captures[e.Name()], path.Join(e.Name(), n))
				}
			}
		}
		if len(l.Captures) == 0 {
			return nil, fmt.Errorf("scenario %s: no synthetic spec, no captures and no sensor folders with capture files", name)
		}
	}
	return s, nil
}

// openCapture opens a capture file of the scenario (a temporary copy for
// embedded files).
func (s *Scenario) openCapture(rel string) (capture.Source, func(), error) {
	p := path.Clean(path.Join(s.dir, rel))
	if !fs.ValidPath(p) {
		return nil, nil, fmt.Errorf("capture %s: path leaves the scenario", rel)
	}
	if s.osDir != "" {
		src, err := capture.OpenFile(filepath.Join(s.osDir, filepath.FromSlash(p)))
		return src, func() {}, err
	}
	f, err := s.fsys.Open(p)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	tmp, err := os.CreateTemp("", "jasper-eval-*.pcap")
	if err != nil {
		return nil, nil, err
	}
	cleanup := func() { os.Remove(tmp.Name()) }
	if _, err := io.Copy(tmp, f); err != nil {
		tmp.Close()
		cleanup()
		return nil, nil, err
	}
	tmp.Close()
	src, err := capture.OpenFile(tmp.Name())
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return src, cleanup, nil
}

// Options configure a run.
type Options struct {
	Detect detect.Config
	Sim    SimConfig
	// GeoDir holds real country.mmdb and asn.mmdb (optional). Without it a
	// synthetic scenario's countries come from its spec, and captures get
	// labels only.
	GeoDir string
}

// DefaultOptions are the detectors' and the simulation's defaults.
func DefaultOptions() Options {
	return Options{Detect: detect.DefaultConfig(), Sim: DefaultSimConfig()}
}

// Result is one detector's figures on one scenario. Precision is null
// without findings, recall null without labelled subjects, delays null
// without a detection.
type Result struct {
	Detector          string   `json:"detector"`
	Scenario          string   `json:"scenario"`
	Labelled          int      `json:"labelled"`
	Findings          int      `json:"findings"`
	TruePositives     int      `json:"true_positives"`
	FalsePositives    int      `json:"false_positives"`
	Precision         *float64 `json:"precision"`
	Recall            *float64 `json:"recall"`
	DelayBins         *float64 `json:"delay_bins"`
	DelaySeconds      *float64 `json:"delay_seconds"`
	LatencyP50Seconds *float64 `json:"latency_p50_seconds,omitempty"`
	LatencyP95Seconds *float64 `json:"latency_p95_seconds,omitempty"`
	// LatencyP95CountSeconds is the p95 latency of the hosts that crossed
	// by packet/address counts rather than by a fingerprint.
	LatencyP95CountSeconds *float64 `json:"latency_p95_count_seconds,omitempty"`
	Note                   string   `json:"note,omitempty"`
}

// Detectors names the detectors reported, in order.
var Detectors = []string{"infected_host", "dos_victim", "port_surge", "new_port", "fingerprint_surge", "country_surge"}

// seen is a finding and when (simulated hub time) it was first raised.
type seen struct {
	f  *jasperv1.Finding
	at time.Time
}

// crossing tracks the exact packets of a labelled infected source until
// it crosses the infected-host rule.
type crossing struct {
	packets uint64
	dsts    map[netip.Addr]struct{}
	ports   map[uint16]struct{}
	at      time.Time
	done    bool
	byFP    bool // crossed by a fingerprint (not by counts)
}

// runner is the Sink: it feeds the detector and records the truth.
type runner struct {
	d        *detect.Detector
	l        *Labels
	cfg      detect.Config
	index    uint64
	now      time.Time
	first    map[string]seen // finding id -> first sight
	order    []string
	infected map[netip.Addr]*crossing // labelled infected sources seen
	victims  map[netip.Addr]time.Time // labelled victims seen: first backscatter
	rows     uint64
	applyDur time.Duration
}

func (r *runner) Batch(at time.Time, cb *jasperv1.CommittedBatch) {
	r.index++
	r.now = at
	cb.RaftIndex = r.index
	r.rows += uint64(len(cb.GetBatch().GetRows().GetSrcIp()))
	t := time.Now()
	r.d.OnBatch(r.index, cb)
	r.applyDur += time.Since(t)
}

func (r *runner) Tick(at time.Time) {
	r.index++
	r.now = at
	r.d.OnTick(r.index, at)
}

func (r *runner) onFinding(f *jasperv1.Finding) {
	if _, ok := r.first[f.Id]; !ok {
		r.first[f.Id] = seen{f: f, at: r.now}
		r.order = append(r.order, f.Id)
	}
}

// observePacket records ground truth from a packet before the sensor sees it.
func (r *runner) observePacket(ts time.Time, res packet.Result, in *packet.Info) {
	if res != packet.OK {
		return
	}
	src := in.Src.Unmap()
	if in.Backscatter {
		if _, ok := match(r.l.DoSVictims, src); ok {
			if _, seen := r.victims[src]; !seen {
				r.victims[src] = ts
			}
		}
		return
	}
	if _, ok := match(r.l.Infected, src); !ok {
		return
	}
	c := r.infected[src]
	if c == nil {
		c = &crossing{dsts: map[netip.Addr]struct{}{}, ports: map[uint16]struct{}{}}
		r.infected[src] = c
	}
	if c.done {
		return
	}
	c.packets++
	ic := r.cfg.Infected
	if len(c.dsts) < int(ic.MinDstIPs) {
		c.dsts[in.Dst] = struct{}{}
	}
	if (in.Protocol == 6 || in.Protocol == 17) && len(c.ports) < int(ic.MinPorts) {
		c.ports[in.DstPort] = struct{}{}
	}
	fp := false
	for i, n := range packet.FingerprintNames {
		if in.Fingerprints&(1<<i) != 0 && slices.Contains(ic.Fingerprints, n) {
			fp = true
		}
	}
	if fp || (c.packets >= ic.MinPackets && (uint64(len(c.dsts)) >= ic.MinDstIPs || (ic.MinPorts > 0 && uint64(len(c.ports)) >= ic.MinPorts))) {
		c.done, c.at, c.byFP = true, ts, fp
	}
}

// Run replays the scenario through enrichment and the detectors.
func Run(s *Scenario, opts Options) ([]Result, error) {
	l := s.Labels
	cfg := opts.Detect
	cfg.IncludeBogonSources = cfg.IncludeBogonSources || l.IncludeBogonSources
	d, err := detect.New(cfg, detect.Deps{})
	if err != nil {
		return nil, err
	}
	ecfg := enrich.Config{Research: l.Research}
	tmp, err := os.MkdirTemp("", "jasper-eval-geo-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	switch {
	case opts.GeoDir != "":
		ecfg.CountryDB, ecfg.ASNDB = filepath.Join(opts.GeoDir, "country.mmdb"), filepath.Join(opts.GeoDir, "asn.mmdb")
	case l.Synthetic != nil && len(l.Synthetic.Countries) > 0:
		ecfg.CountryDB = filepath.Join(tmp, "country.mmdb")
		if err := writeCountryDB(ecfg.CountryDB, l.Synthetic.Countries, l.Synthetic.Start); err != nil {
			return nil, err
		}
	}
	enr, err := enrich.New(ecfg, enrich.Deps{})
	if err != nil {
		return nil, err
	}
	defer enr.Close()
	r := &runner{d: d, l: l, cfg: cfg, first: map[string]seen{}, infected: map[netip.Addr]*crossing{}, victims: map[netip.Addr]time.Time{}}
	d.OnFinding(r.onFinding)
	extra := 2*opts.Sim.Bin + cfg.CloseDelay + opts.Sim.Grace + opts.Sim.CommitDelay + 2*opts.Sim.Tick
	if l.Synthetic != nil {
		err = runSynthetic(l.Synthetic, opts.Sim, enr, r, extra)
	} else {
		err = runCaptures(s, opts.Sim, enr, r, extra)
	}
	if err != nil {
		return nil, fmt.Errorf("scenario %s: %w", s.Name, err)
	}
	return r.results(s.Name, opts.Sim.Bin), nil
}

func writeCountryDB(file string, countries map[string]string, epoch time.Time) error {
	tree, err := mmdbwriter.New(mmdbwriter.Options{BuildEpoch: epoch.Unix(), DatabaseType: "country", IPVersion: 6})
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(countries))
	for k := range countries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_, n, err := net.ParseCIDR(k)
		if err != nil {
			return err
		}
		if err := tree.Insert(n, mmdbtype.Map{"country_code": mmdbtype.String(countries[k])}); err != nil {
			return err
		}
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func runSynthetic(spec *SynthSpec, sc SimConfig, enr *enrich.Enricher, r *runner, extra time.Duration) error {
	var ids []string
	dark := map[string][]netip.Prefix{}
	for _, s := range spec.Sensors {
		ids = append(ids, s.ID)
		dark[s.ID] = []netip.Prefix{netip.MustParsePrefix(s.Darknet)}
	}
	sm, err := newSim(sc, ids, dark, enr, r)
	if err != nil {
		return err
	}
	g := newGenerator(spec)
	for {
		pkts, ok := g.next()
		if !ok {
			break
		}
		for i := range pkts {
			p := &pkts[i]
			r.observePacket(p.at, packet.OK, &p.info)
			sm.packet(p.sensor, p.at, packet.OK, &p.info)
		}
	}
	return sm.finish(extra)
}

// capReader reads one sensor's capture files in order.
type capReader struct {
	s     *Scenario
	files []string
	src   capture.Source
	clean func()
	dec   *packet.Decoder
	data  []byte
	ts    time.Time
	ok    bool
}

func (c *capReader) next() error {
	for {
		if c.src == nil {
			if len(c.files) == 0 {
				c.ok = false
				return nil
			}
			src, clean, err := c.s.openCapture(c.files[0])
			if err != nil {
				return err
			}
			c.files = c.files[1:]
			dec, err := packet.NewDecoder(src.LinkType())
			if err != nil {
				src.Close()
				clean()
				return err
			}
			c.src, c.clean, c.dec = src, clean, dec
		}
		data, ci, err := c.src.ReadPacket()
		if errors.Is(err, io.EOF) {
			c.src.Close()
			c.clean()
			c.src = nil
			continue
		}
		if err != nil {
			return err
		}
		c.data = append(c.data[:0], data...)
		c.ts, c.ok = ci.Timestamp, true
		return nil
	}
}

func runCaptures(s *Scenario, sc SimConfig, enr *enrich.Enricher, r *runner, extra time.Duration) error {
	l := s.Labels
	ids := make([]string, 0, len(l.Captures))
	for id := range l.Captures {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	dark := map[string][]netip.Prefix{}
	for id, ps := range l.Darknet {
		for _, p := range ps {
			dark[id] = append(dark[id], netip.MustParsePrefix(p))
		}
	}
	sm, err := newSim(sc, ids, dark, enr, r)
	if err != nil {
		return err
	}
	readers := make([]*capReader, len(ids))
	for i, id := range ids {
		readers[i] = &capReader{s: s, files: slices.Clone(l.Captures[id])}
		if err := readers[i].next(); err != nil {
			return err
		}
	}
	var info packet.Info
	for {
		best := -1
		for i, c := range readers {
			if c.ok && (best < 0 || c.ts.Before(readers[best].ts)) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		c := readers[best]
		res := c.dec.Decode(c.data, &info)
		r.observePacket(c.ts, res, &info)
		sm.packet(best, c.ts, res, &info)
		if err := c.next(); err != nil {
			return err
		}
	}
	return sm.finish(extra)
}

func ptr(v float64) *float64 { return &v }

func ratio(a, b int) *float64 {
	if b == 0 {
		return nil
	}
	return ptr(float64(a) / float64(b))
}

func percentile(v []float64, p float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

// results computes every detector's figures.
func (r *runner) results(scenario string, bin time.Duration) []Result {
	byType := map[jasperv1.FindingType][]seen{}
	for _, id := range r.order {
		s := r.first[id]
		byType[s.f.Type] = append(byType[s.f.Type], s)
	}
	var out []Result
	binS := bin.Seconds()
	// Infected hosts: truth = labelled sources that sent scan-like packets.
	{
		res := Result{Detector: "infected_host", Scenario: scenario, Labelled: len(r.infected)}
		var lat, latCount []float64
		found := map[netip.Addr]bool{}
		for _, s := range byType[jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST] {
			res.Findings++
			a, _ := netip.AddrFromSlice(s.f.SrcIp)
			c := r.infected[a.Unmap()]
			if c == nil {
				res.FalsePositives++
				continue
			}
			res.TruePositives++
			found[a.Unmap()] = true
			if c.done {
				l := max(0, s.at.Sub(c.at).Seconds())
				lat = append(lat, l)
				if !c.byFP {
					latCount = append(latCount, l)
				}
			}
		}
		res.Precision, res.Recall = ratio(res.TruePositives, res.Findings), ratio(len(found), res.Labelled)
		if len(lat) > 0 {
			p95 := percentile(lat, 0.95)
			res.LatencyP50Seconds, res.LatencyP95Seconds = ptr(percentile(lat, 0.5)), ptr(p95)
			res.DelaySeconds, res.DelayBins = ptr(p95), ptr(math.Floor(p95/binS))
			res.Note = fmt.Sprintf("delay = p95 latency from the crossing packet to the finding (simulated hub time), %d hosts", len(lat))
			if len(latCount) > 0 {
				res.LatencyP95CountSeconds = ptr(percentile(latCount, 0.95))
				res.Note += fmt.Sprintf("; %d crossed by counts (no fingerprint): their p50 %.1f s, p95 %.1f s", len(latCount), percentile(latCount, 0.5), percentile(latCount, 0.95))
			}
		}
		out = append(out, res)
	}
	// DoS victims: truth = labelled sources that sent backscatter.
	{
		res := Result{Detector: "dos_victim", Scenario: scenario, Labelled: len(r.victims)}
		var delays []float64
		found := map[netip.Addr]bool{}
		for _, s := range byType[jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM] {
			res.Findings++
			a, _ := netip.AddrFromSlice(s.f.SrcIp)
			start, ok := r.victims[a.Unmap()]
			if !ok {
				res.FalsePositives++
				continue
			}
			res.TruePositives++
			found[a.Unmap()] = true
			if m, ok := match(r.l.DoSVictims, a.Unmap()); ok && !m.Start.IsZero() {
				start = m.Start
			}
			delays = append(delays, s.at.Sub(start).Seconds())
		}
		res.Precision, res.Recall = ratio(res.TruePositives, res.Findings), ratio(len(found), res.Labelled)
		if len(delays) > 0 {
			m := percentile(delays, 0.5)
			res.DelaySeconds, res.DelayBins = ptr(m), ptr(math.Floor(m/binS))
			res.Note = "delay = median time from the attack start to the finding"
		}
		out = append(out, res)
	}
	// Port surges and new ports, against port_surges.
	for _, t := range []jasperv1.FindingType{jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, jasperv1.FindingType_FINDING_TYPE_NEW_PORT} {
		name := "port_surge"
		if t == jasperv1.FindingType_FINDING_TYPE_NEW_PORT {
			name = "new_port"
		}
		res := Result{Detector: name, Scenario: scenario, Labelled: len(r.l.PortSurges)}
		if name == "new_port" {
			// New ports are judged against the labelled surges, but a
			// surge on a port with a baseline is not a new port: no recall.
			res.Labelled = 0
		}
		first := map[int]seen{}
		for _, s := range byType[t] {
			res.Findings++
			hit := -1
			for i, m := range r.l.PortSurges {
				if protoNumber(m.Protocol) == s.f.Protocol && uint32(m.Port) == s.f.Port && s.f.FirstSeenMs >= m.Start.Truncate(bin).UnixMilli() {
					hit = i
					break
				}
			}
			if hit < 0 {
				res.FalsePositives++
				continue
			}
			res.TruePositives++
			if _, ok := first[hit]; !ok {
				first[hit] = s
			}
		}
		res.Precision, res.Recall = ratio(res.TruePositives, res.Findings), ratio(len(first), res.Labelled)
		if len(first) > 0 && res.Labelled > 0 {
			var db, ds float64
			for i, s := range first {
				onset := r.l.PortSurges[i].Start.Truncate(bin)
				db += float64(s.f.FirstSeenMs-onset.UnixMilli()) / bin.Seconds() / 1000
				ds += s.at.Sub(r.l.PortSurges[i].Start).Seconds()
			}
			res.DelayBins, res.DelaySeconds = ptr(db/float64(len(first))), ptr(ds/float64(len(first)))
			res.Note = "delay_bins = first firing bin - onset bin; delay_seconds = onset to finding (bin judged at close)"
		}
		out = append(out, res)
	}
	// Fingerprint surges: true when an outbreak is labelled (a port surge
	// after its start); country surges against country_surges.
	{
		res := Result{Detector: "fingerprint_surge", Scenario: scenario}
		for _, s := range byType[jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE] {
			res.Findings++
			ok := false
			for _, m := range r.l.PortSurges {
				ok = ok || s.f.FirstSeenMs >= m.Start.Truncate(bin).UnixMilli()
			}
			if ok {
				res.TruePositives++
			} else {
				res.FalsePositives++
			}
		}
		res.Precision = ratio(res.TruePositives, res.Findings)
		res.Note = "labelled implicitly: a fingerprint surge after a labelled port surge's start is true"
		out = append(out, res)
	}
	{
		res := Result{Detector: "country_surge", Scenario: scenario, Labelled: len(r.l.CountrySurges)}
		first := map[int]seen{}
		for _, s := range byType[jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE] {
			res.Findings++
			hit := -1
			for i, m := range r.l.CountrySurges {
				if m.Country == s.f.Country && s.f.FirstSeenMs >= m.Start.Truncate(bin).UnixMilli() {
					hit = i
				}
			}
			if hit < 0 {
				res.FalsePositives++
				continue
			}
			res.TruePositives++
			if _, ok := first[hit]; !ok {
				first[hit] = s
			}
		}
		res.Precision, res.Recall = ratio(res.TruePositives, res.Findings), ratio(len(first), res.Labelled)
		if len(first) > 0 {
			var db, ds float64
			for i, s := range first {
				onset := r.l.CountrySurges[i].Start.Truncate(bin)
				db += float64(s.f.FirstSeenMs-onset.UnixMilli()) / bin.Seconds() / 1000
				ds += s.at.Sub(r.l.CountrySurges[i].Start).Seconds()
			}
			res.DelayBins, res.DelaySeconds = ptr(db/float64(len(first))), ptr(ds/float64(len(first)))
		}
		out = append(out, res)
	}
	return out
}

// Throughput reports what the last Run of r cost (rows applied, time in
// OnBatch); used by the eval command's summary.
func (r *runner) Throughput() (uint64, time.Duration) { return r.rows, r.applyDur }
