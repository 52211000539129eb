package dashboards

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"gopkg.in/yaml.v3"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// endpoints lists every API route with a method, for the auth tests.
var endpoints = []struct{ method, path string }{
	{"POST", "/api/logout"},
	{"GET", "/api/me"},
	{"GET", "/api/overview"},
	{"GET", "/api/map"},
	{"GET", "/api/top/tcp_ports"},
	{"GET", "/api/hosts"},
	{"GET", "/api/early-warning"},
	{"GET", "/api/findings"},
	{"GET", "/api/findings/export.csv"},
	{"GET", "/api/findings/export.stix"},
	{"POST", "/api/findings/f-jp-1/ack"},
	{"POST", "/api/findings/f-jp-1/silence"},
	{"GET", "/api/sensors"},
}

func TestEveryEndpointNeedsAuth(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	for _, e := range endpoints {
		if code, b, _ := c.do(e.method, e.path, nil, nil); code != http.StatusUnauthorized {
			t.Errorf("%s %s without auth = %d %s, want 401", e.method, e.path, code, b)
		}
		// A forged cookie is no session.
		if code, _, _ := c.do(e.method, e.path, nil, map[string]string{"Cookie": sessionCookie + "=forged"}); code != http.StatusUnauthorized {
			t.Errorf("%s %s with a forged cookie = %d, want 401", e.method, e.path, code)
		}
		// A wrong bearer token is refused.
		if code, _, resp := c.do(e.method, e.path, nil, map[string]string{"Authorization": "Bearer nope"}); code != http.StatusUnauthorized ||
			resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("%s %s with a bad token = %d, want 401 with WWW-Authenticate", e.method, e.path, code)
		}
	}
	if f.findings.actions() != nil {
		t.Errorf("unauthenticated requests acted: %v", f.findings.actions())
	}
	// The OpenAPI document and the UI need no login.
	if code, b, _ := c.do("GET", "/api/openapi.yaml", nil, nil); code != 200 || !strings.Contains(string(b), "openapi: 3") {
		t.Errorf("openapi = %d", code)
	}
	if code, b, resp := c.do("GET", "/", nil, nil); code != 200 || !strings.Contains(string(b), "<html") ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Errorf("UI index = %d, CSP %q", code, resp.Header.Get("Content-Security-Policy"))
	}
	if code, _, _ := c.do("GET", "/api/nope", nil, nil); code != 404 {
		t.Errorf("unknown endpoint = %d", code)
	}
}

