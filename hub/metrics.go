package hub

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	info    *prometheus.GaugeVec
	started prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer, nodeID, version string) *metrics {
	m := &metrics{
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "jasper_hub_info",
			Help: "Constant 1, labelled with the hub's node id and version.",
		}, []string{"node_id", "version"}),
		started: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_hub_start_time_seconds",
			Help: "Unix time the hub started.",
		}),
	}
	m.info.WithLabelValues(nodeID, version).Set(1)
	if reg != nil {
		reg.MustRegister(m.info, m.started)
	}
	return m
}
