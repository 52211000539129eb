package email

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/jasperfed/jasper/alerting/outbox"
)

// Failure classes: what went wrong, and so whether the worker retries the
// delivery or parks its channel.
const (
	// ClassRejected: a 5xx reply to MAIL FROM, RCPT TO, DATA or the end of
	// the data (550 mailbox unavailable, 553 bad address, 554 refused). It
	// will fail the same way next time: the channel is parked with the
	// server's reply as the reason (outbox.OutcomeGone), like a webhook's
	// 410, until the operator fixes the recipient or re-enables it.
	ClassRejected = "rejected"
	// ClassTransient: a 4xx reply, a dropped connection, a timeout, a
	// relay that is down. Retried with backoff.
	ClassTransient = "transient"
	// ClassAuth: the relay refused our credentials (530, 534, 535, 538)
	// or offers no mechanism we can use. Retried: see the package doc.
	ClassAuth = "auth"
	// ClassTLS: the TLS handshake failed (untrusted or expired
	// certificate, wrong name) or the relay offers no STARTTLS. Retried.
	ClassTLS = "tls"
	// ClassRefused: the relay refused the session itself (5xx greeting or
	// EHLO: "554 no service for you"). Retried.
	ClassRefused = "refused"
	// ClassMessage: the message could not be built. Retried.
	ClassMessage = "message"
)

// Failure is a failed send with its class; it is the Err of the
// outbox.Result, so the audit log and the worker's log line carry the
// class and the relay's reply word for word.
type Failure struct {
	Class string
	Err   error
}

func (f *Failure) Error() string {
	what := map[string]string{
		ClassRejected:  "permanent failure, channel parked",
		ClassTransient: "temporary failure",
		ClassAuth:      "relay configuration: authentication refused (check smtp.username and smtp.password)",
		ClassTLS:       "relay configuration: TLS failed (check smtp.tls and the relay's certificate)",
		ClassRefused:   "relay configuration: session refused",
		ClassMessage:   "cannot build the message",
	}[f.Class]
	return what + ": " + f.Err.Error()
}

func (f *Failure) Unwrap() error { return f.Err }

// Config reports whether the failure is the relay's configuration (or
// ours): the same for every recipient, fixed by an operator.
func (f *Failure) Config() bool {
	return f.Class == ClassAuth || f.Class == ClassTLS || f.Class == ClassRefused
}

// authCodes are the replies that mean "not with these credentials"
// (RFC 4954): authentication required, too weak, invalid, needs encryption.
var authCodes = map[int]bool{530: true, 534: true, 535: true, 538: true}

// plainReply is err with the relay's reply written as the relay sent it
// ("550 5.1.1 mailbox unavailable"; textproto quotes the text), multi-line
// replies on one line. It unwraps to err.
type plainReply struct {
	msg string
	err error
}

func (p *plainReply) Error() string { return p.msg }
func (p *plainReply) Unwrap() error { return p.err }

func withPlainReply(err error) error {
	var tp *textproto.Error
	if !errors.As(err, &tp) {
		return err
	}
	plain := fmt.Sprintf("%03d %s", tp.Code, strings.ReplaceAll(tp.Msg, "\n", " "))
	return &plainReply{msg: strings.Replace(err.Error(), tp.Error(), plain, 1), err: err}
}

// classifyReply judges a failed command of the mail transaction.
func classifyReply(err error) *Failure {
	err = withPlainReply(err)
	var tp *textproto.Error
	switch {
	case !errors.As(err, &tp):
		return &Failure{Class: ClassTransient, Err: err} // no reply: connection lost
	case authCodes[tp.Code]:
		return &Failure{Class: ClassAuth, Err: err}
	case tp.Code >= 500 && tp.Code < 600:
		return &Failure{Class: ClassRejected, Err: err}
	}
	return &Failure{Class: ClassTransient, Err: err}
}

// classifyDial judges a failure to connect, secure or authenticate.
func classifyDial(err error) *Failure {
	var (
		tp    *textproto.Error
		cv    *tls.CertificateVerificationError
		ua    x509.UnknownAuthorityError
		he    x509.HostnameError
		ci    x509.CertificateInvalidError
		alert tls.AlertError
		rh    tls.RecordHeaderError
		ne    net.Error
	)
	err = withPlainReply(err)
	msg := err.Error()
	switch {
	case errors.As(err, &cv), errors.As(err, &ua), errors.As(err, &he), errors.As(err, &ci),
		errors.As(err, &alert), errors.As(err, &rh), errors.Is(err, smtp.ErrUnencrypted),
		strings.Contains(msg, "does not support STARTTLS"):
		return &Failure{Class: ClassTLS, Err: err}
	case errors.As(err, &ne), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &Failure{Class: ClassTransient, Err: err} // refused, reset, timed out
	case strings.Contains(msg, "SMTP AUTH failed"), errors.As(err, &tp) && authCodes[tp.Code]:
		// Every refusal of the AUTH exchange, 454 "temporary" included (a
		// wrong password gets 454 from some relays): the reply is in err.
		return &Failure{Class: ClassAuth, Err: err}
	case errors.As(err, &tp) && tp.Code >= 400 && tp.Code < 500:
		return &Failure{Class: ClassTransient, Err: err} // 421 service not available
	case errors.As(err, &tp):
		return &Failure{Class: ClassRefused, Err: err}
	case errors.Is(err, gomail.ErrNoSupportedAuthDiscovered), strings.Contains(msg, "does not support SMTP AUTH"):
		return &Failure{Class: ClassAuth, Err: err}
	}
	return &Failure{Class: ClassTransient, Err: err}
}

