package hub

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/hub/ingest"
	"github.com/jasperfed/jasper/hub/store"
	"github.com/jasperfed/jasper/internal/config"
	"github.com/jasperfed/jasper/internal/pki"
)

// Config is the hub's YAML configuration (`jasper hub run --config`).
type Config struct {
	// NodeID is this hub's raft server id; it should equal the id in the
	// hub's certificate.
	NodeID string `yaml:"node_id"`
	// DataDir holds the raft log, stable store and snapshots.
	DataDir string `yaml:"data_dir"`
	// TLS is the hub's certificate (role hub) and the federation CA, used
	// for raft between hubs and for the gRPC port.
	TLS           pki.Files    `yaml:"tls"`
	Log           LogConfig    `yaml:"log"`
	Raft          RaftConfig   `yaml:"raft"`
	Ingest        IngestConfig `yaml:"ingest"`
	Admin         AdminConfig  `yaml:"admin"`
	MetricsListen string       `yaml:"metrics_listen"`
	// MetricsPprof serves Go's runtime profiles under /debug/pprof/ on
	// metrics_listen (off by default).
	MetricsPprof bool `yaml:"metrics_pprof"`
	// Runtime tunes the Go runtime of the hub process.
	Runtime RuntimeConfig `yaml:"runtime"`
	// TickInterval is how often the leader writes its clock into the log
	// (the FSM's only notion of time besides batch times).
	TickInterval config.Duration `yaml:"tick_interval"`
	// MaxPendingRows bounds the loader queue; past it sensors are told to
	// hold back (THROTTLE).
	MaxPendingRows uint64 `yaml:"max_pending_rows"`
	// ClickHouse is the loader's section, decoded strictly by the
	// ClickHouse extension (hub/chstore Config: addr, database, username,
	// password, retention, ...) through Section("clickhouse", ...). Empty:
	// no ClickHouse; the hub keeps only its embedded state.
	ClickHouse yaml.Node `yaml:"clickhouse,omitempty"`

	// Sections holds the top-level sections of optional components
	// (enrol, enrich, rollup, detect, alerting, ...). Each must be claimed
	// by an Extension of the same name (CheckSections), so that a typo is
	// still an error naming the key.
	Sections map[string]yaml.Node `yaml:",inline"`

	// Path is the file the configuration was loaded from (not in YAML).
	Path string `yaml:"-"`
}

// LogConfig selects the log format and level.
type LogConfig struct {
	Format string `yaml:"format"` // text or json
	Level  string `yaml:"level"`  // debug, info, warn, error
}

// Peer is a hub of the initial cluster.
type Peer struct {
	ID      string `yaml:"id"`
	Address string `yaml:"address"`
}

// RaftConfig is the raft section.
type RaftConfig struct {
	// Bind is where raft listens; Advertise is the address peers dial
	// (default Bind).
	Bind      string `yaml:"bind"`
	Advertise string `yaml:"advertise"`
	// Bootstrap creates a new cluster of this hub (and Peers) when the data
	// folder is empty. Set it on the first hub only, or on every hub of an
	// initial cluster with the same Peers.
	Bootstrap          bool            `yaml:"bootstrap"`
	Peers              []Peer          `yaml:"peers"`
	HeartbeatTimeout   config.Duration `yaml:"heartbeat_timeout"`
	ElectionTimeout    config.Duration `yaml:"election_timeout"`
	LeaderLeaseTimeout config.Duration `yaml:"leader_lease_timeout"`
	CommitTimeout      config.Duration `yaml:"commit_timeout"`
	SnapshotInterval   config.Duration `yaml:"snapshot_interval"`
	SnapshotThreshold  uint64          `yaml:"snapshot_threshold"`
	TrailingLogs       uint64          `yaml:"trailing_logs"`
	ApplyTimeout       config.Duration `yaml:"apply_timeout"`
	// ProposeWindow groups concurrent sensor batches into one raft entry.
	ProposeWindow   config.Duration `yaml:"propose_window"`
	MaxGroupBatches int             `yaml:"max_group_batches"`
	MaxGroupBytes   int             `yaml:"max_group_bytes"`
	// LogCacheEntries and LogCacheBytes bound the in-memory cache of the
	// newest raft entries (0 entries: off). Replication to followers and
	// the followers' apply read entries from it instead of the bolt file.
	LogCacheEntries int `yaml:"log_cache_entries"`
	LogCacheBytes   int `yaml:"log_cache_bytes"`
}

