package uplink_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/spool"
	"github.com/jasperfed/jasper/sensor/uplink"
	"github.com/jasperfed/jasper/sensor/uplink/uplinktest"
)

const sensorID = "jp-tokyo-1"

type fixture struct {
	pki   uplinktest.PKI
	spool *spool.Spool
	reg   *prometheus.Registry
	dir   string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	p, err := uplinktest.NewPKI(filepath.Join(dir, "pki"), sensorID, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 1 << 20, SegmentBytes: 4096, MaxQuarantineFiles: 8}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return &fixture{pki: p, spool: sp, reg: prometheus.NewRegistry(), dir: dir}
}

func (f *fixture) hub(t *testing.T) *uplinktest.Hub {
	t.Helper()
	h, err := uplinktest.Start("127.0.0.1:0", f.pki.Hub)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h
}

func (f *fixture) append(t *testing.T, n int) []*jasperv1.Batch {
	t.Helper()
	var out []*jasperv1.Batch
	for i := range n {
		b := &jasperv1.Batch{BinStart: 1_700_000_040, BinSeconds: 60, Stats: &jasperv1.SensorStats{PacketsSeen: uint64(i + 1)},
			Rows: &jasperv1.Rows{SrcIp: [][]byte{{203, 0, 113, byte(i)}}, Protocol: []uint32{6}, Packets: []uint64{uint64(i + 1)}}}
		if _, err := f.spool.Append(b, 0); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func (f *fixture) start(t *testing.T, hubs ...string) *uplink.Uplink {
	t.Helper()
	tlsConf, err := pki.ClientConfig(f.pki.Sensor)
	if err != nil {
		t.Fatal(err)
	}
	cfg := uplink.DefaultConfig()
	cfg.SensorID = sensorID
	cfg.Version = "test"
	cfg.Prefixes = []string{"198.51.100.0/24"}
	cfg.Hubs = hubs
	cfg.Window = 4
	cfg.BackoffMin = 10 * time.Millisecond
	cfg.BackoffMax = 100 * time.Millisecond
	u, err := uplink.New(cfg, uplink.Dependencies{Spool: f.spool, TLS: tlsConf, Registerer: f.reg})
	if err != nil {
		t.Fatal(err)
	}
	u.Start(context.Background())
	t.Cleanup(u.Stop)
	return u
}

// waitFor polls cond for at most 20 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeliversInOrderAndEmptiesSpool(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	f.append(t, 30)
	u := f.start(t, h.Addr)
	waitFor(t, "30 batches", func() bool { return len(h.Sequences(sensorID)) == 30 })
	f.append(t, 10) // appended while connected
	waitFor(t, "40 batches and an empty spool", func() bool {
		return len(h.Sequences(sensorID)) == 40 && f.spool.Stats().Batches == 0
	})
	if !u.Connected() || u.Hub() != h.Addr {
		t.Fatalf("connected %v to %q", u.Connected(), u.Hub())
	}
	for i, seq := range h.Sequences(sensorID) {
		if seq != uint64(i+1) {
			t.Fatalf("hub holds %v", h.Sequences(sensorID))
		}
		if got := h.Batches(sensorID)[seq].Stats.PacketsSeen; got == 0 {
			t.Fatalf("batch %d lost its stats", seq)
		}
	}
	if got := counter(t, f.reg, "jasper_sensor_uplink_acks_total", "new"); got != 40 {
		t.Fatalf("acks counted %v, want 40", got)
	}
	if _, dups := h.Counts(); dups != 0 {
		t.Fatalf("%d duplicates on a clean run", dups)
	}
	hello := h.Hellos()[0]
	if hello.SensorId != sensorID || hello.FirstUnackedSequence != 1 || hello.LastSequence != 30 {
		t.Fatalf("hello %v", hello)
	}
}

func TestWelcomeDropsCommitted(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	bs := f.append(t, 20)
	h.Preload(sensorID, bs[:12]...)
	f.start(t, h.Addr)
	waitFor(t, "all batches", func() bool { return len(h.Sequences(sensorID)) == 20 && f.spool.Stats().Batches == 0 })
	if rec, dups := h.Counts(); rec != 8 || dups != 0 {
		t.Fatalf("hub received %d batches (%d duplicates), want the 8 it lacked", rec, dups)
	}
}

func TestFollowsNotLeader(t *testing.T) {
	f := newFixture(t)
	leader := f.hub(t)
	follower := f.hub(t)
	follower.OnHello = func(*jasperv1.Hello) *jasperv1.Refusal {
		return &jasperv1.Refusal{Reason: jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER, LeaderAddress: leader.Addr}
	}
	f.append(t, 10)
	u := f.start(t, follower.Addr)
	waitFor(t, "batches at the leader", func() bool { return len(leader.Sequences(sensorID)) == 10 })
	if u.Hub() != leader.Addr {
		t.Fatalf("connected to %q, want leader %q", u.Hub(), leader.Addr)
	}
	if n := len(follower.Sequences(sensorID)); n != 0 {
		t.Fatalf("follower stored %d batches", n)
	}
}

func TestNotLeaderOnBatchMidStream(t *testing.T) {
	f := newFixture(t)
	leader := f.hub(t)
	old := f.hub(t)
	var mu sync.Mutex
	deposed := false
	old.OnBatch = func(b *jasperv1.Batch) (*jasperv1.Refusal, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Sequence >= 6 {
			deposed = true
		}
		if deposed {
			return &jasperv1.Refusal{Sequence: b.Sequence, Reason: jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER, LeaderAddress: leader.Addr}, nil
		}
		return nil, nil
	}
	old.OnHello = func(*jasperv1.Hello) *jasperv1.Refusal {
		mu.Lock()
		defer mu.Unlock()
		if deposed {
			return &jasperv1.Refusal{Reason: jasperv1.RefusalReason_REFUSAL_REASON_NOT_LEADER, LeaderAddress: leader.Addr}
		}
		return nil
	}
	f.append(t, 15)
	f.start(t, old.Addr)
	waitFor(t, "the rest at the new leader", func() bool { return f.spool.Stats().Batches == 0 })
	got := map[uint64]bool{}
	for _, s := range old.Sequences(sensorID) {
		got[s] = true
	}
	for _, s := range leader.Sequences(sensorID) {
		got[s] = true
	}
	for s := uint64(1); s <= 15; s++ {
		if !got[s] {
			t.Fatalf("sequence %d reached no hub (old %v, leader %v)", s, old.Sequences(sensorID), leader.Sequences(sensorID))
		}
	}
}

func TestThrottlePausesAndResends(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	var mu sync.Mutex
	throttled := 0
	h.OnBatch = func(b *jasperv1.Batch) (*jasperv1.Refusal, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Sequence == 5 && throttled < 3 {
			throttled++
			return &jasperv1.Refusal{Sequence: 5, Reason: jasperv1.RefusalReason_REFUSAL_REASON_THROTTLE, RetryAfterMs: 20}, nil
		}
		return nil, nil
	}
	f.append(t, 12)
	f.start(t, h.Addr)
	waitFor(t, "all batches", func() bool { return len(h.Sequences(sensorID)) == 12 && f.spool.Stats().Batches == 0 })
	if got := counter(t, f.reg, "jasper_sensor_uplink_refusals_total", "throttle"); got != 3 {
		t.Fatalf("throttle refusals counted %v, want 3", got)
	}
}

func TestInvalidBatchQuarantinedNotLooped(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	var mu sync.Mutex
	refusedSeven := 0
	h.OnBatch = func(b *jasperv1.Batch) (*jasperv1.Refusal, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Sequence == 7 {
			refusedSeven++
			return &jasperv1.Refusal{Sequence: 7, Reason: jasperv1.RefusalReason_REFUSAL_REASON_INVALID, Detail: "columns differ in length"}, nil
		}
		return nil, nil
	}
	f.append(t, 10)
	f.start(t, h.Addr)
	waitFor(t, "the other batches", func() bool { return len(h.Sequences(sensorID)) == 9 && f.spool.Stats().Batches == 0 })
	mu.Lock()
	n := refusedSeven
	mu.Unlock()
	if n != 1 {
		t.Fatalf("batch 7 sent %d times, want once", n)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "spool", "quarantine", "batch-00000000000000000007.invalid.pb")); err != nil {
		t.Fatalf("refused batch not quarantined: %v", err)
	}
	if got := counter(t, f.reg, "jasper_sensor_uplink_refusals_total", "invalid"); got != 1 {
		t.Fatalf("invalid refusals counted %v", got)
	}
}

