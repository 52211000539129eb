package main

import (
	"bytes"
	"context"
	"math/big"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/enrol"
	"github.com/jasperfed/jasper/internal/obs"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestCertExpiryReachesDashboards runs a real one-hub cluster with the
// enrol extension: enrolments and a renewal committed through raft show up
// as the certificate expiry the dashboards' sensors view reads.
func TestCertExpiryReachesDashboards(t *testing.T) {
	cfg, err := hub.LoadConfig(writeHubConfig(t, ""))
	if err != nil {
		t.Fatal(err)
	}
	h, err := hub.New(cfg, hub.Deps{Registry: obs.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Attach(hub.Extension{Name: "enrol", Attach: attachEnrol}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// Wired at attach time, before any sensor: an empty answer, not none.
	if m, err := (lateWired{h}).certExpiry(ctx); err != nil || m == nil || len(m) != 0 {
		t.Fatalf("cert expiry before any enrolment = %v, %v; want an empty map", m, err)
	}
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Stop(context.Background()) }()

	now := time.Now()
	propose := func(c *jasperv1.EnrolCommand) {
		t.Helper()
		c.NowMs = now.UnixMilli()
		b, err := proto.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			// The hub may still be electing itself leader.
			_, err := h.Store().Propose(ctx, enrol.ModuleName, b)
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("propose: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	first := now.Add(30 * 24 * time.Hour).Truncate(time.Second)
	enrolRec := func(token byte, id string, notAfter time.Time) *jasperv1.EnrolCommand {
		return &jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Enrol{Enrol: &jasperv1.EnrolRecord{
			TokenId: bytes.Repeat([]byte{token}, 16), TokenExpiresAt: now.Add(time.Hour).Unix(), SensorId: id, Country: "JP",
			Prefixes: []string{"192.0.2.0/24"}, LongTermPublicKey: []byte{1},
			Cert: &jasperv1.CertRecord{Serial: big.NewInt(int64(token)).Bytes(), NotAfter: notAfter.Unix()},
		}}}
	}
	propose(enrolRec(1, "jp-1", first))
	propose(enrolRec(2, "jp-2", first.Add(time.Hour)))
	m, err := (lateWired{h}).certExpiry(ctx)
	if err != nil || len(m) != 2 || !m["jp-1"].Equal(first) || !m["jp-2"].Equal(first.Add(time.Hour)) {
		t.Fatalf("cert expiry after enrolment = %v, %v", m, err)
	}
	// A renewal moves the expiry on.
	renewed := first.Add(10 * 24 * time.Hour)
	propose(&jasperv1.EnrolCommand{Cmd: &jasperv1.EnrolCommand_Issue{Issue: &jasperv1.IssueRecord{
		SensorId: "jp-1", Cert: &jasperv1.CertRecord{Serial: big.NewInt(99).Bytes(), NotAfter: renewed.Unix()}}}})
	m, err = (lateWired{h}).certExpiry(ctx)
	if err != nil || !m["jp-1"].Equal(renewed) || m["jp-1"].Location() != time.UTC {
		t.Fatalf("cert expiry after renewal = %v, %v; want jp-1 at %s UTC", m, err, renewed)
	}
}
