// Package sdktest runs the official OpenAI and Anthropic clients (Go, and the
// npm openai package on Node) against a real Tollgate process in front of a
// real mock-upstream process. It is its own module so that the SDKs never
// enter the gateway's go.mod. The main module's tests run it
// (cmd/tollgate TestOfficialSDKs); `cd sdktest && go test ./...` runs it alone,
// with the module's other tests (browser/, spec/).
package sdktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/sdktest/internal/harness"
)

// gw is the gateway the tests share.
var gw struct {
	url    string // http://127.0.0.1:port
	master string
	keys   map[string]string // scenario -> raw virtual key
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "tollgate-sdktest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	stop, err := start(dir)
	code := 1
	if err != nil {
		fmt.Fprintln(os.Stderr, "sdktest setup:", err)
	} else {
		code = m.Run()
	}
	stop()
	os.RemoveAll(dir)
	os.Exit(code)
}

// start runs tollgate (built, or $TOLLGATE_BIN) in front of its mock
// upstream and creates the keys the scenarios use.
func start(dir string) (func(), error) {
	bin, err := harness.Binary(dir)
	if err != nil {
		return func() {}, err
	}
	g, err := harness.Start(bin, dir, func(upURL string) string {
		return fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %[1]q, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_base: %[1]q, input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}
  - model_name: bedrock-claude
    litellm_params: {model: bedrock/anthropic.claude-3-5-sonnet-20240620-v1:0, api_base: %[1]q, aws_access_key_id: AKIASDKTEST, aws_secret_access_key: sdk-secret, aws_region_name: us-east-1}
  - model_name: text-embedding-3-small
    litellm_params: {model: openai/text-embedding-3-small, api_base: %[1]q, input_cost_per_token: 0.00000002}
  - model_name: dall-e-3
    litellm_params: {model: openai/dall-e-3, api_base: %[1]q}
  - model_name: whisper-1
    litellm_params: {model: openai/whisper-1, api_base: %[1]q}
  - model_name: tts-1
    litellm_params: {model: openai/tts-1, api_base: %[1]q}
general_settings:
  master_key: sk-sdk-master
`, upURL)
	})
	if err != nil {
		return func() {}, err
	}
	gw.url, gw.master = g.URL, "sk-sdk-master"
	gw.keys = map[string]string{}
	for name, body := range map[string]string{
		"all":  `{}`,
		"gpt4": `{"models": ["gpt-4"]}`,
		"rpm1": `{"rpm_limit": 1}`,
		// A spent budget (spend >= max_budget, as LiteLLM judges it): the
		// first call is refused, whichever client makes it.
		"nobudge": `{"max_budget": 0.0000001, "spend": 0.0000001}`,
	} {
		key, err := generate(body)
		if err != nil {
			return g.Stop, err
		}
		gw.keys[name] = key
	}
	return g.Stop, nil
}

func generate(body string) (string, error) {
	req, _ := http.NewRequest("POST", gw.url+"/key/generate", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+gw.master)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct{ Key string }
	if err := json.Unmarshal(b, &out); err != nil || out.Key == "" {
		return "", fmt.Errorf("/key/generate: %d %s", resp.StatusCode, b)
	}
	return out.Key, nil
}
