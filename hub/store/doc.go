// Package store is the hub's replicated state: a hashicorp/raft node whose
// log entries are versioned jasper commands (proto/jasper/v1/raft.proto),
// and a deterministic FSM that applies them.
//
// The FSM holds the sensor registry with per-sensor watermarks (the highest
// sequence applied, which deduplicates resent batches), per-sensor counters,
// the hubs' ingest addresses, the queue of committed batches waiting for the
// ClickHouse loader, and any number of Modules (detectors, alert outbox,
// rollups) that see every committed batch and every leader tick in log
// order. The FSM never reads the wall clock, the network or a random
// source: time reaches it inside entries (see hub/DESIGN.md).
//
// Raft traffic between hubs runs over mutual TLS 1.3; both ends require the
// peer certificate to carry the hub role.
//
// Concurrency: every exported method of Store is safe for concurrent use.
// Module methods are called with the FSM lock held, one at a time, in log
// order; a module needs no lock of its own for the calls it receives from
// the FSM, but must guard state it also reads from other goroutines.
package store