func TestLoginSessionLogout(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	if code := c.login("jp", "wrong password"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password = %d", code)
	}
	if code := c.login("nobody", pwJP); code != http.StatusUnauthorized {
		t.Fatalf("unknown user = %d", code)
	}
	code, b, resp := c.do("POST", "/api/login", map[string]string{"user": "jp", "password": pwJP}, nil)
	if code != 200 {
		t.Fatalf("login = %d %s", code, b)
	}
	var m meResponse
	_ = json.Unmarshal(b, &m)
	c.csrf = m.CSRFToken
	if m.User != "jp" || m.Role != RoleAnalyst || len(m.CSRFToken) < 40 || !slices.Equal(m.Constituency.Countries, []string{"JP"}) {
		t.Errorf("login answer = %+v", m)
	}
	ck := resp.Cookies()
	if len(ck) != 1 || ck[0].Name != sessionCookie || !ck[0].HttpOnly || ck[0].SameSite != http.SameSiteStrictMode || ck[0].Secure {
		t.Errorf("session cookie over plain HTTP = %+v", ck)
	}
	var me meResponse
	c.get("/api/me", &me)
	if me.User != "jp" || me.CSRFToken != m.CSRFToken {
		t.Errorf("me = %+v", me)
	}
	// Logout needs the CSRF token, then ends the session for good.
	old := c.csrf
	c.csrf = ""
	if code, _, _ := c.do("POST", "/api/logout", nil, nil); code != http.StatusForbidden {
		t.Errorf("logout without CSRF token = %d, want 403", code)
	}
	c.csrf = old
	sid := ""
	for _, k := range c.hc.Jar.Cookies(mustURL(t, f.ts.URL)) {
		if k.Name == sessionCookie {
			sid = k.Value
		}
	}
	code, _, resp = c.do("POST", "/api/logout", nil, nil)
	if code != http.StatusNoContent || len(resp.Cookies()) != 1 || resp.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout = %d cookies %+v", code, resp.Cookies())
	}
	if code, _, _ := c.do("GET", "/api/me", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("after logout me = %d", code)
	}
	// The old cookie value, replayed, is dead too.
	if code, _, _ := c.do("GET", "/api/me", nil, map[string]string{"Cookie": sessionCookie + "=" + sid}); code != http.StatusUnauthorized {
		t.Errorf("replayed session after logout = %d", code)
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestSecureCookieOverTLS(t *testing.T) {
	f := newFixture(t, fixtureOpts{tls: true})
	c := f.client(t)
	code, _, resp := c.do("POST", "/api/login", map[string]string{"user": "de", "password": pwDE}, nil)
	if code != 200 || len(resp.Cookies()) != 1 || !resp.Cookies()[0].Secure || !resp.Cookies()[0].HttpOnly {
		t.Fatalf("login over TLS = %d cookies %+v", code, resp.Cookies())
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS over TLS")
	}
}

func TestSessionExpires(t *testing.T) {
	now := fixtureNow
	f := newFixture(t, fixtureOpts{deps: func(d *Deps) { d.Now = func() time.Time { return now } }})
	c := f.client(t)
	if c.login("jp", pwJP) != 200 {
		t.Fatal("login")
	}
	now = now.Add(13 * time.Hour) // past the 12 h default
	if code, _, _ := c.do("GET", "/api/me", nil, nil); code != http.StatusUnauthorized {
		t.Errorf("expired session = %d", code)
	}
}

func TestLoginRateLimit(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	for i := range 5 {
		if code := c.login("jp", "guess"); code != http.StatusUnauthorized {
			t.Fatalf("attempt %d = %d", i, code)
		}
	}
	// The sixth attempt is refused before the password is checked.
	if code := c.login("jp", pwJP); code != http.StatusTooManyRequests {
		t.Fatalf("sixth attempt with the right password = %d, want 429", code)
	}
	// Another account from the same address still logs in.
	if code := c.login("de", pwDE); code != 200 {
		t.Errorf("other account = %d", code)
	}
}

func TestCSRFAndCrossOrigin(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	if c.login("jp", pwJP) != 200 {
		t.Fatal("login")
	}
	tok := c.csrf
	c.csrf = ""
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/ack", map[string]string{"note": "x"}, nil); code != http.StatusForbidden {
		t.Errorf("ack without CSRF token = %d", code)
	}
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/ack", nil, map[string]string{csrfHeader: "wrong"}); code != http.StatusForbidden {
		t.Errorf("ack with wrong CSRF token = %d", code)
	}
	c.csrf = tok
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/ack", nil, map[string]string{"Sec-Fetch-Site": "cross-site"}); code != http.StatusForbidden {
		t.Errorf("cross-site ack = %d", code)
	}
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/ack", nil, map[string]string{"Origin": "https://evil.example"}); code != http.StatusForbidden {
		t.Errorf("cross-origin ack = %d", code)
	}
	if got := f.findings.actions(); got != nil {
		t.Fatalf("refused requests acted: %v", got)
	}
	if code, b, _ := c.do("POST", "/api/findings/f-jp-1/ack", map[string]string{"note": "ticket 42"}, map[string]string{"Sec-Fetch-Site": "same-origin"}); code != http.StatusNoContent {
		t.Fatalf("same-origin ack = %d %s", code, b)
	}
	if got := f.findings.actions(); !slices.Equal(got, []string{"ack f-jp-1 jp ticket 42"}) {
		t.Errorf("actions = %v", got)
	}
}

