package taxii_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jasperfed/jasper/alerting/internal/stixschema"
	"github.com/jasperfed/jasper/alerting/stix"
	"github.com/jasperfed/jasper/alerting/taxii"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// refIDs collects the values of every *_ref and *_refs property.
func refIDs(v any, key string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		for k, y := range x {
			refIDs(y, k, out)
		}
	case []any:
		for _, y := range x {
			refIDs(y, key, out)
		}
	case string:
		if strings.HasSuffix(key, "_ref") || strings.HasSuffix(key, "_refs") {
			out[x] = true
		}
	}
}

const (
	tlp2Amber = "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421"
	tlp1Green = "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da"
)

// TestCollectionServesReferencedObjects: every collection serves, once,
// the federation's identity and the TLP marking definition its objects
// reference, so every reference resolves inside the collection; they
// validate against the OASIS schemas, keep their date_added on every
// request and under any page size, and objects/{id}/ returns them. A
// recipient still sees no other recipient's objects (nor its marking).
func TestCollectionServesReferencedObjects(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	v, err := stixschema.Load()
	if err != nil {
		t.Fatal(err)
	}
	identity := stix.Identity()["id"].(string)
	base := e.srv.URL + "/taxii2/jasper/collections/"
	for _, col := range []struct {
		recipient, token, marking, other string
	}{
		{"cert-de", "token-de", tlp2Amber, tlp1Green},
		{"cert-fr", "token-fr", tlp1Green, tlp2Amber},
	} {
		u := base + taxii.CollectionID(col.recipient) + "/"
		var all envelope
		get(t, c, u+"objects/?limit=1000", col.token, &all)
		count := map[string]int{}
		ids := map[string]bool{}
		for _, o := range all.Objects {
			id := o["id"].(string)
			count[id]++
			ids[id] = true
			b, _ := json.Marshal(o)
			if err := v.Object(b); err != nil {
				t.Fatalf("%s %s: %v", col.recipient, id, err)
			}
		}
		if count[identity] != 1 || count[col.marking] != 1 || count[col.other] != 0 {
			t.Fatalf("%s: identity %d, own marking %d, other marking %d times", col.recipient, count[identity], count[col.marking], count[col.other])
		}
		// The shared objects sort first (their own times predate the findings).
		if all.Objects[0]["type"] != "marking-definition" && all.Objects[0]["type"] != "identity" ||
			all.Objects[1]["type"] != "marking-definition" && all.Objects[1]["type"] != "identity" {
			t.Fatalf("%s starts with %v, %v", col.recipient, all.Objects[0]["id"], all.Objects[1]["id"])
		}
		// Every reference resolves inside the collection.
		for _, o := range all.Objects {
			want := map[string]bool{}
			refIDs(o, "", want)
			for id := range want {
				if !ids[id] {
					t.Errorf("%s: %s %s references %s, not in the collection", col.recipient, o["type"], o["id"], id)
				}
			}
		}
		// The manifest gives them stable versions and date_added: their own time.
		var man envelope
		get(t, c, u+"manifest/?limit=1000", col.token, &man)
		var again envelope
		get(t, c, u+"manifest/?limit=1000", col.token, &again)
		for i, m := range man.Objects {
			if fmt.Sprint(m) != fmt.Sprint(again.Objects[i]) {
				t.Fatalf("manifest row %d changed between requests: %v %v", i, m, again.Objects[i])
			}
			if m["id"] == identity || m["id"] == col.marking {
				o := all.Objects[i]
				want := o["created"]
				if o["modified"] != nil {
					want = o["modified"]
				}
				wt, _ := time.Parse(time.RFC3339Nano, want.(string))
				dt, _ := time.Parse(time.RFC3339Nano, m["date_added"].(string))
				vt, _ := time.Parse(time.RFC3339Nano, m["version"].(string))
				if !dt.Equal(wt) || !vt.Equal(wt) {
					t.Fatalf("%s manifest %v, object time %v", col.recipient, m, want)
				}
			}
		}
		// Fetched by id: the same object, once.
		for _, id := range []string{identity, col.marking} {
			var one envelope
			resp, code := get(t, c, u+"objects/"+id+"/", col.token, &one)
			if code != 200 || one.More || len(one.Objects) != 1 || one.Objects[0]["id"] != id || resp.Header.Get("X-TAXII-Date-Added-First") == "" {
				t.Fatalf("%s objects/%s/: %d %+v", col.recipient, id, code, one)
			}
			b, _ := json.Marshal(one.Objects[0])
			if err := v.Object(b); err != nil {
				t.Fatal(err)
			}
			var vers struct {
				More     bool     `json:"more"`
				Versions []string `json:"versions"`
			}
			if _, code := get(t, c, u+"objects/"+id+"/versions/", col.token, &vers); code != 200 || len(vers.Versions) != 1 {
				t.Fatalf("%s versions of %s: %d %+v", col.recipient, id, code, vers)
			}
		}
		// The other recipient's marking is not here.
		if _, code := get(t, c, u+"objects/"+col.other+"/", col.token, nil); code != 404 {
			t.Fatalf("%s serves %s: %d", col.recipient, col.other, code)
		}
	}
	// Isolation: DE cannot fetch FR's objects by id, nor through FR's
	// collection; FR's own objects are found in FR's.
	var fr envelope
	get(t, c, base+taxii.CollectionID("cert-fr")+"/objects/?match[type]=indicator", "token-fr", &fr)
	frInd := fr.Objects[0]["id"].(string)
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{base + taxii.CollectionID("cert-de") + "/objects/" + frInd + "/", "token-de", 404},
		{base + taxii.CollectionID("cert-fr") + "/objects/" + frInd + "/", "token-de", 404},
		{base + taxii.CollectionID("cert-fr") + "/objects/" + identity + "/", "token-de", 404},
		{base + taxii.CollectionID("cert-fr") + "/objects/" + frInd + "/", "token-fr", 200},
		{base + taxii.CollectionID("cert-fr") + "/objects/indicator--00000000-0000-4000-8000-000000000000/", "token-fr", 404},
		{base + taxii.CollectionID("cert-fr") + "/objects/" + frInd + "/?match[version]=yesterday", "token-fr", 400},
	} {
		if _, code := get(t, c, tc.path, tc.token, nil); code != tc.want {
			t.Errorf("%s with %s: %d, want %d", tc.path, tc.token, code, tc.want)
		}
	}
	// Only STIX 2.1 here.
	var none envelope
	if _, code := get(t, c, base+taxii.CollectionID("cert-fr")+"/objects/"+identity+"/?match[spec_version]=2.0", "token-fr", &none); code != 200 || len(none.Objects) != 0 {
		t.Fatalf("spec_version 2.0: %d %+v", code, none)
	}
}

