package tracing

import "testing"

// Regression tests of the tracing review (issue #25): LiteLLM's
// langfuse_otel callback and OTEL_* variables, resolved as LiteLLM does.

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

// TestLangfuseDefaultRegion: without a host, LiteLLM's langfuse_otel
// callback sends to Langfuse's US cloud (its docs' "Endpoint Resolution":
// Default (US)), its langfuse callback (the Langfuse SDK's default) to the
// EU cloud; with both named, the EU one.
func TestLangfuseDefaultRegion(t *testing.T) {
	got, err := langfuseEndpoint(t, "langfuse_otel", map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://us.cloud.langfuse.com/api/public/otel/v1/traces"; got != want {
		t.Errorf("langfuse_otel without a host exports to %s; LiteLLM's langfuse_otel sends to %s", got, want)
	}
	for _, cb := range []string{"langfuse", `langfuse", "langfuse_otel`} {
		got, err := langfuseEndpoint(t, cb, map[string]string{})
		if err != nil {
			t.Fatal(err)
		}
		if want := "https://cloud.langfuse.com/api/public/otel/v1/traces"; got != want {
			t.Errorf("callbacks [%q] without a host export to %s, want %s", cb, got, want)
		}
	}
}

// TestLangfuseHostWithoutScheme: a LANGFUSE_HOST without a scheme
// (us.cloud.langfuse.com, a working LiteLLM setting) gets https://.
func TestLangfuseHostWithoutScheme(t *testing.T) {
	got, err := langfuseEndpoint(t, "langfuse_otel", map[string]string{"LANGFUSE_HOST": "us.cloud.langfuse.com"})
	if err != nil {
		t.Fatalf("LANGFUSE_HOST=us.cloud.langfuse.com (LiteLLM: https://us.cloud.langfuse.com) refused: %v", err)
	}
	if want := "https://us.cloud.langfuse.com/api/public/otel/v1/traces"; got != want {
		t.Errorf("endpoint %s, want %s", got, want)
	}
}

// TestLiteLLMOTelEndpointWithPath: LiteLLM's OTEL_ENDPOINT is normalised
// to the traces path as LiteLLM does: a base with a path gets /v1/traces
// (Grafana Cloud's .../otlp), .../v1 gets /traces, another signal's
// .../v1/logs becomes .../v1/traces, a traces URL is kept.
func TestLiteLLMOTelEndpointWithPath(t *testing.T) {
	for in, want := range map[string]string{
		"https://otlp.example/otlp":       "https://otlp.example/otlp/v1/traces",
		"http://collector:4318/v1":        "http://collector:4318/v1/traces",
		"http://collector:4318/v1/":       "http://collector:4318/v1/traces",
		"http://collector:4318/v1/logs":   "http://collector:4318/v1/traces",
		"http://collector:4318/v1/traces": "http://collector:4318/v1/traces",
		"http://collector:4318":           "http://collector:4318/v1/traces",
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

// TestLiteLLMOTelExporterValues: LiteLLM's OTEL_EXPORTER values grpc,
// http/protobuf and http/json are taken (http/json is sent as protobuf:
// the Go SDK's OTLP/HTTP exporter has no JSON encoding).
func TestLiteLLMOTelExporterValues(t *testing.T) {
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

// TestContentExporters: langfuse is sent the calls' content; otel only with
// OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true.
func TestContentExporters(t *testing.T) {
	for _, optIn := range []string{"", "true", "false"} {
		env := map[string]string{"LANGFUSE_PUBLIC_KEY": "pk", "LANGFUSE_SECRET_KEY": "sk", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": optIn}
		c, err := Resolve(parse(t, "litellm_settings:\n  callbacks: [\"otel\", \"langfuse\"]\n"), envOf(env))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range c.Exporters {
			if want := e.Name == "langfuse" || optIn == "true"; e.Content != want {
				t.Errorf("opt-in %q: exporter %s Content %v, want %v", optIn, e.Name, e.Content, want)
			}
		}
	}
}
