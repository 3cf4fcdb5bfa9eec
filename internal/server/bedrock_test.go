package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// sigv4Checker stands before the mock Bedrock: it verifies each request's
// SigV4 signature by signing the same request again with the keys it knows
// (by access key id), and records what reached it.
type sigv4Checker struct {
	next  http.Handler
	keys  map[string]config.AWSCredentials
	mu    sync.Mutex
	paths []string
	bods  []string
	bad   []string // why a signature did not verify
}

func (c *sigv4Checker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	why := c.verify(r, body)
	c.mu.Lock()
	c.paths = append(c.paths, r.URL.EscapedPath())
	c.bods = append(c.bods, string(body))
	if why != "" {
		c.bad = append(c.bad, why)
	}
	c.mu.Unlock()
	r.Body = io.NopCloser(bytes.NewReader(body))
	c.next.ServeHTTP(w, r)
}

// verify is "" when r carries a valid signature of body.
func (c *sigv4Checker) verify(r *http.Request, body []byte) string {
	auth := r.Header.Get("Authorization")
	cred, _, _ := strings.Cut(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 Credential="), ",")
	parts := strings.Split(cred, "/") // key/date/region/service/aws4_request
	if len(parts) != 5 {
		return "no SigV4 credential in " + auth
	}
	k, ok := c.keys[parts[0]]
	if !ok || parts[2] != k.Region || parts[3] != "bedrock" {
		return "unknown key, region or service in " + cred
	}
	when, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "no X-Amz-Date"
	}
	_, signed, _ := strings.Cut(auth, "SignedHeaders=")
	signed, _, _ = strings.Cut(signed, ",")
	again, _ := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), bytes.NewReader(body))
	for _, h := range strings.Split(signed, ";") {
		if h != "host" && h != "x-amz-date" && h != "x-amz-security-token" {
			again.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	// A signer of its own: AWS's caches derived keys by access key id, and
	// the gateway's would answer for a wrong secret.
	sum := sha256.Sum256(body)
	creds := aws.Credentials{AccessKeyID: k.AccessKeyID, SecretAccessKey: k.SecretAccessKey, SessionToken: k.SessionToken}
	if err := v4.NewSigner().SignHTTP(r.Context(), creds, again, hex.EncodeToString(sum[:]), "bedrock", k.Region, when); err != nil {
		return err.Error()
	}
	if again.Header.Get("Authorization") != auth {
		return "signature mismatch: " + auth
	}
	if k.SessionToken != "" && r.Header.Get("X-Amz-Security-Token") != k.SessionToken {
		return "no session token"
	}
	return ""
}

func (c *sigv4Checker) last() (string, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.paths[len(c.paths)-1], c.bods[len(c.bods)-1]
}

// bedrockChatStream posts a streamed chat request and returns the text, the tool
// call arguments and name, the finish reason and the usage chunk's
// completion tokens.
func bedrockChatStream(t *testing.T, e *spendEnv, key, body string) (text, args, name, finish string, completion int64) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("stream: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	done := false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Choices []struct {
				Delta struct {
					Content   string `json:"content"`
					ToolCalls []struct {
						Function struct{ Name, Arguments string } `json:"function"`
					} `json:"tool_calls"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage.OpenAI `json:"usage"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("%s: %v", data, err)
		}
		for _, ch := range c.Choices {
			text += ch.Delta.Content
			for _, tc := range ch.Delta.ToolCalls {
				args += tc.Function.Arguments
				name += tc.Function.Name
			}
			if ch.FinishReason != nil {
				finish = *ch.FinishReason
			}
		}
		if c.Usage != nil {
			completion = c.Usage.CompletionTokens
		}
	}
	if !done {
		t.Fatal("stream without [DONE]")
	}
	return text, args, name, finish, completion
}

