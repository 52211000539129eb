package taxii_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/internal/stixschema"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/taxii"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

type env struct {
	srv    *httptest.Server
	mod    *outbox.Module
	ca     *pki.CA
	caPool *x509.CertPool
}

func setup(t *testing.T) *env {
	t.Helper()
	d, err := directory.Parse([]byte(fmt.Sprintf(`
defaults: {group_wait: 0s, group_interval: 1m, repeat_interval: 1h, rate_limit_per_hour: 0}
recipients:
  - {id: cert-de, name: CERT-DE, cert: true, country: DE, taxii_token_sha256: %s}
  - {id: cert-fr, cert: true, country: FR, taxii_token_sha256: %s, tlp: green, tlp_version: "1.0"}
`, sha("token-de"), sha("token-fr"))))
	if err != nil {
		t.Fatal(err)
	}
	cfg := outbox.DefaultConfig()
	m, err := outbox.New(cfg, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := memraft.New(m)
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	l.Tick(now)
	// 25 DE hosts in 5 notifications, 3 FR hosts.
	for n := range 5 {
		for i := range 5 {
			k := n*5 + i
			l.Finding(&jasperv1.Finding{Id: fmt.Sprintf("de-%d", k), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
				SrcIp: netip.AddrFrom4([4]byte{198, 51, 100, byte(k)}).AsSlice(), SrcCountry: "DE", DetectedAtMs: now.UnixMilli(), Packets: 3,
				Fingerprints: map[string]uint64{"mirai": uint64(k % 2)}})
		}
		now = now.Add(time.Second)
		l.Tick(now)
	}
	for i := range 3 {
		l.Finding(&jasperv1.Finding{Id: fmt.Sprintf("fr-%d", i), Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST,
			SrcIp: netip.MustParseAddr(fmt.Sprintf("2001:db8::%d", i+1)).AsSlice(), SrcCountry: "FR", DetectedAtMs: now.UnixMilli()})
	}
	l.Tick(now.Add(time.Second))

	h, err := taxii.New(taxii.DefaultConfig(), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.NewCA("taxii-test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS13}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &env{srv: srv, mod: m, ca: ca, caPool: pool}
}

func (e *env) client(t *testing.T, id *pki.Identity) *http.Client {
	cfg := &tls.Config{RootCAs: e.caPool, MinVersion: tls.VersionTLS13}
	if id != nil {
		is, err := e.ca.Issue(pki.IssueRequest{Identity: *id, Validity: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
		cfg.Certificates = []tls.Certificate{kp}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
}

func get(t *testing.T, c *http.Client, u, token string, out any) (*http.Response, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	req.Header.Set("Accept", taxii.MediaTAXII)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if ct := resp.Header.Get("Content-Type"); ct != taxii.MediaTAXII {
			t.Fatalf("content-type %q", ct)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s: %v", b, err)
			}
		}
	}
	return resp, resp.StatusCode
}

type envelope struct {
	More    bool             `json:"more"`
	Next    string           `json:"next"`
	Objects []map[string]any `json:"objects"`
}

func TestDiscoveryAndCollections(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	var disc struct {
		Default  string   `json:"default"`
		APIRoots []string `json:"api_roots"`
	}
	get(t, c, e.srv.URL+"/taxii2/", "token-de", &disc)
	if disc.Default != e.srv.URL+"/taxii2/jasper/" || len(disc.APIRoots) != 1 {
		t.Fatalf("discovery %+v", disc)
	}
	var root struct{ Versions []string }
	get(t, c, disc.Default, "token-de", &root)
	if len(root.Versions) != 1 || root.Versions[0] != taxii.MediaTAXII {
		t.Fatalf("root %+v", root)
	}
	var cols struct{ Collections []map[string]any }
	get(t, c, disc.Default+"collections/", "token-de", &cols)
	if len(cols.Collections) != 1 || cols.Collections[0]["id"] != taxii.CollectionID("cert-de") || cols.Collections[0]["can_write"] != false {
		t.Fatalf("collections %+v", cols)
	}
	// Analyst certificate of FR: the FR collection only. Admin: both.
	get(t, e.client(t, &pki.Identity{Role: pki.RoleAnalyst, ID: "ana", Country: "FR"}), disc.Default+"collections/", "", &cols)
	if len(cols.Collections) != 1 || cols.Collections[0]["id"] != taxii.CollectionID("cert-fr") {
		t.Fatalf("analyst FR collections %+v", cols)
	}
	get(t, e.client(t, &pki.Identity{Role: pki.RoleAdmin, ID: "root"}), disc.Default+"collections/", "", &cols)
	if len(cols.Collections) != 2 {
		t.Fatalf("admin collections %+v", cols)
	}
}

func TestAccessControl(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	base := e.srv.URL + "/taxii2/jasper/collections/"
	de, fr := taxii.CollectionID("cert-de"), taxii.CollectionID("cert-fr")
	cases := []struct {
		name   string
		client *http.Client
		token  string
		path   string
		want   int
	}{
		{"no credentials", c, "", base, 401},
		{"unknown token", c, "nope", base, 401},
		{"own collection", c, "token-de", base + de + "/objects/", 200},
		{"other's objects", c, "token-de", base + fr + "/objects/", 404},
		{"other's manifest", c, "token-fr", base + de + "/manifest/", 404},
		{"other's collection", c, "token-fr", base + de + "/", 404},
		{"sensor certificate", e.client(t, &pki.Identity{Role: pki.RoleSensor, ID: "s1", Country: "DE", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}), "", base, 401},
		{"analyst of DE reads DE", e.client(t, &pki.Identity{Role: pki.RoleAnalyst, ID: "a", Country: "DE"}), "", base + de + "/objects/", 200},
		{"analyst of DE not FR", e.client(t, &pki.Identity{Role: pki.RoleAnalyst, ID: "a", Country: "DE"}), "", base + fr + "/objects/", 404},
		{"analyst without CERT", e.client(t, &pki.Identity{Role: pki.RoleAnalyst, ID: "a", Country: "IT"}), "", base + de + "/objects/", 404},
		{"bad limit", c, "token-de", base + de + "/objects/?limit=-1", 400},
		{"bad added_after", c, "token-de", base + de + "/objects/?added_after=yesterday", 400},
		{"unknown path", c, "token-de", e.srv.URL + "/taxii2/other/", 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, code := get(t, tc.client, tc.path, tc.token, nil); code != tc.want {
				t.Fatalf("status %d, want %d", code, tc.want)
			}
		})
	}
	// A certificate from another CA is not accepted as identity.
	other, _ := pki.NewCA("other", time.Hour)
	is, _ := other.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleAdmin, ID: "x"}, Validity: time.Hour})
	kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	foreign := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.caPool, Certificates: []tls.Certificate{kp}}}}
	// (the client does not even offer it, since the server names its CA)
	if resp, err := foreign.Get(base); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("foreign certificate got %d", resp.StatusCode)
		}
	}
}

