package alerting_test

import (
	"errors"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/dashboards"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestAckOfUnroutedFinding: a finding no route sends to anyone cannot be
// acknowledged (ErrNotRouted, which the dashboards answer with 409), but
// it can be silenced; a routed finding acknowledges as before.
func TestAckOfUnroutedFinding(t *testing.T) {
	e := newAdminEnv(t)
	ctx := t.Context()
	routed := &jasperv1.Finding{Id: "f9", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{203, 0, 113, 9}, SrcCountry: "DE"}
	unrouted := &jasperv1.Finding{Id: "f-br", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{198, 51, 100, 7}, SrcCountry: "BR"}
	e.log.Finding(routed)
	e.log.Finding(unrouted)
	for _, id := range []string{"f-br", "never-seen"} {
		err := e.a.Acknowledge(ctx, id, "ana", "")
		if !errors.Is(err, dashboards.ErrNotRouted) || !errors.Is(err, outbox.ErrNotFound) {
			t.Fatalf("ack of %s = %v, want ErrNotRouted", id, err)
		}
	}
	if err := e.a.Silence(ctx, "f-br", "ana", time.Now().Add(time.Hour), "not ours"); err != nil {
		t.Fatalf("silence of an unrouted finding: %v", err)
	}
	if sil := e.a.Module().Silences(); len(sil) != 1 || sil[0].FindingID != "f-br" {
		t.Fatalf("silences = %+v", sil)
	}
	if err := e.a.Acknowledge(ctx, "f9", "ana", ""); err != nil {
		t.Fatalf("ack of a routed finding: %v", err)
	}
}
