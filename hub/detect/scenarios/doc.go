// Package scenarios holds the labelled scenarios the detectors are measured
// on, and the harness behind `jasper eval`: it replays a scenario's packets
// through the sensor's real aggregator (sensor/summary, with early flushes
// on a simulated clock), enrichment (hub/enrich) and the detectors
// (hub/detect), and reports per detector precision, recall, detection delay
// and infected-host latency.
//
// # Built-in scenarios
//
// builtin/<name>/labels.yaml, embedded in the binary:
//
//   - outbreak: nine days of benign rhythm, research noise and known bots,
//     then a planted mirai-like outbreak on tcp/23 (synthetic, seeded);
//   - benign: the same nine days without the outbreak (every surge is a
//     false positive);
//   - dos: one day with three DoS attacks seen through backscatter and one
//     burst below the RS-DoS thresholds;
//   - reflection, masscan: the real captures in testdata/pcaps (see
//     testdata/MANIFEST.md for origin and licence).
//
// # A scenario you bring (jasper eval --scenario DIR)
//
// DIR holds labels.yaml and, unless labels.yaml names the captures, one
// folder per sensor (the folder name is the sensor id) with its capture
// files (*.pcap, *.pcapng; pcap or pcapng by magic number). All fields are
// optional; unknown keys are errors:
//
//	description: what the traffic is
//	captures:                  # sensor id -> files, relative to DIR
//	  jp-tokyo-1: [tokyo/day1.pcap, tokyo/day2.pcap]
//	darknet:                   # sensor id -> dark prefixes (default: all dark)
//	  jp-tokyo-1: [203.0.113.0/24]
//	research:                  # known benign scanners (never alerted on)
//	  - {name: census, prefixes: [192.0.2.0/24], asns: [64500]}
//	include_bogon_sources: false   # true when the hosts use private addresses
//	infected:                  # infected sources: address or prefix
//	  - {source: 198.51.100.7}
//	  - {source: 198.51.100.0/24, start: 2026-06-09T14:00:00Z}
//	dos_victims:               # DoS victims (sources of backscatter)
//	  - {source: 192.0.2.80, start: 2026-06-09T10:00:00Z}
//	port_surges:               # protocol tcp|udp, port, when the surge starts
//	  - {protocol: tcp, port: 23, start: 2026-06-09T14:00:00Z}
//	country_surges:            # ISO country whose infected-host count surges
//	  - {country: CN, start: 2026-06-09T14:00:00Z}
//
// How it is scored:
//
//   - infected_host: the truth is every labelled source that sent
//     scan-like (non-backscatter) packets; a finding for any other source
//     is a false positive. Latency is from the packet with which the
//     source crossed the rule (counted exactly on the packets) to the
//     simulated hub time the finding was raised; delay_seconds is its p95.
//   - dos_victim: the truth is every labelled source that sent
//     backscatter; delay from the label's start (or the first backscatter
//     packet) to the finding, median.
//   - port_surge: a finding on a labelled port from its start bin on is
//     true; delay_bins = first firing bin - onset bin, delay_seconds =
//     onset to the finding (bins are judged when they close).
//   - new_port: judged against port_surges, precision only.
//   - fingerprint_surge: true after a labelled port surge's start,
//     precision only.
//   - country_surge: against country_surges, as port surges.
//
// Precision is null without findings, recall null without labelled
// subjects. Times in the simulation are event times: the sensors'
// aggregators are sealed and early-flushed on a clock driven by the packet
// timestamps, and a sealed batch is applied CommitDelay later (an
// assumption, 250 ms by default, not a measurement of the hub).
package scenarios