func TestReconnectsAfterBrokenStream(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	var mu sync.Mutex
	broken := 0
	h.OnBatch = func(b *jasperv1.Batch) (*jasperv1.Refusal, error) {
		mu.Lock()
		defer mu.Unlock()
		if b.Sequence == 9 && broken < 2 {
			broken++
			return nil, uplinktest.ErrBreak
		}
		return nil, nil
	}
	f.append(t, 20)
	f.start(t, "127.0.0.1:1", h.Addr) // the first address refuses connections
	waitFor(t, "all batches", func() bool { return len(h.Sequences(sensorID)) == 20 && f.spool.Stats().Batches == 0 })
	if got := counter(t, f.reg, "jasper_sensor_uplink_reconnects_total", ""); got < 2 {
		t.Fatalf("reconnects %v, want at least 2", got)
	}
}

func TestRefusesWithoutTLS(t *testing.T) {
	f := newFixture(t)
	cfg := uplink.DefaultConfig()
	cfg.SensorID, cfg.Hubs = sensorID, []string{"127.0.0.1:1"}
	if _, err := uplink.New(cfg, uplink.Dependencies{Spool: f.spool}); err == nil {
		t.Fatal("uplink built without TLS")
	}
	cfg.Window = 0
	if err := cfg.Validate(); err == nil {
		t.Fatal("window 0 accepted")
	}
}