// TestBedrockDeploymentsServeChatAndMessages: bedrock/ deployments (a model
// id, a bedrock/converse/ cross-region profile on aws_bedrock_runtime_endpoint
// with a session token, and one signed with the AWS environment's keys)
// answer OpenAI chat (plain, streamed, with tools and an image) and
// Anthropic Messages clients through the mock's Converse and
// ConverseStream, every request carrying a SigV4 signature that verifies;
// each answer is booked at the table's Bedrock price; a ThrottlingException
// falls back to another deployment and a ValidationException comes back in
// OpenAI's shape with its status.
func TestBedrockDeploymentsServeChatAndMessages(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIAENVKEY")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
	t.Setenv("AWS_SESSION_TOKEN", "")
	t.Setenv("AWS_REGION", "eu-west-1")
	t.Setenv("AWS_BEDROCK_RUNTIME_ENDPOINT", "")
	chk := &sigv4Checker{next: mockupstream.New(mockupstream.Options{}), keys: map[string]config.AWSCredentials{
		"AKIADEPLOY":  {AccessKeyID: "AKIADEPLOY", SecretAccessKey: "deploy-secret", Region: "us-east-1"},
		"AKIASESSION": {AccessKeyID: "AKIASESSION", SecretAccessKey: "session-secret", SessionToken: "tok-1", Region: "us-west-2"},
		"AKIAENVKEY":  {AccessKeyID: "AKIAENVKEY", SecretAccessKey: "env-secret", Region: "eu-west-1"},
	}}
	up := httptest.NewServer(chk)
	defer up.Close()
	const sonnet = "anthropic.claude-3-5-sonnet-20240620-v1:0"
	yaml := fmt.Sprintf(`
model_list:
  - model_name: claude
    litellm_params: {model: bedrock/%[2]s, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s"}
  - model_name: claude-xr
    litellm_params: {model: bedrock/converse/us.%[2]s, aws_access_key_id: AKIASESSION, aws_secret_access_key: session-secret, aws_session_token: tok-1, aws_region_name: us-west-2, aws_bedrock_runtime_endpoint: "%[1]s"}
  - model_name: claude-env
    litellm_params: {model: bedrock/%[2]s, api_base: "%[1]s"}
  - model_name: flaky
    litellm_params: {model: bedrock/%[2]s, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s", headers: {x-mock-status: "429"}}
  - model_name: throttled-stream
    litellm_params: {model: bedrock/%[2]s, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s", headers: {x-mock-stream-exception: throttlingException}}
  - model_name: invalid
    litellm_params: {model: bedrock/%[2]s, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s", headers: {x-mock-status: "400"}}
router_settings:
  num_retries: 0
litellm_settings:
  fallbacks: [{flaky: [claude]}]
general_settings:
  master_key: sk-1234
`, up.URL, sonnet)
	cfg, err := config.Parse("b.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 5}`)

	// Plain chat, with a system prompt and an image.
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","max_tokens":100,"messages":[{"role":"system","content":"Be brief."},
		{"role":"user","content":[{"type":"text","text":"one two three"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgo="}}]}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	choice := out["choices"].([]any)[0].(map[string]any)
	if msg := choice["message"].(map[string]any); !strings.Contains(fmt.Sprint(msg["content"]), "one two three") || choice["finish_reason"] != "stop" {
		t.Fatalf("chat answer %v", out)
	}
	path, body := chk.last()
	if path != "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse" || !strings.Contains(body, `"system":[{"text":"Be brief."}]`) ||
		!strings.Contains(body, `"image":{"format":"png","source":{"bytes":"iVBORw0KGgo="}}`) || !strings.Contains(body, `"inferenceConfig":{"maxTokens":100}`) {
		t.Fatalf("upstream got %s %s", path, body)
	}

	// Streamed chat on the cross-region profile: ConverseStream's event
	// stream becomes chunks, the usage chunk last.
	text, _, _, finish, completion := bedrockChatStream(t, e, key, `{"model":"claude-xr","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"alpha beta gamma delta"}]}`)
	if !strings.Contains(text, "alpha beta gamma delta") || finish != "stop" || completion != 7 {
		t.Fatalf("stream: text %q finish %q completion %d", text, finish, completion)
	}
	if path, _ = chk.last(); path != "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse-stream" {
		t.Fatalf("stream went to %s", path)
	}

	// Tools, whole and streamed: the toolUse comes back as a tool call;
	// the tool's result goes back as a toolResult.
	tools := `"tools":[{"type":"function","function":{"name":"top_song","parameters":{"type":"object","properties":{"sign":{"type":"string"}}}}}]`
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"claude-env","messages":[{"role":"user","content":"WZPZ"}],`+tools+`}`)
	if resp.StatusCode != 200 {
		t.Fatalf("tools: %d %v", resp.StatusCode, out)
	}
	choice = out["choices"].([]any)[0].(map[string]any)
	calls, _ := choice["message"].(map[string]any)["tool_calls"].([]any)
	if len(calls) != 1 || choice["finish_reason"] != "tool_calls" {
		t.Fatalf("tool answer %v", out)
	}
	call := calls[0].(map[string]any)
	fn := call["function"].(map[string]any)
	if fn["name"] != "top_song" || fn["arguments"] != `{"said":"WZPZ"}` {
		t.Fatalf("tool call %v", call)
	}
	follow := fmt.Sprintf(`{"model":"claude-env","messages":[{"role":"user","content":"WZPZ"},{"role":"assistant","tool_calls":[{"id":%q,"type":"function","function":{"name":"top_song","arguments":"{\"said\":\"WZPZ\"}"}}]},{"role":"tool","tool_call_id":%q,"content":"Elemental Hotel"}],%s}`, call["id"], call["id"], tools)
	if resp, out = e.post(t, "/v1/chat/completions", key, follow); resp.StatusCode != 200 || !strings.Contains(fmt.Sprint(out["choices"]), "Elemental Hotel") {
		t.Fatalf("follow-up: %d %v", resp.StatusCode, out)
	}
	if _, body = chk.last(); !strings.Contains(body, fmt.Sprintf(`"toolResult":{"toolUseId":%q`, call["id"])) || !strings.Contains(body, `"toolUse":{"toolUseId":`) {
		t.Fatalf("follow-up upstream body %s", body)
	}
	_, args, name, finish, _ := bedrockChatStream(t, e, key, `{"model":"claude","stream":true,"messages":[{"role":"user","content":"WZPZ"}],`+tools+`}`)
	if args != `{"said":"WZPZ"}` || name != "top_song" || finish != "tool_calls" {
		t.Fatalf("streamed tool call: args %q name %q finish %q", args, name, finish)
	}

	// Anthropic clients, whole and streamed.
	resp, out = e.post(t, "/v1/messages", key, `{"model":"claude","max_tokens":20,"messages":[{"role":"user","content":"red green blue"}]}`)
	if resp.StatusCode != 200 || out["type"] != "message" || !strings.Contains(fmt.Sprint(out["content"]), "red green blue") || out["stop_reason"] != "end_turn" {
		t.Fatalf("messages: %d %v", resp.StatusCode, out)
	}
	sreq, _ := http.NewRequest("POST", e.url+"/v1/messages", strings.NewReader(`{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"cyan magenta"}]}`))
	sreq.Header.Set("x-api-key", key)
	sresp, err := http.DefaultClient.Do(sreq)
	if err != nil {
		t.Fatal(err)
	}
	sb, _ := io.ReadAll(sresp.Body)
	sresp.Body.Close()
	if sresp.StatusCode != 200 || !strings.Contains(string(sb), "event: message_start") || !strings.Contains(string(sb), "magenta") || !strings.Contains(string(sb), "event: message_stop") {
		t.Fatalf("messages stream: %d %s", sresp.StatusCode, sb)
	}

	// An exception mid-stream ends the client's stream with an error in
	// OpenAI's shape, after the text it had; what was produced is booked.
	resp, rawb := e.send(t, "/v1/chat/completions", key, "application/json", `{"model":"throttled-stream","stream":true,"messages":[{"role":"user","content":"cut short"}]}`)
	if raw := string(rawb); resp.StatusCode != 200 || !strings.Contains(raw, `"content":"Hello!`) || !strings.Contains(raw, `"type":"rate_limit_error"`) || strings.Contains(raw, "[DONE]") {
		t.Fatalf("throttled stream: %d %s", resp.StatusCode, raw)
	}

	// A Responses client, through chat.
	resp, out = e.post(t, "/v1/responses", key, `{"model":"claude","input":"violet indigo"}`)
	if resp.StatusCode != 200 || out["object"] != "response" || !strings.Contains(fmt.Sprint(out["output"]), "violet indigo") || out["model"] != sonnet {
		t.Fatalf("responses: %d %v", resp.StatusCode, out)
	}

	// A ThrottlingException falls back; a ValidationException is the
	// client's, in OpenAI's shape with Bedrock's status.
	if resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"flaky","messages":[{"role":"user","content":"fallback please"}]}`); resp.StatusCode != 200 ||
		!strings.Contains(fmt.Sprint(out["choices"]), "fallback please") {
		t.Fatalf("fallback: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"invalid","messages":[{"role":"user","content":"x"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 400 || e2["code"] != "ValidationException" || e2["type"] != "invalid_request_error" {
		t.Fatalf("validation error: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/messages", key, `{"model":"invalid","max_tokens":5,"messages":[{"role":"user","content":"x"}]}`)
	if e2, _ := out["error"].(map[string]any); resp.StatusCode != 400 || out["type"] != "error" || e2["type"] != "invalid_request_error" {
		t.Fatalf("validation error to a Messages client: %d %v", resp.StatusCode, out)
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"claude","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}`)
	if resp.StatusCode != 400 {
		t.Fatalf("an image by URL: %d %v", resp.StatusCode, out)
	}

	chk.mu.Lock()
	bad, reached := chk.bad, len(chk.paths)
	chk.mu.Unlock()
	if len(bad) > 0 || reached != 13 {
		t.Fatalf("%d requests reached Bedrock (want 13: the image by URL must not); signatures that did not verify: %v", reached, bad)
	}

	// /health checks each deployment with a one-token Converse: all
	// answer but the two the test makes fail.
	var rep struct {
		Healthy   []any `json:"healthy_endpoints"`
		Unhealthy []any `json:"unhealthy_endpoints"`
	}
	if code := getJSON(t, e.url+"/health", "sk-1234", &rep); code != 200 || len(rep.Healthy) != 4 || len(rep.Unhealthy) != 2 {
		t.Fatalf("/health: %d %+v", code, rep)
	}
	if _, body := chk.last(); !strings.Contains(body, `"maxTokens":1`) {
		t.Fatalf("a health check sent %s", body)
	}

	// Every answer is booked from Converse's usage at the table's price
	// for the Bedrock model id (the cross-region profile at its own).
	// The upstream's refusals have a failure row without cost each.
	rows := answeredRows(t, spendRows(t, e, key), 2)
	if len(rows) != 10 {
		t.Fatalf("%d answered spend rows, want 10 (the fallback's under claude)", len(rows))
	}
	for _, r := range rows {
		model := sonnet
		if r.ModelGroup == "claude-xr" {
			model = "us." + sonnet
		}
		want := tableCost(t, "bedrock", model, usage.Usage{Prompt: r.PromptTokens, Completion: r.CompletionTokens})
		// The broken-off stream reported no usage: the gateway counted it.
		estimated := r.ModelGroup == "throttled-stream"
		if r.PromptTokens <= 0 || r.CompletionTokens <= 0 || r.UsageEstimated != estimated || !near(r.Cost, want) || r.Cost <= 0 {
			t.Fatalf("booked %+v, want %v", r, want)
		}
	}
}

