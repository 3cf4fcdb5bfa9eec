package server

import (
	"encoding/json"
	"math"
	"net/http"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

func (e *spendEnv) get(t *testing.T, path, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %d, undecodable body: %v", path, resp.StatusCode, err)
	}
	return resp.StatusCode
}

// TestSpendReport: requests from two teams' keys and an end user show up in
// /global/spend/report, grouped by team, customer and key, per day.
func TestSpendReport(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startSpend(t, st, mockupstream.Options{}, "")
		e.post(t, "/team/new", "sk-1234", `{"team_id": "t-core", "team_alias": "core-infra"}`)
		_, a := e.post(t, "/key/generate", "sk-1234", `{"team_id": "t-core"}`)
		_, b := e.post(t, "/key/generate", "sk-1234", `{"team_id": "t-web"}`)
		keyA, keyB := a["key"].(string), b["key"].(string)
		for range 3 {
			e.post(t, "/v1/chat/completions", keyA, chat3)
		}
		e.post(t, "/v1/chat/completions", keyB, `{"model":"gpt-4","max_tokens":3,"user":"cust-7","messages":[{"role":"user","content":"hi"}]}`)
		e.srv.writer.Flush()

		type modelSpend struct {
			Model       string  `json:"model"`
			Spend       float64 `json:"spend"`
			TotalTokens int64   `json:"total_tokens"`
			Requests    int64   `json:"requests"`
		}
		type group struct {
			TeamName   string       `json:"team_name"`
			TeamID     string       `json:"team_id"`
			Customer   *string      `json:"customer"`
			APIKey     string       `json:"api_key"`
			TotalSpend float64      `json:"total_spend"`
			Metadata   []modelSpend `json:"metadata"`
		}
		type day struct {
			Day       string  `json:"group_by_day"`
			Teams     []group `json:"teams"`
			Customers []group `json:"customers"`
			APIKeys   []group `json:"api_keys"`
		}
		today := time.Now().UTC().Format(time.DateOnly)
		var byTeam []day
		if code := e.get(t, "/global/spend/report?start_date="+today+"&end_date="+today, "sk-1234", &byTeam); code != 200 {
			t.Fatalf("report: %d", code)
		}
		if len(byTeam) != 1 || byTeam[0].Day != today || len(byTeam[0].Teams) != 2 {
			t.Fatalf("by team: %+v", byTeam)
		}
		core, web := byTeam[0].Teams[0], byTeam[0].Teams[1]
		if core.TeamName != "core-infra" || core.TeamID != "t-core" || math.Abs(core.TotalSpend-0.0009) > 1e-12 ||
			len(core.Metadata) != 1 || core.Metadata[0].Requests != 3 || core.Metadata[0].Model != "gpt-4" {
			t.Errorf("team core-infra: %+v", core)
		}
		if web.TeamName != "t-web" || math.Abs(web.TotalSpend-0.0003) > 1e-12 {
			t.Errorf("team t-web: %+v", web)
		}

		var byCustomer []day
		e.get(t, "/global/spend/report?group_by=customer&customer_id=cust-7", "sk-1234", &byCustomer)
		if len(byCustomer) != 1 || len(byCustomer[0].Customers) != 1 || *byCustomer[0].Customers[0].Customer != "cust-7" ||
			math.Abs(byCustomer[0].Customers[0].TotalSpend-0.0003) > 1e-12 {
			t.Errorf("by customer: %+v", byCustomer)
		}
		var byKey []day
		e.get(t, "/global/spend/report?group_by=api_key&api_key="+keyA, "sk-1234", &byKey)
		if len(byKey) != 1 || len(byKey[0].APIKeys) != 1 || byKey[0].APIKeys[0].APIKey != sha(keyA) {
			t.Errorf("by key: %+v", byKey)
		}
		var none []day
		e.get(t, "/global/spend/report?start_date=2020-01-01&end_date=2020-01-31", "sk-1234", &none)
		if none == nil || len(none) != 0 {
			t.Errorf("an empty range gave %+v, want []", none)
		}

		var bad map[string]any
		if code := e.get(t, "/global/spend/report?group_by=model%3B%20DROP%20TABLE%20keys", "sk-1234", &bad); code != 400 {
			t.Errorf("bad group_by: %d %v", code, bad)
		}
		if code := e.get(t, "/global/spend/report", keyA, &bad); code != 403 {
			t.Errorf("a plain key read the global report: %d", code)
		}
	})
}

func TestSpendCalculate(t *testing.T) {
	e := startSpend(t, sqliteStore(t), mockupstream.Options{}, "")
	tests := []struct {
		name, body string
		code       int
		cost       float64
	}{
		// gpt-4 is the configured deployment: output 1e-4, input 0.
		{"openai usage", `{"completion_response": {"model": "gpt-4", "usage": {"prompt_tokens": 100, "completion_tokens": 7}}}`, 200, 7e-4},
		{"anthropic usage", `{"model": "gpt-4", "completion_response": {"usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 9}}}`, 200, 2e-4},
		{"messages cost their prompt", `{"model": "gpt-4", "messages": [{"role": "user", "content": "hello"}]}`, 200, 0},
		// gpt-3.5-turbo is not deployed; the price table knows it.
		{"table price", `{"completion_response": {"model": "gpt-3.5-turbo", "usage": {"prompt_tokens": 1000000, "completion_tokens": 0}}}`, 200, 0.5},
		{"unknown model", `{"completion_response": {"model": "no-such-model", "usage": {"prompt_tokens": 1}}}`, 404, 0},
		{"nothing to price", `{"model": "gpt-4"}`, 400, 0},
		{"not json", `{"model":`, 400, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, out := e.post(t, "/spend/calculate", "sk-1234", tt.body)
			if resp.StatusCode != tt.code {
				t.Fatalf("status %d, want %d: %v", resp.StatusCode, tt.code, out)
			}
			if tt.code == 200 && math.Abs(out["cost"].(float64)-tt.cost) > 1e-12 {
				t.Fatalf("cost %v, want %v", out["cost"], tt.cost)
			}
		})
	}
	_, out := e.post(t, "/spend/calculate", "sk-1234", `{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hello world"}]}`)
	if got := out["prompt_tokens"].(float64); got != 3+1+2+3 { // reply priming, framing, "user", "hello world"
		t.Fatalf("prompt tokens %v", got)
	}
}
