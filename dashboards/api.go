package dashboards

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jasperfed/jasper/hub/rollup"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, v any) {
	var buf bytes.Buffer
	if err := json.NewEncoder(&buf).Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "encode response")
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// badRequest is an error in the request's parameters.
type badRequest struct{ msg string }

func (e badRequest) Error() string { return e.msg }

func badf(format string, args ...any) error { return badRequest{fmt.Sprintf(format, args...)} }

func (s *Server) fail(w http.ResponseWriter, err error) {
	var br badRequest
	if errors.As(err, &br) {
		writeError(w, http.StatusBadRequest, br.msg)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	s.log.Error("dashboards_query_failed", "err", err)
	writeError(w, http.StatusInternalServerError, "query failed")
}

func parseTime(v string) (time.Time, error) {
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	return time.Parse(time.RFC3339, v)
}

var steps = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, time.Hour, 6 * time.Hour, 24 * time.Hour}

// parseQuery reads the common filters: from, to, range, sensor, country,
// protocol, port, step, limit.
func (s *Server) parseQuery(r *http.Request) (Query, error) {
	v := r.URL.Query()
	q := Query{}
	now := s.deps.Now().UTC()
	q.To = now
	if t := v.Get("to"); t != "" {
		tt, err := parseTime(t)
		if err != nil {
			return q, badf("to: want Unix seconds or RFC 3339")
		}
		q.To = tt
	}
	rng := s.cfg.DefaultRange.D()
	if rs := v.Get("range"); rs != "" {
		d, err := time.ParseDuration(rs)
		if err != nil || d <= 0 {
			return q, badf("range: want a duration like 1h")
		}
		rng = d
	}
	q.From = q.To.Add(-rng)
	if f := v.Get("from"); f != "" {
		tt, err := parseTime(f)
		if err != nil {
			return q, badf("from: want Unix seconds or RFC 3339")
		}
		q.From = tt
	}
	if !q.From.Before(q.To) {
		return q, badf("from: must be before to")
	}
	if q.To.Sub(q.From) > s.cfg.MaxRange.D() {
		return q, badf("range: longer than %s", s.cfg.MaxRange.D())
	}
	if sn := v.Get("sensor"); sn != "" {
		if len(sn) > 128 {
			return q, badf("sensor: too long")
		}
		q.Sensor = sn
	}
	if c := strings.ToUpper(v.Get("country")); c != "" {
		if !countryRE.MatchString(c) {
			return q, badf("country: want an ISO 3166 alpha-2 code")
		}
		q.Country = c
	}
	switch p := strings.ToLower(v.Get("protocol")); p {
	case "", "any":
	case "tcp":
		q.Protocol = 6
	case "udp":
		q.Protocol = 17
	case "icmp":
		q.Protocol = 1
	case "icmpv6":
		q.Protocol = 58
	default:
		n, err := strconv.ParseUint(p, 10, 8)
		if err != nil || n == 0 {
			return q, badf("protocol: want tcp, udp, icmp, icmpv6 or a protocol number")
		}
		q.Protocol = uint8(n)
	}
	if p := v.Get("port"); p != "" {
		if p == "other" {
			q.Port, q.HasPort = rollup.OtherPort, true
		} else {
			n, err := strconv.ParseUint(p, 10, 16)
			if err != nil {
				return q, badf("port: want 0-65535")
			}
			q.Port, q.HasPort = uint32(n), true
		}
	}
	q.Limit = s.cfg.TopLimit
	if l := v.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > s.cfg.TopLimit {
			return q, badf("limit: want 1-%d", s.cfg.TopLimit)
		}
		q.Limit = n
	}
	want := q.To.Sub(q.From) / 120
	q.Step = steps[len(steps)-1]
	for _, st := range steps {
		if st >= want {
			q.Step = st
			break
		}
	}
	if st := v.Get("step"); st != "" {
		d, err := time.ParseDuration(st)
		if err != nil || d < time.Minute || q.To.Sub(q.From)/d > 5000 {
			return q, badf("step: want a duration of at least 1m and at most 5000 steps")
		}
		q.Step = d
	}
	return q, nil
}

