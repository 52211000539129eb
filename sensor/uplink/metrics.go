package uplink

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	acks       *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	sent       prometheus.Counter
	inflight   prometheus.Gauge
	connected  prometheus.Gauge
	reconnects prometheus.Counter
	ackLatency prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		acks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_uplink_acks_total", Help: "Batches acknowledged by a hub, by kind (new, duplicate).",
		}, []string{"kind"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_uplink_refusals_total", Help: "Refusals received from hubs, by reason.",
		}, []string{"reason"}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_uplink_sent_batches_total", Help: "Batches sent to a hub (resends included).",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_sensor_uplink_inflight_batches", Help: "Batches sent and not yet answered.",
		}),
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_sensor_uplink_connected", Help: "1 while a hub has welcomed the stream.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_uplink_reconnects_total", Help: "Streams that failed or broke and were retried after backoff.",
		}),
		ackLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jasper_sensor_uplink_ack_latency_seconds",
			Help:    "Time from sending a batch to its acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
		}),
	}
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.acks, m.refusals, m.sent, m.inflight, m.connected, m.reconnects, m.ackLatency} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
