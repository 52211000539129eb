package deploytest

import (
	"bytes"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
)

func run(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out.String())
	}
	return out.String()
}

// TestDebPackages builds the two packages with deploy/deb/build.sh,
// extracts them into a scratch root with dpkg -x and checks what a Debian
// machine would get: control fields, conffiles, maintainer scripts, file
// modes, a binary that runs, packaged configs that pass --check, and units
// that systemd-analyze verify accepts.
func TestDebPackages(t *testing.T) {
	for _, tool := range []string{"dpkg", "dpkg-deb", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed: the .deb packages are not built or checked (CI installs it)", tool)
		}
	}
	if testing.Short() {
		t.Skip("-short: not building the .deb packages (builds the whole binary)")
	}
	root := repoRoot(t)
	out := t.TempDir()
	const version = "1.2.3-rc1"
	cmd := exec.Command("bash", filepath.Join(root, "deploy", "deb", "build.sh"), out)
	cmd.Env = append(os.Environ(), "JASPER_VERSION="+version)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build.sh: %v\n%s", err, b)
	}
	arch := strings.TrimSpace(run(t, root, "go", "env", "GOARCH"))
	scratch := t.TempDir()
	for _, role := range []string{"sensor", "hub"} {
		deb := filepath.Join(out, "jasper-"+role+"_1.2.3~rc1_"+arch+".deb")
		if _, err := os.Stat(deb); err != nil {
			t.Fatalf("package missing: %v (built: %v)", err, ls(out))
		}
		for field, want := range map[string]string{
			"Package":      "jasper-" + role,
			"Version":      "1.2.3~rc1",
			"Architecture": arch,
			"Depends":      "libc6, passwd",
		} {
			if got := strings.TrimSpace(run(t, out, "dpkg-deb", "--field", deb, field)); got != want {
				t.Errorf("%s %s: %q, want %q", filepath.Base(deb), field, got, want)
			}
		}
		ctrl := filepath.Join(t.TempDir(), "DEBIAN")
		run(t, out, "dpkg-deb", "--control", deb, ctrl)
		if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/jasper/"+role+".yaml" {
			t.Errorf("conffiles: %q", b)
		}
		postinst, _ := os.ReadFile(filepath.Join(ctrl, "postinst"))
		for _, want := range []string{"useradd --system", "install -d -o jasper -g jasper -m 0700 /var/lib/jasper-" + role,
			"update-alternatives --install /usr/bin/jasper jasper /usr/lib/jasper-" + role + "/jasper"} {
			if !bytes.Contains(postinst, []byte(want)) {
				t.Errorf("postinst lacks %q", want)
			}
		}
		prerm, _ := os.ReadFile(filepath.Join(ctrl, "prerm"))
		if !bytes.Contains(prerm, []byte("update-alternatives --remove jasper /usr/lib/jasper-"+role+"/jasper")) {
			t.Errorf("prerm does not withdraw the alternative:\n%s", prerm)
		}
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			run(t, ctrl, "sh", "-n", filepath.Join(ctrl, s))
		}
		run(t, out, "dpkg", "-x", deb, scratch)

		bin := filepath.Join(scratch, "usr", "lib", "jasper-"+role, "jasper")
		for path, mode := range map[string]os.FileMode{
			bin: 0o755,
			filepath.Join(scratch, "usr/lib/systemd/system/jasper-"+role+".service"): 0o644,
			filepath.Join(scratch, "etc/jasper/"+role+".yaml"):                       0o640,
		} {
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != mode {
				t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
			}
		}
		if got := strings.TrimSpace(run(t, scratch, bin, "version")); got != version {
			t.Errorf("packaged binary says version %q, want %q", got, version)
		}
		// The packaged config points only at paths the hardened unit can
		// write (its StateDirectory) or read.
		conf := filepath.Join(scratch, "etc/jasper/"+role+".yaml")
		b, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("/var/lib/jasper/")) {
			t.Errorf("%s writes under /var/lib/jasper/, outside StateDirectory=jasper-%s", conf, role)
		}
		if want := "/var/lib/jasper-" + role; !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s does not keep its state in %s", conf, want)
		}
		state := ""
		if role == "hub" {
			// The hub's --check loads its TLS files: give it some.
			writeHubCerts(t, filepath.Join(scratch, "etc/jasper"), conf)
		} else {
			// The sensor's --check loads the files enrolment writes into
			// /var/lib/jasper-sensor: check a copy pointing at a state
			// folder holding them.
			state = t.TempDir()
			ca, err := pki.NewCA("deb test", time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleSensor, ID: "jp-tokyo-1", Country: "JP",
				Prefixes: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}, Validity: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			ltk, err := pki.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			ltPEM, _ := pki.MarshalKeyPEM(ltk)
			for name, data := range map[string][]byte{"ca.pem": ca.PEM, "cert.pem": is.CertPEM, "key.pem": is.KeyPEM, "longterm-key.pem": ltPEM} {
				if err := os.WriteFile(filepath.Join(state, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			conf = filepath.Join(t.TempDir(), "sensor.yaml")
			if err := os.WriteFile(conf, bytes.ReplaceAll(b, []byte("/var/lib/jasper-sensor"), []byte(state)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		check := run(t, scratch, bin, role, "run", "--config", conf, "--check")
		if role == "sensor" && (!strings.Contains(check, "cert: "+filepath.Join(state, "cert.pem")) || !strings.Contains(check, "dir: "+state+"\n")) {
			t.Errorf("effective sensor config does not renew and take its TLS files in the enrolment folder %s:\n%s", state, check)
		}
		verifyUnit(t, scratch, role)
	}
}

func ls(dir string) []string {
	es, _ := os.ReadDir(dir)
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// writeHubCerts writes the CA and hub certificate the packaged hub config
// names (relative to /etc/jasper).
func writeHubCerts(t *testing.T, etc, conf string) {
	t.Helper()
	b, _ := os.ReadFile(conf)
	var caPath, certPath, keyPath string
	inTLS := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "tls:") {
			inTLS = true
			continue
		}
		if inTLS && !strings.HasPrefix(line, "  ") {
			inTLS = false
		}
		if !inTLS {
			continue
		}
		k, v, _ := strings.Cut(strings.TrimSpace(line), ":")
		v = strings.TrimSpace(v)
		if !filepath.IsAbs(v) {
			v = filepath.Join(etc, v)
		}
		switch k {
		case "ca":
			caPath = v
		case "cert":
			certPath = v
		case "key":
			keyPath = v
		}
	}
	if caPath == "" || certPath == "" || keyPath == "" || !strings.HasPrefix(caPath, etc) {
		t.Fatalf("packaged hub config: tls files ca=%q cert=%q key=%q not found under %s", caPath, certPath, keyPath, etc)
	}
	ca, err := pki.NewCA("deb test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: "hub-1"}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for path, data := range map[string][]byte{caPath: ca.PEM, certPath: is.CertPEM, keyPath: is.KeyPEM} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// verifyUnit runs systemd-analyze verify on the extracted unit. verify
// checks that ExecStart names an executable, so it is given a copy whose
// ExecStart points into the scratch root (--root= would need a whole
// systemd tree there).
func verifyUnit(t *testing.T, scratch, role string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: units not verified")
		return
	}
	name := "jasper-" + role + ".service"
	b, err := os.ReadFile(filepath.Join(scratch, "usr/lib/systemd/system", name))
	if err != nil {
		t.Fatal(err)
	}
	b = bytes.ReplaceAll(b, []byte("ExecStart=/usr/lib/"), []byte("ExecStart="+scratch+"/usr/lib/"))
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("systemd-analyze", "verify", "--man=no", filepath.Join(dir, name)).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", name, err, out)
	}
}
