package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store/dynamostore"
)

// TestServeOnDynamoDBSeedConfig runs two gateway processes on the seed's
// DynamoDB config (LiteLLM's virtual-keys page, its missing comma fixed),
// against the DynamoDB-compatible server of TOLLGATE_TEST_DYNAMODB_URL,
// reached through AWS_ENDPOINT_URL_DYNAMODB (the config names none). The
// first replica also gets a model_list, appended, so that it serves
// requests. Checked: the seed's table names are created; keys, users,
// teams, end users, budgets, organizations, models and audit are written on
// A and seen on B (B learns of A's key by its resync, no Redis); spend,
// spend logs and reports are booked; a deleted key stops working on B.
func TestServeOnDynamoDBSeedConfig(t *testing.T) {
	t.Parallel() // its own binary process, port, temp dir and store (see TestMain)
	ddb := os.Getenv("TOLLGATE_TEST_DYNAMODB_URL")
	if ddb == "" {
		t.Skip("TOLLGATE_TEST_DYNAMODB_URL is not set: skipping the DynamoDB serve test")
	}
	seed, err := os.ReadFile("../../internal/config/testdata/litellm_dynamodb.yaml")
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
	defer up.Close()
	dir := t.TempDir()
	seedCfg := filepath.Join(dir, "seed.yaml")
	withModels := filepath.Join(dir, "with_models.yaml")
	os.WriteFile(seedCfg, seed, 0o600)
	os.WriteFile(withModels, append(append([]byte{}, seed...), fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, api_key: sk-up, input_cost_per_token: 0.001, output_cost_per_token: 0.002}
`, up.URL)...), 0o600)

	env := append(os.Environ(), "AWS_ENDPOINT_URL_DYNAMODB="+ddb, "AWS_ACCESS_KEY_ID=test", "AWS_SECRET_ACCESS_KEY=test",
		"AWS_EC2_METADATA_DISABLED=true")
	bin := buildBinary(t)
	run := func(cfg string) (string, *syncBuilder) {
		port := freePort(t)
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		cmd := exec.Command(bin, "serve", "--config", cfg, "--host", "127.0.0.1", "--port", fmt.Sprint(port))
		cmd.Dir, cmd.Env = dir, env
		stderr := &syncBuilder{}
		cmd.Stderr = stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if !eventually(60*time.Second, func() bool {
			resp, err := http.Get(base + "/health/readiness")
			if err == nil {
				resp.Body.Close()
			}
			return err == nil && resp.StatusCode == 200
		}) {
			t.Fatalf("serve on DynamoDB did not come up:\n%s", stderr)
		}
		return base, stderr
	}
	A, logA := run(withModels)
	B, _ := run(seedCfg)
	if !strings.Contains(logA.String(), `"engine":"dynamodb"`) && !strings.Contains(logA.String(), "engine=dynamodb") {
		eventually(60*time.Second, func() bool { return strings.Contains(logA.String(), "dynamodb") })
		if !strings.Contains(logA.String(), "dynamodb") {
			t.Errorf("log does not name the dynamodb engine:\n%s", logA)
		}
	}

	// The seed's table names were created (and the default spend table).
	c := dynamodb.New(dynamodb.Options{Region: "us-west-2", BaseEndpoint: aws.String(ddb),
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", "")})
	for _, want := range []string{"your-user-table", "your-token-table", "your-config-table", dynamostore.DefaultSpendTable} {
		if _, err := c.DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(want)}); err != nil {
			t.Errorf("table %s: %v", want, err)
		}
	}

	var b [4]byte
	_, _ = rand.Read(b[:])
	sfx := hex.EncodeToString(b[:]) // the server outlives a run: fresh names
	post := func(base, path, body string) map[string]any {
		t.Helper()
		code, out := call(base+path, "sk-1234", body)
		if code != 200 {
			t.Fatalf("POST %s: %d %s", path, code, out)
		}
		var m map[string]any
		_ = json.Unmarshal([]byte(out), &m)
		return m
	}
	get := func(base, path string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(out)
	}
	post(A, "/budget/new", `{"budget_id":"tier-`+sfx+`","max_budget":100}`)
	post(A, "/organization/new", `{"organization_id":"org-`+sfx+`","organization_alias":"Acme `+sfx+`","budget_id":"tier-`+sfx+`","models":["gpt-4"]}`)
	post(A, "/team/new", `{"team_id":"team-`+sfx+`","team_alias":"T `+sfx+`","organization_id":"org-`+sfx+`","models":["gpt-4"]}`)
	post(A, "/user/new", `{"user_id":"user-`+sfx+`","user_email":"u@example.com","max_budget":50}`)
	post(A, "/customer/new", `{"user_id":"cust-`+sfx+`","max_budget":5}`)
	key := post(A, "/key/generate", `{"models":["gpt-4"],"user_id":"user-`+sfx+`","team_id":"team-`+sfx+`","key_alias":"k-`+sfx+`","max_budget":10}`)["key"].(string)

	// B knows the key by its resync.
	if !eventually(30*time.Second, func() bool {
		code, _ := get(B, "/key/info?key="+key)
		return code == 200
	}) {
		t.Fatal("replica B never saw the key created on A")
	}
	for _, path := range []string{"/user/info?user_id=user-" + sfx, "/team/info?team_id=team-" + sfx,
		"/customer/info?end_user_id=cust-" + sfx, "/organization/info?organization_id=org-" + sfx} {
		if code, out := get(B, path); code != 200 || !strings.Contains(out, sfx) {
			t.Errorf("B %s: %d %s", path, code, out)
		}
	}

	// Spend: requests on A with the key and an end user.
	for i := range 3 {
		code, out := call(A+"/v1/chat/completions", key, fmt.Sprintf(`{"model":"gpt-4","user":"cust-%s","max_tokens":3,"messages":[{"role":"user","content":"hi %d"}]}`, sfx, i))
		if code != 200 {
			t.Fatalf("chat %d: %d %s", i, code, out)
		}
	}
	var spent float64
	if !eventually(30*time.Second, func() bool {
		code, out := get(B, "/key/info?key="+key)
		var info struct {
			Info struct{ Spend float64 } `json:"info"`
		}
		_ = json.Unmarshal([]byte(out), &info)
		spent = info.Info.Spend
		return code == 200 && spent > 0
	}) {
		t.Fatal("the key's spend never reached DynamoDB (read on B)")
	}
	if !eventually(30*time.Second, func() bool {
		code, out := get(B, "/spend/logs?api_key="+key)
		return code == 200 && strings.Count(out, `"request_id"`) == 3
	}) {
		_, out := get(B, "/spend/logs?api_key="+key)
		t.Errorf("spend logs on B: %s", out)
	}
	if code, out := get(B, "/customer/info?end_user_id=cust-"+sfx); code != 200 || !strings.Contains(out, `"spend":`) || strings.Contains(out, `"spend":0,`) {
		t.Errorf("end user spend on B: %d %s", code, out)
	}
	if code, out := get(B, "/audit/list"); code != 200 || !strings.Contains(out, sfx) {
		t.Errorf("audit on B: %d %.300s", code, out)
	}

	// A key deleted on A stops working; B drops it by its resync.
	post(A, "/key/delete", `{"keys":["`+key+`"]}`)
	if !eventually(30*time.Second, func() bool {
		code, _ := get(B, "/key/info?key="+key)
		return code == 404 || code == 400
	}) {
		t.Error("replica B still knows the key deleted on A")
	}
}
