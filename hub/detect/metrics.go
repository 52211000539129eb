package detect

import (
	"github.com/prometheus/client_golang/prometheus"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type metrics struct {
	rows         prometheus.Counter
	research     prometheus.Counter
	binsClosed   prometheus.Counter
	findings     *prometheus.CounterVec
	openFindings prometheus.Gauge
	hosts        prometheus.Gauge
	victims      prometheus.Gauge
	// byType caches the findings counters of the known types (new,
	// ended).
	byType [8][2]prometheus.Counter
}

// finding returns the findings counter of type t and event ("new" or
// "ended").
func (m *metrics) finding(t jasperv1.FindingType, event string) prometheus.Counter {
	e := 0
	if event == "ended" {
		e = 1
	}
	if t < 0 || int(t) >= len(m.byType) {
		return m.findings.WithLabelValues(typeName(t), event)
	}
	c := m.byType[t][e]
	if c == nil {
		c = m.findings.WithLabelValues(typeName(t), event)
		m.byType[t][e] = c
	}
	return c
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_detect_rows_total", Help: "Summary rows fed to the detectors.",
		}),
		research: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_detect_research_rows_total", Help: "Rows from known research scanners, counted and never alerted on.",
		}),
		binsClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_detect_bins_closed_total", Help: "Bins judged by the surge detectors.",
		}),
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_detect_findings_total", Help: "Findings raised and ended, by type.",
		}, []string{"type", "event"}),
		openFindings: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_detect_open_findings", Help: "Findings currently open.",
		}),
		hosts: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_detect_tracked_hosts", Help: "Candidate infected hosts tracked.",
		}),
		victims: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_detect_tracked_victims", Help: "Backscatter sources (candidate DoS victims) tracked.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.rows, m.research, m.binsClosed, m.findings, m.openFindings, m.hosts, m.victims)
	}
	return m
}