type overviewResponse struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Step    int64     `json:"step_seconds"`
	Classes []string  `json:"classes"`
	Points  []Point   `json:"points"`
}

func classNames() []string {
	var out []string
	for _, c := range rollup.Classes() {
		out = append(out, rollup.ClassName(c))
	}
	return out
}

func (s *Server) handleOverview(w http.ResponseWriter, r *http.Request, p *principal) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	pts, err := s.deps.Source.Overview(r.Context(), q)
	if err != nil {
		s.fail(w, err)
		return
	}
	if pts == nil {
		pts = []Point{}
	}
	writeJSON(w, overviewResponse{From: q.From, To: q.To, Step: int64(q.Step / time.Second), Classes: classNames(), Points: pts})
}

type listResponse struct {
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	Entries []Entry   `json:"entries"`
}

func (s *Server) handleMap(w http.ResponseWriter, r *http.Request, p *principal) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	q.Limit = 0 // every country
	es, err := s.deps.Source.Top(r.Context(), q, DimCountry)
	if err != nil {
		s.fail(w, err)
		return
	}
	if es == nil {
		es = []Entry{}
	}
	writeJSON(w, listResponse{From: q.From, To: q.To, Entries: es})
}

// handleTop serves /api/top/{dim} with dim one of tcp_ports, udp_ports,
// countries, asns, fingerprints, classes, sensors.
func (s *Server) handleTop(w http.ResponseWriter, r *http.Request, p *principal) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	var d Dim
	switch r.PathValue("dim") {
	case "tcp_ports":
		d, q.Protocol = DimPort, 6
	case "udp_ports":
		d, q.Protocol = DimPort, 17
	case "countries":
		d = DimCountry
	case "asns":
		d = DimASN
	case "fingerprints":
		d = DimFingerprint
	case "classes":
		d = DimClass
	case "sensors":
		d = DimSensor
	default:
		writeError(w, http.StatusNotFound, "no such top list; want tcp_ports, udp_ports, countries, asns, fingerprints, classes or sensors")
		return
	}
	es, err := s.deps.Source.Top(r.Context(), q, d)
	if err != nil {
		s.fail(w, err)
		return
	}
	if es == nil {
		es = []Entry{}
	}
	writeJSON(w, listResponse{From: q.From, To: q.To, Entries: es})
}

// scopeCountry refuses host-level requests about a country outside the
// reader's constituency (an organisation analyst, whose constituency is
// prefixes, may filter by any country: its results stay within its
// prefixes).
func (s *Server) scopeCountry(w http.ResponseWriter, p *principal, country string) bool {
	a := p.account
	if country == "" || a.seesAll() || len(a.Constituency.prefixes) > 0 || slices.Contains(a.Constituency.Countries, country) {
		return true
	}
	s.metrics.forbidden.Inc()
	writeError(w, http.StatusForbidden, "host-level data of "+country+" is outside your constituency")
	return false
}

type hostsResponse struct {
	From  time.Time `json:"from"`
	To    time.Time `json:"to"`
	Hosts []Host    `json:"hosts"`
}

func (s *Server) handleHosts(w http.ResponseWriter, r *http.Request, p *principal) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	if !s.scopeCountry(w, p, q.Country) {
		return
	}
	hs, err := s.deps.Source.Hosts(r.Context(), q, p.account.scope())
	if err != nil {
		s.fail(w, err)
		return
	}
	// Filter again: the scope is enforced here, whatever the source does.
	out := make([]Host, 0, len(hs))
	for _, h := range hs {
		if p.account.maysee(h.Addr, h.Country) {
			out = append(out, h)
		}
	}
	writeJSON(w, hostsResponse{From: q.From, To: q.To, Hosts: out})
}

// Finding types as the API names them.
var findingTypeNames = map[jasperv1.FindingType]string{
	jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:     "infected_host",
	jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:        "dos_victim",
	jasperv1.FindingType_FINDING_TYPE_PORT_SURGE:        "port_surge",
	jasperv1.FindingType_FINDING_TYPE_NEW_PORT:          "new_port",
	jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE: "fingerprint_surge",
	jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE:     "country_surge",
}

