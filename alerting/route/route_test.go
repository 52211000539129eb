package route

import (
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func dir(t *testing.T) *directory.Directory {
	t.Helper()
	d, err := directory.Parse([]byte(`
recipients:
  - {id: cert-de, cert: true, country: DE, emails: [a@cert.de]}
  - {id: cert-fr, cert: true, country: FR, org_copies_opt_out: true, emails: [a@cert.fr], subscriptions: [port_surge]}
  - {id: cert-nl, cert: true, country: NL, emails: [a@cert.nl], subscriptions: [port_surge, fingerprint_surge], disabled: false}
  - {id: isp-de, country: DE, prefixes: [198.51.0.0/16], asns: [64500], emails: [abuse@isp.de]}
  - {id: uni-de, country: DE, prefixes: [198.51.100.0/24], emails: [cert@uni.de]}
  - {id: lab-de, country: DE, prefixes: [198.51.100.0/24], emails: [lab@uni.de]}
  - {id: asn-fr, country: FR, asns: [64501], emails: [abuse@fr.example]}
  - {id: v6-fr, country: FR, prefixes: ["2001:db8:1::/48"], emails: [v6@fr.example]}
  - {id: off, cert: true, country: IT, emails: [a@it.example], disabled: true}
`))
	if err != nil {
		t.Fatal(err)
	}
	return &d
}

func host(ip, cc string, asn uint32) *jasperv1.Finding {
	return &jasperv1.Finding{Id: "f-" + ip, Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
		SrcIp: netip.MustParseAddr(ip).AsSlice(), SrcCountry: cc, SrcAsn: asn}
}

func TestRouteTable(t *testing.T) {
	tab := Compile(dir(t))
	cases := []struct {
		name string
		f    *jasperv1.Finding
		want []Target
	}{
		{"country only", host("203.0.113.9", "DE", 65000), []Target{{"cert-de", ReasonCountry}}},
		{"org by prefix + cert copy", host("198.51.7.1", "DE", 65000), []Target{{"cert-de", ReasonCountryCopy}, {"isp-de", ReasonOrganisation}}},
		{"most specific prefix wins, ties all get it", host("198.51.100.7", "DE", 64500), []Target{{"cert-de", ReasonCountryCopy}, {"lab-de", ReasonOrganisation}, {"uni-de", ReasonOrganisation}}},
		{"asn when no prefix", host("203.0.113.1", "DE", 64500), []Target{{"cert-de", ReasonCountryCopy}, {"isp-de", ReasonOrganisation}}},
		{"cert opted out of org copies", host("192.0.2.1", "FR", 64501), []Target{{"asn-fr", ReasonOrganisation}}},
		{"opted-out cert still primary", host("192.0.2.1", "FR", 1), []Target{{"cert-fr", ReasonCountry}}},
		{"ipv6 org", host("2001:db8:1::5", "FR", 1), []Target{{"v6-fr", ReasonOrganisation}}},
		{"ipv4-mapped", &jasperv1.Finding{Type: jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM, SrcIp: netip.MustParseAddr("::ffff:198.51.100.1").AsSlice(), SrcCountry: "XX"}, []Target{{"lab-de", ReasonOrganisation}, {"uni-de", ReasonOrganisation}}},
		{"disabled cert", host("203.0.113.9", "IT", 1), nil},
		{"no one", host("203.0.113.9", "US", 1), nil},
		{"port surge subscribers", &jasperv1.Finding{Type: jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, Port: 23}, []Target{{"cert-fr", ReasonSubscription}, {"cert-nl", ReasonSubscription}}},
		{"fingerprint surge", &jasperv1.Finding{Type: jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE, Fingerprint: "mirai"}, []Target{{"cert-nl", ReasonSubscription}}},
		{"country surge unsubscribed", &jasperv1.Finding{Type: jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE, Country: "DE"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := tab.Route(c.f); !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestSilence(t *testing.T) {
	f := host("198.51.100.7", "DE", 64500)
	s := Silence{ID: "s1", Recipient: "uni-de", Prefix: "198.51.100.0/24", StartsMs: 100, EndsMs: 200}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rcpt string
		now  int64
		want bool
	}{{"uni-de", 150, true}, {"uni-de", 99, false}, {"uni-de", 200, false}, {"cert-de", 150, false}} {
		if got := s.Matches(c.rcpt, f, c.now); got != c.want {
			t.Errorf("Matches(%s, %d) = %v", c.rcpt, c.now, got)
		}
	}
	bad := []Silence{{ID: "x", StartsMs: 1, EndsMs: 2}, {ID: "x", Type: "nope", StartsMs: 1, EndsMs: 2}, {ID: "x", Type: "infected_host", StartsMs: 2, EndsMs: 2}, {Type: "port_surge", StartsMs: 1, EndsMs: 2}}
	for _, b := range bad {
		if b.Validate() == nil {
			t.Errorf("silence %+v validated", b)
		}
	}
}

const sec = int64(time.Second / time.Millisecond)

func rt() directory.Routing {
	return directory.Routing{GroupWait: directory.Duration(5 * time.Second), GroupInterval: directory.Duration(5 * time.Minute),
		RepeatInterval: directory.Duration(time.Hour), RateLimitPerHour: 0}
}

func kinds(items []Item) []ItemKind {
	var k []ItemKind
	for _, it := range items {
		k = append(k, it.Kind)
	}
	return k
}

func never(*jasperv1.Finding) bool { return false }

func TestGroupWaitDigestRepeat(t *testing.T) {
	g := NewGroup(rt(), 0)
	f1 := host("198.51.100.1", "DE", 1)
	g.Observe(f1, []byte("1"), ReasonCountry, 1000)
	if it := g.Flush(rt(), 1000+4*sec, 10, never); it != nil {
		t.Fatalf("flushed inside group_wait: %v", kinds(it))
	}
	// A second host arriving inside the wait rides along.
	f2 := host("198.51.100.2", "DE", 1)
	g.Observe(f2, []byte("2"), ReasonCountry, 3000)
	it := g.Flush(rt(), 1000+5*sec, 10, never)
	if !reflect.DeepEqual(kinds(it), []ItemKind{ItemNew, ItemNew}) {
		t.Fatalf("first notification %v", kinds(it))
	}
	// Continuing updates: nothing until repeat_interval.
	f1c := host("198.51.100.1", "DE", 1)
	f1c.State = jasperv1.FindingState_FINDING_STATE_CONTINUING
	for now := int64(10 * sec); now < 3600*sec; now += 60 * sec {
		g.Observe(f1c, []byte("1c"), ReasonCountry, now)
		if it := g.Flush(rt(), now, 10, never); it != nil {
			t.Fatalf("at %d: %v", now, kinds(it))
		}
	}
	// After the repeat interval both come back as one digest of reminders.
	it = g.Flush(rt(), 6000+3600*sec, 10, never)
	if !reflect.DeepEqual(kinds(it), []ItemKind{ItemReminder, ItemReminder}) {
		t.Fatalf("reminder digest %v", kinds(it))
	}
	// Ack f2: no more reminders for it; f1 ends: resolved in the next digest.
	g.Ack(f2.Id)
	f1e := host("198.51.100.1", "DE", 1)
	f1e.State = jasperv1.FindingState_FINDING_STATE_ENDED
	g.Observe(f1e, []byte("1e"), ReasonCountry, 3700*sec)
	if it := g.Flush(rt(), 3700*sec, 10, never); it != nil {
		t.Fatalf("digest before group_interval: %v", kinds(it))
	}
	it = g.Flush(rt(), 6000+3900*sec, 10, never)
	if !reflect.DeepEqual(kinds(it), []ItemKind{ItemResolved}) || string(it[0].FindingBytes) != "1e" {
		t.Fatalf("resolved digest %v", kinds(it))
	}
	if _, ok := g.Alerts[f1.Id]; ok {
		t.Fatal("resolved finding kept")
	}
	if it := g.Flush(rt(), 100000*sec, 10, never); it != nil {
		t.Fatalf("acked finding reminded: %v", kinds(it))
	}
}

func TestGroupSilenceAndRateLimit(t *testing.T) {
	r := rt()
	r.RateLimitPerHour = 2
	g := NewGroup(r, 0)
	muted := true
	sil := func(*jasperv1.Finding) bool { return muted }
	g.Observe(host("198.51.100.1", "DE", 1), []byte("1"), ReasonCountry, 0)
	if it := g.Flush(r, 10*sec, 10, sil); it != nil {
		t.Fatal("silenced finding notified")
	}
	muted = false
	if it := g.Flush(r, 11*sec, 10, sil); len(it) != 1 {
		t.Fatalf("after silence: %v", kinds(it))
	}
	// Two tokens per hour, one spent: one more now, then held.
	g.Observe(host("198.51.100.2", "DE", 1), []byte("2"), ReasonCountry, 12*sec)
	if it := g.Flush(r, 20*sec, 10, never); len(it) != 1 {
		t.Fatalf("second: %v", kinds(it))
	}
	g.Observe(host("198.51.100.3", "DE", 1), []byte("3"), ReasonCountry, 21*sec)
	g.Observe(host("198.51.100.4", "DE", 1), []byte("4"), ReasonCountry, 22*sec)
	if it := g.Flush(r, 30*sec, 10, never); it != nil || g.RateLimited != 1 {
		t.Fatalf("rate limit not applied: %v, limited %d", kinds(it), g.RateLimited)
	}
	// Half an hour refills one token: both held findings leave together.
	if it := g.Flush(r, 20*sec+1800*sec, 10, never); len(it) != 2 {
		t.Fatalf("after refill: %v", kinds(it))
	}
}

func TestGroupMaxItems(t *testing.T) {
	g := NewGroup(rt(), 0)
	for i := range 5 {
		g.Observe(host(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}).String(), "DE", 1), []byte{byte(i)}, ReasonCountry, 0)
	}
	a := g.Flush(rt(), 5*sec, 3, never)
	b := g.Flush(rt(), 6*sec, 3, never)
	if len(a) != 3 || len(b) != 2 {
		t.Fatalf("split %d+%d", len(a), len(b))
	}
}
