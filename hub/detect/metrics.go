package detect

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	rows         prometheus.Counter
	research     prometheus.Counter
	binsClosed   prometheus.Counter
	findings     *prometheus.CounterVec
	openFindings prometheus.Gauge
	hosts        prometheus.Gauge
	victims      prometheus.Gauge
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
