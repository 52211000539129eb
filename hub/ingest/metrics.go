package ingest

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	batches  *prometheus.CounterVec
	rows     *prometheus.CounterVec
	refusals *prometheus.CounterVec
	streams  prometheus.Gauge
	ackTime  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		batches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_hub_ingest_batches_total",
			Help: "Sensor batches received, by outcome (acked, duplicate, refused).",
		}, []string{"outcome"}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_hub_ingest_rows_total",
			Help: "Summary rows received, by outcome (acked, duplicate, refused).",
		}, []string{"outcome"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_hub_ingest_refusals_total",
			Help: "Refusals sent to sensors, by reason.",
		}, []string{"reason"}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_hub_ingest_streams",
			Help: "Open sensor streams.",
		}),
		ackTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jasper_hub_ingest_ack_seconds",
			Help:    "Time from receiving a batch to acking it.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.batches, m.rows, m.refusals, m.streams, m.ackTime)
	}
	return m
}
