//go:build !jasper_nodetect

package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestFindingLogRateLimit: new and ended findings are info lines up to the
// burst, then debug lines counted by a findings_not_logged info line;
// the budget refills with time; continuing updates are debug only.
func TestFindingLogRateLimit(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	now := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	fl := newFindingLogger(log, func() time.Time { return now })
	f := &jasperv1.Finding{Id: "x", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW, SrcIp: []byte{45, 1, 2, 3}}
	count := func(level, msg string) int {
		n := 0
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, "level="+level+" ") && strings.Contains(l, "msg="+msg+" ") {
				n++
			}
		}
		return n
	}
	for range findingLogBurst + 30 {
		fl.log(f)
	}
	if n := count("INFO", "finding_new"); n != findingLogBurst {
		t.Fatalf("%d info lines, want the burst %d", n, findingLogBurst)
	}
	if n := count("DEBUG", "finding_new"); n != 30 {
		t.Fatalf("%d debug lines, want 30", n)
	}
	if !strings.Contains(buf.String(), "src=45.1.2.3") || !strings.Contains(buf.String(), "type=infected_host") {
		t.Fatalf("line fields missing:\n%s", buf.String()[:300])
	}
	// A continuing update: debug, and takes no token.
	f.State = jasperv1.FindingState_FINDING_STATE_CONTINUING
	fl.log(f)
	if count("DEBUG", "finding_continuing") != 1 || count("INFO", "finding_continuing") != 0 {
		t.Fatal("continuing update not at debug level")
	}
	// One second later: findingLogRate tokens; the summary comes first.
	now = now.Add(time.Second)
	f.State = jasperv1.FindingState_FINDING_STATE_ENDED
	for range findingLogRate + 5 {
		fl.log(f)
	}
	if n := count("INFO", "finding_ended"); n != findingLogRate {
		t.Fatalf("%d ended info lines after 1 s, want %d", n, findingLogRate)
	}
	if !strings.Contains(buf.String(), "msg=findings_not_logged count=30 ") {
		t.Fatalf("no summary of the 30 lines at debug level:\n%s", buf.String())
	}
	// With no token and no finding for a while, the next one brings the
	// summary of the 5 others after findingLogSummary.
	now = now.Add(findingLogSummary)
	buf.Reset()
	fl.log(f)
	if !strings.Contains(buf.String(), "msg=findings_not_logged count=5 ") || count("INFO", "finding_ended") != 1 {
		t.Fatalf("after a quiet period:\n%s", buf.String())
	}
	// At info level the debug lines cost nothing and are not written.
	buf.Reset()
	fl2 := newFindingLogger(slog.New(slog.NewTextHandler(&buf, nil)), func() time.Time { return now })
	f.State = jasperv1.FindingState_FINDING_STATE_CONTINUING
	fl2.log(f)
	if buf.Len() != 0 {
		t.Fatalf("continuing update logged at info level: %s", buf.String())
	}
}
