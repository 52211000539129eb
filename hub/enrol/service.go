package enrol

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Proposer is the raft store's proposal path: it commits payload to the log
// and returns what the named module's Apply returned (its error included).
type Proposer interface {
	Propose(ctx context.Context, module string, payload []byte) (any, error)
}

// Deps are the service's collaborators.
type Deps struct {
	// CA signs certificates and verifies join tokens and challenges.
	CA *pki.CA
	// Store commits enrolment commands; Module is the state they apply to
	// (registered with the same store).
	Store  Proposer
	Module *Module
	// TLS names the hub's own certificate, presented on the enrolment port
	// (only needed when Config.Listen is set).
	TLS pki.Files
	Log *slog.Logger
	// Registerer receives the metrics; nil: not registered.
	Registerer prometheus.Registerer
	// Now is the wall clock; nil: time.Now.
	Now func() time.Time
}

// Service implements jasperv1.EnrolServiceServer.
type Service struct {
	jasperv1.UnimplementedEnrolServiceServer

	cfg      Config
	ca       *pki.CA
	store    Proposer
	mod      *Module
	tls      pki.Files
	log      *slog.Logger
	now      func() time.Time
	requests *prometheus.CounterVec

	mu   sync.Mutex
	srv  *grpc.Server
	lis  net.Listener
	done chan struct{}
}

// NewService builds the service; it starts nothing.
func NewService(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.CA == nil || deps.CA.Key == nil {
		return nil, errors.New("enrol: the CA key is needed to sign sensor certificates (enrol.ca_dir)")
	}
	if deps.Store == nil || deps.Module == nil {
		return nil, errors.New("enrol: store and module are required")
	}
	if cfg.Listen != "" {
		if err := deps.TLS.Validate("tls"); err != nil {
			return nil, fmt.Errorf("enrol: the enrolment port needs the hub certificate: %w", err)
		}
	}
	s := &Service{
		cfg: cfg, ca: deps.CA, store: deps.Store, mod: deps.Module, tls: deps.TLS,
		log: deps.Log, now: deps.Now,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jasper_enrol_requests_total",
			Help: "Enrolment requests by call and outcome (ok or the refusal reason).",
		}, []string{"call", "outcome"}),
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("component", "enrol")
	if s.now == nil {
		s.now = time.Now
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(s.requests); err != nil {
			return nil, fmt.Errorf("enrol metrics: %w", err)
		}
	}
	return s, nil
}

// Start serves the service on Config.Listen (if set) with TLS that asks for
// no client certificate. It returns once the port is bound.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Listen == "" {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("enrol: already started")
	}
	tc, err := pki.EnrolServerConfig(s.tls)
	if err != nil {
		return fmt.Errorf("enrol tls: %w", err)
	}
	lis, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("enrol listen %s: %w", s.cfg.Listen, err)
	}
	s.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(tc)), grpc.MaxRecvMsgSize(64<<10))
	jasperv1.RegisterEnrolServiceServer(s.srv, s)
	s.lis = lis
	s.done = make(chan struct{})
	go func(srv *grpc.Server, done chan struct{}) {
		defer close(done)
		if err := srv.Serve(lis); err != nil {
			s.log.Error("enrol_serve_failed", "err", err)
		}
	}(s.srv, s.done)
	s.log.Info("enrol_listening", "addr", lis.Addr().String())
	return nil
}

// Addr is the bound enrolment address ("" before Start).
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis == nil {
		return ""
	}
	return s.lis.Addr().String()
}

// Stop stops the enrolment port, letting calls in flight finish for up to
// five seconds. It is idempotent.
func (s *Service) Stop() {
	s.mu.Lock()
	srv, done := s.srv, s.done
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	stopped := make(chan struct{})
	go func() { srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		srv.Stop()
	}
	<-done
}

