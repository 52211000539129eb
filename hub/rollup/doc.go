// Package rollup is the hub's embedded rollup store: a deterministic raft
// FSM module that folds every committed sensor batch into per-bin
// aggregates over a bounded window, so that a hub with no ClickHouse still
// serves regional dashboards for recent data.
//
// Per rollup bin the module keeps a cube of cells keyed by (sensor, source
// country, source ASN, protocol, destination port, traffic class), each
// holding packets, bytes, per-fingerprint packets and a distinct-source
// sketch (exact up to 64 sources, a HyperLogLog beyond). From the cube it
// answers time series, top lists and per-country maps under any filter of
// time range, sensor, country, protocol and port. It also keeps a capped
// list of source hosts per bin (host-level data, which callers must scope to
// the analyst's constituency) and per-sensor health from SensorStats.
//
// Everything is bounded: the window holds at most Config.Window/BinSeconds
// bins; each bin holds at most MaxCellsPerBin ordinary cells (rows beyond
// fold into an "other ports" cell of their sensor, country, protocol and
// class, counted in Stats.FoldedRows) and at most MaxHostsPerBin hosts
// (further hosts are counted in Stats.DroppedHosts). Batches older than the
// window are counted in Stats.LateBatches and ignored. Memory is at most
// about bins x (MaxCellsPerBin x 1.1 KB + MaxHostsPerBin x 0.2 KB): a cell
// costs about 100 bytes plus 8 per source until it has seen more than 64
// sources, then its sketch takes 1 KB.
//
// Layout (what makes OnBatch cheap per row): within a bin, sensor ids and
// countries are interned into a string table and (sensor, country, ASN)
// into an origin table, so a cell's key is one word (origin, protocol,
// port, class) and an IPv4 host's key is one word (sensor, address); cells
// and hosts live by value in slices that those maps index, hosts hold no
// pointer and a cell one (its sketch's storage). A batch's rows look the
// origin up only when the country or ASN changes, and its sketch
// insertions run in a loop of their own after the rows. A one-hash filter
// over the bin's host keys (16 bits per host, at most 32 KB a bin) answers
// "not held" for most rows of a full bin without a map lookup. None of
// these indices reaches a snapshot, which encodes the readable keys in
// sorted order as before (format version 1, unchanged).
//
// Determinism (DESIGN.md promise 5): the module reads no clock, network or
// random source; time comes from batch bin starts and tick entries; every
// cap decision depends only on log order; snapshots encode sorted state, so
// two modules fed the same log write byte-equal snapshots.
//
// Concurrency: OnBatch, OnTick, Apply, Snapshot and Restore are called by
// the raft FSM goroutine; the query methods may be called from any
// goroutine at the same time.
package rollup
