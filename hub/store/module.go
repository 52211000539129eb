package store

import (
	"io"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Module is deterministic replicated state living inside the FSM
// (detectors, alert outbox, rollups). Every hub must register the same
// modules; a module's methods must depend only on their arguments and the
// module's own state (no wall clock, network or randomness).
type Module interface {
	Name() string
	// OnBatch sees every committed, non-duplicate batch in log order.
	// b is shared with the FSM and must not be modified or retained
	// beyond the call unless cloned.
	OnBatch(index uint64, b *jasperv1.CommittedBatch)
	// OnTick sees every leader-proposed tick (event time).
	OnTick(index uint64, now time.Time)
	// Apply applies a command proposed for this module; the result comes
	// back to the proposer.
	Apply(index uint64, payload []byte) (any, error)
	// Snapshot writes the module's whole state. It is called with the FSM
	// lock held, so the state cannot change underneath it.
	Snapshot(w io.Writer) error
	// Restore replaces the module's state with what Snapshot wrote. An
	// empty reader (the snapshot predates the module) means: reset to the
	// empty state.
	Restore(r io.Reader) error
}
