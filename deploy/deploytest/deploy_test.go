// Package deploytest checks deploy/ with the libraries of the tools that
// read it: Prometheus's config package for deploy/prometheus.yml, and the
// Kubernetes API types (and prometheus-operator's) for the manifests the
// Helm chart renders. These modules are heavy, so they live in this
// module, not in the gateway's go.mod (as sdktest/ does for the SDKs).
//
// The chart is rendered with the helm binary named by TOLLGATE_HELM, else
// helm on PATH; .ci/run installs a pinned one with go install.
package deploytest

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	promconfig "github.com/prometheus/prometheus/config"
	"github.com/prometheus/prometheus/discovery"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"
)

func TestPrometheusConfig(t *testing.T) {
	cfg, err := promconfig.LoadFile("../prometheus.yml", false, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("deploy/prometheus.yml: %v", err)
	}
	var targets []string
	for _, sc := range cfg.ScrapeConfigs {
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s, want /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, c := range sc.ServiceDiscoveryConfigs {
			static, ok := c.(discovery.StaticConfig)
			if !ok {
				continue
			}
			for _, g := range static {
				for _, ls := range g.Targets {
					targets = append(targets, string(ls[model.AddressLabel]))
				}
			}
		}
	}
	all := strings.Join(targets, " ")
	for _, want := range []string{"tollgate-1:4000", "tollgate-2:4000"} {
		if !strings.Contains(all, want) {
			t.Errorf("prometheus.yml does not scrape %s (targets: %s)", want, all)
		}
	}
}

func TestPrometheusConfigRejectsBadFile(t *testing.T) {
	// The check above can fail: a misspelt field is an error.
	bad := t.TempDir() + "/p.yml"
	if err := os.WriteFile(bad, []byte("scrape_configs:\n  - job_name: x\n    static_config: []\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := promconfig.LoadFile(bad, false, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("Prometheus accepted an unknown field")
	}
}

func helm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("TOLLGATE_HELM"); h != "" {
		return h
	}
	h, err := exec.LookPath("helm")
	if err != nil {
		t.Skip("no helm (set TOLLGATE_HELM or put helm on PATH; .ci/run installs it): the chart was not rendered")
	}
	return h
}

// render runs helm template on the chart with the given --set values and
// returns the manifests.
func render(t *testing.T, sets ...string) []string {
	t.Helper()
	args := []string{"template", "tg", "../helm/tollgate"}
	for _, s := range sets {
		args = append(args, "--set", s)
	}
	out, err := exec.Command(helm(t), args...).CombinedOutput()
	if err != nil {
		t.Fatalf("helm %v: %v\n%s", args, err, out)
	}
	var docs []string
	for _, d := range strings.Split(string(out), "\n---") {
		if strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(d), "---")) != "" {
			docs = append(docs, d)
		}
	}
	return docs
}

// decodeStrict decodes one manifest into the API type of its kind,
// failing on fields the type does not have, and returns it.
func decodeStrict(doc string) (any, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
		return nil, err
	}
	var obj any
	switch meta.APIVersion + " " + meta.Kind {
	case "apps/v1 Deployment":
		obj = &appsv1.Deployment{}
	case "v1 Service":
		obj = &corev1.Service{}
	case "v1 ConfigMap":
		obj = &corev1.ConfigMap{}
	case "v1 Secret":
		obj = &corev1.Secret{}
	case "policy/v1 PodDisruptionBudget":
		obj = &policyv1.PodDisruptionBudget{}
	case "autoscaling/v2 HorizontalPodAutoscaler":
		obj = &autoscalingv2.HorizontalPodAutoscaler{}
	case "monitoring.coreos.com/v1 ServiceMonitor":
		obj = &monitoringv1.ServiceMonitor{}
	default:
		return nil, fmt.Errorf("no schema for %s %s", meta.APIVersion, meta.Kind)
	}
	if err := yaml.UnmarshalStrict([]byte(doc), obj); err != nil {
		return nil, fmt.Errorf("%s: %w", meta.Kind, err)
	}
	return obj, nil
}

