// Package enrol is the sensor side of enrolment: it makes the sensor's keys
// locally (they never leave it), exchanges a join token and a CSR for a
// short-lived certificate, stores it, renews it over mTLS before it expires,
// and re-attests with the long-term key when the sensor was offline past its
// certificate's life.
//
// State folder layout (Config.Dir, mode 0700):
//
//	ca.pem            the federation CA, as pinned at enrolment
//	cert.pem          the current certificate
//	key.pem           its key (0600)
//	longterm-key.pem  the long-term key registered at enrolment (0600)
//
// Files are replaced atomically (write, fsync, rename), so the sensor's
// reloading TLS configuration (pki.ClientConfig over Files()) takes a renewed
// certificate on its next handshake without a restart.
package enrol

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// File names inside the state folder.
const (
	CAFile          = "ca.pem"
	CertFile        = "cert.pem"
	KeyFile         = "key.pem"
	LongTermKeyFile = "longterm-key.pem"
)

// Config is the sensor's `enrol:` section.
type Config struct {
	// Hubs are the enrolment addresses (host:port) tried in order.
	Hubs []string `yaml:"hubs"`
	// Dir is the state folder holding the keys and certificates.
	Dir string `yaml:"dir"`
	// RenewAt is the fraction of a certificate's life after which it is
	// renewed (default 2/3).
	RenewAt float64 `yaml:"renew_at"`
	// RotateKey makes a new TLS key at every renewal (default true).
	RotateKey bool `yaml:"rotate_key"`
	// RetryMin and RetryMax bound the back-off between failed renewals.
	RetryMin config.Duration `yaml:"retry_min"`
	RetryMax config.Duration `yaml:"retry_max"`
	// CallTimeout bounds one call to one hub.
	CallTimeout config.Duration `yaml:"call_timeout"`
}

// DefaultConfig returns the defaults, with state in /var/lib/jasper-sensor.
func DefaultConfig() Config {
	return Config{
		Dir:         "/var/lib/jasper-sensor",
		RenewAt:     2.0 / 3.0,
		RotateKey:   true,
		RetryMin:    config.Duration(5 * time.Second),
		RetryMax:    config.Duration(5 * time.Minute),
		CallTimeout: config.Duration(30 * time.Second),
	}
}

// Validate checks the configuration and names the key at fault.
func (c Config) Validate() error {
	switch {
	case len(c.Hubs) == 0:
		return errors.New("enrol.hubs: at least one hub enrolment address is needed")
	case c.Dir == "":
		return errors.New("enrol.dir: missing")
	case c.RenewAt <= 0 || c.RenewAt >= 1:
		return fmt.Errorf("enrol.renew_at: %v is not between 0 and 1", c.RenewAt)
	case c.RetryMin.D() <= 0 || c.RetryMax.D() < c.RetryMin.D():
		return errors.New("enrol.retry_min/retry_max: want 0 < retry_min <= retry_max")
	case c.CallTimeout.D() <= 0:
		return errors.New("enrol.call_timeout: must be positive")
	}
	for i, h := range c.Hubs {
		if h == "" {
			return fmt.Errorf("enrol.hubs[%d]: empty", i)
		}
	}
	return nil
}

// Files names the TLS files in the state folder, for pki.ClientConfig.
func (c Config) Files() pki.Files {
	return pki.Files{
		CA:   filepath.Join(c.Dir, CAFile),
		Cert: filepath.Join(c.Dir, CertFile),
		Key:  filepath.Join(c.Dir, KeyFile),
	}
}

// Refusal is a hub's typed refusal of an enrolment call.
type Refusal struct {
	Reason jasperv1.EnrolRefusalReason
	Detail string
	Hub    string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("hub %s refused: %s: %s", r.Hub, r.Reason, r.Detail)
}

// ReasonOf returns the refusal reason carried by err, or UNSPECIFIED.
func ReasonOf(err error) jasperv1.EnrolRefusalReason {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNSPECIFIED
}

