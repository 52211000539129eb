package clustertest

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/http"
	"net/mail"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/email"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/webhook"
	"github.com/jasperfed/jasper/internal/pki"
)

// Receiver modes of the alert sinks.
const (
	sinkUp   int32 = iota // accept
	sinkFail              // refuse temporarily (SMTP 451, HTTP 503)
	sinkHang              // record the request, then hold the answer
)

// arrival is one delivery request a sink received.
type arrival struct {
	content  string   // what must be equal on a retry of the same id
	findings []string // finding ids the delivery names
}

// alertSinks are the recipients' real receivers: an SMTP server and an
// HTTP webhook endpoint on loopback. Each request is recorded by
// recipient, channel kind ("email", "webhook") and delivery id; the first
// arrival of an id is processed (its findings counted), later ones are
// retries that are only compared with it.
type alertSinks struct {
	mode     atomic.Int32
	hold     time.Duration
	secret   directory.Secret
	mu       sync.Mutex
	arrivals map[string]map[string][]arrival // rcpt|kind → id → arrivals
	// processed: rcpt|kind → finding id → true, from first arrivals only.
	processed map[string]map[string]bool
	rejected  int
	bad       []string
	smtpAddr  string
	hookURL   string
}

func startAlertSinks(t *testing.T) *alertSinks {
	t.Helper()
	key := make([]byte, 24)
	_, _ = rand.Read(key)
	s := &alertSinks{hold: 1500 * time.Millisecond, secret: directory.Secret("whsec_" + base64.StdEncoding.EncodeToString(key)),
		arrivals: map[string]map[string][]arrival{}, processed: map[string]map[string]bool{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 8 << 20
	go srv.Serve(ln) //nolint:errcheck // returns when closed
	t.Cleanup(func() { srv.Close() })
	s.smtpAddr = ln.Addr().String()

	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hooks/{recipient}", s.hook)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(hl) //nolint:errcheck // returns when closed
	t.Cleanup(func() { hs.Close() })
	s.hookURL = "http://" + hl.Addr().String() + "/hooks/"
	return s
}

// record notes one arrival; the first of an id is processed.
func (s *alertSinks) record(rcpt, kind, id string, a arrival) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := rcpt + "|" + kind
	if s.arrivals[k] == nil {
		s.arrivals[k], s.processed[k] = map[string][]arrival{}, map[string]bool{}
	}
	prev := s.arrivals[k][id]
	s.arrivals[k][id] = append(prev, a)
	if len(prev) > 0 {
		if prev[0].content != a.content {
			s.bad = append(s.bad, fmt.Sprintf("%s %s: a second request with the same id carries different content", k, id))
		}
		return
	}
	for _, f := range a.findings {
		s.processed[k][f] = true
	}
}

// total counts every request recorded so far.
func (s *alertSinks) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ids := range s.arrivals {
		for _, as := range ids {
			n += len(as)
		}
	}
	return n
}

func (s *alertSinks) hook(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 8<<20))
	if err != nil {
		http.Error(w, "body", http.StatusRequestEntityTooLarge)
		return
	}
	mode := s.mode.Load()
	if mode == sinkFail {
		http.Error(w, "down for the test", http.StatusServiceUnavailable)
		return
	}
	if err := webhook.Verify(s.secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		s.mu.Lock()
		s.rejected++
		s.mu.Unlock()
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var p webhook.Payload
	if err := json.Unmarshal(body, &p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	a := arrival{content: string(body)}
	for _, e := range p.Data.Events {
		if id, _ := e["extra.finding_id"].(string); id != "" {
			a.findings = append(a.findings, id)
		}
	}
	s.record(r.PathValue("recipient"), "webhook", r.Header.Get(webhook.HeaderID), a)
	if mode == sinkHang {
		time.Sleep(s.hold)
	}
	w.WriteHeader(http.StatusNoContent)
}

type sinkSession struct {
	s  *alertSinks
	to []string
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	if ss.s.mode.Load() == sinkFail {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "down for the test"}
	}
	return nil
}

func (ss *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	ss.to = append(ss.to, to)
	return nil
}