// refusal builds a gRPC status carrying the typed reason, counts it and
// logs it.
func (s *Service) refuse(call string, code codes.Code, reason jasperv1.EnrolRefusalReason, attrs []any, format string, a ...any) error {
	detail := fmt.Sprintf(format, a...)
	name := strings.ToLower(strings.TrimPrefix(reason.String(), "ENROL_REFUSAL_REASON_"))
	s.requests.WithLabelValues(call, name).Inc()
	s.log.Warn("enrol_refused", append([]any{"call", call, "reason", name, "detail", detail}, attrs...)...)
	st := status.New(code, name+": "+detail)
	if withDetail, err := st.WithDetails(&jasperv1.EnrolRefusal{Reason: reason, Detail: detail}); err == nil {
		st = withDetail
	}
	return st.Err()
}

// proposeErr turns a Propose failure into the caller's answer.
func (s *Service) proposeErr(call string, attrs []any, err error) error {
	switch {
	case errors.Is(err, ErrTokenReused) || strings.Contains(err.Error(), ErrTokenReused.Error()):
		return s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED, attrs, "%v", err)
	case errors.Is(err, ErrTokenExpired) || strings.Contains(err.Error(), ErrTokenExpired.Error()):
		return s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_EXPIRED, attrs, "%v", err)
	case errors.Is(err, ErrRevoked) || strings.Contains(err.Error(), ErrRevoked.Error()):
		return s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED, attrs, "%v", err)
	case errors.Is(err, ErrUnknownSensor) || strings.Contains(err.Error(), ErrUnknownSensor.Error()):
		return s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNKNOWN_SENSOR, attrs, "%v", err)
	}
	s.requests.WithLabelValues(call, "unavailable").Inc()
	s.log.Warn("enrol_propose_failed", append([]any{"call", call, "err", err}, attrs...)...)
	return status.Errorf(codes.Unavailable, "commit through raft: %v", err)
}

func (s *Service) propose(ctx context.Context, cmd *jasperv1.EnrolCommand) (any, error) {
	b, err := proto.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProposeTimeout.D())
	defer cancel()
	return s.store.Propose(ctx, ModuleName, b)
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// peerIdentity returns the identity of the verified client certificate, if
// the caller presented one.
func peerIdentity(ctx context.Context) (pki.Identity, *x509.Certificate, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Identity{}, nil, false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return pki.Identity{}, nil, false
	}
	leaf := ti.State.VerifiedChains[0][0]
	id, err := pki.FromCertificate(leaf)
	if err != nil {
		return pki.Identity{}, nil, false
	}
	return id, leaf, true
}

func (s *Service) issue(id pki.Identity, csr *x509.CertificateRequest) (*pki.Issued, *jasperv1.CertRecord, error) {
	now := s.now()
	is, err := s.ca.Issue(pki.IssueRequest{
		Identity:  id,
		PublicKey: csr.PublicKey,
		Validity:  s.cfg.CertValidity.D(),
		NotBefore: now.Add(-5 * time.Minute),
	})
	if err != nil {
		return nil, nil, fmt.Errorf("sign certificate: %w", err)
	}
	return is, &jasperv1.CertRecord{Serial: is.Cert.SerialNumber.Bytes(), NotAfter: is.Cert.NotAfter.Unix()}, nil
}

func parseLongTermKey(der []byte) (*ecdsa.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(*ecdsa.PublicKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("want an ECDSA P-256 key, got %T", k)
	}
	return ek, nil
}

func scopeString(id pki.Identity) string {
	ps := make([]string, len(id.Prefixes))
	for i, p := range id.Prefixes {
		ps[i] = p.String()
	}
	return fmt.Sprintf("id=%s country=%s prefixes=[%s]", id.ID, id.Country, strings.Join(ps, " "))
}

