// Package email delivers notifications over SMTP with
// github.com/wneessen/go-mail: a plain-text body a person reads first, the
// evidence as a CSV attachment (IntelMQ field names), the STIX bundle too
// when the recipient prefers STIX, the ticket id in the subject, and
// Auto-Submitted: auto-generated. The delivery id is the Message-ID and the
// X-Jasper-Delivery-Id header, the same on every retry, so a receiving
// ticket system can drop duplicates.
//
// With a PGP key configured the text body is clearsigned (inline OpenPGP,
// RFC 4880 section 7) and names the SHA-256 of the CSV attachment, so the
// signature covers the evidence too. PGP/MIME (RFC 3156) is not
// implemented.
//
// # Failures
//
// go-mail connects, secures and authenticates the session; Send then runs
// the mail transaction itself so that each reply is judged where it came
// (see the Class constants):
//
//   - A 5xx reply to MAIL FROM, RCPT TO, DATA or the end of the data is
//     permanent (550 mailbox unavailable, 553, 554): the result is
//     outbox.OutcomeGone, so the worker parks the recipient's e-mail
//     channel with the reply as the reason (audit log, channels/disabled,
//     jasper_alerting_attempts_total{outcome="disabled"}) and keeps the
//     delivery, as for a webhook's 410. Every address is tried, so the
//     reason names each refused one. The message goes to all of a
//     recipient's addresses or to none: one refused address parks the
//     channel until the operator corrects the recipient (which clears the
//     mark) or re-enables it.
//   - A 4xx reply, a lost connection, a timeout or a relay that is down is
//     retried with backoff; one 4xx among refused addresses makes the whole
//     attempt a retry.
//   - Authentication refused (530, 534, 535, 538), TLS failures and a
//     refused session (5xx greeting or EHLO) are configuration errors of
//     the relay, the same for every recipient. They are retried, not
//     parked: parking is per recipient channel, and the fix (a password, a
//     certificate, the relay's own settings) is not a directory change, so
//     parking would leave every recipient's channel to re-enable by hand
//     after the fix, while retrying resumes delivery on its own. The
//     operator sees them as an error-level log line smtp_relay_misconfigured
//     (WithLog; when they start, every ConfigLogEvery while they last,
//     smtp_relay_recovered when they end), as
//     jasper_alerting_email_failures_total{class="auth"|"tls"|"refused"}
//     (WithRegisterer), and in each attempt's audit row, whose error starts
//     "relay configuration:". Like any retry they give up after the
//     outbox's retry_for.
package email

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	gomail "github.com/wneessen/go-mail"
	"github.com/wneessen/go-mail/smtp"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/intelmq"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	"github.com/jasperfed/jasper/alerting/stix"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// TLS modes.
const (
	TLSStartTLS = "starttls" // STARTTLS required (default)
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
	TLSNone     = "none"     // plaintext: only for a local demo, asked for by name
)

// Config is the SMTP relay.
type Config struct {
	Host     string           `yaml:"host"`
	Port     int              `yaml:"port"`
	TLS      string           `yaml:"tls"`
	Username string           `yaml:"username"`
	Password directory.Secret `yaml:"password"`
	From     string           `yaml:"from"`
	// ReplyTo, when set, is where humans answer (the coordinator's desk).
	ReplyTo string             `yaml:"reply_to"`
	Timeout directory.Duration `yaml:"timeout"`
	// PGPKeyFile, when set, is an ASCII-armoured OpenPGP private key that
	// clearsigns every body; PGPPassphrase unlocks it if it is protected.
	PGPKeyFile    string           `yaml:"pgp_key_file"`
	PGPPassphrase directory.Secret `yaml:"pgp_passphrase"`
}

// LogValue implements slog.LogValuer without the password.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("host", c.Host), slog.Int("port", c.Port), slog.String("tls", c.TLS),
		slog.String("username", c.Username), slog.String("from", c.From))
}

