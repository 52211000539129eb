package demo

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// maxKeptMessages bounds what the mail catcher keeps (oldest dropped).
const maxKeptMessages = 2000

// Mail is one message the catcher received.
type Mail struct {
	Received time.Time `json:"received"`
	From     string    `json:"from"`
	To       []string  `json:"to"`
	Subject  string    `json:"subject"`
	// Text is the text/plain part (cut at 16 KiB).
	Text        string   `json:"text"`
	Attachments []string `json:"attachments,omitempty"`
	Bytes       int      `json:"bytes"`
}

// MailCatcher is a real SMTP server on loopback (github.com/emersion/go-smtp)
// that keeps every message it receives instead of relaying it: the demo's
// mailbox of the CERTs' e-mail alerts. Plaintext and without
// authentication, so it listens on loopback only.
type MailCatcher struct {
	mu    sync.Mutex
	srv   *smtp.Server
	addr  string
	msgs  []Mail
	total int
}

// StartMailCatcher listens on addr (loopback, port 0 for any).
func StartMailCatcher(addr string) (*MailCatcher, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mail catcher: %w", err)
	}
	c := &MailCatcher{addr: ln.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &catcherSession{c: c}, nil }))
	srv.Domain = "localhost"
	srv.ReadTimeout, srv.WriteTimeout = 30*time.Second, 30*time.Second
	srv.MaxMessageBytes = 16 << 20
	srv.MaxRecipients = 100
	c.srv = srv
	go srv.Serve(ln) //nolint:errcheck // returns when closed
	return c, nil
}

// Addr is the listening address.
func (c *MailCatcher) Addr() string { return c.addr }

// Port is the listening port.
func (c *MailCatcher) Port() int {
	a, _ := net.ResolveTCPAddr("tcp", c.addr)
	return a.Port
}

// Messages returns the kept messages, oldest first.
func (c *MailCatcher) Messages() []Mail {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Mail(nil), c.msgs...)
}

// Count is the number of messages received since start.
func (c *MailCatcher) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Stop closes the server; idempotent.
func (c *MailCatcher) Stop() {
	c.mu.Lock()
	srv := c.srv
	c.srv = nil
	c.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
}

func (c *MailCatcher) add(m Mail) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.total++
	c.msgs = append(c.msgs, m)
	if len(c.msgs) > maxKeptMessages {
		c.msgs = append(c.msgs[:0:0], c.msgs[len(c.msgs)-maxKeptMessages:]...)
	}
}

type catcherSession struct {
	c    *MailCatcher
	from string
	to   []string
}

func (s *catcherSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}

func (s *catcherSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.to = append(s.to, to)
	return nil
}

func (s *catcherSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m := parseMail(b)
	m.Received, m.From, m.To, m.Bytes = time.Now(), s.from, append([]string(nil), s.to...), len(b)
	s.c.add(m)
	return nil
}

func (s *catcherSession) Reset()        { s.from, s.to = "", nil }
func (s *catcherSession) Logout() error { return nil }

// parseMail takes the subject, the text/plain part and attachment names out
// of a message; what does not parse is shown raw.
func parseMail(data []byte) Mail {
	const maxText = 16 << 10
	msg, err := mail.ReadMessage(bytes.NewReader(data))
	if err != nil {
		return Mail{Text: cut(string(data), maxText)}
	}
	var m Mail
	dec := new(mime.WordDecoder)
	if s, err := dec.DecodeHeader(msg.Header.Get("Subject")); err == nil {
		m.Subject = s
	} else {
		m.Subject = msg.Header.Get("Subject")
	}
	text, atts, err := textPart(msg.Header.Get("Content-Type"), msg.Header.Get("Content-Transfer-Encoding"), msg.Body, 0)
	if err != nil {
		b, _ := io.ReadAll(msg.Body)
		text = string(b)
	}
	m.Text, m.Attachments = cut(text, maxText), atts
	return m
}

func textPart(ctype, cte string, body io.Reader, depth int) (string, []string, error) {
	mt, params, err := mime.ParseMediaType(ctype)
	if ctype == "" {
		mt, err = "text/plain", nil
	}
	if err != nil {
		return "", nil, err
	}
	if strings.HasPrefix(mt, "multipart/") && depth < 4 {
		mr := multipart.NewReader(body, params["boundary"])
		var text string
		var atts []string
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return text, atts, err
			}
			if fn := p.FileName(); fn != "" {
				atts = append(atts, fn)
				continue
			}
			t, a, err := textPart(p.Header.Get("Content-Type"), p.Header.Get("Content-Transfer-Encoding"), p, depth+1)
			if err == nil && text == "" {
				text = t
			}
			atts = append(atts, a...)
		}
		return text, atts, nil
	}
	if mt != "text/plain" {
		return "", nil, nil
	}
	b, err := io.ReadAll(decodeCTE(cte, body))
	return string(b), nil, err
}

func decodeCTE(cte string, r io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &lineStripper{r: r})
	}
	return r
}

// lineStripper drops CR and LF so base64 bodies wrapped in lines decode.
type lineStripper struct{ r io.Reader }

func (l *lineStripper) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	j := 0
	for _, c := range p[:n] {
		if c != '\r' && c != '\n' {
			p[j] = c
			j++
		}
	}
	return j, err
}

func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "\n[…]"
}
