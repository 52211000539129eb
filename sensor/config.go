package sensor

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/pki"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/enrol"
	"github.com/jasperfed/jasper/sensor/spool"
	"github.com/jasperfed/jasper/sensor/summary"
	"github.com/jasperfed/jasper/sensor/uplink"
)

// Config is the sensor's YAML configuration (see deploy/sensor.example.yaml).
type Config struct {
	// ID is the sensor id bound in its certificate.
	ID     string       `yaml:"id"`
	Source SourceConfig `yaml:"source"`
	// Darknet prefixes (CIDR, IPv4 and IPv6) the sensor observes.
	Darknet []string `yaml:"darknet"`
	// Summary settings (see sensor/summary.Config).
	Bin           config.Duration `yaml:"bin"`
	PortCap       int             `yaml:"port_cap"`
	MaxRowsPerBin int             `yaml:"max_rows_per_bin"`
	MaxBatchBytes int             `yaml:"max_batch_bytes"`
	EarlyFlush    config.Duration `yaml:"early_flush"`
	// MaxEarlyRows bounds the rows of one early flush; the rest wait for
	// the next flush (see summary.Config.MaxEarlyRows).
	MaxEarlyRows int `yaml:"max_early_rows"`

	Spool SpoolConfig `yaml:"spool"`
	// Hubs are ingest addresses (host:port), tried in order.
	Hubs []string  `yaml:"hubs"`
	TLS  pki.Files `yaml:"tls"`
	// Enrol, when enrol.hubs is set, keeps the certificate fresh (renewal
	// over mTLS, re-attestation) in the state folder written by `jasper
	// sensor enrol`; tls then defaults to that folder's files.
	Enrol   enrol.Config  `yaml:"enrol"`
	Uplink  UplinkConfig  `yaml:"uplink"`
	Metrics MetricsConfig `yaml:"metrics"`
	Log     LogConfig     `yaml:"log"`
}

// SourceConfig names where packets come from: a live interface or a
// capture file replayed.
type SourceConfig struct {
	// Interface to capture on (AF_PACKET).
	Interface string `yaml:"interface"`
	// Fanout is the number of sockets (and reader goroutines) in the
	// PACKET_FANOUT group; 1 reads one socket.
	Fanout int `yaml:"fanout"`
	// Replay a pcap/pcapng file instead of a live interface.
	Replay ReplayConfig `yaml:"replay"`
}

// ReplayConfig replays a capture file.
type ReplayConfig struct {
	File string `yaml:"file"`
	// Speed multiplies the capture's own pace; 0 replays as fast as
	// possible.
	Speed float64 `yaml:"speed"`
	// Rebase moves the capture's timestamps to the present (for demos and
	// tests: hubs refuse batches older than ingest.max_batch_age): the
	// file is shifted so that its last packet falls on the moment the
	// replay opens, and a packet is never handed out before its shifted
	// timestamp, so no batch is dated in the future. A rebased replay does
	// not resume after a restart: it starts over with new times.
	Rebase bool `yaml:"rebase"`
	// Loop replays the file again each time it ends, until the sensor
	// stops. It needs rebase: each pass continues one second after the
	// previous one ended, so after the first pass (recent history, at
	// speed) the replay follows the wall clock.
	Loop bool `yaml:"loop"`
}

// SpoolConfig places and bounds the spool.
type SpoolConfig struct {
	Dir          string   `yaml:"dir"`
	MaxBytes     ByteSize `yaml:"max_bytes"`
	SegmentBytes ByteSize `yaml:"segment_bytes"`
}

// UplinkConfig tunes the stream to the hubs.
type UplinkConfig struct {
	Window      int             `yaml:"window"`
	BackoffMin  config.Duration `yaml:"backoff_min"`
	BackoffMax  config.Duration `yaml:"backoff_max"`
	AckTimeout  config.Duration `yaml:"ack_timeout"`
	DialTimeout config.Duration `yaml:"dial_timeout"`
	// DrainTimeout is how long a stopping sensor keeps sending what is
	// spooled (when connected) before it stops the uplink; 0: no drain.
	DrainTimeout config.Duration `yaml:"drain_timeout"`
}

