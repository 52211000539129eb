package sensor

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/jasperfed/jasper/internal/config"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/spool"
)

const goodYAML = `
id: jp-tokyo-1
source:
  replay: {file: cap.pcap, speed: 0}
darknet: [198.51.100.0/24, "2001:db8::/48"]
bin: 30s
spool: {dir: spool, max_bytes: 64MiB, segment_bytes: 1MiB}
hubs: [127.0.0.1:7443]
tls: {ca: pki/ca.pem, cert: pki/sensor.pem, key: pki/sensor-key.pem}
metrics: {listen: ""}
log: {format: text, level: debug}
`

func TestLoadConfigResolvesAndValidates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sensor.yaml")
	if err := os.WriteFile(path, []byte(goodYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Spool.Dir != filepath.Join(dir, "spool") || cfg.TLS.Key != filepath.Join(dir, "pki/sensor-key.pem") || cfg.Source.Replay.File != filepath.Join(dir, "cap.pcap") {
		t.Fatalf("paths not resolved: %+v", cfg)
	}
	if cfg.Spool.MaxBytes != 64<<20 || cfg.Bin.D().Seconds() != 30 || cfg.Uplink.Window != 16 {
		t.Fatalf("values: %+v", cfg)
	}
}

func TestConfigNamesBadKey(t *testing.T) {
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"unknown key", "bin: 30s\nbni: 30s", "bni"},
		{"no source", "replay: {file: cap.pcap, speed: 0}", "source"},
		{"both sources", "source:\n  interface: eth0\n  replay: {file: cap.pcap, speed: 0}\nx: ", "source"},
		{"bad prefix", "198.51.100.0/24", "darknet[0]"},
		{"bad bin", "bin: 30s", "bin"},
		{"negative speed", "speed: 0}", "source.replay.speed"},
		{"spool too small", "max_bytes: 64MiB", "spool.max_bytes"},
		{"bad size", "max_bytes: 64MiB", "line"},
		{"no hubs", "hubs: [127.0.0.1:7443]", "hubs"},
		{"no key", "key: pki/sensor-key.pem", "tls.key"},
		{"bad level", "level: debug", "log.level"},
		{"bad fanout", "interface: x", "source.fanout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			y := goodYAML
			switch tc.name {
			case "unknown key":
				y = strings.Replace(y, "bin: 30s", tc.edit, 1)
			case "no source":
				y = strings.Replace(y, "  replay: {file: cap.pcap, speed: 0}", "  fanout: 1", 1)
			case "both sources":
				y = strings.Replace(y, "  replay: {file: cap.pcap, speed: 0}", "  interface: eth0\n  replay: {file: cap.pcap, speed: 0}", 1)
			case "bad prefix":
				y = strings.Replace(y, "198.51.100.0/24", "198.51.100.0/33", 1)
			case "bad bin":
				y = strings.Replace(y, "bin: 30s", "bin: 1500ms", 1)
			case "negative speed":
				y = strings.Replace(y, "speed: 0}", "speed: -2}", 1)
			case "spool too small":
				y = strings.Replace(y, "max_bytes: 64MiB", "max_bytes: 1MiB", 1)
			case "bad size":
				y = strings.Replace(y, "max_bytes: 64MiB", "max_bytes: lots", 1)
			case "no hubs":
				y = strings.Replace(y, "hubs: [127.0.0.1:7443]", "hubs: []", 1)
			case "no key":
				y = strings.Replace(y, ", key: pki/sensor-key.pem", "", 1)
			case "bad level":
				y = strings.Replace(y, "level: debug", "level: loud", 1)
			case "bad fanout":
				y = strings.Replace(y, "  replay: {file: cap.pcap, speed: 0}", "  interface: eth0\n  fanout: 0", 1)
			}
			if y == goodYAML {
				t.Fatal("edit did not apply")
			}
			path := filepath.Join(t.TempDir(), "sensor.yaml")
			os.WriteFile(path, []byte(y), 0o600)
			_, err := LoadConfig(path)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error naming %q", err, tc.want)
			}
		})
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"4096": 4096, "64KiB": 64 << 10, "1GiB": 1 << 30, "10MB": 10e6, "3 MiB": 3 << 20} {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("%q: got %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "1XB", "99999999999TiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if s := ByteSize(8 << 20).String(); s != "8MiB" {
		t.Errorf("String %q", s)
	}
}

func FuzzConfig(f *testing.F) {
	f.Add([]byte(goodYAML))
	f.Add([]byte("id: x\nsource: {interface: eth0, fanout: 70}\n"))
	f.Add([]byte("spool: {max_bytes: 1TiB}\nbin: 1h\n"))
	f.Add([]byte("darknet: [::/0]\nsource: {replay: {speed: .nan}}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg := DefaultConfig()
		if err := config.Decode(b, &cfg); err != nil {
			return
		}
		if err := cfg.Validate(); err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		// A valid configuration yields valid component configurations.
		if _, err := cfg.summaryConfig(); err != nil {
			t.Fatalf("valid config, bad summary config: %v", err)
		}
		if err := cfg.spoolConfig().Validate(); err != nil {
			t.Fatalf("valid config, bad spool config: %v", err)
		}
		if err := cfg.uplinkConfig("v").Validate(); err != nil {
			t.Fatalf("valid config, bad uplink config: %v", err)
		}
	})
}

func TestStartFailureThenStop(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ID = "x"
	cfg.Source.Replay.File = filepath.Join(t.TempDir(), "missing.pcap")
	cfg.Darknet = []string{"198.51.100.0/24"}
	cfg.Spool.Dir = t.TempDir()
	cfg.Hubs = []string{"127.0.0.1:1"}
	cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key = "ca", "cert", "key" // missing files
	s, err := New(cfg, Dependencies{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(t.Context()); err == nil {
		t.Fatal("started without TLS files")
	}
	if err := s.Stop(t.Context()); err != nil {
		t.Fatalf("stop after a failed start: %v", err)
	}
}

func TestCheckFilesNamesMissing(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sensor.yaml")
	os.WriteFile(path, []byte(goodYAML), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	err = cfg.CheckFiles()
	if err == nil || !strings.Contains(err.Error(), "tls:") || !strings.Contains(err.Error(), "source.replay.file:") {
		t.Fatalf("got %v, want errors naming tls and source.replay.file", err)
	}
}

func TestSpoolFailureCountsLoss(t *testing.T) {
	s := &Sensor{m: newMetrics(), log: slog.New(slog.DiscardHandler)}
	sp, err := spool.Open(t.TempDir(), spool.DefaultConfig(), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	sp.Close() // every Append now fails
	b := &jasperv1.Batch{Rows: &jasperv1.Rows{SrcIp: [][]byte{{192, 0, 2, 1}, {192, 0, 2, 2}}}}
	if err := s.spoolBatch(sp, b, 0); err != nil {
		t.Fatalf("a spool failure stopped capture: %v", err)
	}
	if testutil.ToFloat64(s.m.lost) != 1 || testutil.ToFloat64(s.m.lostRows) != 2 {
		t.Fatalf("lost %v batches, %v rows", testutil.ToFloat64(s.m.lost), testutil.ToFloat64(s.m.lostRows))
	}
}

func TestEnrolSectionGivesTLS(t *testing.T) {
	dir := t.TempDir()
	y := strings.Replace(goodYAML, "tls: {ca: pki/ca.pem, cert: pki/sensor.pem, key: pki/sensor-key.pem}\n", "enrol: {hubs: [127.0.0.1:7444], dir: state}\n", 1)
	path := filepath.Join(dir, "sensor.yaml")
	os.WriteFile(path, []byte(y), 0o600)
	cfg, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS.Cert != filepath.Join(dir, "state", "cert.pem") || cfg.TLS.Key != filepath.Join(dir, "state", "key.pem") || cfg.TLS.CA != filepath.Join(dir, "state", "ca.pem") {
		t.Fatalf("tls from the enrol folder: %+v", cfg.TLS)
	}
	os.WriteFile(path, []byte(strings.Replace(y, "dir: state}", "dir: state, renew_at: 2}", 1)), 0o600)
	if _, err := LoadConfig(path); err == nil || !strings.Contains(err.Error(), "enrol.renew_at") {
		t.Fatalf("got %v, want an error naming enrol.renew_at", err)
	}
}

// TestExampleConfigValid keeps deploy/sensor.example.yaml in step with the
// code.
func TestExampleConfigValid(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "deploy", "sensor.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source.Interface == "" || len(cfg.Hubs) != 3 || cfg.Spool.MaxBytes != 1<<30 {
		t.Fatalf("example decoded as %+v", cfg)
	}
}

// TestMaxEarlyRowsReachesSummary checks that early_flush and max_early_rows
// of the YAML reach the summariser, and that the example turns the fast
// path on.
func TestMaxEarlyRowsReachesSummary(t *testing.T) {
	cfg, err := LoadConfig(filepath.Join("..", "deploy", "sensor.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := cfg.summaryConfig()
	if err != nil {
		t.Fatal(err)
	}
	if sc.EarlyFlush != 2*time.Second || sc.MaxEarlyRows != 20000 {
		t.Fatalf("example: early flush %s, max early rows %d; want 2s and 20000", sc.EarlyFlush, sc.MaxEarlyRows)
	}
	cfg.MaxEarlyRows = 7
	if sc, err = cfg.summaryConfig(); err != nil || sc.MaxEarlyRows != 7 {
		t.Fatalf("max_early_rows 7: got %d, %v", sc.MaxEarlyRows, err)
	}
	cfg.MaxEarlyRows = 0
	if _, err := cfg.summaryConfig(); err == nil {
		t.Fatal("max_early_rows 0 with early_flush on was accepted")
	}
}
