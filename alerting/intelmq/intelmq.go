// Package intelmq maps findings to events named after the IntelMQ data
// format (harmonisation): source.ip, source.asn, source.geolocation.cc,
// classification.taxonomy/type/identifier, time.source, time.observation,
// feed.name, extra.*. Webhooks send these events as JSON; e-mail evidence
// uses the same names as CSV columns, so a CERT's IntelMQ ingests either.
package intelmq

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// FeedName is feed.name of every event.
const FeedName = "jasper-darknet"

// Event is one IntelMQ event: field name to value (string, int, float,
// []uint32, []string).
type Event map[string]any

func iso(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000+00:00")
}

// Classify returns taxonomy, type and identifier for a finding.
func Classify(f *jasperv1.Finding) (taxonomy, typ, identifier string) {
	switch f.GetType() {
	case jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:
		id := "darknet-scanner"
		for _, fp := range Fingerprints(f) {
			if fp == "mirai" {
				id = "mirai"
			}
		}
		return "malicious-code", "infected-system", id
	case jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:
		return "availability", "ddos", "backscatter"
	case jasperv1.FindingType_FINDING_TYPE_PORT_SURGE:
		return "information-gathering", "scanner", "port-surge"
	case jasperv1.FindingType_FINDING_TYPE_NEW_PORT:
		return "information-gathering", "scanner", "new-port"
	case jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE:
		return "information-gathering", "scanner", "fingerprint-surge-" + f.GetFingerprint()
	case jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE:
		return "other", "undetermined", "country-surge"
	}
	return "other", "undetermined", "unknown"
}

// Fingerprints returns the fingerprint names seen, sorted.
func Fingerprints(f *jasperv1.Finding) []string {
	var out []string
	for k, v := range f.GetFingerprints() {
		if v > 0 {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// Transport names an IP protocol number.
func Transport(p uint32) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1, 58:
		return "icmp"
	}
	return ""
}

// FromFinding builds the event of a finding. kind is why it is sent (new,
// reminder, resolved), ticket the notification's ticket, observedMs the
// notification time.
func FromFinding(f *jasperv1.Finding, kind, ticket string, observedMs int64) Event {
	tax, typ, ident := Classify(f)
	e := Event{
		"feed.name":                 FeedName,
		"feed.provider":             "jasper",
		"classification.taxonomy":   tax,
		"classification.type":       typ,
		"classification.identifier": ident,
		"time.observation":          iso(observedMs),
		"extra.finding_id":          f.GetId(),
		"extra.finding_type":        strings.ToLower(strings.TrimPrefix(f.GetType().String(), "FINDING_TYPE_")),
		"extra.state":               strings.ToLower(strings.TrimPrefix(f.GetState().String(), "FINDING_STATE_")),
		"extra.notification":        kind,
		"extra.ticket":              ticket,
	}
	src := f.GetLastSeenMs()
	if src <= 0 {
		src = f.GetDetectedAtMs()
	}
	if src > 0 {
		e["time.source"] = iso(src)
	}
	if a, ok := netip.AddrFromSlice(f.GetSrcIp()); ok {
		e["source.ip"] = a.Unmap().String()
	}
	if f.GetSrcAsn() != 0 {
		e["source.asn"] = f.GetSrcAsn()
	}
	if f.GetSrcCountry() != "" {
		e["source.geolocation.cc"] = f.GetSrcCountry()
	}
	if f.GetPort() != 0 {
		e["destination.port"] = f.GetPort()
	}
	if t := Transport(f.GetProtocol()); t != "" {
		e["protocol.transport"] = t
	}
	for _, fp := range Fingerprints(f) {
		if fp == "mirai" {
			e["malware.name"] = "mirai"
		}
	}
	if s := f.GetSummary(); s != "" {
		e["event_description.text"] = s
	}
	if f.GetFirstSeenMs() > 0 {
		e["extra.first_seen"] = iso(f.GetFirstSeenMs())
	}
	if f.GetPackets() > 0 {
		e["extra.packets"] = f.GetPackets()
		e["extra.bytes"] = f.GetBytes()
		e["extra.darknet_addresses"] = f.GetDstIps()
	}
	if len(f.GetPorts()) > 0 {
		e["extra.destination_ports"] = f.GetPorts()
	}
	if fps := Fingerprints(f); len(fps) > 0 {
		e["extra.fingerprints"] = fps
	}
	if len(f.GetSensors()) > 0 {
		e["extra.sensors"] = len(f.GetSensors())
	}
	if f.GetCountry() != "" {
		e["extra.country"] = f.GetCountry()
	}
	if f.GetType() >= jasperv1.FindingType_FINDING_TYPE_PORT_SURGE {
		e["extra.baseline"] = f.GetBaseline()
		e["extra.observed"] = f.GetObserved()
		e["extra.score"] = f.GetScore()
		if len(f.GetTopCountries()) > 0 {
			e["extra.top_countries"] = f.GetTopCountries()
		}
	}
	return e
}

// CSVColumns are the evidence CSV's columns, in order.
var CSVColumns = []string{
	"extra.ticket", "extra.notification", "extra.finding_id", "classification.taxonomy", "classification.type",
	"classification.identifier", "source.ip", "source.asn", "source.geolocation.cc", "time.source",
	"extra.first_seen", "time.observation", "protocol.transport", "destination.port", "extra.destination_ports",
	"extra.packets", "extra.bytes", "extra.darknet_addresses", "extra.fingerprints", "malware.name",
	"extra.sensors", "extra.state", "event_description.text", "feed.name",
}

// CSVRow renders an event's CSVColumns as strings (lists joined by space).
func (e Event) CSVRow() []string {
	row := make([]string, len(CSVColumns))
	for i, c := range CSVColumns {
		row[i] = format(e[c])
	}
	return row
}

func format(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		if x != "" && strings.ContainsRune("=+-@\t\r", rune(x[0])) {
			return "'" + x // no formula injection when opened in a spreadsheet
		}
		return x
	case []string:
		return strings.Join(x, " ")
	case []uint32:
		s := make([]string, len(x))
		for i, p := range x {
			s[i] = strconv.FormatUint(uint64(p), 10)
		}
		return strings.Join(s, " ")
	default:
		return fmt.Sprint(x)
	}
}
