package rollup

import (
	"fmt"
	"time"
)

// Config bounds the module.
type Config struct {
	// BinSeconds is the rollup bin width; sensor bins are aligned down to
	// it. It must divide 86400.
	BinSeconds int64 `yaml:"bin_seconds"`
	// Window is how much history is kept, counted back from the newest bin
	// or tick seen.
	Window time.Duration `yaml:"window"`
	// MaxCellsPerBin caps the ordinary cells of one bin.
	MaxCellsPerBin int `yaml:"max_cells_per_bin"`
	// MaxHostsPerBin caps the source hosts kept per bin.
	MaxHostsPerBin int `yaml:"max_hosts_per_bin"`
	// RateBins is how many recent bins a sensor's packet rate is averaged
	// over.
	RateBins int `yaml:"rate_bins"`
}

// DefaultConfig returns five-minute bins over 24 hours (288 bins), at most
// 5,000 cells and 5,000 hosts per bin: at most about 1.6 GB in the worst
// case (every cell past 64 sources), a few tens of MB for a typical
// darknet.
func DefaultConfig() Config {
	return Config{
		BinSeconds:     300,
		Window:         24 * time.Hour,
		MaxCellsPerBin: 5000,
		MaxHostsPerBin: 5000,
		RateBins:       3,
	}
}

// Validate names the first bad key.
func (c Config) Validate() error {
	switch {
	case c.BinSeconds <= 0 || 86400%c.BinSeconds != 0:
		return fmt.Errorf("bin_seconds: %d does not divide a day", c.BinSeconds)
	case c.Window < time.Duration(c.BinSeconds)*time.Second:
		return fmt.Errorf("window: %s is shorter than one bin", c.Window)
	case c.Window > 31*24*time.Hour:
		return fmt.Errorf("window: %s is longer than 31 days", c.Window)
	case c.MaxCellsPerBin < 1:
		return fmt.Errorf("max_cells_per_bin: must be positive")
	case c.MaxHostsPerBin < 0:
		return fmt.Errorf("max_hosts_per_bin: must not be negative")
	case c.RateBins < 1:
		return fmt.Errorf("rate_bins: must be positive")
	}
	return nil
}

func (c Config) windowSeconds() int64 { return int64(c.Window / time.Second) }
