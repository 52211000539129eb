package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/dashboards"
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
	l := lateWired{}
	if err := l.Acknowledge(ctx, "f1", "jp", ""); !errors.Is(err, dashboards.ErrNotConfigured) {
		t.Errorf("unwired ack = %v", err)
	}
	if fs, err := l.Findings(ctx); fs != nil || err != nil {
		t.Errorf("unwired findings = %v, %v", fs, err)
	}
	a := &recActions{}
	setDashboardsActions(a)
	setDashboardsFindings(dashboards.FindingsFunc(func(context.Context) ([]dashboards.FindingRecord, error) {
		return []dashboards.FindingRecord{{Finding: &jasperv1.Finding{Id: "f1"}}}, nil
	}))
	setDashboardsCertExpiry(func(context.Context) (map[string]time.Time, error) {
		return map[string]time.Time{"s1": time.Unix(1, 0)}, nil
	})
	t.Cleanup(func() { setDashboardsActions(nil); setDashboardsFindings(nil); setDashboardsCertExpiry(nil) })
	if err := l.Silence(ctx, "f1", "jp", time.Now(), ""); err != nil || len(a.got) != 1 || a.got[0] != "silence f1 jp" {
		t.Errorf("wired silence = %v %v", err, a.got)
	}
	if fs, _ := l.Findings(ctx); len(fs) != 1 {
		t.Errorf("wired findings = %v", fs)
	}
	if m, _ := l.certExpiry(ctx); len(m) != 1 {
		t.Errorf("wired cert expiry = %v", m)
	}
}
