package sensor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/spool"
	"github.com/jasperfed/jasper/sensor/summary"
	"github.com/jasperfed/jasper/sensor/uplink/uplinktest"
)

// The test binary doubles as the sensor process: with this variable set it
// runs what `jasper sensor run --config FILE` runs, and exits.
const subprocessEnv = "JASPER_TEST_SENSOR_CONFIG"

func TestMain(m *testing.M) {
	if path := os.Getenv(subprocessEnv); path != "" {
		os.Exit(sensorProcess(path))
	}
	os.Exit(m.Run())
}

func sensorProcess(path string) int {
	cfg, err := LoadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := Serve(ctx, cfg, "test", os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

var darknet = netip.MustParsePrefix("198.51.100.0/24")

// writeCapture writes a fixed-seed capture of n frames over 30 minutes and
// returns how many of them go to the darknet.
func writeCapture(t *testing.T, path string, n int) (inDarknet uint64) {
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
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	step := 30 * time.Minute / time.Duration(n)
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	ports := []uint16{23, 2323, 22, 80, 443, 445, 3389, 8080}
	for i := range n {
		src := net.IPv4(203, 0, byte(rng.IntN(16)), byte(rng.IntN(250))).To4()
		dst := net.IPv4(198, 51, 100, byte(rng.IntN(256))).To4()
		if rng.IntN(100) < 15 {
			dst = net.IPv4(192, 0, 2, byte(rng.IntN(256))).To4()
		} else {
			inDarknet++
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: uint8(32 + rng.IntN(200)), Id: uint16(i), SrcIP: src, DstIP: dst}
		var l4 gopacket.SerializableLayer
		switch k := rng.IntN(10); {
		case k < 7:
			ip.Protocol = layers.IPProtocolTCP
			tcp := &layers.TCP{SrcPort: layers.TCPPort(1024 + rng.IntN(60000)), DstPort: layers.TCPPort(ports[rng.IntN(len(ports))]), SYN: true, Seq: rng.Uint32(), Window: 1024}
			tcp.SetNetworkLayerForChecksum(ip)
			l4 = tcp
		case k < 9:
			ip.Protocol = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(1024 + rng.IntN(60000)), DstPort: layers.UDPPort([]uint16{53, 123, 1900, 5060}[rng.IntN(4)])}
			udp.SetNetworkLayerForChecksum(ip)
			l4 = udp
		default:
			ip.Protocol = layers.IPProtocolICMPv4
			l4 = &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(layers.ICMPv4TypeEchoRequest, 0), Id: uint16(i)}
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload([]byte("jasper-test"))); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * step), CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
	return inDarknet
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// metric reads one unlabelled sample from a Prometheus text page.
func metric(page, name string) (float64, bool) {
	sc := bufio.NewScanner(strings.NewReader(page))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(line[len(name):]), 64)
			return v, err == nil
		}
	}
	return 0, false
}

func get(url string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type proc struct {
	cmd    *exec.Cmd
	stderr *bytes.Buffer
}

func startSensor(t *testing.T, cfgPath string) *proc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), subprocessEnv+"="+cfgPath)
	var buf bytes.Buffer
	cmd.Stderr = &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, stderr: &buf}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return p
}