func (ss *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	msg, err := mail.ReadMessage(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	id := msg.Header.Get(email.HeaderDeliveryID)
	findings, err := csvFindings(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body)
	if err != nil {
		return fmt.Errorf("parse: %w", err)
	}
	slices.Sort(findings)
	content := msg.Header.Get("Subject") + "\n" + strings.Join(findings, ",")
	for _, to := range ss.to {
		rcpt, _, _ := strings.Cut(to, "@")
		ss.s.record(rcpt, "email", id, arrival{content: content, findings: findings})
	}
	if ss.s.mode.Load() == sinkHang {
		time.Sleep(ss.s.hold)
	}
	return nil
}

func (ss *sinkSession) Reset()        { ss.to = nil }
func (ss *sinkSession) Logout() error { return nil }

// csvFindings walks a MIME entity and returns the extra.finding_id column
// of its CSV attachments.
func csvFindings(ctype, cte string, body io.Reader) ([]string, error) {
	mt, params, err := mime.ParseMediaType(ctype)
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(cte) {
	case "base64":
		body = base64.NewDecoder(base64.StdEncoding, body) // skips line breaks
	case "quoted-printable":
		body = quotedprintable.NewReader(body)
	}
	if strings.HasPrefix(mt, "multipart/") {
		var out []string
		mr := multipart.NewReader(body, params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return out, nil
			}
			if err != nil {
				return nil, err
			}
			fs, err := csvFindings(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p)
			if err != nil {
				return nil, err
			}
			out = append(out, fs...)
		}
	}
	if mt != "text/csv" {
		return nil, nil
	}
	rows, err := csv.NewReader(body).ReadAll()
	if err != nil || len(rows) == 0 {
		return nil, fmt.Errorf("csv attachment: %v", err)
	}
	col := slices.Index(rows[0], "extra.finding_id")
	if col < 0 {
		return nil, fmt.Errorf("csv attachment: no extra.finding_id column in %v", rows[0])
	}
	var out []string
	for _, row := range rows[1:] {
		out = append(out, row[col])
	}
	return out, nil
}

// committedFindings reads the infected-host findings the hubs applied
// (finding_new log lines of every hub): finding id → source address.
func committedFindings(c *cluster) map[string]string {
	out := map[string]string{}
	for _, h := range c.hubs {
		f, err := os.Open(h.logPath)
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.Contains(line, "msg=finding_new") || !strings.Contains(line, " type=infected_host ") {
				continue
			}
			var id, src string
			for _, kv := range strings.Fields(line) {
				k, v, _ := strings.Cut(kv, "=")
				switch k {
				case "id":
					id = v
				case "src":
					src = v
				}
			}
			if id != "" {
				out[id] = src
			}
		}
		f.Close()
	}
	return out
}

// alertingAddr is the address of a hub's alerting admin API, from its
// latest alerting_started log line (listen: 127.0.0.1:0).
func alertingAddr(h *procHub) string {
	b, _ := os.ReadFile(h.logPath)
	addr := ""
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "msg=alerting_started") {
			continue
		}
		for _, kv := range strings.Fields(line) {
			if v, ok := strings.CutPrefix(kv, "listen="); ok {
				addr = v
			}
		}
	}
	return addr
}