// DefaultConfig: STARTTLS on the submission port.
func DefaultConfig() Config {
	return Config{Port: 587, TLS: TLSStartTLS, Timeout: directory.Duration(30 * time.Second)}
}

// Validate names the bad key.
func (c *Config) Validate() error {
	if c.Host == "" {
		return errors.New("host: required")
	}
	if c.Port <= 0 || c.Port > 65535 {
		return errors.New("port: out of range")
	}
	switch c.TLS {
	case TLSStartTLS, TLSImplicit, TLSNone:
	default:
		return fmt.Errorf("tls: %q is not starttls, tls or none", c.TLS)
	}
	if a, err := mail.ParseAddress(c.From); err != nil || a.Address == "" {
		return fmt.Errorf("from: %q is not an e-mail address", c.From)
	}
	if c.ReplyTo != "" {
		if _, err := mail.ParseAddress(c.ReplyTo); err != nil {
			return fmt.Errorf("reply_to: %q is not an e-mail address", c.ReplyTo)
		}
	}
	if c.Username == "" && c.Password != "" {
		return errors.New("username: required with a password")
	}
	if c.Timeout <= 0 {
		return errors.New("timeout: must be positive")
	}
	return nil
}

// Sender sends e-mail deliveries; it implements outbox.Sender.
type Sender struct {
	cfg    Config
	tlsCfg *tls.Config
	domain string
	signer *packet.PrivateKey
	watch  *watch
}

// New builds a sender. tlsCfg verifies the relay (nil: system roots with
// the relay's host name); opts add a logger and a metrics registerer.
func New(cfg Config, tlsCfg *tls.Config, opts ...Option) (*Sender, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alerting email: %w", err)
	}
	a, _ := mail.ParseAddress(cfg.From)
	_, domain, _ := strings.Cut(a.Address, "@")
	if tlsCfg == nil {
		tlsCfg = &tls.Config{ServerName: cfg.Host, MinVersion: tls.VersionTLS12}
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	w, err := newWatch(o)
	if err != nil {
		return nil, err
	}
	s := &Sender{cfg: cfg, tlsCfg: tlsCfg, domain: domain, watch: w}
	if cfg.PGPKeyFile != "" {
		k, err := loadSigner(cfg.PGPKeyFile, cfg.PGPPassphrase)
		if err != nil {
			return nil, fmt.Errorf("alerting email pgp_key_file: %w", err)
		}
		s.signer = k
	}
	return s, nil
}

func loadSigner(path string, pass directory.Secret) (*packet.PrivateKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	ring, err := openpgp.ReadArmoredKeyRing(f)
	if err != nil {
		return nil, err
	}
	for _, e := range ring {
		k := e.PrivateKey
		if k == nil || !k.CanSign() {
			continue
		}
		if k.Encrypted {
			if err := k.Decrypt([]byte(pass.Reveal())); err != nil {
				return nil, fmt.Errorf("unlock key: %w", err)
			}
		}
		return k, nil
	}
	return nil, errors.New("no private signing key in the file")
}

