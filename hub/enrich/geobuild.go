package enrich

import (
	"bufio"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// ASNRange is one line of an ip-location-db ASN CSV: an inclusive address
// range, its origin ASN and the organisation's name.
type ASNRange struct {
	Start, End netip.Addr
	ASN        uint32
	Org        string
}

// ParseASNRecord parses one CSV record "start,end,asn,organisation" (the
// organisation may be missing). Both ends must be of one family, start <=
// end, and the ASN a decimal uint32.
func ParseASNRecord(rec []string) (ASNRange, error) {
	if len(rec) < 3 {
		return ASNRange{}, fmt.Errorf("want at least 3 fields, got %d", len(rec))
	}
	s, err := netip.ParseAddr(strings.TrimSpace(rec[0]))
	if err != nil {
		return ASNRange{}, fmt.Errorf("range start: %w", err)
	}
	e, err := netip.ParseAddr(strings.TrimSpace(rec[1]))
	if err != nil {
		return ASNRange{}, fmt.Errorf("range end: %w", err)
	}
	if s.Zone() != "" || e.Zone() != "" {
		return ASNRange{}, errors.New("zoned address")
	}
	s, e = s.Unmap(), e.Unmap()
	if s.Is4() != e.Is4() {
		return ASNRange{}, errors.New("range mixes IPv4 and IPv6")
	}
	if e.Less(s) {
		return ASNRange{}, errors.New("range end before start")
	}
	asn, err := strconv.ParseUint(strings.TrimSpace(rec[2]), 10, 32)
	if err != nil {
		return ASNRange{}, fmt.Errorf("asn: %w", err)
	}
	r := ASNRange{Start: s, End: e, ASN: uint32(asn)}
	if len(rec) > 3 {
		r.Org = rec[3]
	}
	return r, nil
}

// BuildStats counts what BuildASN did.
type BuildStats struct {
	Ranges  int   // ranges inserted
	Skipped int   // ranges refused (reserved space, bad lines)
	Bytes   int64 // bytes written
}

// BuildASN converts ip-location-db ASN CSV files (IPv4 and IPv6, in any
// order) into a MaxMind DB in the GeoLite2-ASN record layout
// (autonomous_system_number, autonomous_system_organization) and writes it
// to w. buildEpoch (Unix seconds) is stored as the database build time, so
// that the same input always gives the same file. Lines that do not parse,
// and ranges inside reserved space, are skipped and counted.
func BuildASN(w io.Writer, buildEpoch int64, csvs ...io.Reader) (BuildStats, error) {
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:   buildEpoch,
		DatabaseType: "jasper-asn",
		Description:  map[string]string{"en": "IP to origin ASN (ip-location-db asn, CC BY 4.0)"},
		RecordSize:   28,
		IPVersion:    6,
	})
	if err != nil {
		return BuildStats{}, fmt.Errorf("new mmdb tree: %w", err)
	}
	var st BuildStats
	for i, in := range csvs {
		cr := csv.NewReader(bufio.NewReaderSize(in, 1<<20))
		cr.FieldsPerRecord = -1
		cr.ReuseRecord = true
		for line := 1; ; line++ {
			rec, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				var pe *csv.ParseError
				if errors.As(err, &pe) {
					st.Skipped++
					continue
				}
				return st, fmt.Errorf("csv %d line %d: %w", i, line, err)
			}
			r, err := ParseASNRecord(rec)
			if err != nil || r.ASN == 0 {
				st.Skipped++
				continue
			}
			val := mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(r.ASN)}
			if r.Org != "" {
				val["autonomous_system_organization"] = mmdbtype.String(r.Org)
			}
			if err := tree.InsertRange(net.IP(r.Start.AsSlice()), net.IP(r.End.AsSlice()), val); err != nil {
				st.Skipped++
				continue
			}
			st.Ranges++
		}
	}
	n, err := tree.WriteTo(w)
	if err != nil {
		return st, fmt.Errorf("write mmdb: %w", err)
	}
	st.Bytes = n
	return st, nil
}
