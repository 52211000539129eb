package outbox_test

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/internal/memraft"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// BenchmarkTickOpenFindings is the cost of one tick (an entry every hub
// applies every tick interval) with 10,000 open, already-notified findings
// for one CERT, in steady state (nothing due: the group's next-due time
// lets the tick skip it; a full look happens once a minute for expiry).
func BenchmarkTickOpenFindings(b *testing.B) {
	m := newModules(b, 1)[0]
	l := memraft.New(m)
	l.Tick(t0)
	for i := range 10000 {
		l.Finding(&jasperv1.Finding{Id: fmt.Sprintf("f%05d", i), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
			SrcIp: netip.AddrFrom4([4]byte{203, 0, byte(i >> 8), byte(i)}).AsSlice(), SrcCountry: "DE"})
	}
	now := t0.Add(2 * time.Second)
	for range 30 { // notify all (500 per notification), then steady state
		now = now.Add(time.Second)
		l.Tick(now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		now = now.Add(time.Second)
		l.Tick(now)
	}
}