// TestBedrockEmbeddings: Titan and Cohere embedding deployments on Bedrock
// answer OpenAI embeddings clients through InvokeModel, signed; Titan's
// own token count is booked at the table's Titan price, Cohere's (which
// reports none) at the gateway's count; a list Titan cannot take is
// refused before it reaches Bedrock.
func TestBedrockEmbeddings(t *testing.T) {
	chk := &sigv4Checker{next: mockupstream.New(mockupstream.Options{}), keys: map[string]config.AWSCredentials{
		"AKIADEPLOY": {AccessKeyID: "AKIADEPLOY", SecretAccessKey: "deploy-secret", Region: "us-east-1"},
	}}
	up := httptest.NewServer(chk)
	defer up.Close()
	yaml := fmt.Sprintf(`
model_list:
  - model_name: titan
    litellm_params: {model: bedrock/amazon.titan-embed-text-v2:0, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s"}
  - model_name: cohere-embed
    litellm_params: {model: bedrock/cohere.embed-english-v3, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "%[1]s"}
general_settings:
  master_key: sk-1234
`, up.URL)
	cfg, err := config.Parse("e.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 5}`)

	// /health checks each with its own smallest request: an embedding.
	var rep struct {
		Healthy   []any `json:"healthy_endpoints"`
		Unhealthy []any `json:"unhealthy_endpoints"`
	}
	if code := getJSON(t, e.url+"/health", "sk-1234", &rep); code != 200 || len(rep.Healthy) != 2 || len(rep.Unhealthy) != 0 {
		t.Fatalf("/health: %d %+v", code, rep)
	}
	chk.mu.Lock()
	chk.paths, chk.bods = nil, nil
	chk.mu.Unlock()

	resp, out := e.post(t, "/v1/embeddings", key, `{"model":"titan","input":"What are the different services that you offer?","dimensions":16}`)
	data, _ := out["data"].([]any)
	if resp.StatusCode != 200 || len(data) != 1 || len(data[0].(map[string]any)["embedding"].([]any)) != 16 || out["model"] != "amazon.titan-embed-text-v2:0" {
		t.Fatalf("titan: %d %v", resp.StatusCode, out)
	}
	if path, body := chk.last(); path != "/model/amazon.titan-embed-text-v2%3A0/invoke" || body != `{"dimensions":16,"inputText":"What are the different services that you offer?"}` {
		t.Fatalf("titan upstream got %s %s", path, body)
	}
	resp, out = e.post(t, "/v1/embeddings", key, `{"model":"cohere-embed","input":["first text","second text"]}`)
	if data, _ = out["data"].([]any); resp.StatusCode != 200 || len(data) != 2 {
		t.Fatalf("cohere: %d %v", resp.StatusCode, out)
	}
	if resp, out = e.post(t, "/v1/embeddings", key, `{"model":"titan","input":["a","b"]}`); resp.StatusCode != 400 {
		t.Fatalf("two inputs for titan: %d %v", resp.StatusCode, out)
	}
	chk.mu.Lock()
	bad, reached := chk.bad, len(chk.paths)
	chk.mu.Unlock()
	if len(bad) > 0 || reached != 2 {
		t.Fatalf("%d requests reached Bedrock, want 2; unverified signatures: %v", reached, bad)
	}

	rows := spendRows(t, e, key)
	if len(rows) != 2 {
		t.Fatalf("%d spend rows, want 2", len(rows))
	}
	titan, cohere := rows[0], rows[1]
	want := tableCost(t, "bedrock", "amazon.titan-embed-text-v2:0", usage.Usage{Prompt: 11}) // the mock: a token per four bytes
	if titan.PromptTokens != 11 || titan.UsageEstimated || !near(titan.Cost, want) || titan.Cost <= 0 {
		t.Fatalf("titan booked %+v, want 11 tokens at %v", titan, want)
	}
	want = tableCost(t, "bedrock", "cohere.embed-english-v3", usage.Usage{Prompt: cohere.PromptTokens})
	if cohere.PromptTokens <= 0 || !cohere.UsageEstimated || !near(cohere.Cost, want) || cohere.Cost <= 0 {
		t.Fatalf("cohere booked %+v, want its counted tokens at %v", cohere, want)
	}
}

// bedrockOnChecker serves a config of bedrock deployments (BASE stands for
// the upstream's address) on the mock behind the SigV4 checker.
func bedrockOnChecker(t *testing.T, models string, settings ...string) (*spendEnv, *sigv4Checker) {
	t.Helper()
	return bedrockOnCheckerNext(t, mockupstream.New(mockupstream.Options{}), models, settings...)
}

// bedrockOnCheckerNext is bedrockOnChecker with next behind the checker.
func bedrockOnCheckerNext(t *testing.T, next http.Handler, models string, settings ...string) (*spendEnv, *sigv4Checker) {
	t.Helper()
	chk := &sigv4Checker{next: next, keys: map[string]config.AWSCredentials{
		"AKIADEPLOY": {AccessKeyID: "AKIADEPLOY", SecretAccessKey: "deploy-secret", Region: "us-east-1"},
	}}
	up := httptest.NewServer(chk)
	t.Cleanup(up.Close)
	yaml := "model_list:\n" + strings.ReplaceAll(models, "BASE", up.URL) + "general_settings:\n  master_key: sk-1234\n" + strings.Join(settings, "")
	cfg, err := config.Parse("p.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return serveEnv(t, cfg, sqliteStore(t)), chk
}

func (c *sigv4Checker) reached() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.paths)
}

