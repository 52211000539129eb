package detect

import (
	"fmt"
	"time"
)

// Config holds every detector's thresholds and every bound on state. The
// defaults are documented on DefaultConfig.
type Config struct {
	// Bin is the detectors' bin for surges: sensor batches are aligned down
	// to it. It must divide an hour.
	Bin time.Duration `yaml:"bin"`
	// CloseDelay is how long after a bin's end (tick event time) the surge
	// detectors wait for late batches before they judge the bin.
	CloseDelay time.Duration `yaml:"close_delay"`
	// QuietPeriod ends a finding whose subject showed no new evidence for
	// this long (event time, judged on ticks).
	QuietPeriod time.Duration `yaml:"quiet_period"`
	// UpdateEvery rate-limits OnFinding calls for a continuing finding
	// whose evidence grows (event time); new and ended findings are always
	// announced.
	UpdateEvery time.Duration `yaml:"update_every"`
	// MaxOpenFindings caps open findings; at the cap the finding updated
	// longest ago is ended early (counted in Stats.FindingsEvicted).
	MaxOpenFindings int `yaml:"max_open_findings"`
	// MaxEndedFindings caps the ended findings kept for queries (oldest
	// dropped first).
	MaxEndedFindings int `yaml:"max_ended_findings"`
	// IncludeBogonSources lets bogon (private, reserved) sources become
	// infected hosts and DoS victims: for labs and for replays of captures
	// whose hosts use private addresses. Off in production.
	IncludeBogonSources bool `yaml:"include_bogon_sources"`
	// MaxBinSources caps the (subject, source) entries the surge detectors
	// keep per bin; beyond it sources are not counted
	// (Stats.BinSetDropped).
	MaxBinSources int `yaml:"max_bin_sources"`

	Infected     InfectedConfig `yaml:"infected_host"`
	DoS          DoSConfig      `yaml:"dos_victim"`
	PortSurge    SurgeConfig    `yaml:"port_surge"`
	NewPort      NewPortConfig  `yaml:"new_port"`
	Fingerprint  SurgeConfig    `yaml:"fingerprint_surge"`
	CountrySurge SurgeConfig    `yaml:"country_surge"`
}

// InfectedConfig is the DAEDALUS rule: a routable, non-research source
// sending into the darknets.
type InfectedConfig struct {
	// Enabled turns the detector on.
	Enabled bool `yaml:"enabled"`
	// Window: the counts below must be reached within this long of the
	// host's first packet of the window (a new window starts at the first
	// packet after the previous one expired).
	Window time.Duration `yaml:"window"`
	// MinPackets and MinDstIPs: at least this many packets to at least this
	// many distinct dark addresses...
	MinPackets uint64 `yaml:"min_packets"`
	MinDstIPs  uint64 `yaml:"min_dst_ips"`
	// MinPorts: ...or at least MinPackets packets to at least this many
	// distinct destination ports (a port sweep of a dark host). 0: off.
	MinPorts uint64 `yaml:"min_ports"`
	// Fingerprints: any packet carrying one of these tool fingerprints
	// fires at once (malware signatures such as mirai).
	Fingerprints []string `yaml:"fingerprints"`
	// MaxHosts caps the tracked hosts; at the cap the least recently seen
	// host is evicted (its open finding stays open; counts restart).
	MaxHosts int `yaml:"max_hosts"`
}

// DoSConfig is the RS-DoS backscatter rule (Moore et al., CAIDA): a
// source of SYN/ACK, RST or ICMP-error packets is a DoS victim when one
// attack (packets with gaps below FlowTimeout) has at least MinPackets
// packets, lasts at least MinDuration, and has at least MinPacketsPerMinute
// packets in some minute.
type DoSConfig struct {
	Enabled             bool          `yaml:"enabled"`
	MinPackets          uint64        `yaml:"min_packets"`
	MinDuration         time.Duration `yaml:"min_duration"`
	MinPacketsPerMinute uint64        `yaml:"min_packets_per_minute"`
	FlowTimeout         time.Duration `yaml:"flow_timeout"`
	// MaxVictims caps the tracked backscatter sources (least recently seen
	// evicted first).
	MaxVictims int `yaml:"max_victims"`
}