// MetricsConfig places the metrics and health server.
type MetricsConfig struct {
	// Listen address of /metrics, /healthz, /readyz; empty: no server.
	Listen string `yaml:"listen"`
}

// LogConfig sets the log output.
type LogConfig struct {
	Format string `yaml:"format"` // json or text
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// ByteSize is a size in bytes that reads "1GiB", "64MiB", "4096" in YAML.
type ByteSize int64

// UnmarshalYAML parses a number of bytes with an optional KiB/MiB/GiB/TiB
// (or KB/MB/GB/TB, also powers of 1000) suffix.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return fmt.Errorf("line %d: want a size like 512MiB: %w", n.Line, err)
	}
	v, err := ParseByteSize(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// MarshalYAML writes the size in the largest exact binary unit.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.v == 0 {
			return strconv.FormatInt(int64(b)/u.v, 10) + u.s
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// ParseByteSize parses "4096", "64KiB", "1GiB", "10MB".
func ParseByteSize(s string) (ByteSize, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		s string
		v int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}} {
		if strings.HasSuffix(s, u.s) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.s)), u.v
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return ByteSize(v * mult), nil
}

// DefaultConfig returns the defaults; id, source, darknet, hubs and tls
// must still be given.
func DefaultConfig() Config {
	sc := summary.DefaultConfig()
	sp := spool.DefaultConfig()
	up := uplink.DefaultConfig()
	return Config{
		Source:        SourceConfig{Fanout: 1},
		Bin:           config.Duration(sc.Bin),
		PortCap:       sc.PortCap,
		MaxRowsPerBin: sc.MaxRowsPerBin,
		MaxBatchBytes: sc.MaxBatchBytes,
		EarlyFlush:    config.Duration(sc.EarlyFlush),
		MaxEarlyRows:  sc.MaxEarlyRows,
		Spool:         SpoolConfig{Dir: "/var/lib/jasper/spool", MaxBytes: ByteSize(sp.MaxBytes), SegmentBytes: ByteSize(sp.SegmentBytes)},
		Uplink: UplinkConfig{
			Window:       up.Window,
			BackoffMin:   config.Duration(up.BackoffMin),
			BackoffMax:   config.Duration(up.BackoffMax),
			AckTimeout:   config.Duration(up.AckTimeout),
			DialTimeout:  config.Duration(up.DialTimeout),
			DrainTimeout: config.Duration(5 * time.Second),
		},
		Enrol:   enrol.DefaultConfig(),
		Metrics: MetricsConfig{Listen: "127.0.0.1:9101"},
		Log:     LogConfig{Format: "json", Level: "info"},
	}
}

// LoadConfig reads the YAML file at path over the defaults, resolves
// relative paths against the file's folder and validates the result.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := config.Load(path, &cfg); err != nil {
		return Config{}, err
	}
	cfg.Source.Replay.File = config.Resolve(path, cfg.Source.Replay.File)
	cfg.Enrol.Dir = config.Resolve(path, cfg.Enrol.Dir)
	if cfg.enrolling() && cfg.TLS == (pki.Files{}) {
		cfg.TLS = cfg.Enrol.Files()
	}
	cfg.Spool.Dir = config.Resolve(path, cfg.Spool.Dir)
	cfg.TLS.CA = config.Resolve(path, cfg.TLS.CA)
	cfg.TLS.Cert = config.Resolve(path, cfg.TLS.Cert)
	cfg.TLS.Key = config.Resolve(path, cfg.TLS.Key)
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}

