package spool

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	batches     prometheus.Gauge
	bytes       prometheus.Gauge
	appended    prometheus.Counter
	acked       prometheus.Counter
	shedBatches prometheus.Counter
	shedRows    prometheus.Counter
	quarantined prometheus.Counter
	rejected    prometheus.Counter
}

func newMetrics(*Spool) *metrics {
	return &metrics{
		batches: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_sensor_spool_batches", Help: "Batches in the spool not yet acknowledged by a hub.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_sensor_spool_bytes", Help: "Bytes of spool segment files on disk.",
		}),
		appended: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_appended_batches_total", Help: "Batches written to the spool.",
		}),
		acked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_acked_batches_total", Help: "Batches removed from the spool after a hub acknowledged them.",
		}),
		shedBatches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_shed_batches_total", Help: "Unacknowledged batches lost because the spool was full.",
		}),
		shedRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_shed_rows_total", Help: "Summary rows inside shed batches.",
		}),
		quarantined: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_quarantined_segments_total", Help: "Torn or corrupt segment files moved to quarantine at open.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_spool_rejected_batches_total", Help: "Batches a hub refused for good, moved to quarantine.",
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.batches, m.bytes, m.appended, m.acked, m.shedBatches, m.shedRows, m.quarantined, m.rejected} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

func (m *metrics) setDepth(batches int, bytes int64) {
	m.batches.Set(float64(batches))
	m.bytes.Set(float64(bytes))
}
