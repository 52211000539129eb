package detect

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"google.golang.org/protobuf/proto"
)

// surgeScenario drives detectors through two days of 1-minute bins:
// background on tcp/445 (~20 sources) and tcp/23 (~10), 3 mirai-infected
// hosts a bin from CN; at onsetBin tcp/23 jumps to +80 mirai sources from CN
// and BR over two sensors; at newPortBin udp/37215 gets 30 sources.
const (
	scBins     = 2 * 1440
	onsetBin   = 1440 + 600
	newPortBin = 1440 + 900
)

func surgeConfig() Config {
	cfg := DefaultConfig()
	for _, s := range []*SurgeConfig{&cfg.PortSurge, &cfg.Fingerprint, &cfg.CountrySurge} {
		s.Warmup = 1440
	}
	return cfg
}

func runSurgeScenario(f *logFeed, from, to int, afterBin func(i int)) {
	rng := rand.New(rand.NewPCG(42, 1))
	for i := range to {
		start := t0.Unix() + int64(i*60)
		var rows []r
		for k := range int(poisson(rng, 20)) {
			rows = append(rows, r{src: fmt.Sprintf("45.%d.%d.%d", 10+i%7, k, i%250), port: 445})
		}
		for k := range int(poisson(rng, 10)) {
			rows = append(rows, r{src: fmt.Sprintf("46.%d.%d.%d", 10+i%7, k, i%250), port: 23})
		}
		for k := range int(poisson(rng, 3)) {
			src := fmt.Sprintf("47.1.%d.%d", k, i%250)
			f.geo[src] = geo{cc: "CN", asn: 4134, label: jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE}
			rows = append(rows, r{src: src, port: 23, fps: map[string]uint64{"mirai": 1}})
		}
		var rows2 []r
		if i >= onsetBin {
			for k := range 80 {
				src := fmt.Sprintf("48.%d.%d.%d", k%2, k, i%250)
				cc := "CN"
				if k%2 == 1 {
					cc = "BR"
				}
				f.geo[src] = geo{cc: cc, asn: 1000, label: jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE}
				rows2 = append(rows2, r{src: src, port: 23, first: uint32(k * 100), fps: map[string]uint64{"mirai": 1}})
			}
		}
		if i == newPortBin {
			for k := range 30 {
				rows2 = append(rows2, r{src: fmt.Sprintf("49.0.%d.1", k), proto: 17, port: 37215, class: jasperv1.TrafficClass_TRAFFIC_CLASS_UDP})
			}
		}
		if i >= from {
			f.send(f.batch("s1", start, rows...))
			if len(rows2) > 0 {
				f.send(f.batch("s2", start, rows2...))
			}
			f.tick(time.Unix(start+60+31, 0))
		}
		if afterBin != nil {
			afterBin(i)
		}
	}
}

func TestSurgeDetectors(t *testing.T) {
	d := mustNew(t, surgeConfig())
	f := newFeed(t, d)
	runSurgeScenario(f, 0, onsetBin+5, nil)
	onsetMs := (t0.Unix() + onsetBin*60) * 1000
	check := func(typ jasperv1.FindingType, want int) []*jasperv1.Finding {
		t.Helper()
		var got []*jasperv1.Finding
		for _, x := range f.ofType(typ) {
			if x.State == jasperv1.FindingState_FINDING_STATE_NEW {
				got = append(got, x)
			}
		}
		if len(got) != want {
			for _, x := range got {
				t.Logf("%s", x.Summary)
			}
			t.Fatalf("%v: %d new findings, want %d", typ, len(got), want)
		}
		return got
	}
	ps := check(jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, 1)[0]
	if ps.Protocol != 6 || ps.Port != 23 || ps.FirstSeenMs != onsetMs {
		t.Errorf("port surge %v/%v first seen %d, want tcp/23 at onset %d", ps.Protocol, ps.Port, ps.FirstSeenMs, onsetMs)
	}
	if ps.Observed < 85 || ps.Baseline > 20 || ps.Score < 8 {
		t.Errorf("jump baseline %.1f observed %.0f score %.1f", ps.Baseline, ps.Observed, ps.Score)
	}
	if !slices.Equal(ps.TopCountries, []string{"CN", "BR", "JP"}) || !slices.Equal(ps.Sensors, []string{"s1", "s2"}) {
		t.Errorf("countries %v sensors %v", ps.TopCountries, ps.Sensors)
	}
	// Judged when the onset bin closes: bin end + close delay.
	if ps.DetectedAtMs != onsetMs+60_000+31_000 {
		t.Errorf("detected at %d, want %d", ps.DetectedAtMs, onsetMs+91_000)
	}
	fs := check(jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE, 1)[0]
	if fs.Fingerprint != "mirai" || fs.FirstSeenMs != onsetMs {
		t.Errorf("fingerprint surge %q at %d", fs.Fingerprint, fs.FirstSeenMs)
	}
	// CN has a baseline of ~3 infected hosts a bin; BR has none (a series
	// without warm-up never fires).
	cs := check(jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE, 1)[0]
	if cs.FirstSeenMs != onsetMs || cs.Country != "CN" || cs.Observed < 40 {
		t.Errorf("country surge %s at %d observed %.0f", cs.Country, cs.FirstSeenMs, cs.Observed)
	}
	check(jasperv1.FindingType_FINDING_TYPE_NEW_PORT, 0)
	// Continue past the new port's bin.
	d2 := mustNew(t, surgeConfig())
	f2 := newFeed(t, d2)
	runSurgeScenario(f2, 0, newPortBin+2, nil)
	var np []*jasperv1.Finding
	for _, x := range f2.ofType(jasperv1.FindingType_FINDING_TYPE_NEW_PORT) {
		np = append(np, x)
	}
	if len(np) != 1 || np[0].Protocol != 17 || np[0].Port != 37215 || np[0].Observed != 30 {
		t.Fatalf("new port findings %v", np)
	}
	// Surges stay one finding each while they continue.
	if n := len(f2.ofType(jasperv1.FindingType_FINDING_TYPE_PORT_SURGE)); n < 2 {
		t.Errorf("port surge announced %d times", n)
	}
	ids := map[string]bool{}
	for _, x := range f2.ofType(jasperv1.FindingType_FINDING_TYPE_PORT_SURGE) {
		ids[x.Id] = true
	}
	if len(ids) != 1 {
		t.Errorf("continuing port surge has %d ids", len(ids))
	}
}

