package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsyaml "sigs.k8s.io/yaml"
)

// manifests are the decoded objects of deploy/k8s, by kind and name.
type manifests struct {
	namespaces   map[string]*corev1.Namespace
	configMaps   map[string]*corev1.ConfigMap
	services     map[string]*corev1.Service
	statefulSets map[string]*appsv1.StatefulSet
	pdbs         map[string]*policyv1.PodDisruptionBudget
}

// splitYAML returns each document of a multi-document YAML stream,
// re-encoded on its own (empty documents dropped).
func splitYAML(t *testing.T, b []byte) [][]byte {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs [][]byte
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(n.Content) == 0 || (n.Content[0].Kind == yaml.ScalarNode && n.Content[0].Tag == "!!null") {
			continue
		}
		out, err := yaml.Marshal(&n)
		if err != nil {
			t.Fatal(err)
		}
		docs = append(docs, out)
	}
}

// strict decodes one document into a typed Kubernetes object, refusing
// unknown or duplicate fields, as the API server's strict validation does.
func strict[T any](t *testing.T, where string, doc []byte) *T {
	t.Helper()
	v := new(T)
	if err := sigsyaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return v
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "deploy", "k8s")
	var kust struct {
		APIVersion string   `yaml:"apiVersion"`
		Kind       string   `yaml:"kind"`
		Resources  []string `yaml:"resources"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&kust); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || kust.Kind != "Kustomization" {
		t.Fatalf("kustomization.yaml: %s/%s", kust.APIVersion, kust.Kind)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !slices.Contains(kust.Resources, base) {
			t.Errorf("%s is not listed in kustomization.yaml", base)
		}
	}
	m := manifests{
		namespaces: map[string]*corev1.Namespace{}, configMaps: map[string]*corev1.ConfigMap{},
		services: map[string]*corev1.Service{}, statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{},
	}
	for _, res := range kust.Resources {
		b, err := os.ReadFile(filepath.Join(dir, res))
		if err != nil {
			t.Fatalf("kustomization resource: %v", err)
		}
		for i, doc := range splitYAML(t, b) {
			where := fmt.Sprintf("%s document %d", res, i+1)
			var tm struct {
				APIVersion string `yaml:"apiVersion"`
				Kind       string `yaml:"kind"`
				Metadata   struct {
					Name      string `yaml:"name"`
					Namespace string `yaml:"namespace"`
				} `yaml:"metadata"`
			}
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			if tm.Metadata.Name == "" {
				t.Errorf("%s: metadata.name missing", where)
			}
			if tm.Kind != "Namespace" && tm.Metadata.Namespace != "jasper" {
				t.Errorf("%s: %s %s in namespace %q, want jasper", where, tm.Kind, tm.Metadata.Name, tm.Metadata.Namespace)
			}
			want := map[string]string{"Namespace": "v1", "ConfigMap": "v1", "Service": "v1", "StatefulSet": "apps/v1", "PodDisruptionBudget": "policy/v1"}[tm.Kind]
			if want == "" || tm.APIVersion != want {
				t.Fatalf("%s: kind %q apiVersion %q (want a known kind, apiVersion %q)", where, tm.Kind, tm.APIVersion, want)
			}
			name := tm.Metadata.Name
			switch tm.Kind {
			case "Namespace":
				m.namespaces[name] = strict[corev1.Namespace](t, where, doc)
			case "ConfigMap":
				m.configMaps[name] = strict[corev1.ConfigMap](t, where, doc)
			case "Service":
				m.services[name] = strict[corev1.Service](t, where, doc)
			case "StatefulSet":
				m.statefulSets[name] = strict[appsv1.StatefulSet](t, where, doc)
			case "PodDisruptionBudget":
				m.pdbs[name] = strict[policyv1.PodDisruptionBudget](t, where, doc)
			}
		}
	}
	return m
}

func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Secrets the operator creates (deploy/k8s/README.md); not in the manifests.
var externalSecrets = map[string][]string{
	"jasper-hub-tls": nil,
	"jasper-ca":      nil,
	"clickhouse":     {"password"},
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	if _, ok := m.namespaces["jasper"]; !ok {
		t.Error("no Namespace jasper")
	}
	hub := m.statefulSets["jasper-hub"]
	ch := m.statefulSets["clickhouse"]
	if hub == nil || ch == nil {
		t.Fatalf("want StatefulSets jasper-hub and clickhouse, have %v", keys(m.statefulSets))
	}
	if hub.Spec.Replicas == nil || *hub.Spec.Replicas != 3 {
		t.Errorf("jasper-hub replicas %v, want 3", hub.Spec.Replicas)
	}
	for name, ss := range m.statefulSets {
		t.Run(name, func(t *testing.T) { checkStatefulSet(t, m, ss) })
	}
	// Every service selects some pods and its target ports exist on them.
	for name, svc := range m.services {
		matched := false
		for _, ss := range m.statefulSets {
			if !selects(svc.Spec.Selector, ss.Spec.Template.Labels) {
				continue
			}
			matched = true
			for _, p := range svc.Spec.Ports {
				if !containerHasPort(ss.Spec.Template.Spec.Containers, p.TargetPort, p.Port) {
					t.Errorf("service %s port %s: target %s is not a port of %s", name, p.Name, p.TargetPort.String(), ss.Name)
				}
			}
		}
		if !matched {
			t.Errorf("service %s selects no pods", name)
		}
	}
	// The PDB keeps a raft quorum of the hubs.
	pdb := m.pdbs["jasper-hub"]
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget jasper-hub")
	}
	if pdb.Spec.Selector == nil || !selects(pdb.Spec.Selector.MatchLabels, hub.Spec.Template.Labels) {
		t.Error("PodDisruptionBudget jasper-hub does not select the hub pods")
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != int(*hub.Spec.Replicas)/2+1 {
		t.Errorf("PodDisruptionBudget minAvailable %v, want a quorum of %d", pdb.Spec.MinAvailable, *hub.Spec.Replicas)
	}
	// Probes: the hub's health endpoints on its metrics port.
	c := hub.Spec.Template.Spec.Containers[0]
	if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" ||
		c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" {
		t.Error("hub container: want readiness on /readyz and liveness on /healthz")
	}
	t.Run("hub-config", func(t *testing.T) { checkHubConfig(t, m, hub) })
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func containerHasPort(cs []corev1.Container, target intstr.IntOrString, port int32) bool {
	for _, c := range cs {
		for _, p := range c.Ports {
			switch {
			case target.Type == intstr.String && target.StrVal == p.Name,
				target.Type == intstr.Int && target.IntVal == p.ContainerPort,
				target.Type == intstr.Int && target.IntVal == 0 && port == p.ContainerPort:
				return true
			}
		}
	}
	return false
}

func checkStatefulSet(t *testing.T, m manifests, ss *appsv1.StatefulSet) {
	if ss.Spec.Selector == nil || !selects(ss.Spec.Selector.MatchLabels, ss.Spec.Template.Labels) {
		t.Errorf("selector %v does not match the pod template labels %v", ss.Spec.Selector, ss.Spec.Template.Labels)
	}
	svc := m.services[ss.Spec.ServiceName]
	if svc == nil {
		t.Fatalf("serviceName %q: no such Service", ss.Spec.ServiceName)
	}
	if ss.Name == "jasper-hub" && svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("service %s must be headless for stable raft names", svc.Name)
	}
	pod := ss.Spec.Template.Spec
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Error("pod does not require runAsNonRoot")
	}
	volumes := map[string]bool{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = true
		switch {
		case v.ConfigMap != nil:
			cm := m.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			if _, ok := externalSecrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %s: secret %s is not documented in README.md", v.Name, v.Secret.SecretName)
			}
		}
	}
	for _, c := range ss.Spec.VolumeClaimTemplates {
		volumes[c.Name] = true
		if len(c.Spec.AccessModes) == 0 || c.Spec.Resources.Requests.Storage().IsZero() {
			t.Errorf("volume claim %s: access mode and storage request required", c.Name)
		}
	}
	all := append(slices.Clone(pod.InitContainers), pod.Containers...)
	for _, c := range all {
		if c.Image == "" {
			t.Errorf("container %s: no image", c.Name)
		}
		for _, vm := range c.VolumeMounts {
			if !volumes[vm.Name] {
				t.Errorf("container %s mounts %s, which is neither a volume nor a claim template", c.Name, vm.Name)
			}
		}
		for _, e := range c.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				ks, ok := externalSecrets[r.SecretKeyRef.Name]
				if !ok || !slices.Contains(ks, r.SecretKeyRef.Key) {
					t.Errorf("container %s env %s: secret %s key %s is not documented", c.Name, e.Name, r.SecretKeyRef.Name, r.SecretKeyRef.Key)
				}
			}
		}
		if sc := c.SecurityContext; sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			t.Errorf("container %s: want allowPrivilegeEscalation false and all capabilities dropped", c.Name)
		}
		for _, p := range []*corev1.Probe{c.ReadinessProbe, c.LivenessProbe} {
			if p != nil && p.HTTPGet != nil && !containerHasPort([]corev1.Container{c}, p.HTTPGet.Port, 0) {
				t.Errorf("container %s: probe port %s is not one of its ports", c.Name, p.HTTPGet.Port.String())
			}
		}
	}
}

// checkHubConfig runs the ConfigMap's render.sh for pod jasper-hub-0 and
// gives the result to `jasper hub run --check`, then checks that the
// addresses it names are services and ports of the manifests.
func checkHubConfig(t *testing.T, m manifests, hub *appsv1.StatefulSet) {
	cm := m.configMaps["jasper-hub-config"]
	if cm == nil {
		t.Fatal("no ConfigMap jasper-hub-config")
	}
	bin := jasperBin(t)
	root := t.TempDir()
	re := func(s string) string { return strings.ReplaceAll(s, "/etc/jasper/", root+"/etc/jasper/") }
	// render.sh ends with `jasper hub run --check`; the test runs that
	// check itself below (through hubCheck), so the script's own is dropped.
	const selfCheck = "jasper hub run --config /etc/jasper/run/hub.yaml --check >/dev/null"
	if !strings.Contains(cm.Data["render.sh"], selfCheck) {
		t.Errorf("render.sh does not check the configuration it renders (%q)", selfCheck)
	}
	for name, data := range cm.Data {
		p := filepath.Join(root, "etc/jasper/template", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(re(strings.ReplaceAll(data, selfCheck, ":"))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "etc/jasper/run"), 0o755); err != nil {
		t.Fatal(err)
	}
	tls := filepath.Join(root, "etc/jasper/tls")
	writeCerts(t, "jasper-hub-0", filepath.Join(tls, "ca.pem"), filepath.Join(tls, "jasper-hub-0.pem"), filepath.Join(tls, "jasper-hub-0-key.pem"))
	// enrol.ca_dir: a CA with its key, as the jasper-ca secret holds.
	writeCA(t, filepath.Join(root, "etc/jasper/ca"))
	cmd := exec.Command("sh", filepath.Join(root, "etc/jasper/template/render.sh"))
	cmd.Env = append(os.Environ(), "POD_NAME=jasper-hub-0", `CLICKHOUSE_PASSWORD=p|a&s\s"w'd`, "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("render.sh: %v\n%s", err, out)
	}
	rendered := filepath.Join(root, "etc/jasper/run/hub.yaml")
	out, err := hubCheck(t, bin, rendered)
	if err != nil {
		t.Fatalf("jasper hub run --check: %v\n%s", err, out)
	}
	var cfg struct {
		NodeID string `yaml:"node_id"`
		Raft   struct {
			Bind      string `yaml:"bind"`
			Advertise string `yaml:"advertise"`
			Peers     []struct{ ID, Address string }
		} `yaml:"raft"`
		Ingest struct {
			Listen string `yaml:"listen"`
		} `yaml:"ingest"`
		MetricsListen string `yaml:"metrics_listen"`
		ClickHouse    struct {
			Addr     string `yaml:"addr"`
			Password string `yaml:"password"`
		} `yaml:"clickhouse"`
		Enrol struct {
			Listen string `yaml:"listen"`
		} `yaml:"enrol"`
	}
	b, _ := os.ReadFile(rendered)
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.NodeID != "jasper-hub-0" || cfg.ClickHouse.Password != `p|a&s\s"w'd` {
		t.Errorf("rendered node_id %q, password %q", cfg.NodeID, cfg.ClickHouse.Password)
	}
	// Listening ports are the container's named ports.
	c := hub.Spec.Template.Spec.Containers[0]
	for name, addr := range map[string]string{"raft": cfg.Raft.Bind, "grpc": cfg.Ingest.Listen, "metrics": cfg.MetricsListen, "enrol": cfg.Enrol.Listen} {
		if !containerHasPort([]corev1.Container{c}, intstr.FromString(name), 0) || portOf(t, addr) != namedPort(c, name) {
			t.Errorf("config listens for %s on %q, container port %s is %d", name, addr, name, namedPort(c, name))
		}
	}
	// Raft peers are the StatefulSet's pods behind its headless service.
	if len(cfg.Raft.Peers) != int(*hub.Spec.Replicas) {
		t.Errorf("%d raft peers for %d replicas", len(cfg.Raft.Peers), *hub.Spec.Replicas)
	}
	for i, p := range cfg.Raft.Peers {
		want := fmt.Sprintf("%s-%d.%s.jasper.svc.cluster.local:%d", hub.Name, i, hub.Spec.ServiceName, namedPort(c, "raft"))
		if p.ID != fmt.Sprintf("%s-%d", hub.Name, i) || p.Address != want {
			t.Errorf("raft peer %d: %s at %s, want %s-%d at %s", i, p.ID, p.Address, hub.Name, i, want)
		}
	}
	// ClickHouse is reached through its service's native port.
	host, port, _ := net.SplitHostPort(cfg.ClickHouse.Addr)
	svc := m.services[strings.Split(host, ".")[0]]
	if svc == nil || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == port }) {
		t.Errorf("clickhouse.addr %s is not a port of a Service", cfg.ClickHouse.Addr)
	}
}

func namedPort(c corev1.Container, name string) int {
	for _, p := range c.Ports {
		if p.Name == name {
			return int(p.ContainerPort)
		}
	}
	return -1
}

func portOf(t *testing.T, addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("address %q: %v", addr, err)
		return 0
	}
	n, _ := strconv.Atoi(p)
	return n
}
