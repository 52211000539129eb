package detect

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

const (
	typeIH = jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST
	typeDV = jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM
)

func TestInfectedFiresOnCrossingBatch(t *testing.T) {
	d := mustNew(t, DefaultConfig())
	f := newFeed(t, d)
	bin := t0.Unix()
	// Early-flush partial batches of one bin: 4+4 packets to 2 addresses
	// each (the same two: per-bin max), then 3 packets to 3 addresses.
	f.send(f.batch("s1", bin, r{src: "203.0.114.7", port: 23, packets: 4, dsts: 2, first: 100, last: 900}))
	f.send(f.batch("s1", bin, r{src: "203.0.114.7", port: 23, packets: 4, dsts: 2, first: 2100, last: 2900}))
	if len(f.found) != 0 {
		t.Fatalf("finding before crossing: %v", f.found)
	}
	if len(d.Findings(Filter{})) != 0 {
		t.Fatal("unexpected findings")
	}
	idx := f.send(f.batch("s1", bin, r{src: "203.0.114.7", port: 2323, packets: 3, dsts: 3, first: 4000, last: 4500}))
	got := f.ofType(typeIH)
	if len(got) != 1 {
		t.Fatalf("want 1 infected-host finding on the crossing batch, got %d", len(got))
	}
	x := got[0]
	if x.State != jasperv1.FindingState_FINDING_STATE_NEW || x.UpdatedIndex != idx {
		t.Errorf("state %v index %d, want NEW at %d", x.State, x.UpdatedIndex, idx)
	}
	if x.Packets != 11 || x.DstIps != 3 || !slices.Equal(x.Ports, []uint32{23, 2323}) {
		t.Errorf("evidence packets %d dsts %d ports %v", x.Packets, x.DstIps, x.Ports)
	}
	if x.FirstSeenMs != bin*1000+100 || x.LastSeenMs != bin*1000+4500 || x.DetectedAtMs != bin*1000+4500 {
		t.Errorf("times %d %d %d", x.FirstSeenMs, x.LastSeenMs, x.DetectedAtMs)
	}
	if x.GeoDbVersion != "2026-06-17" {
		t.Errorf("geo_db_version %q", x.GeoDbVersion)
	}
	if x.SrcCountry != "JP" || x.SrcAsn != 64500 || !slices.Equal(x.Sensors, []string{"s1"}) ||
		!slices.Equal(x.Classes, []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYN}) {
		t.Errorf("evidence %v %v %v %v", x.SrcCountry, x.SrcAsn, x.Sensors, x.Classes)
	}
	id := x.Id
	// More evidence from another sensor, 10 minutes later: the same finding,
	// continuing, announced (update_every 5 min).
	f.send(f.batch("s2", bin+600, r{src: "203.0.114.7", port: 23, packets: 5, dsts: 5}))
	got = f.ofType(typeIH)
	if len(got) != 2 || got[1].Id != id || got[1].State != jasperv1.FindingState_FINDING_STATE_CONTINUING {
		t.Fatalf("want a continuing update of %s, got %v", id, got)
	}
	if got[1].Packets != 16 || !slices.Equal(got[1].Sensors, []string{"s1", "s2"}) {
		t.Errorf("updated evidence packets %d sensors %v", got[1].Packets, got[1].Sensors)
	}
	// A batch right after: updated in state, not announced again.
	f.send(f.batch("s2", bin+610, r{src: "203.0.114.7", port: 23, packets: 1}))
	if n := len(f.ofType(typeIH)); n != 2 {
		t.Errorf("announced %d times, want 2 (rate-limited)", n)
	}
	open := d.Findings(Filter{Types: []jasperv1.FindingType{typeIH}})
	if len(open) != 1 || open[0].Packets != 17 {
		t.Fatalf("open findings %v", open)
	}
	// Quiet for 30 min of event time: ended.
	f.tick(time.Unix(bin+610+29*60, 0))
	if n := len(f.ofType(typeIH)); n != 2 {
		t.Fatalf("ended too early")
	}
	f.tick(time.Unix(bin+611+30*60, 0))
	got = f.ofType(typeIH)
	if len(got) != 3 || got[2].State != jasperv1.FindingState_FINDING_STATE_ENDED || got[2].Id != id {
		t.Fatalf("want ended %s, got %v", id, got)
	}
	// New activity later: a new finding with a new id.
	f.send(f.batch("s1", bin+7200, r{src: "203.0.114.7", port: 23, packets: 10, dsts: 3}))
	got = f.ofType(typeIH)
	if len(got) != 4 || got[3].Id == id || got[3].State != jasperv1.FindingState_FINDING_STATE_NEW {
		t.Fatalf("want a new finding, got %v", got[3:])
	}
	if all := d.Findings(Filter{}); len(all) != 2 {
		t.Errorf("Findings() = %d, want 2 (one ended, one open)", len(all))
	}
}

