package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

const rerankConfig = `
model_list:
  - model_name: rerank
    litellm_params: {model: cohere/rerank-v3.5, api_base: "{{UP}}", api_key: upstream-cohere-key}
  - model_name: vllm-rerank
    litellm_params: {model: hosted_vllm/BAAI/bge-reranker-v2-m3, api_base: "{{UP}}", input_cost_per_token: 0.00001, output_cost_per_token: 0}
  - model_name: mod
    litellm_params: {model: openai/omni-moderation-latest, api_base: "{{UP}}", api_key: upstream-openai-key}
  - model_name: chat
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", input_cost_per_token: 0, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
`

// rerankDocs is a rerank body over n documents.
func rerankDocs(model string, n int) string {
	docs := make([]string, n)
	for i := range docs {
		docs[i] = fmt.Sprintf("%q", fmt.Sprintf("document %d about cats", i))
	}
	return fmt.Sprintf(`{"model":%q,"query":"cats","documents":[%s],"top_n":3}`, model, strings.Join(docs, ","))
}

// lastSpendRow is the newest spend row of key.
func lastSpendRow(t *testing.T, e *spendEnv, key string) store.SpendLog {
	t.Helper()
	e.srv.writer.Flush()
	rows, _, err := e.store.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil || len(rows) == 0 {
		t.Fatalf("spend rows of the key: %v %v", rows, err)
	}
	return rows[0]
}

// TestRerankIsGovernedAndPricedPerSearchUnit: /v1/rerank (and /rerank,
// /v2/rerank) reach Cohere with the deployment's model and key, are booked
// per search unit (150 documents: 2 units at $0.002), refused before the
// upstream once the budget cannot hold another query, and refused at 400
// for bodies Cohere would refuse.
func TestRerankIsGovernedAndPricedPerSearchUnit(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, rerankConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.004, "models": ["rerank", "vllm-rerank"]}`)
	key := out["key"].(string)
	_, out = e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1, "models": ["rerank", "vllm-rerank"]}`)
	other := out["key"].(string)

	resp, body := e.post(t, "/v1/rerank", key, rerankDocs("rerank", 150))
	if resp.StatusCode != 200 {
		t.Fatalf("rerank: %d %v", resp.StatusCode, body)
	}
	if res, _ := body["results"].([]any); len(res) != 3 {
		t.Fatalf("results: %v", body)
	}
	got := e.mock.LastRequest()
	if got.Path != "/v2/rerank" || got.Header.Get("Authorization") != "Bearer upstream-cohere-key" || !strings.Contains(string(got.Body), `"model":"rerank-v3.5"`) {
		t.Fatalf("upstream got %s %v %s", got.Path, got.Header, got.Body[:60])
	}
	row := lastSpendRow(t, e, key)
	if row.Cost < 0.004-1e-12 || row.Cost > 0.004+1e-12 || row.CallType != "arerank" {
		t.Fatalf("spend row: cost %v call type %q, want 0.004 arerank", row.Cost, row.CallType)
	}

	// The budget is spent: refused before the upstream.
	before := e.mock.Stats().Requests
	resp, body = e.post(t, "/v2/rerank", key, rerankDocs("rerank", 3))
	if resp.StatusCode != 400 || !strings.Contains(fmt.Sprint(body), "budget") {
		t.Fatalf("over budget: %d %v", resp.StatusCode, body)
	}
	// A token-priced reranker: 1e-5 per prompt token.
	resp, body = e.post(t, "/rerank", other, rerankDocs("vllm-rerank", 2))
	if resp.StatusCode != 200 {
		t.Fatalf("vllm rerank: %d %v", resp.StatusCode, body)
	}
	if row := lastSpendRow(t, e, other); row.Cost <= 0 || row.PromptTokens <= 0 {
		t.Fatalf("token-priced rerank booked %+v", row)
	}

	for _, bad := range []string{
		`{"model":"rerank","documents":["a"]}`,
		`{"model":"rerank","query":"q","documents":[]}`,
		`{"model":"rerank","query":"q","documents":"a"}`,
		`{"model":"rerank","query":"q","documents":["a"],"top_n":0}`,
		`{"query":"q","documents":["a"]}`,
	} {
		resp, body := e.post(t, "/v1/rerank", other, bad)
		if resp.StatusCode != 400 || body["error"] == nil {
			t.Fatalf("%s: %d %v", bad, resp.StatusCode, body)
		}
	}
	// A model the key may not use.
	if resp, _ := e.post(t, "/v1/rerank", other, rerankDocs("chat", 1)); resp.StatusCode != 403 && resp.StatusCode != 401 {
		t.Fatalf("model outside the key's list: %d", resp.StatusCode)
	}
	if n := e.mock.Stats().Requests - before; n != 1 {
		t.Fatalf("%d requests reached the upstream after the first, want only the vllm rerank", n)
	}
}

