package alerting_test

import (
	"bytes"
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
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting"
	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/internal/memraft"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

const hookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func sha(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

type adminEnv struct {
	url   string
	a     *alerting.Alerting
	log   *memraft.Log
	ca    *pki.CA
	pool  *x509.CertPool
	plain *http.Client
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	d, err := directory.Parse([]byte(fmt.Sprintf(`
recipients:
  - {id: cert-de, cert: true, country: DE, taxii_token_sha256: %s, webhooks: [{url: "https://de.example/h", secret: %s}]}
  - {id: cert-fr, cert: true, country: FR, taxii_token_sha256: %s, emails: [soc@fr.example]}
`, sha("tok-de"), hookSecret, sha("tok-fr"))))
	if err != nil {
		t.Fatal(err)
	}
	// The memraft log needs the module before the store exists: build with
	// a node view of a log we fill right after.
	l := memraft.New()
	a, err := alerting.New(alerting.DefaultConfig(), alerting.Deps{Store: l.Node(0), Directory: &d})
	if err != nil {
		t.Fatal(err)
	}
	l.Add(a.Module())
	l.Tick(time.Now())
	ca, _ := pki.NewCA("admin-test", time.Hour)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	is, _ := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "h"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	srv := httptest.NewUnstartedServer(a.AdminHandler())
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{kp}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &adminEnv{url: srv.URL + "/api/v1/alerting/", a: a, log: l, ca: ca, pool: pool,
		plain: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}}
}

func (e *adminEnv) certClient(t *testing.T, id pki.Identity) *http.Client {
	is, err := e.ca.Issue(pki.IssueRequest{Identity: id, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.pool, Certificates: []tls.Certificate{kp}}}}
}

func do(t *testing.T, c *http.Client, method, url, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, url, rd)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

