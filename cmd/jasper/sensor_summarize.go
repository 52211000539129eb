package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

func init() {
	sensorCommands["summarize"] = command{
		summary: "summarise a pcap/pcapng capture as JSON Lines rows",
		run:     runSensorSummarize,
	}
}

// summaryRowJSON is one line of `jasper sensor summarize`.
type summaryRowJSON struct {
	BinStart      string            `json:"bin_start"`
	SrcIP         string            `json:"src_ip"`
	Protocol      string            `json:"protocol"`
	DstPort       uint16            `json:"dst_port"`
	ICMPType      uint8             `json:"icmp_type"`
	ICMPCode      uint8             `json:"icmp_code"`
	Class         string            `json:"class"`
	Packets       uint64            `json:"packets"`
	Bytes         uint64            `json:"bytes"`
	DstIPs        uint32            `json:"dst_ips"`
	FirstSeen     string            `json:"first_seen"`
	LastSeen      string            `json:"last_seen"`
	TTLMin        uint8             `json:"ttl_min"`
	TTLMax        uint8             `json:"ttl_max"`
	Fingerprints  map[string]uint64 `json:"fingerprints"`
	Overflow      bool              `json:"overflow"`
	DistinctPorts uint32            `json:"distinct_ports"`
	Fragments     uint32            `json:"fragments"`
	Partial       bool              `json:"partial,omitempty"`
}

// statsJSON is the per-bin stats line of `jasper sensor summarize`.
type statsJSON struct {
	BinStart          string `json:"bin_start"`
	Rows              int    `json:"rows"`
	Batches           int    `json:"batches"`
	PacketsSeen       uint64 `json:"packets_seen"`
	PacketsSummarised uint64 `json:"packets_summarised"`
	OutsideDarknet    uint64 `json:"outside_darknet"`
	DecodeErrors      uint64 `json:"decode_errors"`
	NonIP             uint64 `json:"non_ip"`
	Fragments         uint64 `json:"fragments"`
	OverflowRows      uint64 `json:"overflow_rows"`
	KernelDrops       uint64 `json:"kernel_drops"`
}

func protocolName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	}
	return strconv.Itoa(int(p))
}

// className turns TRAFFIC_CLASS_TCP_SYNACK into tcp_synack.
func className(c jasperv1.TrafficClass) string {
	return strings.ToLower(strings.TrimPrefix(c.String(), "TRAFFIC_CLASS_"))
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			a, aerr := netip.ParseAddr(f)
			if aerr != nil {
				return nil, fmt.Errorf("%q is not a CIDR prefix", f)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func runSensorSummarize(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("jasper sensor summarize", flag.ContinueOnError)
	def := summary.DefaultConfig()
	pcap := fs.String("pcap", "", "capture file to read (pcap or pcapng, gzip allowed)")
	darknet := fs.String("darknet", "", "darknet prefixes, comma-separated CIDRs (default: every address)")
	bin := fs.Duration("bin", def.Bin, "bin length (whole seconds)")
	portCap := fs.Int("port-cap", def.PortCap, "rows per source per bin before ports fold into an overflow row")
	maxRows := fs.Int("max-rows", def.MaxRowsPerBin, "rows per bin before new keys are dropped (counted)")
	stats := fs.Bool("stats", false, "write each bin's stats as JSON Lines to stdout (\"stats\" objects) instead of stderr")
	memLimit := fs.Int("mem-limit-mib", 200, "soft Go memory limit in MiB (0: none)")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *pcap == "" {
		return errors.New("flag --pcap: a capture file is required")
	}
	cfg := def
	cfg.Bin = *bin
	cfg.PortCap = *portCap
	cfg.MaxRowsPerBin = *maxRows
	if *darknet != "" {
		p, err := parsePrefixes(*darknet)
		if err != nil {
			return fmt.Errorf("flag --darknet: %w", err)
		}
		cfg.Darknet = p
	}
	if err := cfg.Validate(); err != nil {
		// Config keys are snake_case; the flags are the same names with dashes.
		msg := strings.NewReplacer("port_cap", "--port-cap", "max_rows_per_bin", "--max-rows", "bin:", "--bin:").Replace(err.Error())
		return fmt.Errorf("flag %s", msg)
	}
	if *memLimit > 0 {
		debug.SetMemoryLimit(int64(*memLimit) << 20)
	}
	src, err := capture.OpenFile(*pcap)
	if err != nil {
		return err
	}
	defer src.Close()

	out := bufio.NewWriterSize(os.Stdout, 256<<10)
	statsOut := io.Writer(os.Stderr)
	if *stats {
		statsOut = out
	}
	enc := json.NewEncoder(out)
	senc := json.NewEncoder(statsOut)
	var (
		cur      statsJSON
		curStart int64 = -1 << 62
		haveCur  bool
	)
	flushStats := func() error {
		if !haveCur {
			return nil
		}
		haveCur = false
		if *stats {
			return senc.Encode(struct {
				Stats statsJSON `json:"stats"`
			}{cur})
		}
		return senc.Encode(cur)
	}
	emit := func(b *jasperv1.Batch) error {
		rows, err := summary.DecodeBatch(b)
		if err != nil {
			return fmt.Errorf("own batch does not decode: %w", err)
		}
		start := time.Unix(b.BinStart, 0).UTC()
		if b.BinStart != curStart {
			if err := flushStats(); err != nil {
				return err
			}
			curStart = b.BinStart
			cur = statsJSON{BinStart: start.Format(time.RFC3339)}
		}
		haveCur = true
		cur.Batches++
		cur.Rows += len(rows)
		if s := b.Stats; s != nil {
			cur.PacketsSeen += s.PacketsSeen
			cur.PacketsSummarised += s.PacketsSummarised
			cur.OutsideDarknet += s.OutsideDarknet
			cur.DecodeErrors += s.DecodeErrors
			cur.NonIP += s.NonIp
			cur.Fragments += s.Fragments
			cur.OverflowRows += s.OverflowRows
			cur.KernelDrops += s.KernelDrops
		}
		binStart := start.Format(time.RFC3339)
		for i := range rows {
			r := &rows[i]
			fp := r.Fingerprints
			if fp == nil {
				fp = map[string]uint64{}
			}
			if err := enc.Encode(summaryRowJSON{
				BinStart: binStart, SrcIP: r.SrcIP.String(), Protocol: protocolName(r.Protocol),
				DstPort: r.DstPort, ICMPType: r.ICMPType, ICMPCode: r.ICMPCode, Class: className(r.Class),
				Packets: r.Packets, Bytes: r.Bytes, DstIPs: r.DstIPs,
				FirstSeen: r.FirstSeen.Format(time.RFC3339Nano), LastSeen: r.LastSeen.Format(time.RFC3339Nano),
				TTLMin: r.TTLMin, TTLMax: r.TTLMax, Fingerprints: fp, Overflow: r.Overflow,
				DistinctPorts: r.DistinctPorts, Fragments: r.Fragments, Partial: b.Partial,
			}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := summary.Run(ctx, src, cfg, emit); err != nil {
		return err
	}
	if err := flushStats(); err != nil {
		return err
	}
	return out.Flush()
}
