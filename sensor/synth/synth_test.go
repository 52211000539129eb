package synth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
	"github.com/jasperfed/jasper/sensor/synth"
)

func write(t *testing.T, cfg synth.Config) []byte {
	t.Helper()
	g, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := g.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestDeterministic(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Packets = 20000
	a, b := write(t, cfg), write(t, cfg)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different bytes")
	}
	cfg.Seed = 2
	if bytes.Equal(a, write(t, cfg)) {
		t.Fatal("different seeds, same bytes")
	}
	// A change of this hash means existing benchmark captures change too:
	// update sensor/BENCHMARKS.md when it does.
	sum := sha256.Sum256(a)
	const want = "20004cc0d78b5cef4d20616fa5cf9c53ff0a3e174251a9114538f8e74eaa0dab"
	if got := hex.EncodeToString(sum[:]); got != want {
		t.Errorf("sha256 of the 20,000-packet capture with seed 1 is %s, want %s", got, want)
	}
}

func TestMix(t *testing.T) {
	cfg := synth.DefaultConfig()
	cfg.Packets = 100000
	path := filepath.Join(t.TempDir(), "synth.pcap")
	if err := os.WriteFile(path, write(t, cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var rows []summary.Row
	stats, err := summary.RunStats(context.Background(), src, summary.DefaultConfig(), func(b *jasperv1.Batch) error {
		r, err := summary.DecodeBatch(b)
		rows = append(rows, r...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if stats.PacketsSeen != 100000 || stats.PacketsSummarised != 100000 || stats.DecodeErrors != 0 {
		t.Fatalf("stats %+v", stats)
	}
	byClass := map[jasperv1.TrafficClass]uint64{}
	fp := map[string]uint64{}
	ports := map[uint16]uint64{}
	srcs := map[string]bool{}
	for _, r := range rows {
		byClass[r.Class] += r.Packets
		for k, v := range r.Fingerprints {
			fp[k] += v
		}
		if r.Class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN {
			ports[r.DstPort] += r.Packets
		}
		srcs[r.SrcIP.String()] = true
	}
	t.Logf("classes %v fingerprints %v sources %d", byClass, fp, len(srcs))
	for _, c := range []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK,
		jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST, jasperv1.TrafficClass_TRAFFIC_CLASS_UDP, jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP} {
		if byClass[c] == 0 {
			t.Errorf("no %v packets", c)
		}
	}
	if fp["mirai"] == 0 || fp["zmap"] == 0 || fp["masscan"] == 0 {
		t.Errorf("fingerprints %v", fp)
	}
	if ports[23] < ports[22] || ports[22] == 0 || ports[2323] == 0 {
		t.Errorf("port mix: 23=%d 2323=%d 22=%d", ports[23], ports[2323], ports[22])
	}
	if len(srcs) < 40000 {
		t.Errorf("only %d sources", len(srcs))
	}
}
