// Package hooktest runs real HTTP webhook receivers on loopback for
// alerting tests: it records every request, answers as told (2xx, 503,
// 410), processes each webhook-id once, can go down and come back on the
// same port, and checks signatures with the npm standardwebhooks reference
// library run by node (an implementation independent of ours).
package hooktest

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/alerting/internal/testport"
)

// Request is one received request.
type Request struct {
	Header http.Header
	Body   []byte
	At     time.Time // when the body had arrived
}

// Receiver is a webhook endpoint.
type Receiver struct {
	URL  string
	addr string
	t    testing.TB

	mu        sync.Mutex
	srv       *http.Server
	status    int // answer for every request (0: 204)
	failFirst int // answer 503 to the first n requests
	reqs      []Request
	processed []string // webhook-ids in first-seen order
	seen      map[string]int
}

// Start listens on 127.0.0.1:0.
func Start(t testing.TB) *Receiver {
	ln, err := testport.Listen()
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{t: t, addr: ln.Addr().String(), seen: map[string]int{}}
	r.URL = "http://" + r.addr + "/hook"
	r.serve(ln)
	t.Cleanup(r.Stop)
	return r
}

func (r *Receiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle), ReadHeaderTimeout: 5 * time.Second}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go srv.Serve(ln) //nolint:errcheck // returns when closed
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(io.LimitReader(req.Body, 16<<20))
	r.mu.Lock()
	r.reqs = append(r.reqs, Request{Header: req.Header.Clone(), Body: b, At: time.Now()})
	status := r.status
	if r.failFirst > 0 {
		r.failFirst--
		status = http.StatusServiceUnavailable
	}
	if status == 0 || status/100 == 2 {
		id := req.Header.Get("webhook-id")
		if r.seen[id] == 0 {
			r.processed = append(r.processed, id)
		}
		r.seen[id]++
	}
	r.mu.Unlock()
	if status == 0 {
		status = http.StatusNoContent
	}
	w.WriteHeader(status)
}

// SetStatus makes every answer status (0: 204 No Content).
func (r *Receiver) SetStatus(code int) {
	r.mu.Lock()
	r.status = code
	r.mu.Unlock()
}

// FailFirst answers 503 to the next n requests.
func (r *Receiver) FailFirst(n int) {
	r.mu.Lock()
	r.failFirst = n
	r.mu.Unlock()
}

// Stop closes the receiver (an outage).
func (r *Receiver) Stop() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Restart listens again on the same address.
func (r *Receiver) Restart() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Errorf("hooktest restart: %v", err)
		return
	}
	r.serve(ln)
}

// Requests returns every request received.
func (r *Receiver) Requests() []Request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Request(nil), r.reqs...)
}

// Processed returns the webhook-ids accepted, each once, in first-seen
// order, and how many times each arrived in an accepted request.
func (r *Receiver) Processed() ([]string, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := make(map[string]int, len(r.seen))
	for k, v := range r.seen {
		seen[k] = v
	}
	return append([]string(nil), r.processed...), seen
}

// NodeModules returns the folder holding the standardwebhooks npm package
// ($JASPER_TEST_NODE_MODULES, set by .ci/setup-node.sh), skipping the test
// when node or the package is missing.
func NodeModules(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("JASPER_TEST_NODE_MODULES")
	if dir == "" {
		t.Skip("JASPER_TEST_NODE_MODULES not set: run .ci/setup-node.sh (installs node and the npm standardwebhooks package) to verify signatures independently")
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node not installed: run .ci/setup-node.sh")
	}
	if _, err := os.Stat(filepath.Join(dir, "standardwebhooks", "package.json")); err != nil {
		t.Skipf("standardwebhooks not under %s: run .ci/setup-node.sh", dir)
	}
	return dir
}

const verifyJS = `
const { Webhook } = require(process.env.JASPER_SW_DIR + "/standardwebhooks");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
const out = [];
for (const m of input) {
  try {
    new Webhook(m.secret).verify(Buffer.from(m.body, "base64"), m.headers);
    out.push("ok");
  } catch (e) {
    out.push("error: " + e.message);
  }
}
process.stdout.write(JSON.stringify(out));
`

// VerifyWithNode checks each request's signature with the reference
// library; it returns, per request, "ok" or "error: ...".
func VerifyWithNode(t testing.TB, secret string, reqs []Request) []string {
	t.Helper()
	dir := NodeModules(t)
	type msg struct {
		Secret  string            `json:"secret"`
		Headers map[string]string `json:"headers"`
		Body    string            `json:"body"`
	}
	var in []msg
	for _, r := range reqs {
		h := map[string]string{}
		for k := range r.Header {
			h[strings.ToLower(k)] = r.Header.Get(k)
		}
		in = append(in, msg{Secret: secret, Headers: h, Body: base64.StdEncoding.EncodeToString(r.Body)})
	}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("node", "-e", verifyJS)
	cmd.Env = append(os.Environ(), "JASPER_SW_DIR="+dir)
	cmd.Stdin = strings.NewReader(string(b))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		errors.As(err, &ee)
		t.Fatalf("node: %v: %s", err, stderr.String())
	}
	var res []string
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	return res
}
