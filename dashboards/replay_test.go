package dashboards

import (
	"context"
	"hash/fnv"
	"net/netip"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/hub/rollup"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

// Capture files in testdata (see testdata/MANIFEST.md).
const (
	pcapMasscanTCP = "esnet__masscan_tcp_0_1000_20190821.pcap"
	pcapMasscanUDP = "esnet__masscan_udp_0_1000_20190821.pcap"
	pcapSynscan    = "chrissanders__synscan.pcapng"
	pcapReflection = "stopddos__amp.TCP.reflection.SYNACK.pcap"
)

// summariseCapture runs the sensor's summariser over a capture file, with
// the whole address space dark.
func summariseCapture(t testing.TB, name string) []*jasperv1.Batch {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	var out []*jasperv1.Batch
	if err := summary.Run(context.Background(), src, summary.DefaultConfig(), func(b *jasperv1.Batch) error {
		out = append(out, b)
		return nil
	}); err != nil {
		t.Fatalf("summarise %s: %v", name, err)
	}
	if len(out) == 0 {
		t.Fatalf("summarise %s: no batch", name)
	}
	return out
}

var (
	captureOnce  sync.Once
	captureCache map[string][]*jasperv1.Batch
)

func captures(t testing.TB) map[string][]*jasperv1.Batch {
	captureOnce.Do(func() {
		captureCache = map[string][]*jasperv1.Batch{}
		for _, n := range []string{pcapMasscanTCP, pcapMasscanUDP, pcapSynscan, pcapReflection} {
			captureCache[n] = summariseCapture(t, n)
		}
	})
	return captureCache
}

// Synthetic enrichment: the captures' scanners get fixed countries, every
// other source a country picked by hash (the tests have no geo database).
var (
	fixedCountry = map[string]string{
		"172.31.15.102": "JP", // the masscan scanner
		"172.16.0.8":    "DE", // the nmap SYN scanner
		"64.13.134.52":  "US", // scanme.nmap.org answering
		"10.10.10.10":   "FR", // the reflection victim's own traffic
	}
	hashCountries = []string{"US", "CN", "BR", "RU", "IN", "KR", "VN", "TW", "ID", "NL", "GB", "IT", "TR", "MX",
		"AR", "ZA", "EG", "IR", "TH", "JP", "DE", "FR", "CA", "AU", "PL", "UA", "ES", "CL", "NG", "SE"}
)

func synthCountry(a netip.Addr) (string, uint32) {
	if c, ok := fixedCountry[a.String()]; ok {
		return c, 64500 + uint32(len(c))
	}
	h := fnv.New32a()
	b := a.As16()
	h.Write(b[:])
	v := h.Sum32()
	i := int(v % uint32(len(hashCountries)))
	return hashCountries[i], 1000 + uint32(i)*10 + (v>>8)%4
}

func enrich(b *jasperv1.Batch) *jasperv1.Enrichment {
	en := &jasperv1.Enrichment{GeoDbVersion: "synthetic-test"}
	for _, raw := range b.GetRows().GetSrcIp() {
		a, _ := netip.AddrFromSlice(raw)
		c, asn := synthCountry(a.Unmap())
		en.SrcCountry = append(en.SrcCountry, c)
		en.SrcAsn = append(en.SrcAsn, asn)
		en.SrcLabel = append(en.SrcLabel, jasperv1.SourceLabel_SOURCE_LABEL_ROUTABLE)
	}
	return en
}

// replay feeds the captures' batches into m as if sensors had sent them
// over the six hours before now: the masscan scans from tokyo-1 every 15
// and 30 minutes, the nmap SYN scan from berlin-1 every 5 minutes in the
// last three hours, and the reflection attack's backscatter at saopaulo-1
// every 2 minutes in the last 90 minutes.
func replay(t testing.TB, m *rollup.Module, now time.Time) {
	log := replayLog(t, now)
	for _, cb := range log {
		m.OnBatch(cb.GetRaftIndex(), cb)
	}
	m.OnTick(uint64(len(log))+1, now)
}

// replayLog returns the committed batches of the replay, raft indexes from 1.
func replayLog(t testing.TB, now time.Time) []*jasperv1.CommittedBatch {
	caps := captures(t)
	start := now.Truncate(time.Minute).Add(-6 * time.Hour)
	var log []*jasperv1.CommittedBatch
	seq := map[string]uint64{}
	play := func(sensor, country, name string, at time.Time) {
		bs := caps[name]
		first := bs[0].GetBinStart()
		for _, b := range bs {
			seq[sensor]++
			index := uint64(len(log)) + 1
			nb := &jasperv1.Batch{Sequence: seq[sensor], BinStart: at.Unix() + (b.GetBinStart() - first),
				BinSeconds: b.GetBinSeconds(), Partial: b.GetPartial(), Stats: b.GetStats(), Rows: b.GetRows(),
				SealedAtMs: at.Add(65 * time.Second).UnixMilli()}
			log = append(log, &jasperv1.CommittedBatch{RaftIndex: index, SensorId: sensor, SensorCountry: country,
				Batch: nb, Enrichment: enrich(b), ReceivedAtMs: at.Add(66 * time.Second).UnixMilli()})
		}
	}
	for i := range 360 {
		at := start.Add(time.Duration(i) * time.Minute)
		if i%15 == 0 {
			play("tokyo-1", "JP", pcapMasscanTCP, at)
		}
		if i%30 == 7 {
			play("tokyo-1", "JP", pcapMasscanUDP, at)
		}
		if i >= 180 && i%5 == 2 {
			play("berlin-1", "DE", pcapSynscan, at)
		}
		if i >= 270 && i%2 == 1 {
			play("saopaulo-1", "BR", pcapReflection, at)
		}
	}
	return log
}

// replayFindings builds the findings a detector would raise on the replay:
// the two scanners as infected hosts, the top backscatter sources of JP
// and DE as DoS victims, and surges taken from the rollups.
func replayFindings(m *rollup.Module, now time.Time) []FindingRecord {
	last := now.Add(-time.Minute)
	var recs []FindingRecord
	host := func(id string, typ jasperv1.FindingType, h rollup.Host, summary string) {
		recs = append(recs, FindingRecord{Finding: &jasperv1.Finding{Id: id, Type: typ,
			State: jasperv1.FindingState_FINDING_STATE_CONTINUING, SrcIp: h.Addr.AsSlice(), SrcCountry: h.Country,
			SrcAsn: h.ASN, Ports: h.Ports, Packets: h.Packets, Bytes: h.Bytes, Sensors: h.Sensors,
			Fingerprints: hostFingerprints(m, h),
			Classes:      classes(h.Classes),
			FirstSeenMs:  h.FirstSeen.UnixMilli(), LastSeenMs: min(h.LastSeen.UnixMilli(), last.UnixMilli()),
			DetectedAtMs: h.FirstSeen.UnixMilli(), UpdatedAtMs: last.UnixMilli(), Summary: summary}})
	}
	one := func(f rollup.Filter, keep func(netip.Addr, string) bool) rollup.Host {
		hs := m.Hosts(f, keep, 1)
		if len(hs) == 0 {
			return rollup.Host{}
		}
		return hs[0]
	}
	is := func(ip string) func(netip.Addr, string) bool {
		return func(a netip.Addr, _ string) bool { return a.String() == ip }
	}
	host("inf-masscan", jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, one(rollup.Filter{}, is("172.31.15.102")),
		"masscan-like SYN sweep of TCP 0-1000 into the darknet")
	host("inf-nmap", jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, one(rollup.Filter{}, is("172.16.0.8")),
		"SYN scan of 1,000 ports into the darknet")
	for _, cc := range []string{"JP", "DE"} {
		h := one(rollup.Filter{Sensor: "saopaulo-1", Country: cc}, nil)
		host("dos-"+cc, jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM, h, "SYN/ACK backscatter: a DoS victim answering spoofed SYNs")
	}
	// A port surge: the top TCP port of the last 90 minutes against the
	// hours before.
	var recent []rollup.Entry
	for _, e := range m.Top(rollup.Filter{From: now.Add(-90 * time.Minute), Protocol: 6}, rollup.DimPort, 0) {
		if e.Key != "other" {
			recent = append(recent, e)
			break
		}
	}
	if len(recent) == 1 {
		pn, _ := strconv.ParseUint(recent[0].Key, 10, 16)
		p := uint32(pn)
		before := m.Top(rollup.Filter{To: now.Add(-90 * time.Minute), Protocol: 6, HasPort: true, Port: p}, rollup.DimPort, 1)
		base := 0.5
		if len(before) == 1 {
			base = float64(before[0].Sources) / 3
		}
		recs = append(recs, FindingRecord{Finding: &jasperv1.Finding{Id: "surge-tcp-" + recent[0].Key,
			Type: jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, State: jasperv1.FindingState_FINDING_STATE_NEW,
			Protocol: 6, Port: p, Baseline: base, Observed: float64(recent[0].Sources), Score: 12.5,
			TopCountries: topCountries(m, rollup.Filter{From: now.Add(-90 * time.Minute), Protocol: 6, HasPort: true, Port: p}),
			DetectedAtMs: now.Add(-88 * time.Minute).UnixMilli(), UpdatedAtMs: last.UnixMilli(),
			Summary: "distinct sources on this port jumped against the 30-minute baseline"}})
	}
	recs = append(recs, FindingRecord{Finding: &jasperv1.Finding{Id: "surge-fp-masscan",
		Type: jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE, State: jasperv1.FindingState_FINDING_STATE_CONTINUING,
		Fingerprint: "masscan", Baseline: 0, Observed: 1, Score: 4.2, TopCountries: []string{"JP"},
		DetectedAtMs: now.Add(-6 * time.Hour).UnixMilli(), UpdatedAtMs: last.UnixMilli(),
		Summary: "a source carrying the masscan IP-ID signature appeared"}})
	return recs
}

func topCountries(m *rollup.Module, f rollup.Filter) []string {
	var out []string
	for _, e := range m.Top(f, rollup.DimCountry, 3) {
		out = append(out, e.Key)
	}
	return out
}

func classes(names []string) []jasperv1.TrafficClass {
	var out []jasperv1.TrafficClass
	for _, n := range names {
		out = append(out, jasperv1.TrafficClass(jasperv1.TrafficClass_value["TRAFFIC_CLASS_"+strings.ToUpper(n)]))
	}
	return out
}

// hostFingerprints counts a host's fingerprinted packets from the rollups
// (the cells of its country and sensors).
func hostFingerprints(m *rollup.Module, h rollup.Host) map[string]uint64 {
	out := map[string]uint64{}
	for _, sn := range h.Sensors {
		for _, e := range m.Top(rollup.Filter{Sensor: sn, Country: h.Country}, rollup.DimFingerprint, 0) {
			out[e.Key] += e.Packets
		}
	}
	return out
}
