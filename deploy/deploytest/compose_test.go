package deploytest

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/jasperfed/jasper/internal/pki"
)

type composeFile struct {
	Name     string                    `yaml:"name"`
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]*struct{}      `yaml:"volumes"`
	// Extension fields (x-...) hold the shared anchors.
	Ext map[string]any `yaml:",inline"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
	} `yaml:"build"`
	Restart     string            `yaml:"restart"`
	ReadOnly    bool              `yaml:"read_only"`
	Tmpfs       []string          `yaml:"tmpfs"`
	CapDrop     []string          `yaml:"cap_drop"`
	SecurityOpt []string          `yaml:"security_opt"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Ports       []string `yaml:"ports"`
	Volumes     []string `yaml:"volumes"`
	Healthcheck *struct {
		Test     []string `yaml:"test"`
		Interval string   `yaml:"interval"`
		Timeout  string   `yaml:"timeout"`
		Retries  int      `yaml:"retries"`
	} `yaml:"healthcheck"`
	Ulimits map[string]struct {
		Soft int `yaml:"soft"`
		Hard int `yaml:"hard"`
	} `yaml:"ulimits"`
}

// hubConfig is the part of a hub configuration the compose checks read.
type hubConfig struct {
	NodeID string `yaml:"node_id"`
	Raft   struct {
		Advertise string `yaml:"advertise"`
		Peers     []struct{ ID, Address string }
	} `yaml:"raft"`
	Ingest struct {
		Listen string `yaml:"listen"`
	} `yaml:"ingest"`
	MetricsListen string `yaml:"metrics_listen"`
	ClickHouse    struct {
		Addr string `yaml:"addr"`
	} `yaml:"clickhouse"`
	Enrol struct {
		Listen string `yaml:"listen"`
	} `yaml:"enrol"`
}

