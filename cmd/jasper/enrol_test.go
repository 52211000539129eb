package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	senrol "github.com/jasperfed/jasper/sensor/enrol"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// hello opens an ingest stream with the sensor's files and returns the
// hub's answer to a Hello.
func hello(t *testing.T, addr string, files pki.Files, id string) *jasperv1.StreamResponse {
	t.Helper()
	tc, err := pki.ClientConfig(files)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	st, err := jasperv1.NewIngestServiceClient(conn).Stream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(&jasperv1.StreamRequest{Msg: &jasperv1.StreamRequest_Hello{Hello: &jasperv1.Hello{
		SensorId: id, SoftwareVersion: version, Prefixes: []string{"192.0.2.0/24"},
	}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatalf("ingest stream: %v", err)
	}
	return resp
}

// TestEnrolThroughHub runs the commands as an operator and a partner would
// against a real hub (`jasper hub run` with an enrol: section): a join
// token, `jasper sensor enrol`, an ingest stream accepted with the enrolled
// certificate, `jasper sensor renew`, `jasper ca revoke`, and the ingest
// port refusing the revoked sensor as REVOKED.
func TestEnrolThroughHub(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("enrol through hub", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caDir := filepath.Join(dir, "ca")
	if err := ca.Save(caDir); err != nil {
		t.Fatal(err)
	}
	for id, role := range map[string]pki.Role{"hub-1": pki.RoleHub, "ops": pki.RoleAdmin} {
		is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: role, ID: id}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteIssued(caDir, id, is); err != nil {
			t.Fatal(err)
		}
	}
	ingestAddr, enrolAddr := freeAddr(t), freeAddr(t)
	conf := filepath.Join(dir, "hub.yaml")
	if err := os.WriteFile(conf, fmt.Appendf(nil, `node_id: hub-1
data_dir: %s
tls: {ca: ca/ca.pem, cert: ca/hub-1.pem, key: ca/hub-1-key.pem}
raft: {bind: %s, bootstrap: true, heartbeat_timeout: 100ms, election_timeout: 100ms, leader_lease_timeout: 50ms}
ingest: {listen: %s}
metrics_listen: ""
tick_interval: 1s
enrol: {listen: %s, ca_dir: ca, cert_validity: 1h}
`, filepath.Join(dir, "data"), freeAddr(t), ingestAddr, enrolAddr), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	hubDone := make(chan error, 1)
	go func() { hubDone <- hubRun(ctx, []string{"--config", conf}) }()
	defer func() {
		cancel()
		select {
		case err := <-hubDone:
			if err != nil {
				t.Errorf("hub run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("hub did not stop")
		}
	}()

	tok, _, err := ca.NewJoinToken(pki.Identity{Role: pki.RoleSensor, ID: "jp-1", Country: "JP",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "sensor")
	args := []string{"--hub", enrolAddr, "--token", tok, "--ca", filepath.Join(caDir, "ca.pem"), "--dir", state}
	deadline := time.Now().Add(30 * time.Second)
	for {
		// The hub may still be electing itself leader: retry while it
		// answers unavailable, as an operator would.
		err = sensorEnrol(t.Context(), args)
		if err == nil {
			break
		}
		if senrol.ReasonOf(err) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNSPECIFIED || time.Now().After(deadline) {
			t.Fatalf("jasper sensor enrol: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	cfg := senrol.DefaultConfig()
	cfg.Dir = state
	files := cfg.Files()
	if r := hello(t, ingestAddr, files, "jp-1"); r.GetWelcome() == nil {
		t.Fatalf("enrolled sensor's Hello answered %v, want a Welcome", r)
	}
	if err := sensorRenew(t.Context(), []string{"--hub", enrolAddr, "--dir", state}); err != nil {
		t.Fatalf("jasper sensor renew: %v", err)
	}
	if r := hello(t, ingestAddr, files, "jp-1"); r.GetWelcome() == nil {
		t.Fatalf("renewed sensor's Hello answered %v, want a Welcome", r)
	}
	if err := caRevoke(t.Context(), []string{"--hub", ingestAddr, "--id", "jp-1", "--reason", "test",
		"--ca", filepath.Join(caDir, "ca.pem"), "--cert", filepath.Join(caDir, "ops.pem"), "--key", filepath.Join(caDir, "ops-key.pem")}); err != nil {
		t.Fatalf("jasper ca revoke: %v", err)
	}
	r := hello(t, ingestAddr, files, "jp-1")
	if ref := r.GetRefusal(); ref == nil || ref.Reason != jasperv1.RefusalReason_REFUSAL_REASON_REVOKED {
		t.Fatalf("revoked sensor's Hello answered %v, want a REVOKED refusal", r)
	}
	err = sensorRenew(t.Context(), []string{"--hub", enrolAddr, "--dir", state})
	if senrol.ReasonOf(err) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED {
		t.Fatalf("renewal after revocation: %v, want REVOKED", err)
	}
}
