package store

import (
	"errors"
	"fmt"
)

// Errors returned by the store. Test with errors.Is.
var (
	// ErrNotLeader: the operation needs the raft leader. The error is a
	// *NotLeaderError naming the leader when one is known.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrNotOpen: the store is not started or already stopped.
	ErrNotOpen = errors.New("store not open")
	// ErrUnknownCommand: the command type or envelope version is newer
	// than this hub understands; the FSM refused it without changing state.
	ErrUnknownCommand = errors.New("unknown command")
	// ErrUnknownModule: no module of that name is registered.
	ErrUnknownModule = errors.New("unknown module")
	// ErrOutOfOrder: a pipelined batch was refused because the batch
	// before it on the same stream was not applied.
	ErrOutOfOrder = errors.New("batch out of order: the previous batch of this stream was not applied")
	// ErrBadCommand: the entry could not be decoded.
	ErrBadCommand = errors.New("malformed command")
	// ErrQueueFull: the proposer queue is full; retry later.
	ErrQueueFull = errors.New("proposal queue full")
)

// NotLeaderError names the leader, when known, for redirects.
type NotLeaderError struct {
	LeaderID       string
	LeaderRaftAddr string
	// LeaderIngestAddr is the leader's sensor-facing address as registered
	// in the FSM ("" until the leader registered it).
	LeaderIngestAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return "not the raft leader; no leader known"
	}
	return fmt.Sprintf("not the raft leader; leader is %s (raft %s, ingest %s)", e.LeaderID, e.LeaderRaftAddr, e.LeaderIngestAddr)
}

// Is makes errors.Is(err, ErrNotLeader) true.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }
