package email_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/jasperfed/jasper/internal/pki"
)

// relay is a real SMTP server (go-smtp on loopback, STARTTLS, AUTH PLAIN)
// whose replies a test scripts: a refusal for MAIL FROM, for one address at
// RCPT TO, or for the end of DATA, each for the next n commands or for
// ever. alerting/internal/smtptest accepts everything; these tests need a
// relay that says no.
type relay struct {
	Addr      string
	User      string
	Password  string
	ClientTLS *tls.Config

	mu    sync.Mutex
	rules map[string]*rule // "mail", "data", or "rcpt <address>"
	msgs  []relayMsg
	seen  map[string]int // commands answered, by rule key
}

type rule struct {
	err *smtp.SMTPError
	n   int // refusals left; < 0: for ever
}

type relayMsg struct {
	From string
	To   []string
	Data []byte
}

func startRelay(t testing.TB) *relay {
	t.Helper()
	ca, err := pki.NewCA("relaytest", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "smtp"}, DNSNames: []string{"localhost"},
		IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tls.X509KeyPair(is.CertPEM, is.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	r := &relay{User: "jasper", Password: "relay-pass-7", rules: map[string]*rule{}, seen: map[string]int{},
		ClientTLS: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.Addr = ln.Addr().String()
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &relaySession{r: r}, nil }))
	srv.Domain = "localhost"
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12}
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	go srv.Serve(ln) //nolint:errcheck // returns when closed
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *relay) Port() int { return r.ln().Port }

func (r *relay) ln() *net.TCPAddr {
	a, _ := net.ResolveTCPAddr("tcp", r.Addr)
	return a
}

// Refuse makes the relay answer code (with enhanced code enh and text)
// to the next n commands of key ("mail", "data", "rcpt <address>"); n < 0
// for ever, 0 clears the rule.
func (r *relay) Refuse(key string, n, code int, enh smtp.EnhancedCode, text string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n == 0 {
		delete(r.rules, key)
		return
	}
	r.rules[key] = &rule{err: &smtp.SMTPError{Code: code, EnhancedCode: enh, Message: text}, n: n}
}

func (r *relay) answer(key string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[key]++
	ru := r.rules[key]
	if ru == nil {
		return nil
	}
	if ru.n > 0 {
		ru.n--
		if ru.n == 0 {
			delete(r.rules, key)
		}
	}
	return ru.err
}

// SetPassword changes the password the relay accepts.
func (r *relay) SetPassword(p string) {
	r.mu.Lock()
	r.Password = p
	r.mu.Unlock()
}

// Seen counts the commands of key the relay answered.
func (r *relay) Seen(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

// Messages returns the accepted messages.
func (r *relay) Messages() []relayMsg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]relayMsg(nil), r.msgs...)
}

// To returns the accepted messages that had addr among their recipients.
func (r *relay) To(addr string) []relayMsg {
	var out []relayMsg
	for _, m := range r.Messages() {
		for _, a := range m.To {
			if strings.EqualFold(a, addr) {
				out = append(out, m)
			}
		}
	}
	return out
}

type relaySession struct {
	r    *relay
	user string
	from string
	to   []string
}

func (x *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *relaySession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, username, password string) error {
		x.r.mu.Lock()
		ok := username == x.r.User && password == x.r.Password
		x.r.mu.Unlock()
		if !ok {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
		}
		x.user = username
		return nil
	}), nil
}

func (x *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if x.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required"}
	}
	if err := x.r.answer("mail"); err != nil {
		return err
	}
	x.from = from
	return nil
}

func (x *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if err := x.r.answer("rcpt " + strings.ToLower(to)); err != nil {
		return err
	}
	x.to = append(x.to, to)
	return nil
}

func (x *relaySession) Data(rd io.Reader) error {
	b, err := io.ReadAll(rd)
	if err != nil {
		return err
	}
	if err := x.r.answer("data"); err != nil {
		return err
	}
	x.r.mu.Lock()
	x.r.msgs = append(x.r.msgs, relayMsg{From: x.from, To: x.to, Data: b})
	x.r.mu.Unlock()
	return nil
}

func (x *relaySession) Reset()        { x.from, x.to = "", nil }
func (x *relaySession) Logout() error { return nil }