// joinFailures merges the refusals of several RCPT TO. One temporary
// refusal makes the whole delivery temporary: the next attempt may
// succeed (or leave only the permanent ones, which then park it).
func joinFailures(fs []*Failure) *Failure {
	class := ClassRejected
	msgs := make([]string, 0, len(fs))
	for _, f := range fs {
		msgs = append(msgs, f.Err.Error())
		switch {
		case f.Class == ClassTransient:
			class = ClassTransient
		case f.Class == ClassAuth && class == ClassRejected:
			class = ClassAuth
		}
	}
	if len(fs) == 1 {
		return &Failure{Class: class, Err: fs[0].Err}
	}
	return &Failure{Class: class, Err: errors.New(strings.Join(msgs, "; "))}
}

// Option adds an optional collaborator to a Sender.
type Option func(*options)

type options struct {
	log *slog.Logger
	reg prometheus.Registerer
}

// WithLog logs relay configuration failures (auth, TLS, refused session)
// at error level, once when they start (again every ConfigLogEvery while
// they last) and once when the relay accepts again.
func WithLog(log *slog.Logger) Option { return func(o *options) { o.log = log } }

// WithRegisterer registers jasper_alerting_email_failures_total{class}.
func WithRegisterer(reg prometheus.Registerer) Option { return func(o *options) { o.reg = reg } }

// ConfigLogEvery bounds how often a lasting relay configuration failure is
// logged again.
const ConfigLogEvery = 10 * time.Minute

type watch struct {
	log      *slog.Logger
	failures *prometheus.CounterVec

	mu      sync.Mutex
	class   string // of the configuration failure last logged, "" when none
	since   time.Time
	loggedA time.Time
	count   int
}

func newWatch(o options) (*watch, error) {
	w := &watch{log: o.log, failures: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jasper_alerting_email_failures_total",
		Help: "Failed e-mail sends by class: rejected (channel parked), transient, auth, tls, refused, message.",
	}, []string{"class"})}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	w.log = w.log.With("component", "alerting_email")
	for _, c := range []string{ClassRejected, ClassTransient, ClassAuth, ClassTLS, ClassRefused, ClassMessage} {
		w.failures.WithLabelValues(c)
	}
	if o.reg != nil {
		if err := o.reg.Register(w.failures); err != nil {
			return nil, fmt.Errorf("alerting email metrics: %w", err)
		}
	}
	return w, nil
}

// result turns a failure (nil: sent) into the worker's verdict, counting
// it and logging relay configuration trouble. session says the relay
// accepted our session (connected, secured, authenticated).
func (s *Sender) result(f *Failure, session bool) outbox.Result {
	w := s.watch
	now := time.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if session && (f == nil || !f.Config()) {
		if w.class != "" {
			// The relay took our session again: the configuration
			// trouble is over.
			w.log.Info("smtp_relay_recovered", "host", s.cfg.Host, "port", s.cfg.Port, "was", w.class,
				"failures", w.count, "for", now.Sub(w.since).Round(time.Second).String())
			w.class, w.count = "", 0
		}
	}
	if f == nil {
		return outbox.Result{Outcome: outbox.OutcomeOK}
	}
	w.failures.WithLabelValues(f.Class).Inc()
	if f.Config() {
		if w.class == "" {
			w.since = now
		}
		w.count++
		if w.class != f.Class || now.Sub(w.loggedA) >= ConfigLogEvery {
			w.log.Error("smtp_relay_misconfigured", "host", s.cfg.Host, "port", s.cfg.Port, "class", f.Class,
				"failures", w.count, "err", f.Error())
			w.class, w.loggedA = f.Class, now
		}
	}
	if f.Class == ClassRejected {
		return outbox.Result{Outcome: outbox.OutcomeGone, Err: f}
	}
	return outbox.Result{Outcome: outbox.OutcomeRetry, Err: f}
}
