//go:build jasper_nodetect

package main

import "github.com/jasperfed/jasper/hub"

// A build with the tag jasper_nodetect has no detectors: the hub runs
// ingest, rollups, alerting and the loader only. It exists to measure the
// detectors' cost in the whole program (hub/detect/BENCHMARKS.md); every hub
// of a cluster must be built the same way, since the FSM modules differ.
var detectExtensions []hub.Extension
