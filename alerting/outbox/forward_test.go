package outbox

import (
	"errors"
	"testing"

	"github.com/jasperfed/jasper/hub/store"
)

var _ store.ErrorKinds = (*Module)(nil)

// Every error the admin API and the dashboards map to a status must be
// listed, or a follower hub would answer 503 where the leader answers 404.
func TestErrorKindsCoverMappedErrors(t *testing.T) {
	kinds := (&Module{}).ErrorKinds()
	for _, want := range []error{ErrBadCommand, ErrNotFound, ErrUnknownRecipient} {
		found := false
		for _, k := range kinds {
			found = found || errors.Is(k, want)
		}
		if !found {
			t.Errorf("ErrorKinds lacks %v", want)
		}
	}
}
