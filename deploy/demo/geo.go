package demo

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// fixtureCountries are given to the IPv4 /8 blocks in turn by the fixture
// country database, so that about a third of the generated sources fall in
// the demo's countries (JP, DE, BR) and reach their CERTs.
var fixtureCountries = []string{"JP", "DE", "BR", "US", "CN", "KR", "FR", "IN", "NL", "RU"}

// fixtureEpoch is the fixture databases' build time (fixed: same bytes
// every time).
var fixtureEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Unix()

// GeoSource says where the demo's geo databases came from.
type GeoSource struct {
	Dir string
	// Kind is "given" (--geo or $JASPER_GEO_DIR), "built" (an earlier
	// `jasper geo build` into the user cache) or "fixture" (made here: every
	// IPv4 /8 block gets a country of fixtureCountries in turn and the
	// private ASN 64512+N; not real data).
	Kind string
}

// hasGeo reports whether dir holds both databases.
func hasGeo(dir string) bool {
	for _, f := range []string{"country.mmdb", "asn.mmdb"} {
		if st, err := os.Stat(filepath.Join(dir, f)); err != nil || st.Size() == 0 {
			return false
		}
	}
	return true
}

// findGeo picks the geo databases: the given folder, $JASPER_GEO_DIR,
// $JASPER_TEST_GEO_DIR, then a folder built earlier under the user cache
// (jasper/geo-db, where .ci/setup-geo.sh builds them, or jasper/geo);
// otherwise it writes fixture databases into fixtureDir.
func findGeo(given, fixtureDir string) (GeoSource, error) {
	if given != "" {
		if !hasGeo(given) {
			return GeoSource{}, fmt.Errorf("geo folder %s: country.mmdb and asn.mmdb are needed (jasper geo build --out %s)", given, given)
		}
		return GeoSource{Dir: given, Kind: "given"}, nil
	}
	for _, env := range []string{"JASPER_GEO_DIR", "JASPER_TEST_GEO_DIR"} {
		if d := os.Getenv(env); d != "" && hasGeo(d) {
			return GeoSource{Dir: d, Kind: "given"}, nil
		}
	}
	if c, err := os.UserCacheDir(); err == nil {
		for _, name := range []string{"geo-db", "geo"} {
			if d := filepath.Join(c, "jasper", name); hasGeo(d) {
				return GeoSource{Dir: d, Kind: "built"}, nil
			}
		}
	}
	if err := writeFixtureGeo(fixtureDir); err != nil {
		return GeoSource{}, err
	}
	return GeoSource{Dir: fixtureDir, Kind: "fixture"}, nil
}

// writeFixtureGeo writes country.mmdb (ip-location-db layout,
// country_code) and asn.mmdb (GeoLite2-ASN layout) covering every IPv4
// address: block N/8 gets fixtureCountries[N mod len] and AS 64512+N.
func writeFixtureGeo(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	country, err := mmdbwriter.New(mmdbwriter.Options{BuildEpoch: fixtureEpoch, DatabaseType: "jasper-demo-country",
		Description: map[string]string{"en": "jasper demo fixture: not real data"}, IPVersion: 6, IncludeReservedNetworks: true})
	if err != nil {
		return fmt.Errorf("fixture geo: %w", err)
	}
	asn, err := mmdbwriter.New(mmdbwriter.Options{BuildEpoch: fixtureEpoch, DatabaseType: "jasper-demo-asn",
		Description: map[string]string{"en": "jasper demo fixture: not real data"}, IPVersion: 6, IncludeReservedNetworks: true, RecordSize: 28})
	if err != nil {
		return fmt.Errorf("fixture geo: %w", err)
	}
	for n := 1; n < 224; n++ {
		block := &net.IPNet{IP: net.IPv4(byte(n), 0, 0, 0).To4(), Mask: net.CIDRMask(8, 32)}
		cc := fixtureCountries[n%len(fixtureCountries)]
		if err := country.Insert(block, mmdbtype.Map{"country_code": mmdbtype.String(cc)}); err != nil {
			return fmt.Errorf("fixture geo %v: %w", block, err)
		}
		if err := asn.Insert(block, mmdbtype.Map{
			"autonomous_system_number":       mmdbtype.Uint32(64512 + n),
			"autonomous_system_organization": mmdbtype.String(fmt.Sprintf("Demo Network %d (%s)", n, cc)),
		}); err != nil {
			return fmt.Errorf("fixture geo %v: %w", block, err)
		}
	}
	for name, tree := range map[string]*mmdbwriter.Tree{"country.mmdb": country, "asn.mmdb": asn} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if _, err := tree.WriteTo(f); err != nil {
			f.Close()
			return fmt.Errorf("fixture geo %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "VERSION"), []byte("jasper demo fixture (not real data): IPv4 /8 blocks get "+
		fmt.Sprint(fixtureCountries)+" in turn and AS 64512+N\n"), 0o644)
}
