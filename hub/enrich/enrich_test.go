package enrich

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

var fixtureEpoch = time.Date(2026, 6, 17, 19, 0, 0, 0, time.UTC).Unix()

// writeCountryDB writes a tiny country database in the ip-location-db
// layout: prefix -> country_code.
func writeCountryDB(t testing.TB, dir string, nets map[string]string) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{BuildEpoch: fixtureEpoch, DatabaseType: "country", IPVersion: 6})
	if err != nil {
		t.Fatal(err)
	}
	for cidr, cc := range nets {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, mmdbtype.Map{"country_code": mmdbtype.String(cc)}); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(dir, "country.mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeASNDB builds the ASN database through BuildASN from CSV text, as
// `jasper geo build` does.
func writeASNDB(t testing.TB, dir, csv4, csv6 string, epoch int64) string {
	t.Helper()
	var buf bytes.Buffer
	st, err := BuildASN(&buf, epoch, strings.NewReader(csv4), strings.NewReader(csv6))
	if err != nil {
		t.Fatal(err)
	}
	if st.Ranges == 0 {
		t.Fatal("no ranges inserted")
	}
	path := filepath.Join(dir, "asn.mmdb")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	fixtureCSV4 = `1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc."
8.8.8.0,8.8.8.255,15169,Google LLC
71.6.128.0,71.6.255.255,10439,CariNet
192.168.0.0,192.168.0.255,32,private space is reserved
not-an-ip,1.2.3.4,5,broken
`
	fixtureCSV6 = `2a00:1450::,2a00:1450:ffff:ffff:ffff:ffff:ffff:ffff,15169,Google LLC
`
)

func newFixtureEnricher(t testing.TB, research []ResearchScanner, reg prometheus.Registerer) *Enricher {
	t.Helper()
	dir := t.TempDir()
	cdb := writeCountryDB(t, dir, map[string]string{
		"1.0.0.0/24":     "AU",
		"8.8.8.0/24":     "US",
		"71.6.128.0/17":  "US",
		"2a00:1450::/32": "IE",
	})
	adb := writeASNDB(t, dir, fixtureCSV4, fixtureCSV6, fixtureEpoch)
	e, err := New(Config{CountryDB: cdb, ASNDB: adb, Research: research}, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestIsBogon(t *testing.T) {
	for _, tc := range []struct {
		ip    string
		bogon bool
	}{
		{"0.1.2.3", true}, {"10.0.0.1", true}, {"100.64.0.1", true}, {"100.128.0.1", false},
		{"127.0.0.1", true}, {"169.254.1.1", true}, {"172.16.0.1", true}, {"172.32.0.1", false},
		{"192.0.0.8", true}, {"192.0.2.1", true}, {"192.88.99.1", true}, {"192.168.1.1", true},
		{"198.18.0.1", true}, {"198.19.255.255", true}, {"198.20.0.1", false},
		{"198.51.100.7", true}, {"203.0.113.9", true}, {"224.0.0.1", true}, {"239.255.255.255", true},
		{"240.0.0.1", true}, {"255.255.255.255", true}, {"8.8.8.8", false}, {"1.1.1.1", false},
		{"::", true}, {"::1", true}, {"::ffff:10.0.0.1", true}, {"::ffff:8.8.8.8", false},
		{"64:ff9b::808:808", false}, {"100::1", true}, {"fc00::1", true}, {"fe80::1", true},
		{"ff02::1", true}, {"2001:db8::1", true}, {"2001:2::1", true}, {"2001:10::1", true},
		{"3fff::1", true}, {"2a00:1450::1", false}, {"2001:4860::8888", false}, {"4000::1", true},
	} {
		if got := IsBogon(netip.MustParseAddr(tc.ip)); got != tc.bogon {
			t.Errorf("IsBogon(%s) = %v, want %v", tc.ip, got, tc.bogon)
		}
	}
	if !IsBogon(netip.Addr{}) {
		t.Error("invalid address must be bogon")
	}
}

func TestLookupAndLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newFixtureEnricher(t, []ResearchScanner{
		{Name: "shodan", Prefixes: []string{"71.6.146.0/24"}},
		{Name: "google-research", ASNs: []uint32{15169}},
	}, reg)
	if e.Version() != "2026-06-17" {
		t.Errorf("version %q", e.Version())
	}
	for _, tc := range []struct {
		ip       string
		country  string
		asn      uint32
		label    jasperv1.SourceLabel
		research string
	}{
		{"1.0.0.7", "AU", 13335, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE, ""},
		{"8.8.8.8", "US", 15169, jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH, "google-research"},
		{"71.6.146.185", "US", 10439, jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH, "shodan"},
		{"71.6.147.1", "US", 10439, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE, ""},
		{"2a00:1450::1", "IE", 15169, jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH, "google-research"},
		{"5.5.5.5", "", 0, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE, ""},
		{"192.168.1.1", "", 0, jasperv1.SourceLabel_SOURCE_LABEL_BOGON, ""},
	} {
		r := e.Lookup(netip.MustParseAddr(tc.ip))
		if r.Country != tc.country || r.ASN != tc.asn || r.Label != tc.label || r.Research != tc.research {
			t.Errorf("Lookup(%s) = %+v, want %s %d %s %q", tc.ip, r, tc.country, tc.asn, tc.label, tc.research)
		}
	}
	// Bogons are never looked up: 7 lookups minus the one bogon.
	if got := testutil.ToFloat64(e.m.lookups.country); got != 6 {
		t.Errorf("country lookups %v, want 6", got)
	}
}

func TestEnrichBatch(t *testing.T) {
	reg := prometheus.NewRegistry()
	e := newFixtureEnricher(t, []ResearchScanner{{Name: "shodan", Prefixes: []string{"71.6.146.0/24"}}}, reg)
	ips := [][]byte{
		netip.MustParseAddr("1.0.0.7").AsSlice(),
		netip.MustParseAddr("1.0.0.7").AsSlice(),
		netip.MustParseAddr("10.9.9.9").AsSlice(),
		netip.MustParseAddr("71.6.146.1").AsSlice(),
		{1, 2, 3}, // malformed
		netip.MustParseAddr("2a00:1450::9").AsSlice(),
	}
	got := e.Enrich(&jasperv1.Batch{Rows: &jasperv1.Rows{SrcIp: ips}})
	wantCC := []string{"AU", "AU", "", "US", "", "IE"}
	wantASN := []uint32{13335, 13335, 0, 10439, 0, 15169}
	L := jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE
	B, R := jasperv1.SourceLabel_SOURCE_LABEL_BOGON, jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH
	wantL := []jasperv1.SourceLabel{L, L, B, R, B, L}
	for i := range ips {
		if got.SrcCountry[i] != wantCC[i] || got.SrcAsn[i] != wantASN[i] || got.SrcLabel[i] != wantL[i] {
			t.Errorf("row %d: %s %d %s, want %s %d %s", i, got.SrcCountry[i], got.SrcAsn[i], got.SrcLabel[i], wantCC[i], wantASN[i], wantL[i])
		}
	}
	if got.GeoDbVersion != "2026-06-17" {
		t.Errorf("geo_db_version %q", got.GeoDbVersion)
	}
	// Repeated source looked up once: AU, US, IE -> 3 country lookups.
	if n := testutil.ToFloat64(e.m.lookups.country); n != 3 {
		t.Errorf("country lookups %v, want 3", n)
	}
	if n := testutil.ToFloat64(e.m.rows.bogon); n != 2 {
		t.Errorf("bogon rows %v, want 2", n)
	}
	if n := testutil.ToFloat64(e.m.research.WithLabelValues("shodan")); n != 1 {
		t.Errorf("research count %v, want 1", n)
	}
	empty := e.Enrich(&jasperv1.Batch{})
	if len(empty.SrcLabel) != 0 {
		t.Error("empty batch must give empty columns")
	}
}

func TestNoDatabases(t *testing.T) {
	e, err := New(DefaultConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	r := e.Lookup(netip.MustParseAddr("8.8.8.8"))
	if r.Label != jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE || r.Country != "" || e.Version() != "" {
		t.Errorf("got %+v version %q", r, e.Version())
	}
}

func TestVersionDiffers(t *testing.T) {
	dir := t.TempDir()
	cdb := writeCountryDB(t, dir, map[string]string{"1.0.0.0/24": "AU"})
	adb := writeASNDB(t, dir, fixtureCSV4, "", fixtureEpoch+86400)
	e, err := New(Config{CountryDB: cdb, ASNDB: adb}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if v := e.Version(); v != "country:2026-06-17 asn:2026-06-18" {
		t.Errorf("version %q", v)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Research: []ResearchScanner{{Prefixes: []string{"1.0.0.0/8"}}}}, "research[0].name"},
		{Config{Research: []ResearchScanner{{Name: "x"}}}, "needs prefixes or asns"},
		{Config{Research: []ResearchScanner{{Name: "x", Prefixes: []string{"1.0.0.0/33"}}}}, "research[0].prefixes[0]"},
		{Config{Research: []ResearchScanner{{Name: "x", ASNs: []uint32{0}}}}, "research[0].asns[0]"},
	} {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
	}
	if _, err := New(Config{CountryDB: "/nonexistent.mmdb"}, Deps{}); err == nil {
		t.Error("missing database must fail")
	}
}

func TestBuildASNDeterministic(t *testing.T) {
	var a, b bytes.Buffer
	if _, err := BuildASN(&a, fixtureEpoch, strings.NewReader(fixtureCSV4), strings.NewReader(fixtureCSV6)); err != nil {
		t.Fatal(err)
	}
	st, err := BuildASN(&b, fixtureEpoch, strings.NewReader(fixtureCSV4), strings.NewReader(fixtureCSV6))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Error("same input gave different databases")
	}
	// 4 good ranges; the broken line and the reserved benchmarking range are skipped.
	if st.Ranges != 4 || st.Skipped != 2 {
		t.Errorf("stats %+v, want 4 ranges 2 skipped", st)
	}
}

func TestParseASNRecord(t *testing.T) {
	r, err := ParseASNRecord([]string{"1.0.0.0", "1.0.0.255", "13335", "Cloudflare, Inc."})
	if err != nil || r.ASN != 13335 || r.Org != "Cloudflare, Inc." || r.End != netip.MustParseAddr("1.0.0.255") {
		t.Fatalf("got %+v %v", r, err)
	}
	for _, bad := range [][]string{
		{"1.0.0.0", "1.0.0.255"},
		{"1.0.0.9", "1.0.0.1", "5"},
		{"1.0.0.0", "::1", "5"},
		{"1.0.0.0", "1.0.0.1", "-5"},
		{"1.0.0.0", "1.0.0.1", "99999999999"},
		{"fe80::1%eth0", "fe80::2%eth0", "5"},
	} {
		if _, err := ParseASNRecord(bad); err == nil {
			t.Errorf("ParseASNRecord(%q) accepted", bad)
		}
	}
}

func FuzzParseASNRecord(f *testing.F) {
	f.Add("1.0.0.0", "1.0.0.255", "13335", "Cloudflare")
	f.Add("2001::", "2001::ffff", "6939", "")
	f.Add("::ffff:1.2.3.4", "1.2.3.5", "1", "x")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, a, b, c, d string) {
		r, err := ParseASNRecord([]string{a, b, c, d})
		if err != nil {
			return
		}
		if r.End.Less(r.Start) || r.Start.Is4() != r.End.Is4() {
			t.Fatalf("accepted bad range %+v", r)
		}
	})
}

