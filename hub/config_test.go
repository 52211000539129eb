package hub

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

const baseYAML = `
node_id: hub-1
data_dir: data
tls: {ca: ca.pem, cert: hub-1.pem, key: hub-1-key.pem}
`

func writeConfig(t *testing.T, dir, extra string) string {
	t.Helper()
	p := filepath.Join(dir, "hub.yaml")
	if !strings.Contains(extra, "raft:") {
		extra += "raft: {bind: 127.0.0.1:0}\n"
	}
	if !strings.Contains(extra, "ingest:") {
		extra += "ingest: {listen: 127.0.0.1:0}\n"
	}
	if err := os.WriteFile(p, []byte(baseYAML+extra), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	for _, tc := range []struct {
		extra, want string
	}{
		{"", ""},
		{"bogus: 1\n", `unknown key "bogus"`},
		{"log: {level: loud}\n", "log.level"},
		{"log: {format: xml}\n", "log.format"},
		{"ingest: {listen: nowhere}\n", "ingest.listen"},
		{"ingest: {listen: 127.0.0.1:0, max_batch_bytes: 10}\n", "ingest.max_batch_bytes"},
		{"ingest: {listen: 127.0.0.1:0, max_inflight: 3}\n", "max_inflight"},
		{"raft: {bind: 127.0.0.1:0, peers: [{id: h2, address: 127.0.0.1:1}]}\n", "raft.peers"},
		{"raft: {bind: 127.0.0.1:0, bootstrap: true, peers: [{id: h2}]}\n", "raft.peers[0].address"},
		{"raft: {bind: 127.0.0.1:0, election_timeout: 1ms}\n", "raft"},
		{"max_pending_rows: 0\n", "max_pending_rows"},
		{"tick_interval: soon\n", "line"},
		{"enrol: {listen: ':1'}\n", `unknown key "enrol"`},
		{"raft: {bind: 0.0.0.0:7000}\n", "raft.advertise"},
		{"ingest: {listen: ':7443'}\n", "ingest.advertise"},
		{"raft: {bind: 0.0.0.0:7000, advertise: 10.0.0.1:7000}\ningest: {listen: ':7443', advertise: 10.0.0.1:7443}\n", ""},
		{"runtime: {gc_percent: 5}\n", "runtime.gc_percent"},
		{"runtime: {gc_percent: -1}\n", "runtime.memory_limit_bytes"},
		{"runtime: {gc_percent: -1, memory_limit_bytes: 1073741824}\n", ""},
		{"runtime: {memory_limit_bytes: -2}\n", "runtime.memory_limit_bytes"},
		{"runtime: {gc_pct: 200}\n", "gc_pct"},
		{"metrics_pprof: true\nmetrics_listen: ''\n", "metrics_pprof"},
		{"raft: {bind: 127.0.0.1:0, log_cache_entries: -1}\n", "LogCacheEntries"},
	} {
		dir := t.TempDir()
		cfg, err := LoadConfig(writeConfig(t, dir, tc.extra))
		if err == nil {
			err = cfg.Validate()
		}
		if err == nil {
			err = cfg.CheckSections()
		}
		if tc.want == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.extra, err)
			}
			if cfg.DataDir != filepath.Join(dir, "data") || cfg.TLS.CA != filepath.Join(dir, "ca.pem") {
				t.Errorf("paths not resolved: %s %s", cfg.DataDir, cfg.TLS.CA)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error naming %q", tc.extra, err, tc.want)
		}
	}
	// No TLS: refused unless the demo flag is set by name.
	c := DefaultConfig()
	c.NodeID = "h"
	c.TLS = pki.Files{}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "tls.ca") {
		t.Fatalf("no TLS: %v", err)
	}
}

