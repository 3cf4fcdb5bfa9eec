package server

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
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

// TestDisableSpendLogs: spend is still booked, but no spend_logs rows.
func TestDisableSpendLogs(t *testing.T) {
	st := sqliteStore(t)
	e := startSpend(t, st, mockupstream.Options{}, "  disable_spend_logs: true\n")
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	if resp, _ := e.post(t, "/v1/chat/completions", key, chat3); resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
	e.srv.writer.Flush()
	k, err := st.GetKey(context.Background(), sha(key))
	if err != nil || k.Spend != 0.0003 {
		t.Fatalf("spend %v %v", k, err)
	}
	if _, n, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{}); n != 0 {
		t.Fatalf("%d spend logs written with disable_spend_logs", n)
	}
	if total, _ := st.TotalSpend(context.Background()); total != 0.0003 {
		t.Fatalf("rollups: %v", total)
	}
}
