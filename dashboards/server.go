package dashboards

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

//go:embed openapi.yaml
var openapiYAML []byte

//go:embed all:ui
var uiFS embed.FS

// Deps are what the hub gives the dashboards.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Source answers traffic questions (required).
	Source Source
	// Findings lists detector findings; nil shows none.
	Findings FindingsProvider
	// Actions takes acknowledge/silence; nil answers 501.
	Actions Actions
	// STIX exports findings; nil answers 501.
	STIX STIXExporter
	// CertExpiry gives sensor certificate expiry; nil shows none.
	CertExpiry CertExpiry
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Server is the dashboards HTTP handler: the JSON API under /api/ and the
// web UI at /. It is safe for concurrent use.
type Server struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	accounts *accountSet
	sessions *sessionStore
	limiter  *loginLimiter
	handler  http.Handler
	metrics  *metrics
	stopOnce sync.Once
}

type metrics struct {
	requests      *prometheus.CounterVec
	loginFailures prometheus.Counter
	loginLimited  prometheus.Counter
	forbidden     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_dashboards_requests_total", Help: "API requests by endpoint and status code.",
		}, []string{"endpoint", "code"}),
		loginFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_dashboards_login_failures_total", Help: "Failed logins (wrong name or password).",
		}),
		loginLimited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_dashboards_login_limited_total", Help: "Login attempts refused by the rate limit.",
		}),
		forbidden: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "jasper_dashboards_forbidden_total", Help: "Requests for host-level data outside the reader's constituency.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.requests, m.loginFailures, m.loginLimited, m.forbidden} {
			if err := reg.Register(c); err != nil {
				return nil, fmt.Errorf("register dashboards metrics: %w", err)
			}
		}
	}
	return m, nil
}

// New builds the server: it reads the accounts file and checks deps.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dashboards config: %w", err)
	}
	if deps.Source == nil {
		return nil, errors.New("dashboards: deps.Source is required")
	}
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	accts, err := LoadAccounts(cfg.AccountsFile)
	if err != nil {
		return nil, err
	}
	m, err := newMetrics(deps.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg: cfg, deps: deps, log: deps.Log.With("component", "dashboards"),
		accounts: newAccountSet(accts),
		sessions: newSessionStore(cfg.MaxSessions, cfg.SessionTTL.D()),
		limiter:  newLoginLimiter(cfg.LoginInterval.D(), cfg.LoginBurst),
		metrics:  m,
	}
	cop := http.NewCrossOriginProtection()
	for _, o := range cfg.TrustedOrigins {
		if err := cop.AddTrustedOrigin(o); err != nil {
			return nil, fmt.Errorf("dashboards config: trusted_origins: %w", err)
		}
	}
	s.handler = securityHeaders(cop.Handler(s.routes()))
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Stop drops every session. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() { s.sessions.clear() })
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	api := func(pattern, name string, h func(http.ResponseWriter, *http.Request, *principal)) {
		mux.Handle(pattern, s.instrument(name, s.authenticated(h)))
	}
	mux.Handle("GET /api/openapi.yaml", s.instrument("openapi", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		_, _ = w.Write(openapiYAML)
	})))
	mux.Handle("POST /api/login", s.instrument("login", http.HandlerFunc(s.handleLogin)))
	api("POST /api/logout", "logout", s.handleLogout)
	api("GET /api/me", "me", s.handleMe)
	api("GET /api/overview", "overview", s.handleOverview)
	api("GET /api/map", "map", s.handleMap)
	api("GET /api/top/{dim}", "top", s.handleTop)
	api("GET /api/hosts", "hosts", s.handleHosts)
	api("GET /api/early-warning", "early_warning", s.handleEarlyWarning)
	api("GET /api/findings", "findings", s.handleFindings)
	api("GET /api/findings/export.csv", "findings_csv", s.handleFindingsCSV)
	api("GET /api/findings/export.stix", "findings_stix", s.handleFindingsSTIX)
	api("POST /api/findings/{id}/ack", "findings_ack", s.handleAck)
	api("POST /api/findings/{id}/silence", "findings_silence", s.handleSilence)
	api("GET /api/sensors", "sensors", s.handleSensors)
	mux.Handle("/api/", s.instrument("unknown", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no such endpoint")
	})))
	sub, _ := fs.Sub(uiFS, "ui")
	static := http.FileServerFS(sub)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		static.ServeHTTP(w, r)
	}))
	return mux
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		if r.TLS != nil {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		next.ServeHTTP(w, r)
	})
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) instrument(name string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.metrics.requests.WithLabelValues(name, strconv.Itoa(sw.code)).Inc()
	})
}