// TestModerationsNeedNoModel: /v1/moderations without a model goes to the
// configured moderation model (as LiteLLM needs none), is answered and
// booked at its table price (zero, and not "unpriced"); with a model it
// goes to that model; with no moderation model configured, a clear 400.
func TestModerationsNeedNoModel(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, rerankConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 1}`)
	key := out["key"].(string)

	for _, body := range []string{`{"input":"a story full of violence"}`, `{"model":"mod","input":["a story full of violence","tea"]}`} {
		req, _ := http.NewRequest("POST", e.url+"/v1/moderations", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var ans struct {
			Results []struct {
				Flagged bool `json:"flagged"`
			} `json:"results"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(raw, &ans) != nil || len(ans.Results) == 0 || !ans.Results[0].Flagged {
			t.Fatalf("%s: %d %s", body, resp.StatusCode, raw)
		}
		if h := resp.Header.Get("x-tollgate-unpriced"); h != "" {
			t.Fatalf("moderation model reported unpriced: %q", h)
		}
		got := e.mock.LastRequest()
		if got.Path != "/v1/moderations" || !strings.Contains(string(got.Body), `"model":"omni-moderation-latest"`) || got.Header.Get("Authorization") != "Bearer upstream-openai-key" {
			t.Fatalf("upstream got %s %s", got.Path, got.Body)
		}
		if row := lastSpendRow(t, e, key); row.Cost != 0 || row.CallType != "amoderation" || row.ModelGroup != "mod" {
			t.Fatalf("spend row %+v", row)
		}
	}
	if resp, body := e.post(t, "/v1/moderations", key, `{"input":5}`); resp.StatusCode != 400 || body["error"] == nil {
		t.Fatalf("bad input: %d %v", resp.StatusCode, body)
	}

	// Without a moderation model, a request without a model is refused.
	e2 := startConfig(t, sqliteStore(t), mockupstream.Options{}, pricedConfig)
	resp, body := e2.post(t, "/moderations", "sk-1234", `{"input":"hello"}`)
	if resp.StatusCode != 400 || !strings.Contains(fmt.Sprint(body), "moderation model") {
		t.Fatalf("no moderation model: %d %v", resp.StatusCode, body)
	}
	if e2.mock.Stats().Requests != 0 {
		t.Fatal("a refused moderation reached the upstream")
	}
}

// TestModerationAndRerankShapesChecked: a moderation input that is an
// empty array or not of strings or content parts, and rerank documents
// that are not strings or objects, are refused naming the member, before
// the upstream.
func TestModerationAndRerankShapesChecked(t *testing.T) {
	e, mf, _ := startMediaFake(t, jsonAnswer(`{"id":"x","results":[],"meta":{"billed_units":{"search_units":1}}}`), "")
	for _, tc := range []struct{ path, body, param string }{
		{"/v1/moderations", `{"model":"mod","input":[]}`, "input"},
		{"/v1/moderations", `{"model":"mod","input":[1,2,3]}`, "input"},
		{"/v1/moderations", `{"model":"mod","input":["ok",null]}`, "input"},
		{"/v1/rerank", `{"model":"rerank","query":"q","documents":[1,true,null]}`, "documents"},
		{"/v1/rerank", `{"model":"rerank","query":"q","documents":["a",["b"]]}`, "documents"},
	} {
		resp, b := e.send(t, tc.path, "sk-1234", "application/json", tc.body)
		wantRefused(t, tc.path+" "+tc.body, resp, b, "invalid_request_error", tc.param)
	}
	if n := mf.calls.Load(); n != 0 {
		t.Errorf("%d bad bodies reached the upstream", n)
	}
	for _, tc := range []struct{ path, body string }{
		{"/v1/moderations", `{"model":"mod","input":["a","b"]}`},
		{"/v1/moderations", `{"model":"mod","input":[{"type":"text","text":"a"}]}`},
		{"/v1/rerank", `{"model":"rerank","query":"q","documents":["a",{"text":"b"}]}`},
	} {
		if resp, b := e.send(t, tc.path, "sk-1234", "application/json", tc.body); resp.StatusCode != 200 {
			t.Errorf("%s %s: %d %.100s", tc.path, tc.body, resp.StatusCode, b)
		}
	}
}

// TestRerankPromptBoundCountsQueryPerDocument: a cross-encoder reranker
// priced per token (vLLM's) reads the query once per document and reports
// those tokens; they are booked in full, as the prompt bound counts the
// query once per document, not once as it appears in the body.
func TestRerankPromptBoundCountsQueryPerDocument(t *testing.T) {
	const docs, queryTokens, docTokens = 200, 500, 3
	ans := fmt.Sprintf(`{"id":"r","results":[{"index":0,"relevance_score":0.9}],"usage":{"total_tokens":%d}}`, docs*(queryTokens+docTokens))
	e, _, _ := startMediaFake(t, jsonAnswer(ans), "")
	query := strings.Repeat("cat ", queryTokens)
	d := make([]string, docs)
	for i := range d {
		d[i] = fmt.Sprintf("%q", fmt.Sprintf("doc %d", i))
	}
	body := fmt.Sprintf(`{"model":"vllm-rerank","query":%q,"documents":[%s]}`, query, strings.Join(d, ","))
	resp, b := e.send(t, "/v1/rerank", "sk-1234", "application/json", body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got, want := costHeader(t, resp), float64(docs*(queryTokens+docTokens))*0.00001; !near(got, want) {
		t.Errorf("reported %d tokens at $1e-5: booked $%g, want $%g (body %d bytes)", docs*(queryTokens+docTokens), got, want, len(body))
	}
}