// asRefusal extracts the typed refusal from a gRPC error.
func asRefusal(hub string, err error) *Refusal {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if r, ok := d.(*jasperv1.EnrolRefusal); ok {
			return &Refusal{Reason: r.Reason, Detail: r.Detail, Hub: hub}
		}
	}
	return nil
}

// callHubs runs call against each hub in turn until one answers; a typed
// refusal ends the round at once (another hub would refuse the same way).
func callHubs(ctx context.Context, hubs []string, timeout time.Duration, tc *tls.Config, call func(ctx context.Context, c jasperv1.EnrolServiceClient) error) error {
	var errs []error
	for _, hub := range hubs {
		conn, err := grpc.NewClient(hub, grpc.WithTransportCredentials(credentials.NewTLS(tc.Clone())))
		if err != nil {
			errs = append(errs, fmt.Errorf("hub %s: %w", hub, err))
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err = call(cctx, jasperv1.NewEnrolServiceClient(conn))
		cancel()
		conn.Close()
		if err == nil {
			return nil
		}
		if r := asRefusal(hub, err); r != nil {
			return r
		}
		errs = append(errs, fmt.Errorf("hub %s: %w", hub, err))
		if ctx.Err() != nil {
			break
		}
		if st, ok := status.FromError(err); ok && st.Code() != codes.Unavailable && st.Code() != codes.DeadlineExceeded {
			break
		}
	}
	return errors.Join(errs...)
}

// EnrolOptions is what Enrol needs beyond the configuration.
type EnrolOptions struct {
	// Token is the join token from `jasper ca token`.
	Token string
	// CAPEM is the federation CA the sensor pins (the --ca file).
	CAPEM []byte
	// Country and Prefixes, when set, are what the sensor asks for; they
	// must equal the token's. Empty: take them from the token.
	Country  string
	Prefixes []netip.Prefix
	Log      *slog.Logger
}

// Enrol makes the sensor's keys, enrols with the first hub that answers and
// writes the state folder. It refuses to overwrite an enrolled state folder
// (remove it first to enrol afresh).
func Enrol(ctx context.Context, cfg Config, opt EnrolOptions) (*x509.Certificate, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := opt.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("component", "enrol")
	tok, _, _, err := pki.ParseJoinToken(opt.Token)
	if err != nil {
		return nil, err
	}
	caCert, err := pki.ParseCertPEM(opt.CAPEM)
	if err != nil {
		return nil, fmt.Errorf("pinned CA: %w", err)
	}
	if _, err := pki.VerifyJoinToken(opt.Token, caCert); err != nil {
		return nil, fmt.Errorf("the token was not made by the pinned CA: %w", err)
	}
	id := tok.Identity
	if opt.Country != "" {
		id.Country = opt.Country
	}
	if len(opt.Prefixes) > 0 {
		id.Prefixes = opt.Prefixes
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, LongTermKeyFile)); err == nil {
		return nil, fmt.Errorf("%s is already enrolled (%s exists); remove the folder to enrol afresh", cfg.Dir, LongTermKeyFile)
	}
	tc, err := pki.PinnedClientConfig(opt.CAPEM)
	if err != nil {
		return nil, err
	}
	key, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	ltk, err := pki.GenerateKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	ltPub, err := x509.MarshalPKIXPublicKey(&ltk.PublicKey)
	if err != nil {
		return nil, err
	}
	csrSum := sha256.Sum256(csr)
	ltSig, err := pki.SignBlob(ltk, pki.DomainEnrol, tok.ID, csrSum[:])
	if err != nil {
		return nil, err
	}
	var resp *jasperv1.EnrolResponse
	err = callHubs(ctx, cfg.Hubs, cfg.CallTimeout.D(), tc, func(ctx context.Context, c jasperv1.EnrolServiceClient) error {
		var err error
		resp, err = c.Enrol(ctx, &jasperv1.EnrolRequest{Token: opt.Token, Csr: csr, LongTermPublicKey: ltPub, LongTermSignature: ltSig})
		return err
	})
	if err != nil {
		log.Error("enrol_failed", "sensor", id.ID, "err", err)
		return nil, fmt.Errorf("enrol: %w", err)
	}
	cert, err := checkIssued(resp.Certificate, key, caCert, id)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	ltPEM, err := pki.MarshalKeyPEM(ltk)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFileAtomic(filepath.Join(cfg.Dir, LongTermKeyFile), ltPEM, 0o600); err != nil {
		return nil, fmt.Errorf("write long-term key: %w", err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(cfg.Dir, CAFile), opt.CAPEM, 0o644); err != nil {
		return nil, fmt.Errorf("write CA: %w", err)
	}
	if err := writePair(cfg.Dir, key, resp.Certificate); err != nil {
		return nil, err
	}
	log.Info("sensor_enrolled", "sensor", id.ID, "serial", cert.SerialNumber.String(), "not_after", cert.NotAfter)
	return cert, nil
}

// checkIssued verifies that a returned certificate chains to the pinned CA,
// certifies our key and binds the identity we asked for.
func checkIssued(certPEM []byte, key crypto.Signer, ca *x509.Certificate, want pki.Identity) (*x509.Certificate, error) {
	cert, err := pki.ParseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	// Whether the certificate is current is the TLS handshake's business
	// (a sensor may be handed one by a hub whose clock is off): check that
	// the CA signed it.
	if err := cert.CheckSignatureFrom(ca); err != nil {
		return nil, fmt.Errorf("issued certificate was not signed by the pinned CA: %w", err)
	}
	if pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("issued certificate is not for our key")
	}
	got, err := pki.FromCertificate(cert)
	if err != nil {
		return nil, err
	}
	if !pki.SameScope(got, want) {
		return nil, fmt.Errorf("issued certificate binds %s, we asked for %s", got, want)
	}
	return cert, nil
}