func stateName(st jasperv1.FindingState) string {
	return strings.ToLower(strings.TrimPrefix(st.String(), "FINDING_STATE_"))
}

func isHostFinding(f *jasperv1.Finding) bool {
	return f.GetType() == jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST || f.GetType() == jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM
}

func protoName(p uint32) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	case 58:
		return "icmpv6"
	case 0:
		return ""
	}
	return strconv.FormatUint(uint64(p), 10)
}

// findingView is a host finding as the API shows it.
type findingView struct {
	ID            string            `json:"id"`
	Type          string            `json:"type"`
	State         string            `json:"state"`
	IP            string            `json:"ip"`
	Country       string            `json:"country"`
	ASN           uint32            `json:"asn"`
	FirstSeen     time.Time         `json:"first_seen"`
	LastSeen      time.Time         `json:"last_seen"`
	Ports         []uint32          `json:"ports,omitempty"`
	Classes       []string          `json:"classes,omitempty"`
	Packets       uint64            `json:"packets"`
	Bytes         uint64            `json:"bytes"`
	DstIPs        uint64            `json:"dst_ips"`
	Fingerprints  map[string]uint64 `json:"fingerprints,omitempty"`
	Sensors       []string          `json:"sensors,omitempty"`
	Summary       string            `json:"summary"`
	AckedBy       string            `json:"acked_by,omitempty"`
	AckedAt       *time.Time        `json:"acked_at,omitempty"`
	SilencedUntil *time.Time        `json:"silenced_until,omitempty"`
	Note          string            `json:"note,omitempty"`
}

