// Package demo runs the local federation behind `jasper demo`, the README's
// first command: a federation CA and certificates, three hubs (child
// processes `jasper hub run --config` of the same binary, or in this process
// with the extensions given; raft on loopback), a sensor per demo country (JP, DE, BR) replaying a generated
// outbreak merged with real captures from sensor/testdata/pcaps, its
// capture times rebased to the present and looped, ClickHouse when a server
// is at hand (else the embedded rollups), geo databases (given, built
// earlier, or fixtures), a mail catcher (a real SMTP server on loopback) and
// a webhook receiver that verifies every Standard Webhooks signature, the
// national CERTs of the demo countries as recipients of both, and dashboard
// accounts for a coordinator and each country's analyst.
//
// A front page on one loopback address proxies the dashboard of a hub
// (the next hub when one fails) and serves /demo/ (logins), /demo/mail and
// /demo/webhooks (what the CERTs received), with JSON under /demo/api/.
//
// Lifecycle: New checks the Config; Start runs the steps in order, printing
// one line per step with its time, and stops what started when one fails;
// Summary collects the figures of `jasper demo --headless` (findings by type
// from the dashboard API, deliveries by channel as received, traffic
// committed per sensor from the hubs' admin API); Stop (idempotent) stops
// everything in reverse order, each part bounded.
package demo
