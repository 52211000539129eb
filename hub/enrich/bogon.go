package enrich

import (
	"encoding/binary"
	"net/netip"
)

// v4Range is an inclusive IPv4 range.
type v4Range struct{ lo, hi uint32 }

// specialV4 lists IPv4 special-purpose and bogon space (RFC 6890 and its
// updates, plus multicast and the reserved 240/4): sources in these ranges
// cannot be attributed to a country or organisation and are labelled bogon
// before any database lookup. 6to4 relay anycast (192.88.99.0/24, RFC 7526)
// is deprecated and included.
var specialV4 = mustV4(
	"0.0.0.0/8",          // "this network" (RFC 791, 6890)
	"10.0.0.0/8",         // private-use (RFC 1918)
	"100.64.0.0/10",      // shared address space (RFC 6598)
	"127.0.0.0/8",        // loopback (RFC 1122)
	"169.254.0.0/16",     // link local (RFC 3927)
	"172.16.0.0/12",      // private-use (RFC 1918)
	"192.0.0.0/24",       // IETF protocol assignments (RFC 6890)
	"192.0.2.0/24",       // documentation TEST-NET-1 (RFC 5737)
	"192.88.99.0/24",     // 6to4 relay anycast, deprecated (RFC 7526)
	"192.168.0.0/16",     // private-use (RFC 1918)
	"198.18.0.0/15",      // benchmarking (RFC 2544)
	"198.51.100.0/24",    // documentation TEST-NET-2 (RFC 5737)
	"203.0.113.0/24",     // documentation TEST-NET-3 (RFC 5737)
	"224.0.0.0/4",        // multicast (RFC 5771)
	"240.0.0.0/4",        // reserved (RFC 1112), includes broadcast
	"255.255.255.255/32", // limited broadcast (RFC 919)
)

// specialV6 lists IPv6 special-purpose space inside 2000::/3 (RFC 6890
// and updates); everything outside 2000::/3 is bogon except the
// IPv4-mapped range (classified as its IPv4 address) and the NAT64
// well-known prefix 64:ff9b::/96 (globally reachable, RFC 6052).
var specialV6 = mustPrefixes(
	"2001:2::/48",   // benchmarking (RFC 5180)
	"2001:10::/28",  // ORCHID, deprecated (RFC 4843)
	"2001:db8::/32", // documentation (RFC 3849)
	"3fff::/20",     // documentation (RFC 9637)
)

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func mustV4(ss ...string) []v4Range {
	out := make([]v4Range, len(ss))
	for i, s := range ss {
		p := netip.MustParsePrefix(s)
		lo := binary.BigEndian.Uint32(p.Addr().AsSlice())
		hi := lo | (^uint32(0) >> p.Bits())
		if p.Bits() == 0 {
			hi = ^uint32(0)
		}
		out[i] = v4Range{lo, hi}
	}
	return out
}

// IsBogon reports whether a source address lies in special-purpose,
// reserved, private, documentation, multicast or unallocated space: no
// country or organisation can be held responsible for it. An invalid
// address is bogon.
func IsBogon(a netip.Addr) bool {
	if !a.IsValid() {
		return true
	}
	a = a.Unmap()
	if a.Is4() {
		b := a.As4()
		return isBogonV4(binary.BigEndian.Uint32(b[:]))
	}
	b := a.As16()
	if b[0]&0xe0 != 0x20 { // outside 2000::/3
		return !nat64.Contains(a)
	}
	for _, p := range specialV6 {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func isBogonV4(v uint32) bool {
	for _, r := range specialV4 {
		if v >= r.lo && v <= r.hi {
			return true
		}
	}
	return false
}
