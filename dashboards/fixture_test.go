package dashboards

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/jasperfed/jasper/hub/rollup"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Passwords and tokens of the test accounts.
const (
	pwJP     = "jp-analyst-pass"
	pwDE     = "de-analyst-pass"
	pwOrg    = "org-analyst-pass"
	pwCoord  = "coordinator-pass"
	tokenJP  = "jp-script-token-0123456789"
	tokenOrg = "org-script-token-0123456789"
)

func bcryptHash(t testing.TB, pw string) string {
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// writeAccounts writes the test accounts file: an analyst of JP, one of
// DE, an organisation analyst owning 198.51.100.0/25, and a coordinator.
func writeAccounts(t testing.TB, dir string) string {
	t.Helper()
	y := fmt.Sprintf(`accounts:
  - name: jp
    role: analyst
    password_bcrypt: %q
    constituency: {countries: [JP]}
    tokens_sha256: [%s]
  - name: de
    role: analyst
    password_bcrypt: %q
    constituency: {countries: [DE]}
  - name: org
    role: analyst
    password_bcrypt: %q
    constituency: {prefixes: [198.51.100.0/25]}
    tokens_sha256: [%s]
  - name: coord
    role: coordinator
    password_bcrypt: %q
`, bcryptHash(t, pwJP), TokenDigest(tokenJP), bcryptHash(t, pwDE), bcryptHash(t, pwOrg), TokenDigest(tokenOrg), bcryptHash(t, pwCoord))
	p := filepath.Join(dir, "accounts.yaml")
	if err := os.WriteFile(p, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// memFindings is an in-memory FindingsProvider, Actions and STIX exporter
// standing in for the hub's raft state and alerting.
type memFindings struct {
	mu   sync.Mutex
	recs []FindingRecord
	acts []string
}

func (m *memFindings) Findings(context.Context) ([]FindingRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]FindingRecord, len(m.recs))
	copy(out, m.recs)
	return out, nil
}

func (m *memFindings) Acknowledge(_ context.Context, id, user, note string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acts = append(m.acts, "ack "+id+" "+user+" "+note)
	for i := range m.recs {
		if m.recs[i].Finding.GetId() == id {
			m.recs[i].AckedBy, m.recs[i].Note = user, note
		}
	}
	return nil
}

func (m *memFindings) Silence(_ context.Context, id, user string, until time.Time, note string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acts = append(m.acts, "silence "+id+" "+user+" "+until.UTC().Format(time.RFC3339))
	for i := range m.recs {
		if m.recs[i].Finding.GetId() == id {
			m.recs[i].SilencedUntil = until
		}
	}
	return nil
}

func (m *memFindings) actions() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.acts...)
}

// testSTIX writes a minimal bundle naming each finding's address.
func testSTIX(_ context.Context, w io.Writer, fs []*jasperv1.Finding) error {
	var objs []map[string]string
	for _, f := range fs {
		a, _ := netip.AddrFromSlice(f.GetSrcIp())
		objs = append(objs, map[string]string{"type": "ipv4-addr", "id": "ipv4-addr--" + f.GetId(), "value": a.String()})
	}
	return json.NewEncoder(w).Encode(map[string]any{"type": "bundle", "objects": objs})
}

func hostFinding(id string, typ jasperv1.FindingType, ip, country string, ports []uint32, sensor string, lastSeen time.Time) FindingRecord {
	return FindingRecord{Finding: &jasperv1.Finding{Id: id, Type: typ, State: jasperv1.FindingState_FINDING_STATE_CONTINUING,
		SrcIp: netip.MustParseAddr(ip).AsSlice(), SrcCountry: country, SrcAsn: 64500, Ports: ports,
		Classes: []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN}, Packets: 120, Bytes: 7200,
		DstIps: 40, Sensors: []string{sensor}, FirstSeenMs: lastSeen.Add(-time.Hour).UnixMilli(),
		LastSeenMs: lastSeen.UnixMilli(), Summary: "host " + ip + " scans the darknet"}}
}

// fixture is a dashboards server on a real HTTP listener over a filled
// rollup module.
type fixture struct {
	srv      *Server
	ts       *httptest.Server
	mod      *rollup.Module
	findings *memFindings
	now      time.Time
}

