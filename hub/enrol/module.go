package enrol

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"google.golang.org/protobuf/proto"
)

// ModuleName is the name under which the module is registered with the
// raft store and to which enrolment commands are proposed.
const ModuleName = "enrol"

// Errors Apply returns; they reach the proposer through the store's
// Propose. They are deterministic: every replica returns the same.
var (
	// ErrTokenReused: the join token's id was already consumed.
	ErrTokenReused = errors.New("join token already used")
	// ErrTokenExpired: the token expired before its use was committed.
	ErrTokenExpired = errors.New("join token expired")
	// ErrRevoked: the sensor is revoked.
	ErrRevoked = errors.New("sensor revoked")
	// ErrUnknownSensor: no enrolment is recorded for the sensor.
	ErrUnknownSensor = errors.New("sensor not enrolled")
	// ErrBadCommand: the log entry does not decode.
	ErrBadCommand = errors.New("malformed enrolment command")
)

// Module is the deterministic state machine of enrolment: consumed join
// tokens, enrolled sensors with their long-term keys and live certificates,
// and the revocation list. It is hosted by the hub's raft store; Apply,
// OnTick, Snapshot and Restore are called in log order by the store, and
// the query methods (Revoked, Sensor) may be called from any goroutine.
//
// It never reads the wall clock: time comes from the proposer's now_ms in
// each command and from the store's ticks.
type Module struct {
	mu      sync.RWMutex
	sensors map[string]*jasperv1.SensorRecord
	used    map[string]*jasperv1.UsedToken // by string(token_id)
	revoked map[string]int64               // string(serial) -> not_after (Unix s)
}

// NewModule returns an empty module.
func NewModule() *Module {
	return &Module{
		sensors: map[string]*jasperv1.SensorRecord{},
		used:    map[string]*jasperv1.UsedToken{},
		revoked: map[string]int64{},
	}
}

// Name is ModuleName.
func (m *Module) Name() string { return ModuleName }

// OnBatch ignores sensor batches: enrolment state changes only by its own
// commands.
func (m *Module) OnBatch(uint64, *jasperv1.CommittedBatch) {}

// OnTick forgets what can no longer matter at now: consumed tokens past
// their expiry (an expired token is refused anyway), and certificates past
// their NotAfter (TLS refuses them anyway). This keeps the state bounded by
// the number of sensors plus the tokens and certificates alive at once.
func (m *Module) OnTick(_ uint64, now time.Time) {
	sec := now.Unix()
	m.mu.Lock()
	defer m.mu.Unlock()
	for k, u := range m.used {
		if u.ExpiresAt < sec {
			delete(m.used, k)
		}
	}
	for k, na := range m.revoked {
		if na < sec {
			delete(m.revoked, k)
		}
	}
	for _, s := range m.sensors {
		s.Certs = slices.DeleteFunc(s.Certs, func(c *jasperv1.CertRecord) bool { return c.NotAfter < sec })
	}
}

// EnrolResult is what Apply returns for an enrolment command.
type EnrolResult struct {
	// Reenrolled is true when the sensor id was enrolled before; the
	// certificates of the earlier enrolment are revoked.
	Reenrolled bool
}

// RevokeResult is what Apply returns for a revocation command.
type RevokeResult struct {
	// Serials of the certificates revoked (still valid at the last tick).
	Serials []*big.Int
}

// Apply executes one command of the enrolment module.
func (m *Module) Apply(index uint64, payload []byte) (any, error) {
	var cmd jasperv1.EnrolCommand
	if err := proto.Unmarshal(payload, &cmd); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c := cmd.Cmd.(type) {
	case *jasperv1.EnrolCommand_Enrol:
		return m.applyEnrol(index, cmd.NowMs, c.Enrol)
	case *jasperv1.EnrolCommand_Issue:
		return nil, m.applyIssue(c.Issue)
	case *jasperv1.EnrolCommand_Revoke:
		return m.applyRevoke(cmd.NowMs, c.Revoke)
	default:
		return nil, fmt.Errorf("%w: no command", ErrBadCommand)
	}
}

