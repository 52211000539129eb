package store

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func entry(i uint64, size int) *raft.Log {
	d := bytes.Repeat([]byte{byte(i)}, size)
	return &raft.Log{Index: i, Term: 1, Type: raft.LogCommand, Data: d}
}

func newTestCache(entries, maxBytes int) (*logCache, *raft.InmemStore, prometheus.Counter, prometheus.Counter) {
	st := raft.NewInmemStore()
	h, m := prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"})
	return newLogCache(st, entries, maxBytes, h, m), st, h, m
}

func TestLogCacheServesNewestEntries(t *testing.T) {
	c, _, hits, misses := newTestCache(4, 1<<20)
	for i := uint64(1); i <= 6; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	var l raft.Log
	for i := uint64(1); i <= 6; i++ {
		if err := c.GetLog(i, &l); err != nil || l.Index != i || len(l.Data) != 100 || l.Data[0] != byte(i) {
			t.Fatalf("GetLog(%d) = %+v, %v", i, l, err)
		}
	}
	// 4 entries cached (3..6), 1 and 2 read from the store.
	if h, m := testutil.ToFloat64(hits), testutil.ToFloat64(misses); h != 4 || m != 2 {
		t.Fatalf("hits %v misses %v, want 4 and 2", h, m)
	}
}

func TestLogCacheBoundedByBytes(t *testing.T) {
	c, _, _, _ := newTestCache(100, 3*(1000+64))
	for i := uint64(1); i <= 10; i++ {
		if err := c.StoreLogs([]*raft.Log{entry(i, 1000)}); err != nil {
			t.Fatal(err)
		}
		if c.bytes > c.maxBytes {
			t.Fatalf("cache holds %d bytes, bound %d", c.bytes, c.maxBytes)
		}
	}
	if c.n != 3 || c.first != 8 {
		t.Fatalf("cached %d entries from %d, want 3 from 8", c.n, c.first)
	}
	// An entry larger than the bound is not cached, and the cache stays
	// contiguous.
	if err := c.StoreLogs([]*raft.Log{entry(11, 10_000)}); err != nil {
		t.Fatal(err)
	}
	if c.n != 0 || c.bytes != 0 {
		t.Fatalf("after an oversized entry: %d entries, %d bytes", c.n, c.bytes)
	}
	if err := c.StoreLogs([]*raft.Log{entry(12, 10)}); err != nil {
		t.Fatal(err)
	}
	var l raft.Log
	if err := c.GetLog(11, &l); err != nil || len(l.Data) != 10_000 {
		t.Fatalf("oversized entry from the store: %d bytes, %v", len(l.Data), err)
	}
}

type failingStore struct {
	*raft.InmemStore
	fail bool
}

func (f *failingStore) StoreLogs(logs []*raft.Log) error {
	if f.fail {
		return errors.New("disk full")
	}
	return f.InmemStore.StoreLogs(logs)
}

// TestLogCacheMatchesStore runs random writes, truncations (a follower
// replacing a conflicting suffix), compactions and failed writes against
// the cache and checks every read against the store underneath.
func TestLogCacheMatchesStore(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 7))
		fs := &failingStore{InmemStore: raft.NewInmemStore()}
		c := newLogCache(fs, 1+r.IntN(16), 64+r.IntN(4000), prometheus.NewCounter(prometheus.CounterOpts{Name: "h"}), prometheus.NewCounter(prometheus.CounterOpts{Name: "m"}))
		var first, last uint64 = 1, 0
		term := uint64(1)
		for step := 0; step < 400; step++ {
			switch op := r.IntN(10); {
			case op < 6: // append a run
				var logs []*raft.Log
				for range 1 + r.IntN(5) {
					last++
					logs = append(logs, &raft.Log{Index: last, Term: term, Data: bytes.Repeat([]byte{byte(r.Uint32())}, r.IntN(900))})
				}
				fs.fail = r.IntN(20) == 0
				if err := c.StoreLogs(logs); err != nil {
					if !fs.fail {
						t.Fatal(err)
					}
					last = logs[0].Index - 1
				}
				fs.fail = false
			case op < 8 && last > first: // truncate a suffix, as a follower does
				from := first + uint64(r.IntN(int(last-first)+1))
				if err := c.DeleteRange(from, last); err != nil {
					t.Fatal(err)
				}
				last = from - 1
				term++
			case last > first: // compact a prefix
				to := first + uint64(r.IntN(int(last-first)))
				if err := c.DeleteRange(first, to); err != nil {
					t.Fatal(err)
				}
				first = to + 1
			}
			for i := first; i <= last; i++ {
				var got, want raft.Log
				errG, errW := c.GetLog(i, &got), fs.GetLog(i, &want)
				if (errG == nil) != (errW == nil) || got.Index != want.Index || got.Term != want.Term || !bytes.Equal(got.Data, want.Data) {
					t.Fatalf("seed %d step %d: GetLog(%d) = %d/%d/%d bytes (%v), store has %d/%d/%d bytes (%v)",
						seed, step, i, got.Index, got.Term, len(got.Data), errG, want.Index, want.Term, len(want.Data), errW)
				}
			}
			if c.bytes > c.maxBytes || c.n > len(c.ring) {
				t.Fatalf("seed %d: cache over its bounds: %d entries, %d bytes", seed, c.n, c.bytes)
			}
		}
	}
}
