// Package detect turns committed summary batches into findings a CERT acts
// on. All detectors run inside one deterministic raft FSM module
// (Detector, registered with the hub store), so that every hub computes the
// same findings and a new leader continues with the same baselines
// (DESIGN.md promise 5).
//
// # Detectors
//
//   - Infected host (DAEDALUS): a routable, non-research source sending
//     scan-like traffic (anything but backscatter) into the darknets: at
//     least infected_host.min_packets packets to at least min_dst_ips
//     distinct dark addresses, or to at least min_ports distinct ports,
//     within the window; or any packet with a malware fingerprint (mirai).
//     It is judged on the batch that crosses the threshold, not at bin
//     close: with sensors' early flushes a finding exists seconds after the
//     crossing packet.
//   - DoS victim: a source of backscatter (SYN/ACK, RST, ICMP echo reply
//     and error types) judged with CAIDA's RS-DoS rule (25 packets, 60 s,
//     30 packets in some minute, attacks split by 5 min of silence).
//   - Port surge, new port, fingerprint surge (PRACTICE early warning) and
//     country surge: per bin, the distinct sources of each (protocol, port),
//     of each fingerprint, and the active infected hosts of each country are
//     compared with a baseline (see series.go) and a CUSUM change test.
//
// # What the rows allow
//
// Summary rows carry, per (source, protocol, port or ICMP type/code,
// class), packets, bytes, a distinct-destination count, first/last times
// and fingerprint counts. They carry no destination addresses and no
// header quoted by ICMP errors. Hence:
//
//   - distinct dark addresses of a source are estimated as the sum over
//     (sensor, bin) of its largest per-row count: exact for one port in one
//     bin, a lower bound across ports of a bin, and an over-count for an
//     address hit again in later bins (the packet threshold guards that).
//     A sensor's early flushes (every 2 s, sensor/summary) ship delta rows
//     whose dst_ips is the row's count for the bin so far, so the largest
//     over a bin's batches is the bin's count, and the estimate grows with
//     every flush instead of at bin close;
//   - ICMP errors are judged by outer type only. The victim of a reflected
//     attack is the quoted packet's destination, and routers on the path may
//     send the error; without the quoted header the detector attributes the
//     backscatter to the error's sender and cannot tell the attacked
//     protocol or port. The sensor decodes the quoted header
//     (sensor/packet Inner); a row column for it would remove this limit;
//   - a row's packets are spread evenly over the minutes between its first
//     and last packet for the per-minute RS-DoS test.
//
// # Findings
//
// A finding has a stable id (hash of type, subject and the raft index that
// raised it), and a state: new when raised, continuing while evidence
// grows (one finding per subject, updated, never one per bin), ended after
// quiet_period of event time without evidence (judged on ticks), by an
// "end" command, or by eviction at max_open_findings. OnFinding callbacks
// get new and ended findings at once and continuing ones at most every
// update_every, each its own copy; OnFindingView callbacks (loggers) get
// the same findings as a shared copy they must neither change nor keep.
//
// # Cost per row
//
// The apply path reads every row of every batch on every hub, so the
// per-row work is kept small (BENCHMARKS.md): hosts and victims live in
// fixed pages with their recency order as entry numbers and pointer-free
// index maps; a batch's hosts are looked up in one loop before its rows
// are read (the loads overlap), behind a small cache of recent IPv4
// hosts; a run of rows of one source, and a source's later rows in a
// batch, reuse what its first row found; a host remembers the bin set it
// was last counted in; only hosts whose judging can change something are
// judged. These caches are transient (never in a snapshot) and are only
// hints, checked before use: outputs and snapshots are those of plain
// look-ups (TestSnapshotGolden, TestHostLRUMatchesModel).
//
// # Bounds and determinism
//
// Hosts and victims live in LRU lists capped by max_hosts and max_victims
// (the least recently seen is evicted, counted in Stats); baselines are
// capped by max_series (least active dropped at bin close); per-bin source
// sets by max_bin_sources; open bins by 16; evidence lists per finding by
// 64 ports, 32 sensors, 16 fingerprints. The module reads no clock, random
// source or network; outputs never depend on map iteration order (keys are
// sorted); snapshots are a fixed binary layout of sorted state, so two
// detectors fed the same log write byte-equal snapshots.
package detect