const bedrockSonnet = `{model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0, aws_access_key_id: AKIADEPLOY, aws_secret_access_key: deploy-secret, aws_region_name: us-east-1, api_base: "BASE"`

// TestBedrockPassThroughPathNamesTheModel: on /bedrock/model/{modelId}/...
// the path's model is the one called, checked and priced; a body naming
// another is refused before Bedrock, and a key without the path's model is
// refused whatever the body says.
func TestBedrockPassThroughPathNamesTheModel(t *testing.T) {
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n")
	key := newKey(t, e, `{"models": ["meta.llama3-8b-instruct-v1:0"], "max_budget": 5}`)
	const opus = "/bedrock/model/anthropic.claude-3-opus-20240229-v1%3A0/converse"
	const turn = `"messages":[{"role":"user","content":[{"text":"opus on a llama key"}]}],"inferenceConfig":{"maxTokens":20}`
	resp, raw := e.send(t, opus, key, "application/json", `{"model":"meta.llama3-8b-instruct-v1:0",`+turn+`}`)
	if resp.StatusCode != 400 || !strings.Contains(string(raw), `"param":"model"`) || chk.reached() != 0 {
		t.Fatalf("a body naming another model than the path: %d %s; %d requests reached Bedrock", resp.StatusCode, raw, chk.reached())
	}
	resp, raw = e.send(t, opus, key, "application/json", `{`+turn+`}`)
	if resp.StatusCode != 403 || chk.reached() != 0 {
		t.Fatalf("a llama-only key calling opus by path: %d %s; %d requests reached Bedrock", resp.StatusCode, raw, chk.reached())
	}
	// The same model named both ways is the path's, and is served.
	opusKey := newKey(t, e, `{"models": ["anthropic.claude-3-opus-20240229-v1:0"], "max_budget": 5}`)
	resp, raw = e.send(t, opus, opusKey, "application/json", `{"model":"anthropic.claude-3-opus-20240229-v1:0",`+turn+`}`)
	if resp.StatusCode != 200 || chk.reached() != 1 {
		t.Fatalf("body and path naming the same model: %d %s", resp.StatusCode, raw)
	}
	for _, r := range spendRows(t, e, key) {
		if r.Cost != 0 {
			t.Fatalf("a refused call was charged: %+v", r)
		}
	}
	if rows := spendRows(t, e, opusKey); len(rows) != 1 || rows[0].ModelGroup != "anthropic.claude-3-opus-20240229-v1:0" || rows[0].Cost <= 0 {
		t.Fatalf("the path's model was booked as %+v", rows)
	}
}

