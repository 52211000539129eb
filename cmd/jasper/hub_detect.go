package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/detect"
	"github.com/jasperfed/jasper/hub/enrich"
	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// The detection extensions of `jasper hub run`:
//
//   - "enrich" owns the top-level `enrich:` section (hub/enrich.Config:
//     country_db, asn_db, research). It always sets an enricher, which the
//     leader runs before proposing a batch: bogon and research labels need
//     no database; with country_db/asn_db (built by `jasper geo build
//     --out DIR`, relative paths resolved against the config file) sources
//     also get their country and ASN, and every finding records the
//     databases' build date. Without databases the hub runs, countries stay
//     unknown (so country routing of alerts and country surges see nothing)
//     and it says so in the log line "geo_databases_missing".
//   - "detect" owns the top-level `detect:` section (hub/detect.Config, keys
//     as in detect.DefaultConfig: bin, quiet_period, infected_host,
//     dos_victim, port_surge, ...). It always registers the detectors' FSM
//     module "detect" (every hub of a cluster must run the same modules),
//     hands their findings to alerting (publishHubFindings) and gives them
//     to the dashboards (setDashboardsFindings).
//
// `jasper hub run --check` decodes and validates both sections too, naming
// a bad key with its line.
func init() {
	hubExtensions = append(hubExtensions,
		hub.Extension{Name: "enrich", Attach: attachEnrich, Check: checkEnrich},
		hub.Extension{Name: "detect", Attach: attachDetect, Check: checkDetect})
}

// enrichSection decodes the `enrich:` section strictly over the defaults,
// resolves the database paths against the config file and validates it.
func enrichSection(cfg hub.Config) (enrich.Config, error) {
	c := enrich.DefaultConfig()
	if err := cfg.Section("enrich", &c); err != nil {
		return c, err // names the section and its line
	}
	c.CountryDB = config.Resolve(cfg.Path, c.CountryDB)
	c.ASNDB = config.Resolve(cfg.Path, c.ASNDB)
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("enrich.%w", err)
	}
	return c, nil
}

// detectSection decodes the `detect:` section strictly over
// detect.DefaultConfig and validates it.
func detectSection(cfg hub.Config) (detect.Config, error) {
	c := detect.DefaultConfig()
	if err := cfg.Section("detect", &c); err != nil {
		return c, err // names the section and its line
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("detect.%w", err)
	}
	return c, nil
}

// checkEnrich validates the enrich section for `hub run --check`, and that
// the geo databases it names open.
func checkEnrich(cfg hub.Config) error {
	ec, err := enrichSection(cfg)
	if err != nil {
		return err
	}
	if ec.CountryDB != "" || ec.ASNDB != "" {
		e, err := enrich.New(ec, enrich.Deps{})
		if err != nil {
			return fmt.Errorf("enrich: %w", err)
		}
		e.Close()
	}
	return nil
}

// checkDetect validates the detect section for `hub run --check`.
func checkDetect(cfg hub.Config) error {
	_, err := detectSection(cfg)
	return err
}

// attachEnrich sets the hub's enricher from the `enrich:` section.
func attachEnrich(h *hub.Hub) error {
	ec, err := enrichSection(h.Config())
	if err != nil {
		return err
	}
	e, err := enrich.New(ec, enrich.Deps{Registerer: h.Registerer()})
	if err != nil {
		return err
	}
	log := h.Log().With("component", "enrich")
	if ec.CountryDB == "" || ec.ASNDB == "" {
		log.Warn("geo_databases_missing", "country_db", ec.CountryDB, "asn_db", ec.ASNDB,
			"effect", "sources without a database get no country or ASN (country unknown); bogon and research labels still apply",
			"fix", "jasper geo build --out DIR, then enrich: {country_db: DIR/country.mmdb, asn_db: DIR/asn.mmdb}")
	} else {
		log.Info("geo_databases_loaded", "country_db", ec.CountryDB, "asn_db", ec.ASNDB, "version", e.Version())
	}
	if len(ec.Research) > 0 {
		log.Info("research_scanners", "count", len(ec.Research))
	}
	h.SetEnricher(e)
	h.AddService(enricherCloser{e})
	return nil
}

// enricherCloser releases the databases when the hub stops.
type enricherCloser struct{ e *enrich.Enricher }

func (enricherCloser) Start(context.Context) error  { return nil }
func (c enricherCloser) Stop(context.Context) error { c.e.Close(); return nil }

// attachDetect registers the detectors and wires their findings.
func attachDetect(h *hub.Hub) error {
	dc, err := detectSection(h.Config())
	if err != nil {
		return err
	}
	det, err := detect.New(dc, detect.Deps{Log: h.Log(), Registerer: h.Registerer()})
	if err != nil {
		return err
	}
	h.RegisterModule(det)
	log := h.Log().With("component", "detect")
	det.OnFinding(logFinding(log))
	det.OnFinding(publishHubFindings(h))
	setDashboardsFindings(h, detectFindings(det))
	log.Info("detectors_registered",
		"infected_host", dc.Infected.Enabled, "dos_victim", dc.DoS.Enabled, "port_surge", dc.PortSurge.Enabled,
		"new_port", dc.NewPort.Enabled, "fingerprint_surge", dc.Fingerprint.Enabled, "country_surge", dc.CountrySurge.Enabled,
		"include_bogon_sources", dc.IncludeBogonSources)
	return nil
}

// logFinding logs every new and ended finding (one line each, at apply
// time on every hub; continuing updates are not logged).
func logFinding(log *slog.Logger) func(*jasperv1.Finding) {
	return func(f *jasperv1.Finding) {
		msg := "finding_new"
		switch f.State {
		case jasperv1.FindingState_FINDING_STATE_CONTINUING:
			return
		case jasperv1.FindingState_FINDING_STATE_ENDED:
			msg = "finding_ended"
		}
		var src string
		if a, ok := netip.AddrFromSlice(f.SrcIp); ok {
			src = a.Unmap().String()
		}
		log.Info(msg, "id", f.Id, "type", strings.ToLower(strings.TrimPrefix(f.Type.String(), "FINDING_TYPE_")),
			"src", src, "src_country", f.SrcCountry, "port", f.Port, "country", f.Country,
			"packets", f.Packets, "detected_at_ms", f.DetectedAtMs, "first_seen_ms", f.FirstSeenMs, "index", f.UpdatedIndex)
	}
}

// detectFindings lists the detector's findings (open and recently ended)
// for the dashboards. Acknowledgements and silences live in alerting's
// outbox and are not joined here.
func detectFindings(det *detect.Detector) dashboards.FindingsProvider {
	return dashboards.FindingsFunc(func(context.Context) ([]dashboards.FindingRecord, error) {
		fs := det.Findings(detect.Filter{})
		out := make([]dashboards.FindingRecord, len(fs))
		for i, f := range fs {
			out[i] = dashboards.FindingRecord{Finding: f}
		}
		return out, nil
	})
}
