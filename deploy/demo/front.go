package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// startFront serves the demo's front page on cfg.Listen: /demo/ (the
// mailbox and the webhooks received, as pages and JSON) and everything
// else proxied to a hub's dashboard (the next hub when one fails).
func (d *Demo) startFront(ctx context.Context) (string, error) {
	var targets []*url.URL
	byHub := map[string]int{}
	for _, h := range d.hubs {
		if h.dashboard != "" {
			byHub[h.id] = len(targets)
			targets = append(targets, &url.URL{Scheme: "http", Host: h.dashboard})
		}
	}
	// cur is the hub whose dashboard answers: the raft leader's (where
	// acknowledge and silence commit), followed every two seconds; the
	// next one after a failure until then.
	var cur atomic.Int64
	if len(targets) > 0 {
		go func() {
			for ctx.Err() == nil {
				if st, err := d.hubStatus(ctx); err == nil {
					if i, ok := byHub[st.LeaderId]; ok {
						cur.Store(int64(i))
					}
				}
				select {
				case <-ctx.Done():
				case <-d.frontDone:
					return
				case <-time.After(2 * time.Second):
				}
			}
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /demo/{$}", d.pageIndex)
	mux.HandleFunc("GET /demo/mail", d.pageMail)
	mux.HandleFunc("GET /demo/webhooks", d.pageHooks)
	mux.HandleFunc("GET /demo/api/mail", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, d.mail.Messages()) })
	mux.HandleFunc("GET /demo/api/webhooks", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, d.hooks.Hooks()) })
	if len(targets) > 0 {
		rp := &httputil.ReverseProxy{
			Rewrite: func(r *httputil.ProxyRequest) {
				r.SetURL(targets[int(cur.Load())%len(targets)])
				r.Out.Host = r.In.Host // same origin for the dashboard's CSRF checks
			},
			ModifyResponse: injectDemoBar,
			ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
				n := cur.Add(1)
				d.log.Warn("demo_front_proxy_failed", "err", err, "next", targets[int(n)%len(targets)].Host)
				http.Error(w, "the hub's dashboard did not answer; the next request goes to another hub", http.StatusBadGateway)
			},
		}
		mux.Handle("/", rp)
	} else {
		mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/" {
				http.NotFound(w, r)
				return
			}
			http.Redirect(w, r, "/demo/", http.StatusFound)
		})
	}
	ln, err := net.Listen("tcp", d.cfg.Listen)
	if err != nil {
		return "", fmt.Errorf("listen %s: %w (use --listen 127.0.0.1:PORT)", d.cfg.Listen, err)
	}
	d.front = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 60 * time.Second}
	go d.front.Serve(ln) //nolint:errcheck // returns when closed
	d.frontURL = "http://" + ln.Addr().String()
	if len(targets) == 0 {
		return d.frontURL + " (this binary has no dashboards: only the demo pages)", nil
	}
	// Wait until the dashboard answers an authenticated request.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := d.apiGet(ctx, "/api/me", nil)
		if err == nil {
			return d.frontURL + " (dashboard of the hubs behind it; demo mailbox and webhooks at /demo/)", nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("dashboard did not answer in 30s: %w", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// apiGet calls the dashboard API through the front page as the
// coordinator and decodes the JSON answer into dst (nil: discard).
func (d *Demo) apiGet(ctx context.Context, path string, dst any) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.frontURL+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+d.apiToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	if dst == nil {
		return nil
	}
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 64<<20)).Decode(dst); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// demoBar links the demo pages from the dashboard's own page (plain links:
// the dashboard's CSP allows no inline style or script).
const demoBar = `<nav id="jasper-demo-bar">jasper demo: <a href="/demo/mail">mailbox of the CERTs</a> · <a href="/demo/webhooks">webhooks received</a> · <a href="/demo/">logins</a></nav>`

