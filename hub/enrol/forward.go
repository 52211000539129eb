package enrol

import (
	"encoding/json"
	"fmt"
)

// Enrolments and revocations reach any hub; a follower's store forwards
// the proposal to the leader, and these methods carry Apply's results and
// sentinel errors back (hub/store ResultCodec and ErrorKinds).

type wireResult struct {
	Enrol  *EnrolResult  `json:"enrol,omitempty"`
	Revoke *RevokeResult `json:"revoke,omitempty"`
}

// MarshalResult encodes an EnrolResult or RevokeResult.
func (m *Module) MarshalResult(v any) ([]byte, error) {
	switch r := v.(type) {
	case EnrolResult:
		return json.Marshal(wireResult{Enrol: &r})
	case RevokeResult:
		return json.Marshal(wireResult{Revoke: &r})
	default:
		return nil, fmt.Errorf("enrol: no wire form for result %T", v)
	}
}

// UnmarshalResult decodes what MarshalResult wrote.
func (m *Module) UnmarshalResult(b []byte) (any, error) {
	var w wireResult
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("enrol result: %w", err)
	}
	switch {
	case w.Enrol != nil:
		return *w.Enrol, nil
	case w.Revoke != nil:
		return *w.Revoke, nil
	}
	return nil, fmt.Errorf("enrol result: empty")
}

// ErrorKinds lists the errors Apply wraps.
func (m *Module) ErrorKinds() []error {
	return []error{ErrTokenReused, ErrTokenExpired, ErrRevoked, ErrUnknownSensor, ErrBadCommand}
}
