package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

func TestUnpricedDeploymentsAreWarnedAbout(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(`model_list:
  - model_name: known
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:1"}
  - model_name: mystery
    litellm_params: {model: openai/my-finetune-xyz, api_base: "http://127.0.0.1:1"}
  - model_name: priced-mystery
    litellm_params: {model: openai/other-xyz, api_base: "http://127.0.0.1:1", input_cost_per_token: 0.000001, output_cost_per_token: 0.000002}
`))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(&buf, nil))}); err != nil {
		t.Fatal(err)
	}
	log := buf.String()
	if !strings.Contains(log, "model_group=mystery") || strings.Contains(log, "model_group=known") || strings.Contains(log, "model_group=priced-mystery") {
		t.Fatalf("warnings:\n%s", log)
	}
}
