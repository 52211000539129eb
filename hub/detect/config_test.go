package detect

import (
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/internal/config"
)

func TestDefaultConfigValid(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidateNamesKey(t *testing.T) {
	for _, tc := range []struct {
		mut  func(*Config)
		want string
	}{
		{func(c *Config) { c.Bin = 7 * time.Second }, "bin:"},
		{func(c *Config) { c.QuietPeriod = time.Second }, "quiet_period"},
		{func(c *Config) { c.MaxOpenFindings = 0 }, "max_open_findings"},
		{func(c *Config) { c.MaxBinSources = 0 }, "max_bin_sources"},
		{func(c *Config) { c.Infected.MinDstIPs = 0 }, "infected_host.min_dst_ips"},
		{func(c *Config) { c.Infected.Fingerprints = []string{""} }, "infected_host.fingerprints[0]"},
		{func(c *Config) { c.DoS.FlowTimeout = 0 }, "dos_victim.flow_timeout"},
		{func(c *Config) { c.PortSurge.Alpha = 1.5 }, "port_surge.alpha"},
		{func(c *Config) { c.CountrySurge.MaxSeries = 0 }, "country_surge.max_series"},
		{func(c *Config) { c.Fingerprint.RelFloor = -1 }, "fingerprint_surge.rel_floor"},
		{func(c *Config) { c.NewPort.MinSources = 0 }, "new_port.min_sources"},
	} {
		c := DefaultConfig()
		tc.mut(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want it to name %q", err, tc.want)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	c := DefaultConfig()
	err := config.Decode([]byte(`
bin: 60s
infected_host:
  min_packets: 20
  fingerprints: [mirai, hajime]
port_surge:
  z_threshold: 10
`), &c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Infected.MinPackets != 20 || len(c.Infected.Fingerprints) != 2 || c.PortSurge.ZThreshold != 10 || c.Infected.MinDstIPs != 3 {
		t.Errorf("decoded %+v", c.Infected)
	}
	if err := config.Decode([]byte("infected_host:\n  min_pakets: 3\n"), &c); err == nil || !strings.Contains(err.Error(), "min_pakets") {
		t.Errorf("unknown key: %v", err)
	}
}
