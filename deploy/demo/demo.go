package demo

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/obs"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor"
)

// Config is what `jasper demo` is asked for.
type Config struct {
	// Dir holds the demo's state: certificates, configurations, captures,
	// raft data, spools, logs. Each run starts from a clean state (the
	// fixture geo databases are kept).
	Dir string
	// Listen is the address of the demo's front page: the dashboard (proxied
	// to a hub) and the demo mailbox and webhook pages under /demo/.
	Listen string
	// ClickHouse: "" uses a private server (deploy/clickhouse/start.sh) when
	// clickhouse-server is installed and the binary has the ClickHouse
	// loader; "off" never; otherwise the host:port of a server (user
	// default, no password; each run uses a new database
	// jasper_demo_YYYYMMDDHHMMSS, left there afterwards).
	ClickHouse string
	// GeoDir holds country.mmdb and asn.mmdb; "" looks for them (see
	// findGeo) and otherwise builds fixture databases.
	GeoDir string
	// RepoDir is the checkout (for the real captures under
	// sensor/testdata/pcaps and deploy/clickhouse); "" finds it from the
	// working folder upwards.
	RepoDir string
	// Hubs is the number of hubs (3).
	Hubs    int
	Sensors []SensorPlan
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Dir: filepath.Join(os.TempDir(), "jasper-demo"), Listen: "127.0.0.1:8080", Hubs: 3, Sensors: DefaultSensors()}
}

// Validate names the bad field.
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return errors.New("dir: missing")
	case c.Listen == "":
		return errors.New("listen: missing")
	case c.Hubs < 1 || c.Hubs > 7:
		return fmt.Errorf("hubs: %d is not between 1 and 7", c.Hubs)
	case len(c.Sensors) == 0:
		return errors.New("sensors: none")
	}
	if host, _, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("listen: %w", err)
	} else if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("listen: %s is not a loopback address (the demo serves plain HTTP with printed passwords)", c.Listen)
	}
	return nil
}

// Deps are the demo's collaborators.
type Deps struct {
	// Extensions are the hub's optional components, as `jasper hub run`
	// attaches them (in-process hubs), and name the configuration
	// sections the demo writes.
	Extensions []hub.Extension
	// HubBinary, when set, runs each hub as a child process
	// `HubBinary hub run --config FILE` (the same binary: `jasper demo`
	// passes its own executable), so that every hub has its own process
	// state as in production; empty runs the hubs in this process.
	HubBinary string
	Version   string
	// Progress receives one line per start and stop step.
	Progress io.Writer
}

// Login is a dashboard account of the demo.
type Login struct {
	Name     string `json:"name"`
	Role     string `json:"role"`
	Country  string `json:"country,omitempty"`
	Password string `json:"password"`
}

// Demo is a running local federation.
type Demo struct {
	cfg  Config
	deps Deps
	exts map[string]bool

	t0        time.Time
	logFile   *os.File
	log       *slog.Logger
	stateDir  string
	ca        *pki.CA
	admin     pki.Files
	geo       GeoSource
	storage   string
	chDir     string
	chAddr    string
	chDB      string
	mail      *MailCatcher
	hooks     *WebhookReceiver
	hubs      []*demoHub
	sensors   []*sensor.Sensor
	front     *http.Server
	frontURL  string
	frontDone chan struct{} // closed by Stop
	logins    []Login
	apiToken  string // the coordinator's API token
	captures  []CaptureInfo

	mu         sync.Mutex
	firstAlert time.Duration
	stopped    bool
}

type demoHub struct {
	id        string
	cfgPath   string
	ingest    string
	raft      string
	dashboard string   // "" without the dashboards extension
	h         *hub.Hub // in-process
	proc      *hubProc // child process
}

func (h *demoHub) running() bool { return h.h != nil || h.proc != nil }