// TestPagingAcrossSharedObjects: every page size and every added_after
// point give the whole collection exactly once, the shared objects
// included, in date_added order.
func TestPagingAcrossSharedObjects(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	u := e.srv.URL + "/taxii2/jasper/collections/" + taxii.CollectionID("cert-de") + "/manifest/"
	var all envelope
	get(t, c, u+"?limit=1000", "token-de", &all)
	for _, size := range []int{1, 2, 3, 7} {
		var got []string
		next := ""
		for pages := 0; ; pages++ {
			if pages > 1000 {
				t.Fatal("paging does not end")
			}
			q := url.Values{"limit": {fmt.Sprint(size)}}
			if next != "" {
				q.Set("next", next)
			}
			var p envelope
			get(t, c, u+"?"+q.Encode(), "token-de", &p)
			for _, o := range p.Objects {
				got = append(got, o["id"].(string)+" "+o["date_added"].(string))
			}
			if !p.More {
				break
			}
			next = p.Next
		}
		if len(got) != len(all.Objects) {
			t.Fatalf("pages of %d: %d rows, one page %d", size, len(got), len(all.Objects))
		}
		for i, o := range all.Objects {
			if got[i] != o["id"].(string)+" "+o["date_added"].(string) {
				t.Fatalf("pages of %d: row %d %s, want %v", size, i, got[i], o)
			}
		}
	}
	// added_after at each shared object's date_added: it is not repeated.
	for i := range 2 {
		var rest envelope
		get(t, c, u+"?limit=1000&added_after="+url.QueryEscape(all.Objects[i]["date_added"].(string)), "token-de", &rest)
		if len(rest.Objects) != len(all.Objects)-i-1 || rest.Objects[0]["id"] != all.Objects[i+1]["id"] {
			t.Fatalf("after row %d: %d rows starting %v", i, len(rest.Objects), rest.Objects[0])
		}
	}
}

