// Package route decides who receives a finding and when: the routing table
// (organisation by most specific prefix or AS, the country's CERT unless it
// opted out of organisation copies, early-warning subscribers), silences,
// and Alertmanager-style grouping per recipient (group wait, digest
// interval, repeat interval, rate limit).
//
// Everything here is a pure function of its inputs and event time in Unix
// milliseconds: the alerting FSM module runs it on every hub and gets the
// same answer (DESIGN.md promise 5). Nothing reads the clock.
package route

import (
	"net/netip"
	"sort"
	"strings"

	"github.com/jasperfed/jasper/alerting/directory"
	jasperv1 "github.com/jasperfed/jasper/proto/jasper/v1"
)

// Reason says why a recipient receives a finding.
type Reason string

// Reasons.
const (
	ReasonOrganisation Reason = "organisation" // the host is in the organisation's prefixes/ASNs
	ReasonCountry      Reason = "country"      // the CERT of the host's country, no organisation matched
	ReasonCountryCopy  Reason = "country_copy" // the CERT's copy of an organisation's finding
	ReasonSubscription Reason = "subscription" // early-warning subscriber
)

// Target is one recipient of a finding.
type Target struct {
	Recipient string
	Reason    Reason
}

// Table is a compiled routing table. Build one per directory version.
type Table struct {
	orgPrefixes []orgPrefix // sorted by bits descending
	orgASN      map[uint32][]string
	cert        map[string]*directory.Recipient
	subscribers map[string][]string
}

type orgPrefix struct {
	p  netip.Prefix
	id string
}

// Compile builds the routing table of d (which must be valid). Disabled
// recipients get nothing.
func Compile(d *directory.Directory) *Table {
	t := &Table{orgASN: map[uint32][]string{}, cert: map[string]*directory.Recipient{}, subscribers: map[string][]string{}}
	for i := range d.Recipients {
		r := &d.Recipients[i]
		if r.Disabled {
			continue
		}
		if r.CERT {
			t.cert[r.Country] = r
		}
		for _, s := range r.Prefixes {
			if p, err := netip.ParsePrefix(s); err == nil {
				t.orgPrefixes = append(t.orgPrefixes, orgPrefix{p.Masked(), r.ID})
			}
		}
		for _, a := range r.ASNs {
			t.orgASN[a] = append(t.orgASN[a], r.ID)
		}
		for _, s := range r.Subscriptions {
			t.subscribers[s] = append(t.subscribers[s], r.ID)
		}
	}
	sort.SliceStable(t.orgPrefixes, func(i, j int) bool {
		a, b := t.orgPrefixes[i], t.orgPrefixes[j]
		if a.p.Bits() != b.p.Bits() {
			return a.p.Bits() > b.p.Bits()
		}
		return a.id < b.id
	})
	for _, ids := range t.orgASN {
		sort.Strings(ids)
	}
	for _, ids := range t.subscribers {
		sort.Strings(ids)
	}
	return t
}

// TypeName is the directory name of a finding type ("infected_host").
func TypeName(t jasperv1.FindingType) string {
	s, ok := jasperv1.FindingType_name[int32(t)]
	if !ok {
		return "unspecified"
	}
	return strings.ToLower(strings.TrimPrefix(s, "FINDING_TYPE_"))
}

// IsHostFinding reports whether a finding is about one host (routed by
// address) rather than an early warning (routed by subscription).
func IsHostFinding(t jasperv1.FindingType) bool {
	return t == jasperv1.FindingType_FINDING_TYPE_INFECTED_HOST || t == jasperv1.FindingType_FINDING_TYPE_DOS_VICTIM
}

// Route returns the recipients of f, sorted by recipient id, each once.
//
// A host finding goes to the organisations whose prefix contains the host
// most specifically (all organisations tied at that length); if no prefix
// matches, to the organisations registering the host's AS. The CERT of the
// host's country receives it too: as primary recipient when no organisation
// matched, otherwise as a copy unless it opted out of copies. Early-warning
// findings go to every subscriber of their type.
func (t *Table) Route(f *jasperv1.Finding) []Target {
	var out []Target
	if IsHostFinding(f.GetType()) {
		orgs := t.matchOrgs(f)
		for _, id := range orgs {
			out = append(out, Target{id, ReasonOrganisation})
		}
		if c := t.cert[f.GetSrcCountry()]; c != nil {
			switch {
			case len(orgs) == 0:
				out = append(out, Target{c.ID, ReasonCountry})
			case !c.OrgCopiesOptOut:
				out = append(out, Target{c.ID, ReasonCountryCopy})
			}
		}
	} else {
		for _, id := range t.subscribers[TypeName(f.GetType())] {
			out = append(out, Target{id, ReasonSubscription})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Recipient < out[j].Recipient })
	// One target per recipient: the first reason wins (an organisation that
	// is also its country's CERT gets it once).
	dedup := out[:0]
	for i, tg := range out {
		if i > 0 && out[i-1].Recipient == tg.Recipient {
			continue
		}
		dedup = append(dedup, tg)
	}
	return dedup
}

func (t *Table) matchOrgs(f *jasperv1.Finding) []string {
	var ids []string
	if a, ok := netip.AddrFromSlice(f.GetSrcIp()); ok {
		a = a.Unmap()
		bits := -1
		for _, op := range t.orgPrefixes {
			if bits >= 0 && op.p.Bits() < bits {
				break
			}
			if op.p.Contains(a) {
				bits = op.p.Bits()
				ids = append(ids, op.id)
			}
		}
	}
	if len(ids) == 0 && f.GetSrcAsn() != 0 {
		ids = append(ids, t.orgASN[f.GetSrcAsn()]...)
	}
	return ids
}
