package server

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNonUTF8ModelKeepsOtherSpans: a client's model name with a byte that
// is not UTF-8 (refused 404, traced) goes on its span cleaned (trace.go
// cleanAttrs, spanText). OTLP is protobuf, whose strings must be UTF-8: an
// unclean one made the exporter drop the whole batch, the well-formed
// call's span with it.
func TestNonUTF8ModelKeepsOtherSpans(t *testing.T) {
	col := &otlpSink{}
	cols := httptest.NewServer(col)
	defer cols.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", cols.URL+"/v1/traces")
	up := &traceUpstream{}
	ups := httptest.NewServer(up)
	defer ups.Close()
	yaml := strings.ReplaceAll(traceModels, "{{UP}}", ups.URL) + "litellm_settings:\n  callbacks: [\"otel\"]\n"
	gw, stop := tracedGateway(t, yaml)
	if resp, body := post(t, gw+"/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}`,
		"Authorization", "Bearer sk-1234"); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("POST", gw+"/v1/chat/completions", bytes.NewReader([]byte("{\"model\":\"gpt-\xff\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}")))
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	stop() // one export at shutdown holds both spans
	var good int
	for _, s := range requestSpans(col) {
		if attrString(s, "gen_ai.request.model") == "gpt-4o-mini" {
			good++
		}
	}
	if good != 1 {
		t.Errorf("the well-formed call's request span reached the collector %d times, want 1 (the other call, answered %d, named a model with a byte not UTF-8)", good, resp.StatusCode)
	}
}