// spooledSequences reads the "batch_spooled" log lines of a run.
func spooledSequences(t *testing.T, log []byte) []uint64 {
	t.Helper()
	var out []uint64
	for _, line := range bytes.Split(log, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"batch_spooled"`)) {
			continue
		}
		var rec struct {
			Sequence uint64 `json:"sequence"`
		}
		if err := json.Unmarshal(line, &rec); err != nil {
			continue // a line cut by kill -9
		}
		out = append(out, rec.Sequence)
	}
	return out
}

func waitCond(t *testing.T, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestKillNineNoLossNoDuplicate replays a capture through a sensor process
// streaming to an mTLS test hub, kills the process with SIGKILL twice in
// mid-stream, restarts it each time, and checks that every batch the sensor
// spooled reached the hub, that the hub holds each batch of the capture
// exactly once, and that the packets at the hub are exactly the capture's
// darknet packets.
func TestKillNineNoLossNoDuplicate(t *testing.T) {
	if testing.Short() {
		t.Skip("process-level test")
	}
	dir := t.TempDir()
	const frames = 24000
	pcapPath := filepath.Join(dir, "replay.pcap")
	wantDark := writeCapture(t, pcapPath, frames)

	// What the summariser makes of the capture, in process.
	sc := summary.DefaultConfig()
	sc.Darknet = []netip.Prefix{darknet}
	sc.MaxBatchBytes = 2048
	src, err := capture.OpenFile(pcapPath)
	if err != nil {
		t.Fatal(err)
	}
	var wantBatches int
	totals, err := summary.RunStats(context.Background(), src, sc, func(*jasperv1.Batch) error { wantBatches++; return nil })
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	if totals.PacketsSummarised != wantDark || totals.PacketsSeen != frames {
		t.Fatalf("summariser totals %+v; capture has %d frames, %d in the darknet", totals, frames, wantDark)
	}
	if wantBatches < 100 {
		t.Fatalf("capture gives only %d batches", wantBatches)
	}

	pk, err := uplinktest.NewPKI(filepath.Join(dir, "pki"), "jp-test-1", []netip.Prefix{darknet})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := uplinktest.Start("127.0.0.1:0", pk.Hub)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Stop()
	hub.OnBatch = func(*jasperv1.Batch) (*jasperv1.Refusal, error) {
		time.Sleep(10 * time.Millisecond) // a hub slower than the sensor: the spool holds a backlog
		return nil, nil
	}

	metricsAddr := freeAddr(t)
	cfgPath := filepath.Join(dir, "sensor.yaml")
	cfgYAML := fmt.Sprintf(`id: jp-test-1
source:
  replay: {file: replay.pcap, speed: 600}
darknet: [%s]
bin: 60s
max_batch_bytes: 2048
spool: {dir: spool, max_bytes: 64MiB, segment_bytes: 64KiB}
hubs: [%s]
tls: {ca: %s, cert: %s, key: %s}
uplink: {window: 8, backoff_min: 20ms, backoff_max: 200ms}
metrics: {listen: "%s"}
log: {format: json, level: debug}
`, darknet, hub.Addr, pk.Sensor.CA, pk.Sensor.Cert, pk.Sensor.Key, metricsAddr)
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}

	stored := func() int { return len(hub.Sequences("jp-test-1")) }
	var spooled []uint64
	for round, killAt := range []int{wantBatches / 4, wantBatches / 2} {
		p := startSensor(t, cfgPath)
		waitCond(t, fmt.Sprintf("round %d: %d batches at the hub", round, killAt), 60*time.Second, func() bool { return stored() >= killAt })
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		p.cmd.Wait()
		seqs := spooledSequences(t, p.stderr.Bytes())
		sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 64 << 20, SegmentBytes: 64 << 10, MaxQuarantineFiles: 64}, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := sp.Stats()
		sp.Close()
		t.Logf("round %d: killed with %d batches at the hub, %d spooled in this run, %d unacked in the spool", round, stored(), len(seqs), st.Batches)
		spooled = append(spooled, seqs...)
	}

	// The last run meets a hub that does not say what it has: the sensor
	// resends its spool and the hub must recognise what it already holds.
	hub.SetWelcomeZero(true)
	p := startSensor(t, cfgPath)
	base := "http://" + metricsAddr
	waitCond(t, "the replay to finish and the spool to empty", 90*time.Second, func() bool {
		code, page := get(base + "/metrics")
		if code != 200 {
			return false
		}
		done, _ := metric(page, "jasper_sensor_source_finished")
		depth, ok := metric(page, "jasper_sensor_spool_batches")
		return done == 1 && ok && depth == 0
	})
	if code, _ := get(base + "/readyz"); code != 200 {
		t.Fatalf("/readyz %d while connected", code)
	}
	if code, _ := get(base + "/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	_, page := get(base + "/metrics")
	if skipped, _ := metric(page, "jasper_sensor_replay_skipped_batches_total"); skipped == 0 {
		t.Fatal("the last run did not resume the replay")
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("sensor exit after SIGTERM: %v\n%s", err, tail(p.stderr.String()))
	}
	spooled = append(spooled, spooledSequences(t, p.stderr.Bytes())...)

	// Every sequence a run logged as spooled is at the hub.
	have := hub.Batches("jp-test-1")
	for _, s := range spooled {
		if have[s] == nil {
			t.Fatalf("sequence %d was spooled but never reached the hub", s)
		}
	}
	// The hub holds each batch of the capture once: as many batches as the
	// summariser makes, with the capture's packets and stats, no more.
	var packets, seen, outside uint64
	for _, b := range have {
		for _, n := range b.Rows.Packets {
			packets += n
		}
		seen += b.Stats.GetPacketsSeen()
		outside += b.Stats.GetOutsideDarknet()
	}
	received, dups := hub.Counts()
	t.Logf("hub: %d batches stored, %d batch messages received, %d recognised duplicates; %d spooled sequences logged; capture %d frames, %d darknet, %d batches",
		len(have), received, dups, len(spooled), frames, wantDark, wantBatches)
	if dups == 0 {
		t.Fatal("no batch was resent: the duplicate path went untested")
	}
	if len(have) != wantBatches {
		t.Fatalf("hub holds %d batches, the capture makes %d", len(have), wantBatches)
	}
	if packets != wantDark {
		t.Fatalf("hub counts %d darknet packets, the capture has %d", packets, wantDark)
	}
	if seen != frames || outside != frames-wantDark {
		t.Fatalf("hub stats: %d frames seen, %d outside; capture %d, %d", seen, outside, frames, frames-wantDark)
	}
	// The spool is empty after the clean stop.
	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Config{MaxBytes: 64 << 20, SegmentBytes: 64 << 10, MaxQuarantineFiles: 64}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if n := sp.Stats().Batches; n != 0 {
		t.Fatalf("%d batches left in the spool", n)
	}
}

func tail(s string) string {
	if len(s) > 4000 {
		return s[len(s)-4000:]
	}
	return s
}