// TestBedrockInferenceProfileARN: a deployment naming its model by an
// inference profile's ARN is booked at its model's price; one naming a
// provisioned model's ARN is unpriced, so unpriced_models: refuse keeps a
// budgeted key from it before Bedrock.
func TestBedrockInferenceProfileARN(t *testing.T) {
	const profile = "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20240620-v1:0"
	const provisioned = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123"
	arn := func(id string) string {
		return strings.Replace(bedrockSonnet, "anthropic.claude-3-5-sonnet-20240620-v1:0", id, 1)
	}
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+arn(profile)+"}\n"+
		"  - model_name: mine\n    litellm_params: "+arn(provisioned)+"}\n", "  unpriced_models: refuse\n")
	key := newKey(t, e, `{"max_budget": 5}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"mine","max_tokens":10,"messages":[{"role":"user","content":"priced?"}]}`)
	if resp.StatusCode != 400 || chk.reached() != 0 {
		t.Fatalf("an unpriced ARN under unpriced_models: refuse: %d %v; %d requests reached Bedrock", resp.StatusCode, out, chk.reached())
	}
	resp, out = e.post(t, "/v1/chat/completions", key, `{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"priced?"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("ARN chat: %d %v", resp.StatusCode, out)
	}
	if path, _ := chk.last(); !strings.Contains(path, "inference-profile%2Fus.anthropic") {
		t.Fatalf("the ARN reached Bedrock as %s", path)
	}
	want, _ := pricing.Lookup("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0")
	var served []store.SpendLog
	for _, r := range spendRows(t, e, key) {
		if r.Status == 200 {
			served = append(served, r)
		}
	}
	if len(served) != 1 || served[0].Cost <= 0 || math.Abs(served[0].Cost-want.Cost(usage.Usage{Prompt: served[0].PromptTokens, Completion: served[0].CompletionTokens})) > 1e-12 {
		t.Fatalf("ARN deployment booked %+v, want it priced as its model", served)
	}
}

// TestBedrockBadMessagesRefused: messages Converse cannot take as OpenAI
// would refuse them are refused with a 400 naming messages before Bedrock:
// image bytes that are not base64, a tool message answering no tool call.
func TestBedrockBadMessagesRefused(t *testing.T) {
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n")
	key := newKey(t, e, `{"max_budget": 5}`)
	for _, msgs := range []string{
		`[{"role":"user","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"data:image/png;base64,\"}not base64 at all!!"}}]}]`,
		`[{"role":"tool","content":"orphan result"}]`,
	} {
		resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","max_tokens":10,"messages":`+msgs+`}`)
		errObj, _ := out["error"].(map[string]any)
		if n := chk.reached(); n != 0 || resp.StatusCode != 400 || errObj["param"] != "messages" {
			t.Fatalf("%s: %d %v; %d requests reached Bedrock (want 0)", msgs, resp.StatusCode, out, n)
		}
	}
}

