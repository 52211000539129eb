package alerting

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	"github.com/jasperfed/jasper/alerting/taxii"
)

// Caller is an authenticated admin API user.
type Caller struct {
	Name string
	// Admin may do everything; otherwise the caller acts for Recipients
	// only (read its audit log and deliveries, acknowledge, silence).
	Admin      bool
	Recipients []string
}

func (c *Caller) owns(id string) bool {
	if c.Admin {
		return true
	}
	for _, r := range c.Recipients {
		if r == id {
			return true
		}
	}
	return false
}

// Authorizer authenticates an admin API request.
type Authorizer func(r *http.Request) (*Caller, error)

// DefaultAuthorize accepts what the TAXII server accepts (taxii.Identify):
// a federation client certificate verified by the TLS listener (role
// admin: everything; role analyst: the CERT of its country) or a
// recipient's bearer token (the TAXII token: that recipient).
func DefaultAuthorize(m *outbox.Module) Authorizer {
	return func(r *http.Request) (*Caller, error) {
		p, err := taxii.Identify(m, r, "use the alerting API")
		if err != nil {
			return nil, err
		}
		return &Caller{Name: p.Name, Admin: p.All, Recipients: p.Recipients}, nil
	}
}

type admin struct {
	m     *outbox.Module
	store outbox.Proposer
	auth  Authorizer
	log   *slog.Logger
	mux   *http.ServeMux
	now   func() time.Time
}

// MaxRequestBytes bounds an admin API request body.
const MaxRequestBytes = 1 << 20

func newAdmin(prefix string, m *outbox.Module, store outbox.Proposer, auth Authorizer, log *slog.Logger) *admin {
	a := &admin{m: m, store: store, auth: auth, log: log, mux: http.NewServeMux(), now: time.Now}
	p := prefix
	a.mux.HandleFunc("GET "+p+"recipients", a.getRecipients)
	a.mux.HandleFunc("PUT "+p+"recipients/{id}", a.putRecipient)
	a.mux.HandleFunc("DELETE "+p+"recipients/{id}", a.deleteRecipient)
	a.mux.HandleFunc("PUT "+p+"directory", a.putDirectory)
	a.mux.HandleFunc("GET "+p+"silences", a.getSilences)
	a.mux.HandleFunc("POST "+p+"silences", a.postSilence)
	a.mux.HandleFunc("DELETE "+p+"silences/{id}", a.deleteSilence)
	a.mux.HandleFunc("POST "+p+"acks", a.postAck)
	a.mux.HandleFunc("GET "+p+"audit", a.getAudit)
	a.mux.HandleFunc("GET "+p+"deliveries", a.getDeliveries)
	a.mux.HandleFunc("GET "+p+"channels/disabled", a.getDisabled)
	a.mux.HandleFunc("POST "+p+"channels/enable", a.postEnable)
	a.mux.HandleFunc("GET "+p+"stats", a.getStats)
	return a
}

type callerKey struct{}

func (a *admin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c, err := a.auth(r)
	if err != nil {
		writeErr(w, http.StatusUnauthorized, err)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, MaxRequestBytes)
	a.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
}

func caller(r *http.Request) *Caller { return r.Context().Value(callerKey{}).(*Caller) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.Encode(v) //nolint:errcheck // client gone
}

func writeErr(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

var errForbidden = errors.New("not allowed for this caller")

// DecodeJSON strictly decodes one JSON value (unknown fields and trailing
// data are errors). It is the decoder of every admin API body.
func DecodeJSON(r io.Reader, dst any) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return fmt.Errorf("bad JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("bad JSON: trailing data")
	}
	return nil
}

// propose sends a command and maps the outcome to a status.
func (a *admin) propose(w http.ResponseWriter, r *http.Request, c outbox.Command, okStatus int, body any) {
	p := outbox.Encode(c)
	if _, err := outbox.Decode(p); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	_, err := a.store.Propose(ctx, a.m.Name(), p)
	switch {
	case err == nil:
		a.log.Info("alerting_admin_change", "op", c.Op, "by", caller(r).Name)
		writeJSON(w, okStatus, body)
	case errors.Is(err, outbox.ErrBadCommand):
		writeErr(w, http.StatusBadRequest, err)
	case errors.Is(err, outbox.ErrNotFound), errors.Is(err, outbox.ErrUnknownRecipient):
		writeErr(w, http.StatusNotFound, err)
	default:
		writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("not committed (retry on the leader): %w", err))
	}
}

func (a *admin) getRecipients(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	d := a.m.Directory()
	red := d.Redacted()
	if !c.Admin {
		var mine []directory.Recipient
		for _, rc := range red.Recipients {
			if c.owns(rc.ID) {
				mine = append(mine, rc)
			}
		}
		red.Recipients = mine
	}
	writeJSON(w, http.StatusOK, red)
}

