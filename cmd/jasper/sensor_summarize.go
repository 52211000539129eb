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
	"runtime/pprof"
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
	if n, ok := classNames[c]; ok {
		return n
	}
	return strconv.Itoa(int(c))
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
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to this file")
	fs.SetOutput(os.Stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *pcap == "" {
		return errors.New("flag --pcap: a capture file is required")
	}
	cfg := def
	// Whole bins: no early flush of partial (delta) rows, whatever the
	// live sensor's default.
	cfg.EarlyFlush = 0
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
		// The aggregation's tables are pointer-free and live for a whole
		// bin: collect rarely, and hard only near the limit (the garbage
		// collector cost 14 % of the instructions at the default GOGC).
		debug.SetMemoryLimit(int64(*memLimit) << 20)
		debug.SetGCPercent(400)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fmt.Errorf("flag --cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("flag --cpuprofile: %w", err)
		}
		defer func() {
			pprof.StopCPUProfile()
			f.Close()
		}()
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
	senc := json.NewEncoder(statsOut)
	var (
		buf      []byte
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
		if err := summary.ValidateBatch(b); err != nil {
			return fmt.Errorf("own batch is invalid: %w", err)
		}
		rows := len(b.Rows.GetSrcIp())
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
		cur.Rows += rows
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
		buf = appendRowsJSON(buf[:0], b, rows)
		_, err = out.Write(buf)
		return err
	}
	if err := summary.Run(ctx, src, cfg, emit); err != nil {
		return err
	}
	if err := flushStats(); err != nil {
		return err
	}
	return out.Flush()
}

// appendRowsJSON appends one JSON object per row of b, straight from the
// columns (encoding/json and DecodeBatch cost more than the whole
// aggregation). Fields: bin_start, src_ip, protocol, dst_port, icmp_type,
// icmp_code, class, packets, bytes, dst_ips, first_seen, last_seen,
// ttl_min, ttl_max, fingerprints, overflow, distinct_ports, fragments, and
// partial on early-flush batches.
func appendRowsJSON(buf []byte, b *jasperv1.Batch, n int) []byte {
	r := b.Rows
	start := time.Unix(b.BinStart, 0).UTC()
	binStart := start.AppendFormat(nil, time.RFC3339)
	var tf timeFormatter
	for i := range n {
		buf = append(buf, `{"bin_start":"`...)
		buf = append(buf, binStart...)
		buf = append(buf, `","src_ip":"`...)
		ip, _ := netip.AddrFromSlice(r.SrcIp[i])
		buf = ip.AppendTo(buf)
		buf = append(buf, `","protocol":"`...)
		buf = append(buf, protocolName(uint8(r.Protocol[i]))...)
		buf = append(buf, `","dst_port":`...)
		buf = strconv.AppendUint(buf, uint64(r.DstPort[i]), 10)
		buf = append(buf, `,"icmp_type":`...)
		buf = strconv.AppendUint(buf, uint64(r.IcmpType[i]), 10)
		buf = append(buf, `,"icmp_code":`...)
		buf = strconv.AppendUint(buf, uint64(r.IcmpCode[i]), 10)
		buf = append(buf, `,"class":"`...)
		buf = append(buf, className(r.Class[i])...)
		buf = append(buf, `","packets":`...)
		buf = strconv.AppendUint(buf, r.Packets[i], 10)
		buf = append(buf, `,"bytes":`...)
		buf = strconv.AppendUint(buf, r.Bytes[i], 10)
		buf = append(buf, `,"dst_ips":`...)
		buf = strconv.AppendUint(buf, uint64(r.DstIps[i]), 10)
		buf = append(buf, `,"first_seen":"`...)
		buf = tf.append(buf, b.BinStart, r.FirstSeenMs[i])
		buf = append(buf, `","last_seen":"`...)
		buf = tf.append(buf, b.BinStart, r.LastSeenMs[i])
		buf = append(buf, `","ttl_min":`...)
		buf = strconv.AppendUint(buf, uint64(r.TtlMin[i]), 10)
		buf = append(buf, `,"ttl_max":`...)
		buf = strconv.AppendUint(buf, uint64(r.TtlMax[i]), 10)
		buf = append(buf, `,"fingerprints":{`...)
		first := true
		for _, fc := range r.Fingerprints {
			if v := fc.Packets[i]; v != 0 {
				if !first {
					buf = append(buf, ',')
				}
				first = false
				buf = strconv.AppendQuote(buf, fc.Name)
				buf = append(buf, ':')
				buf = strconv.AppendUint(buf, v, 10)
			}
		}
		buf = append(buf, `},"overflow":`...)
		buf = strconv.AppendBool(buf, r.Overflow[i])
		buf = append(buf, `,"distinct_ports":`...)
		buf = strconv.AppendUint(buf, uint64(r.DistinctPorts[i]), 10)
		buf = append(buf, `,"fragments":`...)
		buf = strconv.AppendUint(buf, uint64(r.Fragments[i]), 10)
		if b.Partial {
			buf = append(buf, `,"partial":true`...)
		}
		buf = append(buf, "}\n"...)
	}
	return buf
}

// classNames are the JSON names of the traffic classes.
var classNames = func() map[jasperv1.TrafficClass]string {
	m := map[jasperv1.TrafficClass]string{}
	for v, n := range jasperv1.TrafficClass_name {
		m[jasperv1.TrafficClass(v)] = strings.ToLower(strings.TrimPrefix(n, "TRAFFIC_CLASS_"))
	}
	return m
}()

// timeFormatter formats bin_start + ms exactly as time.RFC3339Nano does in
// UTC, caching the formatted seconds (formatting dates dominated the
// output cost).
type timeFormatter struct {
	secs  [64]int64
	texts [64][]byte
}

func (f *timeFormatter) append(buf []byte, binStart int64, ms uint32) []byte {
	sec := binStart + int64(ms/1000)
	frac := ms % 1000
	slot := sec & 63
	if f.texts[slot] == nil || f.secs[slot] != sec {
		f.texts[slot] = time.Unix(sec, 0).UTC().AppendFormat(f.texts[slot][:0], "2006-01-02T15:04:05")
		f.secs[slot] = sec
	}
	buf = append(buf, f.texts[slot]...)
	if frac != 0 {
		d := [4]byte{'.', byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
		n := 4
		for d[n-1] == '0' {
			n--
		}
		buf = append(buf, d[:n]...)
	}
	return append(buf, 'Z')
}