func findingAddr(f *jasperv1.Finding) netip.Addr {
	a, _ := netip.AddrFromSlice(f.GetSrcIp())
	return a.Unmap()
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func viewFinding(rec FindingRecord) findingView {
	f := rec.Finding
	v := findingView{ID: f.GetId(), Type: findingTypeNames[f.GetType()], State: stateName(f.GetState()),
		Country: f.GetSrcCountry(), ASN: f.GetSrcAsn(),
		FirstSeen: time.UnixMilli(f.GetFirstSeenMs()).UTC(), LastSeen: time.UnixMilli(f.GetLastSeenMs()).UTC(),
		Ports: f.GetPorts(), Packets: f.GetPackets(), Bytes: f.GetBytes(), DstIPs: f.GetDstIps(),
		Fingerprints: f.GetFingerprints(), Sensors: f.GetSensors(), Summary: f.GetSummary(),
		AckedBy: rec.AckedBy, AckedAt: timePtr(rec.AckedAt), SilencedUntil: timePtr(rec.SilencedUntil), Note: rec.Note}
	if a := findingAddr(f); a.IsValid() {
		v.IP = a.String()
	}
	for _, c := range f.GetClasses() {
		v.Classes = append(v.Classes, rollup.ClassName(c))
	}
	return v
}

// hostFindings returns the host findings in the reader's scope that match
// the query's filters, newest first.
func (s *Server) hostFindings(ctx context.Context, r *http.Request, p *principal) ([]FindingRecord, error) {
	q, err := s.parseQuery(r)
	if err != nil {
		return nil, err
	}
	typ := r.URL.Query().Get("type")
	if typ != "" && typ != "infected_host" && typ != "dos_victim" {
		return nil, badf("type: want infected_host or dos_victim")
	}
	state := r.URL.Query().Get("state")
	if state != "" && state != "open" && state != "all" && state != "ended" {
		return nil, badf("state: want open, ended or all")
	}
	if q.Country != "" && !p.account.seesAll() && len(p.account.Constituency.prefixes) == 0 &&
		!slices.Contains(p.account.Constituency.Countries, q.Country) {
		s.metrics.forbidden.Inc()
		return nil, errForbiddenCountry
	}
	if s.deps.Findings == nil {
		return nil, nil
	}
	all, err := s.deps.Findings.Findings(ctx)
	if err != nil {
		return nil, err
	}
	var out []FindingRecord
	for _, rec := range all {
		f := rec.Finding
		if f == nil || !isHostFinding(f) {
			continue
		}
		if !p.account.maysee(findingAddr(f), f.GetSrcCountry()) {
			continue
		}
		if typ != "" && findingTypeNames[f.GetType()] != typ {
			continue
		}
		ended := f.GetState() == jasperv1.FindingState_FINDING_STATE_ENDED
		if (state == "" || state == "open") && ended || state == "ended" && !ended {
			continue
		}
		if f.GetLastSeenMs() < q.From.UnixMilli() || f.GetFirstSeenMs() >= q.To.UnixMilli() {
			continue
		}
		if q.Country != "" && f.GetSrcCountry() != q.Country ||
			q.Sensor != "" && !slices.Contains(f.GetSensors(), q.Sensor) ||
			q.HasPort && !slices.Contains(f.GetPorts(), q.Port) {
			continue
		}
		out = append(out, rec)
	}
	slices.SortFunc(out, func(a, b FindingRecord) int {
		if c := b.Finding.GetLastSeenMs() - a.Finding.GetLastSeenMs(); c != 0 {
			if c > 0 {
				return 1
			}
			return -1
		}
		return strings.Compare(a.Finding.GetId(), b.Finding.GetId())
	})
	return out, nil
}

var errForbiddenCountry = errors.New("host-level data of that country is outside your constituency")

func (s *Server) findingsFail(w http.ResponseWriter, err error) {
	if errors.Is(err, errForbiddenCountry) {
		writeError(w, http.StatusForbidden, err.Error())
		return
	}
	s.fail(w, err)
}

type findingsResponse struct {
	Findings []findingView `json:"findings"`
}

func (s *Server) handleFindings(w http.ResponseWriter, r *http.Request, p *principal) {
	recs, err := s.hostFindings(r.Context(), r, p)
	if err != nil {
		s.findingsFail(w, err)
		return
	}
	out := findingsResponse{Findings: []findingView{}}
	for _, rec := range recs {
		out.Findings = append(out.Findings, viewFinding(rec))
	}
	writeJSON(w, out)
}

func (s *Server) handleFindingsCSV(w http.ResponseWriter, r *http.Request, p *principal) {
	recs, err := s.hostFindings(r.Context(), r, p)
	if err != nil {
		s.findingsFail(w, err)
		return
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write([]string{"id", "type", "state", "ip", "country", "asn", "first_seen", "last_seen", "ports",
		"classes", "packets", "bytes", "dst_ips", "sensors", "acked_by", "silenced_until", "summary"})
	for _, rec := range recs {
		v := viewFinding(rec)
		ports := make([]string, len(v.Ports))
		for i, pt := range v.Ports {
			ports[i] = strconv.FormatUint(uint64(pt), 10)
		}
		sil := ""
		if v.SilencedUntil != nil {
			sil = v.SilencedUntil.Format(time.RFC3339)
		}
		_ = cw.Write([]string{v.ID, v.Type, v.State, v.IP, v.Country, strconv.FormatUint(uint64(v.ASN), 10),
			v.FirstSeen.Format(time.RFC3339), v.LastSeen.Format(time.RFC3339), strings.Join(ports, " "),
			strings.Join(v.Classes, " "), strconv.FormatUint(v.Packets, 10), strconv.FormatUint(v.Bytes, 10),
			strconv.FormatUint(v.DstIPs, 10), strings.Join(v.Sensors, " "), v.AckedBy, sil, csvSafe(v.Summary)})
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="jasper-findings.csv"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// csvSafe defuses spreadsheet formula injection in free text.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func (s *Server) handleFindingsSTIX(w http.ResponseWriter, r *http.Request, p *principal) {
	if s.deps.STIX == nil {
		writeError(w, http.StatusNotImplemented, "STIX export is not configured on this hub")
		return
	}
	recs, err := s.hostFindings(r.Context(), r, p)
	if err != nil {
		s.findingsFail(w, err)
		return
	}
	fs := make([]*jasperv1.Finding, len(recs))
	for i, rec := range recs {
		fs[i] = rec.Finding
	}
	var buf bytes.Buffer
	if err := s.deps.STIX(r.Context(), &buf, fs); err != nil {
		if errors.Is(err, ErrNotConfigured) {
			writeError(w, http.StatusNotImplemented, "STIX export is not configured on this hub")
			return
		}
		s.fail(w, fmt.Errorf("stix export: %w", err))
		return
	}
	w.Header().Set("Content-Type", "application/stix+json;version=2.1")
	w.Header().Set("Content-Disposition", `attachment; filename="jasper-findings.stix.json"`)
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(buf.Bytes())
}

// findingInScope finds a host finding by id within the reader's scope.
func (s *Server) findingInScope(ctx context.Context, id string, p *principal) (*FindingRecord, error) {
	if s.deps.Findings == nil {
		return nil, nil
	}
	all, err := s.deps.Findings.Findings(ctx)
	if err != nil {
		return nil, err
	}
	for i := range all {
		f := all[i].Finding
		if f != nil && f.GetId() == id && isHostFinding(f) && p.account.maysee(findingAddr(f), f.GetSrcCountry()) {
			return &all[i], nil
		}
	}
	return nil, nil
}

type actionRequest struct {
	Note string `json:"note"`
	// Until (RFC 3339) or For (a duration like "24h") for silence.
	Until string `json:"until"`
	For   string `json:"for"`
}

func (s *Server) action(w http.ResponseWriter, r *http.Request, p *principal, silence bool) {
	if s.deps.Actions == nil {
		writeError(w, http.StatusNotImplemented, "finding actions are not configured on this hub")
		return
	}
	var req actionRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 8192)).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, "want a JSON body")
			return
		}
	}
	if len(req.Note) > 2000 {
		writeError(w, http.StatusBadRequest, "note: longer than 2000 characters")
		return
	}
	id := r.PathValue("id")
	rec, err := s.findingInScope(r.Context(), id, p)
	if err != nil {
		s.fail(w, err)
		return
	}
	if rec == nil {
		// Out-of-scope findings are reported as absent: their existence
		// is host-level data too.
		writeError(w, http.StatusNotFound, "no such finding in your constituency")
		return
	}
	if !silence {
		err = s.deps.Actions.Acknowledge(r.Context(), id, p.account.Name, req.Note)
	} else {
		now := s.deps.Now()
		var until time.Time
		switch {
		case req.Until != "":
			until, err = time.Parse(time.RFC3339, req.Until)
		case req.For != "":
			var d time.Duration
			d, err = time.ParseDuration(req.For)
			until = now.Add(d)
		default:
			until = now.Add(24 * time.Hour)
		}
		if err != nil || !until.After(now) || until.Sub(now) > 90*24*time.Hour {
			writeError(w, http.StatusBadRequest, "until/for: want a future time within 90 days")
			return
		}
		err = s.deps.Actions.Silence(r.Context(), id, p.account.Name, until, req.Note)
	}
	if errors.Is(err, ErrNotConfigured) {
		writeError(w, http.StatusNotImplemented, "finding actions are not configured on this hub")
		return
	}
	if !silence && errors.Is(err, ErrNotRouted) {
		s.log.Info("finding_ack_not_routed", "finding", id, "user", p.account.Name)
		writeError(w, http.StatusConflict, "finding "+id+" was sent to no recipient (no alerting route matched it), so no alert or reminder is pending and there is nothing to acknowledge; silence it instead to keep it muted should it be sent later")
		return
	}
	if err != nil {
		s.fail(w, fmt.Errorf("finding action: %w", err))
		return
	}
	s.log.Info("finding_action", "finding", id, "user", p.account.Name, "silence", silence)
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAck(w http.ResponseWriter, r *http.Request, p *principal) {
	s.action(w, r, p, false)
}

