//go:build !jasper_nodetect

package main

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/enrich"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// geoTestDir finds geo databases built by `jasper geo build` (CI sets
// $JASPER_TEST_GEO_DIR), or "".
func geoTestDir() string {
	var dirs []string
	if d := os.Getenv("JASPER_TEST_GEO_DIR"); d != "" {
		dirs = append(dirs, d)
	}
	if d, err := os.UserCacheDir(); err == nil {
		dirs = append(dirs, filepath.Join(d, "jasper", "geo-db"))
	}
	for _, d := range dirs {
		_, e1 := os.Stat(filepath.Join(d, "country.mmdb"))
		_, e2 := os.Stat(filepath.Join(d, "asn.mmdb"))
		if e1 == nil && e2 == nil {
			return d
		}
	}
	return ""
}

// detectTestHub writes a hub config with the given extra sections, and TLS
// files, into a fresh folder; it returns the config path.
func detectTestHub(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("detect ext test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteIssued(dir, "hub-1", is); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "hub.yaml")
	y := `
node_id: hub-1
metrics_listen: ""
data_dir: data
tls: {ca: ca.pem, cert: hub-1.pem, key: hub-1-key.pem}
raft: {bind: 127.0.0.1:0, bootstrap: true}
ingest: {listen: 127.0.0.1:0}
tick_interval: 200ms
` + extra
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// scanBatch is one batch of a scanner at src: packets to 20 dark
// addresses on port 23.
func scanBatch(seq uint64, src []byte) *jasperv1.Batch {
	bin := time.Now().Unix() / 60 * 60
	return &jasperv1.Batch{Sequence: seq, BinStart: bin, BinSeconds: 60, Rows: &jasperv1.Rows{
		SrcIp: [][]byte{src}, Protocol: []uint32{6}, DstPort: []uint32{23}, IcmpType: []uint32{0}, IcmpCode: []uint32{0},
		Class: []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN}, Packets: []uint64{40}, Bytes: []uint64{2400},
		DstIps: []uint32{20}, FirstSeenMs: []uint32{100}, LastSeenMs: []uint32{900}, TtlMin: []uint32{50}, TtlMax: []uint32{50},
		DistinctPorts: []uint32{1}, Overflow: []bool{false}, Fragments: []uint32{0},
	}}
}

// TestHubDetectExtension runs a one-hub cluster from a config file with
// enrich and detect sections: a scanner's committed batch becomes an
// infected-host finding that alerting's subscribers and the dashboards
// get, with the country and geo database version from the enricher.
func TestHubDetectExtension(t *testing.T) {
	geo := geoTestDir()
	if geo == "" {
		t.Skip("no geo databases: run `jasper geo build --out DIR` and set JASPER_TEST_GEO_DIR (CI does)")
	}
	path := detectTestHub(t, `
enrich:
  country_db: `+filepath.Join(geo, "country.mmdb")+`
  asn_db: `+filepath.Join(geo, "asn.mmdb")+`
detect:
  infected_host: {min_packets: 20, min_dst_ips: 10}
`)
	cfg, err := hub.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry(), Log: slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []*jasperv1.Finding
	subscribeHubFindings(h, func(f *jasperv1.Finding) {
		mu.Lock()
		got = append(got, f)
		mu.Unlock()
	})
	if err := h.Attach(hub.Extension{Name: "enrich", Attach: attachEnrich}, hub.Extension{Name: "detect", Attach: attachDetect}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { setDashboardsFindings(h, nil) })
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	deadline := time.Now().Add(15 * time.Second)
	for !h.Store().IsLeader() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	logMu.Lock()
	if !strings.Contains(logs.String(), "geo_databases_loaded") {
		t.Errorf("no geo_databases_loaded log line:\n%s", logs.String())
	}
	logMu.Unlock()
	// The hub enriches in ingest; a committed batch carries what the same
	// enricher gives (the FSM reads it, never looks up).
	e, err := enrich.New(enrich.Config{CountryDB: filepath.Join(geo, "country.mmdb"), ASNDB: filepath.Join(geo, "asn.mmdb")}, enrich.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	src := []byte{8, 8, 8, 8}
	want := e.Lookup(netip.AddrFrom4([4]byte(src)))
	b := scanBatch(1, src)
	if _, err := h.Store().ProposeBatch(ctx, &jasperv1.CommittedBatch{SensorId: "s1", SensorCountry: "JP", Batch: b, Enrichment: e.Enrich(b)}, 0); err != nil {
		t.Fatal(err)
	}
	var f *jasperv1.Finding
	for time.Now().Before(deadline.Add(5 * time.Second)) {
		mu.Lock()
		if len(got) > 0 {
			f = got[0]
		}
		mu.Unlock()
		if f != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if f == nil {
		t.Fatal("no finding published to alerting's subscribers")
	}
	if f.Type != jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST || !bytes.Equal(f.SrcIp, src) ||
		f.SrcCountry != want.Country || f.SrcCountry == "" || f.GeoDbVersion != e.Version() {
		t.Fatalf("finding %v; want infected host %v country %q geo %q", f, src, want.Country, e.Version())
	}
	recs, err := lateWired{h}.Findings(ctx)
	if err != nil || len(recs) != 1 || recs[0].Finding.Id != f.Id {
		t.Fatalf("dashboards findings %v %v; want %s", recs, err, f.Id)
	}
}

// TestHubDetectNoGeo: without an enrich section the hub runs, says that
// countries are unknown, and bogon sources are still labelled (no finding
// for a private scanner unless include_bogon_sources).
func TestHubDetectNoGeo(t *testing.T) {
	path := detectTestHub(t, "detect: {include_bogon_sources: false}\n")
	cfg, err := hub.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry(), Log: slog.New(slog.NewTextHandler(lockedWriter{&logs, &logMu}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(hub.Extension{Name: "enrich", Attach: attachEnrich}, hub.Extension{Name: "detect", Attach: attachDetect}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { setDashboardsFindings(h, nil) })
	logMu.Lock()
	l := logs.String()
	logMu.Unlock()
	if !strings.Contains(l, "geo_databases_missing") || !strings.Contains(l, "country unknown") || !strings.Contains(l, "detectors_registered") {
		t.Fatalf("log lacks geo_databases_missing / detectors_registered:\n%s", l)
	}
}

// TestHubRunCheckDetect: `jasper hub run --check` names a bad key of the
// detect and enrich sections (with its line) and a database that does not
// open, and passes a good config.
func TestHubRunCheckDetect(t *testing.T) {
	run := hubCommands["run"].run
	for _, c := range []struct{ extra, want string }{
		{"detect:\n  infected_host: {min_packetz: 3}\n", "min_packetz"},
		{"detect:\n  infected_host: {min_packets: 0}\n", "detect.infected_host.min_packets"},
		{"detect:\n  bin: 7s\n", "detect.bin"},
		{"enrich:\n  country_dbb: x.mmdb\n", "country_dbb"},
		{"enrich:\n  country_db: missing.mmdb\n", "missing.mmdb"},
		{"enrich:\n  research: [{name: census}]\n", "enrich.research[0]"},
	} {
		path := detectTestHub(t, c.extra)
		err := run(context.Background(), []string{"--config", path, "--check"})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: --check gave %v; want an error naming %s", c.extra, err, c.want)
		}
		if err != nil && strings.Contains(c.extra, "min_packetz") && !strings.Contains(err.Error(), "line ") {
			t.Errorf("%q: error %v has no line", c.extra, err)
		}
	}
	path := detectTestHub(t, "detect:\n  infected_host: {min_packets: 5}\nenrich:\n  research: [{name: census, prefixes: [192.0.2.0/24]}]\n")
	if err := run(context.Background(), []string{"--config", path, "--check"}); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

type lockedWriter struct {
	b  *bytes.Buffer
	mu *sync.Mutex
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