// writePair replaces key.pem then cert.pem. Between the two renames the
// pair does not match; the reloading TLS configuration keeps the last good
// pair until both are in place, and a sensor stopped in between re-attests.
func writePair(dir string, key crypto.Signer, certPEM []byte) error {
	keyPEM, err := pki.MarshalKeyPEM(key)
	if err != nil {
		return err
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return fmt.Errorf("write key: %w", err)
	}
	if err := pki.WriteFileAtomic(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return fmt.Errorf("write certificate: %w", err)
	}
	return nil
}

// Deps are the renewer's collaborators.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer // nil: metrics not registered
	Now        func() time.Time      // nil: time.Now
}

// Renewer keeps an enrolled sensor's certificate fresh: it renews at
// Config.RenewAt of the certificate's life over mTLS, and re-attests with
// the long-term key when the certificate has expired or the pair on disk is
// unusable.
type Renewer struct {
	cfg      Config
	log      *slog.Logger
	now      func() time.Time
	renewals *prometheus.CounterVec

	stop   context.CancelFunc
	done   chan struct{}
	kicked chan struct{}
}

// New builds a renewer for an enrolled state folder; it starts nothing.
func New(cfg Config, deps Deps) (*Renewer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, LongTermKeyFile)); err != nil {
		return nil, fmt.Errorf("enrol.dir %s is not enrolled (run `jasper sensor enrol`): %w", cfg.Dir, err)
	}
	r := &Renewer{
		cfg: cfg, log: deps.Log, now: deps.Now, kicked: make(chan struct{}, 1),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_sensor_cert_renewals_total",
			Help: "Certificate renewals by kind (renew, reattest) and outcome (ok, error, refused).",
		}, []string{"kind", "outcome"}),
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	r.log = r.log.With("component", "enrol")
	if r.now == nil {
		r.now = time.Now
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(r.renewals); err != nil {
			return nil, fmt.Errorf("enrol metrics: %w", err)
		}
	}
	return r, nil
}

