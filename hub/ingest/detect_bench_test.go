package ingest

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/hub/detect"
	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
)

// BenchmarkIngestDetect is BenchmarkIngestThreeHubs (same batches of 500
// rows from 4 sensors over mTLS into 1 or 3 hubs, fsync'd raft logs) with
// and without the detectors (hub/detect, default thresholds) registered as
// an FSM module on every hub, in the same run: the detectors' cost is the
// drop in rows/s. include_bogon_sources is on so that every row (the
// benchmark's sources are documentation addresses) goes through the
// infected-host and surge paths instead of being skipped as bogon; the
// repeated sources become findings after a few batches, so findings are
// raised and updated too.
func BenchmarkIngestDetect(b *testing.B) {
	for _, hubs := range []int{1, 3} {
		for _, det := range []bool{false, true} {
			b.Run(fmt.Sprintf("hubs=%d/window=64/detect=%v", hubs, det), func(b *testing.B) { benchIngestDetect(b, hubs, 64, det) })
		}
	}
}

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startHubModules is startHub with FSM modules registered before the
// store starts.
func startHubModules(t testing.TB, f *fixture, id string, bootstrap bool, mods []store.Module, mutate func(*store.Config, *Config)) *hubNode {
	t.Helper()
	files, ok := f.files[id]
	if !ok {
		files = f.issue(t, nil, pki.Identity{Role: pki.RoleHub, ID: id}, time.Time{}, time.Hour)
	}
	sc := store.DefaultConfig()
	sc.NodeID = id
	sc.BindAddr = "127.0.0.1:0"
	sc.DataDir = fmt.Sprintf("%s/data-%s", f.dir, id)
	sc.Bootstrap = bootstrap
	sc.TLS = files
	sc.TickInterval = 0
	sc.ApplyTimeout = 2 * time.Second
	ic := DefaultConfig()
	ic.Listen = "127.0.0.1:0"
	ic.TLS = files
	ic.RetryAfter = 50 * time.Millisecond
	if mutate != nil {
		mutate(&sc, &ic)
	}
	reg := prometheus.NewRegistry()
	st, err := store.New(sc, store.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods {
		st.RegisterModule(m)
	}
	srv, err := New(ic, Deps{Store: st, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.SetIngestAddr(srv.Addr())
	if err := st.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Stop(context.Background())
		_ = st.Stop(context.Background())
	})
	return &hubNode{st: st, srv: srv, reg: reg, cfg: sc}
}

// benchIngestDetect is benchIngest (bench_test.go) with the detectors on
// every hub when det is set.
func benchIngestDetect(b *testing.B, nhubs, window int, det bool) {
	const sensors, rows = 4, 500
	f := newFixture(b)
	admin := f.issue(b, nil, pki.Identity{Role: pki.RoleAdmin, ID: "ops"}, time.Time{}, time.Hour)
	var dets []*detect.Detector
	mods := func() []store.Module {
		if !det {
			return nil
		}
		cfg := detect.DefaultConfig()
		cfg.IncludeBogonSources = true
		d, err := detect.New(cfg, detect.Deps{})
		if err != nil {
			b.Fatal(err)
		}
		dets = append(dets, d)
		return []store.Module{d}
	}
	prod := func(sc *store.Config, _ *Config) {
		d := store.DefaultConfig()
		sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout, sc.CommitTimeout = d.HeartbeatTimeout, d.ElectionTimeout, d.LeaderLeaseTimeout, d.CommitTimeout
	}
	hubs := []*hubNode{startHubModules(b, f, "h1", true, mods(), prod)}
	waitFor(b, "leader", hubs[0].st.IsLeader)
	for _, id := range []string{"h2", "h3"}[:nhubs-1] {
		h := startHubModules(b, f, id, false, mods(), prod)
		joinVia(b, hubs, admin, id, h.st.RaftAddr())
		hubs = append(hubs, h)
	}
	acked := streamBench(b, hubs[0].srv.Addr(), f, sensors, rows, window, 0)
	if det {
		// The detectors did the work: every row seen, findings raised.
		waitFor(b, "detectors to apply every batch", func() bool {
			for _, d := range dets {
				if d.Stats().Rows < uint64(acked) {
					return false
				}
			}
			return true
		})
		if s := dets[0].Stats(); s.FindingsNew == 0 {
			b.Errorf("no findings from %d rows: %+v", s.Rows, s)
		}
	}
}