func TestDecodeStrictRejectsUnknownField(t *testing.T) {
	doc := "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replica: 2\n"
	if _, err := decodeStrict(doc); err == nil {
		t.Fatal("a misspelt Deployment field (replica) decoded without error")
	}
}

func TestHelmChart(t *testing.T) {
	full := render(t, "masterKey=sk-test", "providerKeys.OPENAI_API_KEY=sk-openai",
		"databaseURL=postgres://u:p@db:5432/tg", "redisURL=redis://redis:6379/0",
		"autoscaling.enabled=true", "serviceMonitor.enabled=true")
	kinds := map[string]any{}
	for _, doc := range full {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%v\n%s", err, doc)
			continue
		}
		kinds[fmt.Sprintf("%T", obj)] = obj
	}
	for _, want := range []string{"*v1.Deployment", "*v1.Service", "*v1.ConfigMap", "*v1.Secret", "*v1.PodDisruptionBudget", "*v2.HorizontalPodAutoscaler", "*v1.ServiceMonitor"} {
		if kinds[want] == nil {
			t.Errorf("rendered chart has no %s", want)
		}
	}
	if d, ok := kinds["*v1.Deployment"].(*appsv1.Deployment); ok {
		c := d.Spec.Template.Spec.Containers[0]
		if c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/health/readiness" {
			t.Errorf("readiness probe: %+v", c.ReadinessProbe)
		}
		if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/health/liveliness" {
			t.Errorf("liveness probe: %+v", c.LivenessProbe)
		}
		if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
			t.Errorf("no resource requests: %+v", c.Resources)
		}
		if d.Spec.Replicas != nil {
			t.Errorf("with the HPA on the Deployment must not pin replicas (got %d)", *d.Spec.Replicas)
		}
	}
	if s, ok := kinds["*v1.Secret"].(*corev1.Secret); ok {
		for k, want := range map[string]string{"TOLLGATE_MASTER_KEY": "sk-test", "OPENAI_API_KEY": "sk-openai",
			"DATABASE_URL": "postgres://u:p@db:5432/tg", "REDIS_URL": "redis://redis:6379/0"} {
			if s.StringData[k] != want {
				t.Errorf("Secret %s = %q, want %q", k, s.StringData[k], want)
			}
		}
	}

	// Defaults with an existing Secret: no Secret of the chart's, replicas
	// set, no HPA or ServiceMonitor; the pods read the named Secret.
	min := render(t, "existingSecret=mine", "replicaCount=3")
	for _, doc := range min {
		obj, err := decodeStrict(doc)
		if err != nil {
			t.Errorf("%v\n%s", err, doc)
			continue
		}
		switch o := obj.(type) {
		case *corev1.Secret, *autoscalingv2.HorizontalPodAutoscaler, *monitoringv1.ServiceMonitor:
			t.Errorf("rendered %T with its flag off / existingSecret set", o)
		case *appsv1.Deployment:
			if o.Spec.Replicas == nil || *o.Spec.Replicas != 3 {
				t.Errorf("replicas = %v, want 3", o.Spec.Replicas)
			}
			if ref := o.Spec.Template.Spec.Containers[0].EnvFrom[0].SecretRef; ref == nil || ref.Name != "mine" {
				t.Errorf("envFrom = %+v, want the existing Secret mine", o.Spec.Template.Spec.Containers[0].EnvFrom)
			}
		}
	}

	// No master key and no Secret: the chart refuses (the pods would
	// listen on loopback only).
	out, err := exec.Command(helm(t), "template", "tg", "../helm/tollgate").CombinedOutput()
	if err == nil || !bytes.Contains(out, []byte("masterKey")) {
		t.Errorf("helm template without masterKey: want a failure naming masterKey, got %v\n%s", err, out)
	}
}
