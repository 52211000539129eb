package dashboards

import (
	"context"
	"errors"
	"io"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ErrNotConfigured may be returned by Actions or an STIXExporter that the
// hub has not wired: the API answers 501 Not Implemented.
var ErrNotConfigured = errors.New("not configured on this hub")

// ErrNotRouted is returned (wrapped) by Actions.Acknowledge when no
// recipient holds the finding (no route matched it, so no alert or
// reminder is pending): there is nothing to acknowledge. The API answers
// 409 Conflict and suggests a silence, which is recorded either way.
var ErrNotRouted = errors.New("the finding was sent to no recipient")

// FindingRecord is a finding with the analysts' actions on it.
type FindingRecord struct {
	Finding       *jasperv1.Finding
	AckedBy       string
	AckedAt       time.Time
	SilencedUntil time.Time
	Note          string
}

// FindingsProvider lists the findings the hub holds (open ones and those
// ended recently), as committed in raft by the detectors.
type FindingsProvider interface {
	Findings(ctx context.Context) ([]FindingRecord, error)
}

// Actions carries an analyst's decision on a finding to alerting. The API
// has checked that the finding exists and lies in the user's constituency.
// Acknowledge returns an error wrapping ErrNotRouted when alerting holds
// the finding for no recipient; the API then answers 409 Conflict with a
// message saying so (nothing is recorded).
type Actions interface {
	Acknowledge(ctx context.Context, findingID, user, note string) error
	Silence(ctx context.Context, findingID, user string, until time.Time, note string) error
}

// STIXExporter writes findings as a STIX 2.1 bundle. The API passes only
// findings within the reader's constituency.
type STIXExporter func(ctx context.Context, w io.Writer, findings []*jasperv1.Finding) error

// CertExpiry returns the NotAfter of each sensor's current certificate.
type CertExpiry func(ctx context.Context) (map[string]time.Time, error)

// FindingsFunc adapts a function (e.g. a closure over hub/detect's
// Detector.Findings and alerting's acknowledgements) to FindingsProvider.
type FindingsFunc func(ctx context.Context) ([]FindingRecord, error)

// Findings implements FindingsProvider.
func (f FindingsFunc) Findings(ctx context.Context) ([]FindingRecord, error) { return f(ctx) }