func TestAdminAPI(t *testing.T) {
	e := newAdminEnv(t)
	admin := e.certClient(t, pki.Identity{Role: pki.RoleAdmin, ID: "ops"})
	analystFR := e.certClient(t, pki.Identity{Role: pki.RoleAnalyst, ID: "ana", Country: "FR"})

	// Unauthenticated, sensor certificates: refused.
	if code, _ := do(t, e.plain, "GET", e.url+"recipients", "", nil); code != 401 {
		t.Fatalf("anonymous: %d", code)
	}
	if code, _ := do(t, e.certClient(t, pki.Identity{Role: pki.RoleSensor, ID: "s", Country: "DE", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}), "GET", e.url+"recipients", "", nil); code != 401 {
		t.Fatalf("sensor: %d", code)
	}
	// The admin lists everything, secrets redacted.
	code, body := do(t, admin, "GET", e.url+"recipients", "", nil)
	if code != 200 || strings.Contains(string(body), strings.TrimPrefix(hookSecret, "whsec_")) || !strings.Contains(string(body), "<redacted>") {
		t.Fatalf("recipients %d %s", code, body)
	}
	// A recipient token sees only itself.
	code, body = do(t, e.plain, "GET", e.url+"recipients", "tok-fr", nil)
	var d directory.Directory
	json.Unmarshal(body, &d)
	if code != 200 || len(d.Recipients) != 1 || d.Recipients[0].ID != "cert-fr" {
		t.Fatalf("token view %d %s", code, body)
	}
	// Put a recipient (validation names the field), re-put with the
	// redacted secret: the stored secret stays.
	bad := map[string]any{"id": "uni-x", "prefixes": []string{"10.0.0.1/8"}}
	if code, body := do(t, admin, "PUT", e.url+"recipients/uni-x", "", bad); code != 400 || !strings.Contains(string(body), "recipient.prefixes[0]") {
		t.Fatalf("bad put %d %s", code, body)
	}
	if code, body := do(t, admin, "PUT", e.url+"recipients/uni-x", "", `{"id":"uni-x","emial":[]}`); code != 400 || !strings.Contains(string(body), "emial") {
		t.Fatalf("unknown field %d %s", code, body)
	}
	good := map[string]any{"id": "uni-x", "country": "DE", "prefixes": []string{"198.51.100.0/24"}, "emails": []string{"cert@uni.example"}}
	if code, body := do(t, admin, "PUT", e.url+"recipients/uni-x", "", good); code != 200 {
		t.Fatalf("put %d %s", code, body)
	}
	if code, _ := do(t, analystFR, "PUT", e.url+"recipients/uni-x", "", good); code != 403 {
		t.Fatalf("analyst put: %d", code)
	}
	cur := e.a.Module().Directory()
	red := cur.Redacted()
	de := *red.Find("cert-de")
	de.Name = "CERT-Bund"
	if code, body := do(t, admin, "PUT", e.url+"recipients/cert-de", "", de); code != 200 {
		t.Fatalf("re-put %d %s", code, body)
	}
	if r, _ := e.a.Module().Recipient("cert-de"); r.Name != "CERT-Bund" || r.Webhooks[0].Secret.Reveal() != hookSecret {
		t.Fatalf("secret lost on re-put: %q", r.Name)
	}
	if _, ok := e.a.Module().Recipient("uni-x"); !ok {
		t.Fatal("uni-x not committed")
	}

	// Silences: an analyst silences for its own CERT only.
	sil := map[string]any{"type": "infected_host", "ends_ms": time.Now().Add(time.Hour).UnixMilli()}
	code, body = do(t, analystFR, "POST", e.url+"silences", "", sil)
	if code != 201 || !strings.Contains(string(body), `"recipient":"cert-fr"`) {
		t.Fatalf("silence %d %s", code, body)
	}
	sil["recipient"] = "cert-de"
	if code, _ := do(t, analystFR, "POST", e.url+"silences", "", sil); code != 403 {
		t.Fatalf("foreign silence: %d", code)
	}
	if code, _ := do(t, analystFR, "POST", e.url+"silences", "", map[string]any{"ends_ms": 1}); code != 400 {
		t.Fatalf("invalid silence: %d", code)
	}
	var sils []map[string]any
	_, body = do(t, analystFR, "GET", e.url+"silences", "", nil)
	json.Unmarshal(body, &sils)
	if len(sils) != 1 {
		t.Fatalf("silences %s", body)
	}
	if code, _ := do(t, e.plain, "DELETE", e.url+"silences/"+sils[0]["id"].(string), "tok-de", nil); code != 403 {
		t.Fatalf("foreign delete: %d", code)
	}
	if code, _ := do(t, analystFR, "DELETE", e.url+"silences/"+sils[0]["id"].(string), "", nil); code != 200 {
		t.Fatalf("delete: %d", code)
	}

	// Acks: a finding routed to FR, acknowledged by FR, not by DE.
	e.log.Finding(&jasperv1.Finding{Id: "f1", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{203, 0, 113, 1}, SrcCountry: "FR"})
	if code, _ := do(t, e.plain, "POST", e.url+"acks", "tok-de", map[string]string{"recipient": "cert-fr", "finding_id": "f1"}); code != 403 {
		t.Fatalf("foreign ack: %d", code)
	}
	if code, body := do(t, e.plain, "POST", e.url+"acks", "tok-fr", map[string]string{"recipient": "cert-fr", "finding_id": "f1"}); code != 200 {
		t.Fatalf("ack %d %s", code, body)
	}
	if code, _ := do(t, e.plain, "POST", e.url+"acks", "tok-fr", map[string]string{"recipient": "cert-fr", "finding_id": "nope"}); code != 404 {
		t.Fatalf("ack unknown: %d", code)
	}
	// Audit/deliveries: own only.
	if code, _ := do(t, e.plain, "GET", e.url+"audit?recipient=cert-de", "tok-fr", nil); code != 403 {
		t.Fatalf("foreign audit: %d", code)
	}
	if code, body := do(t, e.plain, "GET", e.url+"audit", "tok-fr", nil); code != 200 || string(bytes.TrimSpace(body)) != "[]" {
		t.Fatalf("audit %d %s", code, body)
	}
	e.log.Tick(time.Now().Add(10 * time.Second))
	code, body = do(t, e.plain, "GET", e.url+"deliveries", "tok-fr", nil)
	var ds []outbox.Delivery
	json.Unmarshal(body, &ds)
	if code != 200 || len(ds) != 1 || ds[0].Recipient != "cert-fr" || ds[0].Channel != "email" {
		t.Fatalf("deliveries %d %s", code, body)
	}
	if code, _ := do(t, e.plain, "GET", e.url+"stats", "tok-fr", nil); code != 403 {
		t.Fatalf("stats as recipient: %d", code)
	}
	if code, _ := do(t, admin, "GET", e.url+"stats", "", nil); code != 200 {
		t.Fatalf("stats: %d", code)
	}
	// Not the leader: 503, nothing changed.
	e.log.SetLeader(-1)
	if code, _ := do(t, admin, "DELETE", e.url+"recipients/uni-x", "", nil); code != 503 {
		t.Fatalf("no leader: %d", code)
	}
	e.log.SetLeader(0)
	if code, _ := do(t, admin, "DELETE", e.url+"recipients/uni-x", "", nil); code != 200 {
		t.Fatalf("delete recipient: %d", code)
	}
	if code, _ := do(t, admin, "DELETE", e.url+"recipients/uni-x", "", nil); code != 404 {
		t.Fatalf("delete again: %d", code)
	}
}

