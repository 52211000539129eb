// Package alerting delivers the federation's findings to the people who act
// on them: the CERT of the infected host's country, organisations that
// registered their address blocks, and early-warning subscribers.
//
// It wires the parts: the recipients directory (alerting/directory), the
// replicated outbox module that routes, groups and keeps every delivery
// until done (alerting/outbox, registered with the raft store), the
// leader's delivery worker with its e-mail (alerting/email) and webhook
// (alerting/webhook) senders, the read-only TAXII 2.1 server
// (alerting/taxii) and the admin API (AdminHandler).
//
// Hub wiring, in order:
//
//	a, err := alerting.New(cfg, alerting.Deps{Store: st, Log: log, Registerer: reg, Node: nodeID})
//	st.RegisterModule(a.Module())           // before the store starts
//	det.OnFinding(a.Module().ObserveFinding) // hub/detect findings, inside the FSM apply
//	a.Start(ctx) ... a.Stop(ctx)            // after the store starts / before it stops
//	mux.Handle("/api/v1/alerting/", a.AdminHandler()) // or set listen: to serve them itself
//	mux.Handle("/taxii2/", a.TAXIIHandler())
package alerting

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jasperfed/jasper/alerting/directory"
	"github.com/jasperfed/jasper/alerting/email"
	"github.com/jasperfed/jasper/alerting/outbox"
	"github.com/jasperfed/jasper/alerting/route"
	"github.com/jasperfed/jasper/alerting/taxii"
	"github.com/jasperfed/jasper/alerting/webhook"
	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/internal/pki"
)

