// Package stix renders findings as STIX 2.1 bundles: for a host finding an
// ipv4-addr/ipv6-addr, an observed-data, an indicator, a sighting by the
// jasper federation, and the malware (with an "indicates" relationship)
// when a tool fingerprint names one; for an early warning an indicator (and
// the malware of a fingerprint surge). Every object is marked with the
// recipient's TLP (2.0 by default, 1.0 on request) using the published
// marking-definition ids.
//
// Output is deterministic: ids are UUIDv5 of the finding (SCO ids follow
// the STIX 2.1 rule: UUIDv5 in the STIX namespace of the canonical JSON of
// the id-contributing properties), times come from the finding.
package stix

import (
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"time"

	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Object is one STIX object (JSON object).
type Object = map[string]any

// Bundle is a STIX 2.1 bundle.
type Bundle struct {
	Type    string   `json:"type"`
	ID      string   `json:"id"`
	Objects []Object `json:"objects"`
}

// Marking is a TLP marking definition.
type Marking struct {
	ID     string
	Object Object
}

// TLP 2.0 marking definitions (OASIS cti-stix-common-objects,
// extension-definition-specifications/tlp-2.0).
const (
	TLP2Extension = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d"
	tlp2Created   = "2022-10-01T00:00:00.000Z"
	tlp1Created   = "2017-01-20T00:00:00.000Z"
)

var tlp2IDs = map[string]string{
	"clear":        "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
	"green":        "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
	"amber":        "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
	"amber+strict": "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
	"red":          "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
}

// TLP 1.0 marking definitions predefined by STIX 2.1 (section 7.2.1.4).
var tlp1IDs = map[string]string{
	"white": "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
	"green": "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
	"amber": "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
	"red":   "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
}

// TLP returns the marking definition of level ("clear", "green", "amber",
// "amber+strict", "red"; "white" is TLP 1.0's clear) in version "2.0"
// (default) or "1.0". Empty level means amber.
func TLP(level, version string) (Marking, error) {
	if level == "" {
		level = "amber"
	}
	level = strings.ToLower(level)
	if version == "1.0" {
		if level == "clear" {
			level = "white"
		}
		id, ok := tlp1IDs[level]
		if !ok {
			return Marking{}, fmt.Errorf("no TLP 1.0 marking %q", level)
		}
		return Marking{ID: id, Object: Object{
			"type": "marking-definition", "spec_version": "2.1", "id": id, "created": tlp1Created,
			"definition_type": "tlp", "name": "TLP:" + strings.ToUpper(level), "definition": Object{"tlp": level},
		}}, nil
	}
	if level == "white" {
		level = "clear"
	}
	id, ok := tlp2IDs[level]
	if !ok {
		return Marking{}, fmt.Errorf("no TLP 2.0 marking %q", level)
	}
	return Marking{ID: id, Object: Object{
		"type": "marking-definition", "spec_version": "2.1", "id": id, "created": tlp2Created,
		"name":       "TLP:" + strings.ToUpper(level),
		"extensions": Object{TLP2Extension: Object{"extension_type": "property-extension", "tlp_2_0": level}},
	}}, nil
}

// Namespaces for UUIDv5 ids.
var (
	scoNamespace    = mustUUID("00abedb4-aa42-466c-9c01-fed23315a9b7") // STIX 2.1 section 2.9
	jasperNamespace = mustUUID("5b0f6f5e-9a37-4c57-8c1e-6a4b0c2d7a11")
)

// Identity is the federation identity that creates and sights everything.
func Identity() Object {
	return Object{
		"type": "identity", "spec_version": "2.1", "id": "identity--" + uuid5(jasperNamespace, "identity:jasper"),
		"created": "2026-01-01T00:00:00.000Z", "modified": "2026-01-01T00:00:00.000Z",
		"name": "jasper darknet federation", "identity_class": "system",
		"description": "Darknet sensor federation: every packet its sensors see was unsolicited.",
	}
}

// Shared returns the objects that every object of Objects(f, m)
// references besides the finding's own: the federation's identity
// (created_by_ref, where_sighted_refs) and the marking definition
// (object_marking_refs). A bundle carries them once; a TAXII collection
// serves them once.
func Shared(m Marking) []Object { return []Object{Identity(), m.Object} }

// knownMalware maps tool fingerprints to malware families.
var knownMalware = map[string]struct {
	name  string
	types []string
}{
	"mirai": {"Mirai", []string{"bot", "worm"}},
}

func ts(ms int64) string {
	if ms <= 0 {
		ms = 0
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z")
}

// Objects returns the STIX objects of one finding, marked with m; they do
// not include the identity and marking definition objects they reference
// (Shared; BundleOf and Merge add them).
func Objects(f *jasperv1.Finding, m Marking) []Object {
	ident := Identity()["id"].(string)
	created, modified := f.GetDetectedAtMs(), f.GetUpdatedAtMs()
	if created <= 0 {
		created = f.GetFirstSeenMs()
	}
	if modified < created {
		modified = created
	}
	first, last := f.GetFirstSeenMs(), f.GetLastSeenMs()
	if first <= 0 {
		first = created
	}
	if last < first {
		last = first
	}
	base := func(typ, key string) Object {
		return Object{
			"type": typ, "spec_version": "2.1", "id": typ + "--" + uuid5(jasperNamespace, typ+":"+f.GetId()+":"+key),
			"created": ts(created), "modified": ts(modified), "created_by_ref": ident,
			"object_marking_refs": []string{m.ID},
		}
	}
	var out []Object
	var malware Object
	fps := sortedFingerprints(f)
	for _, fp := range fps {
		if k, ok := knownMalware[fp]; ok {
			malware = base("malware", "malware:"+fp)
			malware["id"] = "malware--" + uuid5(jasperNamespace, "malware:"+fp)
			malware["created"], malware["modified"] = "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"
			malware["name"], malware["is_family"], malware["malware_types"] = k.name, true, k.types
			break
		}
	}
	if f.GetType() == jasperv1.FindingType_FINDING_TYPE_FINGERPRINT_SURGE {
		if k, ok := knownMalware[f.GetFingerprint()]; ok {
			malware = base("malware", "")
			malware["id"] = "malware--" + uuid5(jasperNamespace, "malware:"+f.GetFingerprint())
			malware["created"], malware["modified"] = "2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z"
			malware["name"], malware["is_family"], malware["malware_types"] = k.name, true, k.types
		}
	}

	ind := base("indicator", "")
	ind["pattern_type"] = "stix"
	ind["valid_from"] = ts(first)
	ind["description"] = f.GetSummary()
	if addr, ok := netip.AddrFromSlice(f.GetSrcIp()); ok && len(f.GetSrcIp()) > 0 {
		addr = addr.Unmap()
		scoType := "ipv4-addr"
		if addr.Is6() {
			scoType = "ipv6-addr"
		}
		value := addr.String()
		canon, _ := json.Marshal(map[string]string{"value": value})
		ip := Object{"type": scoType, "spec_version": "2.1", "id": scoType + "--" + uuid5(scoNamespace, string(canon)),
			"value": value, "object_marking_refs": []string{m.ID}}
		kind := "infected host"
		ind["indicator_types"] = []string{"compromised", "malicious-activity"}
		if f.GetType() == jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM {
			kind = "DoS victim (backscatter)"
			ind["indicator_types"] = []string{"anomalous-activity"}
		}
		ind["name"] = fmt.Sprintf("Darknet: %s %s", kind, value)
		ind["pattern"] = fmt.Sprintf("[%s:value = '%s']", scoType, value)
		od := base("observed-data", "")
		od["first_observed"], od["last_observed"] = ts(first), ts(last)
		od["number_observed"] = numberObserved(f.GetPackets())
		od["object_refs"] = []string{ip["id"].(string)}
		sg := base("sighting", "")
		sg["sighting_of_ref"] = ind["id"]
		sg["observed_data_refs"] = []string{od["id"].(string)}
		sg["where_sighted_refs"] = []string{ident}
		sg["first_seen"], sg["last_seen"] = ts(first), ts(last)
		sg["count"] = numberObserved(f.GetPackets())
		sg["description"] = fmt.Sprintf("%d packets to %d darknet addresses, ports %v, seen by %d sensors", f.GetPackets(), f.GetDstIps(), f.GetPorts(), len(f.GetSensors()))
		out = append(out, ip, od, ind, sg)
	} else {
		ind["indicator_types"] = []string{"anomalous-activity"}
		switch f.GetType() {
		case jasperv1.FindingType_FINDING_TYPE_PORT_SURGE, jasperv1.FindingType_FINDING_TYPE_NEW_PORT:
			ind["name"] = fmt.Sprintf("Darknet early warning: sources surging on %s/%d", protoName(f.GetProtocol()), f.GetPort())
			ind["pattern"] = fmt.Sprintf("[network-traffic:dst_port = %d AND network-traffic:protocols[*] = '%s']", f.GetPort(), protoName(f.GetProtocol()))
		case jasperv1.FindingType_FINDING_TYPE_COUNTRY_SURGE:
			ind["name"] = fmt.Sprintf("Darknet early warning: infected hosts rising in %s", f.GetCountry())
			ind["pattern"] = "[network-traffic:protocols[*] = 'tcp']"
		default:
			ind["name"] = fmt.Sprintf("Darknet early warning: %s fingerprint surging", f.GetFingerprint())
			ind["pattern"] = "[network-traffic:protocols[*] = 'tcp']"
		}
		out = append(out, ind)
	}
	if malware != nil {
		rel := base("relationship", "indicates")
		rel["relationship_type"] = "indicates"
		rel["source_ref"], rel["target_ref"] = ind["id"], malware["id"]
		out = append(out, malware, rel)
	}
	return out
}

// BundleOf returns the bundle of one finding: identity, marking definition
// and the finding's objects.
func BundleOf(f *jasperv1.Finding, m Marking) Bundle {
	objs := append(Shared(m), Objects(f, m)...)
	return Bundle{Type: "bundle", ID: "bundle--" + uuid5(jasperNamespace, fmt.Sprintf("bundle:%s:%d", f.GetId(), f.GetUpdatedIndex())), Objects: objs}
}

func numberObserved(p uint64) int64 {
	if p == 0 {
		return 1
	}
	if p > 999999999 {
		return 999999999
	}
	return int64(p)
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
		return "ipv6-icmp"
	}
	return fmt.Sprintf("ip-proto-%d", p)
}

func sortedFingerprints(f *jasperv1.Finding) []string {
	var out []string
	for k, v := range f.GetFingerprints() {
		if v > 0 {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

type uuid [16]byte

func mustUUID(s string) uuid {
	b, err := hex.DecodeString(strings.ReplaceAll(s, "-", ""))
	if err != nil || len(b) != 16 {
		panic("stix: bad uuid " + s)
	}
	return uuid(b)
}

// uuid5 is RFC 4122 name-based UUID version 5 (SHA-1).
func uuid5(ns uuid, name string) string {
	h := sha1.New()
	h.Write(ns[:])
	h.Write([]byte(name))
	var u uuid
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x50
	u[8] = u[8]&0x3f | 0x80
	x := hex.EncodeToString(u[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:]
}

// BundleID is a deterministic bundle id for key (e.g. a delivery id).
func BundleID(key string) string { return "bundle--" + uuid5(jasperNamespace, "bundle:"+key) }

// Merge returns one bundle of several findings, each object once.
func Merge(id string, fs []*jasperv1.Finding, m Marking) Bundle {
	objs := Shared(m)
	seen := map[string]bool{}
	for _, f := range fs {
		for _, o := range Objects(f, m) {
			if oid := o["id"].(string); !seen[oid] {
				seen[oid] = true
				objs = append(objs, o)
			}
		}
	}
	return Bundle{Type: "bundle", ID: id, Objects: objs}
}

// UUID5 is a deterministic UUID (version 5) of name in jasper's namespace.
func UUID5(name string) string { return uuid5(jasperNamespace, name) }
