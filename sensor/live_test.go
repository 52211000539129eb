//go:build linux

package sensor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"

	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/sensor/uplink/uplinktest"
)

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// veth makes two namespaces joined by a veth pair with IPv6 off, and
// returns (sensor namespace, sensor interface, peer namespace, peer interface).
func veth(t *testing.T) (string, string, string, string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("live sensor test needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("live sensor test needs the ip command (iproute2)")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	sns, pns, sif, pif := "jsls"+id, "jslp"+id, "jls"+id, "jlp"+id
	if out, err := exec.Command("ip", "netns", "add", sns).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (no CAP_NET_ADMIN?): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", sns).Run() })
	sh(t, "ip", "netns", "add", pns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", pns).Run() })
	for _, ns := range []string{sns, pns} {
		sh(t, "ip", "netns", "exec", ns, "sh", "-c",
			"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
	}
	sh(t, "ip", "link", "add", sif, "netns", sns, "type", "veth", "peer", "name", pif, "netns", pns)
	sh(t, "ip", "-n", sns, "link", "set", sif, "up")
	sh(t, "ip", "-n", pns, "link", "set", pif, "up")
	return sns, sif, pns, pif
}

func withNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread is discarded
		f, err := os.Open(filepath.Join("/var/run/netns", ns))
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// TestLiveSensorToHub runs the whole sensor on a live interface inside a
// namespace, sends a known number of frames from the peer namespace, stops
// the sensor (flushing the open bin and draining the spool) and checks that
// the hub holds exactly the packets sent.
func TestLiveSensorToHub(t *testing.T) {
	sns, sif, pns, pif := veth(t)
	dir := t.TempDir()
	pk, err := uplinktest.NewPKI(filepath.Join(dir, "pki"), "jp-live-1", []netip.Prefix{darknet})
	if err != nil {
		t.Fatal(err)
	}
	hub, err := uplinktest.Start("127.0.0.1:0", pk.Hub)
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Stop()

	cfg := DefaultConfig()
	cfg.ID = "jp-live-1"
	cfg.Source.Interface, cfg.Source.Fanout = sif, 2
	cfg.Darknet = []string{darknet.String()}
	cfg.Spool.Dir = filepath.Join(dir, "spool")
	cfg.Hubs = []string{hub.Addr}
	cfg.TLS = pk.Sensor
	cfg.Uplink.BackoffMin = config.Duration(20 * time.Millisecond)
	cfg.Uplink.DrainTimeout = config.Duration(20 * time.Second)
	reg := prometheus.NewRegistry()
	s, err := New(cfg, Dependencies{Registerer: reg, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := withNetns(sns, func() error { return s.Start(context.Background()) }); err != nil {
		t.Fatal(err)
	}
	defer s.Stop(context.Background())
	waitCond(t, "a hub to welcome the sensor", 20*time.Second, func() bool { return s.Ready() == nil })

	const dark, outside = 2000, 500
	err = withNetns(pns, func() error {
		ifi, err := net.InterfaceByName(pif)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
		for i := 0; i < dark+outside; i++ {
			eth := &layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
			ip := &layers.IPv4{Version: 4, TTL: 50, Protocol: layers.IPProtocolTCP, SrcIP: net.IPv4(203, 0, 113, byte(i%97)).To4(), DstIP: net.IPv4(198, 51, 100, byte(i)).To4()}
			if i >= dark {
				ip.DstIP = net.IPv4(192, 0, 2, 7).To4()
			}
			tcp := &layers.TCP{SrcPort: layers.TCPPort(30000 + i), DstPort: 23, SYN: true, Seq: uint32(i)}
			tcp.SetNetworkLayerForChecksum(ip)
			buf := gopacket.NewSerializeBuffer()
			if err := gopacket.SerializeLayers(buf, opts, eth, ip, tcp); err != nil {
				return err
			}
			copy(sa.Addr[:], buf.Bytes()[:6])
			if err := unix.Sendto(fd, buf.Bytes(), 0, sa); err != nil {
				return err
			}
			if (i+1)%250 == 0 { // pace: let the sensor read each chunk
				deadline := time.Now().Add(10 * time.Second)
				for s.src.Stats().Received < uint64(i+1) && time.Now().Before(deadline) {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitCond(t, "every frame read", 15*time.Second, func() bool { return s.src.Stats().Received >= dark+outside })
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	var packets, seen, out uint64
	for _, b := range hub.Batches("jp-live-1") {
		for _, n := range b.Rows.Packets {
			packets += n
		}
		seen += b.Stats.GetPacketsSeen()
		out += b.Stats.GetOutsideDarknet()
	}
	if packets != dark || seen != dark+outside || out != outside {
		t.Fatalf("hub holds %d darknet packets, %d seen, %d outside; sent %d darknet, %d outside", packets, seen, out, dark, outside)
	}
	if n, err := testutil.GatherAndCount(reg, "jasper_sensor_capture_socket_frames_total"); err != nil || n != 2 {
		t.Fatalf("per-socket frame counters: %d, %v; want 2", n, err)
	}
	if v := testutil.ToFloat64(s.m.packets.WithLabelValues("tcp_syn")); v != dark {
		t.Fatalf("jasper_sensor_packets_total{class=tcp_syn} = %v, want %d", v, dark)
	}
}