func TestInfectedWindowAndSameDestination(t *testing.T) {
	d := mustNew(t, DefaultConfig())
	f := newFeed(t, d)
	bin := t0.Unix()
	// A misconfigured host hammering one dark address in many partial
	// batches of one bin: never 3 distinct addresses.
	for i := range 20 {
		f.send(f.batch("s1", bin, r{src: "198.51.99.1", port: 80, packets: 5, dsts: 1, first: uint32(i * 1000)}))
	}
	if len(f.found) != 0 {
		t.Fatalf("single-destination host raised %v", f.found[0].Summary)
	}
	// Slow host: 5 packets to 2 addresses, then again after the 1 h window:
	// the window restarts, no finding.
	f.send(f.batch("s1", bin, r{src: "198.51.99.2", port: 80, packets: 5, dsts: 2}))
	f.send(f.batch("s1", bin+3700, r{src: "198.51.99.2", port: 80, packets: 5, dsts: 2}))
	if len(f.found) != 0 {
		t.Fatalf("window did not restart: %v", f.found[0].Summary)
	}
	// Port sweep of one dark address: 10 packets to 10 ports.
	var rows []r
	for p := range 10 {
		rows = append(rows, r{src: "198.51.99.3", port: uint32(1000 + p), packets: 1, dsts: 1})
	}
	f.send(f.batch("s1", bin, rows...))
	if got := f.ofType(typeIH); len(got) != 1 || !strings.Contains(got[0].Summary, "10 distinct ports") {
		t.Fatalf("port sweep: %v", got)
	}
}

func TestInfectedMiraiAndLabels(t *testing.T) {
	cfg := DefaultConfig()
	d := mustNew(t, cfg)
	f := newFeed(t, d)
	f.geo["71.6.146.185"] = geo{cc: "US", asn: 10439, label: jasperv1.SourceLabel_SOURCE_LABEL_RESEARCH}
	bin := t0.Unix()
	f.send(f.batch("s1", bin,
		r{src: "45.1.2.3", port: 23, packets: 1, dsts: 1, fps: map[string]uint64{"mirai": 1}},
		r{src: "71.6.146.185", port: 23, packets: 500, dsts: 400},
		r{src: "10.1.2.3", port: 23, packets: 500, dsts: 400},
		r{src: "45.9.9.9", port: 443, class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, packets: 500, dsts: 400},
	))
	got := f.ofType(typeIH)
	if len(got) != 1 || got[0].Fingerprints["mirai"] != 1 || !strings.Contains(got[0].Summary, "mirai") {
		t.Fatalf("want only the mirai host, got %v", got)
	}
	st := d.Stats()
	if st.ResearchRows != 1 || st.BogonRows != 1 || st.BackscatterRows != 1 {
		t.Errorf("stats %+v", st)
	}
	// Bogons are included on request (labs, captures with private hosts).
	cfg.IncludeBogonSources = true
	d2 := mustNew(t, cfg)
	f2 := newFeed(t, d2)
	f2.send(f2.batch("s1", bin, r{src: "10.1.2.3", port: 23, packets: 500, dsts: 400}))
	if len(f2.ofType(typeIH)) != 1 {
		t.Error("bogon not included with include_bogon_sources")
	}
}

func TestHostCapEvictsLeastRecent(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Infected.MaxHosts = 3
	d := mustNew(t, cfg)
	f := newFeed(t, d)
	bin := t0.Unix()
	for _, s := range []string{"45.0.0.1", "45.0.0.2", "45.0.0.3", "45.0.0.1", "45.0.0.4"} {
		f.send(f.batch("s1", bin, r{src: s, port: 23, packets: 9, dsts: 9}))
	}
	if st := d.Stats(); st.HostsEvicted != 1 {
		t.Errorf("evicted %d, want 1", st.HostsEvicted)
	}
	// 45.0.0.2 was evicted (least recent); its count restarts: 9+9 would
	// have crossed 10 packets.
	f.send(f.batch("s1", bin, r{src: "45.0.0.2", port: 23, packets: 9, dsts: 9}))
	f.send(f.batch("s1", bin, r{src: "45.0.0.1", port: 23, packets: 9, dsts: 9}))
	got := f.ofType(typeIH)
	if len(got) != 1 || string(got[0].SrcIp) != string([]byte{45, 0, 0, 1}) {
		t.Fatalf("want only 45.0.0.1 (kept, 18 packets), got %v", got)
	}
}