func TestObjectsPaging(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	u := e.srv.URL + "/taxii2/jasper/collections/" + taxii.CollectionID("cert-de") + "/objects/"
	var all envelope
	get(t, c, u+"?limit=1000", "token-de", &all)
	if all.More || len(all.Objects) < 25*4 {
		t.Fatalf("one page: more=%v %d objects", all.More, len(all.Objects))
	}
	v, err := stixschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range all.Objects {
		b, _ := json.Marshal(o)
		if err := v.Object(b); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
	}
	// Walk in pages of 7 following next; check headers and order.
	var got []string
	next := ""
	var lastAdded time.Time
	for pages := 0; ; pages++ {
		if pages > 100 {
			t.Fatal("paging does not end")
		}
		q := url.Values{"limit": {"7"}}
		if next != "" {
			q.Set("next", next)
		}
		var p envelope
		resp, _ := get(t, c, u+"?"+q.Encode(), "token-de", &p)
		if len(p.Objects) > 7 {
			t.Fatalf("page of %d", len(p.Objects))
		}
		first, err1 := time.Parse(time.RFC3339Nano, resp.Header.Get("X-TAXII-Date-Added-First"))
		last, err2 := time.Parse(time.RFC3339Nano, resp.Header.Get("X-TAXII-Date-Added-Last"))
		if err1 != nil || err2 != nil || !first.After(lastAdded) || last.Before(first) {
			t.Fatalf("headers %q %q after %v", resp.Header.Get("X-TAXII-Date-Added-First"), resp.Header.Get("X-TAXII-Date-Added-Last"), lastAdded)
		}
		lastAdded = last
		for _, o := range p.Objects {
			got = append(got, o["id"].(string))
		}
		if !p.More {
			break
		}
		if p.Next != resp.Header.Get("X-TAXII-Date-Added-Last") {
			t.Fatalf("next %q vs last %q", p.Next, resp.Header.Get("X-TAXII-Date-Added-Last"))
		}
		next = p.Next
	}
	if len(got) != len(all.Objects) {
		t.Fatalf("paged %d objects, one page %d", len(got), len(all.Objects))
	}
	for i := range got {
		if got[i] != all.Objects[i]["id"] {
			t.Fatalf("object %d differs", i)
		}
	}
	// added_after at the last header of everything: nothing more.
	var none envelope
	resp, _ := get(t, c, u+"?added_after="+url.QueryEscape(lastAdded.Format(time.RFC3339Nano)), "token-de", &none)
	if none.More || len(none.Objects) != 0 || resp.Header.Get("X-TAXII-Date-Added-First") != "" {
		t.Fatalf("after the end: %+v", none)
	}
	// match[type] filters.
	var ind envelope
	get(t, c, u+"?match[type]=indicator&limit=1000", "token-de", &ind)
	if len(ind.Objects) != 25 {
		t.Fatalf("%d indicators", len(ind.Objects))
	}
	// Manifest mirrors the objects.
	var man envelope
	get(t, c, strings.Replace(u, "/objects/", "/manifest/", 1)+"?limit=1000", "token-de", &man)
	if len(man.Objects) != len(all.Objects) || man.Objects[0]["media_type"] != taxii.MediaSTIX {
		t.Fatalf("manifest %d", len(man.Objects))
	}
	// FR reads its IPv6 hosts, marked TLP 1.0 green.
	var frEnv envelope
	get(t, c, e.srv.URL+"/taxii2/jasper/collections/"+taxii.CollectionID("cert-fr")+"/objects/?match[type]=ipv6-addr", "token-fr", &frEnv)
	if len(frEnv.Objects) != 3 || frEnv.Objects[0]["object_marking_refs"].([]any)[0] != "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da" {
		t.Fatalf("fr objects %+v", frEnv.Objects)
	}
}

func FuzzParseQuery(f *testing.F) {
	f.Add("added_after=2026-11-25T12:00:00.000001Z&limit=5&match[type]=indicator,sighting")
	f.Add("next=2026-11-25T12:00:00Z&limit=0")
	f.Add("limit=99999999999999999999&match[id]=x")
	f.Add("match[version]=first,2026-11-25T12:00:00.000Z&match[spec_version]=2.1")
	f.Add("match[version]=bogus,all")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := taxii.ParseQuery(v, 1000)
		if err != nil {
			return
		}
		if q.Limit <= 0 || q.Limit > 1000 {
			t.Fatalf("limit %d", q.Limit)
		}
	})
}