func TestBearerToken(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	c.auth = tokenJP
	var me meResponse
	c.get("/api/me", &me)
	if me.User != "jp" || me.CSRFToken != "" {
		t.Errorf("token me = %+v", me)
	}
	// Scripts need no CSRF token.
	if code, b, _ := c.do("POST", "/api/findings/f-jp-1/silence", map[string]string{"for": "2h"}, nil); code != http.StatusNoContent {
		t.Errorf("token silence = %d %s", code, b)
	}
	want := "silence f-jp-1 jp " + fixtureNow.Add(2*time.Hour).Format(time.RFC3339)
	if got := f.findings.actions(); !slices.Equal(got, []string{want}) {
		t.Errorf("actions = %v, want %s", got, want)
	}
	// The token carries the account's scope.
	if code, _, _ := c.do("GET", "/api/hosts?country=DE", nil, nil); code != http.StatusForbidden {
		t.Errorf("token hosts of DE = %d", code)
	}
}

type listResp struct {
	Entries []Entry `json:"entries"`
}

func keys(es []Entry) string {
	var s []string
	for _, e := range es {
		s = append(s, e.Key+":"+itoa(e.Packets)+"/"+itoa(e.Sources))
	}
	return strings.Join(s, " ")
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }

func TestAggregatesAndFilters(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	if c.login("jp", pwJP) != 200 {
		t.Fatal("login")
	}
	for _, tc := range []struct{ path, want string }{
		{"/api/top/tcp_ports?range=1h", "23:600/1 445:480/1 80:300/1 2323:240/1 443:60/1"},
		{"/api/top/udp_ports?range=1h", "53:180/1"},
		{"/api/top/countries?range=1h", "JP:840/2 DE:660/2 US:360/2"},
		{"/api/top/asns?range=1h&limit=2", "2516:840/2 3320:660/2"},
		{"/api/top/fingerprints?range=1h", "mirai:840/0"},
		{"/api/top/sensors?range=1h", "tokyo-1:1200/3 berlin-1:660/4"},
		{"/api/top/classes?range=1h&country=US", "tcp_synack:360/2"},
		// Filters: country, sensor, port, protocol, time range.
		{"/api/top/tcp_ports?range=1h&country=de", "445:480/1"},
		{"/api/top/countries?range=1h&sensor=berlin-1", "US:360/2 DE:300/2"},
		{"/api/top/countries?range=1h&port=23", "JP:600/1"},
		{"/api/top/countries?range=1h&protocol=udp", "DE:180/1"},
		{"/api/top/countries?range=10m", "JP:140/2 DE:110/2 US:60/2"},
		{"/api/top/countries?from=" + itoa(uint64(fixtureNow.Add(-30*time.Hour).Unix())) + "&to=" + itoa(uint64(fixtureNow.Add(-3*time.Hour).Unix())), ""},
		// The map is every country, whoever asks (aggregates are shared).
		{"/api/map?range=1h", "JP:840/2 DE:660/2 US:360/2"},
		{"/api/map?range=1h&port=445", "DE:480/1"},
	} {
		var r listResp
		c.get(tc.path, &r)
		if got := keys(r.Entries); got != tc.want {
			t.Errorf("%s = %q, want %q", tc.path, got, tc.want)
		}
	}

	var ov overviewResponse
	c.get("/api/overview?range=1h&step=1m", &ov)
	if len(ov.Points) != 60 || ov.Step != 60 || len(ov.Classes) != 10 {
		t.Fatalf("overview: %d points, step %d, classes %v", len(ov.Points), ov.Step, ov.Classes)
	}
	p := ov.Points[0]
	if p.Packets["tcp_syn"] != 22 || p.Packets["udp"] != 3 || p.Packets["tcp_synack"] != 6 || p.Sources != 6 || p.Approx {
		t.Errorf("overview point = %+v", p)
	}
	ov = overviewResponse{}
	c.get("/api/overview?range=1h&step=1m&country=JP&sensor=tokyo-1", &ov)
	if p := ov.Points[0]; p.Packets["tcp_syn"] != 14 || p.Sources != 2 || len(p.Packets) != 1 {
		t.Errorf("JP overview point = %+v", p)
	}
	c.get("/api/overview?range=2h", &ov)
	if ov.Step != 60 || len(ov.Points) != 120 {
		t.Errorf("2h overview: step %d points %d", ov.Step, len(ov.Points))
	}
	c.get("/api/overview?range=24h", &ov)
	if ov.Step != 900 || len(ov.Points) != 8 {
		t.Errorf("24h overview: step %d points %d", ov.Step, len(ov.Points))
	}
}