func TestDoSVictimRSDoS(t *testing.T) {
	d := mustNew(t, DefaultConfig())
	f := newFeed(t, d)
	bin := t0.Unix()
	sa := jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK
	// 10 packets a minute for 3 minutes: 30 packets over 2+ min but never
	// 30 in a minute: not RS-DoS.
	for m := range 3 {
		f.send(f.batch("s1", bin+int64(m*60), r{src: "93.184.216.34", port: 40000, class: sa, packets: 10, dsts: 8, first: 0, last: 59000}))
	}
	if len(f.ofType(typeDV)) != 0 {
		t.Fatal("slow backscatter raised a DoS finding")
	}
	// 40 in the first minute, 10 in the second: fires when duration reaches 60 s.
	f.send(f.batch("s1", bin, r{src: "93.184.216.35", port: 40000, class: sa, packets: 40, dsts: 30, first: 0, last: 30000}))
	if len(f.ofType(typeDV)) != 0 {
		t.Fatal("fired before 60 s")
	}
	idx := f.send(f.batch("s1", bin+60, r{src: "93.184.216.35", class: jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST, port: 40001, packets: 10, dsts: 9, first: 5000, last: 5000}))
	got := f.ofType(typeDV)
	if len(got) != 1 || got[0].UpdatedIndex != idx || got[0].Packets != 50 || got[0].Observed != 40 {
		t.Fatalf("DoS finding %v", got)
	}
	if !slices.Equal(got[0].Classes, []jasperv1.TrafficClass{jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST}) {
		t.Errorf("classes %v", got[0].Classes)
	}
	// ICMP: port unreachable is backscatter, echo request is a scan.
	icmp := jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP
	f.send(f.batch("s1", bin, r{src: "93.184.216.36", proto: 1, icmpType: 3, class: icmp, packets: 60, dsts: 50, first: 0, last: 59000}))
	f.send(f.batch("s1", bin+60, r{src: "93.184.216.36", proto: 1, icmpType: 3, class: icmp, packets: 5, dsts: 5, first: 10000, last: 20000}))
	f.send(f.batch("s1", bin, r{src: "93.184.216.37", proto: 1, icmpType: 8, class: icmp, packets: 60, dsts: 50, first: 0, last: 59000}))
	f.send(f.batch("s1", bin+60, r{src: "93.184.216.37", proto: 1, icmpType: 8, class: icmp, packets: 5, dsts: 5, first: 10000, last: 20000}))
	if n := len(f.ofType(typeDV)); n != 2 {
		t.Errorf("DoS findings %d, want 2 (ICMP unreachable source only)", n)
	}
	if n := len(f.ofType(typeIH)); n != 1 || !bytes.Equal(f.ofType(typeIH)[0].SrcIp, []byte{93, 184, 216, 37}) {
		t.Errorf("echo-request sender should be an infected host, got %v", f.ofType(typeIH))
	}
}

func TestEndCommand(t *testing.T) {
	d := mustNew(t, DefaultConfig())
	f := newFeed(t, d)
	f.send(f.batch("s1", t0.Unix(), r{src: "45.1.2.3", port: 23, fps: map[string]uint64{"mirai": 1}}))
	id := f.found[0].Id
	f.index++
	res, err := d.Apply(f.index, EndCommand(id, "false positive"))
	if err != nil {
		t.Fatal(err)
	}
	if x := res.(*jasperv1.Finding); x.State != jasperv1.FindingState_FINDING_STATE_ENDED || !strings.Contains(x.Summary, "false positive") {
		t.Errorf("result %v", x)
	}
	if _, err := d.Apply(f.index+1, EndCommand(id, "")); err == nil {
		t.Error("ending an ended finding must fail")
	}
	if _, err := d.Apply(f.index+1, []byte(`{"op":"explode"}`)); err == nil {
		t.Error("unknown op accepted")
	}
	if _, err := d.Apply(f.index+1, []byte(`{`)); err == nil {
		t.Error("bad json accepted")
	}
}

// TestEvictedHostKeepsItsFinding: a host evicted from the LRU while its
// finding is open comes back to the same finding (no second open finding
// for one subject).
func TestEvictedHostKeepsItsFinding(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Infected.MaxHosts = 2
	d := mustNew(t, cfg)
	f := newFeed(t, d)
	bin := t0.Unix()
	f.send(f.batch("s1", bin, r{src: "45.0.0.1", port: 23, fps: map[string]uint64{"mirai": 1}}))
	id := f.found[0].Id
	f.send(f.batch("s1", bin, r{src: "45.0.0.2", port: 23}, r{src: "45.0.0.3", port: 23}))
	f.send(f.batch("s1", bin+600, r{src: "45.0.0.1", port: 23, packets: 3}))
	open := d.Findings(Filter{States: []jasperv1.FindingState{jasperv1.FindingState_FINDING_STATE_NEW, jasperv1.FindingState_FINDING_STATE_CONTINUING}})
	if len(open) != 1 || open[0].Id != id || open[0].State != jasperv1.FindingState_FINDING_STATE_CONTINUING {
		t.Fatalf("open findings %v", open)
	}
	// It still ends after the quiet period, and frees the subject.
	f.tick(time.Unix(bin+600+31*60, 0))
	if n := len(d.Findings(Filter{States: []jasperv1.FindingState{jasperv1.FindingState_FINDING_STATE_ENDED}})); n != 1 {
		t.Errorf("%d ended findings, want 1", n)
	}
}
