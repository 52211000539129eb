package sensor

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
)

// writeShortCapture writes n UDP frames evenly over span, starting in 2019.
func writeShortCapture(t *testing.T, n int, span time.Duration) (string, time.Time) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "short.pcap")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2019, 8, 21, 18, 16, 47, 0, time.UTC)
	for i := range n {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Protocol: layers.IPProtocolUDP, SrcIP: net.IPv4(203, 0, 113, 7).To4(), DstIP: net.IPv4(198, 51, 100, byte(i)).To4()}
		udp := &layers.UDP{SrcPort: 4000, DstPort: 53}
		udp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, udp); err != nil {
			t.Fatal(err)
		}
		var at time.Time
		if n > 1 {
			at = base.Add(span * time.Duration(i) / time.Duration(n-1))
		} else {
			at = base
		}
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: at, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	return path, base
}

// readPass reads one pass to io.EOF, checking that no packet is handed out
// before its timestamp, and returns the timestamps.
func readPass(t *testing.T, r *replay) []time.Time {
	t.Helper()
	var ts []time.Time
	for {
		_, ci, err := r.ReadPacket()
		if errors.Is(err, io.EOF) {
			return ts
		}
		if err != nil {
			t.Fatal(err)
		}
		if now := time.Now(); ci.Timestamp.After(now.Add(2 * time.Millisecond)) {
			t.Fatalf("packet stamped %v handed out at %v (in the future)", ci.Timestamp, now)
		}
		ts = append(ts, ci.Timestamp)
	}
}

func TestReplayRebaseEndsNow(t *testing.T) {
	path, _ := writeShortCapture(t, 5, 400*time.Millisecond)
	now := time.Now().Truncate(time.Millisecond)
	r, err := openReplaySource(path, 0, true, false, now)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.pace.Store(true)
	ts := readPass(t, r)
	if len(ts) != 5 {
		t.Fatalf("read %d packets, want 5", len(ts))
	}
	if !ts[4].Equal(now) || !ts[0].Equal(now.Add(-400*time.Millisecond)) {
		t.Fatalf("rebased span %v .. %v, want %v .. %v", ts[0], ts[4], now.Add(-400*time.Millisecond), now)
	}
	for i := 1; i < len(ts); i++ {
		if d := ts[i].Sub(ts[i-1]); d != 100*time.Millisecond {
			t.Fatalf("gap %d is %v, want the capture's 100ms", i, d)
		}
	}
}

func TestReplayWithoutRebaseKeepsTimes(t *testing.T) {
	path, base := writeShortCapture(t, 3, time.Second)
	r, err := openReplaySource(path, 0, false, false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ts := readPass(t, r)
	if len(ts) != 3 || !ts[0].Equal(base) {
		t.Fatalf("times %v, want the capture's from %v", ts, base)
	}
}

func TestReplayLoopContinuesInTime(t *testing.T) {
	path, _ := writeShortCapture(t, 4, 300*time.Millisecond)
	now := time.Now()
	r, err := openReplaySource(path, 0, true, true, now)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.pace.Store(true)
	var all []time.Time
	for pass := range 3 {
		if pass > 0 {
			if err := r.nextPass(); err != nil {
				t.Fatalf("pass %d: %v", pass, err)
			}
		}
		ts := readPass(t, r)
		if len(ts) != 4 {
			t.Fatalf("pass %d read %d packets, want 4", pass, len(ts))
		}
		if pass > 0 {
			if gap := ts[0].Sub(all[len(all)-1]); gap != passGap {
				t.Fatalf("pass %d starts %v after the previous one, want %v", pass, gap, passGap)
			}
		}
		all = append(all, ts...)
	}
	r.Close()
	if err := r.nextPass(); !errors.Is(err, io.EOF) {
		t.Fatalf("nextPass after Close: %v, want io.EOF", err)
	}
}

func TestReplayLoopOverEmptyCaptureEnds(t *testing.T) {
	path, _ := writeShortCapture(t, 0, 0)
	r, err := openReplaySource(path, 0, true, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if ts := readPass(t, r); len(ts) != 0 {
		t.Fatalf("read %d packets from an empty capture", len(ts))
	}
	if err := r.nextPass(); !errors.Is(err, io.EOF) {
		t.Fatalf("nextPass over an empty capture: %v, want io.EOF", err)
	}
}

func TestReplayCloseWakesHeldPacket(t *testing.T) {
	path, _ := writeShortCapture(t, 2, time.Hour)
	// Rebased to end an hour from now: the second packet is held.
	r, err := openReplaySource(path, 0, true, false, time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	r.pace.Store(true)
	done := make(chan error, 1)
	go func() {
		_, _, err := r.ReadPacket() // stamped now: handed out
		if err == nil {
			_, _, err = r.ReadPacket()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, io.EOF) {
			t.Fatalf("held read returned %v, want io.EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not wake a held read")
	}
}

func TestLoopNeedsRebase(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID, cfg.Darknet, cfg.Hubs = "s1", []string{"198.51.100.0/24"}, []string{"127.0.0.1:1"}
	cfg.Spool.Dir = t.TempDir()
	cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key = "ca.pem", "c.pem", "k.pem"
	cfg.Source.Replay.File = "x.pcap"
	cfg.Source.Replay.Loop = true
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "source.replay.loop") {
		t.Fatalf("Validate: %v, want an error naming source.replay.loop", err)
	}
	cfg.Source.Replay.Rebase = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate with rebase: %v", err)
	}
}
