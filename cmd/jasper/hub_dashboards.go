package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jasperfed/jasper/alerting/stix"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/rollup"
	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "dashboards", Attach: attachDashboards})
}

// dashboardsWiring holds what other hub extensions give each hub's
// dashboards, per hub (the demo runs several hubs in one process, and each
// dashboard must show its own hub's findings and act through its own
// alerting). Extensions call the set functions below from their Attach, in
// any order; the dashboards read the values at request time.
var dashboardsWiring struct {
	sync.Mutex
	hubs map[*hub.Hub]*dashboardsWires
}

type dashboardsWires struct {
	findings   dashboards.FindingsProvider
	actions    dashboards.Actions
	certExpiry dashboards.CertExpiry
}

// wireDashboards changes hub h's wiring under the lock.
func wireDashboards(h *hub.Hub, set func(w *dashboardsWires)) {
	dashboardsWiring.Lock()
	defer dashboardsWiring.Unlock()
	if dashboardsWiring.hubs == nil {
		dashboardsWiring.hubs = map[*hub.Hub]*dashboardsWires{}
	}
	w := dashboardsWiring.hubs[h]
	if w == nil {
		w = &dashboardsWires{}
		dashboardsWiring.hubs[h] = w
	}
	set(w)
}

// dashboardsWired returns a copy of hub h's wiring (zero when none).
func dashboardsWired(h *hub.Hub) dashboardsWires {
	dashboardsWiring.Lock()
	defer dashboardsWiring.Unlock()
	if w := dashboardsWiring.hubs[h]; w != nil {
		return *w
	}
	return dashboardsWires{}
}

// setDashboardsFindings gives hub h's dashboards its findings (hub/detect).
func setDashboardsFindings(h *hub.Hub, p dashboards.FindingsProvider) {
	wireDashboards(h, func(w *dashboardsWires) { w.findings = p })
}

// setDashboardsActions gives hub h's dashboards acknowledge/silence
// (alerting).
func setDashboardsActions(h *hub.Hub, a dashboards.Actions) {
	wireDashboards(h, func(w *dashboardsWires) { w.actions = a })
}

// setDashboardsCertExpiry gives hub h's dashboards sensor certificate
// expiry (enrolment).
func setDashboardsCertExpiry(h *hub.Hub, f dashboards.CertExpiry) {
	wireDashboards(h, func(w *dashboardsWires) { w.certExpiry = f })
}

// lateWired forwards to whatever was wired for its hub when a request
// comes.
type lateWired struct{ h *hub.Hub }

func (l lateWired) Findings(ctx context.Context) ([]dashboards.FindingRecord, error) {
	p := dashboardsWired(l.h).findings
	if p == nil {
		return nil, nil
	}
	return p.Findings(ctx)
}

func (l lateWired) Acknowledge(ctx context.Context, id, user, note string) error {
	a := dashboardsWired(l.h).actions
	if a == nil {
		return dashboards.ErrNotConfigured
	}
	return a.Acknowledge(ctx, id, user, note)
}

func (l lateWired) Silence(ctx context.Context, id, user string, until time.Time, note string) error {
	a := dashboardsWired(l.h).actions
	if a == nil {
		return dashboards.ErrNotConfigured
	}
	return a.Silence(ctx, id, user, until, note)
}

func (l lateWired) certExpiry(ctx context.Context) (map[string]time.Time, error) {
	f := dashboardsWired(l.h).certExpiry
	if f == nil {
		return nil, nil
	}
	return f(ctx)
}

