package route

import (
	"errors"
	"fmt"
	"net/netip"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Silence mutes matching findings for a recipient (or all recipients when
// Recipient is empty) between StartsMs and EndsMs (event time). Empty
// matcher fields match everything; at least one matcher must be set.
type Silence struct {
	ID        string `json:"id"`
	Recipient string `json:"recipient,omitempty"`
	FindingID string `json:"finding_id,omitempty"`
	Type      string `json:"type,omitempty"`
	Prefix    string `json:"prefix,omitempty"`
	Country   string `json:"country,omitempty"`
	StartsMs  int64  `json:"starts_ms"`
	EndsMs    int64  `json:"ends_ms"`
	CreatedBy string `json:"created_by,omitempty"`
	Comment   string `json:"comment,omitempty"`
}

// Validate checks the silence's fields.
func (s *Silence) Validate() error {
	if s.ID == "" || len(s.ID) > 64 {
		return errors.New("id: required, at most 64 characters")
	}
	if s.FindingID == "" && s.Type == "" && s.Prefix == "" && s.Country == "" {
		return errors.New("matchers: set at least one of finding_id, type, prefix, country")
	}
	if s.Prefix != "" {
		if _, err := netip.ParsePrefix(s.Prefix); err != nil {
			return fmt.Errorf("prefix: %w", err)
		}
	}
	if s.Type != "" {
		ok := false
		for n := range jasperv1.FindingType_value {
			ok = ok || TypeName(jasperv1.FindingType(jasperv1.FindingType_value[n])) == s.Type
		}
		if !ok {
			return fmt.Errorf("type: %q is not a finding type", s.Type)
		}
	}
	if s.EndsMs <= s.StartsMs {
		return errors.New("ends_ms: must be after starts_ms")
	}
	if len(s.Comment) > 1024 || len(s.CreatedBy) > 256 || len(s.FindingID) > 256 || len(s.Recipient) > 64 {
		return errors.New("comment, created_by, finding_id or recipient too long")
	}
	return nil
}

// Matches reports whether the silence mutes f for recipient at event time
// nowMs.
func (s *Silence) Matches(recipient string, f *jasperv1.Finding, nowMs int64) bool {
	if nowMs < s.StartsMs || nowMs >= s.EndsMs {
		return false
	}
	if s.Recipient != "" && s.Recipient != recipient {
		return false
	}
	if s.FindingID != "" && s.FindingID != f.GetId() {
		return false
	}
	if s.Type != "" && s.Type != TypeName(f.GetType()) {
		return false
	}
	if s.Country != "" && s.Country != f.GetSrcCountry() && s.Country != f.GetCountry() {
		return false
	}
	if s.Prefix != "" {
		p, err := netip.ParsePrefix(s.Prefix)
		a, ok := netip.AddrFromSlice(f.GetSrcIp())
		if err != nil || !ok || !p.Contains(a.Unmap()) {
			return false
		}
	}
	return true
}
