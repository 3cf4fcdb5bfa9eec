package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// getJSON sends a GET and decodes whatever JSON comes back into v.
func (e *env) getJSON(path, key string, v any) int {
	e.t.Helper()
	req, _ := http.NewRequest("GET", e.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == 200 {
		if err := json.Unmarshal(b, v); err != nil {
			e.t.Fatalf("GET %s: %v in %s", path, err, b)
		}
	}
	return resp.StatusCode
}

// chatTagged sends a chat request with tags in the header and in the
// body's metadata, and a generation_name.
func (e *env) chatTagged(key, header, body string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	if header != "" {
		req.Header.Set("x-litellm-tags", header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		e.t.Fatalf("chat: %d %s", resp.StatusCode, b)
	}
}

// tagConfig adds a priced model to the seed's.
var tagConfig = strings.Replace(seedConfig, "general_settings:", `  - model_name: priced
    litellm_params: {model: openai/priced-upstream, api_base: "{{UP}}", input_cost_per_token: 0.001, output_cost_per_token: 0.002}
general_settings:`, 1)

type tagLog struct {
	RequestID   string          `json:"request_id"`
	CallID      string          `json:"call_id"`
	Spend       float64         `json:"spend"`
	RequestTags []string        `json:"request_tags"`
	Metadata    map[string]any  `json:"metadata"`
	Messages    json.RawMessage `json:"messages"`
	Response    json.RawMessage `json:"response"`
}

// TestSpendByTag: tags from the header, the body's metadata and the key
// reach the spend rows (/spend/logs, filtered by tag) and the tag reports
// (/spend/tags, /global/spend/tags, /global/spend/all_tag_names,
// /tag/daily/activity), whose
// sums match the rows; stored messages and response are shown; the body's
// metadata is shown as LiteLLM files it.
func TestSpendByTag(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		key := e.generate(`{"tags": ["key-tag"]}`)
		e.chatTagged(key, "hdr-a, shared", `{"model":"priced","messages":[{"role":"user","content":"hi"}],
			"metadata":{"tags":["body-b","shared"],"generation_name":"g1","spend_logs_metadata":{"job":"42"}}}`)
		e.chatTagged(key, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}],"metadata":{"tags":["body-b"]}}`)
		e.chatTagged(key, "", `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`)

		var logs []tagLog
		deadline := time.Now().Add(30 * time.Second)
		for {
			logs = nil
			if s := e.getJSON("/spend/logs?api_key="+key, "sk-1234", &logs); s != 200 {
				t.Fatalf("/spend/logs: %d", s)
			}
			if len(logs) == 3 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("spend rows: %d of 3 after 30 s", len(logs))
			}
			time.Sleep(20 * time.Millisecond)
		}
		oldest := logs[2]
		if fmt.Sprint(oldest.RequestTags) != "[hdr-a shared body-b key-tag]" {
			t.Errorf("first request's tags %v", oldest.RequestTags)
		}
		rm, _ := oldest.Metadata["requester_metadata"].(map[string]any)
		if rm["generation_name"] != "g1" || fmt.Sprint(oldest.Metadata["spend_logs_metadata"]) != "map[job:42]" || oldest.Metadata["user_api_key"] != sha(key) {
			t.Errorf("first request's metadata %v", oldest.Metadata)
		}
		if fmt.Sprint(logs[0].RequestTags) != "[key-tag]" || logs[0].Metadata["requester_metadata"] != nil {
			t.Errorf("untagged request: tags %v metadata %v", logs[0].RequestTags, logs[0].Metadata)
		}
		if string(oldest.Messages) != "{}" || string(oldest.Response) != "{}" {
			t.Errorf("nothing stored, yet messages %s response %s", oldest.Messages, oldest.Response)
		}
		var total float64
		for _, l := range logs {
			total += l.Spend
		}
		if total <= 0 {
			t.Fatalf("no spend booked: %v", logs)
		}

		var filtered []tagLog
		e.getJSON("/spend/logs?tag=body-b", "sk-1234", &filtered)
		if len(filtered) != 2 {
			t.Errorf("/spend/logs?tag=body-b: %d rows", len(filtered))
		}
		// A tag filter lists rows even with dates (no summary).
		today := time.Now().UTC().Format(time.DateOnly)
		filtered = nil
		e.getJSON("/spend/logs?tag=hdr-a&start_date="+today+"&end_date="+today, "sk-1234", &filtered)
		if len(filtered) != 1 || filtered[0].CallID != oldest.CallID {
			t.Errorf("/spend/logs?tag=hdr-a with dates: %+v", filtered)
		}

		var tags []struct {
			Tag      string  `json:"individual_request_tag"`
			LogCount int     `json:"log_count"`
			Spend    float64 `json:"total_spend"`
		}
		if s := e.getJSON("/spend/tags", "sk-1234", &tags); s != 200 {
			t.Fatalf("/spend/tags: %d", s)
		}
		got := map[string]int{}
		for _, tg := range tags {
			got[tg.Tag] = tg.LogCount
			if tg.Tag == "key-tag" && fmt.Sprintf("%.9f", tg.Spend) != fmt.Sprintf("%.9f", total) {
				t.Errorf("key-tag spend %v, rows sum %v", tg.Spend, total)
			}
		}
		if fmt.Sprint(got) != "map[body-b:2 hdr-a:1 key-tag:3 shared:1]" || tags[0].Tag != "key-tag" {
			t.Errorf("/spend/tags: %+v", tags)
		}

		var global struct {
			SpendPerTag []struct {
				Name     string  `json:"name"`
				Spend    float64 `json:"spend"`
				LogCount int     `json:"log_count"`
			} `json:"spend_per_tag"`
		}
		if s, out := e.do("GET", "/global/spend/tags", "sk-1234", ""); s != 400 || errParam(out) != "start_date" {
			t.Errorf("/global/spend/tags without dates: %d %v", s, out)
		}
		e.getJSON("/global/spend/tags?start_date="+today+"&end_date="+today+"&tags=hdr-a,body-b", "sk-1234", &global)
		if len(global.SpendPerTag) != 2 || global.SpendPerTag[0].Name != "body-b" || global.SpendPerTag[0].LogCount != 2 {
			t.Errorf("/global/spend/tags for two tags: %+v", global)
		}
		global.SpendPerTag = nil
		e.getJSON("/global/spend/tags?start_date="+today+"&end_date="+today+"&tags=hdr-a,all-tags", "sk-1234", &global)
		if len(global.SpendPerTag) != 4 || global.SpendPerTag[0].Name != "key-tag" {
			t.Errorf("/global/spend/tags with all-tags: %+v", global)
		}
		global.SpendPerTag = nil
		e.getJSON("/global/spend/tags?start_date=2000-01-01&end_date=2000-01-02", "sk-1234", &global)
		if len(global.SpendPerTag) != 0 {
			t.Errorf("/global/spend/tags in 2000: %+v", global)
		}
		var names struct {
			TagNames []string `json:"tag_names"`
		}
		e.getJSON("/global/spend/all_tag_names", "sk-1234", &names)
		if fmt.Sprint(names.TagNames) != "[body-b hdr-a key-tag shared]" {
			t.Errorf("all_tag_names %v", names.TagNames)
		}

		var act struct {
			Results []struct {
				Date    string `json:"date"`
				Metrics struct {
					Spend       float64 `json:"spend"`
					APIRequests int     `json:"api_requests"`
					Successful  int     `json:"successful_requests"`
				} `json:"metrics"`
				Breakdown struct {
					ModelGroups map[string]any `json:"model_groups"`
					Entities    map[string]struct {
						Metrics struct {
							APIRequests int     `json:"api_requests"`
							Spend       float64 `json:"spend"`
						} `json:"metrics"`
					} `json:"entities"`
				} `json:"breakdown"`
			} `json:"results"`
			Metadata struct {
				TotalAPIRequests int  `json:"total_api_requests"`
				Page             int  `json:"page"`
				HasMore          bool `json:"has_more"`
			} `json:"metadata"`
		}
		if s, out := e.do("GET", "/tag/daily/activity", "sk-1234", ""); s != 400 {
			t.Errorf("/tag/daily/activity without dates: %d %v", s, out)
		}
		if s := e.getJSON("/tag/daily/activity?start_date="+today+"&end_date="+today+"&tags=key-tag,body-b", "sk-1234", &act); s != 200 {
			t.Fatalf("/tag/daily/activity: %d", s)
		}
		if len(act.Results) != 1 || act.Results[0].Date != today || act.Results[0].Metrics.APIRequests != 5 || act.Results[0].Metrics.Successful != 5 ||
			act.Results[0].Breakdown.Entities["key-tag"].Metrics.APIRequests != 3 || act.Results[0].Breakdown.Entities["body-b"].Metrics.APIRequests != 2 ||
			act.Results[0].Breakdown.ModelGroups["priced"] == nil || act.Metadata.TotalAPIRequests != 5 || act.Metadata.Page != 1 || act.Metadata.HasMore {
			t.Errorf("/tag/daily/activity: %+v", act)
		}
		if got := act.Results[0].Breakdown.Entities["key-tag"].Metrics.Spend; fmt.Sprintf("%.9f", got) != fmt.Sprintf("%.9f", total) {
			t.Errorf("/tag/daily/activity key-tag spend %v, rows sum %v", got, total)
		}

		// Stored content (another part fills it) is shown as stored.
		now := time.Now()
		err := e.store.ApplySpend(context.Background(), []store.SpendLog{{RequestID: "stored-1", KeyHash: sha(key), ModelGroup: "gpt-4",
			StartedAt: now, EndedAt: now, Status: 200, RequestTags: []string{"x"},
			Messages: json.RawMessage(`[{"role":"user","content":"[REDACTED]"}]`), Response: json.RawMessage(`{"choices":[{"message":{"content":"ok"}}]}`)}})
		if err != nil {
			t.Fatal(err)
		}
		var one []tagLog
		e.getJSON("/spend/logs?request_id=stored-1", "sk-1234", &one)
		if len(one) != 1 || string(one[0].Messages) != `[{"role":"user","content":"[REDACTED]"}]` || string(one[0].Response) != `{"choices":[{"message":{"content":"ok"}}]}` {
			t.Errorf("stored content: %+v", one)
		}
	})
}

// TestTagReportRoles: tag spend is everyone's together, so only admins and
// admin viewers read it; internal users (and their viewers) get 403.
func TestTagReportRoles(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		keys := map[string]string{"master": "sk-1234"}
		for _, role := range []string{"proxy_admin", "proxy_admin_viewer", "internal_user", "internal_user_viewer"} {
			s, out := e.do("POST", "/user/new", "sk-1234", `{"user_id": "u-`+role+`", "user_role": "`+role+`"}`)
			if s != 200 {
				t.Fatalf("user/new %s: %d %v", role, s, out)
			}
			keys[role] = out["key"].(string)
		}
		today := time.Now().UTC().Format(time.DateOnly)
		paths := []string{"/spend/tags", "/global/spend/tags?start_date=" + today + "&end_date=" + today, "/global/spend/all_tag_names",
			"/tag/daily/activity?start_date=" + today + "&end_date=" + today}
		tests := []struct {
			role string
			want int
		}{
			{"master", 200},
			{"proxy_admin", 200},
			{"proxy_admin_viewer", 200},
			{"internal_user", 403},
			{"internal_user_viewer", 403},
		}
		for _, tt := range tests {
			for _, p := range paths {
				if s, out := e.do("GET", p, keys[tt.role], ""); s != tt.want {
					t.Errorf("%s GET %s: %d %v, want %d", tt.role, p, s, out, tt.want)
				}
			}
		}
	})
}
