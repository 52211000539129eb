package enrol_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/enrol"
	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	senrol "github.com/jasperfed/jasper/sensor/enrol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// fakeRaft is an in-order applier standing in for the raft store: every
// proposal gets the next index and is applied to every replica's module,
// and the first replica's answer goes back to the proposer.
type fakeRaft struct {
	mu       sync.Mutex
	index    uint64
	replicas []*enrol.Module
	down     bool // every proposal fails, as on a follower
}

func (f *fakeRaft) Propose(_ context.Context, module string, payload []byte) (any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return nil, errors.New("not the raft leader")
	}
	if module != enrol.ModuleName {
		return nil, errors.New("unknown module " + module)
	}
	f.index++
	var res any
	var err error
	for i, m := range f.replicas {
		r, e := m.Apply(f.index, payload)
		if i == 0 {
			res, err = r, e
		}
	}
	return res, err
}

func (f *fakeRaft) tick(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index++
	for _, m := range f.replicas {
		m.OnTick(f.index, now)
	}
}

// fed is a CA, a fake raft log and hubs serving enrolment on loopback.
type fed struct {
	t     *testing.T
	dir   string
	ca    *pki.CA
	caPEM string // path of ca.pem
	raft  *fakeRaft
	hubs  []*enrol.Service
	mods  []*enrol.Module
}

type hubOpt struct {
	now        func() time.Time
	maxOffline time.Duration
	store      enrol.Proposer
	log        *slog.Logger
	reg        prometheus.Registerer
}

func newFed(t *testing.T, opts ...hubOpt) *fed {
	t.Helper()
	dir := t.TempDir()
	ca, err := pki.NewCA("test federation", 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
	f := &fed{t: t, dir: dir, ca: ca, caPEM: filepath.Join(dir, "ca.pem"), raft: &fakeRaft{}}
	if len(opts) == 0 {
		opts = []hubOpt{{}, {}}
	}
	for range opts {
		m := enrol.NewModule()
		f.mods = append(f.mods, m)
		f.raft.replicas = append(f.raft.replicas, m)
	}
	for i, o := range opts {
		name := string(rune('a' + i))
		is, err := ca.Issue(pki.IssueRequest{
			Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-" + name},
			IPs:      []net.IP{net.IPv4(127, 0, 0, 1)},
			Validity: 24 * time.Hour,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteIssued(dir, "hub-"+name, is); err != nil {
			t.Fatal(err)
		}
		cfg := enrol.DefaultConfig()
		cfg.Listen = "127.0.0.1:0"
		if o.maxOffline != 0 {
			cfg.MaxOffline = config.Duration(o.maxOffline)
		}
		var store enrol.Proposer = f.raft
		if o.store != nil {
			store = o.store
		}
		svc, err := enrol.NewService(cfg, enrol.Deps{
			CA: ca, Store: store, Module: f.mods[i], Now: o.now, Log: o.log, Registerer: o.reg,
			TLS: pki.Files{CA: f.caPEM, Cert: filepath.Join(dir, "hub-"+name+".pem"), Key: filepath.Join(dir, "hub-"+name+"-key.pem")},
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := svc.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(svc.Stop)
		f.hubs = append(f.hubs, svc)
	}
	return f
}

func (f *fed) token(id string, country string, ttl time.Duration, at time.Time, prefixes ...string) string {
	f.t.Helper()
	ident := pki.Identity{Role: pki.RoleSensor, ID: id, Country: country}
	for _, p := range prefixes {
		ident.Prefixes = append(ident.Prefixes, netip.MustParsePrefix(p))
	}
	s, _, err := f.ca.NewJoinToken(ident, at, ttl)
	if err != nil {
		f.t.Fatal(err)
	}
	return s
}

func (f *fed) sensorCfg(hubs ...int) senrol.Config {
	cfg := senrol.DefaultConfig()
	cfg.Dir = filepath.Join(f.t.TempDir(), "state")
	if len(hubs) == 0 {
		hubs = []int{0}
	}
	for _, h := range hubs {
		cfg.Hubs = append(cfg.Hubs, f.hubs[h].Addr())
	}
	cfg.RetryMin = config.Duration(10 * time.Millisecond)
	cfg.RetryMax = config.Duration(50 * time.Millisecond)
	return cfg
}

func (f *fed) enrol(cfg senrol.Config, token string) (*x509.Certificate, error) {
	caPEM, err := os.ReadFile(f.caPEM)
	if err != nil {
		f.t.Fatal(err)
	}
	return senrol.Enrol(f.t.Context(), cfg, senrol.EnrolOptions{Token: token, CAPEM: caPEM})
}

func wantReason(t *testing.T, err error, want jasperv1.EnrolRefusalReason) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want refusal %s", want)
	}
	if got := senrol.ReasonOf(err); got != want {
		t.Fatalf("refusal %s (%v), want %s", got, err, want)
	}
}

func (f *fed) snapshotsEqual() {
	f.t.Helper()
	var first []byte
	for i, m := range f.mods {
		var b bytes.Buffer
		if err := m.Snapshot(&b); err != nil {
			f.t.Fatal(err)
		}
		if i == 0 {
			first = b.Bytes()
		} else if !bytes.Equal(first, b.Bytes()) {
			f.t.Fatalf("replica %d's snapshot differs from replica 0's", i)
		}
	}
}

// mtlsServer is a TLS server with the hub's reloading mTLS configuration
// that reports the serial of every client certificate it sees.
func (f *fed) mtlsServer() (addr string, serials <-chan string) {
	f.t.Helper()
	tc, err := pki.ServerConfig(pki.Files{CA: f.caPEM, Cert: filepath.Join(f.dir, "hub-a.pem"), Key: filepath.Join(f.dir, "hub-a-key.pem")})
	if err != nil {
		f.t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tc)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { ln.Close() })
	ch := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tcn := c.(*tls.Conn)
			if err := tcn.Handshake(); err == nil {
				ch <- tcn.ConnectionState().PeerCertificates[0].SerialNumber.String()
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), ch
}

func dialSerial(t *testing.T, tc *tls.Config, addr string, serials <-chan string) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, tc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-serials:
		return s
	case <-time.After(10 * time.Second):
		t.Fatal("server saw no handshake")
		return ""
	}
}

