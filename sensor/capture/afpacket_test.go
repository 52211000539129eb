//go:build linux

package capture_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"golang.org/x/sys/unix"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

// vethPair is a veth link between two network namespaces made by the test:
// the sensor reads Sensor inside SensorNS; the sender writes into Peer
// inside PeerNS. IPv6 is off in both, so the link carries only the frames
// the test writes.
type vethPair struct {
	SensorNS, PeerNS string
	Sensor, Peer     string
}

func run(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

func newVeth(t *testing.T) vethPair {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("live capture test needs root (CAP_NET_ADMIN) to create network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("live capture test needs the ip command (iproute2)")
	}
	var r [3]byte
	rand.Read(r[:])
	id := hex.EncodeToString(r[:])
	p := vethPair{SensorNS: "jsps" + id, PeerNS: "jspp" + id, Sensor: "jss" + id, Peer: "jsp" + id}
	if out, err := exec.Command("ip", "netns", "add", p.SensorNS).CombinedOutput(); err != nil {
		t.Skipf("cannot create a network namespace (no CAP_NET_ADMIN?): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.SensorNS).Run() })
	run(t, "ip", "netns", "add", p.PeerNS)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.PeerNS).Run() })
	for _, ns := range []string{p.SensorNS, p.PeerNS} {
		run(t, "ip", "netns", "exec", ns, "sh", "-c",
			"echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6")
	}
	run(t, "ip", "link", "add", p.Sensor, "netns", p.SensorNS, "type", "veth", "peer", "name", p.Peer, "netns", p.PeerNS)
	run(t, "ip", "-n", p.SensorNS, "link", "set", p.Sensor, "up")
	run(t, "ip", "-n", p.PeerNS, "link", "set", p.Peer, "up")
	return p
}