func TestBadParameters(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	c.auth = tokenJP
	for _, p := range []string{
		"/api/overview?range=abc", "/api/overview?range=-1h", "/api/overview?country=JPN",
		"/api/top/countries?port=70000", "/api/top/countries?limit=0", "/api/top/countries?limit=100000",
		"/api/overview?from=2026-11-20T12:00:00Z&to=2026-11-20T11:00:00Z", "/api/overview?range=9000h",
		"/api/overview?protocol=bogus", "/api/overview?step=1s", "/api/findings?state=weird",
		"/api/findings?type=port_surge", "/api/map?to=yesterday",
	} {
		if code, b, _ := c.do("GET", p, nil, nil); code != http.StatusBadRequest {
			t.Errorf("%s = %d %s, want 400", p, code, b)
		}
	}
	if code, _, _ := c.do("GET", "/api/top/everything", nil, nil); code != http.StatusNotFound {
		t.Errorf("unknown top list = %d", code)
	}
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/silence", map[string]string{"for": "-1h"}, nil); code != http.StatusBadRequest {
		t.Errorf("silence into the past = %d", code)
	}
	if code, _, _ := c.do("POST", "/api/findings/f-jp-1/ack", map[string]string{"note": strings.Repeat("x", 3000)}, nil); code != http.StatusBadRequest {
		t.Errorf("long note = %d", code)
	}
}

type hostsResp struct {
	Hosts []Host `json:"hosts"`
}

func hostIPs(hs []Host) string {
	var s []string
	for _, h := range hs {
		s = append(s, h.Addr.String())
	}
	return strings.Join(s, " ")
}

func TestHostLevelScope(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	for _, tc := range []struct {
		user, pw, path, want string
		code                 int
	}{
		{"jp", pwJP, "/api/hosts?range=1h", "192.0.2.10 192.0.2.11", 200},
		{"jp", pwJP, "/api/hosts?range=1h&port=2323", "192.0.2.11", 200},
		{"jp", pwJP, "/api/hosts?range=1h&country=JP", "192.0.2.10 192.0.2.11", 200},
		{"jp", pwJP, "/api/hosts?range=1h&country=DE", "", 403},
		{"jp", pwJP, "/api/hosts?range=1h&sensor=berlin-1", "", 200},
		{"de", pwDE, "/api/hosts?range=1h", "203.0.113.5 203.0.113.6", 200},
		{"de", pwDE, "/api/hosts?range=1h&country=JP", "", 403},
		{"org", pwOrg, "/api/hosts?range=1h", "198.51.100.7", 200},
		{"org", pwOrg, "/api/hosts?range=1h&country=JP", "", 200},
		{"coord", pwCoord, "/api/hosts?range=1h", "192.0.2.10 203.0.113.5 198.51.100.7 192.0.2.11 203.0.113.6 198.51.100.200", 200},
	} {
		c := f.client(t)
		if c.login(tc.user, tc.pw) != 200 {
			t.Fatalf("login %s", tc.user)
		}
		code, b, _ := c.do("GET", tc.path, nil, nil)
		if code != tc.code {
			t.Errorf("%s %s = %d %s, want %d", tc.user, tc.path, code, b, tc.code)
			continue
		}
		if code == 200 {
			var r hostsResp
			_ = json.Unmarshal(b, &r)
			if got := hostIPs(r.Hosts); got != tc.want {
				t.Errorf("%s %s = %q, want %q", tc.user, tc.path, got, tc.want)
			}
		}
		if tc.code == 403 && strings.Contains(string(b), "203.0.113") || tc.code == 403 && strings.Contains(string(b), "192.0.2") {
			t.Errorf("refusal leaks addresses: %s", b)
		}
	}
}

