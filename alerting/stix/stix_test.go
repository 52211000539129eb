package stix_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"

	"github.com/jasperfed/jasper/alerting/internal/stixschema"
	"github.com/jasperfed/jasper/alerting/stix"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

func findings() []*jasperv1.Finding {
	return []*jasperv1.Finding{
		{Id: "ih-1", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
			SrcIp: netip.MustParseAddr("198.51.100.7").AsSlice(), SrcCountry: "DE", SrcAsn: 64500, FirstSeenMs: 1764072000000, LastSeenMs: 1764072060000,
			DetectedAtMs: 1764072060000, UpdatedAtMs: 1764072060000, Packets: 420, DstIps: 300, Ports: []uint32{23, 2323},
			Fingerprints: map[string]uint64{"mirai": 400}, Sensors: []string{"de-1"}, Summary: "Mirai-style telnet scanning"},
		{Id: "ih-2", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, SrcIp: netip.MustParseAddr("2001:db8::7").AsSlice(), SrcCountry: "FR",
			FirstSeenMs: 1764072000000, LastSeenMs: 1764072000000, DetectedAtMs: 1764072000000, Packets: 1},
		{Id: "dos-1", Type: jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM, SrcIp: netip.MustParseAddr("203.0.113.5").AsSlice(), DetectedAtMs: 1764072000000, Packets: 5},
		{Id: "ps-1", Type: jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, Protocol: 6, Port: 23, DetectedAtMs: 1764072000000, Baseline: 10, Observed: 400},
		{Id: "fs-1", Type: jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE, Fingerprint: "mirai", DetectedAtMs: 1764072000000},
		{Id: "cs-1", Type: jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE, Country: "NL", DetectedAtMs: 1764072000000},
	}
}

func TestBundlesValidateAgainstOASISSchemas(t *testing.T) {
	v, err := stixschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, tlp := range []struct{ level, version, id string }{
		{"amber", "2.0", "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"},
		{"clear", "2.0", "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487"},
		{"amber+strict", "2.0", "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003"},
		{"red", "1.0", "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed"},
		{"white", "1.0", "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9"},
		{"green", "1.0", "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"},
	} {
		m, err := stix.TLP(tlp.level, tlp.version)
		if err != nil || m.ID != tlp.id {
			t.Fatalf("TLP(%s, %s) = %s, %v", tlp.level, tlp.version, m.ID, err)
		}
		for _, f := range findings() {
			b, err := json.Marshal(stix.BundleOf(f, m))
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Bundle(b); err != nil {
				t.Fatalf("%s %s: %v\n%s", f.Id, tlp.level, err, b)
			}
			var bundle stix.Bundle
			json.Unmarshal(b, &bundle)
			for _, o := range bundle.Objects {
				ob, _ := json.Marshal(o)
				if err := v.Object(ob); err != nil {
					t.Fatalf("%s object %s: %v", f.Id, o["type"], err)
				}
				if o["type"] != "marking-definition" && o["type"] != "identity" {
					if refs, _ := o["object_marking_refs"].([]any); len(refs) != 1 || refs[0] != tlp.id {
						t.Fatalf("%s %s not marked %s", f.Id, o["type"], tlp.id)
					}
				}
			}
		}
	}
	// The validator really rejects: a bundle missing a required property.
	m, _ := stix.TLP("", "")
	bad := stix.BundleOf(findings()[0], m)
	for _, o := range bad.Objects {
		if o["type"] == "indicator" {
			delete(o, "pattern")
		}
	}
	b, _ := json.Marshal(bad)
	if v.Bundle(b) == nil {
		t.Fatal("schema accepted an indicator without pattern")
	}
}