// alertingGet reads a JSON document of a hub's alerting admin API with the
// admin certificate.
func (c *cluster) alertingGet(client *http.Client, h *procHub, path string, out any) error {
	addr := alertingAddr(h)
	if addr == "" {
		return fmt.Errorf("%s: alerting not started", h.id)
	}
	resp, err := client.Get("https://" + addr + "/api/v1/alerting/" + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s %s", h.id, path, resp.Status, b)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// TestAlertingThroughLeaderKills runs three `jasper hub run` processes with
// detection and alerting, and a `jasper sensor run` process replaying
// (rebased, at twice its pace) a capture with planted infected hosts that
// belong to two organisations, each with an e-mail address (a real SMTP
// server) and a signed webhook (a real HTTP endpoint). The leader is
// killed with SIGKILL twice: first while the receivers refuse and
// deliveries pile up in the replicated outbox, then while a delivery is
// in flight (the receiver got it and holds the answer). Afterwards every
// committed finding reached both channels of both recipients, every
// delivery the outbox recorded as delivered reached its receiver, each
// receiver processed each delivery id once, and a repeated id always
// carried the same content (a retry).
func TestAlertingThroughLeaderKills(t *testing.T) {
	needBinary(t)
	const hosts = 20
	dir := t.TempDir()
	sinks := startAlertSinks(t)
	rcpts := []string{"org-a", "org-b"}
	var rs strings.Builder
	fmt.Fprintf(&rs, "defaults: {group_wait: 1s, group_interval: 2s, repeat_interval: 1h, rate_limit_per_hour: 0}\nrecipients:\n")
	for _, r := range rcpts {
		// Both register the planted hosts' block: tied at the same
		// length, both receive every finding.
		fmt.Fprintf(&rs, "  - {id: %s, name: %s CSIRT, prefixes: [45.77.0.0/16], emails: [%s@example.org], webhooks: [{url: %q, secret: %q}]}\n",
			r, r, r, sinks.hookURL+r, sinks.secret.Reveal())
	}
	recipientsPath := filepath.Join(dir, "recipients.yaml")
	if err := os.WriteFile(recipientsPath, []byte(rs.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, smtpPort, _ := net.SplitHostPort(sinks.smtpAddr)
	c := newClusterWith(t, 3, fmt.Sprintf(`alerting:
  recipients_file: %q
  listen: "127.0.0.1:0"
  smtp: {host: 127.0.0.1, port: %s, tls: none, from: "jasper <alerts@jasper.example>", timeout: 3s}
  worker: {poll: 50ms, send_timeout: 5s, backoff_base: 100ms, backoff_max: 1s}
`, recipientsPath, smtpPort))
	tc, err := pki.ClientConfig(c.admin)
	if err != nil {
		t.Fatal(err)
	}
	api := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{TLSClientConfig: tc}}
	t.Cleanup(api.CloseIdleConnections)
	pending := func(h *procHub) ([]outbox.Delivery, error) {
		var ds []outbox.Delivery
		err := c.alertingGet(api, h, "deliveries", &ds)
		return ds, err
	}

	capPath := filepath.Join(dir, "infected.pcap")
	capt := writeInfectedCapture(t, capPath, hosts, 3*time.Second+hosts*2300*time.Millisecond+4*time.Second)
	c.leaderAmong(c.hubs...)
	s := c.startReplaySensor(t, "jp-alert-1", capPath, 2)

	waitFor(t, "the first deliveries", 60*time.Second, func() bool { return len(committedFindings(c)) >= 2 && sinks.total() >= 2 })

	// Kill 1: receivers refuse, deliveries pile up, kill -9 the leader.
	sinks.mode.Store(sinkFail)
	l1 := c.leaderAmong(c.hubs...)
	var held []outbox.Delivery
	waitFor(t, "deliveries pending after a refused attempt", 30*time.Second, func() bool {
		ds, err := pending(l1)
		held = held[:0]
		for _, d := range ds {
			if d.Attempts > 0 {
				held = append(held, d)
			}
		}
		return err == nil && len(held) >= 2
	})
	c.kill(l1, syscall.SIGKILL)
	l2 := c.leaderAmong(others(c.hubs, l1)...)
	t.Logf("kill -9 leader %s with %d deliveries pending after refused attempts (e.g. %s, %d attempts); new leader %s",
		l1.id, len(held), held[0].ID, held[0].Attempts, l2.id)
	c.start(l1)

	// Kill 2: the receivers take the request and hold the answer; kill -9
	// the new leader while a delivery is in flight.
	base := sinks.total()
	sinks.mode.Store(sinkHang)
	waitFor(t, "a delivery in flight at a receiver", 30*time.Second, func() bool { return sinks.total() > base })
	c.kill(l2, syscall.SIGKILL)
	sinks.mode.Store(sinkUp)
	l3 := c.leaderAmong(others(c.hubs, l2)...)
	t.Logf("kill -9 leader %s with a delivery in flight (%d requests arrived while holding); new leader %s", l2.id, sinks.total()-base, l3.id)
	c.start(l2)

	waitFor(t, "the replay to finish and the sensor spool to empty", 90*time.Second, s.drained)
	var (
		committed map[string]string
		left      []outbox.Delivery
		missing   []string
	)
	deadline := time.Now().Add(45 * time.Second)
	for {
		committed = committedFindings(c)
		missing = missing[:0]
		sinks.mu.Lock()
		for _, r := range rcpts {
			for _, kind := range []string{"email", "webhook"} {
				for id := range committed {
					if !sinks.processed[r+"|"+kind][id] {
						missing = append(missing, r+" "+kind+" "+id)
					}
				}
			}
		}
		sinks.mu.Unlock()
		ds, err := pending(c.leaderAmong(c.hubs...))
		left = ds
		if err == nil && len(ds) == 0 && len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			slices.Sort(missing)
			t.Fatalf("after 45s: %d findings committed; %d (recipient, channel, finding) not received, e.g. %v; outbox holds %d deliveries (%v)",
				len(committed), len(missing), missing[:min(len(missing), 8)], len(left), err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The planted hosts became the findings (detection through the kills).
	srcs := map[string]bool{}
	for _, src := range committed {
		srcs[src] = true
	}
	for _, h := range capt.hosts {
		if !srcs[h.addr.String()] {
			t.Errorf("planted host %s: no infected-host finding committed", h.addr)
		}
	}

	// Receivers against the outbox's audit log on the leader: every
	// delivery recorded delivered arrived, every arrival was recorded
	// delivered, and each id was processed once. The audit is read before
	// the receivers' records, so a recorded delivery has arrived; an
	// arrival whose attempt is still being recorded is waited for.
	l := c.leaderAmong(c.hubs...)
	type key struct{ rcpt, kind string }
	var (
		recorded map[key]map[string]bool
		arrived  map[key]map[string][]arrival
		late     []string
	)
	waitFor(t, "every arrival recorded delivered in the audit log", 20*time.Second, func() bool {
		recorded = map[key]map[string]bool{}
		for _, r := range rcpts {
			var audit []outbox.Attempt
			if err := c.alertingGet(api, l, "audit?recipient="+r, &audit); err != nil {
				t.Fatal(err)
			}
			recorded[key{r, "email"}], recorded[key{r, "webhook"}] = map[string]bool{}, map[string]bool{}
			for _, a := range audit {
				if a.Outcome != outbox.OutcomeOK {
					continue
				}
				kind := "webhook"
				if a.Channel == directory.ChannelEmail {
					kind = "email"
				}
				recorded[key{r, kind}][a.Delivery] = true
			}
		}
		arrived = map[key]map[string][]arrival{}
		late = late[:0]
		sinks.mu.Lock()
		for k := range recorded {
			arrived[k] = map[string][]arrival{}
			for id, as := range sinks.arrivals[k.rcpt+"|"+k.kind] {
				arrived[k][id] = slices.Clone(as)
				if !recorded[k][id] {
					late = append(late, k.rcpt+" "+k.kind+" "+id)
				}
			}
		}
		sinks.mu.Unlock()
		return len(late) == 0
	})
	committed = committedFindings(c)
	sinks.mu.Lock()
	defer sinks.mu.Unlock()
	for _, b := range sinks.bad {
		t.Error(b)
	}
	if sinks.rejected > 0 {
		t.Errorf("%d webhook requests failed signature verification", sinks.rejected)
	}
	retries := 0
	for _, r := range rcpts {
		for _, kind := range []string{"email", "webhook"} {
			k := key{r, kind}
			got := arrived[k]
			for id := range recorded[k] {
				if len(got[id]) == 0 {
					t.Errorf("%s %s: delivery %s recorded delivered, never received", r, kind, id)
				}
			}
			for _, as := range got {
				retries += len(as) - 1
			}
			// Processed once: one first arrival per distinct id, and the
			// findings processed are committed ones.
			if len(got) != len(recorded[k]) {
				t.Errorf("%s %s: %d distinct delivery ids received, %d recorded delivered", r, kind, len(got), len(recorded[k]))
			}
			for id := range sinks.processed[r+"|"+kind] {
				if _, ok := committed[id]; !ok {
					t.Errorf("%s %s: finding %s delivered, never committed", r, kind, id)
				}
			}
			t.Logf("%s %s: %d deliveries, %d findings", r, kind, len(got), len(sinks.processed[r+"|"+kind]))
		}
	}
	t.Logf("%d findings committed for %d planted hosts; %d requests repeated a delivery id (retries after a kill or refusal, processed once)",
		len(committed), hosts, retries)
}

// startReplaySensor starts a `jasper sensor run` process replaying capPath
// rebased to the present at speed times its pace.
func (c *cluster) startReplaySensor(t *testing.T, id, capPath string, speed int) *sensorProc {
	t.Helper()
	dir := filepath.Join(t.TempDir(), id)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	files := c.issue(pki.Identity{Role: pki.RoleSensor, ID: id, Country: "JP", Prefixes: []netip.Prefix{sensorDarknet}})
	metrics := freePort(t, "127.0.0.1")
	cfgPath := filepath.Join(dir, "sensor.yaml")
	cfg := fmt.Sprintf(`id: %s
source:
  replay: {file: %q, speed: %d, rebase: true}
darknet: [%s]
spool: {dir: %q}
hubs: [%s]
tls: {ca: %q, cert: %q, key: %q}
uplink: {backoff_min: 20ms, backoff_max: 300ms}
metrics: {listen: %q}
log: {format: text, level: info}
`, id, capPath, speed, sensorDarknet, filepath.Join(dir, "spool"), strings.Join(c.ingestAddrs(c.hubs...), ", "),
		files.CA, files.Cert, files.Key, metrics)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sensor.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(jasperBin, "sensor", "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			lines := strings.Split(string(b), "\n")
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			t.Logf("--- %s log:\n%s", id, strings.Join(lines, "\n"))
		}
	})
	return &sensorProc{id: id, metrics: "http://" + metrics + "/metrics", cmd: cmd}
}
