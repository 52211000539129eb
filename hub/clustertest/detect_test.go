package clustertest

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/jasperfed/jasper/internal/pki"
)

// plantedHost is an infected host written into a capture: its first
// packet and the packet that takes it over the infected-host threshold
// (the 10th packet to a new dark address, hub/detect's defaults), in the
// capture's own time.
type plantedHost struct {
	addr         netip.Addr
	first, cross time.Time
}

// infectedCapture describes a capture written by writeInfectedCapture.
type infectedCapture struct {
	first, last time.Time
	hosts       []plantedHost
}

// writeInfectedCapture writes a capture of span: background darknet
// traffic every 50 ms from private sources (never findings), and n
// planted infected hosts at routable addresses, one starting every 2.3 s
// (so that their crossings fall at every phase of the sensor's 2 s early
// flush), each sending 14 TCP SYNs to new dark addresses 250 ms apart.
func writeInfectedCapture(t *testing.T, path string, n int, span time.Duration) infectedCapture {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := pcapgo.NewWriter(f)
	if err := w.WriteFileHeader(65535, layers.LinkTypeEthernet); err != nil {
		t.Fatal(err)
	}
	type pkt struct {
		ts       time.Time
		src, dst net.IP
		port     uint16
	}
	rng := rand.New(rand.NewPCG(7, 8))
	base := time.Date(2026, 1, 5, 10, 0, 0, 0, time.UTC)
	var pkts []pkt
	for at := time.Duration(0); at <= span; at += 50 * time.Millisecond {
		pkts = append(pkts, pkt{base.Add(at), net.IPv4(10, 9, byte(rng.IntN(4)), byte(rng.IntN(250))).To4(),
			net.IPv4(198, 51, 100, byte(rng.IntN(256))).To4(), []uint16{22, 80, 445, 3389}[rng.IntN(4)]})
	}
	out := infectedCapture{first: base, last: base.Add(span - span%(50*time.Millisecond))}
	for k := range n {
		h := plantedHost{addr: netip.AddrFrom4([4]byte{45, 77, byte(k), byte(10 + k)})}
		start := base.Add(3*time.Second + time.Duration(k)*2300*time.Millisecond)
		for i := range 14 {
			ts := start.Add(time.Duration(i) * 250 * time.Millisecond)
			if i == 0 {
				h.first = ts
			}
			if i == 9 {
				h.cross = ts
			}
			// +1 ns keeps the order stable against the background.
			pkts = append(pkts, pkt{ts.Add(time.Nanosecond), h.addr.AsSlice(), net.IPv4(198, 51, 100, byte(k*14+i)).To4(), 23})
		}
		if h.cross.After(out.last) {
			t.Fatalf("host %d crosses after the capture's end", k)
		}
		out.hosts = append(out.hosts, h)
	}
	slices.SortStableFunc(pkts, func(a, b pkt) int { return a.ts.Compare(b.ts) })
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for i, p := range pkts {
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(i), SrcIP: p.src, DstIP: p.dst, Protocol: layers.IPProtocolTCP}
		// A random sequence number: never Mirai's (seq == destination).
		tcp := &layers.TCP{SrcPort: layers.TCPPort(1024 + rng.IntN(60000)), DstPort: layers.TCPPort(p.port), SYN: true, Seq: rng.Uint32() | 1<<31, Window: 1024}
		tcp.SetNetworkLayerForChecksum(ip)
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{Timestamp: p.ts, CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// findingLine is a hub's "finding_new" log line (cmd/jasper hub_detect.go).
type findingLine struct {
	at          time.Time
	typ, src    string
	firstSeenMs int64
}

// findingsInLog reads the finding_new lines of a hub's text log.
func findingsInLog(path string) []findingLine {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []findingLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, "msg=finding_new") {
			continue
		}
		var fl findingLine
		for _, kv := range strings.Fields(line) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "time":
				fl.at, _ = time.Parse(time.RFC3339Nano, v)
			case "type":
				fl.typ = v
			case "src":
				fl.src = v
			case "first_seen_ms":
				fl.firstSeenMs, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		out = append(out, fl)
	}
	return out
}