// TestSnapshotDeterminism: two detectors fed the same log write equal
// snapshots; a third restored mid-way and fed the rest ends equal too.
func TestSnapshotDeterminism(t *testing.T) {
	a, b, c := mustNew(t, surgeConfig()), mustNew(t, surgeConfig()), mustNew(t, surgeConfig())
	fa := newFeed(t, a, b)
	var mid []byte
	runSurgeScenario(fa, 0, onsetBin+30, func(i int) {
		if i == onsetBin+3 {
			var buf bytes.Buffer
			if err := a.Snapshot(&buf); err != nil {
				t.Fatal(err)
			}
			mid = buf.Bytes()
		}
	})
	var sa, sb bytes.Buffer
	if err := a.Snapshot(&sa); err != nil {
		t.Fatal(err)
	}
	if err := b.Snapshot(&sb); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sa.Bytes(), sb.Bytes()) {
		t.Fatal("two detectors fed the same log wrote different snapshots")
	}
	// c restores the mid snapshot, then sees the rest of the log.
	if err := c.Restore(bytes.NewReader(mid)); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := c.Snapshot(&again); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Bytes(), mid) {
		t.Fatal("restore then snapshot is not byte-stable")
	}
	fc := newFeed(t, c)
	fc.index = 0
	// Replay the same log from the start, applying to c only from the
	// bin after the snapshot (indexes must match: count them).
	fcount := newFeed(t)
	runSurgeScenario(fcount, 0, onsetBin+4, nil)
	fc.index = fcount.index
	fc.geo = fcount.geo
	runSurgeScenario(fc, onsetBin+4, onsetBin+30, nil)
	var sc bytes.Buffer
	if err := c.Snapshot(&sc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(sc.Bytes(), sa.Bytes()) {
		t.Fatalf("restored detector diverged (%d vs %d bytes)", sc.Len(), sa.Len())
	}
	fa2 := a.Findings(Filter{})
	fc2 := c.Findings(Filter{})
	if len(fa2) != len(fc2) || len(fa2) == 0 {
		t.Fatalf("findings %d vs %d", len(fa2), len(fc2))
	}
	for i := range fa2 {
		if !proto.Equal(fa2[i], fc2[i]) {
			t.Fatalf("finding %d differs:\n%v\n%v", i, fa2[i], fc2[i])
		}
	}
	// Empty reader: reset.
	if err := c.Restore(bytes.NewReader(nil)); err != nil || len(c.Findings(Filter{})) != 0 {
		t.Fatalf("reset: %v", err)
	}
	if err := c.Restore(bytes.NewReader([]byte("garbage"))); err == nil {
		t.Fatal("garbage snapshot accepted")
	}
}

func FuzzRestore(f *testing.F) {
	d := mustNew(f, surgeConfig())
	fd := newFeed(f, d)
	fd.send(fd.batch("s1", t0.Unix(), r{src: "45.1.2.3", port: 23, fps: map[string]uint64{"mirai": 1}},
		r{src: "93.1.1.1", class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, packets: 3}))
	var buf bytes.Buffer
	if err := d.Snapshot(&buf); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte{})
	f.Add([]byte("\x10jasper-detect-v1\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, data []byte) {
		d := mustNew(t, surgeConfig())
		if err := d.Restore(bytes.NewReader(data)); err != nil {
			return
		}
		// A restored state must be usable and re-encodable.
		var out bytes.Buffer
		if err := d.Snapshot(&out); err != nil {
			t.Fatal(err)
		}
		d.OnTick(1, time.Unix(t0.Unix()+3600, 0))
		d.Findings(Filter{})
	})
}
