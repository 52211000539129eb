// Package memraft is an in-memory stand-in for the raft store in alerting
// tests: one ordered log applied to several module replicas, with a leader
// that can be moved. It proves determinism (every replica sees the same
// entries) without hashicorp/raft.
package memraft

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/jasperfed/jasper/alerting/outbox"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// ErrNotLeader is returned by a follower's Propose.
var ErrNotLeader = errors.New("memraft: not the leader")

// Log applies entries in order to every replica.
type Log struct {
	mu       sync.Mutex
	replicas []*outbox.Module
	index    uint64
	leader   int
}

// New returns a log over the replicas; replica 0 leads.
func New(replicas ...*outbox.Module) *Log { return &Log{replicas: replicas} }

// SetLeader moves leadership (-1: no leader).
func (l *Log) SetLeader(i int) {
	l.mu.Lock()
	l.leader = i
	l.mu.Unlock()
}

// Index returns the last applied index.
func (l *Log) Index() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.index
}

// Finding commits a finding to every replica.
func (l *Log) Finding(f *jasperv1.Finding) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index++
	for _, r := range l.replicas {
		r.OnFinding(l.index, f)
	}
}

// Tick commits a tick.
func (l *Log) Tick(now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.index++
	for _, r := range l.replicas {
		r.OnTick(l.index, now)
	}
}

// Apply commits a command and returns the result of replica 0 (all
// replicas return the same).
func (l *Log) Apply(payload []byte) (any, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.apply(payload)
}

func (l *Log) apply(payload []byte) (any, error) {
	l.index++
	var res any
	var err error
	for i, r := range l.replicas {
		v, e := r.Apply(l.index, payload)
		if i == 0 {
			res, err = v, e
		}
	}
	return res, err
}

// Node is one hub's view: it proposes through the log when it leads.
type Node struct {
	l *Log
	i int
}

// Node returns replica i's view.
func (l *Log) Node(i int) *Node { return &Node{l, i} }

// IsLeader reports whether this node leads.
func (n *Node) IsLeader() bool {
	n.l.mu.Lock()
	defer n.l.mu.Unlock()
	return n.l.leader == n.i
}

// Propose commits payload if this node leads.
func (n *Node) Propose(ctx context.Context, _ string, payload []byte) (any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	n.l.mu.Lock()
	defer n.l.mu.Unlock()
	if n.l.leader != n.i {
		return nil, ErrNotLeader
	}
	return n.l.apply(payload)
}

// Add appends a replica (before any entry is applied).
func (l *Log) Add(m *outbox.Module) {
	l.mu.Lock()
	l.replicas = append(l.replicas, m)
	l.mu.Unlock()
}
