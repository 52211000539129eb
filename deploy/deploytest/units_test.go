package deploytest

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository's top folder.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// unit is a parsed systemd unit: section -> key -> values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	sec := ""
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			sec = line[1 : len(line)-1]
			if u[sec] == nil {
				u[sec] = map[string][]string{}
			}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || sec == "" {
				t.Fatalf("%s:%d: not a key=value line in a section: %q", path, n, line)
			}
			u[sec][k] = append(u[sec][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

func (u unit) last(sec, key string) (string, bool) {
	vs := u[sec][key]
	if len(vs) == 0 {
		return "", false
	}
	return vs[len(vs)-1], true
}

func TestUnitsHardened(t *testing.T) {
	root := repoRoot(t)
	common := map[string]string{
		"User":                    "jasper",
		"Group":                   "jasper",
		"NoNewPrivileges":         "yes",
		"ProtectSystem":           "strict",
		"ProtectHome":             "yes",
		"PrivateTmp":              "yes",
		"PrivateDevices":          "yes",
		"ProtectKernelTunables":   "yes",
		"ProtectKernelModules":    "yes",
		"ProtectControlGroups":    "yes",
		"RestrictSUIDSGID":        "yes",
		"LockPersonality":         "yes",
		"MemoryDenyWriteExecute":  "yes",
		"SystemCallArchitectures": "native",
		"StateDirectoryMode":      "0700",
		"UMask":                   "0077",
	}
	for _, tc := range []struct {
		role string
		caps string // AmbientCapabilities and CapabilityBoundingSet
	}{
		{"sensor", "CAP_NET_RAW CAP_NET_ADMIN"},
		{"hub", ""},
	} {
		t.Run(tc.role, func(t *testing.T) {
			path := filepath.Join(root, "deploy", "systemd", "jasper-"+tc.role+".service")
			u := parseUnit(t, path)
			for k, want := range common {
				if got, _ := u.last("Service", k); got != want {
					t.Errorf("%s=%q, want %q", k, got, want)
				}
			}
			for _, k := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
				got, ok := u.last("Service", k)
				if !ok || got != tc.caps {
					t.Errorf("%s=%q (set: %v), want %q", k, got, ok, tc.caps)
				}
			}
			if got, _ := u.last("Service", "StateDirectory"); got != "jasper-"+tc.role {
				t.Errorf("StateDirectory=%q, want jasper-%s (/var/lib/jasper-%s)", got, tc.role, tc.role)
			}
			exec, _ := u.last("Service", "ExecStart")
			wantExec := "/usr/lib/jasper-" + tc.role + "/jasper " + tc.role + " run --config /etc/jasper/" + tc.role + ".yaml"
			if exec != wantExec {
				t.Errorf("ExecStart=%q, want %q", exec, wantExec)
			}
			if fams, _ := u.last("Service", "RestrictAddressFamilies"); strings.Contains(fams, "AF_PACKET") != (tc.role == "sensor") {
				t.Errorf("RestrictAddressFamilies=%q: AF_PACKET is for the sensor only", fams)
			}
			if got, _ := u.last("Install", "WantedBy"); got != "multi-user.target" {
				t.Errorf("WantedBy=%q", got)
			}
			checkExposure(t, path, map[string]float64{"sensor": 3.0, "hub": 2.5}[tc.role])
		})
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for [^:]+: ([0-9.]+)`)

// checkExposure runs systemd's own offline security review of a unit and
// holds it to a maximum exposure score (0 = fully locked down, 10 = none).
func checkExposure(t *testing.T, path string, maxScore float64) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Log("systemd-analyze not installed: exposure score not checked")
		return
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=yes", "--no-pager", path).CombinedOutput()
	m := exposureRE.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("%s: systemd exposure %.1f", filepath.Base(path), score)
	if score > maxScore {
		t.Errorf("exposure %.1f above %.1f:\n%s", score, maxScore, out)
	}
}