// SurgeConfig is the change test on a per-bin count series (distinct
// sources of a port, of a fingerprint, infected hosts of a country)
// against a baseline that learns daily and weekly rhythm.
type SurgeConfig struct {
	Enabled bool `yaml:"enabled"`
	// Warmup: bins a series must have been observed before it may alert.
	Warmup int `yaml:"warmup"`
	// Alpha, GammaDay, GammaWeek, Beta are the learning rates per bin of
	// the level, of the hour-of-day and hour-of-week seasonal terms, and
	// of the spread (mean absolute residual).
	Alpha     float64 `yaml:"alpha"`
	GammaDay  float64 `yaml:"gamma_day"`
	GammaWeek float64 `yaml:"gamma_week"`
	Beta      float64 `yaml:"beta"`
	// ZThreshold fires on one bin whose score (residual over noise scale)
	// reaches it.
	ZThreshold float64 `yaml:"z_threshold"`
	// RelFloor is the smallest noise scale relative to the expected value
	// (darknet counts vary more than Poisson: a rhythm shift between
	// weekday and weekend is not a surge).
	RelFloor float64 `yaml:"rel_floor"`
	// CUSUMK is the allowance subtracted from each score, CUSUMH the
	// threshold of the cumulative sum (slow onsets).
	CUSUMK float64 `yaml:"cusum_k"`
	CUSUMH float64 `yaml:"cusum_h"`
	// MinObserved and MinIncrease: never fire below this many sources in
	// the bin, nor for a rise smaller than this over the baseline.
	MinObserved float64 `yaml:"min_observed"`
	MinIncrease float64 `yaml:"min_increase"`
	// MaxSeries caps the series with a baseline; at bin close the least
	// active ones beyond the cap are dropped (counted).
	MaxSeries int `yaml:"max_series"`
}

// NewPortConfig fires when a port without an established baseline (never
// seen, in warm-up, or with a level below MaxLevel) gains at least
// MinSources distinct sources in one bin.
type NewPortConfig struct {
	Enabled    bool    `yaml:"enabled"`
	MinSources float64 `yaml:"min_sources"`
	MaxLevel   float64 `yaml:"max_level"`
}

// DefaultConfig returns the documented defaults:
//
//   - bins of 60 s judged 30 s after their end; findings end after 30 min
//     without evidence; continuing findings announced at most every 5 min;
//     100,000 open and 10,000 ended findings kept;
//   - infected host: 10 packets to 3 distinct dark addresses, or 10
//     packets to 10 distinct ports, within 1 h; any mirai packet; 200,000
//     hosts tracked;
//   - DoS victim: CAIDA RS-DoS, 25 packets, 60 s, 30 packets in a minute,
//     attacks split by 5 min of silence; 100,000 victims tracked;
//   - surges: warm-up 1 day of bins, alpha 0.01, gamma_day 0.05, gamma_week
//     0.05, beta 0.01, z 8, CUSUM k 1.5 h 15, at least 10 sources and a
//     rise of 5; 20,000 port series, 64 fingerprint series, 300 country
//     series (country surges: at least 5 infected hosts, rise of 3);
//   - new port: 20 sources on a port whose level is below 1.
func DefaultConfig() Config {
	surge := SurgeConfig{
		Enabled: true, Warmup: 8 * 1440,
		Alpha: 0.01, GammaDay: 0.02, GammaWeek: 0.02, Beta: 0.01,
		ZThreshold: 8, RelFloor: 0.1, CUSUMK: 2, CUSUMH: 15,
		MinObserved: 10, MinIncrease: 5, MaxSeries: 20000,
	}
	fp := surge
	fp.MaxSeries = 64
	cc := surge
	cc.MaxSeries = 300
	cc.MinObserved, cc.MinIncrease = 5, 3
	return Config{
		Bin:              60 * time.Second,
		CloseDelay:       30 * time.Second,
		QuietPeriod:      30 * time.Minute,
		UpdateEvery:      5 * time.Minute,
		MaxOpenFindings:  100000,
		MaxEndedFindings: 10000,
		MaxBinSources:    2_000_000,
		Infected: InfectedConfig{
			Enabled: true, Window: time.Hour, MinPackets: 10, MinDstIPs: 3, MinPorts: 10,
			Fingerprints: []string{"mirai"}, MaxHosts: 200000,
		},
		DoS: DoSConfig{
			Enabled: true, MinPackets: 25, MinDuration: 60 * time.Second, MinPacketsPerMinute: 30,
			FlowTimeout: 5 * time.Minute, MaxVictims: 100000,
		},
		PortSurge:    surge,
		NewPort:      NewPortConfig{Enabled: true, MinSources: 20, MaxLevel: 1},
		Fingerprint:  fp,
		CountrySurge: cc,
	}
}