type fixtureOpts struct {
	tls  bool
	mut  func(*Config)
	deps func(*Deps)
}

var fixtureNow = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

func addRows(m *rollup.Module, index uint64, sensor string, bin time.Time, rows []testRow) {
	r := &jasperv1.Rows{}
	en := &jasperv1.Enrichment{}
	fp := &jasperv1.FingerprintColumn{Name: "mirai"}
	var pk uint64
	for _, x := range rows {
		r.SrcIp = append(r.SrcIp, netip.MustParseAddr(x.ip).AsSlice())
		r.Protocol = append(r.Protocol, x.proto)
		r.DstPort = append(r.DstPort, x.port)
		r.Class = append(r.Class, x.class)
		r.Packets = append(r.Packets, x.packets)
		r.Bytes = append(r.Bytes, x.packets*60)
		r.FirstSeenMs = append(r.FirstSeenMs, 0)
		r.LastSeenMs = append(r.LastSeenMs, 1000)
		fp.Packets = append(fp.Packets, x.mirai)
		en.SrcCountry = append(en.SrcCountry, x.country)
		en.SrcAsn = append(en.SrcAsn, x.asn)
		pk += x.packets
	}
	r.Fingerprints = []*jasperv1.FingerprintColumn{fp}
	m.OnBatch(index, &jasperv1.CommittedBatch{SensorId: sensor, SensorCountry: "JP", Enrichment: en,
		ReceivedAtMs: bin.Add(time.Minute).UnixMilli(),
		Batch: &jasperv1.Batch{Sequence: index, BinStart: bin.Unix(), BinSeconds: 60, Rows: r,
			Stats: &jasperv1.SensorStats{PacketsSeen: pk + 3, PacketsSummarised: pk, KernelDrops: 1}}})
}

type testRow struct {
	ip      string
	proto   uint32
	port    uint32
	class   jasperv1.TrafficClass
	packets uint64
	country string
	asn     uint32
	mirai   uint64
}

var (
	syn  = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN
	udp  = jasperv1.TrafficClass_TRAFFIC_CLASS_UDP
	sack = jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK
)

func newFixture(t *testing.T, o fixtureOpts) *fixture { return newFixtureOpts(t, o) }

// newFixtureTB is a plain fixture for fuzz targets.
func newFixtureTB(t testing.TB) *fixture { return newFixtureOpts(t, fixtureOpts{}) }

