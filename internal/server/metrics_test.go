package server

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// scrape reads /metrics into families by name.
func scrape(t *testing.T, url, key string) map[string]*dto.MetricFamily {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/metrics", nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// value sums the samples of family name whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
	sum, found := 0.0, false
outer:
	for _, m := range f.Metric {
		labels := map[string]string{}
		for _, l := range m.Label {
			labels[l.GetName()] = l.GetValue()
		}
		for i := 0; i+1 < len(want); i += 2 {
			if labels[want[i]] != want[i+1] {
				continue outer
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += m.Histogram.GetSampleSum()
		}
	}
	return sum, found
}

// TestMetrics: with prefix agentgateway, seed 001's token series exist and
// add up, and spend, budget, rejection and writer series follow the requests.
func TestMetrics(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "  metrics_prefix: agentgateway\n")
	_, out := e.post(t, "/key/generate", "sk-1234", `{"key_alias": "metered", "max_budget": 0.0009, "rpm_limit": 4}`)
	key := out["key"].(string)
	var prompt, completion float64
	for range 3 {
		resp, body := sendH(t, e.url+"/v1/chat/completions", key, chat3)
		if resp.StatusCode != 200 {
			t.Fatal(resp.StatusCode, body)
		}
		var p, c float64
		fmt.Sscanf(body[strings.Index(body, `"prompt_tokens":`):], `"prompt_tokens":%g,"completion_tokens":%g`, &p, &c)
		prompt, completion = prompt+p, completion+c
	}
	if resp, _ := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 400 {
		t.Fatalf("the 4th request should exceed the budget: %d", resp.StatusCode)
	}
	if resp, _ := sendH(t, e.url+"/v1/chat/completions", key, chat3); resp.StatusCode != 429 {
		t.Fatalf("the 5th request should pass rpm 4: %d", resp.StatusCode)
	}
	e.srv.writer.Flush()

	fams := scrape(t, e.url, "")
	for name := range fams {
		if strings.Contains(name, "allotment") {
			t.Errorf("%s without budget_allotments", name)
		}
	}
	check := func(want float64, name string, labels ...string) {
		t.Helper()
		got, ok := value(fams, name, labels...)
		if !ok || math.Abs(got-want) > 1e-9 {
			t.Errorf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
		}
	}
	check(prompt, "agentgateway_gen_ai_client_token_usage", "gen_ai_token_type", "input", "gen_ai_operation_name", "chat", "gen_ai_request_model", "gpt-4")
	check(completion, "agentgateway_gen_ai_client_token_usage", "gen_ai_token_type", "output", "gen_ai_provider_name", "openai")
	check(3, "agentgateway_requests_total", "model_group", "gpt-4", "status", "200")
	check(1, "agentgateway_requests_total", "status", "400")
	check(1, "agentgateway_requests_total", "status", "429")
	check(0.0009, "agentgateway_key_spend_usd_total", "key_hash", sha(key)[:8], "key_alias", "metered")
	check(0.0009, "agentgateway_spend_usd_total", "model_group", "gpt-4")
	check(0.0009, "agentgateway_max_budget_usd", "entity", "key", "id", sha(key)[:8])
	check(0, "agentgateway_remaining_budget_usd", "entity", "key", "id", sha(key)[:8])
	check(1, "agentgateway_budget_rejections_total", "entity", "key")
	check(1, "agentgateway_rate_limit_rejections_total", "scope", "key", "limit", "rpm_limit")
	check(0, "agentgateway_spend_writer_pending_rows")
	check(0, "agentgateway_redis_fallback")
	if n, _ := value(fams, "agentgateway_gateway_overhead_seconds"); n <= 0 {
		t.Error("no gateway overhead observed")
	}
	if _, ok := fams["agentgateway_gen_ai_client_operation_duration"]; !ok {
		t.Error("no operation duration histogram")
	}
}

func TestMetricsAuthAndCardinality(t *testing.T) {
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", up.URL)+
		"general_settings:\n  master_key: sk-1234\n  metrics_key_labels: false\nlitellm_settings:\n  require_auth_for_metrics_endpoint: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	url := serveCfg(t, cfg, Options{Store: sqliteStore(t)})
	send(t, url+"/key/generate", "sk-1234", `{"key": "sk-metrics-no-labels"}`)
	send(t, url+"/v1/chat/completions", "sk-metrics-no-labels", chat3)
	for key, want := range map[string]int{"": 401, "sk-metrics-no-labels": 403} {
		req, _ := http.NewRequest("GET", url+"/metrics", nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("/metrics with key %q: %d, want %d", key, resp.StatusCode, want)
		}
	}
	fams := scrape(t, url, "sk-1234")
	if f, ok := fams["tollgate_key_spend_usd_total"]; ok && len(f.Metric) > 0 {
		t.Errorf("per-key series with metrics_key_labels off: %v", f.Metric)
	}
	if _, ok := value(fams, "tollgate_requests_total", "status", "200"); !ok {
		t.Error("default prefix: tollgate_requests_total missing")
	}
}
