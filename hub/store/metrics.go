package store

import (
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	applyLatency  prometheus.Histogram
	proposerBatch prometheus.Histogram
	proposals     *prometheus.CounterVec
	forwarded     *prometheus.CounterVec

	logCacheHits, logCacheMisses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Store) *metrics {
	m := &metrics{
		applyLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jasper_hub_raft_apply_seconds",
			Help:    "Time from proposing a raft entry to its application on the leader.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
		}),
		proposerBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "jasper_hub_proposer_batches_per_entry",
			Help:    "Sensor batches grouped into one raft entry.",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
		}),
		proposals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_hub_raft_proposals_total",
			Help: "Raft entries proposed by this hub, by command type and outcome.",
		}, []string{"type", "outcome"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_hub_forwarded_proposals_total",
			Help: "Module proposals this follower forwarded to the leader, by outcome (ok, refused by the module or store, error reaching the leader, no_leader known).",
		}, []string{"outcome"}),
		logCacheHits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_hub_raft_log_cache_hits_total",
			Help: "Raft log reads (replication, follower apply) served from the in-memory cache of the newest entries.",
		}),
		logCacheMisses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_hub_raft_log_cache_misses_total",
			Help: "Raft log reads that went to the bolt log store.",
		}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.applyLatency, m.proposerBatch, m.proposals, m.forwarded, m.logCacheHits, m.logCacheMisses,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_raft_commit_index", Help: "Raft commit index."},
			func() float64 { return float64(s.raftIndexes().commit) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_raft_applied_index", Help: "Raft applied index."},
			func() float64 { return float64(s.raftIndexes().applied) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_raft_last_index", Help: "Last raft log index."},
			func() float64 { return float64(s.raftIndexes().last) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_raft_leader", Help: "1 when this hub is the raft leader."},
			func() float64 {
				if s.IsLeader() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_pending_rows", Help: "Committed rows waiting for the loader."},
			func() float64 { return float64(s.PendingRows()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_hub_loaded_index", Help: "Raft index the loader has loaded through."},
			func() float64 { _, l, _ := s.fsm.counters(); return float64(l) }),
	)
	return m
}