func newFixtureOpts(t testing.TB, o fixtureOpts) *fixture {
	t.Helper()
	mod, err := rollup.New(minuteRollups())
	if err != nil {
		t.Fatal(err)
	}
	now := fixtureNow
	// Two hours of traffic from JP, DE and an organisation inside US.
	for i := range 120 {
		bin := now.Add(-2*time.Hour + time.Duration(i)*time.Minute)
		addRows(mod, uint64(2*i+1), "tokyo-1", bin, []testRow{
			{"192.0.2.10", 6, 23, syn, 10, "JP", 2516, 10},
			{"192.0.2.11", 6, 2323, syn, 4, "JP", 2516, 4},
			{"203.0.113.5", 6, 445, syn, 6, "DE", 3320, 0},
		})
		addRows(mod, uint64(2*i+2), "berlin-1", bin, []testRow{
			{"203.0.113.5", 6, 445, syn, 2, "DE", 3320, 0},
			{"203.0.113.6", 17, 53, udp, 3, "DE", 3320, 0},
			{"198.51.100.7", 6, 80, sack, 5, "US", 64496, 0},
			{"198.51.100.200", 6, 443, sack, 1, "US", 64496, 0},
		})
	}
	mf := &memFindings{recs: []FindingRecord{
		hostFinding("f-jp-1", jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, "192.0.2.10", "JP", []uint32{23, 2323}, "tokyo-1", now.Add(-5*time.Minute)),
		hostFinding("f-de-1", jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, "203.0.113.5", "DE", []uint32{445}, "tokyo-1", now.Add(-5*time.Minute)),
		hostFinding("f-us-1", jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM, "198.51.100.7", "US", []uint32{80}, "berlin-1", now.Add(-10*time.Minute)),
		{Finding: &jasperv1.Finding{Id: "s-23", Type: jasperv1.FindingType_FINDING_TYPE_PORT_SURGE,
			State: jasperv1.FindingState_FINDING_STATE_NEW, Protocol: 6, Port: 23, Baseline: 4, Observed: 40, Score: 9.5,
			TopCountries: []string{"JP", "BR"}, DetectedAtMs: now.Add(-20 * time.Minute).UnixMilli(),
			UpdatedAtMs: now.Add(-time.Minute).UnixMilli(), Summary: "telnet scanners up tenfold"}},
		{Finding: &jasperv1.Finding{Id: "s-de", Type: jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE,
			State: jasperv1.FindingState_FINDING_STATE_CONTINUING, Country: "DE", Baseline: 2, Observed: 5, Score: 3,
			DetectedAtMs: now.Add(-30 * time.Minute).UnixMilli(), UpdatedAtMs: now.Add(-2 * time.Minute).UnixMilli(),
			Summary: "more infected hosts in DE"}},
		{Finding: &jasperv1.Finding{Id: "s-old", Type: jasperv1.FindingType_FINDING_TYPE_PORT_SURGE,
			State: jasperv1.FindingState_FINDING_STATE_ENDED, Protocol: 17, Port: 1900, Baseline: 1, Observed: 9, Score: 4,
			DetectedAtMs: now.Add(-90 * time.Minute).UnixMilli(), UpdatedAtMs: now.Add(-60 * time.Minute).UnixMilli()}},
	}}
	cfg := DefaultConfig()
	cfg.AccountsFile = writeAccounts(t, t.TempDir())
	if o.mut != nil {
		o.mut(&cfg)
	}
	expiry := now.Add(72 * time.Hour)
	deps := Deps{
		Source: NewEmbeddedSource(mod), Findings: mf, Actions: mf, STIX: testSTIX,
		CertExpiry: func(context.Context) (map[string]time.Time, error) {
			return map[string]time.Time{"tokyo-1": expiry}, nil
		},
		Now: func() time.Time { return now },
	}
	if o.deps != nil {
		o.deps(&deps)
	}
	srv, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	var ts *httptest.Server
	if o.tls {
		ts = httptest.NewTLSServer(srv)
	} else {
		ts = httptest.NewServer(srv)
	}
	t.Cleanup(func() { ts.Close(); srv.Stop() })
	return &fixture{srv: srv, ts: ts, mod: mod, findings: mf, now: now}
}

// client is a browser-like API client with a cookie jar.
type client struct {
	t    *testing.T
	base string
	hc   *http.Client
	csrf string
	auth string // bearer token, if any
}

func (f *fixture) client(t *testing.T) *client {
	jar, _ := cookiejar.New(nil)
	hc := f.ts.Client()
	hc.Jar = jar
	return &client{t: t, base: f.ts.URL, hc: hc}
}

func (c *client) do(method, path string, body any, hdr map[string]string) (int, []byte, *http.Response) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.csrf != "" && method == http.MethodPost {
		req.Header.Set(csrfHeader, c.csrf)
	}
	if c.auth != "" {
		req.Header.Set("Authorization", "Bearer "+c.auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp
}

func (c *client) login(user, pw string) int {
	c.t.Helper()
	code, b, _ := c.do("POST", "/api/login", map[string]string{"user": user, "password": pw}, nil)
	if code == http.StatusOK {
		var m meResponse
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatal(err)
		}
		c.csrf = m.CSRFToken
	}
	return code
}

// get fetches path and decodes JSON into v, failing unless 200.
func (c *client) get(path string, v any) {
	c.t.Helper()
	code, b, _ := c.do("GET", path, nil, nil)
	if code != http.StatusOK {
		c.t.Fatalf("GET %s = %d %s", path, code, b)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			c.t.Fatalf("GET %s: %v", path, err)
		}
	}
}

func newHTTPServer(t *testing.T, h http.Handler) *httptest.Server {
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// minuteRollups is the rollup configuration of the tests: one-minute bins,
// like the ClickHouse minute table.
func minuteRollups() rollup.Config {
	c := rollup.DefaultConfig()
	c.BinSeconds, c.MaxCellsPerBin, c.RateBins = 60, 20000, 5
	return c
}
