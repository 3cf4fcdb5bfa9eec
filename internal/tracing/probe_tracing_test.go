package tracing

import "testing"

// Probes of the tracing review (issue #25): LiteLLM's langfuse_otel
// callback, whose endpoint Tollgate resolves differently.

func langfuseEndpoint(t *testing.T, callback string, env map[string]string) (string, error) {
	t.Helper()
	env["LANGFUSE_PUBLIC_KEY"], env["LANGFUSE_SECRET_KEY"] = "pk-lf-1", "sk-lf-2"
	c, err := Resolve(parse(t, "litellm_settings:\n  callbacks: [\""+callback+"\"]\n"), envOf(env))
	if err != nil {
		return "", err
	}
	for _, e := range c.Exporters {
		if e.Name == "langfuse" {
			return e.Endpoint, nil
		}
	}
	t.Fatalf("no langfuse exporter: %+v", c.Exporters)
	return "", nil
}

// TestProbeLangfuseOTelDefaultRegion: LiteLLM's langfuse_otel callback
// (litellm/integrations/langfuse/langfuse_otel.py, and its docs'
// "Endpoint Resolution": "Default (US): https://us.cloud.langfuse.com/api/public/otel")
// sends to Langfuse's US cloud when no host is set. langfuseExporter
// (tracing.go) defaults every langfuse callback to the EU cloud, so a
// LiteLLM config with callbacks: ["langfuse_otel"] and US project keys
// exports to the wrong region: every batch is refused (401) and every span
// lost. (The plain "langfuse" callback's EU default is right: that is the
// Langfuse SDK's.)
func TestProbeLangfuseOTelDefaultRegion(t *testing.T) {
	got, err := langfuseEndpoint(t, "langfuse_otel", map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://us.cloud.langfuse.com/api/public/otel/v1/traces"; got != want {
		t.Errorf("langfuse_otel without a host exports to %s; LiteLLM's langfuse_otel sends to %s", got, want)
	}
}

// TestProbeLangfuseHostWithoutScheme: LiteLLM takes LANGFUSE_HOST without
// a scheme (langfuse_otel.py prepends https://; its langfuse logger
// prepends http://), so LANGFUSE_HOST=us.cloud.langfuse.com is a working
// LiteLLM setting. Tollgate refuses to start with it (CheckOTelEndpoint in
// langfuseExporter): a LiteLLM config that works there does not start here.
func TestProbeLangfuseHostWithoutScheme(t *testing.T) {
	got, err := langfuseEndpoint(t, "langfuse_otel", map[string]string{"LANGFUSE_HOST": "us.cloud.langfuse.com"})
	if err != nil {
		t.Fatalf("LANGFUSE_HOST=us.cloud.langfuse.com (LiteLLM: https://us.cloud.langfuse.com) refused: %v", err)
	}
	if want := "https://us.cloud.langfuse.com/api/public/otel/v1/traces"; got != want {
		t.Errorf("endpoint %s, want %s", got, want)
	}
}

// TestProbeLiteLLMOTelEndpointWithPath: LiteLLM's OTEL_ENDPOINT is
// normalised to the traces path (litellm/integrations/opentelemetry.py,
// _normalize_otel_endpoint(endpoint, "traces")): a base with a path gets
// /v1/traces added (https://otlp.example/otlp -> .../otlp/v1/traces), and
// .../v1 gets /traces. otelExporter (tracing.go) adds /v1/traces only when
// OTEL_ENDPOINT has no path at all and otherwise posts to the URL as
// given, so a LiteLLM setup whose collector sits under a path (Grafana
// Cloud's .../otlp, a reverse proxy's /collector) exports every batch to a
// URL that answers 404: all spans fail.
func TestProbeLiteLLMOTelEndpointWithPath(t *testing.T) {
	for in, want := range map[string]string{
		"https://otlp.example/otlp":     "https://otlp.example/otlp/v1/traces",
		"http://collector:4318/v1":      "http://collector:4318/v1/traces",
		"http://collector:4318/v1/":     "http://collector:4318/v1/traces",
		"http://collector:4318/v1/logs": "http://collector:4318/v1/traces",
	} {
		env := map[string]string{"OTEL_EXPORTER": "otlp_http", "OTEL_ENDPOINT": in}
		c, err := Resolve(parse(t, "litellm_settings:\n  callbacks: [\"otel\"]\n"), envOf(env))
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Exporters[0].Endpoint; got != want {
			t.Errorf("OTEL_ENDPOINT=%s exports to %s; LiteLLM exports to %s", in, got, want)
		}
	}
}

// TestProbeLiteLLMOTelExporterValues: LiteLLM's OTEL_EXPORTER takes
// otlp_http, http/protobuf and http/json (OTLP over HTTP) and otlp_grpc
// and grpc (litellm/integrations/opentelemetry.py, _get_span_processor).
// otelExporter (tracing.go) knows only otlp_http, otlp, otlp_grpc and
// console, and refuses to start with the others: a LiteLLM environment with
// OTEL_EXPORTER=grpc does not start Tollgate.
func TestProbeLiteLLMOTelExporterValues(t *testing.T) {
	for v, want := range map[string]string{"grpc": ProtoGRPC, "http/protobuf": ProtoHTTP, "http/json": ProtoHTTP} {
		env := map[string]string{"OTEL_EXPORTER": v, "OTEL_ENDPOINT": "http://collector:4317"}
		c, err := Resolve(parse(t, "litellm_settings:\n  callbacks: [\"otel\"]\n"), envOf(env))
		if err != nil {
			t.Errorf("OTEL_EXPORTER=%s (a LiteLLM value) refused: %v", v, err)
			continue
		}
		if got := c.Exporters[0].Protocol; got != want {
			t.Errorf("OTEL_EXPORTER=%s: protocol %s, want %s", v, got, want)
		}
	}
}
