package summary_test

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

func synFrame(t testing.TB, src net.IP) []byte {
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 50, Protocol: layers.IPProtocolTCP, SrcIP: src, DstIP: net.IP{198, 51, 100, 1}}
	tcp := &layers.TCP{SrcPort: 1234, DstPort: 23, SYN: true, Window: 1024}
	tcp.SetNetworkLayerForChecksum(ip)
	buf := gopacket.NewSerializeBuffer()
	eth := &layers.Ethernet{SrcMAC: make(net.HardwareAddr, 6), DstMAC: make(net.HardwareAddr, 6), EthernetType: layers.EthernetTypeIPv4}
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// liveSource hands out queued frames stamped with the current time, and
// times out (like a live capture's poll) when the queue is empty.
type liveSource struct {
	mu     sync.Mutex
	queue  [][]byte
	drops  uint64
	closed bool
}

func (s *liveSource) push(f []byte) {
	s.mu.Lock()
	s.queue = append(s.queue, f)
	s.mu.Unlock()
}

func (s *liveSource) ReadPacket() ([]byte, gopacket.CaptureInfo, error) {
	s.mu.Lock()
	if len(s.queue) > 0 {
		f := s.queue[0]
		s.queue = s.queue[1:]
		s.mu.Unlock()
		return f, gopacket.CaptureInfo{Timestamp: time.Now(), CaptureLength: len(f), Length: len(f)}, nil
	}
	s.drops += 5
	s.mu.Unlock()
	time.Sleep(100 * time.Millisecond)
	return nil, gopacket.CaptureInfo{}, os.ErrDeadlineExceeded
}
func (s *liveSource) LinkType() layers.LinkType { return layers.LinkTypeEthernet }
func (s *liveSource) Stats() capture.Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return capture.Stats{KernelDrops: s.drops}
}
func (s *liveSource) Close() error { return nil }

// TestRunLiveSealsOnWallClock: a quiet live source still ships its bin
// once the wall clock passes bin end + grace, with the kernel drops.
func TestRunLiveSealsOnWallClock(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := &liveSource{}
		src.push(synFrame(t, net.IP{203, 0, 113, 1}))
		src.push(synFrame(t, net.IP{203, 0, 113, 2}))
		cfg := summary.DefaultConfig()
		cfg.Grace = 2 * time.Second
		cfg.EarlyFlush = 0 // the seal, not an early flush, ships the rows
		batches := make(chan *jasperv1.Batch, 10)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		start := time.Now()
		go func() {
			done <- summary.Run(ctx, src, cfg, func(b *jasperv1.Batch) error { batches <- b; return nil })
		}()
		binEnd := start.Truncate(cfg.Bin).Add(cfg.Bin)
		var b *jasperv1.Batch
		select {
		case b = <-batches:
		case <-time.After(3 * cfg.Bin):
			t.Fatal("no batch from a quiet live source")
		}
		if now := time.Now(); now.Before(binEnd.Add(cfg.Grace)) || now.After(binEnd.Add(cfg.Grace+time.Second)) {
			t.Errorf("sealed at %v, bin ends %v, grace %v", now, binEnd, cfg.Grace)
		}
		if len(b.Rows.SrcIp) != 2 || b.Stats.PacketsSeen != 2 || b.Stats.KernelDrops == 0 {
			t.Errorf("batch rows %d stats %v", len(b.Rows.SrcIp), b.Stats)
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
	})
}

func TestEarlyFlush(t *testing.T) {
	cfg := summary.DefaultConfig()
	cfg.EarlyFlush = 5 * time.Second
	a, c := newAgg(t, cfg)
	add(t, a, t0.Add(1*time.Second), syn("203.0.113.1", "198.51.100.1", 23))
	add(t, a, t0.Add(2*time.Second), syn("203.0.113.1", "198.51.100.2", 23))
	if len(c.batches) != 0 {
		t.Fatal("flushed early")
	}
	add(t, a, t0.Add(6*time.Second), syn("203.0.113.2", "198.51.100.1", 23))
	if len(c.batches) != 1 || !c.batches[0].Partial {
		t.Fatalf("%d batches after the early-flush interval", len(c.batches))
	}
	rows, _ := summary.DecodeBatch(c.batches[0])
	if len(rows) != 1 || rows[0].Packets != 2 || rows[0].DstIPs != 2 {
		t.Fatalf("partial rows %+v", rows)
	}
	add(t, a, t0.Add(7*time.Second), syn("203.0.113.1", "198.51.100.1", 23))
	add(t, a, t0.Add(7*time.Second), syn("203.0.113.1", "198.51.100.1", 80))
	if err := a.Flush(); err != nil {
		t.Fatal(err)
	}
	last := c.batches[len(c.batches)-1]
	if last.Partial {
		t.Error("final batch marked partial")
	}
	var total uint64
	perSrc := map[string]uint64{}
	for _, r := range c.rows(t) {
		total += r.Packets
		perSrc[r.SrcIP.String()] += r.Packets
	}
	if total != 5 || perSrc["203.0.113.1"] != 4 || perSrc["203.0.113.2"] != 1 {
		t.Errorf("rows are not additive: total %d, %v", total, perSrc)
	}
	if s := c.stats(); s.PacketsSeen != 5 || s.PacketsSummarised != 5 {
		t.Errorf("stats over the batches %+v", s)
	}
}

// TestRunLiveEarlyFlush: with EarlyFlush, a new source of a live capture
// reaches the emitter within the interval, long before its bin ends.
func TestRunLiveEarlyFlush(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Start just after a bin boundary so the bin is far from its end.
		time.Sleep(time.Until(time.Now().Truncate(time.Minute).Add(time.Minute + time.Second)))
		src := &liveSource{}
		src.push(synFrame(t, net.IP{203, 0, 113, 9}))
		cfg := summary.DefaultConfig()
		cfg.EarlyFlush = 2 * time.Second
		batches := make(chan *jasperv1.Batch, 10)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		start := time.Now()
		go func() {
			done <- summary.Run(ctx, src, cfg, func(b *jasperv1.Batch) error { batches <- b; return nil })
		}()
		var b *jasperv1.Batch
		select {
		case b = <-batches:
		case <-time.After(30 * time.Second):
			t.Fatal("no early batch")
		}
		if waited := time.Since(start); waited > cfg.EarlyFlush+time.Second || !b.Partial || len(b.Rows.SrcIp) != 1 {
			t.Errorf("after %v: partial=%v rows=%d", waited, b.Partial, len(b.Rows.SrcIp))
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v", err)
		}
		// Cancellation flushed the open bin: the row was already shipped,
		// so nothing more than (at most) the stats follows.
		for len(batches) > 0 {
			if b := <-batches; len(b.Rows.GetSrcIp()) != 0 {
				t.Errorf("row shipped twice: %v", b.Rows.SrcIp)
			}
		}
	})
}
