package dashboards

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

const (
	sessionCookie = "jasper_session"
	csrfHeader    = "X-CSRF-Token"
)

type session struct {
	id      string
	account *Account
	csrf    string
	expires time.Time
}

// sessionStore keeps live sessions in memory, at most max of them.
type sessionStore struct {
	mu   sync.Mutex
	max  int
	ttl  time.Duration
	byID map[string]*session
}

func newSessionStore(max int, ttl time.Duration) *sessionStore {
	return &sessionStore{max: max, ttl: ttl, byID: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

func (st *sessionStore) create(a *Account, now time.Time) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.byID) >= st.max {
		var oldest *session
		for _, s := range st.byID {
			if now.After(s.expires) {
				delete(st.byID, s.id)
				continue
			}
			if oldest == nil || s.expires.Before(oldest.expires) {
				oldest = s
			}
		}
		if len(st.byID) >= st.max && oldest != nil {
			delete(st.byID, oldest.id)
		}
	}
	s := &session{id: randomToken(), account: a, csrf: randomToken(), expires: now.Add(st.ttl)}
	st.byID[s.id] = s
	return s
}

func (st *sessionStore) get(id string, now time.Time) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.byID[id]
	if s == nil {
		return nil
	}
	if now.After(s.expires) {
		delete(st.byID, id)
		return nil
	}
	return s
}

func (st *sessionStore) drop(id string) {
	st.mu.Lock()
	delete(st.byID, id)
	st.mu.Unlock()
}

func (st *sessionStore) clear() {
	st.mu.Lock()
	st.byID = map[string]*session{}
	st.mu.Unlock()
}

// loginLimiter limits login attempts per (client address, account name)
// and per client address (ten times the burst), in bounded memory.
type loginLimiter struct {
	mu       sync.Mutex
	every    time.Duration
	burst    int
	limiters map[string]*rate.Limiter
}

const maxLimiters = 50000

func newLoginLimiter(every time.Duration, burst int) *loginLimiter {
	return &loginLimiter{every: every, burst: burst, limiters: map[string]*rate.Limiter{}}
}

func (l *loginLimiter) get(key string, burst int, now time.Time) *rate.Limiter {
	lim := l.limiters[key]
	if lim == nil {
		if len(l.limiters) >= maxLimiters {
			// Forget limiters that have refilled: they hold no state.
			for k, v := range l.limiters {
				if v.TokensAt(now) >= float64(v.Burst()) {
					delete(l.limiters, k)
				}
			}
		}
		lim = rate.NewLimiter(rate.Every(l.every), burst)
		if len(l.limiters) < maxLimiters {
			l.limiters[key] = lim
		}
	}
	return lim
}

func (l *loginLimiter) allow(ip, user string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	perIP := l.get("ip\x00"+ip, l.burst*10, now)
	perUser := l.get("u\x00"+ip+"\x00"+user, l.burst, now)
	if perUser.TokensAt(now) < 1 || perIP.TokensAt(now) < 1 {
		return false
	}
	perUser.AllowN(now, 1)
	perIP.AllowN(now, 1)
	return true
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// principal is who a request acts for.
type principal struct {
	account *Account
	session *session // nil for bearer tokens
}

func (s *Server) secure(r *http.Request) bool { return r.TLS != nil || s.cfg.SecureCookies }

func (s *Server) setSessionCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: s.secure(r), SameSite: http.SameSiteStrictMode})
}

// authenticated resolves the session cookie or bearer token, and checks
// the CSRF token on state-changing requests made with a cookie.
func (s *Server) authenticated(h func(http.ResponseWriter, *http.Request, *principal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := s.deps.Now()
		if auth := r.Header.Get("Authorization"); auth != "" {
			tok, ok := strings.CutPrefix(auth, "Bearer ")
			a := s.accounts.token(strings.TrimSpace(tok))
			if !ok || a == nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="jasper"`)
				writeError(w, http.StatusUnauthorized, "invalid API token")
				return
			}
			h(w, r, &principal{account: a})
			return
		}
		c, err := r.Cookie(sessionCookie)
		var sess *session
		if err == nil {
			sess = s.sessions.get(c.Value, now)
		}
		if sess == nil {
			writeError(w, http.StatusUnauthorized, "login required")
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			got := r.Header.Get(csrfHeader)
			if subtle.ConstantTimeCompare([]byte(got), []byte(sess.csrf)) != 1 {
				writeError(w, http.StatusForbidden, "missing or wrong CSRF token")
				return
			}
		}
		h(w, r, &principal{account: sess.account, session: sess})
	})
}

type loginRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
}

type meResponse struct {
	User         string       `json:"user"`
	Role         string       `json:"role"`
	Constituency Constituency `json:"constituency"`
	CSRFToken    string       `json:"csrf_token,omitempty"`
	Expires      *time.Time   `json:"expires,omitempty"`
}

func me(p *principal) meResponse {
	m := meResponse{User: p.account.Name, Role: p.account.Role, Constituency: p.account.Constituency}
	if p.session != nil {
		m.CSRFToken = p.session.csrf
		m.Expires = &p.session.expires
	}
	return m
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&req); err != nil || req.User == "" {
		writeError(w, http.StatusBadRequest, "want a JSON body {\"user\":..., \"password\":...}")
		return
	}
	now := s.deps.Now()
	if !s.limiter.allow(clientIP(r), req.User, now) {
		s.metrics.loginLimited.Inc()
		w.Header().Set("Retry-After", "10")
		writeError(w, http.StatusTooManyRequests, "too many login attempts; wait and retry")
		return
	}
	a := s.accounts.check(req.User, req.Password)
	if a == nil {
		s.metrics.loginFailures.Inc()
		s.log.Info("login_failed", "user", req.User, "remote", clientIP(r))
		writeError(w, http.StatusUnauthorized, "wrong user name or password")
		return
	}
	sess := s.sessions.create(a, now)
	s.setSessionCookie(w, r, sess.id, int(s.cfg.SessionTTL.D()/time.Second))
	s.log.Info("login", "user", a.Name, "remote", clientIP(r))
	writeJSON(w, me(&principal{account: a, session: sess}))
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, p *principal) {
	if p.session != nil {
		s.sessions.drop(p.session.id)
	}
	s.setSessionCookie(w, r, "", -1)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, p *principal) {
	writeJSON(w, me(p))
}