func TestHostBundleContent(t *testing.T) {
	m, _ := stix.TLP("amber", "2.0")
	b := stix.BundleOf(findings()[0], m)
	types := map[string]stix.Object{}
	for _, o := range b.Objects {
		types[o["type"].(string)] = o
	}
	for _, want := range []string{"identity", "marking-definition", "ipv4-addr", "observed-data", "indicator", "sighting", "malware", "relationship"} {
		if types[want] == nil {
			t.Errorf("missing %s", want)
		}
	}
	if types["indicator"]["pattern"] != "[ipv4-addr:value = '198.51.100.7']" || types["malware"]["name"] != "Mirai" {
		t.Fatalf("indicator %v malware %v", types["indicator"]["pattern"], types["malware"]["name"])
	}
	// SCO id per STIX 2.1 section 2.9 (UUIDv5 of {"value":"198.51.100.7"}),
	// value computed independently with Python's uuid.uuid5.
	if id := types["ipv4-addr"]["id"].(string); id != "ipv4-addr--"+wantSCO {
		t.Fatalf("sco id %s", id)
	}
	if sg := types["sighting"]; sg["sighting_of_ref"] != types["indicator"]["id"] || sg["count"] != int64(420) {
		t.Fatalf("sighting %v", sg)
	}
	b6 := stix.BundleOf(findings()[1], m)
	raw, _ := json.Marshal(b6)
	if !strings.Contains(string(raw), `"type":"ipv6-addr"`) || strings.Contains(string(raw), `"malware"`) {
		t.Fatalf("v6 bundle %s", raw)
	}
	// Deterministic.
	x, _ := json.Marshal(stix.BundleOf(findings()[0], m))
	y, _ := json.Marshal(stix.BundleOf(findings()[0], m))
	if string(x) != string(y) {
		t.Fatal("bundle not deterministic")
	}
}

const wantSCO = "12592121-be4c-5a93-a813-5a5af16e50db"

// refs collects every identifier an object points at: the values of its
// *_ref and *_refs properties, at any depth.
func refs(v any, key string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, y := range x {
			refs(y, k, out)
		}
	case []any:
		for _, y := range x {
			refs(y, key, out)
		}
	case []string:
		for _, y := range x {
			refs(y, key, out)
		}
	case string:
		if strings.HasSuffix(key, "_ref") || strings.HasSuffix(key, "_refs") {
			out[x] = true
		}
	}
}

// TestSharedObjectsCloseTheReferences: every identifier that a finding's
// objects reference is either one of the finding's own objects or one of
// Shared(m), for every finding type and TLP; and each shared object is
// valid STIX 2.1 with a stable id and its created (and, where the type has
// one, modified) time.
func TestSharedObjectsCloseTheReferences(t *testing.T) {
	v, err := stixschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	for _, tlp := range []struct{ level, version string }{{"amber", "2.0"}, {"red", "2.0"}, {"green", "1.0"}} {
		m, err := stix.TLP(tlp.level, tlp.version)
		if err != nil {
			t.Fatal(err)
		}
		shared := stix.Shared(m)
		have := map[string]bool{}
		for _, o := range shared {
			b, _ := json.Marshal(o)
			if err := v.Object(b); err != nil {
				t.Fatalf("shared %s: %v\n%s", o["type"], err, b)
			}
			if o["created"] == nil || (o["type"] == "identity" && o["modified"] == nil) {
				t.Fatalf("shared %s without its times: %s", o["type"], b)
			}
			have[o["id"].(string)] = true
		}
		if len(have) != 2 || !have[m.ID] || !have[stix.Identity()["id"].(string)] {
			t.Fatalf("shared ids %v", have)
		}
		for _, f := range findings() {
			objs := stix.Objects(f, m)
			own := map[string]bool{}
			for _, o := range objs {
				own[o["id"].(string)] = true
			}
			for _, o := range objs {
				var generic map[string]any
				b, _ := json.Marshal(o)
				json.Unmarshal(b, &generic)
				want := map[string]bool{}
				refs(generic, "", want)
				if len(want) == 0 && o["type"] != "ipv4-addr" && o["type"] != "ipv6-addr" {
					t.Fatalf("%s %s references nothing: the walk is broken", f.Id, o["type"])
				}
				for id := range want {
					if !own[id] && !have[id] {
						t.Errorf("%s %s references %s, which neither the finding nor Shared serves", f.Id, o["type"], id)
					}
				}
			}
		}
	}
	// Stable: the same ids and times on every call.
	a, _ := json.Marshal(stix.Shared(stix.Marking{}))
	b, _ := json.Marshal(stix.Shared(stix.Marking{}))
	if string(a) != string(b) {
		t.Fatal("shared objects not deterministic")
	}
}
