package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/chstore"
	"github.com/jasperfed/jasper/hub/rollup"
	"github.com/jasperfed/jasper/internal/config"
)

func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "dashboards", Attach: attachDashboards})
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
// UI and API. Findings, actions, STIX and certificate expiry are not wired
// here yet: the views show none until hub/detect and alerting are.
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
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
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
	srv, err := dashboards.New(sec.Config, dashboards.Deps{Log: h.Log(), Registerer: h.Registerer(), Source: src})
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