// RuntimeConfig tunes the Go garbage collector of the hub process. The
// GOGC and GOMEMLIMIT environment variables, when set, win over these keys
// (as for any Go program).
type RuntimeConfig struct {
	// GCPercent is the collector's target heap growth between collections
	// (GOGC), in percent of the live heap; -1 turns the collector off
	// until memory_limit_bytes is reached. The default, 200, let the hubs
	// of the end-to-end benchmark use about 18 % less CPU per row than Go's
	// default of 100, for a heap that peaks at about three times the live
	// data instead of two (hub/BENCHMARKS.md).
	GCPercent int `yaml:"gc_percent"`
	// MemoryLimitBytes is a soft limit on the process's memory (GOMEMLIMIT):
	// near it the collector runs more often, whatever gc_percent says.
	// 0: no limit.
	MemoryLimitBytes int64 `yaml:"memory_limit_bytes"`
}

// DefaultGCPercent is the default of runtime.gc_percent.
const DefaultGCPercent = 200

// IngestConfig is the sensor-facing gRPC port.
type IngestConfig struct {
	Listen string `yaml:"listen"`
	// Advertise is the address followers give sensors in NOT_LEADER
	// redirects (default Listen).
	Advertise string `yaml:"advertise"`
	// InsecurePlaintextForDemo serves without TLS or client
	// authentication: for a local demo only.
	InsecurePlaintextForDemo bool            `yaml:"insecure_plaintext_for_demo"`
	MaxBatchBytes            int             `yaml:"max_batch_bytes"`
	MaxBatchAge              config.Duration `yaml:"max_batch_age"`
	MaxClockSkew             config.Duration `yaml:"max_clock_skew"`
	MaxInFlight              int             `yaml:"max_in_flight"`
	RetryAfter               config.Duration `yaml:"retry_after"`
}