type findingsResp struct {
	Findings []findingView `json:"findings"`
}

func TestFindingsScope(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	jp := f.client(t)
	if jp.login("jp", pwJP) != 200 {
		t.Fatal("login")
	}
	var r findingsResp
	jp.get("/api/findings", &r)
	if len(r.Findings) != 1 || r.Findings[0].ID != "f-jp-1" || r.Findings[0].IP != "192.0.2.10" ||
		r.Findings[0].Type != "infected_host" || r.Findings[0].State != "continuing" ||
		!slices.Equal(r.Findings[0].Classes, []string{"tcp_syn"}) {
		t.Fatalf("jp findings = %+v", r.Findings)
	}
	// Cross-constituency: refused by country, absent otherwise, never leaked.
	if code, _, _ := jp.do("GET", "/api/findings?country=DE", nil, nil); code != http.StatusForbidden {
		t.Errorf("jp findings of DE = %d", code)
	}
	for _, p := range []string{"/api/findings?state=all", "/api/findings/export.csv", "/api/findings/export.stix", "/api/findings?type=dos_victim"} {
		code, b, _ := jp.do("GET", p, nil, nil)
		if code != 200 || strings.Contains(string(b), "203.0.113.5") || strings.Contains(string(b), "198.51.100.7") {
			t.Errorf("jp %s = %d leaks or fails: %s", p, code, b)
		}
	}
	code, b, resp := jp.do("GET", "/api/findings/export.csv", nil, nil)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if code != 200 || resp.Header.Get("Content-Type") != "text/csv; charset=utf-8" || len(lines) != 2 ||
		!strings.HasPrefix(lines[0], "id,type,state,ip") || !strings.Contains(lines[1], "f-jp-1,infected_host,continuing,192.0.2.10,JP,64500") {
		t.Errorf("csv = %d %q", code, b)
	}
	code, b, resp = jp.do("GET", "/api/findings/export.stix", nil, nil)
	if code != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/stix+json") || !strings.Contains(string(b), "192.0.2.10") {
		t.Errorf("stix = %d %s", code, b)
	}
	if code, _, _ := jp.do("POST", "/api/findings/f-de-1/ack", nil, nil); code != http.StatusNotFound {
		t.Errorf("jp ack of a DE finding = %d, want 404", code)
	}
	if code, _, _ := jp.do("POST", "/api/findings/f-de-1/silence", nil, nil); code != http.StatusNotFound {
		t.Errorf("jp silence of a DE finding = %d, want 404", code)
	}
	if code, _, _ := jp.do("POST", "/api/findings/s-23/ack", nil, nil); code != http.StatusNotFound {
		t.Errorf("ack of a surge through the host findings = %d, want 404", code)
	}
	if got := f.findings.actions(); got != nil {
		t.Errorf("cross-constituency actions went through: %v", got)
	}
	// Filters.
	jp.get("/api/findings?port=445", &r)
	if len(r.Findings) != 0 {
		t.Errorf("jp findings on 445 = %+v", r.Findings)
	}
	jp.get("/api/findings?port=2323&sensor=tokyo-1", &r)
	if len(r.Findings) != 1 {
		t.Errorf("jp findings on 2323 = %+v", r.Findings)
	}
	jp.get("/api/findings?range=1m", &r)
	if len(r.Findings) != 0 {
		t.Errorf("jp findings of the last minute = %+v", r.Findings)
	}

	org := f.client(t)
	org.auth = tokenOrg
	org.get("/api/findings", &r)
	if len(r.Findings) != 1 || r.Findings[0].IP != "198.51.100.7" || r.Findings[0].Type != "dos_victim" {
		t.Errorf("org findings = %+v", r.Findings)
	}
	coord := f.client(t)
	if coord.login("coord", pwCoord) != 200 {
		t.Fatal("login coord")
	}
	coord.get("/api/findings", &r)
	if len(r.Findings) != 3 || r.Findings[0].ID != "f-de-1" || r.Findings[2].ID != "f-us-1" {
		t.Errorf("coordinator findings = %+v", r.Findings)
	}
	if code, _, _ := coord.do("POST", "/api/findings/f-de-1/silence", map[string]string{"until": fixtureNow.Add(time.Hour).Format(time.RFC3339)}, nil); code != 204 {
		t.Errorf("coordinator silence = %d", code)
	}
	coord.get("/api/findings?country=DE", &r)
	if len(r.Findings) != 1 || r.Findings[0].SilencedUntil == nil {
		t.Errorf("silenced finding = %+v", r.Findings)
	}
}