// Enrol implements EnrolService.Enrol.
func (s *Service) Enrol(ctx context.Context, req *jasperv1.EnrolRequest) (*jasperv1.EnrolResponse, error) {
	const call = "enrol"
	attrs := []any{"peer", peerAddr(ctx)}
	tok, err := pki.VerifyJoinToken(req.Token, s.ca.Cert)
	if err != nil {
		reason := jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_BAD_TOKEN
		if _, _, _, perr := pki.ParseJoinToken(req.Token); perr != nil {
			reason = jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED
		}
		return nil, s.refuse(call, codes.Unauthenticated, reason, attrs, "%v", err)
	}
	attrs = append(attrs, "token", tok.IDString(), "sensor", tok.Identity.ID)
	now := s.now()
	if tok.Expired(now) {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_EXPIRED, attrs,
			"token %s expired at %s", tok.IDString(), tok.ExpiresAt.UTC().Format(time.RFC3339))
	}
	if by, index, used := s.mod.Used(tok.ID); used {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_TOKEN_REUSED, attrs,
			"token %s was used by sensor %s at raft index %d", tok.IDString(), by, index)
	}
	csr, want, err := pki.ParseCSR(req.Csr)
	if err != nil {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs, "%v", err)
	}
	if !pki.SameScope(want, tok.Identity) {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_SCOPE_MISMATCH, attrs,
			"the CSR asks for %s but the token grants %s", scopeString(want), scopeString(tok.Identity))
	}
	ltk, err := parseLongTermKey(req.LongTermPublicKey)
	if err != nil {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs, "long-term key: %v", err)
	}
	csrSum := sha256.Sum256(req.Csr)
	if !pki.VerifyBlob(ltk, req.LongTermSignature, pki.DomainEnrol, tok.ID, csrSum[:]) {
		return nil, s.refuse(call, codes.Unauthenticated, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_BAD_ATTESTATION, attrs,
			"the long-term key's signature does not verify")
	}
	is, rec, err := s.issue(tok.Identity, csr)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	cmd := &jasperv1.EnrolCommand{NowMs: now.UnixMilli(), Cmd: &jasperv1.EnrolCommand_Enrol{Enrol: &jasperv1.EnrolRecord{
		TokenId:           tok.ID,
		TokenExpiresAt:    tok.ExpiresAt.Unix(),
		SensorId:          tok.Identity.ID,
		Country:           tok.Identity.Country,
		Prefixes:          prefixStrings(tok.Identity),
		LongTermPublicKey: req.LongTermPublicKey,
		Cert:              rec,
	}}}
	res, err := s.propose(ctx, cmd)
	if err != nil {
		return nil, s.proposeErr(call, attrs, err)
	}
	r, _ := res.(EnrolResult)
	s.requests.WithLabelValues(call, "ok").Inc()
	s.log.Info("sensor_enrolled", append(attrs, "serial", is.Cert.SerialNumber.String(), "not_after", is.Cert.NotAfter, "reenrolled", r.Reenrolled)...)
	return &jasperv1.EnrolResponse{Certificate: is.CertPEM, CaCertificate: s.ca.PEM}, nil
}

func prefixStrings(id pki.Identity) []string {
	out := make([]string, len(id.Prefixes))
	for i, p := range id.Prefixes {
		out[i] = p.Masked().String()
	}
	return out
}

// Renew implements EnrolService.Renew.
func (s *Service) Renew(ctx context.Context, req *jasperv1.RenewRequest) (*jasperv1.RenewResponse, error) {
	const call = "renew"
	attrs := []any{"peer", peerAddr(ctx)}
	pid, leaf, ok := peerIdentity(ctx)
	if !ok || pid.Role != pki.RoleSensor {
		return nil, s.refuse(call, codes.Unauthenticated, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_FORBIDDEN, attrs,
			"renewal needs the sensor's current certificate as TLS client certificate")
	}
	attrs = append(attrs, "sensor", pid.ID, "old_serial", leaf.SerialNumber.String())
	info, ok := s.mod.Sensor(pid.ID)
	if !ok || info.LongTermKey == nil {
		if ok && info.Revoked {
			return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED, attrs, "sensor %s is revoked", pid.ID)
		}
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNKNOWN_SENSOR, attrs,
			"sensor %s never enrolled with a join token; only enrolled sensors renew", pid.ID)
	}
	if s.mod.Revoked(pid.ID, leaf.SerialNumber) {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED, attrs,
			"certificate %s of sensor %s is revoked", leaf.SerialNumber, pid.ID)
	}
	out, err := s.reissue(ctx, call, attrs, info, req.Csr, false, func(pemCert []byte) any {
		return &jasperv1.RenewResponse{Certificate: pemCert, CaCertificate: s.ca.PEM}
	})
	if err != nil {
		return nil, err
	}
	return out.(*jasperv1.RenewResponse), nil
}