func FuzzBuildASN(f *testing.F) {
	f.Add([]byte(fixtureCSV4))
	f.Add([]byte(fixtureCSV6))
	f.Add([]byte("\"unterminated,1,2\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		var buf bytes.Buffer
		if _, err := BuildASN(&buf, fixtureEpoch, bytes.NewReader(data)); err != nil {
			t.Fatalf("BuildASN: %v", err)
		}
	})
}

// TestRealDatabases runs against the databases `jasper geo build` made
// (CI: .ci/setup-geo.sh exports JASPER_TEST_GEO_DIR).
func TestRealDatabases(t *testing.T) {
	dir := os.Getenv("JASPER_TEST_GEO_DIR")
	if dir == "" {
		t.Skip("JASPER_TEST_GEO_DIR not set: run .ci/setup-geo.sh (jasper geo build) to test the real databases")
	}
	e, err := New(Config{CountryDB: filepath.Join(dir, "country.mmdb"), ASNDB: filepath.Join(dir, "asn.mmdb")}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Version() != "2026-06-17" {
		t.Errorf("geo_db_version %q, want 2026-06-17", e.Version())
	}
	for _, tc := range []struct {
		ip      string
		country string
		asn     uint32
	}{
		{"8.8.8.8", "US", 15169},
		{"1.1.1.1", "AU", 13335},
		{"193.0.6.139", "NL", 3333},
	} {
		r := e.Lookup(netip.MustParseAddr(tc.ip))
		if r.Country != tc.country || r.ASN != tc.asn {
			t.Errorf("Lookup(%s) = %+v, want %s AS%d", tc.ip, r, tc.country, tc.asn)
		}
	}
}

// BenchmarkEnrich measures enrichment of a batch of 1000 rows over 250
// distinct sources (4 rows each, as sensors emit per-port rows).
func BenchmarkEnrich(b *testing.B) {
	var e *Enricher
	if dir := os.Getenv("JASPER_TEST_GEO_DIR"); dir != "" {
		var err error
		e, err = New(Config{CountryDB: filepath.Join(dir, "country.mmdb"), ASNDB: filepath.Join(dir, "asn.mmdb")}, Deps{})
		if err != nil {
			b.Fatal(err)
		}
	} else {
		e = newFixtureEnricher(b, nil, nil)
	}
	rows := &jasperv1.Rows{}
	for i := range 250 {
		ip := []byte{byte(1 + i%200), byte(i * 7), byte(i * 13), byte(i)}
		for range 4 {
			rows.SrcIp = append(rows.SrcIp, ip)
		}
	}
	batch := &jasperv1.Batch{Rows: rows}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		e.Enrich(batch)
	}
	b.ReportMetric(float64(b.N*len(rows.SrcIp))/b.Elapsed().Seconds(), "rows/s")
}