// stixExport writes findings as one STIX 2.1 bundle (TLP:AMBER) with the
// objects alerting/stix makes for each finding, each object once.
func stixExport(_ context.Context, w io.Writer, fs []*jasperv1.Finding) error {
	m, err := stix.TLP("amber", "2.0")
	if err != nil {
		return err
	}
	objs := []stix.Object{stix.Identity(), m.Object}
	seen := map[any]bool{objs[0]["id"]: true, objs[1]["id"]: true}
	for _, f := range fs {
		for _, o := range stix.Objects(f, m) {
			if !seen[o["id"]] {
				seen[o["id"]] = true
				objs = append(objs, o)
			}
		}
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	id[6], id[8] = id[6]&0x0f|0x40, id[8]&0x3f|0x80
	b := stix.Bundle{Type: "bundle", Objects: objs,
		ID: fmt.Sprintf("bundle--%x-%x-%x-%x-%x", id[0:4], id[4:6], id[6:8], id[8:10], id[10:16])}
	return json.NewEncoder(w).Encode(b)
}

// dashboardsSection is the hub's `dashboards:` section.
type dashboardsSection struct {
	dashboards.Config `yaml:",inline"`
	// Listen is the HTTPS address of the web UI and API ("" serves none).
	Listen string `yaml:"listen"`
	// TLSCert and TLSKey are the server certificate shown to browsers.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// InsecurePlaintext serves plain HTTP: only for a local demo.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// Source is embedded (the rollups), clickhouse (the hub's clickhouse
	// section), or auto: clickhouse when the hub has one.
	Source string `yaml:"source"`
	// Rollup bounds the embedded rollups (every hub must use the same).
	Rollup rollupSection `yaml:"rollup"`
}

type rollupSection struct {
	BinSeconds     int64           `yaml:"bin_seconds"`
	Window         config.Duration `yaml:"window"`
	MaxCellsPerBin int             `yaml:"max_cells_per_bin"`
	MaxHostsPerBin int             `yaml:"max_hosts_per_bin"`
}

// attachDashboards registers the rollups module on every hub (so all run
// the same FSM modules) and, when dashboards.listen is set, serves the web
// UI and API. Findings, acknowledge/silence and certificate expiry come
// from the extensions that call setDashboardsFindings, setDashboardsActions
// and setDashboardsCertExpiry; until then the views show none (actions
// answer 501). STIX export uses alerting/stix.
func attachDashboards(h *hub.Hub) error {
	rc := rollup.DefaultConfig()
	sec := dashboardsSection{Config: dashboards.DefaultConfig(), Source: "auto", Rollup: rollupSection{
		BinSeconds: rc.BinSeconds, Window: config.Duration(rc.Window),
		MaxCellsPerBin: rc.MaxCellsPerBin, MaxHostsPerBin: rc.MaxHostsPerBin}}
	if err := h.Section("dashboards", &sec); err != nil {
		return err
	}
	rc.BinSeconds, rc.Window = sec.Rollup.BinSeconds, sec.Rollup.Window.D()
	rc.MaxCellsPerBin, rc.MaxHostsPerBin = sec.Rollup.MaxCellsPerBin, sec.Rollup.MaxHostsPerBin
	mod, err := rollup.New(rc)
	if err != nil {
		return fmt.Errorf("dashboards.%w", err)
	}
	h.RegisterModule(mod)
	if sec.Listen == "" {
		h.Log().Info("dashboards_disabled", "reason", "dashboards.listen not set")
		return nil
	}
	path := h.Config().Path
	sec.AccountsFile = config.Resolve(path, sec.AccountsFile)
	var tlsCfg *tls.Config
	switch {
	case sec.TLSCert != "" && sec.TLSKey != "":
		cert, err := tls.LoadX509KeyPair(config.Resolve(path, sec.TLSCert), config.Resolve(path, sec.TLSKey))
		if err != nil {
			return fmt.Errorf("dashboards.tls_cert/tls_key: %w", err)
		}
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	case sec.InsecurePlaintext:
		h.Log().Warn("dashboards_plaintext", "listen", sec.Listen, "reason", "dashboards.insecure_plaintext is set: local demo only")
	default:
		return errors.New("dashboards: tls_cert and tls_key are required (or insecure_plaintext: true for a local demo)")
	}
	embedded := dashboards.NewEmbeddedSource(mod)
	var src dashboards.Source = embedded
	useCH := sec.Source == "clickhouse" || sec.Source == "auto" && h.Config().HasSection("clickhouse")
	switch {
	case sec.Source != "auto" && sec.Source != "embedded" && sec.Source != "clickhouse":
		return fmt.Errorf("dashboards.source: %q is not auto, embedded or clickhouse", sec.Source)
	case useCH:
		chc := chstore.DefaultConfig()
		if err := h.Section("clickhouse", &chc); err != nil {
			return err
		}
		conn, err := chstore.Open(chc)
		if err != nil {
			return fmt.Errorf("dashboards: clickhouse: %w", err)
		}
		if src, err = dashboards.NewClickHouseSource(conn, chc.Database, embedded); err != nil {
			return err
		}
	}
	srv, err := dashboards.New(sec.Config, dashboards.Deps{Log: h.Log(), Registerer: h.Registerer(), Source: src,
		Findings: lateWired{h}, Actions: lateWired{h}, STIX: stixExport, CertExpiry: lateWired{h}.certExpiry})
	if err != nil {
		return err
	}
	h.AddService(&dashboardsService{addr: sec.Listen, tls: tlsCfg, handler: srv, srv: srv})
	return nil
}

// dashboardsService serves the dashboards as a hub service.
type dashboardsService struct {
	addr    string
	tls     *tls.Config
	handler http.Handler
	srv     *dashboards.Server
	http    *http.Server
	done    chan error
}

func (s *dashboardsService) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("dashboards listen %s: %w", s.addr, err)
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls)
	}
	s.http = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 2 * time.Minute, TLSConfig: s.tls}
	s.done = make(chan error, 1)
	go func() { s.done <- s.http.Serve(ln) }()
	return nil
}

func (s *dashboardsService) Stop(ctx context.Context) error {
	if s.http == nil {
		return nil
	}
	err := s.http.Shutdown(ctx)
	s.srv.Stop()
	if serr := <-s.done; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	s.http = nil
	return err
}
