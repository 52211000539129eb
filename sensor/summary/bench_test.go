package summary_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/gopacket/layers"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/packet"
	"github.com/jasperfed/jasper/sensor/summary"
	"github.com/jasperfed/jasper/sensor/synth"
)

type frame struct {
	data []byte
	ts   time.Time
}

// synthFrames returns n frames of the synthetic darknet capture.
func synthFrames(b *testing.B, n int) []frame {
	cfg := synth.DefaultConfig()
	cfg.Packets = n
	g, err := synth.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := g.WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "s.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	src, err := capture.OpenFile(path)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	var out []frame
	for {
		data, ci, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, frame{append([]byte(nil), data...), ci.Timestamp})
	}
}

// BenchmarkDecodeClassify is the decoder alone, per packet.
func BenchmarkDecodeClassify(b *testing.B) {
	frames := synthFrames(b, 100_000)
	d, _ := packet.NewDecoder(layers.LinkTypeEthernet)
	var info packet.Info
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		d.Decode(frames[i%len(frames)].data, &info)
	}
}

// BenchmarkPipelineKnownKeys decodes, classifies and aggregates packets
// whose rows already exist (the steady state of a bin): ns/op is per
// packet, and allocs/op must be 0.
func BenchmarkPipelineKnownKeys(b *testing.B) {
	frames := synthFrames(b, 100_000)
	d, _ := packet.NewDecoder(layers.LinkTypeEthernet)
	a, err := summary.NewAggregator(summary.DefaultConfig(), func(*jasperv1.Batch) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	var info packet.Info
	ts := frames[0].ts
	for _, f := range frames {
		_ = a.Add(ts, d.Decode(f.data, &info), &info)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := a.Add(ts, d.Decode(frames[i%len(frames)].data, &info), &info); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPipelineFresh runs whole bins of the synthetic capture (100,000
// packets, new keys included, batches built and marshalled): ns/op is per
// packet.
func BenchmarkPipelineFresh(b *testing.B) {
	frames := synthFrames(b, 100_000)
	d, _ := packet.NewDecoder(layers.LinkTypeEthernet)
	a, err := summary.NewAggregator(summary.DefaultConfig(), func(*jasperv1.Batch) error { return nil })
	if err != nil {
		b.Fatal(err)
	}
	var info packet.Info
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		f := frames[i%len(frames)]
		// Each pass over the frames is its own bin.
		ts := f.ts.Add(time.Duration(i/len(frames)) * time.Hour)
		if err := a.Add(ts, d.Decode(f.data, &info), &info); err != nil {
			b.Fatal(err)
		}
	}
	_ = a.Flush()
}

// BenchmarkRun is the whole pipeline as Run drives it on a capture file:
// read, decode, classify, aggregate, seal and marshal-ready batches. It
// reports ns per packet.
func BenchmarkRun(b *testing.B) {
	cfg := synth.DefaultConfig()
	cfg.Packets = 200_000
	cfg.Sources = 10_000
	g, err := synth.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := g.WriteTo(&buf); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "s.pcap")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		src, err := capture.OpenFile(path)
		if err != nil {
			b.Fatal(err)
		}
		if err := summary.Run(context.Background(), src, summary.DefaultConfig(), func(*jasperv1.Batch) error { return nil }); err != nil {
			b.Fatal(err)
		}
		src.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*cfg.Packets), "ns/packet")
}