// TestBedrockMessagesStreamException: an exception frame mid-stream
// reaches an Anthropic Messages client as Anthropic's error event
// (event: error, {"type":"error","error":{...}}), not in OpenAI's shape,
// and ends its stream; what was streamed is booked.
func TestBedrockMessagesStreamException(t *testing.T) {
	e, _ := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+", headers: {x-mock-stream-exception: throttlingException}}\n")
	key := newKey(t, e, `{"max_budget": 5}`)
	req, _ := http.NewRequest("POST", e.url+"/v1/messages", strings.NewReader(`{"model":"claude","max_tokens":20,"stream":true,"messages":[{"role":"user","content":"cut short"}]}`))
	req.Header.Set("x-api-key", key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(raw), "event: error") || !strings.Contains(string(raw), `"type":"error"`) {
		t.Fatalf("a Messages stream cut by an exception: %d %s", resp.StatusCode, raw)
	}
	if strings.Contains(string(raw), "event: message_stop") || strings.Contains(string(raw), `"code":`) {
		t.Fatalf("a stream cut by an exception ended like a whole answer, or in OpenAI's error shape: %s", raw)
	}
	if rows := spendRows(t, e, key); len(rows) != 1 {
		t.Fatalf("a stream cut by an exception booked %+v", rows)
	}
}

