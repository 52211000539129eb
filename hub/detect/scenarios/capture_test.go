package scenarios

import (
	"context"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/jasperfed/jasper/hub/detect"
	"github.com/jasperfed/jasper/hub/enrich"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
	"github.com/jasperfed/jasper/sensor/capture"
	"github.com/jasperfed/jasper/sensor/summary"
)

// summarise turns a capture into committed batches with the sensor's own
// code (capture.OpenFile, summary.Run) and enrichment (labels only).
func summarise(t *testing.T, file string) ([]*jasperv1.CommittedBatch, []summary.Row) {
	t.Helper()
	src, err := capture.OpenFile(filepath.Join("testdata", "pcaps", file))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	enr, err := enrich.New(enrich.DefaultConfig(), enrich.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var out []*jasperv1.CommittedBatch
	var rows []summary.Row
	err = summary.Run(context.Background(), src, summary.DefaultConfig(), func(b *jasperv1.Batch) error {
		rs, err := summary.DecodeBatch(b)
		if err != nil {
			return err
		}
		rows = append(rows, rs...)
		out = append(out, &jasperv1.CommittedBatch{SensorId: "s1", Batch: b, Enrichment: enr.Enrich(b)})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out, rows
}

func feed(d *detect.Detector, bs []*jasperv1.CommittedBatch) []*jasperv1.Finding {
	var got []*jasperv1.Finding
	d.OnFinding(func(f *jasperv1.Finding) { got = append(got, f) })
	for i, b := range bs {
		d.OnBatch(uint64(i+1), b)
	}
	return got
}

func isBackscatterRow(r summary.Row) bool {
	switch r.Class {
	case jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK, jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_RST:
		return true
	case jasperv1.TrafficClass_TRAFFIC_CLASS_ICMP:
		switch r.ICMPType {
		case 0, 3, 4, 5, 11, 12, 14, 16, 18:
			return r.Protocol == 1
		}
	}
	return false
}

// TestReflectionCaptureReflectorsAreDoSSources: on the real TCP reflection
// capture, the SYN/ACK-sending reflectors are backscatter (DoS-style)
// sources, never infected hosts.
func TestReflectionCaptureReflectorsAreDoSSources(t *testing.T) {
	bs, rows := summarise(t, "stopddos__amp.TCP.reflection.SYNACK.pcap")
	backscatter := map[netip.Addr]bool{}
	synack := map[netip.Addr]bool{}
	for _, r := range rows {
		if isBackscatterRow(r) && !enrich.IsBogon(r.SrcIP) {
			backscatter[r.SrcIP] = true
			if r.Class == jasperv1.TrafficClass_TRAFFIC_CLASS_TCP_SYNACK {
				synack[r.SrcIP] = true
			}
		}
	}
	if len(synack) < 5000 {
		t.Fatalf("only %d SYN/ACK sources in the capture's rows", len(synack))
	}
	// Defaults: the capture lasts 0.147 s, far below RS-DoS's 60 s, so no
	// finding; every reflector is tracked as a backscatter source.
	d, err := detect.New(detect.DefaultConfig(), detect.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	got := feed(d, bs)
	for _, f := range got {
		if f.Type == jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST {
			a, _ := netip.AddrFromSlice(f.SrcIp)
			if backscatter[a] {
				t.Fatalf("reflector %s reported as an infected host", a)
			}
		}
		if f.Type == jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM {
			t.Fatalf("DoS finding from a 0.147 s capture with RS-DoS defaults: %s", f.Summary)
		}
	}
	if _, victims := d.Tracked(); victims != len(backscatter) {
		t.Errorf("tracked %d backscatter sources, want %d", victims, len(backscatter))
	}
	// RS-DoS thresholds scaled down to the capture's span: every reflector
	// becomes a DoS-victim finding, with its backscatter classes.
	cfg := detect.DefaultConfig()
	cfg.DoS.MinPackets, cfg.DoS.MinDuration, cfg.DoS.MinPacketsPerMinute = 1, 0, 1
	d2, err := detect.New(cfg, detect.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	found := map[netip.Addr]bool{}
	for _, f := range feed(d2, bs) {
		a, _ := netip.AddrFromSlice(f.SrcIp)
		switch f.Type {
		case jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM:
			if !backscatter[a] {
				t.Errorf("DoS finding for %s, which sent no backscatter", a)
			}
			found[a] = true
		case jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST:
			if backscatter[a] {
				t.Errorf("reflector %s reported as an infected host", a)
			}
		}
	}
	for a := range synack {
		if !found[a] {
			t.Fatalf("SYN/ACK reflector %s not reported", a)
		}
	}
	if len(found) != len(backscatter) {
		t.Errorf("%d DoS findings, want %d backscatter sources", len(found), len(backscatter))
	}
	t.Logf("%d backscatter sources (%d sent SYN/ACK), all reported with scaled RS-DoS thresholds", len(backscatter), len(synack))
}

// TestMasscanCaptureScannerFound: on the real masscan capture the scanner
// is an infected-host finding carrying the masscan fingerprint.
func TestMasscanCaptureScannerFound(t *testing.T) {
	bs, _ := summarise(t, "esnet__masscan_tcp_0_1000_20190821.pcap")
	cfg := detect.DefaultConfig()
	cfg.IncludeBogonSources = true // the capture's scanner uses a private address
	d, err := detect.New(cfg, detect.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var ih []*jasperv1.Finding
	for _, f := range feed(d, bs) {
		if f.Type == jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST {
			ih = append(ih, f)
		}
	}
	if len(ih) != 1 {
		t.Fatalf("want 1 infected-host finding, got %d", len(ih))
	}
	// The sensor's early flushes raise the finding on the first seconds of
	// the scan; its counters grow with every later batch (the lists follow
	// at the next announcement).
	cur := d.Findings(detect.Filter{Types: []jasperv1.FindingType{jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST}})
	if len(cur) != 1 || cur[0].Id != ih[0].Id {
		t.Fatalf("findings held %v, announced %v", cur, ih)
	}
	if ih[0].Fingerprints["masscan"] < 1 || len(ih[0].Ports) == 0 {
		t.Errorf("announced evidence: fingerprints %v, ports %v", ih[0].Fingerprints, ih[0].Ports)
	}
	f := cur[0]
	if f.Packets < 1000 {
		t.Errorf("finding holds %d packets, want the 1,001 probes", f.Packets)
	}
	// End it to get the final lists.
	if _, err := d.Apply(uint64(len(bs)+1), detect.EndCommand(f.Id, "test")); err != nil {
		t.Fatal(err)
	}
	f = d.Findings(detect.Filter{Types: []jasperv1.FindingType{jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST}})[0]
	if a, _ := netip.AddrFromSlice(f.SrcIp); a != netip.MustParseAddr("172.31.15.102") {
		t.Errorf("finding for %s", a)
	}
	if f.Fingerprints["masscan"] < 1000 {
		t.Errorf("masscan fingerprint packets %d, want the 1,001 probes", f.Fingerprints["masscan"])
	}
	if len(f.Ports) != 64 || f.Packets < 1000 {
		t.Errorf("evidence ports %d packets %d", len(f.Ports), f.Packets)
	}
	// Without include_bogon_sources a private scanner is never reported.
	d2, _ := detect.New(detect.DefaultConfig(), detect.Deps{})
	for _, f := range feed(d2, bs) {
		t.Errorf("bogon source reported: %s", f.Summary)
	}
}