// inNetns runs fn on a thread switched into the named namespace. The thread
// is discarded afterwards (the goroutine exits locked).
func inNetns(t *testing.T, ns string, fn func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
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

var peerMAC = net.HardwareAddr{0x02, 0x4a, 0x53, 0x00, 0x00, 0x01}

// frames builds n TCP SYNs to 198.51.100.0/24 (the darknet) from 50
// sources, then m UDP datagrams to 192.0.2.1 (outside).
func frames(t *testing.T, n, m int) [][]byte {
	t.Helper()
	var out [][]byte
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for i := 0; i < n+m; i++ {
		eth := &layers.Ethernet{SrcMAC: peerMAC, DstMAC: net.HardwareAddr{0x02, 0x4a, 0x53, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4}
		ip := &layers.IPv4{Version: 4, TTL: 64, Id: uint16(i), SrcIP: net.IPv4(203, 0, 113, byte(i%50)).To4()}
		var l4 gopacket.SerializableLayer
		if i < n {
			ip.Protocol = layers.IPProtocolTCP
			ip.DstIP = net.IPv4(198, 51, 100, byte(i%200)).To4()
			tcp := &layers.TCP{SrcPort: layers.TCPPort(40000 + i%1000), DstPort: 23, SYN: true, Seq: uint32(i), Window: 1024}
			tcp.SetNetworkLayerForChecksum(ip)
			l4 = tcp
		} else {
			ip.Protocol = layers.IPProtocolUDP
			ip.DstIP = net.IPv4(192, 0, 2, 1).To4()
			udp := &layers.UDP{SrcPort: 5353, DstPort: 53}
			udp.SetNetworkLayerForChecksum(ip)
			l4 = udp
		}
		buf := gopacket.NewSerializeBuffer()
		if err := gopacket.SerializeLayers(buf, opts, eth, ip, l4, gopacket.Payload([]byte("jasper"))); err != nil {
			t.Fatal(err)
		}
		out = append(out, append([]byte(nil), buf.Bytes()...))
	}
	return out
}

// send writes frames into the peer end from inside its namespace; after each
// chunk it calls wait (nil: no pacing).
func send(t *testing.T, p vethPair, fs [][]byte, chunk int, wait func(sent int)) {
	t.Helper()
	err := inNetns(t, p.PeerNS, func() error {
		ifi, err := net.InterfaceByName(p.Peer)
		if err != nil {
			return err
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0) // send only
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		sa := &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6}
		copy(sa.Addr[:], fs[0][0:6])
		for i, f := range fs {
			if err := unix.Sendto(fd, f, 0, sa); err != nil {
				return err
			}
			if wait != nil && (i+1)%chunk == 0 {
				wait(i + 1)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("send into %s: %v", p.PeerNS, err)
	}
}

func open(t *testing.T, p vethPair, opts capture.AFPacketOptions) *capture.AFPacket {
	t.Helper()
	var src *capture.AFPacket
	err := inNetns(t, p.SensorNS, func() error {
		var err error
		src, err = capture.OpenAFPacket(p.Sensor, opts)
		return err
	})
	if err != nil {
		t.Fatalf("open AF_PACKET in %s: %v", p.SensorNS, err)
	}
	t.Cleanup(func() { src.Close() })
	return src
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLiveCaptureSummarised sends a known number of darknet and
// non-darknet frames over a veth pair and checks that the live source and
// the summariser count exactly those, with one socket and with a fanout
// group of three.
func TestLiveCaptureSummarised(t *testing.T) {
	for _, sockets := range []int{1, 3} {
		t.Run(map[int]string{1: "one_socket", 3: "fanout_3"}[sockets], func(t *testing.T) {
			p := newVeth(t)
			src := open(t, p, capture.AFPacketOptions{Sockets: sockets, PollTimeout: 20 * time.Millisecond})
			const dark, outside = 3000, 700
			fs := frames(t, dark, outside)

			cfg := summary.DefaultConfig()
			cfg.Darknet = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var (
				mu      sync.Mutex
				rows    uint64
				packets uint64
				synPkts uint64
			)
			type result struct {
				st  summary.Stats
				err error
			}
			done := make(chan result, 1)
			go func() {
				st, err := summary.RunStats(ctx, src, cfg, func(b *jasperv1.Batch) error {
					mu.Lock()
					defer mu.Unlock()
					rows += uint64(len(b.Rows.SrcIp))
					for i, n := range b.Rows.Packets {
						packets += n
						if b.Rows.Class[i] == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN {
							synPkts += n
						}
					}
					return nil
				})
				done <- result{st, err}
			}()
			send(t, p, fs, 250, func(sent int) {
				waitUntil(t, "the sensor to read the chunk", func() bool { return src.Stats().Received >= uint64(sent) })
			})
			waitUntil(t, "every frame", func() bool { return src.Stats().Received >= dark+outside })
			cancel() // Run flushes the open bin and returns
			res := <-done
			if res.err != nil && !errors.Is(res.err, context.Canceled) {
				t.Fatalf("summary: %v", res.err)
			}
			st := src.Stats()
			if st.Received != dark+outside || st.KernelDrops != 0 {
				t.Fatalf("source received %d (drops %d), sent %d", st.Received, st.KernelDrops, dark+outside)
			}
			per := src.SocketReceived()
			var sum uint64
			busy := 0
			for _, n := range per {
				sum += n
				if n > 0 {
					busy++
				}
			}
			if len(per) != sockets || sum != dark+outside || sockets > 1 && busy < 2 {
				t.Fatalf("per-socket counts %v: want %d sockets summing to %d, more than one busy", per, sockets, dark+outside)
			}
			t.Logf("frames per socket: %v", per)
			if res.st.PacketsSeen != dark+outside || res.st.PacketsSummarised != dark || res.st.OutsideDarknet != outside {
				t.Fatalf("summary totals %+v; sent %d darknet + %d outside", res.st, dark, outside)
			}
			mu.Lock()
			defer mu.Unlock()
			if packets != dark || synPkts != dark || rows == 0 {
				t.Fatalf("rows carry %d packets (%d tcp_syn) in %d rows, want %d", packets, synPkts, rows, dark)
			}
		})
	}
}

// TestKernelDropsCounted overfills a tiny ring while nobody reads and checks
// that frames read plus kernel drops equal frames sent.
func TestKernelDropsCounted(t *testing.T) {
	p := newVeth(t)
	src := open(t, p, capture.AFPacketOptions{Sockets: 1, FrameSize: 2048, BlockSize: 4096, NumBlocks: 2, PollTimeout: 20 * time.Millisecond})
	const n = 400
	send(t, p, frames(t, n, 0), n, nil)
	var got uint64
	for quiet := 0; quiet < 10; {
		_, _, err := src.ReadPacket()
		switch {
		case err == nil:
			got++
			quiet = 0
		case errors.Is(err, os.ErrDeadlineExceeded):
			quiet++
		case errors.Is(err, io.EOF):
			t.Fatal("EOF before Close")
		default:
			t.Fatal(err)
		}
	}
	st := src.Stats()
	if st.KernelDrops == 0 {
		t.Fatalf("a 8 KiB ring took %d frames without a drop", got)
	}
	if got+st.KernelDrops != n || st.Received != got {
		t.Fatalf("read %d + dropped %d != sent %d (stats %+v)", got, st.KernelDrops, n, st)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.ReadPacket(); !errors.Is(err, io.EOF) {
		t.Fatalf("read after close: %v", err)
	}
}