func TestEnrolRenewRevoke(t *testing.T) {
	f := newFed(t)
	tok := f.token("tokyo-1", "JP", time.Hour, time.Now(), "192.0.2.0/24", "2001:db8::/48")
	cfg := f.sensorCfg(0)
	cert, err := f.enrol(cfg, tok)
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.FromCertificate(cert)
	if err != nil {
		t.Fatal(err)
	}
	if id.ID != "tokyo-1" || id.Country != "JP" || len(id.Prefixes) != 2 || id.Role != pki.RoleSensor {
		t.Fatalf("certificate binds %+v", id)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life != 24*time.Hour {
		t.Fatalf("certificate life %s, want 24h", life)
	}
	for _, name := range []string{senrol.CAFile, senrol.CertFile, senrol.KeyFile, senrol.LongTermKeyFile} {
		st, err := os.Stat(filepath.Join(cfg.Dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if (name == senrol.KeyFile || name == senrol.LongTermKeyFile) && st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %v, want 0600", name, st.Mode().Perm())
		}
	}
	f.snapshotsEqual()

	// The enrolled files make a working mTLS client; keep one config for
	// the whole test to show that renewal needs no restart.
	tc, err := pki.ClientConfig(cfg.Files())
	if err != nil {
		t.Fatal(err)
	}
	addr, serials := f.mtlsServer()
	if got := dialSerial(t, tc, addr, serials); got != cert.SerialNumber.String() {
		t.Fatalf("server saw serial %s, want %s", got, cert.SerialNumber)
	}

	// Reusing the token is refused, on the other hub too, and the refused
	// sensor keeps no state.
	cfg2 := f.sensorCfg(1)
	_, err = f.enrol(cfg2, tok)
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED)
	if _, err := os.Stat(filepath.Join(cfg2.Dir, senrol.CertFile)); !os.IsNotExist(err) {
		t.Fatalf("refused enrolment left a certificate: %v", err)
	}
	// Enrolling again into the same state folder is refused locally.
	if _, err := f.enrol(cfg, f.token("tokyo-1", "JP", time.Hour, time.Now(), "192.0.2.0/24")); err == nil {
		t.Fatal("enrolled over an existing state folder")
	}

	// Renewal over mTLS, through the second hub.
	reg := prometheus.NewRegistry()
	cfgR := cfg
	cfgR.Hubs = []string{f.hubs[1].Addr()}
	r, err := senrol.New(cfgR, senrol.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	oldKey, _ := os.ReadFile(cfg.Files().Key)
	if err := r.RenewNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	renewed, err := r.Current()
	if err != nil {
		t.Fatal(err)
	}
	if renewed.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatal("renewal kept the serial")
	}
	if newKey, _ := os.ReadFile(cfg.Files().Key); bytes.Equal(oldKey, newKey) {
		t.Fatal("renewal did not rotate the key")
	}
	if n := testutil.ToFloat64(r.Metrics().WithLabelValues("renew", "ok")); n != 1 {
		t.Fatalf("renew ok counted %v, want 1", n)
	}
	if got := dialSerial(t, tc, addr, serials); got != renewed.SerialNumber.String() {
		t.Fatalf("after renewal the reloading client presented %s, want %s", got, renewed.SerialNumber)
	}
	f.snapshotsEqual()

	// Revocation needs an admin certificate.
	sensorClient := enrolClient(t, f, cfg.Files(), f.hubs[0].Addr())
	_, err = sensorClient.Revoke(t.Context(), &jasperv1.RevokeRequest{SensorId: "tokyo-1"})
	if err == nil {
		t.Fatal("a sensor revoked a sensor")
	}
	admin := f.adminFiles("ops")
	res, err := enrolClient(t, f, admin, f.hubs[1].Addr()).Revoke(t.Context(), &jasperv1.RevokeRequest{SensorId: "tokyo-1", Reason: "stolen"})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Serials) != 2 {
		t.Fatalf("revoked serials %v, want the 2 live ones", res.Serials)
	}
	for i, m := range f.mods {
		if !m.Revoked("tokyo-1", renewed.SerialNumber) || !m.RevokedCert(cert) {
			t.Fatalf("replica %d does not hold the revocation", i)
		}
		if m.Revoked("other", nil) {
			t.Fatal("revocation leaks to another sensor")
		}
	}
	f.snapshotsEqual()
	err = r.RenewNow(t.Context())
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED)
	err = r.Reattest(t.Context())
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED)
	if n := testutil.ToFloat64(r.Metrics().WithLabelValues("reattest", "refused")); n != 1 {
		t.Fatalf("reattest refused counted %v, want 1", n)
	}
	// A new token re-enrols the id; the old certificates stay revoked.
	cfg3 := f.sensorCfg(0)
	c3, err := f.enrol(cfg3, f.token("tokyo-1", "JP", time.Hour, time.Now(), "192.0.2.0/24", "2001:db8::/48"))
	if err != nil {
		t.Fatal(err)
	}
	if f.mods[0].RevokedCert(c3) || !f.mods[0].RevokedCert(renewed) {
		t.Fatal("re-enrolment: new certificate revoked or old one not")
	}
	f.snapshotsEqual()
}

