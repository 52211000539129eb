package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDemoHeadless builds the jasper binary and runs `jasper demo
// --headless` from the checkout, as the README's first command does, for
// 40 s: findings must be raised, alerts must reach the demo mailbox and
// the webhook receiver (every signature valid), the dashboard must answer
// with traffic, and the demo must stop cleanly.
func TestDemoHeadless(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo for 40 s")
	}
	repo := findRepo()
	if repo == "" {
		t.Fatal("no jasper checkout above the test's folder")
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "jasper")
	build := exec.Command("go", "build", "-o", bin, "./cmd/jasper")
	build.Dir = repo
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/jasper: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "demo", "--headless", "--duration", "40s",
		"--dir", filepath.Join(tmp, "demo"), "--listen", "127.0.0.1:0")
	cmd.Dir = repo
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	logTail := func() string {
		b, _ := os.ReadFile(filepath.Join(tmp, "demo", "run", "demo.log"))
		if len(b) > 6000 {
			b = b[len(b)-6000:]
		}
		return string(b)
	}
	if err != nil {
		t.Fatalf("jasper demo: %v\nstderr:\n%s\nlog tail:\n%s", err, stderr.String(), logTail())
	}
	t.Logf("progress:\n%s", stderr.String())
	var s Summary
	if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
		t.Fatalf("summary is not JSON: %v\n%s", err, stdout.String())
	}
	t.Logf("summary: %s", stdout.String())
	fail := func(format string, args ...any) {
		t.Helper()
		t.Errorf(format, args...)
	}
	if s.Hubs != 3 || s.Leader == "" {
		fail("hubs %d, leader %q: want 3 hubs and a leader", s.Hubs, s.Leader)
	}
	if len(s.Sensors) != 3 {
		fail("%d sensors committed traffic, want 3", len(s.Sensors))
	}
	for _, x := range s.Sensors {
		if x.Batches == 0 || x.Packets == 0 {
			fail("sensor %s: %d batches, %d packets committed", x.ID, x.Batches, x.Packets)
		}
	}
	if s.FindingsTotal == 0 || s.Findings["infected_host"] == 0 {
		fail("findings %v: want infected hosts at least", s.Findings)
	}
	if s.Deliveries["email"] == 0 || s.Deliveries["webhook"] == 0 {
		fail("deliveries %v: want e-mail and webhook", s.Deliveries)
	}
	if s.WebhookRejected != 0 {
		fail("%d webhooks refused for a bad signature", s.WebhookRejected)
	}
	for rcpt := range s.DeliveriesByRecipient {
		if !strings.HasPrefix(rcpt, "cert-") {
			fail("delivery to %q, which is not a demo CERT", rcpt)
		}
	}
	if !s.DashboardOK {
		fail("dashboard not ok: %s", s.DashboardError)
	}
	for _, step := range []string{"stop hub-1", "stop tokyo-1", "stop mail catcher"} {
		if !strings.Contains(stderr.String(), step) {
			fail("progress lacks %q", step)
		}
	}
	if t.Failed() {
		t.Logf("log tail:\n%s", logTail())
	}
}