type unwiredActions struct{}

func (unwiredActions) Acknowledge(context.Context, string, string, string) error {
	return ErrNotConfigured
}
func (unwiredActions) Silence(context.Context, string, string, time.Time, string) error {
	return ErrNotConfigured
}

func TestActionsNotConfigured(t *testing.T) {
	for _, deps := range []func(*Deps){
		func(d *Deps) { d.Actions = nil; d.STIX = nil },
		func(d *Deps) {
			d.Actions = unwiredActions{}
			d.STIX = func(context.Context, io.Writer, []*jasperv1.Finding) error { return ErrNotConfigured }
		},
	} {
		f := newFixture(t, fixtureOpts{deps: deps})
		c := f.client(t)
		c.auth = tokenJP
		for _, p := range []string{"/api/findings/f-jp-1/ack", "/api/findings/f-jp-1/silence"} {
			if code, _, _ := c.do("POST", p, nil, nil); code != http.StatusNotImplemented {
				t.Errorf("%s = %d, want 501", p, code)
			}
		}
		if code, _, _ := c.do("GET", "/api/findings/export.stix", nil, nil); code != http.StatusNotImplemented {
			t.Errorf("stix = %d, want 501", code)
		}
	}
}

type ewResp struct {
	Surges []surgeView `json:"surges"`
}

func TestEarlyWarning(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	c.auth = tokenJP
	var r ewResp
	c.get("/api/early-warning", &r)
	if len(r.Surges) != 2 || r.Surges[0].ID != "s-23" || r.Surges[0].Jump != 10 || r.Surges[0].Baseline != 4 ||
		r.Surges[0].Protocol != "tcp" || r.Surges[0].Port != 23 || r.Surges[1].Type != "country_surge" {
		t.Fatalf("surges = %+v", r.Surges)
	}
	c.get("/api/early-warning?port=23", &r)
	if len(r.Surges) != 1 || r.Surges[0].ID != "s-23" {
		t.Errorf("port 23 surges = %+v", r.Surges)
	}
	c.get("/api/early-warning?country=BR", &r)
	if len(r.Surges) != 1 || r.Surges[0].ID != "s-23" {
		t.Errorf("BR surges = %+v", r.Surges)
	}
	c.get("/api/early-warning?state=all", &r)
	if len(r.Surges) != 3 {
		t.Errorf("all surges = %+v", r.Surges)
	}
	c.get("/api/early-warning?range=30s", &r)
	if len(r.Surges) != 0 {
		t.Errorf("surges updated in the last 30 s = %+v", r.Surges)
	}
	// Surges never carry host addresses: the DE analyst sees the same.
	code, b, _ := c.do("GET", "/api/early-warning", nil, nil)
	if code != 200 || strings.Contains(string(b), `"ip"`) {
		t.Errorf("early warning leaks hosts: %s", b)
	}
}