func (m *Module) applyEnrol(index uint64, nowMs int64, e *jasperv1.EnrolRecord) (any, error) {
	if len(e.TokenId) == 0 || e.SensorId == "" || e.Cert == nil {
		return nil, fmt.Errorf("%w: enrol without token id, sensor id or certificate", ErrBadCommand)
	}
	if u, ok := m.used[string(e.TokenId)]; ok {
		return nil, fmt.Errorf("%w: token %s was used by sensor %s at raft index %d",
			ErrTokenReused, hex.EncodeToString(e.TokenId), u.SensorId, u.Index)
	}
	if e.TokenExpiresAt*1000 <= nowMs {
		return nil, fmt.Errorf("%w: token %s expired at %s", ErrTokenExpired,
			hex.EncodeToString(e.TokenId), time.Unix(e.TokenExpiresAt, 0).UTC().Format(time.RFC3339))
	}
	m.used[string(e.TokenId)] = &jasperv1.UsedToken{TokenId: e.TokenId, ExpiresAt: e.TokenExpiresAt, SensorId: e.SensorId, Index: index}
	res := EnrolResult{}
	if old, ok := m.sensors[e.SensorId]; ok {
		// A new token for a known id is the operator's decision to start
		// the sensor afresh: the earlier certificates are revoked.
		res.Reenrolled = true
		for _, c := range old.Certs {
			m.revoked[string(c.Serial)] = c.NotAfter
		}
	}
	m.sensors[e.SensorId] = &jasperv1.SensorRecord{
		SensorId:          e.SensorId,
		Country:           e.Country,
		Prefixes:          slices.Clone(e.Prefixes),
		LongTermPublicKey: e.LongTermPublicKey,
		EnrolledAtMs:      nowMs,
		EnrolledIndex:     index,
		Certs:             []*jasperv1.CertRecord{e.Cert},
		LastNotAfter:      e.Cert.NotAfter,
	}
	return res, nil
}

func (m *Module) applyIssue(is *jasperv1.IssueRecord) error {
	if is.Cert == nil {
		return fmt.Errorf("%w: issue without certificate", ErrBadCommand)
	}
	s, ok := m.sensors[is.SensorId]
	switch {
	case !ok || len(s.LongTermPublicKey) == 0:
		return fmt.Errorf("%w: %s", ErrUnknownSensor, is.SensorId)
	case s.Revoked:
		return fmt.Errorf("%w: %s (%s)", ErrRevoked, is.SensorId, s.RevokeReason)
	}
	s.Certs = append(s.Certs, is.Cert)
	s.LastNotAfter = max(s.LastNotAfter, is.Cert.NotAfter)
	return nil
}

func (m *Module) applyRevoke(nowMs int64, r *jasperv1.RevokeRecord) (any, error) {
	if r.SensorId == "" {
		return nil, fmt.Errorf("%w: revoke without sensor id", ErrBadCommand)
	}
	s, ok := m.sensors[r.SensorId]
	if !ok {
		// Unknown here (e.g. a certificate made by `jasper ca issue`):
		// record the id so that every certificate naming it is refused.
		s = &jasperv1.SensorRecord{SensorId: r.SensorId}
		m.sensors[r.SensorId] = s
	}
	res := RevokeResult{}
	for _, c := range s.Certs {
		m.revoked[string(c.Serial)] = c.NotAfter
		res.Serials = append(res.Serials, new(big.Int).SetBytes(c.Serial))
	}
	s.Certs = nil
	if !s.Revoked {
		s.Revoked, s.RevokedAtMs, s.RevokeReason = true, nowMs, r.Reason
	}
	return res, nil
}

// Revoked reports whether a certificate of sensorID with the given serial
// is revoked: the sensor is revoked, or this serial was revoked by a
// re-enrolment. Ingest calls it on every stream and batch.
func (m *Module) Revoked(sensorID string, serial *big.Int) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if s, ok := m.sensors[sensorID]; ok && s.Revoked {
		return true
	}
	if serial == nil {
		return false
	}
	_, ok := m.revoked[string(serial.Bytes())]
	return ok
}

// Used reports whether a join token id was consumed (and is not yet past
// its expiry at the last tick), by which sensor at which raft index. The
// service asks it to refuse a reused token early; the authoritative check
// is in Apply.
func (m *Module) Used(tokenID []byte) (sensorID string, index uint64, used bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	u, ok := m.used[string(tokenID)]
	if !ok {
		return "", 0, false
	}
	return u.SensorId, u.Index, true
}