// injectDemoBar puts demoBar at the top of the dashboard's HTML pages.
func injectDemoBar(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Encoding") != "" ||
		!strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return err
	}
	if i := bytes.Index(b, []byte("<body")); i >= 0 {
		if j := bytes.IndexByte(b[i:], '>'); j >= 0 {
			at := i + j + 1
			b = append(b[:at:at], append([]byte(demoBar), b[at:]...)...)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(b))
	resp.ContentLength = int64(len(b))
	resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
	return nil
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{
	"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>jasper demo — {{.Title}}</title>
<meta http-equiv="refresh" content="10">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
nav a{margin-right:1em} table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #ddd;padding:4px 6px;text-align:left;vertical-align:top}
details pre{white-space:pre-wrap;background:#f6f6f6;padding:6px;max-height:30em;overflow:auto}
.ok{color:#070}.bad{color:#a00}
</style></head><body>
<nav><a href="/">Dashboard</a><a href="/demo/">Demo</a><a href="/demo/mail">Mailbox ({{.Mails}})</a><a href="/demo/webhooks">Webhooks ({{.Hooks}})</a></nav>
<h1>{{.Title}}</h1>
{{if eq .Kind "index"}}
<p>A local jasper federation: {{.Hubs}} hubs, sensors {{range .Sensors}}{{.ID}} ({{.Country}}) {{end}}; storage {{.Storage}}; geo data: {{.Geo}}.</p>
<p>Alerts for the CERTs of the demo countries go by e-mail to the demo mailbox (a real SMTP server on loopback) and by signed webhook to the demo receiver, which checks every Standard Webhooks signature.</p>
<h2>Logins</h2><table><tr><th>account</th><th>role</th><th>country</th><th>password</th></tr>
{{range .Logins}}<tr><td>{{.Name}}</td><td>{{.Role}}</td><td>{{.Country}}</td><td><code>{{.Password}}</code></td></tr>{{end}}</table>
{{else if eq .Kind "mail"}}
<p>{{.Mails}} messages received (newest first; the last 200 shown).</p>
<table><tr><th>received</th><th>to</th><th>subject</th><th>attachments</th></tr>
{{range .MailList}}<tr><td>{{ago .Received}} ago</td><td>{{range .To}}{{.}} {{end}}</td>
<td><details><summary>{{.Subject}}</summary><pre>{{.Text}}</pre></details></td><td>{{range .Attachments}}{{.}} {{end}}</td></tr>{{end}}</table>
{{else}}
<p>{{.Hooks}} deliveries received with a valid signature, {{.Rejected}} refused (newest first; the last 200 shown).</p>
<table><tr><th>received</th><th>recipient</th><th>signature</th><th>events</th><th>body</th></tr>
{{range .HookList}}<tr><td>{{ago .Received}} ago</td><td>{{.Recipient}}</td><td class="ok">verified{{if .Repeat}} (+{{.Repeat}} retries){{end}}</td><td>{{.Events}}</td>
<td><details><summary>{{.ID}}</summary><pre>{{.Body}}</pre></details></td></tr>{{end}}</table>
{{end}}
{{if .Attribution}}<p><small>{{.Attribution}}</small></p>{{end}}
</body></html>`))

// geoAttribution is what a page showing results of the real geo data must
// carry (deploy/geo/README.md).
const geoAttribution template.HTML = `Countries and ASNs: ip-location-db (geo-whois-asn-country, asn): NRO (nro.net), RouteViews (routeviews.org) ` +
	`and <a href="https://db-ip.com">IP Geolocation by DB-IP</a>, under CC BY 4.0.`

type pageData struct {
	Title, Kind  string
	Mails, Hooks int
	Rejected     int
	Hubs         int
	Sensors      []SensorPlan
	Storage, Geo string
	Logins       []Login
	MailList     []Mail
	HookList     []Hook
	Attribution  template.HTML
}

func (d *Demo) page(w http.ResponseWriter, p pageData) {
	p.Mails = d.mail.Count()
	p.Hooks, p.Rejected = d.hooks.Count()
	if d.geo.Kind == "given" || d.geo.Kind == "built" {
		p.Attribution = geoAttribution
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, p); err != nil {
		d.log.Warn("demo_page_failed", "err", err)
	}
}

func (d *Demo) pageIndex(w http.ResponseWriter, _ *http.Request) {
	d.page(w, pageData{Title: "Local federation", Kind: "index", Hubs: len(d.hubs), Sensors: d.cfg.Sensors,
		Storage: d.storage, Geo: d.geo.Kind + " " + d.geo.Dir, Logins: d.logins})
}

func (d *Demo) pageMail(w http.ResponseWriter, _ *http.Request) {
	ms := d.mail.Messages()
	var rev []Mail
	for i := len(ms) - 1; i >= 0 && len(rev) < 200; i-- {
		rev = append(rev, ms[i])
	}
	d.page(w, pageData{Title: "Demo mailbox", Kind: "mail", MailList: rev})
}

func (d *Demo) pageHooks(w http.ResponseWriter, _ *http.Request) {
	hs := d.hooks.Hooks()
	var rev []Hook
	for i := len(hs) - 1; i >= 0 && len(rev) < 200; i-- {
		rev = append(rev, hs[i])
	}
	d.page(w, pageData{Title: "Webhooks received", Kind: "hooks", HookList: rev})
}