type sensorsResp struct {
	Sensors []SensorHealth `json:"sensors"`
}

func TestSensors(t *testing.T) {
	f := newFixture(t, fixtureOpts{})
	c := f.client(t)
	if c.login("de", pwDE) != 200 {
		t.Fatal("login")
	}
	var r sensorsResp
	c.get("/api/sensors", &r)
	if len(r.Sensors) != 2 || r.Sensors[0].ID != "berlin-1" || r.Sensors[1].ID != "tokyo-1" {
		t.Fatalf("sensors = %+v", r.Sensors)
	}
	tk := r.Sensors[1]
	if tk.CertExpiry == nil || !tk.CertExpiry.Equal(fixtureNow.Add(72*time.Hour)) || r.Sensors[0].CertExpiry != nil {
		t.Errorf("cert expiry = %v / %v", tk.CertExpiry, r.Sensors[0].CertExpiry)
	}
	if tk.Batches != 120 || tk.KernelDrops != 120 || tk.PacketRate != 23.0/60 || tk.LastBinStart != fixtureNow.Add(-time.Minute) {
		t.Errorf("tokyo-1 = %+v", tk)
	}
}

func TestOpenAPIDocumentsEveryRoute(t *testing.T) {
	var doc struct {
		OpenAPI string                    `yaml:"openapi"`
		Paths   map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openapiYAML, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi version %q", doc.OpenAPI)
	}
	norm := func(p string) string {
		p = strings.Replace(p, "/f-jp-1/", "/{id}/", 1)
		return strings.Replace(p, "/top/tcp_ports", "/top/{dim}", 1)
	}
	all := append(endpoints, struct{ method, path string }{"POST", "/api/login"}, struct{ method, path string }{"GET", "/api/openapi.yaml"})
	for _, e := range all {
		ops, ok := doc.Paths[norm(e.path)]
		if !ok {
			t.Errorf("%s is not documented", norm(e.path))
			continue
		}
		if _, ok := ops[strings.ToLower(e.method)]; !ok {
			t.Errorf("%s %s is not documented", e.method, norm(e.path))
		}
	}
	if len(doc.Paths) != len(all) {
		t.Errorf("openapi has %d paths, the server %d", len(doc.Paths), len(all))
	}
}

func TestConfigAndAccountsValidation(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ yaml, want string }{
		{"accounts:\n  - {name: a, role: boss, constituency: {countries: [JP]}}\n", "accounts[0].role"},
		{"accounts:\n  - {name: a, role: analyst}\n", "accounts[0].constituency"},
		{"accounts:\n  - {name: a, role: analyst, constituency: {countries: [Japan]}}\n", "countries[0]"},
		{"accounts:\n  - {name: a, role: analyst, constituency: {prefixes: [10.0.0.0/33]}}\n", "prefixes[0]"},
		{"accounts:\n  - {name: a, role: analyst, password_bcrypt: plain, constituency: {countries: [JP]}}\n", "password_bcrypt"},
		{"accounts:\n  - {name: a, role: admin, tokens_sha256: [abc]}\n", "tokens_sha256[0]"},
		{"accounts:\n  - {name: a, role: admin}\n  - {name: a, role: admin}\n", "accounts[1].name"},
		{"accounts:\n  - {name: a, role: admin, colour: red}\n", "colour"},
	} {
		p := filepath.Join(dir, "a.yaml")
		if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadAccounts(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadAccounts(%q) = %v, want error naming %s", tc.yaml, err, tc.want)
		}
	}
	cfg := DefaultConfig()
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "accounts_file") {
		t.Errorf("Validate without accounts file = %v", err)
	}
	if _, err := New(cfg, Deps{}); err == nil {
		t.Error("New accepted a bad config")
	}
	cfg.AccountsFile = writeAccounts(t, dir)
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "Source") {
		t.Errorf("New without a source = %v", err)
	}
	if h, err := HashPassword("short"); err == nil {
		t.Errorf("HashPassword accepted a short password: %s", h)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{"range=1h&country=JP&port=23&protocol=tcp", "from=1&to=2", "step=5m&limit=3",
		"from=2026-11-20T00:00:00Z", "port=other&sensor=x", "range=1ns&step=1m"} {
		f.Add(s)
	}
	srv := &Server{cfg: DefaultConfig(), deps: Deps{Now: func() time.Time { return fixtureNow }}}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest("GET", "/api/overview", nil)
		r.URL.RawQuery = raw
		q, err := srv.parseQuery(r)
		if err != nil {
			return
		}
		if !q.From.Before(q.To) || q.To.Sub(q.From) > srv.cfg.MaxRange.D() || q.Step < time.Minute ||
			q.Limit < 1 || q.Limit > srv.cfg.TopLimit || q.Port > 65536 || q.To.Sub(q.From)/q.Step > 5000 {
			t.Fatalf("accepted bad query %q: %+v", raw, q)
		}
	})
}

