package dashboards

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/jasperfed/jasper/hub/rollup"
)

// browserFixture is a dashboards server filled from the replayed captures
// and a headless Chromium driven over the DevTools protocol.
type browserFixture struct {
	t     *testing.T
	ts    *httptest.Server
	mf    *memFindings
	ctx   context.Context
	shots string
}

// userDataDir is a profile folder removed after the test, with retries:
// Chromium's children may still write there for a moment after it stops.
func userDataDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "jasper-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for range 50 {
			if os.RemoveAll(dir) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	return dir
}

func findChromium() string {
	for _, n := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

func newBrowserFixture(t *testing.T) *browserFixture {
	t.Helper()
	chrome := findChromium()
	if chrome == "" {
		t.Skip("no chromium on PATH: install Debian's chromium (CI does, .ci/setup-chromium.sh)")
	}
	now := time.Now().UTC()
	mod, err := rollup.New(minuteRollups())
	if err != nil {
		t.Fatal(err)
	}
	replay(t, mod, now)
	mf := &memFindings{recs: replayFindings(mod, now)}
	cfg := DefaultConfig()
	cfg.AccountsFile = writeAccounts(t, t.TempDir())
	expiry := now.Add(5 * 24 * time.Hour)
	srv, err := New(cfg, Deps{Source: NewEmbeddedSource(mod), Findings: mf, Actions: mf, STIX: testSTIX,
		CertExpiry: func(context.Context) (map[string]time.Time, error) {
			return map[string]time.Time{"tokyo-1": expiry, "berlin-1": now.Add(40 * 24 * time.Hour)}, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)

	shots := os.Getenv("JASPER_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chrome),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(userDataDir(t)),
		chromedp.WindowSize(1400, 1000),
	}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, bcancel := chromedp.NewContext(actx)
	t.Cleanup(func() { bcancel(); acancel() })
	// The first Run starts the browser; it must not carry a timeout.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return &browserFixture{t: t, ts: ts, mf: mf, ctx: bctx, shots: shots}
}

func (b *browserFixture) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.failed(what, err)
	}
}

// failed saves a screenshot and the page's text, then fails the test.
func (b *browserFixture) failed(what string, err error) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if png, serr := chromedp.Run(ctx, chromedp.FullScreenshot(100)); serr == nil {
		p := filepath.Join(b.shots, "failure.png")
		_ = os.WriteFile(p, png, 0o644)
		b.t.Logf("failure screenshot %s", p)
	}
	if txt, terr := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`)); terr == nil {
		b.t.Logf("page at failure:\n%s", txt)
	}
	b.t.Fatalf("%s: %v", what, err)
}

func run[T any](b *browserFixture, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.failed(what, err)
	}
	return v
}

// open navigates to a view with filters and waits until it has rendered.
func (b *browserFixture) open(view, params string) {
	b.t.Helper()
	u := b.ts.URL + "/#" + view
	if params != "" {
		u += "?" + params
	}
	b.do("open "+view, chromedp.Navigate(u), b.waitReady(view, params))
	if txt := b.text("#view"); strings.Contains(txt, "undefined") || strings.Contains(txt, "NaN") || strings.Contains(txt, "Error:") {
		b.t.Errorf("view %s?%s shows a broken value: %q", view, params, txt)
	}
}

func (b *browserFixture) waitReady(view, params string) chromedp.Action[chromedp.Void] {
	return chromedp.Poll[chromedp.Void](fmt.Sprintf(`(() => { const v = document.querySelector("#view");
		return v && v.dataset.view === %q && v.dataset.ready === %q; })()`, view, params),
		chromedp.WithPollingTimeout(30*time.Second))
}

func (b *browserFixture) login(user, pw string) {
	b.t.Helper()
	b.do("login "+user,
		chromedp.Navigate(b.ts.URL+"/#overview?range=6h"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#login-user").value = ""; document.querySelector("#login-password").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#login-user"), user),
		chromedp.SendKeys(chromedp.CSS("#login-password"), pw),
		chromedp.Click(chromedp.CSS(`#login-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#app")),
		b.waitReady("overview", "range=6h"))
}