// RevokedCert is Revoked for a sensor certificate.
func (m *Module) RevokedCert(cert *x509.Certificate) bool {
	id, err := pki.FromCertificate(cert)
	if err != nil {
		return false
	}
	return m.Revoked(id.ID, cert.SerialNumber)
}

// SensorInfo is what the module knows of an enrolled sensor.
type SensorInfo struct {
	Identity     pki.Identity
	LongTermKey  *ecdsa.PublicKey // nil for a revoked id that never enrolled
	Revoked      bool
	RevokeReason string
	EnrolledAt   time.Time
	// LastNotAfter is the latest expiry of any certificate issued to it.
	LastNotAfter time.Time
	// LiveCerts counts certificates not yet expired at the last tick.
	LiveCerts int
}

// Sensor returns what is recorded for a sensor id.
func (m *Module) Sensor(id string) (SensorInfo, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.sensors[id]
	if !ok {
		return SensorInfo{}, false
	}
	info := SensorInfo{
		Identity:     pki.Identity{Role: pki.RoleSensor, ID: s.SensorId, Country: s.Country},
		Revoked:      s.Revoked,
		RevokeReason: s.RevokeReason,
		EnrolledAt:   time.UnixMilli(s.EnrolledAtMs),
		LastNotAfter: time.Unix(s.LastNotAfter, 0),
		LiveCerts:    len(s.Certs),
	}
	for _, p := range s.Prefixes {
		if pp, err := netip.ParsePrefix(p); err == nil {
			info.Identity.Prefixes = append(info.Identity.Prefixes, pp)
		}
	}
	if len(s.LongTermPublicKey) > 0 {
		if k, err := x509.ParsePKIXPublicKey(s.LongTermPublicKey); err == nil {
			info.LongTermKey, _ = k.(*ecdsa.PublicKey)
		}
	}
	return info, true
}

// Sensors lists the recorded sensor ids in order.
func (m *Module) Sensors() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	ids := make([]string, 0, len(m.sensors))
	for id := range m.sensors {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Snapshot writes the whole state, deterministically: two replicas with the
// same state write the same bytes.
func (m *Module) Snapshot(w io.Writer) error {
	m.mu.RLock()
	st := &jasperv1.EnrolState{}
	for _, s := range m.sensors {
		st.Sensors = append(st.Sensors, s)
	}
	for _, u := range m.used {
		st.UsedTokens = append(st.UsedTokens, u)
	}
	for serial, na := range m.revoked {
		st.RevokedCerts = append(st.RevokedCerts, &jasperv1.CertRecord{Serial: []byte(serial), NotAfter: na})
	}
	sort.Slice(st.Sensors, func(i, j int) bool { return st.Sensors[i].SensorId < st.Sensors[j].SensorId })
	sort.Slice(st.UsedTokens, func(i, j int) bool { return bytes.Compare(st.UsedTokens[i].TokenId, st.UsedTokens[j].TokenId) < 0 })
	sort.Slice(st.RevokedCerts, func(i, j int) bool {
		return bytes.Compare(st.RevokedCerts[i].Serial, st.RevokedCerts[j].Serial) < 0
	})
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(st)
	m.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("enrol snapshot: %w", err)
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("enrol snapshot: %w", err)
	}
	return nil
}

// Restore replaces the state with a snapshot written by Snapshot.
func (m *Module) Restore(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return fmt.Errorf("enrol restore: %w", err)
	}
	var st jasperv1.EnrolState
	if err := proto.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("enrol restore: %w", err)
	}
	sensors := make(map[string]*jasperv1.SensorRecord, len(st.Sensors))
	for _, s := range st.Sensors {
		sensors[s.SensorId] = s
	}
	used := make(map[string]*jasperv1.UsedToken, len(st.UsedTokens))
	for _, u := range st.UsedTokens {
		used[string(u.TokenId)] = u
	}
	revoked := make(map[string]int64, len(st.RevokedCerts))
	for _, c := range st.RevokedCerts {
		revoked[string(c.Serial)] = c.NotAfter
	}
	m.mu.Lock()
	m.sensors, m.used, m.revoked = sensors, used, revoked
	m.mu.Unlock()
	return nil
}