// FuzzRequestBodies sends arbitrary login and action bodies: the server
// answers every one with a 2xx or 4xx status, never a 5xx or a panic.
func FuzzRequestBodies(f *testing.F) {
	for _, s := range []string{`{"user":"jp","password":"x"}`, `{"note":"n","for":"2h"}`, `{"until":"2030-01-01T00:00:00Z"}`,
		`{`, `[]`, `{"user":1}`, "\x00", `{"for":"99999h"}`} {
		f.Add(s)
	}
	fx := newFixtureTB(f)
	f.Fuzz(func(t *testing.T, body string) {
		for _, path := range []string{"/api/login", "/api/findings/f-jp-1/silence", "/api/findings/f-jp-1/ack"} {
			req := httptest.NewRequest("POST", path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+tokenJP)
			req.RemoteAddr = "192.0.2.99:1234"
			w := httptest.NewRecorder()
			fx.srv.ServeHTTP(w, req)
			if w.Code >= 500 {
				t.Fatalf("POST %s %q = %d %s", path, body, w.Code, w.Body)
			}
		}
	})
}

func TestExampleAccountsFile(t *testing.T) {
	accts, err := LoadAccounts("accounts.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := newAccountSet(accts)
	if a := s.check("cert-jp", "correct horse battery"); a == nil || a.Role != RoleAnalyst {
		t.Errorf("example password does not check: %+v", a)
	}
	if a := s.byName["soc-example-org"]; a == nil || !a.maysee(netip.MustParseAddr("2001:db8::5"), "US") || a.maysee(netip.MustParseAddr("198.51.100.1"), "JP") {
		t.Errorf("organisation scope: %+v", a)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, fixtureOpts{deps: func(d *Deps) { d.Registerer = reg }})
	c := f.client(t)
	c.login("jp", "wrong")
	c.login("jp", pwJP)
	c.do("GET", "/api/hosts?country=DE", nil, nil)
	c.get("/api/map", nil)
	m := f.srv.metrics
	if v := testutil.ToFloat64(m.loginFailures); v != 1 {
		t.Errorf("login failures = %v", v)
	}
	if v := testutil.ToFloat64(m.forbidden); v != 1 {
		t.Errorf("forbidden = %v", v)
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("map", "200")); v != 1 {
		t.Errorf("map requests = %v", v)
	}
	if v := testutil.ToFloat64(m.requests.WithLabelValues("login", "401")); v != 1 {
		t.Errorf("failed login requests = %v", v)
	}
	// A second server on the same registry is refused, not a panic.
	cfg := DefaultConfig()
	cfg.AccountsFile = writeAccounts(t, t.TempDir())
	if _, err := New(cfg, Deps{Source: NewEmbeddedSource(f.mod), Registerer: reg}); err == nil {
		t.Error("duplicate metrics registration accepted")
	}
}
