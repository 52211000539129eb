package enrol_test

import (
	"bytes"
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/enrol"
	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	senrol "github.com/jasperfed/jasper/sensor/enrol"
	"github.com/prometheus/client_golang/prometheus"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestThroughRaftStore runs enrolment on a real three-hub raft cluster
// (hub/store over mTLS on loopback): the sensor lists the hubs and fails
// over from followers to the leader, a token used there is refused at every
// hub, and a revocation reaches every replica.
func TestThroughRaftStore(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("raft test", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	f := &fed{t: t, dir: dir, ca: ca, caPEM: filepath.Join(dir, "ca.pem")}
	var stores []*store.Store
	for i, id := range []string{"h1", "h2", "h3"} {
		is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: id}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteIssued(dir, id, is); err != nil {
			t.Fatal(err)
		}
		files := pki.Files{CA: f.caPEM, Cert: filepath.Join(dir, id+".pem"), Key: filepath.Join(dir, id+"-key.pem")}
		sc := store.DefaultConfig()
		sc.NodeID, sc.BindAddr, sc.DataDir, sc.TLS = id, "127.0.0.1:0", filepath.Join(dir, id), files
		sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout = 150*time.Millisecond, 150*time.Millisecond, 100*time.Millisecond
		sc.CommitTimeout, sc.TickInterval, sc.ApplyTimeout = 5*time.Millisecond, 50*time.Millisecond, 2*time.Second
		sc.Bootstrap = i == 0
		st, err := store.New(sc, store.Deps{Registerer: prometheus.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		mod := enrol.NewModule()
		st.RegisterModule(mod)
		if err := st.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = st.Stop(context.Background()) })
		if i == 0 {
			waitUntil(t, "h1 leads", st.IsLeader)
		} else if err := stores[0].Join(context.Background(), id, st.RaftAddr()); err != nil {
			t.Fatal(err)
		}
		stores = append(stores, st)
		cfg := enrol.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		svc, err := enrol.NewService(cfg, enrol.Deps{CA: ca, Store: st, Module: mod, TLS: files})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
		f.hubs = append(f.hubs, svc)
		f.mods = append(f.mods, mod)
	}
	leader := -1
	waitUntil(t, "a leader", func() bool {
		for i, s := range stores {
			if s.IsLeader() {
				leader = i
				return true
			}
		}
		return false
	})
	// Followers first: they refuse with Unavailable (not the leader), and
	// the sensor moves on to the next hub.
	var order []int
	for i := range stores {
		if i != leader {
			order = append(order, i)
		}
	}
	order = append(order, leader)
	tok := f.token("riga-1", "LV", time.Hour, time.Now(), "192.0.2.0/24")
	cfg := f.sensorCfg(order...)
	cert, err := f.enrol(cfg, tok)
	if err != nil {
		t.Fatal(err)
	}
	// Every replica learns of the use; the token is refused at each hub.
	waitUntil(t, "the enrolment on every replica", func() bool {
		for _, m := range f.mods {
			if _, ok := m.Sensor("riga-1"); !ok {
				return false
			}
		}
		return true
	})
	for i := range f.hubs {
		_, err := f.enrol(f.sensorCfg(i), tok)
		wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED)
	}
	// Renewal through the leader.
	rcfg := cfg
	rcfg.Hubs = []string{f.hubs[leader].Addr()}
	r, err := senrol.New(rcfg, senrol.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Revocation through the leader reaches every replica.
	_, err = enrolClient(t, f, f.adminFiles("ops"), f.hubs[leader].Addr()).Revoke(t.Context(), &jasperv1.RevokeRequest{SensorId: "riga-1", Reason: "test"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the revocation on every replica", func() bool {
		for _, m := range f.mods {
			if !m.RevokedCert(cert) {
				return false
			}
		}
		return true
	})
	wantReason(t, r.RenewNow(t.Context()), jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED)
	// The replicas agree byte for byte once the log has settled.
	waitUntil(t, "equal module snapshots", func() bool {
		var first []byte
		for i, m := range f.mods {
			var b bytes.Buffer
			if err := m.Snapshot(&b); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = b.Bytes()
			} else if !bytes.Equal(first, b.Bytes()) {
				return false
			}
		}
		return true
	})
}