// New checks the configuration; Start runs the demo.
func New(cfg Config, deps Deps) (*Demo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	if deps.Progress == nil {
		deps.Progress = io.Discard
	}
	exts := map[string]bool{}
	for _, e := range deps.Extensions {
		exts[e.Name] = true
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	if cfg.RepoDir == "" {
		cfg.RepoDir = findRepo()
	}
	return &Demo{cfg: cfg, deps: deps, exts: exts, stateDir: filepath.Join(dir, "run"), frontDone: make(chan struct{})}, nil
}

// findRepo walks up from the working folder to the jasper checkout ("" if
// there is none).
func findRepo() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/jasperfed/jasper\n") {
			return d
		}
		p := filepath.Dir(d)
		if p == d {
			return ""
		}
		d = p
	}
}

// step runs one start step and prints a line with its timing.
func (d *Demo) step(name string, fn func() (string, error)) error {
	t := time.Now()
	detail, err := fn()
	el := time.Since(t).Seconds()
	if err != nil {
		fmt.Fprintf(d.deps.Progress, "  %-20s FAILED after %.1fs: %v\n", name, el, err)
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Fprintf(d.deps.Progress, "  %-20s %5.1fs  %s\n", name, el, detail)
	return nil
}

// Start brings the federation up step by step. On error whatever started
// is stopped again.
func (d *Demo) Start(ctx context.Context) (err error) {
	d.t0 = time.Now()
	defer func() {
		if err != nil {
			sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_ = d.Stop(sctx)
		}
	}()
	steps := []struct {
		name string
		fn   func(context.Context) (string, error)
	}{
		{"state folder", d.prepareDir},
		{"certificates", d.makePKI},
		{"geo databases", d.makeGeo},
		{"captures", d.makeCaptures},
		{"storage", d.startStorage},
		{"mail catcher", d.startMail},
		{"webhook receiver", d.startHooks},
		{"accounts", d.makeAccounts},
		{"hubs", d.startHubs},
		{"dashboard", d.startFront},
		{"sensors", d.startSensors},
	}
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := d.step(s.name, func() (string, error) { return s.fn(ctx) }); err != nil {
			return err
		}
	}
	go d.watchFirstAlert(ctx)
	return nil
}

