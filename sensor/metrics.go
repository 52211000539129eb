package sensor

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type metrics struct {
	packets       *prometheus.CounterVec
	bytes         *prometheus.CounterVec
	rows          prometheus.Counter
	batches       prometheus.Counter
	frames        *prometheus.CounterVec
	sourceDone    prometheus.Gauge
	replaySkipped prometheus.Counter
	lost          prometheus.Counter
	lostRows      prometheus.Counter
	classNames    map[jasperv1.TrafficClass]string
}

func newMetrics() *metrics {
	m := &metrics{
		packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_packets_total", Help: "Darknet packets summarised, by traffic class.",
		}, []string{"class"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_bytes_total", Help: "Bytes of darknet packets summarised, by traffic class.",
		}, []string{"class"}),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_rows_total", Help: "Summary rows sealed into batches.",
		}),
		batches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_batches_total", Help: "Batches sealed by the summariser.",
		}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_frames_total",
			Help: "Frames by what became of them: seen (all), outside_darknet, kernel_drop, decode_error, fragment, non_ip, summarised.",
		}, []string{"outcome"}),
		sourceDone: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "jasper_sensor_source_finished", Help: "1 once a finite source (replayed file) has been read to the end.",
		}),
		replaySkipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_replay_skipped_batches_total", Help: "Batches a resumed replay made again and dropped because they were spooled before the restart.",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_lost_batches_total", Help: "Sealed batches the spool could not store (disk errors): lost data.",
		}),
		lostRows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_sensor_lost_rows_total", Help: "Summary rows in lost batches.",
		}),
		classNames: map[jasperv1.TrafficClass]string{},
	}
	for v, name := range jasperv1.TrafficClass_name {
		c := jasperv1.TrafficClass(v)
		m.classNames[c] = strings.ToLower(strings.TrimPrefix(name, "TRAFFIC_CLASS_"))
	}
	return m
}

func (m *metrics) register(reg prometheus.Registerer) error {
	for _, c := range []prometheus.Collector{m.packets, m.bytes, m.rows, m.batches, m.frames, m.sourceDone, m.replaySkipped, m.lost, m.lostRows} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}

// observe counts a sealed batch: its rows by class and its stats.
func (m *metrics) observe(b *jasperv1.Batch) {
	m.batches.Inc()
	r := b.GetRows()
	m.rows.Add(float64(len(r.GetSrcIp())))
	for i, c := range r.GetClass() {
		name, ok := m.classNames[c]
		if !ok {
			name = "unknown"
		}
		if i < len(r.GetPackets()) {
			m.packets.WithLabelValues(name).Add(float64(r.Packets[i]))
		}
		if i < len(r.GetBytes()) {
			m.bytes.WithLabelValues(name).Add(float64(r.Bytes[i]))
		}
	}
	st := b.GetStats()
	for _, o := range []struct {
		name string
		v    uint64
	}{
		{"seen", st.GetPacketsSeen()},
		{"outside_darknet", st.GetOutsideDarknet()},
		{"kernel_drop", st.GetKernelDrops()},
		{"decode_error", st.GetDecodeErrors()},
		{"fragment", st.GetFragments()},
		{"non_ip", st.GetNonIp()},
		{"summarised", st.GetPacketsSummarised()},
	} {
		m.frames.WithLabelValues(o.name).Add(float64(o.v))
	}
}
