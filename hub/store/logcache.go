package store

import (
	"fmt"
	"sync"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// logCache keeps the most recently written raft entries in memory, in
// front of the bolt log store. Without it every entry is read back from
// bolt (a read transaction and a msgpack decode copying the whole entry)
// once per follower by the leader's replication, and once more by each
// follower when it applies the entry. raft's own LogCache bounds only the
// entry count; entries here can be up to max_group_bytes each, so this one
// is bounded by count and by bytes, evicting the oldest first.
//
// The cached entries are contiguous by index: a write that does not
// follow the newest cached entry (a follower truncating a conflicting
// suffix) empties the cache first.
type logCache struct {
	store    raft.LogStore
	maxBytes int

	mu    sync.RWMutex
	ring  []*raft.Log
	head  int    // ring position of the oldest entry
	n     int    // entries cached
	first uint64 // index of the oldest entry
	bytes int

	hits, misses prometheus.Counter
}

func newLogCache(store raft.LogStore, maxEntries, maxBytes int, hits, misses prometheus.Counter) *logCache {
	return &logCache{store: store, maxBytes: maxBytes, ring: make([]*raft.Log, maxEntries), hits: hits, misses: misses}
}

func logSize(l *raft.Log) int { return len(l.Data) + len(l.Extensions) + 64 }

// GetLog implements raft.LogStore. The entry shares its Data with the
// cache; raft does not modify it.
func (c *logCache) GetLog(index uint64, log *raft.Log) error {
	c.mu.RLock()
	if c.n > 0 && index >= c.first && index-c.first < uint64(c.n) {
		*log = *c.ring[(c.head+int(index-c.first))%len(c.ring)]
		c.mu.RUnlock()
		c.hits.Inc()
		return nil
	}
	c.mu.RUnlock()
	c.misses.Inc()
	return c.store.GetLog(index, log)
}

// StoreLog implements raft.LogStore.
func (c *logCache) StoreLog(log *raft.Log) error { return c.StoreLogs([]*raft.Log{log}) }

// StoreLogs implements raft.LogStore: entries are cached once the store
// holds them.
func (c *logCache) StoreLogs(logs []*raft.Log) error {
	if err := c.store.StoreLogs(logs); err != nil {
		// What was written of logs is unknown: forget the cached entries
		// at and after the first of them.
		c.mu.Lock()
		if len(logs) > 0 {
			c.dropFrom(logs[0].Index)
		}
		c.mu.Unlock()
		return fmt.Errorf("store raft logs: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range logs {
		c.add(l)
	}
	return nil
}

// add caches l; c.mu is held.
func (c *logCache) add(l *raft.Log) {
	size := logSize(l)
	if c.n > 0 && l.Index != c.first+uint64(c.n) {
		c.reset()
	}
	if size > c.maxBytes {
		// Too large to cache: keep the cache contiguous by starting over
		// after it.
		c.reset()
		return
	}
	for c.n > 0 && (c.n == len(c.ring) || c.bytes+size > c.maxBytes) {
		c.evictOldest()
	}
	if c.n == 0 {
		c.head, c.first = 0, l.Index
	}
	c.ring[(c.head+c.n)%len(c.ring)] = l
	c.n++
	c.bytes += size
}

func (c *logCache) evictOldest() {
	old := c.ring[c.head]
	c.bytes -= logSize(old)
	c.ring[c.head] = nil
	c.head = (c.head + 1) % len(c.ring)
	c.first++
	c.n--
}

// dropFrom forgets cached entries with index >= from; c.mu is held.
func (c *logCache) dropFrom(from uint64) {
	for c.n > 0 && c.first+uint64(c.n)-1 >= from {
		i := (c.head + c.n - 1) % len(c.ring)
		c.bytes -= logSize(c.ring[i])
		c.ring[i] = nil
		c.n--
	}
}

func (c *logCache) reset() {
	clear(c.ring)
	c.head, c.n, c.first, c.bytes = 0, 0, 0, 0
}

// DeleteRange implements raft.LogStore (compaction after a snapshot, or a
// follower dropping a conflicting suffix).
func (c *logCache) DeleteRange(lo, hi uint64) error {
	c.mu.Lock()
	if c.n > 0 && hi >= c.first && lo <= c.first+uint64(c.n)-1 {
		if lo <= c.first {
			// Drop the cached prefix up to hi, or everything.
			for c.n > 0 && c.first <= hi {
				c.evictOldest()
			}
		} else {
			c.dropFrom(lo)
		}
	}
	c.mu.Unlock()
	return c.store.DeleteRange(lo, hi)
}

// FirstIndex implements raft.LogStore.
func (c *logCache) FirstIndex() (uint64, error) { return c.store.FirstIndex() }

// LastIndex implements raft.LogStore.
func (c *logCache) LastIndex() (uint64, error) { return c.store.LastIndex() }