func TestSectionsAndRedaction(t *testing.T) {
	dir := t.TempDir()
	cfg, err := LoadConfig(writeConfig(t, dir, "clickhouse: {addr: 'ch:9000', password: hunter2}\nalerting: {smtp: {host: x, password: s3cret}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckSections("alerting"); err != nil {
		t.Fatal(err)
	}
	var ch struct {
		Addr     string `yaml:"addr"`
		Password string `yaml:"password"`
	}
	if err := cfg.Section("clickhouse", &ch); err != nil || ch.Addr != "ch:9000" || ch.Password != "hunter2" {
		t.Fatalf("clickhouse section: %+v %v", ch, err)
	}
	var strict struct {
		Addr string `yaml:"addr"`
	}
	if err := cfg.Section("clickhouse", &strict); err == nil || !strings.Contains(err.Error(), "password") {
		t.Fatalf("strict section decode: %v", err)
	}
	b, err := yaml.Marshal(cfg.Redacted())
	if err != nil {
		t.Fatal(err)
	}
	out := string(b)
	if strings.Contains(out, "hunter2") || strings.Contains(out, "s3cret") || strings.Count(out, "REDACTED") != 2 || !strings.Contains(out, "ch:9000") {
		t.Fatalf("redacted config:\n%s", out)
	}
	// The original is untouched.
	if err := cfg.Section("clickhouse", &ch); err != nil || ch.Password != "hunter2" {
		t.Fatal("Redacted changed the config")
	}
	// A clickhouse section without a loader in the binary is an error.
	cfg2, _ := LoadConfig(writeConfig(t, t.TempDir(), "clickhouse: {addr: 'ch:9000'}\n"))
	cfg2.TLS = cfg.TLS
	h, err := New(cfg2, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(); err == nil || !strings.Contains(err.Error(), "ClickHouse loader") {
		t.Fatalf("attach without loader: %v", err)
	}
}

// recModule counts what it sees.
type recModule struct{ ticks, batches int }

func (m *recModule) Name() string                             { return "rec" }
func (m *recModule) OnBatch(uint64, *jasperv1.CommittedBatch) { m.batches++ }
func (m *recModule) OnTick(uint64, time.Time)                 { m.ticks++ }
func (m *recModule) Apply(uint64, []byte) (any, error)        { return "applied", nil }
func (m *recModule) Snapshot(io.Writer) error                 { return nil }
func (m *recModule) Restore(io.Reader) error                  { return nil }

type svc struct{ started, stopped int }

func (s *svc) Start(context.Context) error { s.started++; return nil }
func (s *svc) Stop(context.Context) error  { s.stopped++; return nil }

func TestHubWiresExtensions(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_ = ca.Save(dir)
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	_ = pki.WriteIssued(dir, "hub-1", is)
	path := writeConfig(t, dir, "metrics_listen: 127.0.0.1:0\nmetrics_pprof: true\ntick_interval: 20ms\nraft: {bind: 127.0.0.1:0, bootstrap: true, heartbeat_timeout: 100ms, election_timeout: 100ms, leader_lease_timeout: 50ms}\nmine: {answer: 42}\n")
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(cfg, Deps{Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	s := &svc{}
	var section struct {
		Answer int `yaml:"answer"`
	}
	if err := h.Attach(Extension{Name: "other"}); err == nil || !strings.Contains(err.Error(), `"mine"`) {
		t.Fatalf("unclaimed section: %v", err)
	}
	err = h.Attach(Extension{Name: "mine", Attach: func(h *Hub) error {
		if err := h.Section("mine", &section); err != nil {
			return err
		}
		h.RegisterModule(&recModule{})
		h.AddService(s)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if section.Answer != 42 {
		t.Fatalf("section decoded %+v", section)
	}
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for h.Ready() != nil || !h.Store().IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("hub never became ready")
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, err := h.Store().Propose(ctx, "rec", []byte("x"))
	if err != nil || v != "applied" {
		t.Fatalf("propose: %v %v", v, err)
	}
	if h.IngestAddr() == "" || h.MetricsAddr() == "" || s.started != 1 {
		t.Fatalf("not started: ingest %q metrics %q service %d", h.IngestAddr(), h.MetricsAddr(), s.started)
	}
	// metrics_pprof: the runtime profiles are served beside /metrics.
	resp, err := http.Get("http://" + h.MetricsAddr() + "/debug/pprof/heap?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Fatalf("GET /debug/pprof/heap: %s %.100q", resp.Status, body)
	}
	if err := h.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := h.Stop(ctx); err != nil || s.stopped != 1 {
		t.Fatalf("second stop: %v, service stopped %d times", err, s.stopped)
	}
}

// TestPprofOffByDefault: without metrics_pprof the metrics port serves no
// profiles.
func TestPprofOffByDefault(t *testing.T) {
	o, err := obs.Listen("127.0.0.1:0", prometheus.NewRegistry(), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	o.Start()
	defer o.Stop(context.Background())
	resp, err := http.Get("http://" + o.Addr() + "/debug/pprof/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /debug/pprof/ without metrics_pprof: %s", resp.Status)
	}
	if DefaultConfig().MetricsPprof {
		t.Fatal("metrics_pprof on by default")
	}
}

// TestApplyRuntime sets the collector from the runtime section, and leaves
// it to GOGC / GOMEMLIMIT when they are set.
func TestApplyRuntime(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	t.Setenv("GOGC", "")
	t.Setenv("GOMEMLIMIT", "")
	ApplyRuntime(RuntimeConfig{GCPercent: 250, MemoryLimitBytes: 3 << 30}, nil)
	if got := debug.SetGCPercent(100); got != 250 {
		t.Fatalf("gc percent %d, want 250", got)
	}
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Fatalf("memory limit %d, want %d", got, 3<<30)
	}
	t.Setenv("GOGC", "150")
	ApplyRuntime(RuntimeConfig{GCPercent: 400}, nil)
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("gc percent %d with GOGC set, want the value left alone (100)", got)
	}
}
