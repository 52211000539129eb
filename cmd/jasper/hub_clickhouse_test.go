package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/chstore/chstoretest"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
)

// writeHubConfig writes a one-hub configuration with the given extra
// top-level YAML into a fresh folder (with a CA and the hub's
// certificate) and returns its path.
func writeHubConfig(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("clickhouse ext test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteIssued(dir, "hub-1", is); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "hub.yaml")
	cfg := `node_id: hub-1
data_dir: data
tls: {ca: ca.pem, cert: hub-1.pem, key: hub-1-key.pem}
raft: {bind: 127.0.0.1:0, bootstrap: true}
ingest: {listen: 127.0.0.1:0}
metrics_listen: ""
tick_interval: 200ms
` + extra
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestHubRunCheckClickHouse: `hub run --check` names a bad key or value
// of the clickhouse section, and accepts a good one.
func TestHubRunCheckClickHouse(t *testing.T) {
	run := hubCommands["run"].run
	for _, tc := range []struct {
		name, section, want string
	}{
		{"unknown key", "clickhouse:\n  addr: 127.0.0.1:9000\n  adress: x\n", `field adress not found`},
		{"bad addr", "clickhouse:\n  addr: nowhere\n", `clickhouse.addr`},
		{"settle below insert timeout", "clickhouse:\n  insert_timeout: 10s\n  leader_settle: 5s\n", `clickhouse.leader_settle`},
		{"bad database", "clickhouse:\n  database: \"x; DROP\"\n", `clickhouse.database`},
		{"good", "clickhouse:\n  addr: 127.0.0.1:19000\n  database: jasper_test\n  password: hunter2\n  retention_days: 30\n", ""},
		{"none", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeHubConfig(t, tc.section)
			err := run(context.Background(), []string{"--config", p, "--check"})
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("--check: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("--check = %v, want an error naming %q", err, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), p):
				t.Errorf("error %q does not name the file", err)
			}
		})
	}
}

// TestAttachClickHouseSection: without a clickhouse section the store keeps
// no pending-load queue; with one the queue is on and a bad section stops
// the hub from attaching.
func TestAttachClickHouseSection(t *testing.T) {
	attach := func(extra string) (*hub.Hub, error) {
		cfg, err := hub.LoadConfig(writeHubConfig(t, extra))
		if err != nil {
			t.Fatal(err)
		}
		h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry()})
		if err != nil {
			t.Fatal(err)
		}
		return h, h.Attach(hub.Extension{Name: "clickhouse", Attach: attachClickHouse})
	}
	h, err := attach("")
	if err != nil {
		t.Fatal(err)
	}
	if h.Store().LoadEnabled() {
		t.Error("no clickhouse section, but the pending-load queue is on")
	}
	h, err = attach("clickhouse:\n  addr: 127.0.0.1:1\n")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Store().LoadEnabled() {
		t.Error("clickhouse section, but the pending-load queue is off")
	}
	if _, err := attach("clickhouse:\n  retry_min: 2s\n  retry_max: 1s\n"); err == nil || !strings.Contains(err.Error(), "retry_min") {
		t.Errorf("bad section attached: %v", err)
	}
}

// TestHubClickHouseLoaderRuns starts a one-hub cluster with a clickhouse
// section on the server at $JASPER_TEST_CLICKHOUSE: once the hub leads,
// the loader service creates the schema in the configured database, and
// it stops with the hub. (Loading itself is tested end to end with hub
// processes in hub/clustertest.)
func TestHubClickHouseLoaderRuns(t *testing.T) {
	conn, db := chstoretest.NewDatabase(t)
	p := writeHubConfig(t, fmt.Sprintf("clickhouse:\n  addr: %s\n  database: %s\n  insert_timeout: 1s\n  leader_settle: 1s\n  poll_interval: 50ms\n",
		chstoretest.Addr(t), db))
	cfg, err := hub.LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(hub.Extension{Name: "clickhouse", Attach: attachClickHouse}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var n uint64
		err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = '"+db+"' AND name = 'summary'").Scan(&n)
		if err == nil && n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loader did not create %s.summary within 30s (last: %d, %v)", db, n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := h.Stop(sctx); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