// TestCompose checks deploy/compose/compose.yaml against itself and the
// files it names, and runs what can run without containers: pki.sh makes
// the federation's PKI, every hub configuration passes `jasper hub run
// --check` with it, the sensor's passes `jasper sensor run --check`.
func TestCompose(t *testing.T) {
	dir := filepath.Join(repoRoot(t), "deploy", "compose")
	b, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cf composeFile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cf); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	for k := range cf.Ext {
		if !strings.HasPrefix(k, "x-") {
			t.Errorf("compose.yaml: unknown top-level key %q", k)
		}
	}
	if cf.Name == "" {
		t.Error("compose.yaml: no project name")
	}
	for _, want := range []string{"pki", "clickhouse", "hub-1", "hub-2", "hub-3", "sensor-1"} {
		if _, ok := cf.Services[want]; !ok {
			t.Errorf("no service %s", want)
		}
	}
	mounts := map[string]map[string]string{} // service -> container path -> host source
	for name, s := range cf.Services {
		if s.Image == "" {
			t.Errorf("service %s: no image", name)
		}
		if s.Build != nil {
			if _, err := os.Stat(filepath.Join(dir, s.Build.Context, s.Build.Dockerfile)); err != nil {
				t.Errorf("service %s: build: %v", name, err)
			}
		}
		if !slices.Contains([]string{"no", "always", "on-failure", "unless-stopped"}, s.Restart) {
			t.Errorf("service %s: restart %q", name, s.Restart)
		}
		for dep, d := range s.DependsOn {
			ds, ok := cf.Services[dep]
			switch {
			case !ok:
				t.Errorf("service %s depends on unknown service %s", name, dep)
			case d.Condition == "service_healthy" && ds.Healthcheck == nil:
				t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", name, dep)
			case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, d.Condition):
				t.Errorf("service %s depends_on %s: condition %q", name, dep, d.Condition)
			}
		}
		mounts[name] = map[string]string{}
		for _, v := range s.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) < 2 || len(parts) > 3 || (len(parts) == 3 && parts[2] != "ro" && parts[2] != "rw") {
				t.Errorf("service %s: volume %q", name, v)
				continue
			}
			src := parts[0]
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("service %s: bind mount %s: %v", name, src, err)
				}
				src = filepath.Join(dir, src)
			} else if _, ok := cf.Volumes[src]; !ok {
				t.Errorf("service %s: volume %s is not declared", name, src)
			}
			mounts[name][parts[1]] = src
		}
		if s.Image == "jasper:dev" && (!s.ReadOnly || !slices.Contains(s.CapDrop, "ALL")) {
			t.Errorf("service %s: want read_only and cap_drop ALL", name)
		}
		// Entry scripts exist in the mounted config folder and parse.
		if len(s.Entrypoint) == 2 && s.Entrypoint[0] == "/bin/sh" {
			script := hostPath(t, mounts[name], s.Entrypoint[1])
			if out, err := exec.Command("sh", "-n", script).CombinedOutput(); err != nil {
				t.Errorf("service %s: %s: %v\n%s", name, script, err, out)
			}
		}
	}

	// Run pki.sh with /pki moved into a scratch folder.
	bin := jasperBin(t)
	scratch := t.TempDir()
	pkiDir := filepath.Join(scratch, "pki")
	script, _ := os.ReadFile(hostPath(t, mounts["pki"], cf.Services["pki"].Entrypoint[1]))
	pkiScript := filepath.Join(scratch, "pki.sh")
	if err := os.WriteFile(pkiScript, bytes.ReplaceAll(script, []byte("/pki"), []byte(pkiDir)), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", pkiScript)
	cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pki.sh: %v\n%s", err, out)
	}

	var hubs []string
	for name := range cf.Services {
		if strings.HasPrefix(name, "hub-") {
			hubs = append(hubs, name)
		}
	}
	slices.Sort(hubs)
	for _, name := range hubs {
		s := cf.Services[name]
		if len(s.Command) != 4 || s.Command[0] != "hub" || s.Command[1] != "run" || s.Command[2] != "--config" {
			t.Fatalf("service %s: command %v", name, s.Command)
		}
		conf := hostPath(t, mounts[name], s.Command[3])
		raw, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		var hc hubConfig
		if err := yaml.Unmarshal(raw, &hc); err != nil {
			t.Fatalf("%s: %v", conf, err)
		}
		if hc.NodeID != name || hc.Raft.Advertise != name+":7000" {
			t.Errorf("%s: node_id %q advertise %q, want the service name %s", conf, hc.NodeID, hc.Raft.Advertise, name)
		}
		var peers []string
		for _, p := range hc.Raft.Peers {
			peers = append(peers, p.ID)
			if p.Address != p.ID+":7000" {
				t.Errorf("%s: peer %s at %s", conf, p.ID, p.Address)
			}
		}
		if !slices.Equal(peers, hubs) {
			t.Errorf("%s: raft peers %v, want the hub services %v", conf, peers, hubs)
		}
		if host, _, _ := net.SplitHostPort(hc.ClickHouse.Addr); cf.Services[host].Image == "" {
			t.Errorf("%s: clickhouse.addr %s is not a service", conf, hc.ClickHouse.Addr)
		}
		if hc := s.Healthcheck; hc == nil || !strings.Contains(strings.Join(hc.Test, " "), "/dev/tcp/127.0.0.1/9200") {
			t.Errorf("service %s: healthcheck does not probe the metrics port 9200", name)
		}
		if portOf(t, hc.MetricsListen) != 9200 {
			t.Errorf("%s: metrics_listen %s, healthcheck probes 9200", conf, hc.MetricsListen)
		}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			in := parts[len(parts)-1]
			if !slices.Contains([]string{portStr(hc.Ingest.Listen), portStr(hc.Enrol.Listen), portStr(hc.MetricsListen)}, in) {
				t.Errorf("service %s publishes %s, which the hub does not listen on", name, p)
			}
		}
		// The real parser, with the PKI pki.sh made (enrol.ca_dir included).
		moved := bytes.ReplaceAll(raw, []byte("/pki/"), []byte(pkiDir+"/"))
		moved = bytes.ReplaceAll(moved, []byte("/var/lib/jasper-hub"), []byte(filepath.Join(scratch, name)))
		mc := filepath.Join(scratch, name+".yaml")
		if err := os.WriteFile(mc, moved, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := hubCheck(t, bin, mc); err != nil {
			t.Errorf("%s: jasper hub run --check: %v\n%s", conf, err, out)
		}
	}

	// The sensor: its token exists, its configuration parses, it talks to
	// the hub services.
	s := cf.Services["sensor-1"]
	id := s.Environment["SENSOR_ID"]
	if tok, err := os.ReadFile(filepath.Join(pkiDir, "tokens", id+".token")); err != nil || !bytes.HasPrefix(tok, []byte("jasper1.")) {
		t.Errorf("pki.sh made no join token for %s: %v", id, err)
	}
	sconf := hostPath(t, mounts["sensor-1"], "/etc/jasper/"+id+".yaml")
	// The state enrolment and sensor.sh leave: a certificate from the CA
	// pki.sh made (as `jasper sensor enrol` writes it) and the capture.
	state := filepath.Join(scratch, id)
	run(t, scratch, bin, "ca", "issue", "--dir", filepath.Join(pkiDir, "ca"), "--role", "sensor", "--id", id,
		"--country", "JP", "--prefix", s.Environment["SENSOR_DARKNET"], "--out", state)
	for from, to := range map[string]string{id + ".pem": "cert.pem", id + "-key.pem": "key.pem"} {
		if err := os.Rename(filepath.Join(state, from), filepath.Join(state, to)); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, _ := os.ReadFile(filepath.Join(pkiDir, "ca", "ca.pem"))
	ltk, err := pki.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	ltPEM, _ := pki.MarshalKeyPEM(ltk)
	for name, data := range map[string][]byte{"ca.pem": caPEM, "longterm-key.pem": ltPEM} {
		if err := os.WriteFile(filepath.Join(state, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	run(t, scratch, bin, "sensor", "gen", "--out", filepath.Join(state, "replay.pcap"), "--darknet", s.Environment["SENSOR_DARKNET"])
	sraw, _ := os.ReadFile(sconf)
	moved := filepath.Join(scratch, id+".yaml")
	if err := os.WriteFile(moved, bytes.ReplaceAll(sraw, []byte("/var/lib/jasper-sensor"), []byte(state)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "sensor", "run", "--config", moved, "--check").CombinedOutput()
	if err != nil {
		t.Errorf("%s: jasper sensor run --check: %v\n%s", sconf, err, out)
	}
	if !bytes.Contains(out, []byte("cert: "+filepath.Join(state, "cert.pem"))) {
		t.Errorf("%s: the sensor does not take its certificate from the enrolment folder:\n%s", sconf, out)
	}
	var sc struct {
		Hubs    []string `yaml:"hubs"`
		Darknet []string `yaml:"darknet"`
		Enrol   struct {
			Hubs []string `yaml:"hubs"`
			Dir  string   `yaml:"dir"`
		} `yaml:"enrol"`
	}
	sb, _ := os.ReadFile(sconf)
	if err := yaml.Unmarshal(sb, &sc); err != nil {
		t.Fatal(err)
	}
	for _, h := range sc.Hubs {
		host, _, _ := net.SplitHostPort(h)
		if !slices.Contains(hubs, host) {
			t.Errorf("%s: hub %s is not a hub service", sconf, h)
		}
	}
	for _, h := range sc.Enrol.Hubs {
		host, port, _ := net.SplitHostPort(h)
		if !slices.Contains(hubs, host) || port != "7444" {
			t.Errorf("%s: enrol hub %s is not a hub service's enrolment port", sconf, h)
		}
	}
	if sc.Enrol.Dir != "/var/lib/jasper-sensor" || mounts["sensor-1"][sc.Enrol.Dir] == "" {
		t.Errorf("%s: enrol.dir %q is not the sensor's state volume", sconf, sc.Enrol.Dir)
	}
	// sensor.sh enrols into the same folder and the same hubs.
	sh, _ := os.ReadFile(hostPath(t, mounts["sensor-1"], s.Entrypoint[1]))
	if !bytes.Contains(sh, []byte("--hub "+strings.Join(sc.Enrol.Hubs, ","))) || !bytes.Contains(sh, []byte("state="+sc.Enrol.Dir)) {
		t.Errorf("sensor.sh does not enrol with hubs %v into %s", sc.Enrol.Hubs, sc.Enrol.Dir)
	}
	if !slices.Contains(sc.Darknet, s.Environment["SENSOR_DARKNET"]) {
		t.Errorf("%s: darknet %v does not hold the generated capture's %s", sconf, sc.Darknet, s.Environment["SENSOR_DARKNET"])
	}
}

func portStr(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// hostPath maps a container path to the file under its bind mount.
func hostPath(t *testing.T, mounts map[string]string, p string) string {
	t.Helper()
	for target, src := range mounts {
		if rest, ok := strings.CutPrefix(p, target+"/"); ok && filepath.IsAbs(src) {
			return filepath.Join(src, rest)
		}
	}
	t.Fatalf("%s is under no bind mount of %v", p, mounts)
	return ""
}
