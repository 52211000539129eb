package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/internal/obs"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func TestDashboardsSTIXExport(t *testing.T) {
	fs := []*jasperv1.Finding{
		{Id: "f1", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
			SrcIp: netip.MustParseAddr("192.0.2.10").AsSlice(), SrcCountry: "JP", Ports: []uint32{23}, Packets: 10,
			FirstSeenMs: 1_780_000_000_000, LastSeenMs: 1_780_000_060_000, DetectedAtMs: 1_780_000_060_000, UpdatedAtMs: 1_780_000_060_000},
		{Id: "f2", Type: jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM, State: jasperv1.FindingState_FINDING_STATE_CONTINUING,
			SrcIp: netip.MustParseAddr("192.0.2.11").AsSlice(), SrcCountry: "JP", Packets: 5,
			FirstSeenMs: 1_780_000_000_000, LastSeenMs: 1_780_000_060_000, DetectedAtMs: 1_780_000_060_000, UpdatedAtMs: 1_780_000_060_000},
	}
	var buf bytes.Buffer
	if err := stixExport(context.Background(), &buf, fs); err != nil {
		t.Fatal(err)
	}
	var b struct {
		Type    string           `json:"type"`
		ID      string           `json:"id"`
		Objects []map[string]any `json:"objects"`
	}
	if err := json.Unmarshal(buf.Bytes(), &b); err != nil {
		t.Fatal(err)
	}
	if b.Type != "bundle" || !regexp.MustCompile(`^bundle--[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(b.ID) {
		t.Errorf("bundle %q %q", b.Type, b.ID)
	}
	ids := map[any]bool{}
	types := map[any]int{}
	for _, o := range b.Objects {
		if ids[o["id"]] {
			t.Errorf("object %v twice", o["id"])
		}
		ids[o["id"]] = true
		types[o["type"]]++
	}
	if types["identity"] != 1 || types["marking-definition"] != 1 {
		t.Errorf("object types %v", types)
	}
	if s := buf.String(); !strings.Contains(s, "192.0.2.10") || !strings.Contains(s, "192.0.2.11") {
		t.Errorf("bundle lacks the hosts: %s", s)
	}
}

type recActions struct{ got []string }

func (r *recActions) Acknowledge(_ context.Context, id, user, _ string) error {
	r.got = append(r.got, "ack "+id+" "+user)
	return nil
}

func (r *recActions) Silence(_ context.Context, id, user string, _ time.Time, _ string) error {
	r.got = append(r.got, "silence "+id+" "+user)
	return nil
}

func TestDashboardsLateWiring(t *testing.T) {
	ctx := context.Background()
	// Two hubs in one process, as in `jasper demo --in-process`: each
	// dashboard must use its own hub's findings, actions and expiry.
	var hubs [2]*hub.Hub
	for i := range hubs {
		cfg, err := hub.LoadConfig(writeHubConfig(t, ""))
		if err != nil {
			t.Fatal(err)
		}
		if hubs[i], err = hub.New(cfg, hub.Deps{Registry: obs.NewRegistry()}); err != nil {
			t.Fatal(err)
		}
	}
	l1, l2 := lateWired{hubs[0]}, lateWired{hubs[1]}
	if err := l1.Acknowledge(ctx, "f1", "jp", ""); !errors.Is(err, dashboards.ErrNotConfigured) {
		t.Errorf("unwired ack = %v", err)
	}
	if fs, err := l1.Findings(ctx); fs != nil || err != nil {
		t.Errorf("unwired findings = %v, %v", fs, err)
	}
	var acts [2]*recActions
	for i, h := range hubs {
		acts[i] = &recActions{}
		setDashboardsActions(h, acts[i])
		id := fmt.Sprintf("f%d", i+1)
		setDashboardsFindings(h, dashboards.FindingsFunc(func(context.Context) ([]dashboards.FindingRecord, error) {
			return []dashboards.FindingRecord{{Finding: &jasperv1.Finding{Id: id}}}, nil
		}))
		sensor := fmt.Sprintf("s%d", i+1)
		setDashboardsCertExpiry(h, func(context.Context) (map[string]time.Time, error) {
			return map[string]time.Time{sensor: time.Unix(1, 0)}, nil
		})
	}
	if err := l1.Silence(ctx, "f1", "jp", time.Now(), ""); err != nil || len(acts[0].got) != 1 || acts[0].got[0] != "silence f1 jp" || len(acts[1].got) != 0 {
		t.Errorf("silence through hub 1 = %v; hub 1 saw %v, hub 2 saw %v", err, acts[0].got, acts[1].got)
	}
	if err := l2.Acknowledge(ctx, "f2", "ana", ""); err != nil || len(acts[1].got) != 1 || acts[1].got[0] != "ack f2 ana" || len(acts[0].got) != 1 {
		t.Errorf("ack through hub 2 = %v; hub 1 saw %v, hub 2 saw %v", err, acts[0].got, acts[1].got)
	}
	for i, l := range []lateWired{l1, l2} {
		fs, _ := l.Findings(ctx)
		if want := fmt.Sprintf("f%d", i+1); len(fs) != 1 || fs[0].Finding.Id != want {
			t.Errorf("hub %d findings = %v, want %s", i+1, fs, want)
		}
		m, _ := l.certExpiry(ctx)
		if _, ok := m[fmt.Sprintf("s%d", i+1)]; len(m) != 1 || !ok {
			t.Errorf("hub %d cert expiry = %v", i+1, m)
		}
	}
	// Unwiring one hub leaves the other alone.
	setDashboardsActions(hubs[0], nil)
	if err := l1.Acknowledge(ctx, "f1", "jp", ""); !errors.Is(err, dashboards.ErrNotConfigured) {
		t.Errorf("ack after unwiring hub 1 = %v", err)
	}
	if err := l2.Acknowledge(ctx, "f2", "jp", ""); err != nil || len(acts[1].got) != 2 {
		t.Errorf("ack on hub 2 after unwiring hub 1 = %v, %v", err, acts[1].got)
	}
}