func (a *admin) putRecipient(w http.ResponseWriter, r *http.Request) {
	if !caller(r).Admin {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	var rc directory.Recipient
	if err := DecodeJSON(r.Body, &rc); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if rc.ID == "" {
		rc.ID = r.PathValue("id")
	}
	if rc.ID != r.PathValue("id") {
		writeErr(w, http.StatusBadRequest, errors.New("id: differs from the path"))
		return
	}
	// A redacted secret sent back unchanged keeps the stored one.
	if old, ok := a.m.Recipient(rc.ID); ok {
		for i := range rc.Webhooks {
			if rc.Webhooks[i].Secret.Reveal() == "<redacted>" {
				if ow := old.Webhook(rc.Webhooks[i].ChannelKey()); ow != nil {
					rc.Webhooks[i].Secret = ow.Secret
				}
			}
		}
	}
	if err := rc.Validate("recipient"); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpPutRecipient, Recipient: &rc}, http.StatusOK, map[string]string{"id": rc.ID})
}

func (a *admin) deleteRecipient(w http.ResponseWriter, r *http.Request) {
	if !caller(r).Admin {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpDeleteRecipient, ID: r.PathValue("id")}, http.StatusOK, map[string]string{"deleted": r.PathValue("id")})
}

func (a *admin) putDirectory(w http.ResponseWriter, r *http.Request) {
	if !caller(r).Admin {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	d := directory.Directory{Defaults: directory.DefaultRouting()}
	if err := DecodeJSON(r.Body, &d); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if err := d.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpLoadDirectory, Directory: &d}, http.StatusOK, map[string]int{"recipients": len(d.Recipients)})
}

func (a *admin) getSilences(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	out := []route.Silence{}
	for _, s := range a.m.Silences() {
		if c.Admin || (s.Recipient != "" && c.owns(s.Recipient)) {
			out = append(out, s)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func newID() string {
	b := make([]byte, 8)
	rand.Read(b) //nolint:errcheck // never fails
	return hex.EncodeToString(b)
}

func (a *admin) postSilence(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	var s route.Silence
	if err := DecodeJSON(r.Body, &s); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if !c.Admin {
		if len(c.Recipients) == 0 || (s.Recipient != "" && !c.owns(s.Recipient)) {
			writeErr(w, http.StatusForbidden, errForbidden)
			return
		}
		if s.Recipient == "" {
			s.Recipient = c.Recipients[0]
		}
	}
	if s.ID == "" {
		s.ID = newID() // drawn here, carried in the command: the FSM stays deterministic
	}
	if s.StartsMs == 0 {
		s.StartsMs = a.now().UnixMilli()
	}
	s.CreatedBy = c.Name
	if err := s.Validate(); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpPutSilence, Silence: &s}, http.StatusCreated, s)
}

func (a *admin) deleteSilence(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	id := r.PathValue("id")
	if !c.Admin {
		allowed := false
		for _, s := range a.m.Silences() {
			allowed = allowed || (s.ID == id && s.Recipient != "" && c.owns(s.Recipient))
		}
		if !allowed {
			writeErr(w, http.StatusForbidden, errForbidden)
			return
		}
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpDeleteSilence, ID: id}, http.StatusOK, map[string]string{"deleted": id})
}

func (a *admin) postAck(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	var ack outbox.AckCommand
	if err := DecodeJSON(r.Body, &ack); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if !c.owns(ack.Recipient) {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	ack.By = c.Name
	a.propose(w, r, outbox.Command{Op: outbox.OpAck, Ack: &ack}, http.StatusOK, ack)
}

func (a *admin) recipientParam(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.URL.Query().Get("recipient")
	c := caller(r)
	if id == "" && !c.Admin {
		if len(c.Recipients) == 0 {
			writeErr(w, http.StatusForbidden, errForbidden)
			return "", false
		}
		id = c.Recipients[0]
	}
	if id != "" && !c.owns(id) {
		writeErr(w, http.StatusForbidden, errForbidden)
		return "", false
	}
	return id, true
}

func (a *admin) getAudit(w http.ResponseWriter, r *http.Request) {
	id, ok := a.recipientParam(w, r)
	if !ok {
		return
	}
	if id == "" {
		writeErr(w, http.StatusBadRequest, errors.New("recipient: required"))
		return
	}
	out := a.m.Audit(id)
	if out == nil {
		out = []outbox.Attempt{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) getDeliveries(w http.ResponseWriter, r *http.Request) {
	id, ok := a.recipientParam(w, r)
	if !ok {
		return
	}
	out := a.m.Deliveries(id)
	if out == nil {
		out = []outbox.Delivery{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) getDisabled(w http.ResponseWriter, r *http.Request) {
	c := caller(r)
	out := map[string]string{}
	for k, v := range a.m.DisabledChannels() {
		rcpt, _, _ := strings.Cut(k, " ")
		if c.owns(rcpt) {
			out[k] = v
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) postEnable(w http.ResponseWriter, r *http.Request) {
	if !caller(r).Admin {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	var ch outbox.ChannelRef
	if err := DecodeJSON(r.Body, &ch); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	a.propose(w, r, outbox.Command{Op: outbox.OpEnableChannel, Channel: &ch}, http.StatusOK, ch)
}

func (a *admin) getStats(w http.ResponseWriter, r *http.Request) {
	if !caller(r).Admin {
		writeErr(w, http.StatusForbidden, errForbidden)
		return
	}
	writeJSON(w, http.StatusOK, a.m.Stats())
}
