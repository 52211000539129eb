// Package chstore is the hub's ClickHouse storage: the schema and its
// versioned migrations, retention by dropping daily partitions, and the
// loader that copies committed batches from the raft log into ClickHouse
// exactly once (DESIGN.md promise 2).
//
// The tables are documented in SCHEMA.md beside this file. All SQL here runs
// on Debian's clickhouse-server 18.16 and on current releases: no
// LowCardinality, no IPv6 type, no TTL clause, no SimpleAggregateFunction;
// every INSERT names its columns.
//
// # Exactly once
//
// The loader runs only on the raft leader. It reads committed batches that
// are not yet marked loaded (Source.Pending), inserts them, then marks them
// loaded through raft (Source.MarkLoaded). A crash, a leader change or a
// ClickHouse failure can happen between the insert and the mark, so after
// any (re)start, leader change or error the loader first asks ClickHouse
// which batches of the pending range are already present, per table
// (SELECT DISTINCT raft_index, sensor_id, seq ... WHERE raft_index BETWEEN
// a AND b: one raft entry may carry several sensor batches, and (sensor,
// seq) is unique in the log), and skips those batches in that table. This is exact because every batch is
// written to each table inside one INSERT block, and ClickHouse writes the
// rows of one block that fall in one partition as one part, atomically
// (temporary directory renamed into place). A batch has one bin_start, so
// all its rows fall in one daily partition: a batch is either wholly
// present in a table or wholly absent. The loader never splits a batch
// across blocks, and a native-protocol block is not re-split by the server
// (max_insert_block_size only applies to blocks the server forms itself).
//
// Fencing keeps a previous writer from landing an insert after that check.
// Every insert (and rollup rebuild) starts only while Source.IsLeader() is
// true and is bounded by insert_timeout; a loader that becomes leader (or
// starts) waits leader_settle, at least insert_timeout, before its first
// check. This relies on a deposed raft leader noticing its loss before a
// successor is elected (hashicorp/raft: LeaderLeaseTimeout below the
// followers' election timeout, as in its defaults). After an insert whose
// outcome is unknown (an error while sending the block: it may still land)
// the loader also waits leader_settle before checking again. Until a check
// finds none of its batches present, the loader keeps checking every
// load: a new leader's FSM may not yet have applied its predecessor's last
// marks.
//
// Durability: ClickHouse 18.16 does not fsync new parts, so a power loss
// of the ClickHouse host (not a process crash or restart) can lose parts
// already marked loaded.
//
// Materialized views: ClickHouse writes the block to summary first, then to
// each view's target table, not atomically. If the server dies (or a view's
// insert fails) between the two, summary holds the batch but the rollups
// may not. So whenever the check finds a batch already in summary (it was
// written by a writer that then failed), the loader recomputes the rollups
// of that batch's day from summary (RebuildRollups) before marking the
// range loaded; a failure there is retried, and the next loader's check
// finds the same batches and rebuilds again. Rollups are exact after that,
// at the cost of one day's INSERT ... SELECT per takeover or crash.
//
// # Concurrency
//
// Functions taking a driver.Conn are safe to call concurrently. A Loader's
// Start and Stop may be called from any goroutine; Stop is idempotent.
package chstore
