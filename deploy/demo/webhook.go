package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/webhook"
)

// maxKeptHooks bounds what the webhook receiver keeps (oldest dropped).
const maxKeptHooks = 2000

// Hook is one webhook request the receiver accepted.
type Hook struct {
	Received  time.Time `json:"received"`
	Recipient string    `json:"recipient"`
	ID        string    `json:"id"`
	// Verified: the Standard Webhooks signature matched the recipient's
	// secret (requests that fail are answered 401 and only counted).
	Verified bool   `json:"verified"`
	Type     string `json:"type"`
	Events   int    `json:"events"`
	Ticket   string `json:"ticket,omitempty"`
	// Body is the request body, indented (cut at 16 KiB).
	Body string `json:"body"`
	// Repeat counts further requests with the same webhook-id (retries).
	Repeat int `json:"repeat,omitempty"`
}

// WebhookReceiver is an HTTP server on loopback that receives the alerting
// webhooks of the demo's recipients at /hooks/RECIPIENT and verifies their
// Standard Webhooks signatures with each recipient's secret.
type WebhookReceiver struct {
	mu       sync.Mutex
	srv      *http.Server
	addr     string
	secrets  map[string]directory.Secret
	hooks    []Hook
	byID     map[string]int // webhook-id -> index in hooks (while kept)
	unique   int
	rejected int
	// findings: distinct finding ids named in the events, by type.
	findings map[string]map[string]bool
}

// StartWebhookReceiver listens on addr; secrets are the recipients'
// whsec_ keys by recipient id.
func StartWebhookReceiver(addr string, secrets map[string]directory.Secret) (*WebhookReceiver, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	w := &WebhookReceiver{addr: ln.Addr().String(), secrets: secrets, byID: map[string]int{}, findings: map[string]map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hooks/{recipient}", w.receive)
	w.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second}
	go w.srv.Serve(ln) //nolint:errcheck // returns when closed
	return w, nil
}

// URL is the endpoint of a recipient.
func (w *WebhookReceiver) URL(recipient string) string {
	return "http://" + w.addr + "/hooks/" + recipient
}

// Hooks returns the kept requests, oldest first.
func (w *WebhookReceiver) Hooks() []Hook {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]Hook(nil), w.hooks...)
}

// Count is the number of distinct verified deliveries (webhook-ids)
// received, and of requests refused for a bad signature.
func (w *WebhookReceiver) Count() (verified, rejected int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.unique, w.rejected
}

// Findings counts the distinct findings the verified webhooks named, by
// finding type.
func (w *WebhookReceiver) Findings() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for t, ids := range w.findings {
		out[t] = len(ids)
	}
	return out
}

// Stop closes the server, waiting up to ctx for requests in flight, then
// closing whatever connections are left (a sender's fresh connection
// that never carried a request would hold Shutdown for seconds).
func (w *WebhookReceiver) Stop(ctx context.Context) error {
	return shutdownHTTP(ctx, w.srv)
}

// shutdownHTTP shuts srv down gracefully until ctx ends, then closes it.
func shutdownHTTP(ctx context.Context, srv *http.Server) error {
	if err := srv.Shutdown(ctx); err != nil {
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return srv.Close()
		}
		return err
	}
	return nil
}

func (w *WebhookReceiver) receive(rw http.ResponseWriter, r *http.Request) {
	rcpt := r.PathValue("recipient")
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, 8<<20))
	if err != nil {
		http.Error(rw, "body too large", http.StatusRequestEntityTooLarge)
		return
	}
	secret, ok := w.secrets[rcpt]
	if !ok {
		http.Error(rw, "unknown recipient", http.StatusNotFound)
		return
	}
	if err := webhook.Verify(secret, r.Header, body, time.Now(), 5*time.Minute); err != nil {
		w.mu.Lock()
		w.rejected++
		w.mu.Unlock()
		http.Error(rw, "bad signature: "+err.Error(), http.StatusUnauthorized)
		return
	}
	h := Hook{Received: time.Now(), Recipient: rcpt, ID: r.Header.Get(webhook.HeaderID), Verified: true}
	var p struct {
		Type string `json:"type"`
		Data struct {
			Ticket string            `json:"ticket"`
			Events []json.RawMessage `json:"events"`
		} `json:"data"`
		Objects []json.RawMessage `json:"objects"` // a STIX bundle
	}
	type ev struct {
		ID   string `json:"extra.finding_id"`
		Type string `json:"extra.finding_type"`
	}
	var evs []ev
	if json.Unmarshal(body, &p) == nil {
		h.Type, h.Ticket, h.Events = p.Type, p.Data.Ticket, len(p.Data.Events)
		if p.Type == "bundle" {
			h.Events = len(p.Objects)
		}
		for _, raw := range p.Data.Events {
			var e ev
			if json.Unmarshal(raw, &e) == nil && e.ID != "" {
				evs = append(evs, e)
			}
		}
	}
	var ind bytes.Buffer
	if json.Indent(&ind, body, "", "  ") == nil {
		h.Body = cut(ind.String(), 16<<10)
	} else {
		h.Body = cut(strings.ToValidUTF8(string(body), "?"), 16<<10)
	}
	w.mu.Lock()
	for _, e := range evs {
		if w.findings[e.Type] == nil {
			w.findings[e.Type] = map[string]bool{}
		}
		w.findings[e.Type][e.ID] = true
	}
	if i, seen := w.byID[h.ID]; seen && h.ID != "" {
		w.hooks[i].Repeat++
	} else {
		w.unique++
		w.hooks = append(w.hooks, h)
		w.byID[h.ID] = len(w.hooks) - 1
		if len(w.hooks) > maxKeptHooks {
			drop := len(w.hooks) - maxKeptHooks
			for _, old := range w.hooks[:drop] {
				delete(w.byID, old.ID)
			}
			w.hooks = append(w.hooks[:0:0], w.hooks[drop:]...)
			for id, j := range w.byID {
				w.byID[id] = j - drop
			}
		}
	}
	w.mu.Unlock()
	rw.WriteHeader(http.StatusNoContent)
}

var errNoHub = errors.New("no hub answers")
