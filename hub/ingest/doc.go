// Package ingest is the hub's gRPC front: the IngestService that sensors
// stream batches to, and the AdminService (status, join, leave) for
// operators. Both run on one TLS 1.3 port that requires client
// certificates from the federation CA; the certificate's role decides what
// a client may call (sensor: Stream; admin: AdminService).
//
// A sensor stream goes: Hello → Welcome (or Refusal) → Batches, each
// answered in order by an Ack (after the raft commit) or a Refusal with a
// typed reason. The checks, in order:
//
//   - Hello: sensor_id must equal the certificate's id (FORBIDDEN); every
//     Hello prefix must lie inside a prefix bound in the certificate
//     (FORBIDDEN); a revoked certificate is REVOKED; a follower answers
//     NOT_LEADER with the leader's ingest address.
//   - Batch: larger than max_batch_bytes → TOO_LARGE; malformed (columns of
//     unequal length, address not 4/16 bytes, unknown class, values out of
//     range, sequence 0 or not above the previous one on the stream) →
//     INVALID; bin in the future beyond the allowed skew or older than
//     max_batch_age → BAD_TIME; no longer leader → NOT_LEADER; loader queue
//     past its bound → THROTTLE (the sensor keeps the batch spooled).
//
// Rows carry source addresses (the scanners), not destinations, so a batch
// cannot be checked row by row against the darknet prefixes: the scope
// check is on the Hello prefixes, and the country recorded with every batch
// is the one bound in the certificate, never a value the sensor sends.
//
// A THROTTLE or NOT_LEADER refusal ends the stream: batches pipelined
// behind the refused one are not taken, so that none of them can commit
// ahead of it; the sensor reconnects and resumes from committed_through.
// INVALID, BAD_TIME and TOO_LARGE refuse one batch for good and the stream
// goes on.
//
// Batches of one stream are pipelined: up to max_in_flight are proposed
// before the first is acked. Each carries the previous one's sequence as
// a requirement, so the FSM never applies a batch whose predecessor on the
// stream was lost; after any failed proposal the stream is closed and the
// sensor resumes from Welcome.committed_through.
package ingest
