package main

import (
	"context"
	"fmt"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/enrich"
	"github.com/jasperfed/jasper/internal/config"
)

// The "enrich" extension of `jasper hub run` owns the top-level `enrich:`
// section (hub/enrich.Config: country_db, asn_db, research) and is described
// with the detection extensions in hub_detect.go. The detectors' extensions
// are registered right after it.
func init() {
	hubExtensions = append(hubExtensions, hub.Extension{Name: "enrich", Attach: attachEnrich, Check: checkEnrich})
	hubExtensions = append(hubExtensions, detectExtensions...)
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