// Metrics returns the renewal counter (jasper_sensor_cert_renewals_total),
// labelled kind and outcome.
func (r *Renewer) Metrics() *prometheus.CounterVec { return r.renewals }

// Current reads the certificate in the state folder.
func (r *Renewer) Current() (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(r.cfg.Dir, CertFile))
	if err != nil {
		return nil, err
	}
	return pki.ParseCertPEM(b)
}

// NextRenewal is when the current certificate is due for renewal (now, if
// it cannot be read).
func (r *Renewer) NextRenewal() time.Time {
	c, err := r.Current()
	if err != nil {
		return r.now()
	}
	life := c.NotAfter.Sub(c.NotBefore)
	return c.NotBefore.Add(time.Duration(float64(life) * r.cfg.RenewAt))
}

// Start runs the renewal loop until ctx ends or Stop is called.
func (r *Renewer) Start(ctx context.Context) error {
	if r.stop != nil {
		return errors.New("enrol renewer: already started")
	}
	ctx, r.stop = context.WithCancel(ctx)
	r.done = make(chan struct{})
	go r.loop(ctx)
	return nil
}

// Stop ends the renewal loop and waits for it. It is idempotent.
func (r *Renewer) Stop() {
	if r.stop == nil {
		return
	}
	r.stop()
	<-r.done
}

// Kick asks the loop to check the certificate now (e.g. after the hub
// refused a batch as revoked, or after the clock jumped).
func (r *Renewer) Kick() {
	select {
	case r.kicked <- struct{}{}:
	default:
	}
}

func (r *Renewer) loop(ctx context.Context) {
	defer close(r.done)
	backoff := time.Duration(0)
	for {
		wait := r.NextRenewal().Sub(r.now())
		if backoff > 0 {
			wait = backoff
		}
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-r.kicked:
				t.Stop()
				if r.NextRenewal().After(r.now()) {
					continue
				}
			case <-t.C:
			}
		}
		if r.NextRenewal().After(r.now()) && backoff == 0 {
			continue // woke early (timer slack, kick)
		}
		err := r.RenewNow(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			backoff = 0
			continue
		}
		backoff = min(max(2*backoff, r.cfg.RetryMin.D()), r.cfg.RetryMax.D())
		if ReasonOf(err) == jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED {
			backoff = r.cfg.RetryMax.D()
		}
		r.log.Error("cert_renewal_failed", "err", err, "retry_in", backoff)
	}
}

// RenewNow renews the certificate at once: over mTLS while it is valid,
// by re-attestation with the long-term key once it has expired (or if the
// key pair on disk is unusable).
func (r *Renewer) RenewNow(ctx context.Context) error {
	files := r.cfg.Files()
	cert, err := r.Current()
	usable := err == nil && r.now().Before(cert.NotAfter)
	if usable {
		if _, err := tls.LoadX509KeyPair(files.Cert, files.Key); err != nil {
			usable = false
		}
	}
	if !usable {
		return r.Reattest(ctx)
	}
	return r.renew(ctx, cert)
}

func (r *Renewer) identity(cert *x509.Certificate) (pki.Identity, error) {
	if cert != nil {
		if id, err := pki.FromCertificate(cert); err == nil {
			return id, nil
		}
	}
	return pki.Identity{}, errors.New("no readable certificate in the state folder to take the identity from")
}

func (r *Renewer) nextKey() (crypto.Signer, error) {
	if !r.cfg.RotateKey {
		b, err := os.ReadFile(r.cfg.Files().Key)
		if err == nil {
			if k, err := pki.ParseKeyPEM(b); err == nil {
				return k, nil
			}
		}
	}
	return pki.GenerateKey()
}

func (r *Renewer) caPEM() ([]byte, *x509.Certificate, error) {
	b, err := os.ReadFile(r.cfg.Files().CA)
	if err != nil {
		return nil, nil, err
	}
	c, err := pki.ParseCertPEM(b)
	return b, c, err
}