func (d *Demo) prepareDir(context.Context) (string, error) {
	if err := os.MkdirAll(d.cfg.Dir, 0o755); err != nil {
		return "", err
	}
	// A ClickHouse server left running by an interrupted run is stopped
	// before its folder goes.
	if old := filepath.Join(d.stateDir, "clickhouse"); fileExists(filepath.Join(old, "clickhouse.pid")) {
		d.stopClickHouse(old)
	}
	if err := os.RemoveAll(d.stateDir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(d.stateDir, 0o755); err != nil {
		return "", err
	}
	// O_APPEND: hub processes write to the same file.
	f, err := os.OpenFile(filepath.Join(d.stateDir, "demo.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		return "", err
	}
	d.logFile = f
	d.log = obs.NewLogger(f, "text", "info")
	return d.stateDir + " (logs in run/demo.log)", nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func (d *Demo) makePKI(context.Context) (string, error) {
	dir := filepath.Join(d.stateDir, "pki")
	ca, err := pki.NewCA("jasper demo CA", 30*24*time.Hour)
	if err != nil {
		return "", err
	}
	if err := ca.Save(dir); err != nil {
		return "", err
	}
	d.ca = ca
	issue := func(name string, id pki.Identity, ips []net.IP) (pki.Files, error) {
		is, err := ca.Issue(pki.IssueRequest{Identity: id, IPs: ips, DNSNames: []string{"localhost"}, Validity: 7 * 24 * time.Hour})
		if err != nil {
			return pki.Files{}, fmt.Errorf("issue %s: %w", name, err)
		}
		if err := pki.WriteIssued(dir, name, is); err != nil {
			return pki.Files{}, err
		}
		return pki.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}, nil
	}
	loop := []net.IP{net.IPv4(127, 0, 0, 1)}
	for i := range d.cfg.Hubs {
		id := fmt.Sprintf("hub-%d", i+1)
		if _, err := issue(id, pki.Identity{Role: pki.RoleHub, ID: id}, loop); err != nil {
			return "", err
		}
	}
	for _, s := range d.cfg.Sensors {
		if _, err := issue(s.ID, pki.Identity{Role: pki.RoleSensor, ID: s.ID, Country: s.Country, Prefixes: s.Darknet()}, nil); err != nil {
			return "", err
		}
	}
	if d.admin, err = issue("admin", pki.Identity{Role: pki.RoleAdmin, ID: "demo-admin"}, nil); err != nil {
		return "", err
	}
	return fmt.Sprintf("CA, %d hubs, %d sensors, admin (run/pki)", d.cfg.Hubs, len(d.cfg.Sensors)), nil
}

func (d *Demo) makeGeo(context.Context) (string, error) {
	if !d.exts["enrich"] {
		d.geo = GeoSource{Kind: "none"}
		return "none: this binary has no enrichment extension (findings carry no country, CERTs get no host alerts)", nil
	}
	g, err := findGeo(d.cfg.GeoDir, filepath.Join(d.cfg.Dir, "geo-fixture"))
	if err != nil {
		return "", err
	}
	d.geo = g
	switch g.Kind {
	case "fixture":
		return "fixture databases (not real data: IPv4 /8 blocks get " + strings.Join(fixtureCountries, ",") + " in turn) in " + g.Dir +
			"; for real ones: jasper geo build --out DIR, then --geo DIR or $JASPER_GEO_DIR", nil
	default:
		return g.Kind + ": " + g.Dir, nil
	}
}

func (d *Demo) makeCaptures(context.Context) (string, error) {
	dir := filepath.Join(d.stateDir, "captures")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	pcapDir := ""
	if d.cfg.RepoDir != "" {
		pcapDir = filepath.Join(d.cfg.RepoDir, "sensor", "testdata", "pcaps")
	}
	var parts []string
	var wg sync.WaitGroup
	infos := make([]CaptureInfo, len(d.cfg.Sensors))
	errs := make([]error, len(d.cfg.Sensors))
	for i, s := range d.cfg.Sensors {
		wg.Go(func() { infos[i], errs[i] = writeSensorCapture(s, pcapDir, dir) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return "", err
	}
	real := 0
	for i, s := range d.cfg.Sensors {
		real += len(infos[i].Real)
		parts = append(parts, fmt.Sprintf("%s %d pkts/%s", s.ID, infos[i].Packets, infos[i].Span.Round(time.Second)))
		for _, sk := range infos[i].Skipped {
			d.log.Warn("demo_capture_skipped", "sensor", s.ID, "reason", sk)
		}
	}
	d.captures = infos
	note := ""
	if pcapDir == "" {
		note = " (no jasper checkout above the working folder: real captures left out)"
	}
	return fmt.Sprintf("generated outbreaks + %d real captures%s: %s", real, note, strings.Join(parts, ", ")), nil
}

func (d *Demo) startStorage(ctx context.Context) (string, error) {
	d.storage = "embedded"
	if !d.exts["clickhouse"] {
		return "embedded rollups in the raft FSM (this binary has no ClickHouse loader)", nil
	}
	switch d.cfg.ClickHouse {
	case "off":
		return "embedded rollups in the raft FSM (--clickhouse off)", nil
	case "":
		if _, err := exec.LookPath("clickhouse-server"); err != nil {
			if _, err := exec.LookPath("clickhouse"); err != nil {
				return "embedded rollups in the raft FSM (no clickhouse-server installed)", nil
			}
		}
		if d.cfg.RepoDir == "" {
			return "embedded rollups in the raft FSM (deploy/clickhouse/start.sh not found: run from the checkout)", nil
		}
		tcp, err := freePort()
		if err != nil {
			return "", err
		}
		http, err := freePort()
		if err != nil {
			return "", err
		}
		d.chDir = filepath.Join(d.stateDir, "clickhouse")
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(d.cfg.RepoDir, "deploy", "clickhouse", "start.sh"), d.chDir, strconv.Itoa(tcp), strconv.Itoa(http))
		cmd.Stderr = d.logFile
		out, err := cmd.Output()
		if err != nil {
			d.log.Warn("demo_clickhouse_failed", "err", err)
			d.stopClickHouse(d.chDir)
			d.chDir = ""
			return fmt.Sprintf("embedded rollups in the raft FSM (deploy/clickhouse/start.sh failed: %v, see run/demo.log)", err), nil
		}
		d.chAddr, d.chDB = net.JoinHostPort("127.0.0.1", strconv.Itoa(tcp)), "jasper_demo"
		d.storage = "clickhouse"
		return fmt.Sprintf("private ClickHouse server at %s (pid %s, run/clickhouse)", d.chAddr, strings.TrimSpace(string(out))), nil
	default:
		// A new database per run: a fresh raft log restarts at index 1,
		// which rows of an earlier run would seem to have loaded already.
		d.chAddr, d.chDB = d.cfg.ClickHouse, "jasper_demo_"+time.Now().UTC().Format("20060102150405")
		d.storage = "clickhouse"
		return "ClickHouse at " + d.chAddr + " (database " + d.chDB + ", new for this run)", nil
	}
}

func (d *Demo) stopClickHouse(dir string) {
	if d.cfg.RepoDir == "" {
		return
	}
	cmd := exec.Command("bash", filepath.Join(d.cfg.RepoDir, "deploy", "clickhouse", "stop.sh"), dir)
	if d.logFile != nil {
		cmd.Stdout, cmd.Stderr = d.logFile, d.logFile
	}
	_ = cmd.Run()
}

func (d *Demo) startMail(context.Context) (string, error) {
	m, err := StartMailCatcher("127.0.0.1:0")
	if err != nil {
		return "", err
	}
	d.mail = m
	return "SMTP on " + m.Addr() + " (keeps every message)", nil
}

// recipientID is the demo CERT of a country.
func recipientID(country string) string { return "cert-" + strings.ToLower(country) }

func (d *Demo) countries() []string {
	var cs []string
	for _, s := range d.cfg.Sensors {
		if !slices.Contains(cs, s.Country) {
			cs = append(cs, s.Country)
		}
	}
	return cs
}

func (d *Demo) startHooks(context.Context) (string, error) {
	secrets := map[string]directory.Secret{}
	for _, c := range d.countries() {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		secrets[recipientID(c)] = directory.Secret("whsec_" + base64.StdEncoding.EncodeToString(b))
	}
	w, err := StartWebhookReceiver("127.0.0.1:0", secrets)
	if err != nil {
		return "", err
	}
	d.hooks = w
	// The recipients directory: each demo country's CERT by e-mail to the
	// catcher and by webhook to the receiver.
	dir := directory.Directory{Defaults: directory.Routing{
		GroupWait: directory.Duration(2 * time.Second), GroupInterval: directory.Duration(time.Minute),
		RepeatInterval: directory.Duration(24 * time.Hour), RateLimitPerHour: 600,
	}}
	for _, c := range d.countries() {
		id := recipientID(c)
		dir.Recipients = append(dir.Recipients, directory.Recipient{
			ID: id, Name: "CERT " + c + " (demo)", Country: c, CERT: true,
			Emails:        []string{id + "@demo.jasper.invalid"},
			Webhooks:      []directory.Webhook{{URL: w.URL(id), Secret: secrets[id], Format: directory.FormatIntelMQ}},
			Subscriptions: directory.EarlyWarningTypes,
		})
	}
	if err := dir.Validate(); err != nil {
		return "", fmt.Errorf("recipients: %w", err)
	}
	b, err := yaml.Marshal(secretsRevealed(dir))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(d.stateDir, "recipients.yaml"), b, 0o600); err != nil {
		return "", err
	}
	return fmt.Sprintf("HTTP on %s, verifying Standard Webhooks signatures of %d CERTs", strings.TrimPrefix(w.URL(""), "http://"), len(secrets)), nil
}

// secretsRevealed is the directory with secrets in clear, for the
// recipients file the hubs read (Secret marshals redacted otherwise).
func secretsRevealed(d directory.Directory) any {
	type hook struct {
		URL    string `yaml:"url"`
		Secret string `yaml:"secret"`
		Format string `yaml:"format,omitempty"`
	}
	type rcpt struct {
		ID            string   `yaml:"id"`
		Name          string   `yaml:"name,omitempty"`
		Country       string   `yaml:"country,omitempty"`
		CERT          bool     `yaml:"cert,omitempty"`
		Emails        []string `yaml:"emails,omitempty"`
		Webhooks      []hook   `yaml:"webhooks,omitempty"`
		Subscriptions []string `yaml:"subscriptions,omitempty"`
	}
	out := struct {
		Defaults   directory.Routing `yaml:"defaults"`
		Recipients []rcpt            `yaml:"recipients"`
	}{Defaults: d.Defaults}
	for _, r := range d.Recipients {
		x := rcpt{ID: r.ID, Name: r.Name, Country: r.Country, CERT: r.CERT, Emails: r.Emails, Subscriptions: r.Subscriptions}
		for _, w := range r.Webhooks {
			x.Webhooks = append(x.Webhooks, hook{URL: w.URL, Secret: w.Secret.Reveal(), Format: w.Format})
		}
		out.Recipients = append(out.Recipients, x)
	}
	return out
}

func randomPassword() string {
	b := make([]byte, 9)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (d *Demo) makeAccounts(context.Context) (string, error) {
	type acct struct {
		Name           string                   `yaml:"name"`
		Role           string                   `yaml:"role"`
		PasswordBcrypt string                   `yaml:"password_bcrypt"`
		Constituency   *dashboards.Constituency `yaml:"constituency,omitempty"`
		TokensSHA256   []string                 `yaml:"tokens_sha256,omitempty"`
	}
	var accts []acct
	tb := make([]byte, 32)
	_, _ = rand.Read(tb)
	d.apiToken = base64.RawURLEncoding.EncodeToString(tb)
	add := func(l Login) error {
		h, err := dashboards.HashPassword(l.Password)
		if err != nil {
			return err
		}
		a := acct{Name: l.Name, Role: l.Role, PasswordBcrypt: h}
		if l.Country != "" {
			a.Constituency = &dashboards.Constituency{Countries: []string{l.Country}}
		}
		if l.Role == dashboards.RoleCoordinator {
			a.TokensSHA256 = []string{dashboards.TokenDigest(d.apiToken)}
		}
		accts = append(accts, a)
		d.logins = append(d.logins, l)
		return nil
	}
	if err := add(Login{Name: "coordinator", Role: dashboards.RoleCoordinator, Password: randomPassword()}); err != nil {
		return "", err
	}
	for _, c := range d.countries() {
		if err := add(Login{Name: recipientID(c), Role: dashboards.RoleAnalyst, Country: c, Password: randomPassword()}); err != nil {
			return "", err
		}
	}
	b, err := yaml.Marshal(map[string]any{"accounts": accts})
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(d.stateDir, "accounts.yaml"), b, 0o600); err != nil {
		return "", err
	}
	var names []string
	for _, l := range d.logins {
		names = append(names, l.Name)
	}
	return "dashboard accounts " + strings.Join(names, ", ") + " (run/accounts.yaml)", nil
}

// usedPorts are the ports handed out by freePort in this process: a port
// probed and closed may come back from the kernel on the next probe, before
// its user has bound it.
var usedPorts = struct {
	sync.Mutex
	m map[int]bool
}{m: map[int]bool{}}

// freePort returns a loopback port that is free now and was not handed
// out before.
func freePort() (int, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		p := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		usedPorts.Lock()
		fresh := !usedPorts.m[p]
		usedPorts.m[p] = true
		usedPorts.Unlock()
		if fresh {
			return p, nil
		}
	}
	return 0, errors.New("no fresh loopback port after 100 tries")
}

func freeAddr() (string, error) {
	p, err := freePort()
	if err != nil {
		return "", err
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(p)), nil
}

// hubConfig writes hub i's configuration file, as `jasper hub run` reads
// it, with a section for each extension the binary has.
func (d *Demo) hubConfig(i int, peers []map[string]string, h *demoHub) (string, error) {
	pk := filepath.Join(d.stateDir, "pki")
	metrics, err := freeAddr()
	if err != nil {
		return "", err
	}
	c := map[string]any{
		"node_id":  h.id,
		"data_dir": filepath.Join(d.stateDir, h.id),
		"tls": map[string]string{
			"ca": filepath.Join(pk, "ca.pem"), "cert": filepath.Join(pk, h.id+".pem"), "key": filepath.Join(pk, h.id+"-key.pem"),
		},
		"log":            map[string]string{"format": "text", "level": "info"},
		"raft":           map[string]any{"bind": h.raft, "bootstrap": true, "peers": peers},
		"ingest":         map[string]any{"listen": h.ingest},
		"metrics_listen": metrics,
		"tick_interval":  "1s",
	}
	if d.exts["enrich"] && d.geo.Dir != "" {
		c["enrich"] = map[string]any{
			"country_db": filepath.Join(d.geo.Dir, "country.mmdb"),
			"asn_db":     filepath.Join(d.geo.Dir, "asn.mmdb"),
		}
	}
	if d.exts["detect"] {
		// The real captures' scanners use private addresses.
		c["detect"] = map[string]any{"include_bogon_sources": true}
	}
	if d.exts["alerting"] {
		c["alerting"] = map[string]any{
			"recipients_file": filepath.Join(d.stateDir, "recipients.yaml"),
			"smtp": map[string]any{
				"host": "127.0.0.1", "port": d.mail.Port(), "tls": "none", "from": "jasper demo <alerts@demo.jasper.invalid>",
			},
		}
	}
	if d.exts["dashboards"] {
		addr, err := freeAddr()
		if err != nil {
			return "", err
		}
		h.dashboard = addr
		c["dashboards"] = map[string]any{
			"listen": addr, "insecure_plaintext": true,
			"accounts_file": filepath.Join(d.stateDir, "accounts.yaml"),
		}
	}
	if d.storage == "clickhouse" {
		// A short settle (at least the insert timeout) so the dashboard's
		// ClickHouse views fill seconds after start; the defaults (15 s,
		// 20 s) suit a production server.
		c["clickhouse"] = map[string]any{"addr": d.chAddr, "database": d.chDB, "insert_timeout": "5s", "leader_settle": "5s"}
	}
	b, err := yaml.Marshal(c)
	if err != nil {
		return "", err
	}
	path := filepath.Join(d.stateDir, h.id+".yaml")
	header := fmt.Sprintf("# Hub %d of the jasper demo (written by jasper demo; `jasper hub run --config %s` reads it too).\n", i+1, path)
	return path, os.WriteFile(path, append([]byte(header), b...), 0o600)
}

func (d *Demo) startHubs(ctx context.Context) (string, error) {
	var peers []map[string]string
	for i := range d.cfg.Hubs {
		h := &demoHub{id: fmt.Sprintf("hub-%d", i+1)}
		var err error
		if h.ingest, err = freeAddr(); err != nil {
			return "", err
		}
		if h.raft, err = freeAddr(); err != nil {
			return "", err
		}
		d.hubs = append(d.hubs, h)
		peers = append(peers, map[string]string{"id": h.id, "address": h.raft})
	}
	for i, h := range d.hubs {
		path, err := d.hubConfig(i, peers, h)
		if err != nil {
			return "", err
		}
		h.cfgPath = path
		cfg, err := hub.LoadConfig(path)
		if err != nil {
			return "", err
		}
		if d.deps.HubBinary != "" {
			if h.proc, err = startHubProc(d.deps.HubBinary, path, d.logFile); err != nil {
				return "", fmt.Errorf("%s: %w", h.id, err)
			}
			continue
		}
		hb, err := hub.New(cfg, hub.Deps{Log: d.log.With("hub", h.id), Registry: obs.NewRegistry(), Version: d.deps.Version})
		if err != nil {
			return "", fmt.Errorf("%s: %w", h.id, err)
		}
		if err := hb.Attach(d.deps.Extensions...); err != nil {
			return "", fmt.Errorf("%s: %w", h.id, err)
		}
		if err := hb.Start(ctx); err != nil {
			return "", fmt.Errorf("%s: %w", h.id, err)
		}
		h.h = hb
	}
	// Wait for a leader.
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, h := range d.hubs {
			if h.proc == nil {
				continue
			}
			if ended, err := h.proc.exited(); ended {
				return "", fmt.Errorf("%s (jasper hub run --config %s): %v (see run/demo.log)", h.id, h.cfgPath, err)
			}
		}
		st, err := d.hubStatus(ctx)
		if err == nil && st.LeaderId != "" {
			var names []string
			for _, e := range d.deps.Extensions {
				names = append(names, e.Name)
			}
			mode := "in this process"
			if d.deps.HubBinary != "" {
				mode = "as child processes (jasper hub run)"
			}
			return fmt.Sprintf("%d hubs %s on raft, leader %s; extensions: %s", len(d.hubs), mode, st.LeaderId, strings.Join(names, ", ")), nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no raft leader after 30s: %v", err)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// hubStatus asks the hubs in turn for their status over the admin API.
func (d *Demo) hubStatus(ctx context.Context) (*jasperv1.StatusResponse, error) {
	tc, err := pki.ClientConfig(d.admin)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, h := range d.hubs {
		if !h.running() {
			continue
		}
		st, err := statusOf(ctx, h.ingest, tc)
		if err == nil && st.LeaderId != "" {
			return st, nil
		}
		errs = append(errs, fmt.Errorf("%s: %v", h.id, err))
	}
	if len(errs) == 0 {
		return nil, errNoHub
	}
	return nil, errors.Join(errs...)
}

func statusOf(ctx context.Context, addr string, tc *tls.Config) (*jasperv1.StatusResponse, error) {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return jasperv1.NewAdminServiceClient(cc).Status(ctx, &jasperv1.StatusRequest{})
}

func (d *Demo) startSensors(ctx context.Context) (string, error) {
	var hubs []string
	for _, h := range d.hubs {
		hubs = append(hubs, h.ingest)
	}
	pk := filepath.Join(d.stateDir, "pki")
	for i, p := range d.cfg.Sensors {
		cfg := sensor.DefaultConfig()
		cfg.ID = p.ID
		cfg.Source.Replay = sensor.ReplayConfig{File: d.captures[i].Path, Speed: 0, Rebase: true, Loop: true}
		for _, n := range p.Darknet() {
			cfg.Darknet = append(cfg.Darknet, n.String())
		}
		cfg.EarlyFlush = config.Duration(5 * time.Second)
		cfg.Spool.Dir = filepath.Join(d.stateDir, p.ID, "spool")
		cfg.Hubs = hubs
		cfg.TLS = pki.Files{CA: filepath.Join(pk, "ca.pem"), Cert: filepath.Join(pk, p.ID+".pem"), Key: filepath.Join(pk, p.ID+"-key.pem")}
		s, err := sensor.New(cfg, sensor.Dependencies{Registerer: prometheus.NewRegistry(), Log: d.log, Version: d.deps.Version})
		if err != nil {
			return "", fmt.Errorf("%s: %w", p.ID, err)
		}
		if err := s.Start(ctx); err != nil {
			return "", fmt.Errorf("%s: %w", p.ID, err)
		}
		d.sensors = append(d.sensors, s)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready := 0
		for _, s := range d.sensors {
			if s.Ready() == nil {
				ready++
			}
		}
		if ready == len(d.sensors) {
			break
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("%d of %d sensors connected after 30s (see run/demo.log)", ready, len(d.sensors))
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	var parts []string
	for _, p := range d.cfg.Sensors {
		parts = append(parts, p.ID+" ("+p.Country+")")
	}
	return strings.Join(parts, ", ") + " replaying with times rebased to now, looping", nil
}

// watchFirstAlert notes when the first alert reached the mailbox or the
// webhook receiver, and says so.
func (d *Demo) watchFirstAlert(ctx context.Context) {
	for ctx.Err() == nil {
		v, _ := d.hooks.Count()
		if d.mail.Count() > 0 || v > 0 {
			el := time.Since(d.t0)
			d.mu.Lock()
			d.firstAlert = el
			stopped := d.stopped
			d.mu.Unlock()
			if !stopped {
				fmt.Fprintf(d.deps.Progress, "  %-20s %5.1fs  after start: %d e-mails, %d webhooks so far (%s/demo/)\n", "first alert", el.Seconds(), d.mail.Count(), v, d.frontURL)
			}
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// FirstAlert is how long after Start the first alert arrived (0: none yet).
func (d *Demo) FirstAlert() time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.firstAlert
}

// URL is the front page (dashboard and demo pages).
func (d *Demo) URL() string { return d.frontURL }

// Logins are the dashboard accounts with their passwords.
func (d *Demo) Logins() []Login { return d.logins }

// Storage is "clickhouse" or "embedded".
func (d *Demo) Storage() string { return d.storage }

// Geo says where the geo databases came from.
func (d *Demo) Geo() GeoSource { return d.geo }

// Stop stops everything in reverse order of start, each part bounded by
// ctx: sensors, the front page, the hubs (last first), the webhook
// receiver, the mail catcher, ClickHouse. Idempotent.
func (d *Demo) Stop(ctx context.Context) error {
	d.mu.Lock()
	if d.stopped {
		d.mu.Unlock()
		return nil
	}
	d.stopped = true
	d.mu.Unlock()
	var errs []error
	stop := func(name string, fn func() error) {
		t := time.Now()
		err := fn()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
			fmt.Fprintf(d.deps.Progress, "  stop %-16s %5.1fs  %v\n", name, time.Since(t).Seconds(), err)
			return
		}
		fmt.Fprintf(d.deps.Progress, "  stop %-16s %5.1fs\n", name, time.Since(t).Seconds())
	}
	bounded := func(limit time.Duration) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, limit)
	}
	for i := len(d.sensors) - 1; i >= 0; i-- {
		s := d.sensors[i]
		stop(d.cfg.Sensors[i].ID, func() error {
			c, cancel := bounded(10 * time.Second)
			defer cancel()
			return s.Stop(c)
		})
	}
	close(d.frontDone)
	if d.front != nil {
		stop("front page", func() error {
			c, cancel := bounded(3 * time.Second)
			defer cancel()
			return shutdownHTTP(c, d.front)
		})
	}
	for i := len(d.hubs) - 1; i >= 0; i-- {
		h := d.hubs[i]
		if !h.running() {
			continue
		}
		stop(h.id, func() error {
			c, cancel := bounded(20 * time.Second)
			defer cancel()
			if h.proc != nil {
				return h.proc.Stop(c)
			}
			return h.h.Stop(c)
		})
	}
	if d.hooks != nil {
		stop("webhook receiver", func() error {
			c, cancel := bounded(time.Second)
			defer cancel()
			return d.hooks.Stop(c)
		})
	}
	if d.mail != nil {
		stop("mail catcher", func() error { d.mail.Stop(); return nil })
	}
	if d.chDir != "" {
		stop("clickhouse", func() error { d.stopClickHouse(d.chDir); return nil })
	}
	if d.logFile != nil {
		d.logFile.Close()
	}
	return errors.Join(errs...)
}
