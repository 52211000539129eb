package summary

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/google/gopacket"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"

	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/packet"
)

// checkEvery is how many frames Run reads between checks of the context
// and, for live sources, the wall clock.
const checkEvery = 4096

// isTimeout reports a source's "no packet yet" error: os.ErrDeadlineExceeded
// or any error with a true Timeout() method (gopacket/afpacket's
// ErrTimeout should be wrapped into one of those by the live source).
func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// Run reads src until io.EOF or ctx is done, and calls emit for every
// sealed batch in order.
//
// Bins close on event time (a frame of a later bin) and, for live sources,
// when the wall clock passes bin end + Config.Grace, so a quiet darknet
// still ships. A source is live when it implements `Live() bool` returning
// true, or as soon as it returns a timeout (see isTimeout): live sources
// must return such a timeout regularly (e.g. every 100 ms) when no frame
// comes, so that Run can seal bins and notice ctx. At EOF, and when ctx is
// done, Run flushes the open bin; it returns nil at EOF and ctx.Err() on
// cancellation. Each bin's stats include the delta of
// src.Stats().KernelDrops.
func Run(ctx context.Context, src capture.Source, cfg Config, emit func(*jasperv1.Batch) error) error {
	_, err := run(ctx, src, cfg, emit)
	return err
}

// RunStats is Run, returning the counters summed over every bin.
func RunStats(ctx context.Context, src capture.Source, cfg Config, emit func(*jasperv1.Batch) error) (Stats, error) {
	return run(ctx, src, cfg, emit)
}

func run(ctx context.Context, src capture.Source, cfg Config, emit func(*jasperv1.Batch) error) (Stats, error) {
	dec, err := packet.NewDecoder(src.LinkType())
	if err != nil {
		return Stats{}, fmt.Errorf("summarise: %w", err)
	}
	agg, err := NewAggregator(cfg, emit)
	if err != nil {
		return Stats{}, err
	}
	agg.SetKernelDrops(func() uint64 { return src.Stats().KernelDrops })
	live := false
	if l, ok := src.(interface{ Live() bool }); ok {
		live = l.Live()
	}
	var (
		lastFlush  = time.Now()
		sinceCheck int
	)
	check := func() error {
		sinceCheck = 0
		if err := ctx.Err(); err != nil {
			if ferr := agg.Flush(); ferr != nil {
				return ferr
			}
			return err
		}
		if live {
			now := time.Now()
			if err := agg.SealBefore(now.Add(-cfg.Grace)); err != nil {
				return err
			}
			if cfg.EarlyFlush > 0 && now.Sub(lastFlush) >= cfg.EarlyFlush {
				lastFlush = now
				if err := agg.EarlyFlush(); err != nil {
					return err
				}
			}
		}
		return nil
	}
	// Frames are decoded a block at a time so that the aggregator can
	// prefetch the block's rows (see Aggregator.Prefetch).
	const block = 16
	var (
		infos [block]packet.Info
		res   [block]packet.Result
		tss   [block]time.Time
	)
	for {
		n := 0
		var err error
		for n < block {
			var data []byte
			var ci gopacket.CaptureInfo
			if data, ci, err = src.ReadPacket(); err != nil {
				break
			}
			res[n] = dec.Decode(data, &infos[n])
			tss[n] = ci.Timestamp
			n++
		}
		agg.Prefetch(res[:n], infos[:n])
		for i := range n {
			if err := agg.Add(tss[i], res[i], &infos[i]); err != nil {
				return agg.Totals, err
			}
		}
		if sinceCheck += n; sinceCheck >= checkEvery {
			if err := check(); err != nil {
				return agg.Totals, err
			}
		}
		if err == nil {
			continue
		}
		if errors.Is(err, io.EOF) {
			if err := agg.Flush(); err != nil {
				return agg.Totals, err
			}
			return agg.Totals, nil
		}
		if isTimeout(err) {
			live = true
			if err := check(); err != nil {
				return agg.Totals, err
			}
			continue
		}
		if ferr := agg.Flush(); ferr != nil {
			return agg.Totals, errors.Join(err, ferr)
		}
		return agg.Totals, fmt.Errorf("summarise: %w", err)
	}
}
