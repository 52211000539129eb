package demo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/synth"
)

// SensorPlan is one demo sensor: its country, darknet and traffic.
type SensorPlan struct {
	ID      string
	Country string
	// SynthDarknet receives the generated outbreak; RealDarknet covers the
	// destinations of the real captures.
	SynthDarknet netip.Prefix
	RealDarknet  []netip.Prefix
	Seed         uint64
	// Real names capture files under sensor/testdata/pcaps of the
	// repository (see its MANIFEST.md for origins and licences).
	Real []string
}

// Darknet is every prefix the sensor observes.
func (p SensorPlan) Darknet() []netip.Prefix {
	return append([]netip.Prefix{p.SynthDarknet}, p.RealDarknet...)
}

// DefaultSensors are the demo's three sensors: Tokyo with the masscan
// scans, Berlin with the nmap SYN scan, São Paulo with the DoS backscatter
// of real reflection attacks, each besides its own generated outbreak.
func DefaultSensors() []SensorPlan {
	return []SensorPlan{
		{ID: "tokyo-1", Country: "JP", SynthDarknet: netip.MustParsePrefix("198.18.0.0/17"), Seed: 11,
			RealDarknet: []netip.Prefix{netip.MustParsePrefix("198.124.152.0/24")},
			Real:        []string{"esnet__masscan_tcp_0_1000_20190821.pcap", "esnet__masscan_udp_0_1000_20190821.pcap"}},
		{ID: "berlin-1", Country: "DE", SynthDarknet: netip.MustParsePrefix("198.18.128.0/17"), Seed: 12,
			RealDarknet: []netip.Prefix{netip.MustParsePrefix("64.13.134.0/24")},
			Real:        []string{"chrissanders__synscan.pcapng"}},
		{ID: "saopaulo-1", Country: "BR", SynthDarknet: netip.MustParsePrefix("198.19.0.0/17"), Seed: 13,
			RealDarknet: []netip.Prefix{netip.MustParsePrefix("10.10.10.0/24")},
			Real: []string{"stopddos__amp.TCP.reflection.SYNACK.pcap", "stopddos__amp.UDP.snmp.src161.pcapng",
				"stopddos__amp.UDP.isakmp.pcap"}},
	}
}

// Size of each sensor's generated outbreak: three minutes of capture time,
// enough for DoS victims to pass the RS-DoS 60 s rule in the first pass.
const (
	synthPackets = 36000
	synthRate    = 200
	synthSources = 3000
	synthVictims = 6
)

// frame is one packet held for merging.
type frame struct {
	ts   time.Time
	data []byte
}

// CaptureInfo describes a sensor's merged capture.
type CaptureInfo struct {
	Path    string
	Packets int
	Span    time.Duration
	Real    []string // real captures merged in
	Skipped []string // real captures left out, with the reason
}

// writeSensorCapture writes the sensor's capture into dir: its generated
// outbreak with the real captures (from pcapDir; "" for none) spread over
// it, merged in time order into one Ethernet pcap.
func writeSensorCapture(p SensorPlan, pcapDir, dir string) (CaptureInfo, error) {
	info := CaptureInfo{Path: filepath.Join(dir, p.ID+".pcap")}
	sc := synth.DefaultConfig()
	sc.Packets, sc.Seed, sc.Sources, sc.Victims, sc.Rate = synthPackets, p.Seed, synthSources, synthVictims, synthRate
	sc.Darknet = p.SynthDarknet
	g, err := synth.New(sc)
	if err != nil {
		return info, err
	}
	tmp := info.Path + ".synth"
	f, err := os.Create(tmp)
	if err != nil {
		return info, err
	}
	if _, err := g.WriteTo(f); err != nil {
		f.Close()
		return info, fmt.Errorf("generate %s: %w", p.ID, err)
	}
	if err := f.Close(); err != nil {
		return info, err
	}
	defer os.Remove(tmp)
	frames, err := readFrames(tmp)
	if err != nil {
		return info, err
	}
	start, span := frames[0].ts, frames[len(frames)-1].ts.Sub(frames[0].ts)
	for i, name := range p.Real {
		if pcapDir == "" {
			info.Skipped = append(info.Skipped, name+": no repository checkout")
			continue
		}
		rf, err := readFrames(filepath.Join(pcapDir, name))
		if err != nil {
			info.Skipped = append(info.Skipped, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		// Place capture i at (i+1)/(n+1) of the outbreak, gaps kept.
		at := start.Add(span * time.Duration(i+1) / time.Duration(len(p.Real)+1))
		shift := at.Sub(rf[0].ts)
		for j := range rf {
			rf[j].ts = rf[j].ts.Add(shift)
		}
		frames = append(frames, rf...)
		info.Real = append(info.Real, name)
	}
	slices.SortStableFunc(frames, func(a, b frame) int { return a.ts.Compare(b.ts) })
	out, err := os.Create(info.Path)
	if err != nil {
		return info, err
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	w := pcapgo.NewWriterNanos(bw)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		out.Close()
		return info, err
	}
	for _, fr := range frames {
		if err := w.WritePacket(gopacket.CaptureInfo{Timestamp: fr.ts, CaptureLength: len(fr.data), Length: len(fr.data)}, fr.data); err != nil {
			out.Close()
			return info, err
		}
	}
	if err := bw.Flush(); err != nil {
		out.Close()
		return info, err
	}
	info.Packets, info.Span = len(frames), frames[len(frames)-1].ts.Sub(frames[0].ts)
	return info, out.Close()
}

// readFrames reads a whole Ethernet capture file into memory.
func readFrames(path string) ([]frame, error) {
	src, err := capture.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	if lt := src.LinkType(); lt != layers.LinkTypeEthernet {
		return nil, fmt.Errorf("link type %v is not Ethernet", lt)
	}
	var out []frame
	for {
		data, ci, err := src.ReadPacket()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		out = append(out, frame{ts: ci.Timestamp, data: append([]byte(nil), data...)})
	}
	if len(out) == 0 {
		return nil, errors.New("no packets")
	}
	return out, nil
}