// TestInfectedHostLatency replays a capture with planted infected hosts
// through a real `jasper sensor run` process (rebased, paced in real
// time, default settings: early flush every 2 s) into three hub processes
// with the default detectors, and checks that every planted host becomes
// an infected-host finding and no background source does. It logs the
// latency from each host's crossing packet (the 10th) to its finding
// being applied on the first hub, p50/p95/max: the fast path's target is
// p95 below 5 s.
//
// The crossing packet's wall-clock time is recovered from the finding:
// the rebase offset is its first_seen_ms minus the host's first packet
// time in the file, the replay opened when the file's last packet was
// shifted to, and a paced replay hands packet p out at open + (p - the
// file's first packet). The replay starts reading a few milliseconds
// after it opens, so the figures err on the long side by that much.
func TestInfectedHostLatency(t *testing.T) {
	needBinary(t)
	hosts := envInt("JASPER_LATENCY_HOSTS", 36)
	span := 3*time.Second + time.Duration(hosts)*2300*time.Millisecond + 4*time.Second
	c := newCluster(t, 3)
	dir := t.TempDir()
	capPath := filepath.Join(dir, "infected.pcap")
	capt := writeInfectedCapture(t, capPath, hosts, span)

	files := c.issue(pki.Identity{Role: pki.RoleSensor, ID: "jp-lat-1", Country: "JP", Prefixes: []netip.Prefix{sensorDarknet}})
	cfgPath := filepath.Join(dir, "sensor.yaml")
	cfg := fmt.Sprintf(`id: jp-lat-1
source:
  replay: {file: %q, speed: 1, rebase: true}
darknet: [%s]
spool: {dir: %q}
hubs: [%s]
tls: {ca: %q, cert: %q, key: %q}
metrics: {listen: ""}
log: {format: text, level: info}
`, capPath, sensorDarknet, filepath.Join(dir, "spool"), strings.Join(c.ingestAddrs(c.hubs...), ", "), files.CA, files.Cert, files.Key)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "sensor.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	c.leaderAmong(c.hubs...)
	cmd := exec.Command(jasperBin, "sensor", "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			lines := strings.Split(string(b), "\n")
			if len(lines) > 30 {
				lines = lines[len(lines)-30:]
			}
			t.Logf("--- sensor log:\n%s", strings.Join(lines, "\n"))
		}
	})

	want := map[string]plantedHost{}
	for _, h := range capt.hosts {
		want[h.addr.String()] = h
	}
	// The first hub to apply each host's finding.
	first := map[string]findingLine{}
	var others []findingLine
	collect := func() {
		clear(first)
		others = others[:0]
		for _, h := range c.hubs {
			for _, fl := range findingsInLog(h.logPath) {
				if _, ok := want[fl.src]; !ok || fl.typ != "infected_host" {
					others = append(others, fl)
					continue
				}
				if prev, ok := first[fl.src]; !ok || fl.at.Before(prev.at) {
					first[fl.src] = fl
				}
			}
		}
	}
	waitFor(t, fmt.Sprintf("infected-host findings for %d planted hosts", hosts), span+90*time.Second, func() bool {
		collect()
		return len(first) == len(want)
	})
	// A moment more for stray findings to show.
	time.Sleep(2 * time.Second)
	collect()
	for _, o := range others {
		t.Errorf("unexpected finding: %s %s", o.typ, o.src)
	}
	var lat []time.Duration
	for src, fl := range first {
		h := want[src]
		offset := time.UnixMilli(fl.firstSeenMs).Sub(h.first.Truncate(time.Millisecond))
		open := capt.last.Add(offset)
		crossWall := open.Add(h.cross.Sub(capt.first))
		lat = append(lat, fl.at.Sub(crossWall))
	}
	slices.Sort(lat)
	q := func(p int) time.Duration { return lat[min(len(lat)-1, len(lat)*p/100)] }
	t.Logf("infected-host finding latency, crossing packet to finding applied on the first hub, %d hosts: min %v p50 %v p95 %v max %v (target p95 < 5s)",
		len(lat), lat[0].Round(time.Millisecond), q(50).Round(time.Millisecond), q(95).Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond))
	if lat[0] < 0 {
		t.Logf("note: a negative latency means the reconstruction of the crossing time is off by that much")
	}
}
