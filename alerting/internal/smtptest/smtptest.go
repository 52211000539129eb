// Package smtptest runs a real SMTP server (github.com/emersion/go-smtp) on
// loopback for alerting tests: STARTTLS with a test CA, AUTH PLAIN, and a
// record of every message; it can be stopped and restarted on the same
// port to simulate an outage.
package smtptest

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/jasperfed/jasper/alerting/internal/testport"
	"github.com/jasperfed/jasper/internal/pki"
)

// Message is one received message.
type Message struct {
	From string
	To   []string
	Data []byte
	Auth string // user that authenticated
	TLS  bool
}

// Server is a loopback SMTP server.
type Server struct {
	Addr     string
	User     string
	Password string
	// ClientTLS trusts the server certificate.
	ClientTLS *tls.Config

	t      testing.TB
	tlsCfg *tls.Config
	mu     sync.Mutex
	srv    *smtp.Server
	msgs   []Message
}

// Start starts a server on 127.0.0.1:0.
func Start(t testing.TB) *Server {
	t.Helper()
	ca, err := pki.NewCA("smtptest", time.Hour)
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
	s := &Server{t: t, User: "jasper", Password: "s3cret-smtp-pass", tlsCfg: &tls.Config{Certificates: []tls.Certificate{kp}, MinVersion: tls.VersionTLS12},
		ClientTLS: &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS12}}
	ln, err := testport.Listen()
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = ln.Addr().String()
	s.serve(ln)
	t.Cleanup(s.Stop)
	return s
}

// Port returns the listening port.
func (s *Server) Port() int { return s.ln().Port }

func (s *Server) ln() *net.TCPAddr {
	a, _ := net.ResolveTCPAddr("tcp", s.Addr)
	return a
}

func (s *Server) serve(ln net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) { return &session{s: s, c: c}, nil }))
	srv.Domain = "localhost"
	srv.TLSConfig = s.tlsCfg
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	srv.MaxMessageBytes = 10 << 20
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	go srv.Serve(ln) //nolint:errcheck // returns when closed
}

// Stop closes the server (an outage); Restart brings it back.
func (s *Server) Stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

// Restart listens again on the same address.
func (s *Server) Restart() {
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", s.Addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Errorf("smtptest restart: %v", err)
		return
	}
	s.serve(ln)
}

// Messages returns what arrived so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

type session struct {
	s    *Server
	c    *smtp.Conn
	from string
	to   []string
	user string
}

func (x *session) AuthMechanisms() []string { return []string{sasl.Plain} }

func (x *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if username != x.s.User || password != x.s.Password {
			return errors.New("invalid credentials")
		}
		x.user = username
		return nil
	}), nil
}

func (x *session) Mail(from string, _ *smtp.MailOptions) error {
	if x.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	x.from = from
	return nil
}

func (x *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	x.to = append(x.to, to)
	return nil
}

func (x *session) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	_, isTLS := x.c.TLSConnectionState()
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, Message{From: x.from, To: x.to, Data: b, Auth: x.user, TLS: isTLS})
	x.s.mu.Unlock()
	return nil
}

func (x *session) Reset()        { x.from, x.to = "", nil }
func (x *session) Logout() error { return nil }

// Parsed is a received message taken apart.
type Parsed struct {
	Header      mail.Header
	Text        string
	Attachments map[string][]byte
}

// Parse splits a message into headers, the text/plain body and attachments.
func Parse(data []byte) (*Parsed, error) {
	m, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	p := &Parsed{Header: m.Header, Attachments: map[string][]byte{}}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(mt, "multipart/") {
		b, err := decodePart(m.Header.Get("Content-Transfer-Encoding"), m.Body)
		p.Text = string(b)
		return p, err
	}
	return p, walk(multipart.NewReader(m.Body, params["boundary"]), p)
}

func walk(mr *multipart.Reader, p *Parsed) error {
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		mt, params, _ := mime.ParseMediaType(part.Header.Get("Content-Type"))
		if strings.HasPrefix(mt, "multipart/") {
			if err := walk(multipart.NewReader(part, params["boundary"]), p); err != nil {
				return err
			}
			continue
		}
		b, err := decodePart(part.Header.Get("Content-Transfer-Encoding"), part)
		if err != nil {
			return err
		}
		if name := part.FileName(); name != "" {
			p.Attachments[name] = b
		} else if mt == "text/plain" {
			p.Text += string(b)
		}
	}
}
