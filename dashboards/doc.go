// Package dashboards serves the regional dashboards of a jasper hub: a JSON
// HTTP API (documented in openapi.yaml, served at /api/openapi.yaml) and an
// embedded web UI (ui/, plain HTML, CSS and JavaScript with no build step)
// for CERT analysts, plus Grafana dashboards (grafana/) over the same
// ClickHouse tables.
//
// The hub builds a Server with New(cfg, deps) and mounts it as an
// http.Handler. Traffic questions go to a Source: the embedded rollups of
// hub/rollup (NewEmbeddedSource) or ClickHouse (NewClickHouseSource).
// Findings come from a FindingsProvider; acknowledge and silence go to
// Actions; STIX export to an STIXExporter; all wired by the hub.
//
// Access (DESIGN.md promise 4): every request is authenticated by a session
// cookie (HttpOnly, SameSite=Strict, Secure over TLS) or a bearer API token.
// Regional aggregates (overview, map, top lists, early warning, sensors) are
// shown to every account. Host-level data (source addresses in /api/hosts and
// the infected-host and DoS-victim findings) is shown only within the
// account's constituency (countries and/or organisation prefixes); a
// coordinator sees all. The API layer enforces this whatever the source
// returns. State-changing requests with a cookie need the session's CSRF
// token and a same-origin Sec-Fetch-Site/Origin (http.CrossOriginProtection).
// Logins are rate-limited per client address and account name.
//
// A Server is safe for concurrent use.
package dashboards
