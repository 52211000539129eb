// Package summary aggregates classified darknet packets into per-bin summary
// rows (one per source, protocol, destination port or ICMP type/code, and
// class) and packs them into column-oriented jasperv1.Batch messages.
//
// Bins are aligned to Config.Bin on event time (packet timestamps). Memory
// is bounded whatever the traffic:
//
//   - a source that reaches Config.PortCap rows in a bin has its further
//     keys folded into one overflow row per (source, protocol, class), with
//     dst_port 0, overflow=true and the number of distinct ports folded;
//   - once a bin holds Config.MaxRowsPerBin rows (overflow rows included),
//     packets of new keys are not summarised: they are counted in
//     Stats.RowLimitDrops, and show in SensorStats as packets_seen minus
//     (packets_summarised + outside_darknet + decode_errors + non_ip);
//   - distinct destination counting uses at most Config.MaxSketches 256-byte
//     sketches per bin (see distinct.go for the exact/estimated ranges).
//
// Rows are additive across the batches of a bin: a bin too large for one
// batch is split, an early flush (Config.EarlyFlush) ships partial rows,
// and a late packet for a bin already sealed on the wall clock ships in a
// further batch of that bin. packets, bytes, fragments and fingerprint
// counts add up over a bin's batches. dst_ips and distinct_ports do not:
// in an early-flushed row they are the row's distinct counts for the bin
// so far (the sets are kept across flushes), so the largest value over a
// bin's batches is the bin's count and summing them over-counts (each
// address is counted once more in every later batch of the row). A late
// batch after a seal starts its counts afresh.
//
// # Early flush (the sightings fast path)
//
// With Config.EarlyFlush > 0 (default 2 s), every EarlyFlush of event time
// (and, for live sources, of wall-clock time) the aggregator ships as a
// Partial batch a delta row for every row with new packets since the
// previous flush, new sources and known ones alike, and resets their
// counters (keeping their distinct sets), so that the packet that takes a source over
// a hub detector's threshold reaches the hub within about EarlyFlush plus
// the uplink's round trip instead of at bin close. Rows with new packets
// are queued when they get their first packet since the last flush (no
// per-packet work on known keys beyond one compare); at most
// Config.MaxEarlyRows rows ship per early flush, oldest activity first, and
// the rest stay queued for the next flush or the bin's seal (counted in
// Stats.EarlyRowsDeferred). Memory stays bounded: the queue holds row
// indexes, at most MaxRowsPerBin.
//
// The functions here are not safe for concurrent use unless stated.
package summary

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Config configures the aggregation.
type Config struct {
	// Bin is the bin length, a whole number of seconds (default 60 s).
	Bin time.Duration
	// Darknet prefixes (IPv4 and IPv6); packets to other addresses are
	// counted as outside_darknet. Empty: every address is dark.
	Darknet []netip.Prefix
	// PortCap is the number of rows a source may have per bin before its
	// further keys fold into overflow rows (default 64).
	PortCap int
	// MaxRowsPerBin bounds the rows of a bin (default 2,000,000).
	MaxRowsPerBin int
	// MaxBatchBytes bounds the encoded size of a Batch (default 64 KiB).
	MaxBatchBytes int
	// EarlyFlush, when > 0, ships every EarlyFlush the rows with new
	// packets since the previous flush as Partial batches of delta rows
	// (default 2 s; see "Early flush"). 0: off, a bin ships when it closes
	// (what `jasper sensor summarize` uses, for whole-bin rows).
	EarlyFlush time.Duration
	// MaxEarlyRows caps the rows one early flush ships (default 20,000);
	// the rest wait for the next flush or the seal.
	MaxEarlyRows int
	// Grace is how long after a bin's end the wall clock waits before a
	// live source's bin is sealed without a later packet (default 5 s).
	Grace time.Duration
	// MaxSketches bounds the distinct-count slots per bin (default 262,144,
	// i.e. 64 MiB).
	MaxSketches int
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		Bin:           60 * time.Second,
		PortCap:       64,
		MaxRowsPerBin: 2_000_000,
		MaxBatchBytes: 64 << 10,
		EarlyFlush:    2 * time.Second,
		MaxEarlyRows:  20_000,
		Grace:         5 * time.Second,
		MaxSketches:   1 << 18,
	}
}

// minBatchBytes leaves room for a batch's fixed overhead and one row.
const minBatchBytes = 1024

// Validate checks the configuration and names the bad key.
func (c Config) Validate() error {
	var errs []error
	if c.Bin < time.Second || c.Bin%time.Second != 0 || c.Bin > 24*time.Hour {
		errs = append(errs, fmt.Errorf("bin: %v is not a whole number of seconds between 1s and 24h", c.Bin))
	}
	for i, p := range c.Darknet {
		if !p.IsValid() {
			errs = append(errs, fmt.Errorf("darknet[%d]: invalid prefix", i))
		}
	}
	if c.PortCap < 1 || c.PortCap > 65535 {
		errs = append(errs, fmt.Errorf("port_cap: %d is not between 1 and 65535", c.PortCap))
	}
	if c.MaxRowsPerBin < 1 {
		errs = append(errs, fmt.Errorf("max_rows_per_bin: %d must be at least 1", c.MaxRowsPerBin))
	}
	if c.MaxBatchBytes < minBatchBytes {
		errs = append(errs, fmt.Errorf("max_batch_bytes: %d is below %d", c.MaxBatchBytes, minBatchBytes))
	}
	if c.EarlyFlush < 0 {
		errs = append(errs, fmt.Errorf("early_flush: %v is negative", c.EarlyFlush))
	}
	if c.EarlyFlush > 0 && c.MaxEarlyRows < 1 {
		errs = append(errs, fmt.Errorf("max_early_rows: %d must be at least 1 with early_flush on", c.MaxEarlyRows))
	}
	if c.Grace < 0 {
		errs = append(errs, fmt.Errorf("grace: %v is negative", c.Grace))
	}
	if c.MaxSketches < 0 {
		errs = append(errs, fmt.Errorf("max_sketches: %d is negative", c.MaxSketches))
	}
	return errors.Join(errs...)
}