// Send delivers one task. It speaks SMTP itself after go-mail has
// connected, secured and authenticated the session, so each reply is
// judged where it came: see Classify for which failures park the channel
// and which are retried.
func (s *Sender) Send(ctx context.Context, t *outbox.Task) outbox.Result {
	msg, err := s.Message(t)
	if err != nil {
		return s.result(&Failure{Class: ClassMessage, Err: err}, false)
	}
	opts := []gomail.Option{gomail.WithPort(s.cfg.Port), gomail.WithTimeout(s.cfg.Timeout.D()), gomail.WithTLSConfig(s.tlsCfg)}
	switch s.cfg.TLS {
	case TLSStartTLS:
		opts = append(opts, gomail.WithTLSPolicy(gomail.TLSMandatory))
	case TLSImplicit:
		opts = append(opts, gomail.WithSSL())
	case TLSNone:
		opts = append(opts, gomail.WithTLSPolicy(gomail.NoTLS))
	}
	if s.cfg.Username != "" {
		opts = append(opts, gomail.WithSMTPAuth(gomail.SMTPAuthAutoDiscover),
			gomail.WithUsername(s.cfg.Username), gomail.WithPassword(s.cfg.Password.Reveal()))
	}
	c, err := gomail.NewClient(s.cfg.Host, opts...)
	if err != nil {
		return s.result(&Failure{Class: ClassMessage, Err: fmt.Errorf("smtp client: %w", err)}, false)
	}
	sc, err := c.DialToSMTPClientWithContext(ctx)
	if err != nil {
		return s.result(classifyDial(fmt.Errorf("smtp %s:%d: %w", s.cfg.Host, s.cfg.Port, err)), false)
	}
	// The send timeout bounds the whole conversation, not only the dial.
	stop := context.AfterFunc(ctx, func() { _ = sc.Close() })
	defer func() {
		stop()
		_ = sc.Quit()
		_ = sc.Close()
	}()
	if f := s.transaction(sc, msg); f != nil {
		if ctx.Err() != nil && f.Class != ClassRejected {
			f = &Failure{Class: ClassTransient, Err: fmt.Errorf("%w (%w)", f.Err, ctx.Err())}
		}
		return s.result(f, true)
	}
	return s.result(nil, true)
}

// transaction runs MAIL FROM, one RCPT TO per address, DATA and the
// message. Every RCPT is tried, so the reason names each refused address.
func (s *Sender) transaction(sc *smtp.Client, msg *gomail.Msg) *Failure {
	at := fmt.Sprintf("smtp %s:%d", s.cfg.Host, s.cfg.Port)
	from, err := msg.GetSender(false)
	if err != nil {
		return &Failure{Class: ClassMessage, Err: fmt.Errorf("sender: %w", err)}
	}
	rcpts, err := msg.GetRecipients()
	if err != nil {
		return &Failure{Class: ClassMessage, Err: fmt.Errorf("recipients: %w", err)}
	}
	if err := sc.Mail(from); err != nil {
		return classifyReply(fmt.Errorf("%s: MAIL FROM:%s: %w", at, from, err))
	}
	var fails []*Failure
	for _, r := range rcpts {
		if err := sc.Rcpt(r); err != nil {
			fails = append(fails, classifyReply(fmt.Errorf("%s: RCPT TO:%s: %w", at, r, err)))
		}
	}
	if len(fails) > 0 {
		_ = sc.Reset()
		return joinFailures(fails)
	}
	w, err := sc.Data()
	if err != nil {
		return classifyReply(fmt.Errorf("%s: DATA: %w", at, err))
	}
	if _, err := msg.WriteTo(w); err != nil {
		return &Failure{Class: ClassTransient, Err: fmt.Errorf("%s: write message: %w", at, err)}
	}
	if err := w.Close(); err != nil {
		return classifyReply(fmt.Errorf("%s: end of DATA: %w", at, err))
	}
	return nil
}