// Validate checks the configuration and names the bad key.
func (c Config) Validate() error {
	var errs []error
	switch {
	case c.Source.Interface == "" && c.Source.Replay.File == "":
		errs = append(errs, errors.New("source: set source.interface or source.replay.file"))
	case c.Source.Interface != "" && c.Source.Replay.File != "":
		errs = append(errs, errors.New("source: source.interface and source.replay.file exclude each other"))
	}
	if c.Source.Fanout < 1 || c.Source.Fanout > 64 {
		errs = append(errs, fmt.Errorf("source.fanout: %d is not between 1 and 64", c.Source.Fanout))
	}
	if c.Source.Replay.Speed < 0 || c.Source.Replay.Speed > 1e6 || c.Source.Replay.Speed != c.Source.Replay.Speed {
		errs = append(errs, fmt.Errorf("source.replay.speed: %v is not between 0 and 1e6", c.Source.Replay.Speed))
	}
	if c.Source.Replay.Loop && !c.Source.Replay.Rebase {
		errs = append(errs, errors.New("source.replay.loop: needs source.replay.rebase (a pass repeated with the same times would be refused as old or duplicate)"))
	}
	if len(c.Darknet) == 0 {
		errs = append(errs, errors.New("darknet: at least one prefix is needed"))
	}
	if _, err := c.summaryConfig(); err != nil {
		errs = append(errs, err)
	}
	if c.Spool.Dir == "" {
		errs = append(errs, errors.New("spool.dir: missing"))
	}
	if err := c.spoolConfig().Validate(); err != nil {
		errs = append(errs, fmt.Errorf("spool.%w", err))
	}
	if err := c.TLS.Validate("tls"); err != nil {
		errs = append(errs, err)
	}
	if c.enrolling() {
		if err := c.Enrol.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.uplinkConfig("").Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Uplink.DrainTimeout < 0 || c.Uplink.DrainTimeout.D() > 10*time.Minute {
		errs = append(errs, fmt.Errorf("uplink.drain_timeout: %v is not between 0 and 10m", c.Uplink.DrainTimeout.D()))
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log.format: %q is not json or text", c.Log.Format))
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log.level: %q is not debug, info, warn or error", c.Log.Level))
	}
	return errors.Join(errs...)
}

// CheckFiles checks what Validate cannot: that the TLS files load as a key
// pair and CA, and that a replay file is a readable capture. `jasper sensor
// run --check` runs it after Validate.
func (c Config) CheckFiles() error {
	var errs []error
	if _, err := pki.ClientConfig(c.TLS); err != nil {
		errs = append(errs, fmt.Errorf("tls: %w", err))
	}
	if c.Source.Replay.File != "" {
		src, err := capture.OpenFile(c.Source.Replay.File)
		if err != nil {
			errs = append(errs, fmt.Errorf("source.replay.file: %w", err))
		} else {
			src.Close()
		}
	}
	return errors.Join(errs...)
}

// enrolling reports whether the sensor renews its own certificate.
func (c Config) enrolling() bool { return len(c.Enrol.Hubs) > 0 }

func (c Config) prefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, s := range c.Darknet {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("darknet[%d]: %q is not a CIDR prefix", i, s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func (c Config) summaryConfig() (summary.Config, error) {
	sc := summary.DefaultConfig()
	p, err := c.prefixes()
	if err != nil {
		return sc, err
	}
	sc.Darknet = p
	sc.Bin = c.Bin.D()
	sc.PortCap = c.PortCap
	sc.MaxRowsPerBin = c.MaxRowsPerBin
	sc.MaxBatchBytes = c.MaxBatchBytes
	sc.EarlyFlush = c.EarlyFlush.D()
	sc.MaxEarlyRows = c.MaxEarlyRows
	if err := sc.Validate(); err != nil {
		return sc, err
	}
	return sc, nil
}

func (c Config) spoolConfig() spool.Config {
	sp := spool.DefaultConfig()
	sp.MaxBytes = int64(c.Spool.MaxBytes)
	sp.SegmentBytes = int64(c.Spool.SegmentBytes)
	return sp
}

func (c Config) uplinkConfig(version string) uplink.Config {
	return uplink.Config{
		SensorID:    c.ID,
		Version:     version,
		Prefixes:    c.Darknet,
		Hubs:        c.Hubs,
		Window:      c.Uplink.Window,
		BackoffMin:  time.Duration(c.Uplink.BackoffMin),
		BackoffMax:  time.Duration(c.Uplink.BackoffMax),
		AckTimeout:  time.Duration(c.Uplink.AckTimeout),
		DialTimeout: time.Duration(c.Uplink.DialTimeout),
	}
}