// TestObjectVersions: a finding notified, then resolved with a later
// update, adds its objects twice; objects/{id}/ returns the latest version
// by default, first/all/a timestamp on request, and versions/ lists both.
func TestObjectVersions(t *testing.T) {
	e := setup(t)
	c := e.client(t, nil)
	// Continue the setup's log on its module (indexes only grow).
	t0 := time.Date(2026, 11, 25, 13, 0, 0, 0, time.UTC)
	f := &jasperv1.Finding{Id: "de-upd", Type: jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST, State: jasperv1.FindingState_FINDING_STATE_NEW,
		SrcIp: netip.MustParseAddr("198.51.100.200").AsSlice(), SrcCountry: "DE", DetectedAtMs: t0.UnixMilli(), UpdatedAtMs: t0.UnixMilli(), Packets: 3}
	e.mod.OnFinding(1000, f)
	e.mod.OnTick(1001, t0)
	f2 := proto.Clone(f).(*jasperv1.Finding)
	f2.State, f2.UpdatedAtMs, f2.Packets = jasperv1.FindingState_FINDING_STATE_ENDED, t0.Add(90*time.Second).UnixMilli(), 30
	e.mod.OnFinding(1002, f2)
	e.mod.OnTick(1003, t0.Add(3*time.Minute))

	u := e.srv.URL + "/taxii2/jasper/collections/" + taxii.CollectionID("cert-de") + "/objects/"
	var inds envelope
	get(t, c, u+"?match[type]=indicator&limit=1000", "token-de", &inds)
	var id string
	n := 0
	for _, o := range inds.Objects {
		if strings.Contains(o["name"].(string), "198.51.100.200") {
			id = o["id"].(string)
			n++
		}
	}
	if n != 2 {
		t.Fatalf("the updated finding's indicator is listed %d times", n)
	}
	v1, v2 := "2026-11-25T13:00:00.000Z", "2026-11-25T13:01:30.000Z"
	for _, tc := range []struct {
		query string
		want  []string
	}{
		{"", []string{v2}},
		{"?match[version]=last", []string{v2}},
		{"?match[version]=first", []string{v1}},
		{"?match[version]=all", []string{v1, v2}},
		{"?match[version]=" + url.QueryEscape(v1), []string{v1}},
		{"?match[version]=all&limit=1", []string{v1}},
	} {
		var env envelope
		get(t, c, u+id+"/"+tc.query, "token-de", &env)
		var got []string
		for _, o := range env.Objects {
			got = append(got, o["modified"].(string))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("objects/%s/%s: versions %v, want %v", id, tc.query, got, tc.want)
		}
		if tc.query == "?match[version]=all&limit=1" && (!env.More || env.Next == "") {
			t.Errorf("limit 1 of 2: more=%v next=%q", env.More, env.Next)
		}
	}
	var vers struct{ Versions []string }
	get(t, c, u+id+"/versions/", "token-de", &vers)
	if strings.Join(vers.Versions, ",") != v1+","+v2 {
		t.Fatalf("versions %v", vers.Versions)
	}
}
