// Package sensor is the jasper sensor component: it wires a packet source
// (live AF_PACKET capture or a replayed capture file) to the summariser
// (sensor/summary), spools every sealed batch on disk (sensor/spool) and
// streams the spool to the hubs over mTLS gRPC (sensor/uplink).
//
// Data path: capture.Source → summary.Run → spool.Append → uplink. A batch
// is on disk before it is sent and leaves the disk only when a hub acks it.
//
// Lifecycle: New checks the Config; Start opens the spool and the source and
// starts the uplink and the capture goroutine; Stop (idempotent) stops
// capture first (a live source's open bin is flushed into the spool), then
// the uplink, then closes the spool. Serve is the whole of `jasper sensor
// run`: logger, metrics registry, /metrics + /healthz + /readyz (ready while
// a hub has welcomed the uplink), the sensor, and the stop order on signal.
//
// A replayed file resumes after a restart instead of starting over (see
// openReplay), so kill -9 and restart neither lose nor double-count data.
//
// Metrics: jasper_sensor_packets_total{class}, jasper_sensor_bytes_total{class},
// jasper_sensor_frames_total{outcome}, jasper_sensor_rows_total,
// jasper_sensor_batches_total, jasper_sensor_capture_socket_frames_total{socket}
// (live capture), jasper_sensor_replay_skipped_batches_total,
// jasper_sensor_lost_batches_total (spool write errors), the spool's jasper_sensor_spool_* and the
// uplink's jasper_sensor_uplink_* families.
package sensor
