package callback

import (
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

func parse(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse("t.yaml", []byte("model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o-mini, api_key: x}\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

// TestDispatcherWantsWhatItsSinksTake: Wants answers for the lists and
// event_types, so that the gateway builds no payload nobody takes.
func TestDispatcherWantsWhatItsSinksTake(t *testing.T) {
	tests := []struct {
		name             string
		yaml             string
		wantOK, wantFail bool
		sinks            string
	}{
		{"success only", "litellm_settings:\n  success_callback: [generic_api]\n", true, false, "generic_api"},
		{"failure only", "litellm_settings:\n  failure_callback: [generic_api]\n", false, true, "generic_api"},
		{"both lists, one sink", "litellm_settings:\n  success_callback: [generic_api]\n  failure_callback: [generic_api]\n", true, true, "generic_api"},
		{"callbacks", "litellm_settings:\n  callbacks: [datadog]\n", true, true, "datadog"},
		{"event_types narrow", "litellm_settings:\n  callbacks: [h]\ncallback_settings:\n  h: {callback_type: generic_api, endpoint: 'http://x/', event_types: [llm_api_failure]}\n", false, true, "h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, _, err := New(parse(t, tt.yaml), Options{Getenv: env(map[string]string{
				"GENERIC_LOGGER_ENDPOINT": "http://127.0.0.1:1/", "DD_API_KEY": "k", "DD_SITE": "datadoghq.com"})})
			if err != nil || d == nil {
				t.Fatalf("New: %v, %v", d, err)
			}
			if d.Wants(false) != tt.wantOK || d.Wants(true) != tt.wantFail {
				t.Errorf("Wants(success) %v Wants(failure) %v", d.Wants(false), d.Wants(true))
			}
			if got := strings.Join(d.Names(), ","); got != tt.sinks {
				t.Errorf("sinks %q, want %q", got, tt.sinks)
			}
		})
	}
}

// TestServedCallbackWithoutSettingsStopsTheStart: a sink Tollgate serves
// but cannot reach is an error naming it, not a silent no-op.
func TestServedCallbackWithoutSettingsStopsTheStart(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"generic_api without endpoint", "litellm_settings:\n  callbacks: [generic_api]\n", "GENERIC_LOGGER_ENDPOINT"},
		{"webhook bad format", "litellm_settings:\n  callbacks: [h]\ncallback_settings:\n  h: {callback_type: generic_api, endpoint: 'http://x/', log_format: xml}\n", "log_format"},
		{"webhook bad event type", "litellm_settings:\n  callbacks: [h]\ncallback_settings:\n  h: {callback_type: generic_api, endpoint: 'http://x/', event_types: [llm_api_start]}\n", "event_types"},
		{"datadog without key", "litellm_settings:\n  callbacks: [datadog]\n", "DD_API_KEY"},
		{"s3 without bucket", "litellm_settings:\n  callbacks: [s3]\n", "s3_bucket_name"},
		{"s3 without credentials", "litellm_settings:\n  callbacks: [s3]\n  s3_callback_params: {s3_bucket_name: b}\n", "credentials"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := New(parse(t, tt.yaml), Options{Getenv: env(nil)})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// TestWebhookNamedNowhereIsWarned: a callback_settings webhook no list
// names gets nothing, and the start says so.
func TestWebhookNamedNowhereIsWarned(t *testing.T) {
	d, warnings, err := New(parse(t, "callback_settings:\n  h: {callback_type: generic_api, endpoint: 'http://x/'}\n"), Options{Getenv: env(nil)})
	if err != nil || d != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "callback_settings.h is not named") {
		t.Errorf("dispatcher %v, warnings %q, err %v", d, warnings, err)
	}
}

// TestWebhookWhoseEventTypesExcludeEverythingIsWarned: event_types narrow
// what the lists give a webhook; when they leave it nothing (a success-only
// webhook named in failure_callback), the start says so.
func TestWebhookWhoseEventTypesExcludeEverythingIsWarned(t *testing.T) {
	d, warnings, err := New(parse(t, `
litellm_settings:
  failure_callback: ["h"]
callback_settings:
  h: {callback_type: generic_api, endpoint: 'http://x/', event_types: [llm_api_success]}
`), Options{Getenv: env(nil)})
	if err != nil || d != nil || len(warnings) != 1 || !strings.Contains(warnings[0], "callback_settings.h: its event_types") {
		t.Errorf("dispatcher %v, warnings %q, err %v", d, warnings, err)
	}
}

// TestQueueByteBoundFromConfig: litellm_settings.callback_queue_max_bytes
// sets every sink's byte bound; absent, it is 64 MiB.
func TestQueueByteBoundFromConfig(t *testing.T) {
	for _, tt := range []struct {
		line string
		want int
	}{{"", DefaultMaxBytes}, {"  callback_queue_max_bytes: 2097152\n", 2 << 20}} {
		d, _, err := New(parse(t, "litellm_settings:\n  callbacks: [h]\n"+tt.line+"callback_settings:\n  h: {callback_type: generic_api, endpoint: 'http://x/'}\n"), Options{Getenv: env(nil)})
		if err != nil || d == nil {
			t.Fatalf("dispatcher %v, err %v", d, err)
		}
		if got := d.routes[0].q.o.MaxBytes; got != tt.want {
			t.Errorf("%q: MaxBytes %d, want %d", tt.line, got, tt.want)
		}
	}
}