// Validate names the first bad key.
func (c Config) Validate() error {
	switch {
	case c.Bin < time.Second || c.Bin%time.Second != 0 || time.Hour%c.Bin != 0:
		return fmt.Errorf("bin: %v must be whole seconds dividing an hour", c.Bin)
	case c.CloseDelay < 0:
		return fmt.Errorf("close_delay: %v is negative", c.CloseDelay)
	case c.QuietPeriod < c.Bin:
		return fmt.Errorf("quiet_period: %v is shorter than a bin", c.QuietPeriod)
	case c.UpdateEvery < 0:
		return fmt.Errorf("update_every: %v is negative", c.UpdateEvery)
	case c.MaxOpenFindings < 1:
		return fmt.Errorf("max_open_findings: must be positive")
	case c.MaxBinSources < 1:
		return fmt.Errorf("max_bin_sources: must be positive")
	case c.MaxEndedFindings < 0:
		return fmt.Errorf("max_ended_findings: must not be negative")
	case c.Infected.Window <= 0:
		return fmt.Errorf("infected_host.window: must be positive")
	case c.Infected.MinPackets < 1:
		return fmt.Errorf("infected_host.min_packets: must be at least 1")
	case c.Infected.MinDstIPs < 1:
		return fmt.Errorf("infected_host.min_dst_ips: must be at least 1")
	case c.Infected.MaxHosts < 1:
		return fmt.Errorf("infected_host.max_hosts: must be positive")
	case c.DoS.MinDuration < 0:
		return fmt.Errorf("dos_victim.min_duration: is negative")
	case c.DoS.FlowTimeout <= 0:
		return fmt.Errorf("dos_victim.flow_timeout: must be positive")
	case c.DoS.MaxVictims < 1:
		return fmt.Errorf("dos_victim.max_victims: must be positive")
	case c.NewPort.MinSources < 1:
		return fmt.Errorf("new_port.min_sources: must be at least 1")
	}
	for i, f := range c.Infected.Fingerprints {
		if f == "" {
			return fmt.Errorf("infected_host.fingerprints[%d]: empty", i)
		}
	}
	for _, s := range []struct {
		key string
		c   SurgeConfig
	}{{"port_surge", c.PortSurge}, {"fingerprint_surge", c.Fingerprint}, {"country_surge", c.CountrySurge}} {
		if err := s.c.validate(); err != nil {
			return fmt.Errorf("%s.%w", s.key, err)
		}
	}
	return nil
}

func (s SurgeConfig) validate() error {
	rate := func(v float64) bool { return v > 0 && v < 1 }
	switch {
	case s.Warmup < 0:
		return fmt.Errorf("warmup: is negative")
	case !rate(s.Alpha):
		return fmt.Errorf("alpha: %v not in (0,1)", s.Alpha)
	case !rate(s.GammaDay):
		return fmt.Errorf("gamma_day: %v not in (0,1)", s.GammaDay)
	case !rate(s.GammaWeek):
		return fmt.Errorf("gamma_week: %v not in (0,1)", s.GammaWeek)
	case !rate(s.Beta):
		return fmt.Errorf("beta: %v not in (0,1)", s.Beta)
	case s.RelFloor < 0 || s.RelFloor >= 1:
		return fmt.Errorf("rel_floor: %v not in [0,1)", s.RelFloor)
	case s.ZThreshold <= 0:
		return fmt.Errorf("z_threshold: must be positive")
	case s.CUSUMK < 0 || s.CUSUMH <= 0:
		return fmt.Errorf("cusum_h: must be positive (and cusum_k not negative)")
	case s.MaxSeries < 1:
		return fmt.Errorf("max_series: must be positive")
	}
	return nil
}
