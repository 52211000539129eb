package dashboards

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// notRoutedActions behaves as alerting does for a finding no recipient
// holds: acknowledging it fails with ErrNotRouted, silencing it works.
type notRoutedActions struct{ silenced []string }

func (a *notRoutedActions) Acknowledge(_ context.Context, id, _, _ string) error {
	return fmt.Errorf("acknowledge %s: %w (finding %q held by no recipient: not found)", id, ErrNotRouted, id)
}

func (a *notRoutedActions) Silence(_ context.Context, id, user string, _ time.Time, _ string) error {
	a.silenced = append(a.silenced, id+" "+user)
	return nil
}

func TestAckOfUnroutedFindingIsConflict(t *testing.T) {
	acts := &notRoutedActions{}
	f := newFixture(t, fixtureOpts{deps: func(d *Deps) { d.Actions = acts }})
	c := f.client(t)
	c.auth = tokenJP
	code, body, _ := c.do("POST", "/api/findings/f-jp-1/ack", map[string]string{"note": "seen"}, nil)
	if code != http.StatusConflict || !strings.Contains(string(body), "sent to no recipient") || !strings.Contains(string(body), "silence it instead") {
		t.Fatalf("ack of an unrouted finding = %d %s, want 409 explaining it", code, body)
	}
	if code, body, _ := c.do("POST", "/api/findings/f-jp-1/silence", nil, nil); code != http.StatusNoContent || len(acts.silenced) != 1 {
		t.Fatalf("silence of an unrouted finding = %d %s (%v), want 204 recorded", code, body, acts.silenced)
	}
}