func counter(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label == "" || len(m.GetLabel()) > 0 && m.GetLabel()[0].GetValue() == label {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestSpoolBehindHubResequenced: the sensor's spool was replaced, so its
// sequences restart at 1 while the hub already holds up to 500. The uplink
// must renumber above 500 instead of losing the batches as "duplicates".
func TestSpoolBehindHubResequenced(t *testing.T) {
	f := newFixture(t)
	h := f.hub(t)
	h.CommittedThrough = func(*jasperv1.Hello) uint64 { return 500 }
	f.append(t, 10)
	f.start(t, h.Addr)
	waitFor(t, "the renumbered batches", func() bool { return f.spool.Stats().Batches == 0 && len(h.Sequences(sensorID)) == 10 })
	got := h.Batches(sensorID)
	for i := uint64(1); i <= 10; i++ {
		b := got[500+i]
		if b == nil || b.Stats.PacketsSeen != i {
			t.Fatalf("sequence %d: %v (hub holds %v)", 500+i, b, h.Sequences(sensorID))
		}
	}
	if f.spool.Last() != 510 {
		t.Fatalf("spool last %d, want 510", f.spool.Last())
	}
}

// BenchmarkUplink measures spooled batches (about 60 KiB each) sent to the
// test hub over mTLS on loopback and acknowledged, spool removal included.
func BenchmarkUplink(b *testing.B) {
	dir := b.TempDir()
	p, err := uplinktest.NewPKI(filepath.Join(dir, "pki"), sensorID, []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")})
	if err != nil {
		b.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 8 << 30, SegmentBytes: 8 << 20, MaxQuarantineFiles: 8}, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	h, err := uplinktest.Start("127.0.0.1:0", p.Hub)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Stop()
	rows := &jasperv1.Rows{}
	for i := range 4000 {
		rows.SrcIp = append(rows.SrcIp, []byte{203, 0, byte(i >> 8), byte(i)})
		rows.Protocol = append(rows.Protocol, 6)
		rows.DstPort = append(rows.DstPort, uint32(i))
		rows.Packets = append(rows.Packets, uint64(i))
		rows.Bytes = append(rows.Bytes, uint64(i*40))
		rows.Class = append(rows.Class, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN)
	}
	size := 0
	for range b.N {
		bt := &jasperv1.Batch{BinStart: 1_700_000_040, BinSeconds: 60, Rows: rows}
		if _, err := sp.Append(bt, 0); err != nil {
			b.Fatal(err)
		}
		size = proto.Size(bt)
	}
	b.SetBytes(int64(size))
	tlsConf, _ := pki.ClientConfig(p.Sensor)
	cfg := uplink.DefaultConfig()
	cfg.SensorID, cfg.Hubs = sensorID, []string{h.Addr}
	u, err := uplink.New(cfg, uplink.Dependencies{Spool: sp, TLS: tlsConf})
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	u.Start(context.Background())
	for sp.Stats().Batches > 0 {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	u.Stop()
}
