package deploytest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jasperfed/jasper/internal/pki"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// jasperBin builds the jasper binary once for the package's tests.
func jasperBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "jasper-deploytest-")
		if binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "jasper")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/jasper")
		cmd.Dir = repoRoot(t)
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = err
			binPath = string(out)
		}
	})
	if binErr != nil {
		t.Fatalf("go build ./cmd/jasper: %v\n%s", binErr, binPath)
	}
	return binPath
}

// writeCerts writes a CA and a hub certificate at the given paths.
func writeCerts(t *testing.T, id, caPath, certPath, keyPath string) {
	t.Helper()
	ca, err := pki.NewCA("deploy test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := ca.Issue(pki.IssueRequest{Identity: pki.Identity{Role: pki.RoleHub, ID: id}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}, Validity: time.Hour})
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

// writeCA writes a CA (ca.pem, ca-key.pem) into dir.
func writeCA(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.NewCA("deploy test enrol CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Save(dir); err != nil {
		t.Fatal(err)
	}
}

// hubCheck runs `jasper hub run --config conf --check`. While the binary
// has no ClickHouse loader extension wired in (it then refuses a clickhouse
// section), the rest of the configuration is checked without that section,
// and the test says so.
func hubCheck(t *testing.T, bin, conf string) ([]byte, error) {
	t.Helper()
	out, err := exec.Command(bin, "hub", "run", "--config", conf, "--check").CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("this binary has no ClickHouse loader")) {
		return out, err
	}
	t.Logf("%s: this jasper binary has no ClickHouse loader: its clickhouse section is not checked", conf)
	b, rerr := os.ReadFile(conf)
	if rerr != nil {
		t.Fatal(rerr)
	}
	var kept []string
	skipping := false
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && line[0] != ' ' && line[0] != '#' {
			skipping = strings.HasPrefix(line, "clickhouse:")
		}
		if !skipping {
			kept = append(kept, line)
		}
	}
	stripped := conf + ".without-clickhouse.yaml"
	if err := os.WriteFile(stripped, []byte(strings.Join(kept, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	return exec.Command(bin, "hub", "run", "--config", stripped, "--check").CombinedOutput()
}
