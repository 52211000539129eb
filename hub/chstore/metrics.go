package chstore

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	rows          prometheus.Counter
	batches       prometheus.Counter
	skipped       *prometheus.CounterVec
	invalid       prometheus.Counter
	insertSeconds *prometheus.HistogramVec
	errors        *prometheus.CounterVec
	pendingRows   prometheus.Gauge
	lagSeconds    prometheus.Gauge
	loadedIndex   prometheus.Gauge
	leader        prometheus.Gauge
	droppedParts  prometheus.Counter
	checks        prometheus.Counter
	rebuilds      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_loader_rows_total", Help: "Summary rows inserted into ClickHouse.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_loader_batches_total", Help: "Committed batches loaded into ClickHouse (marked loaded through raft).",
		}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_loader_skipped_batches_total", Help: "Batches not inserted into a table because ClickHouse already held them (found by the exactly-once check).",
		}, []string{"table"}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_loader_invalid_batches_total", Help: "Committed batches whose rows were malformed; their rows are skipped, their stats row is loaded with rows = 0.",
		}),
		insertSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jasper_loader_insert_seconds", Help: "Latency of one INSERT block.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"table"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_loader_errors_total", Help: "Loader errors by stage (source: Pending broke its contract, migrate, check, rebuild, leader: lost leadership mid-load, insert, mark, retention).",
		}, []string{"stage"}),
		pendingRows: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_loader_pending_rows", Help: "Summary rows committed but not yet loaded (lag), as last seen by the leader's loader.",
		}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_loader_lag_seconds", Help: "Age of the oldest committed batch not yet loaded (0 when none).",
		}),
		loadedIndex: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_loader_loaded_index", Help: "Raft index through which batches are loaded and marked.",
		}),
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_loader_leader", Help: "1 while this hub's loader is active (raft leader).",
		}),
		droppedParts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_loader_retention_dropped_partitions_total", Help: "Daily partitions dropped by retention.",
		}),
		checks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_loader_presence_checks_total", Help: "Exactly-once checks asking ClickHouse which pending batches it already holds.",
		}),
	}
	m.rebuilds = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jasper_loader_rollup_rebuilds_total", Help: "Days whose rollups were recomputed from summary after batches were found already loaded by a failed writer.",
	})
	for _, c := range []prometheus.Collector{m.rebuilds, m.rows, m.batches, m.skipped, m.invalid, m.insertSeconds,
		m.errors, m.pendingRows, m.lagSeconds, m.loadedIndex, m.leader, m.droppedParts, m.checks} {
		reg.MustRegister(c)
	}
	for _, s := range []string{"source", "migrate", "check", "rebuild", "leader", "insert", "mark", "retention"} {
		m.errors.WithLabelValues(s)
	}
	for _, t := range []string{TableSummary, TableSensorStats} {
		m.skipped.WithLabelValues(t)
		m.insertSeconds.WithLabelValues(t)
	}
	return m
}
