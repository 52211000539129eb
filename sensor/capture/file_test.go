package capture_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/gopacket/layers"

	"github.com/jasperfed/jasper/sensor/capture"
)

func pcapPath(name string) string { return filepath.Join("..", "testdata", "pcaps", name) }

func countFrames(t *testing.T, src capture.Source) (int, error) {
	t.Helper()
	n := 0
	for {
		_, ci, err := src.ReadPacket()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			return n, err
		}
		if ci.Timestamp.IsZero() || ci.CaptureLength == 0 {
			t.Fatalf("frame %d: capture info %+v", n, ci)
		}
		n++
	}
}

func TestOpenFileByMagic(t *testing.T) {
	tests := []struct {
		file   string
		format string
		link   layers.LinkType
		frames int
	}{
		{"chrissanders__synscan.pcapng", "pcapng", layers.LinkTypeEthernet, 2011},
		// Named .pcapng, really libpcap.
		{"stopddos__amp.UDP.snmp.src161.pcapng", "pcap", layers.LinkTypeEthernet, 4373},
		{"stopddos__amp.UDP.bacnet.IOT.37810.pcapng", "pcap", layers.LinkTypeEthernet, 9617},
		{"esnet__masscan_tcp_0_1000_20190821.pcap", "pcap", layers.LinkTypeEthernet, 1005},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			src, err := capture.OpenFile(pcapPath(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if f := src.(*capture.File); f.Format != tt.format {
				t.Errorf("format %s, want %s", f.Format, tt.format)
			}
			if src.LinkType() != tt.link {
				t.Errorf("link type %v", src.LinkType())
			}
			n, err := countFrames(t, src)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.frames || src.Stats().Received != uint64(n) {
				t.Errorf("%d frames (stats %d), want %d", n, src.Stats().Received, tt.frames)
			}
		})
	}
}

func TestOpenFileGzipAndBroken(t *testing.T) {
	raw, err := os.ReadFile(pcapPath("esnet__masscan_udp_0_1000_20190821.pcap"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var gz bytes.Buffer
	w := gzip.NewWriter(&gz)
	w.Write(raw)
	w.Close()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	src, err := capture.OpenFile(write("c.pcap.gz", gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if n, err := countFrames(t, src); err != nil || n != 1001 {
		t.Errorf("gzip: %d frames, %v", n, err)
	}
	src.Close()

	// Cut in the middle of a record: the frames before it, then an error.
	src, err = capture.OpenFile(write("cut.pcap", raw[:len(raw)-30]))
	if err != nil {
		t.Fatal(err)
	}
	n, err := countFrames(t, src)
	if err == nil || errors.Is(err, io.EOF) || n != 1000 {
		t.Errorf("truncated file: %d frames, err %v", n, err)
	}
	src.Close()

	for name, b := range map[string][]byte{"empty": nil, "text": []byte("hello, world\n"), "short": raw[:3]} {
		if _, err := capture.OpenFile(write(name, b)); !errors.Is(err, capture.ErrUnknownFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := capture.OpenFile(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}