// reissue checks a CSR against the recorded identity, signs it, records the
// certificate and builds the response.
func (s *Service) reissue(ctx context.Context, call string, attrs []any, info SensorInfo, csrDER []byte, reattest bool, resp func([]byte) any) (_ any, err error) {
	csr, want, err := pki.ParseCSR(csrDER)
	if err != nil {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs, "%v", err)
	}
	if !pki.SameScope(want, info.Identity) {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_SCOPE_MISMATCH, attrs,
			"the CSR asks for %s but the sensor is enrolled as %s", scopeString(want), scopeString(info.Identity))
	}
	is, rec, err := s.issue(info.Identity, csr)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	cmd := &jasperv1.EnrolCommand{NowMs: s.now().UnixMilli(), Cmd: &jasperv1.EnrolCommand_Issue{Issue: &jasperv1.IssueRecord{
		SensorId: info.Identity.ID, Cert: rec, Reattest: reattest,
	}}}
	if _, err := s.propose(ctx, cmd); err != nil {
		return nil, s.proposeErr(call, attrs, err)
	}
	s.requests.WithLabelValues(call, "ok").Inc()
	s.log.Info("sensor_certificate_issued", append(attrs, "call", call, "serial", is.Cert.SerialNumber.String(), "not_after", is.Cert.NotAfter)...)
	return resp(is.CertPEM), nil
}

// Challenge implements EnrolService.Challenge. The challenge is signed by
// the CA key, so any hub verifies it: the sensor may reach another hub
// for Reattest.
func (s *Service) Challenge(ctx context.Context, req *jasperv1.ChallengeRequest) (*jasperv1.ChallengeResponse, error) {
	if req.SensorId == "" || len(req.SensorId) > 64 {
		return nil, s.refuse("challenge", codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED,
			[]any{"peer", peerAddr(ctx)}, "sensor_id: want 1-64 characters")
	}
	nonce := make([]byte, 16)
	if _, err := rand.Read(nonce); err != nil {
		return nil, status.Errorf(codes.Internal, "nonce: %v", err)
	}
	body, err := proto.Marshal(&jasperv1.ChallengeClaims{
		SensorId: req.SensorId, Nonce: nonce, ExpiresAt: s.now().Add(s.cfg.ChallengeTTL.D()).Unix(),
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "%v", err)
	}
	sig, err := pki.SignBlob(s.ca.Key, pki.DomainChallenge, body)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "sign challenge: %v", err)
	}
	s.requests.WithLabelValues("challenge", "ok").Inc()
	return &jasperv1.ChallengeResponse{Challenge: encodeChallenge(body, sig)}, nil
}

// encodeChallenge frames a challenge: uvarint length of body, body,
// signature.
func encodeChallenge(body, sig []byte) []byte {
	out := binary.AppendUvarint(nil, uint64(len(body)))
	out = append(out, body...)
	return append(out, sig...)
}

// decodeChallenge is the inverse of encodeChallenge; it checks nothing but
// the framing.
func decodeChallenge(b []byte) (body, sig []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || k != len(binary.AppendUvarint(nil, n)) || n > uint64(len(b)-k) || n > 1024 {
		return nil, nil, errors.New("bad challenge framing")
	}
	body, sig = b[k:k+int(n)], b[k+int(n):]
	if len(sig) == 0 || len(sig) > 256 {
		return nil, nil, errors.New("bad challenge signature length")
	}
	return body, sig, nil
}