// TestBedrockUncappedChatHeldToItsBound: a chat request without
// max_tokens holds the table's maximum output; that bound reaches Converse
// as inferenceConfig.maxTokens, so Bedrock cannot answer (and bill) more
// than the gateway books.
func TestBedrockUncappedChatHeldToItsBound(t *testing.T) {
	var mu sync.Mutex
	var got string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = string(b)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"output":{"message":{"role":"assistant","content":[{"text":"a very long answer"}]}},"stopReason":"end_turn","usage":{"inputTokens":10,"outputTokens":60000,"totalTokens":60010}}`)
	}))
	defer up.Close()
	cfg, err := config.Parse("c.yaml", []byte("model_list:\n  - model_name: claude\n    litellm_params: "+strings.ReplaceAll(bedrockSonnet, "BASE", up.URL)+"}\ngeneral_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 50}`)
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","messages":[{"role":"user","content":"write a lot"}]}`)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	rows := spendRows(t, e, key)
	mu.Lock()
	body := got
	mu.Unlock()
	bound := provider.BedrockMaxOutput("anthropic.claude-3-5-sonnet-20240620-v1:0")
	if !strings.Contains(body, fmt.Sprintf(`"maxTokens":%d`, bound)) {
		t.Fatalf("Converse was not held to the %d output tokens the hold was sized on: %s", bound, body)
	}
	if len(rows) != 1 || rows[0].CompletionTokens != bound || rows[0].Cost <= 0 {
		t.Fatalf("an answer past the bound sent was booked as %+v, want %d output tokens", rows, bound)
	}
}

