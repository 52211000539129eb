package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/webhook"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestHubAlertingExtension runs a one-hub cluster from a config file with
// an alerting section: a finding committed through raft and one published
// by the hub's detectors both reach the CERT's webhook, signed.
func TestHubAlertingExtension(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("alerting ext test", time.Hour)
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
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	var mu sync.Mutex
	got := map[string]bool{}
	rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(secret, r.Header, b, time.Now(), time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		var p webhook.Payload
		json.Unmarshal(b, &p)
		mu.Lock()
		for _, ev := range p.Data.Events {
			got[fmt.Sprint(ev["extra.finding_id"])] = true
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer rcv.Close()
	rec := directory.Directory{Defaults: directory.DefaultRouting(), Recipients: []directory.Recipient{{
		ID: "cert-de", CERT: true, Country: "DE", Webhooks: []directory.Webhook{{URL: rcv.URL + "/h", Secret: secret}}}}}
	rec.Defaults.GroupWait = 0
	rb, _ := json.Marshal(rec) // YAML is a superset of JSON
	os.WriteFile(filepath.Join(dir, "recipients.yaml"), rb, 0o600)
	cfgPath := filepath.Join(dir, "hub.yaml")
	os.WriteFile(cfgPath, []byte(`
node_id: hub-1
metrics_listen: ""
data_dir: data
tls: {ca: ca.pem, cert: hub-1.pem, key: hub-1-key.pem}
raft: {bind: 127.0.0.1:0, bootstrap: true}
ingest: {listen: 127.0.0.1:0}
tick_interval: 200ms
alerting:
  recipients_file: recipients.yaml
  worker: {poll: 50ms}
`), 0o600)
	cfg, err := hub.LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(hub.Extension{Name: "alerting", Attach: attachAlerting}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer h.Stop(ctx)
	deadline := time.Now().Add(15 * time.Second)
	for !h.Store().IsLeader() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	f := &jasperv1.Finding{Id: "via-raft", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{198, 51, 100, 1}, SrcCountry: "DE"}
	b, _ := proto.Marshal(f)
	if _, err := h.Store().Propose(ctx, outbox.DefaultName, outbox.Encode(outbox.Command{Op: outbox.OpFinding, Finding: b})); err != nil {
		t.Fatal(err)
	}
	// As hub/detect's callback would (here outside an apply: one hub only).
	publishHubFindings(h)(&jasperv1.Finding{Id: "via-detect", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{198, 51, 100, 2}, SrcCountry: "DE"})
	for time.Now().Before(deadline.Add(10 * time.Second)) {
		mu.Lock()
		done := got["via-raft"] && got["via-detect"]
		mu.Unlock()
		if done {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("webhook received %v", got)
}
