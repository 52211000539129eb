// Package hub is the regional hub component: it wires the raft store
// (hub/store), the sensor-facing gRPC server (hub/ingest) and the optional
// components other packages provide — FSM modules (detectors, rollups, the
// alert outbox), an enricher, extra gRPC services, and background services
// such as the ClickHouse loader and alert delivery that run on the leader.
//
// Lifecycle: New validates the configuration and builds the store; the
// caller attaches optional parts (RegisterModule, SetEnricher, AddService,
// EnableLoader, RegisterGRPC); Start binds the gRPC port, starts raft, the
// services and the metrics endpoint, in that order; Stop undoes them in
// reverse and is idempotent.
//
// See DESIGN.md in this folder for why the FSM looks as it does.
package hub