func (b *browserFixture) shot(name string) {
	b.t.Helper()
	png := run(b, "screenshot "+name, chromedp.FullScreenshot(100))
	p := filepath.Join(b.shots, name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s", p)
}

func (b *browserFixture) text(sel string) string {
	b.t.Helper()
	return run(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func evalJS[T any](b *browserFixture, js string) T {
	b.t.Helper()
	return run(b, "eval "+js, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
}

// fetchStatus asks the API from inside the page (with its cookie).
func (b *browserFixture) fetchStatus(path string) int {
	b.t.Helper()
	return evalJS[int](b, fmt.Sprintf(`fetch(%q).then(r => r.status)`, path))
}

func TestBrowserViews(t *testing.T) {
	b := newBrowserFixture(t)
	b.login("jp", pwJP)

	// Overview: stacked areas by class, with data.
	nSeries := evalJS[int](b, `document.querySelectorAll("svg.chart path[data-series]").length`)
	if nSeries < 4 {
		t.Errorf("overview draws %d series, want the classes of the captures (>= 4)", nSeries)
	}
	all := b.text("#kpi-packets")
	b.shot("1-overview")
	// Filters change what is shown: the sensor select and country box.
	b.do("filter by sensor",
		chromedp.SetValue(chromedp.CSS("#f-sensor"), "berlin-1"),
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#f-sensor").dispatchEvent(new Event("change"))`),
		b.waitReady("overview", "range=6h&sensor=berlin-1"))
	berlin := b.text("#kpi-packets")
	if berlin == all || berlin == "0" || berlin == "" {
		t.Errorf("sensor filter: packets %q vs all %q", berlin, all)
	}
	b.do("filter by country",
		chromedp.Evaluate[chromedp.Void](`document.querySelector("#f-sensor").value = ""`),
		chromedp.SendKeys(chromedp.CSS("#f-country"), "de"),
		chromedp.Click(chromedp.CSS(`#filters button[type="submit"]`)),
		b.waitReady("overview", "range=6h&country=DE"))
	if de := b.text("#kpi-packets"); de == all || de == berlin || de == "" {
		t.Errorf("country filter: packets %q vs all %q", de, all)
	}
	b.shot("1b-overview-country-DE")
	b.open("overview", "range=1h")
	if h := b.text("#kpi-packets"); h == all || h == "" {
		t.Errorf("time range filter: last hour %q vs 6 hours %q", h, all)
	}
	b.open("overview", "range=1h&protocol=udp")
	if udp := evalJS[string](b, `[...document.querySelectorAll("svg.chart path[data-series]")].map(p => p.dataset.series).join(" ")`); !strings.Contains(udp, "udp") || strings.Contains(udp, "tcp") {
		t.Errorf("protocol filter: series %q, want udp (and its fragments as other), no tcp", udp)
	}

	// Attack map: coloured countries; a port filter narrows them.
	b.open("map", "range=6h")
	coloured := evalJS[int](b, `document.querySelectorAll("svg.map path.has").length`)
	if coloured < 15 {
		t.Errorf("map colours %d countries, want the replayed sources' countries", coloured)
	}
	b.shot("2-map")
	b.open("map", "range=6h&port=443")
	colouredPort := evalJS[int](b, `document.querySelectorAll("svg.map path.has").length`)
	if colouredPort == 0 || colouredPort >= coloured {
		t.Errorf("map on port 443 colours %d countries, all ports %d", colouredPort, coloured)
	}

	// Top lists with data, and host-level data only of JP.
	b.open("top", "range=6h")
	rows := evalJS[int](b, `document.querySelectorAll('[data-list="TCP destination ports"] tr').length`)
	if rows < 10 {
		t.Errorf("TCP ports list has %d rows", rows)
	}
	hosts := b.text(`[data-list="hosts"]`)
	if !strings.Contains(hosts, "172.31.15.102") || strings.Contains(hosts, "172.16.0.8") {
		t.Errorf("JP analyst's top sources: %q", hosts)
	}
	fps := b.text(`[data-list="Tool fingerprints"]`)
	if !strings.Contains(fps, "masscan") {
		t.Errorf("fingerprints list: %q", fps)
	}
	b.shot("3-top")

	b.open("early", "range=6h")
	if s := b.text("#surges"); !regexp.MustCompile(`tcp/[0-9]+`).MatchString(s) || !strings.Contains(s, "masscan") {
		t.Errorf("early warning: %q", s)
	}
	b.shot("4-early-warning")

	b.open("findings", "range=6h")
	f := b.text("#findings-table")
	if !strings.Contains(f, "172.31.15.102") || strings.Contains(f, "172.16.0.8") || !strings.Contains(f, "masscan ×") {
		t.Errorf("JP findings show %q", f)
	}
	var dosJP, dosDE string
	for _, r := range b.mf.recs {
		switch r.Finding.GetId() {
		case "dos-JP":
			dosJP = findingAddr(r.Finding).String()
		case "dos-DE":
			dosDE = findingAddr(r.Finding).String()
		}
	}
	if !strings.Contains(f, dosJP) || strings.Contains(f, dosDE) {
		t.Errorf("JP findings: want DoS victim %s, not %s: %q", dosJP, dosDE, f)
	}
	b.do("acknowledge",
		chromedp.Click(chromedp.CSS(`tr[data-id="inf-masscan"] button.ack`)),
		chromedp.Poll[chromedp.Void](`document.querySelector('tr[data-id="inf-masscan"] .status-cell').textContent.includes("acked by jp")`,
			chromedp.WithPollingTimeout(20*time.Second)))
	b.shot("5-findings")
	if got := b.mf.actions(); len(got) != 1 || got[0] != "ack inf-masscan jp " {
		t.Errorf("actions after the click = %q", got)
	}

	b.open("sensors", "")
	s := b.text("#sensors-table")
	for _, want := range []string{"tokyo-1", "berlin-1", "saopaulo-1", "expires in 5.0 d"} {
		if !strings.Contains(s, want) {
			t.Errorf("sensors view lacks %q: %q", want, s)
		}
	}
	b.shot("6-sensors")

	// Cross-constituency: DE host data is refused through the UI and the API.
	b.open("top", "range=6h&country=DE")
	if h := b.text(`[data-list="hosts"]`); !strings.Contains(h, "outside your constituency") || strings.Contains(h, "172.16.0.8") {
		t.Errorf("JP analyst asking DE hosts sees %q", h)
	}
	page := evalJS[string](b, `document.body.innerText`)
	if strings.Contains(page, "172.16.0.8") || strings.Contains(page, dosDE) {
		t.Error("a DE host address is on the JP analyst's page")
	}
	if code := b.fetchStatus("/api/hosts?country=DE"); code != 403 {
		t.Errorf("in-page API hosts of DE = %d", code)
	}
	if code := b.fetchStatus("/api/findings?country=DE"); code != 403 {
		t.Errorf("in-page API findings of DE = %d", code)
	}
	csv := evalJS[string](b, `fetch("/api/findings/export.csv?range=6h").then(r => r.text())`)
	if !strings.Contains(csv, "172.31.15.102") || strings.Contains(csv, "172.16.0.8") || strings.Contains(csv, dosDE) {
		t.Errorf("JP CSV export: %q", csv)
	}

	// Logout ends the session: the login form is back and the API refuses.
	b.do("logout", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	if code := b.fetchStatus("/api/me"); code != 401 {
		t.Errorf("after logout /api/me = %d", code)
	}
	b.do("reload after logout", chromedp.Navigate(b.ts.URL+"/#findings"), chromedp.WaitVisible(chromedp.CSS("#login-form")))
	b.shot("7-logged-out")

	// The DE analyst sees its own hosts, not JP's.
	b.login("de", pwDE)
	b.open("top", "range=6h")
	if h := b.text(`[data-list="hosts"]`); !strings.Contains(h, "172.16.0.8") || strings.Contains(h, "172.31.15.102") {
		t.Errorf("DE analyst's top sources: %q", h)
	}
	b.open("findings", "range=6h")
	if f := b.text("#findings-table"); !strings.Contains(f, "172.16.0.8") || !strings.Contains(f, dosDE) || strings.Contains(f, "172.31.15.102") {
		t.Errorf("DE findings: %q", f)
	}
}
