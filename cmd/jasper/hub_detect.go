//go:build !jasper_nodetect

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/jasperfed/jasper/dashboards"
	"github.com/jasperfed/jasper/hub"
	"github.com/jasperfed/jasper/hub/detect"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// The detection extensions of `jasper hub run`:
//
//   - "enrich" owns the top-level `enrich:` section (hub/enrich.Config:
//     country_db, asn_db, research). It always sets an enricher, which the
//     leader runs before proposing a batch: bogon and research labels need
//     no database; with country_db/asn_db (built by `jasper geo build
//     --out DIR`, relative paths resolved against the config file) sources
//     also get their country and ASN, and every finding records the
//     databases' build date. Without databases the hub runs, countries stay
//     unknown (so country routing of alerts and country surges see nothing)
//     and it says so in the log line "geo_databases_missing".
//   - "detect" owns the top-level `detect:` section (hub/detect.Config, keys
//     as in detect.DefaultConfig: bin, quiet_period, infected_host,
//     dos_victim, port_surge, ...). It always registers the detectors' FSM
//     module "detect" (every hub of a cluster must run the same modules),
//     hands their findings to alerting (publishHubFindings) and gives them
//     to the dashboards (setDashboardsFindings).
//
// `jasper hub run --check` decodes and validates both sections too, naming
// a bad key with its line.

// detectExtensions is added to hubExtensions after "enrich" (see
// hub_enrich.go); a build with the tag jasper_nodetect leaves the detectors
// out (hub_detect_off.go), for measuring what they cost.
var detectExtensions = []hub.Extension{{Name: "detect", Attach: attachDetect, Check: checkDetect}}

// detectSection decodes the `detect:` section strictly over
// detect.DefaultConfig and validates it.
func detectSection(cfg hub.Config) (detect.Config, error) {
	c := detect.DefaultConfig()
	if err := cfg.Section("detect", &c); err != nil {
		return c, err // names the section and its line
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("detect.%w", err)
	}
	return c, nil
}

// checkDetect validates the detect section for `hub run --check`.
func checkDetect(cfg hub.Config) error {
	_, err := detectSection(cfg)
	return err
}

// attachDetect registers the detectors and wires their findings.
func attachDetect(h *hub.Hub) error {
	dc, err := detectSection(h.Config())
	if err != nil {
		return err
	}
	det, err := detect.New(dc, detect.Deps{Log: h.Log(), Registerer: h.Registerer()})
	if err != nil {
		return err
	}
	h.RegisterModule(det)
	log := h.Log().With("component", "detect")
	det.OnFindingView(logFinding(log)) // reads, keeps nothing: no copy
	det.OnFinding(publishHubFindings(h))
	setDashboardsFindings(h, detectFindings(det))
	log.Info("detectors_registered",
		"infected_host", dc.Infected.Enabled, "dos_victim", dc.DoS.Enabled, "port_surge", dc.PortSurge.Enabled,
		"new_port", dc.NewPort.Enabled, "fingerprint_surge", dc.Fingerprint.Enabled, "country_surge", dc.CountrySurge.Enabled,
		"include_bogon_sources", dc.IncludeBogonSources)
	return nil
}

// Finding log lines: new and ended findings are logged at info level up
// to findingLogRate lines per second (bursts of findingLogBurst); beyond
// that they go to debug level and an info line "findings_not_logged"
// counts them (at most every findingLogSummary, and before the next info
// line). An outbreak of 100,000 infected hosts would otherwise write
// 100,000 lines on every hub inside the apply path; the findings
// themselves, their alerts and jasper_detect_findings_total are complete
// either way. Continuing updates are logged at debug level only.
const (
	findingLogRate    = 50
	findingLogBurst   = 500
	findingLogSummary = 10 * time.Second
)

// logFinding returns the OnFinding subscriber that logs findings.
func logFinding(log *slog.Logger) func(*jasperv1.Finding) {
	return newFindingLogger(log, time.Now).log
}

// findingLogger rate-limits the info lines of findings (a token bucket
// on the wall clock: logging is outside the replicated state).
type findingLogger struct {
	l           *slog.Logger
	now         func() time.Time
	mu          sync.Mutex
	tokens      float64
	last        time.Time // last refill
	notLogged   uint64    // info lines turned into debug since the last summary
	lastSummary time.Time
}

func newFindingLogger(log *slog.Logger, now func() time.Time) *findingLogger {
	t := now()
	return &findingLogger{l: log, now: now, tokens: findingLogBurst, last: t, lastSummary: t}
}

// allow takes a token if there is one; it logs the summary when due.
func (fl *findingLogger) allow() bool {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	t := fl.now()
	if d := t.Sub(fl.last); d > 0 {
		fl.tokens = min(findingLogBurst, fl.tokens+d.Seconds()*findingLogRate)
		fl.last = t
	}
	ok := fl.tokens >= 1
	if ok {
		fl.tokens--
	}
	if fl.notLogged > 0 && (ok || t.Sub(fl.lastSummary) >= findingLogSummary) {
		fl.l.Info("findings_not_logged", "count", fl.notLogged,
			"reason", fmt.Sprintf("more than %d finding lines per second; they are at debug level", findingLogRate))
		fl.notLogged = 0
		fl.lastSummary = t
	}
	if !ok {
		fl.notLogged++
	}
	return ok
}

func (fl *findingLogger) log(f *jasperv1.Finding) {
	msg := "finding_new"
	switch f.State {
	case jasperv1.FindingState_FINDING_STATE_CONTINUING:
		msg = "finding_continuing"
	case jasperv1.FindingState_FINDING_STATE_ENDED:
		msg = "finding_ended"
	}
	level := slog.LevelDebug
	if f.State != jasperv1.FindingState_FINDING_STATE_CONTINUING && fl.allow() {
		level = slog.LevelInfo
	}
	ctx := context.Background()
	if !fl.l.Enabled(ctx, level) {
		return
	}
	var src string
	if a, ok := netip.AddrFromSlice(f.SrcIp); ok {
		src = a.Unmap().String()
	}
	fl.l.Log(ctx, level, msg, "id", f.Id, "type", strings.ToLower(strings.TrimPrefix(f.Type.String(), "FINDING_TYPE_")),
		"src", src, "src_country", f.SrcCountry, "port", f.Port, "country", f.Country,
		"packets", f.Packets, "detected_at_ms", f.DetectedAtMs, "first_seen_ms", f.FirstSeenMs, "index", f.UpdatedIndex)
}

// detectFindings lists the detector's findings (open and recently ended)
// for the dashboards. Acknowledgements and silences live in alerting's
// outbox and are not joined here.
func detectFindings(det *detect.Detector) dashboards.FindingsProvider {
	return dashboards.FindingsFunc(func(context.Context) ([]dashboards.FindingRecord, error) {
		fs := det.Findings(detect.Filter{})
		out := make([]dashboards.FindingRecord, len(fs))
		for i, f := range fs {
			out[i] = dashboards.FindingRecord{Finding: f}
		}
		return out, nil
	})
}
