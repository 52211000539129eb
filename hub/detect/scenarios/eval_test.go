package scenarios

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/detect"
)

func byDetector(rs []Result) map[string]Result {
	m := map[string]Result{}
	for _, r := range rs {
		m[r.Detector] = r
	}
	return m
}

func builtin(t *testing.T, name string) *Scenario {
	t.Helper()
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range all {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no built-in scenario %s", name)
	return nil
}

func TestBuiltinScenariosLoad(t *testing.T) {
	all, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range all {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "benign,dos,masscan,outbreak,reflection" {
		t.Errorf("built-in scenarios %v", names)
	}
}

func TestEvalMasscan(t *testing.T) {
	rs, err := Run(builtin(t, "masscan"), DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	ih := byDetector(rs)["infected_host"]
	if ih.Labelled != 1 || ih.TruePositives != 1 || ih.FalsePositives != 0 || *ih.Recall != 1 {
		t.Errorf("infected_host %+v", ih)
	}
	if len(rs) != len(Detectors) {
		t.Errorf("%d results, want one per detector", len(rs))
	}
}

// TestEvalShortOutbreak runs the outbreak scenario shortened to two days
// (surge warm-up one day) and checks the targets: port surge within 2 bins
// of onset at precision >= 0.95; infected-host latency p95 < 5 s (simulated
// time, early flush 2 s).
func TestEvalShortOutbreak(t *testing.T) {
	s := builtin(t, "outbreak")
	spec := *s.Labels.Synthetic
	spec.Duration = 34 * time.Hour
	onset := spec.Start.Add(32 * time.Hour) // Tuesday 08:00
	// Fewer background ports keep the test short; the rhythm stays.
	var bg []BackgroundPort
	for _, b := range spec.Background {
		if b.Port == 23 || b.Port == 22 || b.Port == 445 {
			bg = append(bg, b)
		}
	}
	spec.Background = bg
	spec.Outbreaks = append([]Outbreak(nil), spec.Outbreaks...)
	spec.Outbreaks[0].Start = onset
	l := *s.Labels
	l.Synthetic = &spec
	l.Infected = []SourceMark{{Source: "41.0.0.0/8", Start: onset}, {Source: "42.0.0.0/8"}}
	l.PortSurges = []PortMark{{Protocol: "tcp", Port: 23, Start: onset}}
	l.CountrySurges = []CountryMark{{Country: "CN", Start: onset}}
	if err := l.validate(); err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions()
	for _, c := range []*detect.SurgeConfig{&opts.Detect.PortSurge, &opts.Detect.Fingerprint, &opts.Detect.CountrySurge} {
		c.Warmup = 1440
	}
	rs, err := Run(&Scenario{Name: "outbreak-2d", Labels: &l}, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := byDetector(rs)
	ps := m["port_surge"]
	if ps.Precision == nil || *ps.Precision < 0.95 || ps.DelayBins == nil || *ps.DelayBins > 2 || *ps.Recall != 1 {
		t.Errorf("port_surge %+v", ps)
	}
	ih := m["infected_host"]
	if ih.LatencyP95Seconds == nil || *ih.LatencyP95Seconds >= 5 || *ih.Precision != 1 {
		t.Errorf("infected_host %+v", ih)
	}
	if cs := m["country_surge"]; cs.Recall == nil || *cs.Recall != 1 || *cs.Precision != 1 {
		t.Errorf("country_surge %+v", cs)
	}
	for _, r := range rs {
		b, _ := json.Marshal(r)
		t.Logf("%s", b)
	}
	// Deterministic: the same run gives the same figures.
	rs2, err := Run(&Scenario{Name: "outbreak-2d", Labels: &l}, opts)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(rs)
	b, _ := json.Marshal(rs2)
	if string(a) != string(b) {
		t.Error("two runs of one scenario differ")
	}
}

// TestLoadDir: a scenario a user brings, sensors as subfolders.
func TestLoadDir(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join("testdata", "pcaps", "esnet__masscan_tcp_0_1000_20190821.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "us-lab-1"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "us-lab-1", "scan.pcap"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	labels := "include_bogon_sources: true\ninfected:\n  - source: 172.31.15.0/24\n"
	if err := os.WriteFile(filepath.Join(dir, "labels.yaml"), []byte(labels), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Labels.Captures["us-lab-1"]; len(got) != 1 {
		t.Fatalf("captures %v", s.Labels.Captures)
	}
	rs, err := Run(s, DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	if ih := byDetector(rs)["infected_host"]; ih.TruePositives != 1 {
		t.Errorf("infected_host %+v", ih)
	}
	// A path leaving the scenario folder is refused.
	os.WriteFile(filepath.Join(dir, "labels.yaml"), []byte("captures:\n  s1: [../../etc/passwd]\n"), 0o644)
	s, err = LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Run(s, DefaultOptions()); err == nil || !strings.Contains(err.Error(), "leaves the scenario") {
		t.Errorf("escaping path: %v", err)
	}
}

func TestParseLabels(t *testing.T) {
	l, err := ParseLabels([]byte(`
infected: [{source: 10.0.0.0/8}, {source: "192.0.2.7", start: 2026-06-01T10:00:00Z}]
dos_victims: [{source: "2001:db8::1"}]
port_surges: [{protocol: udp, port: 37215, start: 2026-06-01T10:00:00Z}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Infected) != 2 || l.PortSurges[0].Port != 37215 {
		t.Errorf("%+v", l)
	}
	for _, bad := range []struct{ yaml, want string }{
		{"infected: [{source: 10.0.0.0/33}]", "infected[0].source"},
		{"port_surges: [{protocol: sctp, port: 1, start: 2026-06-01T10:00:00Z}]", "port_surges[0].protocol"},
		{"port_surges: [{protocol: tcp, port: 1}]", "port_surges[0].start"},
		{"country_surges: [{country: CHN, start: 2026-06-01T10:00:00Z}]", "country_surges[0].country"},
		{"infectd: []", "infectd"},
		{"darknet: {s1: [nope]}", "darknet.s1[0]"},
		{"synthetic: {start: 2026-06-01T00:00:00Z, duration: 1h}", "synthetic.sensors"},
		{"research: [{name: x}]", "needs prefixes or asns"},
	} {
		if _, err := ParseLabels([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseLabels(%q) = %v, want %q", bad.yaml, err, bad.want)
		}
	}
}

func FuzzParseLabels(f *testing.F) {
	all, err := Builtin()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range all {
		b, _ := builtinFS.ReadFile(s.dir + "/labels.yaml")
		f.Add(b)
	}
	f.Add([]byte("infected: [{source: 1.2.3.4}]"))
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLabels(b)
		if err != nil {
			return
		}
		for _, m := range append(l.Infected, l.DoSVictims...) {
			if !m.prefix.IsValid() {
				t.Fatalf("accepted mark without a prefix: %+v", m)
			}
		}
	})
}