// AdminConfig restricts the AdminService.
type AdminConfig struct {
	// IDs lists the admin certificate ids allowed to call the
	// AdminService; empty: every certificate of role admin.
	IDs []string `yaml:"ids"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	sc := store.DefaultConfig()
	ic := ingest.DefaultConfig()
	return Config{
		DataDir:       "data",
		Log:           LogConfig{Format: "text", Level: "info"},
		MetricsListen: "127.0.0.1:9200",
		Raft: RaftConfig{
			Bind:               "127.0.0.1:7000",
			HeartbeatTimeout:   config.Duration(sc.HeartbeatTimeout),
			ElectionTimeout:    config.Duration(sc.ElectionTimeout),
			LeaderLeaseTimeout: config.Duration(sc.LeaderLeaseTimeout),
			CommitTimeout:      config.Duration(sc.CommitTimeout),
			SnapshotInterval:   config.Duration(sc.SnapshotInterval),
			SnapshotThreshold:  sc.SnapshotThreshold,
			TrailingLogs:       sc.TrailingLogs,
			ApplyTimeout:       config.Duration(sc.ApplyTimeout),
			ProposeWindow:      config.Duration(sc.ProposeWindow),
			MaxGroupBatches:    sc.MaxGroupBatches,
			MaxGroupBytes:      sc.MaxGroupBytes,
			LogCacheEntries:    sc.LogCacheEntries,
			LogCacheBytes:      sc.LogCacheBytes,
		},
		Ingest: IngestConfig{
			Listen:        ic.Listen,
			MaxBatchBytes: ic.MaxBatchBytes,
			MaxBatchAge:   config.Duration(ic.MaxBatchAge),
			MaxClockSkew:  config.Duration(ic.MaxClockSkew),
			MaxInFlight:   ic.MaxInFlight,
			RetryAfter:    config.Duration(ic.RetryAfter),
		},
		TickInterval:   config.Duration(10 * time.Second),
		MaxPendingRows: ic.MaxPendingRows,
		Runtime:        RuntimeConfig{GCPercent: DefaultGCPercent},
	}
}

// LoadConfig reads path strictly over the defaults and resolves relative
// paths against the file's folder. It does not Validate.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if err := config.Load(path, &c); err != nil {
		return Config{}, err
	}
	c.Path = path
	c.DataDir = config.Resolve(path, c.DataDir)
	c.TLS.CA = config.Resolve(path, c.TLS.CA)
	c.TLS.Cert = config.Resolve(path, c.TLS.Cert)
	c.TLS.Key = config.Resolve(path, c.TLS.Key)
	return c, nil
}

// Resolve makes a path of a section absolute relative to the config file.
func (c Config) Resolve(p string) string { return config.Resolve(c.Path, p) }

// Redacted returns a copy whose section values under keys that look like
// secrets (password, secret, token, key_pem) read REDACTED: what --check
// prints.
func (c Config) Redacted() Config {
	out := c
	out.ClickHouse = redactNode(c.ClickHouse)
	out.Sections = map[string]yaml.Node{}
	for k, n := range c.Sections {
		out.Sections[k] = redactNode(n)
	}
	return out
}

func redactNode(n yaml.Node) yaml.Node {
	cp := n
	cp.Content = nil
	for i, ch := range n.Content {
		c := redactNode(*ch)
		if n.Kind == yaml.MappingNode && i%2 == 1 && c.Kind == yaml.ScalarNode && c.Value != "" && secretKey(n.Content[i-1].Value) {
			c.Value, c.Tag, c.Style = "REDACTED", "!!str", 0
		}
		cp.Content = append(cp.Content, &c)
	}
	return cp
}

func secretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range []string{"password", "secret", "token", "api_key", "apikey"} {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}

// CheckSections reports a top-level key that no extension claims.
func (c Config) CheckSections(known ...string) error {
	ok := map[string]bool{}
	for _, k := range known {
		ok[k] = true
	}
	var keys []string
	for k := range c.Sections {
		if !ok[k] {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		n := c.Sections[keys[0]]
		return fmt.Errorf("line %d: unknown key %q (known sections: %v)", n.Line, keys[0], known)
	}
	return nil
}

// HasSection reports whether the top-level section name is present.
func (c Config) HasSection(name string) bool {
	if name == "clickhouse" {
		return c.ClickHouse.Kind != 0 && !(c.ClickHouse.Kind == yaml.ScalarNode && c.ClickHouse.Tag == "!!null")
	}
	_, ok := c.Sections[name]
	return ok
}

// Section decodes the top-level section name into dst strictly (unknown
// keys are errors). A missing section leaves dst unchanged.
func (c Config) Section(name string, dst any) error {
	if !c.HasSection(name) {
		return nil
	}
	n := c.Sections[name]
	if name == "clickhouse" {
		n = c.ClickHouse
	}
	b, err := yaml.Marshal(&n)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := config.Decode(b, dst); err != nil {
		return fmt.Errorf("%s (line %d): %w", name, n.Line, err)
	}
	return nil
}

func checkAddr(key, addr string, required bool) error {
	if addr == "" {
		if required {
			return fmt.Errorf("%s: missing", key)
		}
		return nil
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s: %q is not host:port: %w", key, addr, err)
	}
	return nil
}

func unspecifiedHost(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Validate checks the configuration, naming the key at fault.
func (c Config) Validate() error {
	if c.NodeID == "" {
		return errors.New("node_id: missing")
	}
	if c.DataDir == "" {
		return errors.New("data_dir: missing")
	}
	if err := c.TLS.Validate("tls"); err != nil {
		return err
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return fmt.Errorf("log.format: %q (want text or json)", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("log.level: %q (want debug, info, warn or error)", c.Log.Level)
	}
	for _, a := range []struct {
		key, addr string
		required  bool
	}{
		{"raft.bind", c.Raft.Bind, true}, {"raft.advertise", c.Raft.Advertise, false},
		{"ingest.listen", c.Ingest.Listen, true}, {"ingest.advertise", c.Ingest.Advertise, false},
		{"metrics_listen", c.MetricsListen, false},
	} {
		if err := checkAddr(a.key, a.addr, a.required); err != nil {
			return err
		}
	}
	if c.Raft.Advertise == "" && unspecifiedHost(c.Raft.Bind) {
		return fmt.Errorf("raft.advertise: required when raft.bind (%s) listens on all addresses: the address other hubs dial", c.Raft.Bind)
	}
	if c.Ingest.Advertise == "" && unspecifiedHost(c.Ingest.Listen) {
		return fmt.Errorf("ingest.advertise: required when ingest.listen (%s) listens on all addresses: the address followers send sensors to", c.Ingest.Listen)
	}
	for i, p := range c.Raft.Peers {
		if p.ID == "" {
			return fmt.Errorf("raft.peers[%d].id: missing", i)
		}
		if err := checkAddr(fmt.Sprintf("raft.peers[%d].address", i), p.Address, true); err != nil {
			return err
		}
	}
	if len(c.Raft.Peers) > 0 && !c.Raft.Bootstrap {
		return errors.New("raft.peers: only used with raft.bootstrap: true (later hubs join with `jasper hub join`)")
	}
	if c.MetricsPprof && c.MetricsListen == "" {
		return errors.New("metrics_pprof: needs metrics_listen (the profiles are served there)")
	}
	switch gp := c.Runtime.GCPercent; {
	case gp == -1 && c.Runtime.MemoryLimitBytes == 0:
		return errors.New("runtime.gc_percent: -1 turns the collector off: set runtime.memory_limit_bytes too")
	case gp != -1 && gp < 10:
		return fmt.Errorf("runtime.gc_percent: %d (want at least 10, or -1 with runtime.memory_limit_bytes)", gp)
	}
	if c.Runtime.MemoryLimitBytes < 0 {
		return errors.New("runtime.memory_limit_bytes: negative")
	}
	if c.TickInterval.D() < 0 {
		return errors.New("tick_interval: negative")
	}
	if err := c.storeConfig().Validate(); err != nil {
		return fmt.Errorf("raft: %w", err)
	}
	if err := c.ingestConfig().Validate(); err != nil {
		return fmt.Errorf("ingest.%w", err)
	}
	return nil
}

func (c Config) storeConfig() store.Config {
	sc := store.DefaultConfig()
	sc.NodeID = c.NodeID
	sc.BindAddr = c.Raft.Bind
	sc.AdvertiseAddr = c.Raft.Advertise
	sc.DataDir = c.DataDir
	sc.Bootstrap = c.Raft.Bootstrap
	for _, p := range c.Raft.Peers {
		sc.Peers = append(sc.Peers, store.Peer{ID: p.ID, RaftAddr: p.Address})
	}
	sc.TLS = c.TLS
	sc.IngestAddr = c.Ingest.Advertise
	sc.TickInterval = c.TickInterval.D()
	sc.ProposeWindow = c.Raft.ProposeWindow.D()
	sc.MaxGroupBatches = c.Raft.MaxGroupBatches
	sc.MaxGroupBytes = c.Raft.MaxGroupBytes
	sc.LogCacheEntries = c.Raft.LogCacheEntries
	sc.LogCacheBytes = c.Raft.LogCacheBytes
	sc.ApplyTimeout = c.Raft.ApplyTimeout.D()
	sc.HeartbeatTimeout = c.Raft.HeartbeatTimeout.D()
	sc.ElectionTimeout = c.Raft.ElectionTimeout.D()
	sc.LeaderLeaseTimeout = c.Raft.LeaderLeaseTimeout.D()
	sc.CommitTimeout = c.Raft.CommitTimeout.D()
	sc.SnapshotInterval = c.Raft.SnapshotInterval.D()
	sc.SnapshotThreshold = c.Raft.SnapshotThreshold
	sc.TrailingLogs = c.Raft.TrailingLogs
	return sc
}

func (c Config) ingestConfig() ingest.Config {
	ic := ingest.DefaultConfig()
	ic.Listen = c.Ingest.Listen
	ic.TLS = c.TLS
	ic.InsecurePlaintextForDemo = c.Ingest.InsecurePlaintextForDemo
	ic.MaxBatchBytes = c.Ingest.MaxBatchBytes
	ic.MaxBatchAge = c.Ingest.MaxBatchAge.D()
	ic.MaxClockSkew = c.Ingest.MaxClockSkew.D()
	ic.MaxPendingRows = c.MaxPendingRows
	ic.MaxInFlight = c.Ingest.MaxInFlight
	ic.RetryAfter = c.Ingest.RetryAfter.D()
	ic.AdminIDs = c.Admin.IDs
	return ic
}