// TestBedrockResponsesMaxOutputTokens: a Responses client's
// max_output_tokens reaches Converse as inferenceConfig.maxTokens (the
// hold was sized on it).
func TestBedrockResponsesMaxOutputTokens(t *testing.T) {
	e, chk := bedrockOnChecker(t, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n")
	key := newKey(t, e, `{"max_budget": 5}`)
	resp, out := e.post(t, "/v1/responses", key, `{"model":"claude","max_output_tokens":17,"input":"violet indigo"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("responses: %d %v", resp.StatusCode, out)
	}
	if _, body := chk.last(); !strings.Contains(body, `"maxTokens":17`) {
		t.Fatalf("max_output_tokens 17 did not reach Converse: %s", body)
	}
}

// TestBedrockDefaultModeCapsOutput: a Bedrock request capped in the
// default budget mode gets inferenceConfig.maxTokens (docs/providers.md).
// It needs OpConverse in the gateway's canCap (internal/gateway/meter.go).
// With one request in flight on a key whose budget cannot hold the
// second's worst case (and that first one uncovered, holding its learned
// estimate), the second is served capped, as a chat deployment's is,
// not refused.
func TestBedrockDefaultModeCapsOutput(t *testing.T) {
	t.Parallel()
	// The "hold" request is answered after 15 s (it is cancelled once the
	// capped one is answered); the warm-up, answered at once, teaches the
	// same deployment (before, the deployment's own x-mock-delay-ms header
	// made every "slow" request wait 15 s, the warm-up too).
	mock := mockupstream.New(mockupstream.Options{})
	hold := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Contains(body, []byte(`"hold"`)) {
			r.Header.Set("x-mock-delay-ms", "15000")
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		mock.ServeHTTP(w, r)
	})
	e, chk := bedrockOnCheckerNext(t, hold, "  - model_name: claude\n    litellm_params: "+bedrockSonnet+"}\n"+
		"  - model_name: slow\n    litellm_params: "+bedrockSonnet+"}\n")
	// The slow deployment learns its answers are one token long.
	if resp, out := e.post(t, "/v1/chat/completions", newKey(t, e, `{}`), `{"model":"slow","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}`); resp.StatusCode != 200 {
		t.Fatalf("warm-up: %d %v", resp.StatusCode, out)
	}
	key := newKey(t, e, `{"max_budget": 0.05}`)
	seen := chk.reached()
	done := make(chan int, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/chat/completions", strings.NewReader(`{"model":"slow","messages":[{"role":"user","content":"hold"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	for deadline := time.Now().Add(30 * time.Second); chk.reached() == seen; {
		if time.Now().After(deadline) {
			t.Fatal("the slow request never reached Bedrock")
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, out := e.post(t, "/v1/chat/completions", key, `{"model":"claude","messages":[{"role":"user","content":"capped please"}]}`)
	_, body := chk.last()
	capped := resp.Header.Get("X-Tollgate-Output-Capped")
	cancel() // the slow one has served its purpose: no need to wait out its 15 s
	<-done
	if resp.StatusCode != 200 || capped == "" || !strings.Contains(body, fmt.Sprintf(`"maxTokens":%s`, capped)) {
		t.Fatalf("second request: %d capped %q %v; upstream body %s", resp.StatusCode, capped, out, body)
	}
}

// TestBedrockStreamCutByBadChecksum: a ConverseStream whose third frame
// has a bad checksum: the client's stream ends with an error (not a clean
// [DONE] as if complete) and the answer is booked.
func TestBedrockStreamCutByBadChecksum(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/vnd.amazon.eventstream")
		enc := eventstream.NewEncoder()
		frame := func(name, payload string) []byte {
			var b bytes.Buffer
			var h eventstream.Headers
			h.Set(":message-type", eventstream.StringValue("event"))
			h.Set(":event-type", eventstream.StringValue(name))
			h.Set(":content-type", eventstream.StringValue("application/json"))
			_ = enc.Encode(&b, eventstream.Message{Headers: h, Payload: []byte(payload)})
			return b.Bytes()
		}
		w.Write(frame("messageStart", `{"role":"assistant"}`))
		w.Write(frame("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"partial answer "}}`))
		bad := frame("contentBlockDelta", `{"contentBlockIndex":0,"delta":{"text":"corrupted"}}`)
		bad[len(bad)-1] ^= 0xff // the message CRC no longer holds
		w.Write(bad)
		w.Write(frame("messageStop", `{"stopReason":"end_turn"}`))
	}))
	defer up.Close()
	cfg, err := config.Parse("c.yaml", []byte("model_list:\n  - model_name: claude\n    litellm_params: "+strings.ReplaceAll(bedrockSonnet, "BASE", up.URL)+"}\ngeneral_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := serveEnv(t, cfg, sqliteStore(t))
	key := newKey(t, e, `{"max_budget": 5}`)
	resp, raw := e.send(t, "/v1/chat/completions", key, "application/json", `{"model":"claude","stream":true,"messages":[{"role":"user","content":"x"}]}`)
	if resp.StatusCode != 200 || !strings.Contains(string(raw), "partial answer") {
		t.Fatalf("stream: %d %s", resp.StatusCode, raw)
	}
	rows := spendRows(t, e, key)
	if len(rows) != 1 || rows[0].Cost <= 0 || rows[0].CompletionTokens <= 0 {
		t.Fatalf("a stream cut by a bad CRC booked %+v", rows)
	}
	if strings.Contains(string(raw), "[DONE]") && !strings.Contains(string(raw), `"error"`) {
		t.Fatalf("a stream cut by a bad CRC ended like a whole answer: %s", raw)
	}
}
