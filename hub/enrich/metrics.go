package enrich

import "github.com/prometheus/client_golang/prometheus"

type dbCounters struct{ country, asn prometheus.Counter }

type labelCounters struct{ routable, bogon, research prometheus.Counter }

type metrics struct {
	lookups  dbCounters
	misses   dbCounters
	errors   prometheus.Counter
	rows     labelCounters
	research *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_enrich_lookups_total",
		Help: "Database lookups of source addresses, by database.",
	}, []string{"db"})
	misses := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_enrich_lookup_misses_total",
		Help: "Lookups that found no country or ASN, by database.",
	}, []string{"db"})
	errs := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jasper_enrich_lookup_errors_total",
		Help: "Lookups whose record could not be decoded.",
	})
	rows := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_enrich_rows_total",
		Help: "Enriched summary rows, by source label.",
	}, []string{"label"})
	research := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_enrich_research_sources_total",
		Help: "Source runs (consecutive rows of one source) labelled as a research scanner, by scanner name.",
	}, []string{"scanner"})
	if reg != nil {
		reg.MustRegister(lookups, misses, errs, rows, research)
	}
	return &metrics{
		lookups:  dbCounters{lookups.WithLabelValues("country"), lookups.WithLabelValues("asn")},
		misses:   dbCounters{misses.WithLabelValues("country"), misses.WithLabelValues("asn")},
		errors:   errs,
		rows:     labelCounters{rows.WithLabelValues("routable"), rows.WithLabelValues("bogon"), rows.WithLabelValues("research")},
		research: research,
	}
}