func (r *Renewer) renew(ctx context.Context, cert *x509.Certificate) error {
	id, err := r.identity(cert)
	if err != nil {
		return err
	}
	_, ca, err := r.caPEM()
	if err != nil {
		return err
	}
	key, err := r.nextKey()
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return err
	}
	tc, err := pki.ClientConfig(r.cfg.Files())
	if err != nil {
		return err
	}
	var resp *jasperv1.RenewResponse
	err = callHubs(ctx, r.cfg.Hubs, r.cfg.CallTimeout.D(), tc, func(ctx context.Context, c jasperv1.EnrolServiceClient) error {
		var err error
		resp, err = c.Renew(ctx, &jasperv1.RenewRequest{Csr: csr})
		return err
	})
	if err != nil {
		r.count("renew", err)
		return fmt.Errorf("renew: %w", err)
	}
	return r.store("renew", key, resp.Certificate, ca, id)
}

func (r *Renewer) count(kind string, err error) {
	switch {
	case err == nil:
		r.renewals.WithLabelValues(kind, "ok").Inc()
	case ReasonOf(err) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNSPECIFIED:
		r.renewals.WithLabelValues(kind, "refused").Inc()
	default:
		r.renewals.WithLabelValues(kind, "error").Inc()
	}
}

func (r *Renewer) store(kind string, key crypto.Signer, certPEM []byte, ca *x509.Certificate, id pki.Identity) error {
	cert, err := checkIssued(certPEM, key, ca, id)
	if err == nil {
		err = writePair(r.cfg.Dir, key, certPEM)
	}
	r.count(kind, err)
	if err != nil {
		return fmt.Errorf("%s: %w", kind, err)
	}
	r.log.Info("cert_renewed", "kind", kind, "serial", cert.SerialNumber.String(), "not_after", cert.NotAfter)
	return nil
}

// Reattest gets a new certificate by signing a hub challenge with the
// long-term key; no client certificate is presented.
func (r *Renewer) Reattest(ctx context.Context) error {
	cert, _ := r.Current()
	id, err := r.identity(cert)
	if err != nil {
		return err
	}
	caPEM, ca, err := r.caPEM()
	if err != nil {
		return err
	}
	ltb, err := os.ReadFile(filepath.Join(r.cfg.Dir, LongTermKeyFile))
	if err != nil {
		return err
	}
	ltk, err := pki.ParseKeyPEM(ltb)
	if err != nil {
		return fmt.Errorf("long-term key: %w", err)
	}
	key, err := pki.GenerateKey() // the old key may be what failed: always a new one
	if err != nil {
		return err
	}
	csr, err := pki.NewCSR(key, id)
	if err != nil {
		return err
	}
	tc, err := pki.PinnedClientConfig(caPEM)
	if err != nil {
		return err
	}
	csrSum := sha256.Sum256(csr)
	var resp *jasperv1.ReattestResponse
	err = callHubs(ctx, r.cfg.Hubs, r.cfg.CallTimeout.D(), tc, func(ctx context.Context, c jasperv1.EnrolServiceClient) error {
		ch, err := c.Challenge(ctx, &jasperv1.ChallengeRequest{SensorId: id.ID})
		if err != nil {
			return err
		}
		chSum := sha256.Sum256(ch.Challenge)
		sig, err := pki.SignBlob(ltk, pki.DomainReattest, chSum[:], csrSum[:])
		if err != nil {
			return err
		}
		resp, err = c.Reattest(ctx, &jasperv1.ReattestRequest{Challenge: ch.Challenge, Csr: csr, LongTermSignature: sig})
		return err
	})
	if err != nil {
		r.count("reattest", err)
		return fmt.Errorf("re-attest: %w", err)
	}
	return r.store("reattest", key, resp.Certificate, ca, id)
}