func (f *fed) adminFiles(name string) pki.Files {
	is, err := f.ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleAdmin, ID: name}, Validity: time.Hour})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := pki.WriteIssued(f.dir, name, is); err != nil {
		f.t.Fatal(err)
	}
	return pki.Files{CA: f.caPEM, Cert: filepath.Join(f.dir, name+".pem"), Key: filepath.Join(f.dir, name+"-key.pem")}
}

func enrolClient(t *testing.T, f *fed, files pki.Files, addr string) jasperv1.EnrolServiceClient {
	t.Helper()
	tc, err := pki.ClientConfig(files)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return jasperv1.NewEnrolServiceClient(conn)
}

// syncBuffer is a log sink safe for the server goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestTokenMisuseRefused(t *testing.T) {
	var logs syncBuffer
	reg := prometheus.NewRegistry()
	f := newFed(t, hubOpt{log: slog.New(slog.NewTextHandler(&logs, nil)), reg: reg})
	now := time.Now()
	caPEM, _ := os.ReadFile(f.caPEM)

	// Expired.
	_, err := f.enrol(f.sensorCfg(), f.token("s1", "FR", time.Hour, now.Add(-2*time.Hour), "192.0.2.0/24"))
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_EXPIRED)

	// Prefixes or country other than the token's.
	tok := f.token("s1", "FR", time.Hour, now, "192.0.2.0/24")
	_, err = senrol.Enrol(t.Context(), f.sensorCfg(), senrol.EnrolOptions{Token: tok, CAPEM: caPEM,
		Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/23")}})
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_SCOPE_MISMATCH)
	_, err = senrol.Enrol(t.Context(), f.sensorCfg(), senrol.EnrolOptions{Token: tok, CAPEM: caPEM, Country: "DE"})
	wantReason(t, err, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_SCOPE_MISMATCH)
	// The refused attempts did not consume the token.
	if _, err := f.enrol(f.sensorCfg(), tok); err != nil {
		t.Fatalf("token unusable after refused attempts: %v", err)
	}

	// A token of another CA: the sensor refuses it before calling, and a
	// hub refuses it too.
	other, _ := pki.NewCA("other", time.Hour)
	foreign, _, err := other.NewJoinToken(pki.Identity{Role: pki.RoleSensor, ID: "s2", Country: "FR",
		Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.enrol(f.sensorCfg(), foreign); err == nil {
		t.Fatal("sensor accepted a token of another CA")
	}
	_, err = senrol.Enrol(t.Context(), f.sensorCfg(), senrol.EnrolOptions{Token: foreign, CAPEM: other.PEM})
	if err == nil {
		t.Fatal("enrolled against a hub of another CA")
	}
	_, err = f.hubs[0].Enrol(t.Context(), &jasperv1.EnrolRequest{Token: foreign})
	if err == nil {
		t.Fatal("hub accepted a token of another CA")
	}

	// Renewal without a client certificate is refused.
	_, err = f.hubs[0].Renew(t.Context(), &jasperv1.RenewRequest{})
	if err == nil {
		t.Fatal("renewed without a certificate")
	}

	// Every outcome was counted ...
	for outcome, want := range map[string]float64{"token_expired": 1, "scope_mismatch": 2, "bad_token": 1, "ok": 1} {
		if got := counterValue(t, reg, "jasper_enrol_requests_total", map[string]string{"call": "enrol", "outcome": outcome}); got != want {
			t.Errorf("jasper_enrol_requests_total{call=enrol,outcome=%s} = %v, want %v", outcome, got, want)
		}
	}
	// ... and every refusal logged with its reason.
	out := logs.String()
	for _, want := range []string{"reason=token_expired", "reason=scope_mismatch", "reason=bad_token", "reason=forbidden"} {
		if !strings.Contains(out, "msg=enrol_refused") || !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestReattestAfterOffline(t *testing.T) {
	// The hub's clock is two days behind at enrolment: the sensor gets a
	// certificate that has expired by now, as if it had been offline.
	past := func() time.Time { return time.Now().Add(-48 * time.Hour) }
	f := newFed(t, hubOpt{now: past}, hubOpt{})
	cfg := f.sensorCfg(0)
	cert, err := f.enrol(cfg, f.token("lima-1", "PE", 72*time.Hour, time.Now().Add(-49*time.Hour), "203.0.113.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if time.Now().Before(cert.NotAfter) {
		t.Fatalf("test set-up: certificate valid until %s is not expired", cert.NotAfter)
	}
	// The expired certificate no longer opens an mTLS connection.
	tc, err := pki.ClientConfig(cfg.Files())
	if err != nil {
		t.Fatal(err)
	}
	addr, serials := f.mtlsServer()
	if c, err := tls.Dial("tcp", addr, tc); err == nil {
		if c.Handshake() == nil {
			_, rerr := c.Read(make([]byte, 1))
			if rerr == nil {
				t.Fatal("expired certificate accepted")
			}
		}
		c.Close()
	}
	// The sensor re-attests with its long-term key at the second hub.
	cfg.Hubs = []string{f.hubs[1].Addr()}
	reg := prometheus.NewRegistry()
	r, err := senrol.New(cfg, senrol.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(r.Metrics().WithLabelValues("reattest", "ok")); n != 1 {
		t.Fatalf("reattest ok counted %v, want 1", n)
	}
	fresh, err := r.Current()
	if err != nil {
		t.Fatal(err)
	}
	if !time.Now().Before(fresh.NotAfter) || fresh.SerialNumber.Cmp(cert.SerialNumber) == 0 {
		t.Fatalf("re-attested certificate serial %s valid until %s", fresh.SerialNumber, fresh.NotAfter)
	}
	if got := dialSerial(t, tc, addr, serials); got != fresh.SerialNumber.String() {
		t.Fatalf("server saw %s, want the re-attested %s", got, fresh.SerialNumber)
	}
	f.snapshotsEqual()

	// The long-term key of another sensor does not re-attest this one.
	cfgOther := f.sensorCfg(1)
	if _, err := f.enrol(cfgOther, f.token("lima-2", "PE", time.Hour, time.Now(), "198.51.100.0/24")); err != nil {
		t.Fatal(err)
	}
	lt, _ := os.ReadFile(filepath.Join(cfgOther.Dir, senrol.LongTermKeyFile))
	if err := os.WriteFile(filepath.Join(cfg.Dir, senrol.LongTermKeyFile), lt, 0o600); err != nil {
		t.Fatal(err)
	}
	wantReason(t, r.Reattest(t.Context()), jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_BAD_ATTESTATION)
}

func TestReattestOfflineTooLong(t *testing.T) {
	past := func() time.Time { return time.Now().Add(-40 * 24 * time.Hour) }
	f := newFed(t, hubOpt{now: past}, hubOpt{maxOffline: 30 * 24 * time.Hour})
	cfg := f.sensorCfg(0)
	if _, err := f.enrol(cfg, f.token("old-1", "BR", 24*time.Hour, past().Add(-time.Minute), "203.0.113.0/24")); err != nil {
		t.Fatal(err)
	}
	cfg.Hubs = []string{f.hubs[1].Addr()}
	r, err := senrol.New(cfg, senrol.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	wantReason(t, r.RenewNow(t.Context()), jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_OFFLINE_TOO_LONG)
}

func TestRenewerLoopAndFailover(t *testing.T) {
	f := newFed(t)
	cfg := f.sensorCfg(0)
	first, err := f.enrol(cfg, f.token("oslo-1", "NO", time.Hour, time.Now(), "192.0.2.128/25"))
	if err != nil {
		t.Fatal(err)
	}
	// The first hub listed is down (nothing listens); the loop fails over
	// to the next one.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	cfg.Hubs = []string{dead, f.hubs[1].Addr()}
	// The sensor's clock says 20 h of the 24 h life have passed: due.
	now := func() time.Time { return time.Now().Add(20 * time.Hour) }
	r, err := senrol.New(cfg, senrol.Deps{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	if due := r.NextRenewal(); !due.Equal(first.NotBefore.Add(16 * time.Hour)) {
		t.Fatalf("renewal due at %s, want 2/3 of the life", due)
	}
	if err := r.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer r.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := r.Current()
		if err == nil && c.SerialNumber.Cmp(first.SerialNumber) != 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewal loop did not renew a due certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.Stop()
	r.Stop() // idempotent
}

func TestProposeFailureIsUnavailable(t *testing.T) {
	f := newFed(t, hubOpt{})
	f.raft.down = true
	tok := f.token("s1", "FR", time.Hour, time.Now(), "192.0.2.0/24")
	_, err := f.enrol(f.sensorCfg(), tok)
	if err == nil || senrol.ReasonOf(err) != jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNSPECIFIED {
		t.Fatalf("a raft failure gave %v, want an unavailable error without refusal", err)
	}
	f.raft.down = false
	// Nothing was consumed: the token still works.
	if _, err := f.enrol(f.sensorCfg(), tok); err != nil {
		t.Fatal(err)
	}
}

// TestRenewRecoversMismatchedPair: a sensor stopped between the renames of
// key.pem and cert.pem holds a pair that does not match; its next renewal
// re-attests with the long-term key instead of failing forever.
func TestRenewRecoversMismatchedPair(t *testing.T) {
	f := newFed(t, hubOpt{})
	cfg := f.sensorCfg(0)
	first, err := f.enrol(cfg, f.token("quito-1", "EC", time.Hour, time.Now(), "192.0.2.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := pki.MarshalKeyPEM(other)
	if err := os.WriteFile(cfg.Files().Key, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tls.LoadX509KeyPair(cfg.Files().Cert, cfg.Files().Key); err == nil {
		t.Fatal("test set-up: the pair still matches")
	}
	reg := prometheus.NewRegistry()
	r, err := senrol.New(cfg, senrol.Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.RenewNow(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(r.Metrics().WithLabelValues("reattest", "ok")); n != 1 {
		t.Fatalf("reattest ok counted %v, want 1", n)
	}
	if _, err := tls.LoadX509KeyPair(cfg.Files().Cert, cfg.Files().Key); err != nil {
		t.Fatalf("pair after recovery: %v", err)
	}
	if c, _ := r.Current(); c.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("no new certificate")
	}
}

func counterValue(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