// FuzzAdminAPI sends arbitrary bodies to every endpoint that decodes one,
// as an admin and as a recipient: no panic, only expected statuses, and the
// replicated state stays valid.
func FuzzAdminAPI(f *testing.F) {
	f.Add(uint8(0), `{"id":"x","cert":true,"country":"NL","emails":["a@b.nl"]}`)
	f.Add(uint8(1), `{"type":"infected_host","ends_ms":99999999999999}`)
	f.Add(uint8(2), `{"recipient":"cert-fr","finding_id":"f"}`)
	f.Add(uint8(3), `{"recipient":"cert-de","channel":"email"}`)
	f.Add(uint8(4), `{"recipients":[{"id":"a","cert":true,"country":"AT"}]}`)
	f.Add(uint8(0), `{"id":"x","webhooks":[{"url":"http://[::1]:1","secret":"whsec_"}]}`)
	d, _ := directory.Parse([]byte(`recipients: [{id: cert-de, cert: true, country: DE, taxii_token_sha256: ` + sha("tok-de") + `}, {id: cert-fr, cert: true, country: FR, emails: [a@fr.example]}]`))
	f.Fuzz(func(t *testing.T, which uint8, body string) {
		l := memraft.New()
		a, err := alerting.New(alerting.DefaultConfig(), alerting.Deps{Store: l.Node(0), Directory: &d,
			Authorize: func(r *http.Request) (*alerting.Caller, error) {
				if r.Header.Get("X-As") == "admin" {
					return &alerting.Caller{Name: "fuzz", Admin: true}, nil
				}
				return &alerting.Caller{Name: "fuzz-de", Recipients: []string{"cert-de"}}, nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		l.Add(a.Module())
		eps := []struct{ method, path string }{{"PUT", "recipients/x"}, {"POST", "silences"}, {"POST", "acks"}, {"POST", "channels/enable"}, {"PUT", "directory"}}
		ep := eps[int(which)%len(eps)]
		for _, as := range []string{"admin", "recipient"} {
			req := httptest.NewRequest(ep.method, "/api/v1/alerting/"+ep.path, strings.NewReader(body))
			req.Header.Set("X-As", as)
			w := httptest.NewRecorder()
			a.AdminHandler().ServeHTTP(w, req)
			switch w.Code {
			case 200, 201, 400, 403, 404:
			default:
				t.Fatalf("%s %s as %s: %d %s", ep.method, ep.path, as, w.Code, w.Body)
			}
		}
		dir := a.Module().Directory()
		if err := dir.Validate(); err != nil {
			t.Fatalf("state holds an invalid directory: %v", err)
		}
	})
}

// TestListenServesAdminAndTAXII runs the component's own HTTPS listener
// with a hub certificate from files: a TAXII client with a bearer token
// and an admin with a client certificate both get through; plain HTTP
// does not.
func TestListenServesAdminAndTAXII(t *testing.T) {
	dir := t.TempDir()
	files := failoverPKI(t, dir, "hub-1")
	ca, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := directory.Parse([]byte(`recipients: [{id: cert-de, cert: true, country: DE, taxii_token_sha256: ` + sha("tok-de") + `}]`))
	cfg := alerting.DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	l := memraft.New()
	a, err := alerting.New(cfg, alerting.Deps{Store: l.Node(0), Directory: &d, TLS: files["hub-1"]})
	if err != nil {
		t.Fatal(err)
	}
	l.Add(a.Module())
	if err := a.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer a.Stop(t.Context())
	base := "https://" + a.Addr().String()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tokenClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	if code, body := do(t, tokenClient, "GET", base+"/taxii2/jasper/collections/", "tok-de", nil); code != 200 || !strings.Contains(string(body), "cert-de") {
		t.Fatalf("taxii %d %s", code, body)
	}
	is, _ := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleAdmin, ID: "ops"}, Validity: time.Hour})
	kp, _ := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	adminClient := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{kp}}}}
	if code, body := do(t, adminClient, "GET", base+"/api/v1/alerting/stats", "", nil); code != 200 {
		t.Fatalf("admin %d %s", code, body)
	}
	if resp, err := http.Get("http://" + a.Addr().String() + "/taxii2/"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served")
		}
	}
}

// TestDashboardActions: acknowledge and silence by finding id, as the
// dashboards call them, across every recipient holding the finding.
func TestDashboardActions(t *testing.T) {
	e := newAdminEnv(t)
	ctx := t.Context()
	f := &jasperv1.Finding{Id: "f9", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: []byte{203, 0, 113, 9}, SrcCountry: "DE"}
	e.log.Finding(f)
	if err := e.a.Acknowledge(ctx, "nope", "ana", ""); err == nil {
		t.Fatal("unknown finding acknowledged")
	}
	if err := e.a.Acknowledge(ctx, "f9", "ana", "owner informed"); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Silence(ctx, "f9", "ana", time.Now().Add(time.Hour), "maintenance"); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Silence(ctx, "f9", "ana", time.Now().Add(-time.Hour), ""); err == nil {
		t.Fatal("silence ending in the past accepted")
	}
	sil := e.a.Module().Silences()
	if len(sil) != 1 || sil[0].FindingID != "f9" || sil[0].CreatedBy != "ana" || sil[0].Recipient != "" {
		t.Fatalf("silences %+v", sil)
	}
	// Silenced: no delivery for it.
	e.log.Tick(time.Now().Add(time.Minute))
	if ds := e.a.Module().Deliveries(""); len(ds) != 0 {
		t.Fatalf("silenced finding delivered: %+v", ds)
	}
}