// Config is the "alerting" section of the hub configuration.
type Config struct {
	// RecipientsFile is the recipients directory YAML (resolve it against
	// the config file before New). Every hub must load the same file; admin
	// API changes are replicated on top of it.
	RecipientsFile string              `yaml:"recipients_file"`
	Outbox         outbox.Config       `yaml:"outbox"`
	Worker         outbox.WorkerConfig `yaml:"worker"`
	// SMTP relay; an empty host disables e-mail (e-mail deliveries then
	// wait in the outbox until a relay is configured).
	SMTP email.Config `yaml:"smtp"`
	// SMTPCAFile adds a CA to trust for the relay (besides system roots).
	SMTPCAFile string       `yaml:"smtp_ca_file"`
	TAXII      taxii.Config `yaml:"taxii"`
	// AdminPrefix is where AdminHandler is mounted.
	AdminPrefix string `yaml:"admin_prefix"`
	// Listen, when set, makes Start serve the admin API and TAXII on this
	// address over TLS 1.3 with the hub's certificate (Deps.TLS); client
	// certificates of the federation CA are verified when presented, bearer
	// tokens work without one. Empty: mount the handlers yourself.
	Listen string `yaml:"listen"`
	// InsecurePlaintextForDemo serves Listen without TLS (local demo only).
	InsecurePlaintextForDemo bool `yaml:"insecure_plaintext_for_demo"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{Outbox: outbox.DefaultConfig(), Worker: outbox.DefaultWorkerConfig(), SMTP: email.DefaultConfig(), TAXII: taxii.DefaultConfig(), AdminPrefix: "/api/v1/alerting/"}
}

// Validate names the bad key.
func (c *Config) Validate() error {
	if err := c.Outbox.Validate(); err != nil {
		return fmt.Errorf("outbox.%w", err)
	}
	if err := c.Worker.Validate(); err != nil {
		return fmt.Errorf("worker.%w", err)
	}
	if c.SMTP.Host != "" {
		if err := c.SMTP.Validate(); err != nil {
			return fmt.Errorf("smtp.%w", err)
		}
	}
	if c.AdminPrefix == "" || c.AdminPrefix[0] != '/' || c.AdminPrefix[len(c.AdminPrefix)-1] != '/' {
		return errors.New("admin_prefix: must start and end with /")
	}
	return nil
}

// LogValue implements slog.LogValuer (no secrets).
func (c Config) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("recipients_file", c.RecipientsFile)}
	if c.SMTP.Host != "" {
		attrs = append(attrs, slog.Any("smtp", c.SMTP))
	}
	return slog.GroupValue(attrs...)
}

// Deps are the collaborators.
type Deps struct {
	// Store is the raft store (Propose, IsLeader).
	Store outbox.Proposer
	Log   *slog.Logger
	// Registerer for metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// Node names this hub in the audit log.
	Node string
	// Directory overrides RecipientsFile (tests, embedded demo).
	Directory *directory.Directory
	// HTTPClient for webhooks (nil: default transport, system roots).
	HTTPClient *http.Client
	// SMTPTLS overrides the relay TLS configuration.
	SMTPTLS *tls.Config
	// Authorize decides admin API access (nil: DefaultAuthorize).
	Authorize Authorizer
	// TLS is the hub's certificate and the federation CA, for Listen.
	TLS pki.Files
}

// Alerting is the assembled alerting component; it implements the hub's
// Service interface (Start, Stop).
type Alerting struct {
	cfg    Config
	log    *slog.Logger
	module *outbox.Module
	worker *outbox.Worker
	taxii  *taxii.Server
	admin  http.Handler
	tls    pki.Files
	store  outbox.Proposer

	srv      *http.Server
	addr     net.Addr
	stopOnce sync.Once
}

// New builds everything; nothing runs until Start.
func New(cfg Config, deps Deps) (*Alerting, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("alerting config: %w", err)
	}
	if deps.Store == nil {
		return nil, errors.New("alerting: store required")
	}
	log := deps.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var dir directory.Directory
	switch {
	case deps.Directory != nil:
		dir = deps.Directory.Clone()
		if err := dir.Validate(); err != nil {
			return nil, fmt.Errorf("alerting recipients: %w", err)
		}
	case cfg.RecipientsFile != "":
		d, err := directory.Load(cfg.RecipientsFile)
		if err != nil {
			return nil, err
		}
		dir = d
	default:
		dir = directory.Directory{Defaults: directory.DefaultRouting()}
	}
	m, err := outbox.New(cfg.Outbox, dir, log)
	if err != nil {
		return nil, err
	}
	senders := map[string]outbox.Sender{"webhook": webhook.New(deps.HTTPClient)}
	if cfg.SMTP.Host != "" {
		tc := deps.SMTPTLS
		if tc == nil {
			tc = &tls.Config{ServerName: cfg.SMTP.Host, MinVersion: tls.VersionTLS12}
			if cfg.SMTPCAFile != "" {
				pem, err := os.ReadFile(cfg.SMTPCAFile)
				if err != nil {
					return nil, fmt.Errorf("alerting smtp_ca_file: %w", err)
				}
				pool, err := x509.SystemCertPool()
				if err != nil {
					pool = x509.NewCertPool()
				}
				if !pool.AppendCertsFromPEM(pem) {
					return nil, fmt.Errorf("alerting smtp_ca_file %s: no certificate", cfg.SMTPCAFile)
				}
				tc.RootCAs = pool
			}
		}
		s, err := email.New(cfg.SMTP, tc, email.WithLog(log), email.WithRegisterer(deps.Registerer))
		if err != nil {
			return nil, err
		}
		senders["email"] = s
	}
	w, err := outbox.NewWorker(cfg.Worker, outbox.WorkerDeps{Module: m, Store: deps.Store, Senders: senders, Log: log, Registerer: deps.Registerer, Node: deps.Node})
	if err != nil {
		return nil, err
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_alerting_outbox_pending", Help: "Deliveries in the replicated outbox not yet delivered (incl. failed ones kept for the operator)."},
				func() float64 { return float64(len(m.Deliveries(""))) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "jasper_alerting_channels_disabled", Help: "Channels parked after an endpoint answered 410 Gone."},
				func() float64 { return float64(len(m.DisabledChannels())) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jasper_alerting_deliveries_failed_total", Help: "Deliveries given up after retry_for (replicated count)."},
				func() float64 { return float64(m.Stats().Failed) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "jasper_alerting_findings_shed_total", Help: "Findings not held because a recipient had max_alerts_per_recipient open (replicated count)."},
				func() float64 { return float64(m.Stats().Shed) }),
		} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("alerting metrics: %w", err)
			}
		}
	}
	tx, err := taxii.New(cfg.TAXII, m, log)
	if err != nil {
		return nil, err
	}
	auth := deps.Authorize
	if auth == nil {
		auth = DefaultAuthorize(m)
	}
	if cfg.Listen != "" && !cfg.InsecurePlaintextForDemo {
		if err := deps.TLS.Validate("tls"); err != nil {
			return nil, fmt.Errorf("alerting listen: %w", err)
		}
	}
	a := &Alerting{cfg: cfg, log: log.With("component", "alerting"), module: m, worker: w, taxii: tx, tls: deps.TLS, store: deps.Store}
	a.admin = newAdmin(cfg.AdminPrefix, m, deps.Store, auth, a.log)
	return a, nil
}

// Module is the FSM module to register with the raft store.
func (a *Alerting) Module() *outbox.Module { return a.module }

// Start runs the delivery worker (it acts only while this hub leads) and,
// with Listen set, the HTTPS server of the admin API and TAXII.
func (a *Alerting) Start(ctx context.Context) error {
	if a.cfg.Listen != "" {
		if err := a.listen(); err != nil {
			return err
		}
	}
	a.worker.Start(context.WithoutCancel(ctx))
	a.log.Info("alerting_started", "config", a.cfg, "listen", a.Addr())
	return nil
}

func (a *Alerting) listen() error {
	mux := http.NewServeMux()
	mux.Handle(a.cfg.AdminPrefix, a.admin)
	mux.Handle(a.cfg.TAXII.Prefix, a.taxii)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: time.Minute, WriteTimeout: 5 * time.Minute,
		ErrorLog: slog.NewLogLogger(a.log.Handler(), slog.LevelWarn)}
	ln, err := net.Listen("tcp", a.cfg.Listen)
	if err != nil {
		return fmt.Errorf("alerting listen %s: %w", a.cfg.Listen, err)
	}
	if !a.cfg.InsecurePlaintextForDemo {
		tc, err := serverTLS(a.tls)
		if err != nil {
			ln.Close()
			return err
		}
		ln = tls.NewListener(ln, tc)
	} else {
		a.log.Warn("alerting_plaintext", "listen", ln.Addr().String(), "reason", "insecure_plaintext_for_demo")
	}
	a.srv, a.addr = srv, ln.Addr()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("alerting_http_failed", "err", err)
		}
	}()
	return nil
}

// serverTLS is TLS 1.3 with the hub's certificate; client certificates of
// the federation CA are verified when given (bearer tokens need none).
func serverTLS(f pki.Files) (*tls.Config, error) {
	kp, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("alerting tls: %w", err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("alerting tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("alerting tls ca %s: no certificate", f.CA)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{kp}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}, nil
}

// Addr is the address Listen bound (nil when not serving).
func (a *Alerting) Addr() net.Addr { return a.addr }

// Stop ends the HTTP server and the worker; idempotent.
func (a *Alerting) Stop(ctx context.Context) error {
	var err error
	a.stopOnce.Do(func() {
		if a.srv != nil {
			err = a.srv.Shutdown(ctx)
		}
		a.worker.Stop()
	})
	return err
}

// TAXIIHandler serves TAXII 2.1 under cfg.TAXII.Prefix ("/taxii2/").
func (a *Alerting) TAXIIHandler() http.Handler { return a.taxii }

// AdminHandler serves the admin API under cfg.AdminPrefix.
func (a *Alerting) AdminHandler() http.Handler { return a.admin }

// Acknowledge acknowledges a finding for every recipient holding it (no
// more reminders); user and note go to the log. With Silence it makes
// *Alerting a dashboards.Actions.
func (a *Alerting) Acknowledge(ctx context.Context, findingID, user, note string) error {
	_, err := a.store.Propose(ctx, a.module.Name(), outbox.Encode(outbox.Command{Op: outbox.OpAck, Ack: &outbox.AckCommand{FindingID: findingID, By: user}}))
	if errors.Is(err, outbox.ErrNotFound) {
		// No recipient holds it: the dashboards answer 409 with a message
		// instead of a failed query.
		return fmt.Errorf("acknowledge %s: %w (%w)", findingID, dashboards.ErrNotRouted, err)
	}
	if err != nil {
		return fmt.Errorf("acknowledge %s: %w", findingID, err)
	}
	a.log.Info("finding_acknowledged", "finding", findingID, "by", user, "note", note)
	return nil
}

// Silence mutes a finding for every recipient until the given time.
func (a *Alerting) Silence(ctx context.Context, findingID, user string, until time.Time, note string) error {
	s := &route.Silence{ID: newID(), FindingID: findingID, StartsMs: time.Now().UnixMilli(), EndsMs: until.UnixMilli(), CreatedBy: user, Comment: note}
	if err := s.Validate(); err != nil {
		return fmt.Errorf("silence %s: %w", findingID, err)
	}
	if _, err := a.store.Propose(ctx, a.module.Name(), outbox.Encode(outbox.Command{Op: outbox.OpPutSilence, Silence: s})); err != nil {
		return fmt.Errorf("silence %s: %w", findingID, err)
	}
	return nil
}
