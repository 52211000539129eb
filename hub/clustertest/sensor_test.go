package clustertest

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"

	"github.com/jasperfed/jasper/internal/pki"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

var sensorDarknet = netip.MustParsePrefix("198.51.100.0/24")

// writeCapture writes a fixed-seed synthetic capture of n frames spread
// over span and ending at end (recent, so that the hubs' time checks
// pass); 85% of them go to the darknet.
func writeCapture(t *testing.T, path string, n int, end time.Time, span time.Duration) {
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
	rng := rand.New(rand.NewPCG(3, 4))
	base := end.Add(-span)
	step := span / time.Duration(n)
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	ports := []uint16{23, 2323, 22, 80, 443, 445, 3389, 8080}
	for i := range n {
		src := net.IPv4(203, 0, byte(rng.IntN(16)), byte(rng.IntN(250))).To4()
		dst := net.IPv4(198, 51, 100, byte(rng.IntN(256))).To4()
		if rng.IntN(100) < 15 {
			dst = net.IPv4(192, 0, 2, byte(rng.IntN(256))).To4()
		}
		eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: uint8(32 + rng.IntN(200)), Id: uint16(i), SrcIP: src, DstIP: dst, Protocol: layers.IPProtocolTCP}
		var l4 gopacket.SerializableLayer
		if rng.IntN(10) < 8 {
			tcp := &layers.TCP{SrcPort: layers.TCPPort(1024 + rng.IntN(60000)), DstPort: layers.TCPPort(ports[rng.IntN(len(ports))]), SYN: true, Seq: rng.Uint32(), Window: 1024}
			tcp.SetNetworkLayerForChecksum(ip)
			l4 = tcp
		} else {
			ip.Protocol = layers.IPProtocolUDP
			udp := &layers.UDP{SrcPort: layers.UDPPort(1024 + rng.IntN(60000)), DstPort: layers.UDPPort([]uint16{53, 123, 1900, 5060}[rng.IntN(4)])}
			udp.SetNetworkLayerForChecksum(ip)
			l4 = udp
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload([]byte("jasper"))); err != nil {
			t.Fatal(err)
		}
		ci := gopacket.CaptureInfo{Timestamp: base.Add(time.Duration(i) * step), CaptureLength: len(buf.Bytes()), Length: len(buf.Bytes())}
		if err := w.WritePacket(ci, buf.Bytes()); err != nil {
			t.Fatal(err)
		}
	}
}

func metricValue(url, name string) (float64, bool) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// sensorBatches is the sensor's batch count in the FSM of the first hub
// that answers.
func (c *cluster) sensorBatches(id string, hubs ...*procHub) (*jasperv1.SensorStatus, bool) {
	for _, h := range hubs {
		st, err := c.status(h)
		if err != nil {
			continue
		}
		for _, s := range st.Sensors {
			if s.SensorId == id {
				return s, true
			}
		}
		return &jasperv1.SensorStatus{}, true
	}
	return nil, false
}

// TestRealSensorThroughLeaderKills replays a capture through a real
// `jasper sensor run` process into three hub processes while the leader is
// killed with SIGKILL twice and a follower restarted. Afterwards every FSM
// holds exactly the batches and packets the summariser makes of the
// capture.
func TestRealSensorThroughLeaderKills(t *testing.T) {
	needBinary(t)
	c := newCluster(t, 3)
	dir := t.TempDir()
	const frames = 20000
	capPath := filepath.Join(dir, "replay.pcap")
	writeCapture(t, capPath, frames, time.Now().Add(-2*time.Minute).Truncate(time.Minute), 40*time.Minute)

	// What the summariser makes of the capture, in process.
	sc := summary.DefaultConfig()
	sc.Darknet = []netip.Prefix{sensorDarknet}
	sc.MaxBatchBytes = 2048
	src, err := capture.OpenFile(capPath)
	if err != nil {
		t.Fatal(err)
	}
	var wantBatches uint64
	totals, err := summary.RunStats(context.Background(), src, sc, func(*jasperv1.Batch) error { wantBatches++; return nil })
	src.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("capture: %d frames, %d summarised into %d batches", frames, totals.PacketsSummarised, wantBatches)

	files := c.issue(pki.Identity{Role: pki.RoleSensor, ID: "jp-real-1", Country: "JP", Prefixes: []netip.Prefix{sensorDarknet}})
	metrics := freePort(t, "127.0.0.1")
	cfgPath := filepath.Join(dir, "sensor.yaml")
	cfg := fmt.Sprintf(`id: jp-real-1
source:
  replay: {file: %q, speed: 120}
darknet: [%s]
bin: 60s
max_batch_bytes: 2048
spool: {dir: %q, max_bytes: 64MiB, segment_bytes: 64KiB}
hubs: [%s]
tls: {ca: %q, cert: %q, key: %q}
uplink: {window: 8, backoff_min: 20ms, backoff_max: 300ms}
metrics: {listen: %q}
log: {format: text, level: info}
`, capPath, sensorDarknet, filepath.Join(dir, "spool"), strings.Join(c.ingestAddrs(c.hubs...), ", "), files.CA, files.Cert, files.Key, metrics)
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
	batches := func() uint64 {
		var n uint64
		waitFor(t, "a hub to answer", 30*time.Second, func() bool {
			s, ok := c.sensorBatches("jp-real-1", c.hubs...)
			if ok {
				n = s.Batches
			}
			return ok
		})
		return n
	}
	reach := func(n uint64) {
		waitFor(t, fmt.Sprintf("%d batches committed", n), 90*time.Second, func() bool { return batches() >= n })
	}
	for round := uint64(1); round <= 2; round++ {
		reach(wantBatches * round / 5)
		l := c.leaderAmong(c.hubs...)
		t.Logf("kill -9 leader %s at %d batches", l.id, batches())
		c.kill(l, syscall.SIGKILL)
		c.leaderAmong(others(c.hubs, l)...)
		c.start(l)
	}
	reach(wantBatches * 3 / 5)
	f := others(c.hubs, c.leaderAmong(c.hubs...))[0]
	t.Logf("restart follower %s at %d batches", f.id, batches())
	c.kill(f, syscall.SIGTERM)
	c.start(f)

	url := "http://" + metrics + "/metrics"
	waitFor(t, "the replay to finish and the sensor spool to empty", 120*time.Second, func() bool {
		done, _ := metricValue(url, "jasper_sensor_source_finished")
		depth, ok := metricValue(url, "jasper_sensor_spool_batches")
		return done == 1 && ok && depth == 0
	})
	c.equalStates(c.hubs...)
	for _, h := range c.hubs {
		st, err := c.status(h)
		if err != nil {
			t.Fatal(err)
		}
		var got *jasperv1.SensorStatus
		for _, s := range st.Sensors {
			if s.SensorId == "jp-real-1" {
				got = s
			}
		}
		if got == nil || got.Batches != wantBatches || got.Packets != totals.PacketsSummarised || got.LastSequence != wantBatches {
			t.Fatalf("%s holds %v; the summariser made %d batches of %d packets", h.id, got, wantBatches, totals.PacketsSummarised)
		}
	}
	t.Logf("every hub holds %d batches, %d packets: each batch once", wantBatches, totals.PacketsSummarised)
}
