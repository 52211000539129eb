package dashboards

import (
	"fmt"
	"time"

	"github.com/jasperfed/jasper/internal/config"
)

// Config configures the dashboards server.
type Config struct {
	// AccountsFile is the YAML file of analyst accounts (see LoadAccounts).
	AccountsFile string `yaml:"accounts_file"`
	// SessionTTL is how long a login lasts.
	SessionTTL config.Duration `yaml:"session_ttl"`
	// MaxSessions bounds the live sessions; the oldest go first.
	MaxSessions int `yaml:"max_sessions"`
	// SecureCookies marks cookies Secure even on plain HTTP requests (for a
	// hub behind a TLS-terminating proxy). Requests over TLS always get
	// Secure cookies.
	SecureCookies bool `yaml:"secure_cookies"`
	// LoginInterval and LoginBurst limit login attempts per client address
	// and account name: LoginBurst attempts, then one per LoginInterval.
	LoginInterval config.Duration `yaml:"login_interval"`
	LoginBurst    int             `yaml:"login_burst"`
	// TrustedOrigins may send cross-origin state-changing requests (e.g.
	// "https://soc.example.org"); none by default.
	TrustedOrigins []string `yaml:"trusted_origins"`
	// DefaultRange is the time range shown when a request names none.
	DefaultRange config.Duration `yaml:"default_range"`
	// MaxRange bounds the time range of one request.
	MaxRange config.Duration `yaml:"max_range"`
	// TopLimit is the default and maximum length of top lists.
	TopLimit int `yaml:"top_limit"`
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		SessionTTL:    config.Duration(12 * time.Hour),
		MaxSessions:   10000,
		LoginInterval: config.Duration(10 * time.Second),
		LoginBurst:    5,
		DefaultRange:  config.Duration(6 * time.Hour),
		MaxRange:      config.Duration(90 * 24 * time.Hour),
		TopLimit:      100,
	}
}

// Validate names the first bad key.
func (c Config) Validate() error {
	switch {
	case c.AccountsFile == "":
		return fmt.Errorf("accounts_file: required")
	case c.SessionTTL.D() < time.Minute:
		return fmt.Errorf("session_ttl: %s is shorter than a minute", c.SessionTTL.D())
	case c.MaxSessions < 1:
		return fmt.Errorf("max_sessions: must be positive")
	case c.LoginInterval.D() <= 0:
		return fmt.Errorf("login_interval: must be positive")
	case c.LoginBurst < 1:
		return fmt.Errorf("login_burst: must be positive")
	case c.DefaultRange.D() <= 0 || c.DefaultRange.D() > c.MaxRange.D():
		return fmt.Errorf("default_range: must be positive and at most max_range")
	case c.TopLimit < 1 || c.TopLimit > 10000:
		return fmt.Errorf("top_limit: must be between 1 and 10000")
	}
	return nil
}
