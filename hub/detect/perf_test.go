package detect

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TestFindingIDStable: finding ids are part of the replicated state and
// of alerts already sent; the id function must keep giving the same ids.
func TestFindingIDStable(t *testing.T) {
	for _, c := range []struct {
		t       jasperv1.FindingType
		subject string
		index   uint64
	}{
		{jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, "ih|" + string(make([]byte, 16)), 1},
		{jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, "ps|tcp/23", 18446744073709551615},
		{jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE, "cs|JP", 424242},
	} {
		h := sha256.New()
		fmt.Fprintf(h, "%d|%s|%d", c.t, c.subject, c.index)
		want := hex.EncodeToString(h.Sum(nil)[:16])
		if got := findingID(c.t, c.subject, c.index); got != want {
			t.Errorf("findingID(%v, %q, %d) = %s, want %s", c.t, c.subject, c.index, got, want)
		}
	}
}

// TestSubscribersGetOwnCopies: every OnFinding subscriber gets a copy of
// its own (the last one gets the queued copy): changing it touches
// neither the other subscribers' copies nor the detector's state.
func TestSubscribersGetOwnCopies(t *testing.T) {
	d := mustNew(t, DefaultConfig())
	var got [3][]*jasperv1.Finding
	for i := range got {
		d.OnFinding(func(f *jasperv1.Finding) {
			got[i] = append(got[i], f)
			f.Summary = fmt.Sprintf("changed by subscriber %d", i)
			f.Ports = append(f.Ports[:0], 9999)
		})
	}
	f := newFeed(t, d)
	f.send(f.batch("s1", t0.Unix(), r{src: "45.1.2.3", port: 23, fps: map[string]uint64{"mirai": 1}}))
	for i := range got {
		if len(got[i]) != 1 {
			t.Fatalf("subscriber %d got %d findings", i, len(got[i]))
		}
		if want := fmt.Sprintf("changed by subscriber %d", i); got[i][0].Summary != want {
			t.Errorf("subscriber %d sees %q: copies are shared", i, got[i][0].Summary)
		}
	}
	if got[0][0] == got[1][0] || got[1][0] == got[2][0] {
		t.Fatal("two subscribers got the same message")
	}
	fs := d.Findings(Filter{})
	if len(fs) != 1 || fs[0].Summary == "changed by subscriber 2" || len(fs[0].Ports) != 1 || fs[0].Ports[0] != 23 {
		t.Fatalf("detector state changed by a subscriber: %v", fs)
	}
}