// Reattest implements EnrolService.Reattest.
func (s *Service) Reattest(ctx context.Context, req *jasperv1.ReattestRequest) (*jasperv1.ReattestResponse, error) {
	const call = "reattest"
	attrs := []any{"peer", peerAddr(ctx)}
	bad := jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_BAD_ATTESTATION
	body, sig, err := decodeChallenge(req.Challenge)
	if err != nil {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs, "%v", err)
	}
	if !pki.VerifyBlob(s.ca.Cert.PublicKey, sig, pki.DomainChallenge, body) {
		return nil, s.refuse(call, codes.Unauthenticated, bad, attrs, "the challenge was not signed by the federation CA")
	}
	var cl jasperv1.ChallengeClaims
	if err := proto.Unmarshal(body, &cl); err != nil {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs, "challenge: %v", err)
	}
	attrs = append(attrs, "sensor", cl.SensorId)
	now := s.now()
	if now.Unix() >= cl.ExpiresAt {
		return nil, s.refuse(call, codes.PermissionDenied, bad, attrs, "the challenge expired; ask for a new one")
	}
	info, ok := s.mod.Sensor(cl.SensorId)
	switch {
	case ok && info.Revoked:
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_REVOKED, attrs, "sensor %s is revoked", cl.SensorId)
	case !ok || info.LongTermKey == nil:
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_UNKNOWN_SENSOR, attrs,
			"sensor %s never enrolled; it needs a join token", cl.SensorId)
	}
	chSum, csrSum := sha256.Sum256(req.Challenge), sha256.Sum256(req.Csr)
	if !pki.VerifyBlob(info.LongTermKey, req.LongTermSignature, pki.DomainReattest, chSum[:], csrSum[:]) {
		return nil, s.refuse(call, codes.Unauthenticated, bad, attrs, "the signature does not verify with the long-term key registered at enrolment")
	}
	if max := s.cfg.MaxOffline.D(); max > 0 && now.Sub(info.LastNotAfter) > max {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_OFFLINE_TOO_LONG, attrs,
			"the last certificate expired at %s, more than enrol.max_offline (%s) ago; enrol again with a new join token",
			info.LastNotAfter.UTC().Format(time.RFC3339), max)
	}
	out, err := s.reissue(ctx, call, attrs, info, req.Csr, true, func(pemCert []byte) any {
		return &jasperv1.ReattestResponse{Certificate: pemCert, CaCertificate: s.ca.PEM}
	})
	if err != nil {
		return nil, err
	}
	return out.(*jasperv1.ReattestResponse), nil
}

// Revoke implements EnrolService.Revoke (admin certificate required).
func (s *Service) Revoke(ctx context.Context, req *jasperv1.RevokeRequest) (*jasperv1.RevokeResponse, error) {
	const call = "revoke"
	attrs := []any{"peer", peerAddr(ctx), "sensor", req.SensorId}
	pid, _, ok := peerIdentity(ctx)
	if !ok || pid.Role != pki.RoleAdmin {
		return nil, s.refuse(call, codes.PermissionDenied, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_FORBIDDEN, attrs,
			"revocation needs an admin certificate")
	}
	if req.SensorId == "" || len(req.SensorId) > 64 || len(req.Reason) > 1024 {
		return nil, s.refuse(call, codes.InvalidArgument, jasperv1.EnrolRefusalReason_ENROL_REFUSAL_REASON_MALFORMED, attrs,
			"sensor_id: want 1-64 characters; reason: at most 1024")
	}
	res, err := s.propose(ctx, &jasperv1.EnrolCommand{NowMs: s.now().UnixMilli(), Cmd: &jasperv1.EnrolCommand_Revoke{
		Revoke: &jasperv1.RevokeRecord{SensorId: req.SensorId, Reason: req.Reason, By: pid.ID},
	}})
	if err != nil {
		return nil, s.proposeErr(call, attrs, err)
	}
	out := &jasperv1.RevokeResponse{}
	if r, ok := res.(RevokeResult); ok {
		for _, sn := range r.Serials {
			out.Serials = append(out.Serials, sn.String())
		}
	}
	s.requests.WithLabelValues(call, "ok").Inc()
	s.log.Warn("sensor_revoked", append(attrs, "by", pid.ID, "reason", req.Reason, "serials", len(out.Serials))...)
	return out, nil
}

var _ jasperv1.EnrolServiceServer = (*Service)(nil)