// Message builds the e-mail of a task.
func (s *Sender) Message(t *outbox.Task) (*gomail.Msg, error) {
	m := gomail.NewMsg()
	if err := m.From(s.cfg.From); err != nil {
		return nil, fmt.Errorf("from: %w", err)
	}
	if err := m.To(t.Recipient.Emails...); err != nil {
		return nil, fmt.Errorf("to: %w", err)
	}
	if s.cfg.ReplyTo != "" {
		if err := m.ReplyTo(s.cfg.ReplyTo); err != nil {
			return nil, fmt.Errorf("reply-to: %w", err)
		}
	}
	m.Subject(Subject(t))
	m.SetMessageIDWithValue(t.Delivery.ID + "@" + s.domain)
	m.SetDateWithValue(time.UnixMilli(t.CreatedMs))
	m.SetGenHeader("Auto-Submitted", "auto-generated")
	m.SetGenHeader("X-Auto-Response-Suppress", "All")
	m.SetGenHeader(HeaderDeliveryID, t.Delivery.ID)
	m.SetGenHeader(HeaderTicket, t.Ticket)
	csvb, err := CSV(t)
	if err != nil {
		return nil, err
	}
	body := Body(t)
	if s.signer != nil {
		sum := sha256.Sum256(csvb)
		body += fmt.Sprintf("\nSHA-256 of %s-evidence.csv: %s\n", t.Ticket, hex.EncodeToString(sum[:]))
		var b bytes.Buffer
		w, err := clearsign.Encode(&b, s.signer, &packet.Config{DefaultHash: crypto.SHA256})
		if err != nil {
			return nil, fmt.Errorf("pgp sign: %w", err)
		}
		if _, err := io.WriteString(w, body); err != nil {
			return nil, fmt.Errorf("pgp sign: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("pgp sign: %w", err)
		}
		body = b.String()
	}
	m.SetBodyString(gomail.TypeTextPlain, body)
	if err := m.AttachReader(fmt.Sprintf("%s-evidence.csv", t.Ticket), bytes.NewReader(csvb), gomail.WithFileContentType("text/csv")); err != nil {
		return nil, fmt.Errorf("attach csv: %w", err)
	}
	if t.Recipient.Format == directory.FormatSTIX {
		mk, err := stix.TLP(t.Recipient.TLP, t.Recipient.TLPVersion)
		if err != nil {
			return nil, err
		}
		var fs []*jasperv1.Finding
		for _, it := range t.Items {
			fs = append(fs, it.Finding)
		}
		b, err := json.MarshalIndent(stix.Merge(stix.BundleID(t.Delivery.ID), fs, mk), "", " ")
		if err != nil {
			return nil, err
		}
		if err := m.AttachReader(t.Ticket+"-stix.json", bytes.NewReader(b), gomail.WithFileContentType("application/stix+json;version=2.1")); err != nil {
			return nil, fmt.Errorf("attach stix: %w", err)
		}
	}
	return m, nil
}

// Headers that carry the idempotency id and ticket.
const (
	HeaderDeliveryID = "X-Jasper-Delivery-Id"
	HeaderTicket     = "X-Jasper-Ticket"
)

// Subject is "[JSP-000123] jasper: 2 new infected hosts (DE)".
func Subject(t *outbox.Task) string {
	counts := map[string]int{}
	ccs := map[string]bool{}
	for _, it := range t.Items {
		counts[string(it.Kind)+" "+noun(it.Finding.GetType())]++
		if cc := it.Finding.GetSrcCountry(); cc != "" {
			ccs[cc] = true
		}
	}
	var parts []string
	for _, k := range sortedKeys(counts) {
		kind, what, _ := strings.Cut(k, " ")
		n := counts[k]
		if n > 1 {
			what += "s"
		}
		parts = append(parts, fmt.Sprintf("%d %s %s", n, kind, what))
	}
	s := fmt.Sprintf("[%s] jasper: %s", t.Ticket, strings.Join(parts, ", "))
	if len(ccs) > 0 && len(ccs) <= 3 {
		s += " (" + strings.Join(sortedKeys(ccs), ", ") + ")"
	}
	return s
}

func noun(t jasperv1.FindingType) string {
	switch t {
	case jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:
		return "infected host"
	case jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:
		return "DoS victim"
	case jasperv1.FindingType_FINDING_TYPE_PORT_SURGE:
		return "port surge"
	case jasperv1.FindingType_FINDING_TYPE_NEW_PORT:
		return "new port"
	case jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE:
		return "fingerprint surge"
	case jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE:
		return "country surge"
	}
	return "finding"
}

func ts(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04 UTC")
}

// Body is the plain text a person reads first.
func Body(t *outbox.Task) string {
	var b strings.Builder
	name := t.Recipient.Name
	if name == "" {
		name = t.Recipient.ID
	}
	fmt.Fprintf(&b, "Ticket %s for %s\n\n", t.Ticket, name)
	var hosts, warnings []outbox.TaskItem
	for _, it := range t.Items {
		if route.IsHostFinding(it.Finding.GetType()) {
			hosts = append(hosts, it)
		} else {
			warnings = append(warnings, it)
		}
	}
	if len(hosts) > 0 {
		fmt.Fprintf(&b, "Hosts in your constituency sent packets into the darknets of the jasper federation.\n"+
			"A darknet is unused address space with no services: a host that scans it is almost surely\n"+
			"infected; a host answering into it (SYN-ACK, RST, ICMP errors) is the victim of a DoS attack\n"+
			"with spoofed sources. Please notify the owners.\n\n")
		w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(w, "STATUS\tADDRESS\tASN\tCC\tWHAT\tFIRST SEEN\tLAST SEEN\tPACKETS\tPORTS\tTOOL")
		for _, it := range hosts {
			f := it.Finding
			ev := intelmq.FromFinding(f, string(it.Kind), t.Ticket, t.CreatedMs)
			fmt.Fprintf(w, "%s\t%v\t%v\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", it.Kind, ev["source.ip"], f.GetSrcAsn(), f.GetSrcCountry(),
				noun(f.GetType()), ts(f.GetFirstSeenMs()), ts(f.GetLastSeenMs()), f.GetPackets(), ports(f.GetPorts()), strings.Join(intelmq.Fingerprints(f), ","))
		}
		w.Flush()
		b.WriteString("\n")
	}
	if len(warnings) > 0 {
		b.WriteString("Early warnings from the federation's darknets:\n\n")
		for _, it := range warnings {
			f := it.Finding
			fmt.Fprintf(&b, "- %s %s", it.Kind, noun(f.GetType()))
			if f.GetPort() != 0 {
				fmt.Fprintf(&b, " on %s/%d", intelmq.Transport(f.GetProtocol()), f.GetPort())
			}
			if f.GetFingerprint() != "" {
				fmt.Fprintf(&b, " of %s", f.GetFingerprint())
			}
			if f.GetCountry() != "" {
				fmt.Fprintf(&b, " in %s", f.GetCountry())
			}
			fmt.Fprintf(&b, ": %.0f observed against a baseline of %.0f (score %.1f)", f.GetObserved(), f.GetBaseline(), f.GetScore())
			if len(f.GetTopCountries()) > 0 {
				fmt.Fprintf(&b, "; top source countries %s", strings.Join(f.GetTopCountries(), ", "))
			}
			b.WriteString("\n")
			if s := f.GetSummary(); s != "" {
				fmt.Fprintf(&b, "  %s\n", s)
			}
		}
		b.WriteString("\n")
	}
	for _, it := range hosts {
		if s := it.Finding.GetSummary(); s != "" {
			ev := intelmq.FromFinding(it.Finding, "", "", 0)
			fmt.Fprintf(&b, "%v: %s\n", ev["source.ip"], s)
		}
	}
	tlp := strings.ToUpper(t.Recipient.TLP)
	if tlp == "" {
		tlp = "AMBER"
	}
	fmt.Fprintf(&b, "\nThe evidence is attached as CSV (IntelMQ field names), one row per finding.\n"+
		"Reply quoting %s; acknowledge a finding through the jasper API to stop reminders.\n"+
		"Delivery id %s. This message was generated automatically.\n\nTLP:%s\n", t.Ticket, t.Delivery.ID, tlp)
	return b.String()
}

func ports(p []uint32) string {
	if len(p) == 0 {
		return "-"
	}
	s := make([]string, 0, len(p))
	for i, x := range p {
		if i == 8 {
			s = append(s, fmt.Sprintf("+%d", len(p)-8))
			break
		}
		s = append(s, fmt.Sprint(x))
	}
	return strings.Join(s, ",")
}

// CSV is the evidence attachment.
func CSV(t *outbox.Task) ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.Write(intelmq.CSVColumns); err != nil {
		return nil, err
	}
	for _, it := range t.Items {
		if err := w.Write(intelmq.FromFinding(it.Finding, string(it.Kind), t.Ticket, t.CreatedMs).CSVRow()); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
