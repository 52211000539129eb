// Package webhook delivers notifications as HTTP POSTs signed per the
// Standard Webhooks scheme: headers webhook-id (the delivery id, the same on
// every retry), webhook-timestamp (Unix seconds of the attempt) and
// webhook-signature "v1,<base64 HMAC-SHA256 of id.timestamp.body>" keyed
// with the base64 part of the recipient's whsec_ secret.
//
// The body is either {"type":"jasper.alert", "timestamp", "data": {ticket,
// delivery_id, recipient, events: [...]}} with events named after the
// IntelMQ harmonisation, or a STIX 2.1 bundle (format stix). A 2xx answer
// is delivered, 410 Gone disables the endpoint (reported, deliveries kept),
// anything else (including redirects, which are not followed) is retried.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/intelmq"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/stix"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Standard Webhooks headers.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
)

// Sender posts webhook deliveries; it implements outbox.Sender.
type Sender struct {
	client *http.Client
	now    func() time.Time
}

// New returns a sender using client (nil: a client with system roots). The
// client must not follow redirects; New makes sure of it.
func New(client *http.Client) *Sender {
	if client == nil {
		client = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	c := *client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Sender{client: &c, now: time.Now}
}

// Payload is the intelmq-format body.
type Payload struct {
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      Data      `json:"data"`
}

// Data is the payload's content.
type Data struct {
	Ticket     string          `json:"ticket"`
	DeliveryID string          `json:"delivery_id"`
	Recipient  string          `json:"recipient"`
	Events     []intelmq.Event `json:"events"`
}

// Body renders the request body for a task's webhook (deterministic: the
// same task gives the same bytes on every retry).
func Body(t *outbox.Task, w *directory.Webhook) ([]byte, string, error) {
	if w.Format == directory.FormatSTIX {
		mk, err := stix.TLP(t.Recipient.TLP, t.Recipient.TLPVersion)
		if err != nil {
			return nil, "", err
		}
		var fs []*jasperv1.Finding
		for _, it := range t.Items {
			fs = append(fs, it.Finding)
		}
		b, err := json.Marshal(stix.Merge(stix.BundleID(t.Delivery.ID), fs, mk))
		return b, "application/stix+json;version=2.1", err
	}
	p := Payload{Type: "jasper.alert", Timestamp: time.UnixMilli(t.CreatedMs).UTC(),
		Data: Data{Ticket: t.Ticket, DeliveryID: t.Delivery.ID, Recipient: t.Recipient.ID}}
	for _, it := range t.Items {
		p.Data.Events = append(p.Data.Events, intelmq.FromFinding(it.Finding, string(it.Kind), t.Ticket, t.CreatedMs))
	}
	b, err := json.Marshal(p)
	return b, "application/json", err
}

// Sign returns the webhook-signature value for id, timestamp and body.
func Sign(key []byte, id string, ts int64, body []byte) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%d.", id, ts)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// Errors of Verify.
var (
	ErrNoSignature = errors.New("webhook: missing headers")
	ErrBadSig      = errors.New("webhook: no matching signature")
	ErrTimestamp   = errors.New("webhook: timestamp outside tolerance")
)

// Verify checks a received webhook (for Go receivers): one of the
// space-separated v1 signatures must match, and the timestamp must be
// within tolerance of now.
func Verify(secret directory.Secret, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := (&directory.Webhook{Secret: secret}).Key()
	if err != nil {
		return err
	}
	id, tsS, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsS == "" || sigs == "" {
		return ErrNoSignature
	}
	ts, err := strconv.ParseInt(tsS, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrTimestamp, tsS)
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return ErrTimestamp
	}
	want := Sign(key, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if subtle.ConstantTimeCompare([]byte(s), []byte(want)) == 1 {
			return nil
		}
	}
	return ErrBadSig
}

// Send posts one task to the webhook its channel names.
func (s *Sender) Send(ctx context.Context, t *outbox.Task) outbox.Result {
	w := t.Recipient.Webhook(t.Delivery.Channel)
	if w == nil {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: fmt.Errorf("channel %s not in the directory", t.Delivery.Channel)}
	}
	key, err := w.Key()
	if err != nil {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: err}
	}
	body, ctype, err := Body(t, w)
	if err != nil {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: fmt.Errorf("render: %w", err)}
	}
	ts := s.now().Unix()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: err}
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("User-Agent", "jasper-alerting/1")
	req.Header.Set(HeaderID, t.Delivery.ID)
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(ts, 10))
	req.Header.Set(HeaderSignature, Sign(key, t.Delivery.ID, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: fmt.Errorf("post: %w", err)}
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) //nolint:errcheck // drain for keep-alive
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return outbox.Result{Outcome: outbox.OutcomeOK}
	case resp.StatusCode == http.StatusGone:
		return outbox.Result{Outcome: outbox.OutcomeGone, Err: fmt.Errorf("endpoint answered %s: disabled", resp.Status)}
	default:
		return outbox.Result{Outcome: outbox.OutcomeRetry, Err: fmt.Errorf("endpoint answered %s", resp.Status), RetryAfter: retryAfter(resp.Header.Get("Retry-After"), s.now())}
	}
}

func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n > 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