func (s *Server) handleSilence(w http.ResponseWriter, r *http.Request, p *principal) {
	s.action(w, r, p, true)
}

// surgeView is an early-warning finding: an aggregate, shown to everyone.
type surgeView struct {
	ID           string    `json:"id"`
	Type         string    `json:"type"`
	State        string    `json:"state"`
	Protocol     string    `json:"protocol,omitempty"`
	Port         uint32    `json:"port"`
	Fingerprint  string    `json:"fingerprint,omitempty"`
	Country      string    `json:"country,omitempty"`
	Baseline     float64   `json:"baseline"`
	Observed     float64   `json:"observed"`
	Jump         float64   `json:"jump"`
	Score        float64   `json:"score"`
	TopCountries []string  `json:"top_countries,omitempty"`
	DetectedAt   time.Time `json:"detected_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	Summary      string    `json:"summary"`
}

type earlyWarningResponse struct {
	Surges []surgeView `json:"surges"`
}

func (s *Server) handleEarlyWarning(w http.ResponseWriter, r *http.Request, p *principal) {
	q, err := s.parseQuery(r)
	if err != nil {
		s.fail(w, err)
		return
	}
	all := r.URL.Query().Get("state") == "all"
	out := earlyWarningResponse{Surges: []surgeView{}}
	if s.deps.Findings != nil {
		recs, err := s.deps.Findings.Findings(r.Context())
		if err != nil {
			s.fail(w, err)
			return
		}
		for _, rec := range recs {
			f := rec.Finding
			if f == nil || isHostFinding(f) || findingTypeNames[f.GetType()] == "" {
				continue
			}
			if !all && f.GetState() == jasperv1.FindingState_FINDING_STATE_ENDED {
				continue
			}
			if f.GetUpdatedAtMs() < q.From.UnixMilli() || f.GetDetectedAtMs() >= q.To.UnixMilli() {
				continue
			}
			if q.HasPort && f.GetPort() != q.Port || q.Protocol != 0 && f.GetProtocol() != uint32(q.Protocol) {
				continue
			}
			if q.Country != "" && f.GetCountry() != q.Country && !slices.Contains(f.GetTopCountries(), q.Country) {
				continue
			}
			if q.Sensor != "" && len(f.GetSensors()) > 0 && !slices.Contains(f.GetSensors(), q.Sensor) {
				continue
			}
			jump := 0.0
			if f.GetBaseline() > 0 {
				jump = f.GetObserved() / f.GetBaseline()
			}
			out.Surges = append(out.Surges, surgeView{ID: f.GetId(), Type: findingTypeNames[f.GetType()],
				State: stateName(f.GetState()), Protocol: protoName(f.GetProtocol()), Port: f.GetPort(),
				Fingerprint: f.GetFingerprint(), Country: f.GetCountry(), Baseline: f.GetBaseline(),
				Observed: f.GetObserved(), Jump: jump, Score: f.GetScore(), TopCountries: f.GetTopCountries(),
				DetectedAt: time.UnixMilli(f.GetDetectedAtMs()).UTC(), UpdatedAt: time.UnixMilli(f.GetUpdatedAtMs()).UTC(),
				Summary: f.GetSummary()})
		}
	}
	slices.SortFunc(out.Surges, func(a, b surgeView) int {
		switch {
		case a.Score != b.Score:
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	writeJSON(w, out)
}

type sensorsResponse struct {
	Sensors []SensorHealth `json:"sensors"`
}

func (s *Server) handleSensors(w http.ResponseWriter, r *http.Request, p *principal) {
	hs, err := s.deps.Source.Sensors(r.Context())
	if err != nil {
		s.fail(w, err)
		return
	}
	if s.deps.CertExpiry != nil {
		exp, err := s.deps.CertExpiry(r.Context())
		if err != nil {
			s.log.Warn("cert_expiry_failed", "err", err)
		}
		for i := range hs {
			if t, ok := exp[hs[i].ID]; ok {
				hs[i].CertExpiry = &t
			}
		}
	}
	if hs == nil {
		hs = []SensorHealth{}
	}
	writeJSON(w, sensorsResponse{Sensors: hs})
}
