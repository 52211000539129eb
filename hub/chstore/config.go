package chstore

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/jasperfed/jasper/internal/config"
)

// MaxInsertRows bounds Config.MaxRowsPerInsert: it stays under ClickHouse's
// default max_insert_block_size (1,048,576 rows).
const MaxInsertRows = 1_000_000

// Secret is a password that never appears in logs or printed configs.
type Secret string

// LogValue redacts the secret in slog output.
func (s Secret) LogValue() slog.Value {
	if s == "" {
		return slog.StringValue("")
	}
	return slog.StringValue("REDACTED")
}

// String redacts the secret in fmt output.
func (s Secret) String() string { return s.LogValue().String() }

// Config is the hub's ClickHouse section (YAML key `clickhouse`).
type Config struct {
	// Addr is the native protocol address, host:port (e.g. 127.0.0.1:9000).
	Addr string `yaml:"addr"`
	// Database holds the jasper tables; Migrate creates it.
	Database string `yaml:"database"`
	Username string `yaml:"username"`
	Password Secret `yaml:"password"`
	// DialTimeout bounds connecting to the server.
	DialTimeout config.Duration `yaml:"dial_timeout"`
	// RetentionDays keeps this many days (today included) in every table;
	// 0 keeps everything.
	RetentionDays int `yaml:"retention_days"`
	// RetentionInterval is how often the leader applies retention.
	RetentionInterval config.Duration `yaml:"retention_interval"`
	// MaxRowsPerInsert bounds the summary rows of one INSERT block (at most
	// MaxInsertRows). A batch is never split, so a single batch larger
	// than this goes alone in its block.
	MaxRowsPerInsert int `yaml:"max_rows_per_insert"`
	// PollInterval is how often an idle loader asks for pending batches
	// (Loader.Notify wakes it sooner).
	PollInterval config.Duration `yaml:"poll_interval"`
	// RetryMin and RetryMax bound the exponential backoff after errors
	// (ClickHouse down, raft not accepting the mark).
	RetryMin config.Duration `yaml:"retry_min"`
	RetryMax config.Duration `yaml:"retry_max"`
	// InsertTimeout bounds one INSERT, and one day's rollup rebuild.
	InsertTimeout config.Duration `yaml:"insert_timeout"`
	// LeaderSettle is how long a loader that just became leader (or whose
	// insert ended with an unknown outcome) waits before it checks
	// ClickHouse and inserts: the previous writer's last insert has ended
	// by then. It must be at least InsertTimeout.
	LeaderSettle config.Duration `yaml:"leader_settle"`
}

// DefaultConfig returns the defaults: database jasper on 127.0.0.1:9000,
// no retention limit, 200,000 rows per insert.
func DefaultConfig() Config {
	return Config{
		Addr:              "127.0.0.1:9000",
		Database:          "jasper",
		Username:          "default",
		DialTimeout:       config.Duration(5 * time.Second),
		RetentionInterval: config.Duration(time.Hour),
		MaxRowsPerInsert:  200_000,
		PollInterval:      config.Duration(200 * time.Millisecond),
		RetryMin:          config.Duration(200 * time.Millisecond),
		RetryMax:          config.Duration(10 * time.Second),
		InsertTimeout:     config.Duration(15 * time.Second),
		LeaderSettle:      config.Duration(20 * time.Second),
	}
}

// Validate checks the configuration and names the key at fault.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("clickhouse.addr: %q is not host:port: %w", c.Addr, err)
	}
	if !ValidDatabase(c.Database) {
		return fmt.Errorf("clickhouse.database: %q is not a plain identifier ([A-Za-z_][A-Za-z0-9_]*)", c.Database)
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("clickhouse.dial_timeout: must be positive")
	}
	if c.RetentionDays < 0 {
		return fmt.Errorf("clickhouse.retention_days: must be 0 (keep all) or positive, got %d", c.RetentionDays)
	}
	if c.RetentionDays > 0 && c.RetentionInterval <= 0 {
		return fmt.Errorf("clickhouse.retention_interval: must be positive when retention_days is set")
	}
	if c.MaxRowsPerInsert < 1 || c.MaxRowsPerInsert > MaxInsertRows {
		return fmt.Errorf("clickhouse.max_rows_per_insert: must be in 1..%d, got %d", MaxInsertRows, c.MaxRowsPerInsert)
	}
	if c.PollInterval <= 0 {
		return fmt.Errorf("clickhouse.poll_interval: must be positive")
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("clickhouse.retry_min/retry_max: want 0 < retry_min <= retry_max")
	}
	if c.InsertTimeout <= 0 {
		return fmt.Errorf("clickhouse.insert_timeout: must be positive")
	}
	if c.LeaderSettle < c.InsertTimeout {
		return fmt.Errorf("clickhouse.leader_settle: must be at least insert_timeout (%s), got %s; a shorter wait lets a deposed leader's last insert land after the new leader's check",
			c.InsertTimeout.D(), c.LeaderSettle.D())
	}
	return nil
}

// Open builds a connection pool to the server of cfg. It does not connect:
// the hub starts while ClickHouse is down, and the loader retries until it
// answers. Table names in this package are always qualified with the
// database, so the connection's default database does not matter
// (cfg.Database may not exist before Migrate).
func Open(cfg Config) (driver.Conn, error) {
	conn, err := clickhouse.Open(&clickhouse.Options{
		Addr: []string{cfg.Addr},
		Auth: clickhouse.Auth{
			Username: cfg.Username,
			Password: string(cfg.Password),
		},
		DialTimeout:     cfg.DialTimeout.D(),
		MaxOpenConns:    4,
		MaxIdleConns:    2,
		ConnMaxLifetime: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("clickhouse %s: %w", cfg.Addr, err)
	}
	return conn, nil
}
