package admin

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/url"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tokens"
	"github.com/tollgate/tollgate/internal/usage"
)

func (a *API) registerSpend(mux Mux) {
	mux.Handle("GET /spend/logs", a.route(readOwn, a.spendLogs))
	mux.Handle("GET /global/spend", a.route(readAll, a.globalSpend))
	mux.Handle("GET /global/spend/report", a.route(readAll, a.spendReport))
	mux.Handle("POST /spend/calculate", a.route(readOwn, a.spendCalculate))
}

// reportGroups maps /global/spend/report's group_by to the rollup column and
// the member names of LiteLLM's response.
var reportGroups = map[string]struct{ col, list, name string }{
	"team":     {"team_id", "teams", "team_name"},
	"customer": {"end_user", "customers", "customer"},
	"end_user": {"end_user", "customers", "customer"},
	"api_key":  {"key_hash", "api_keys", "api_key"},
	"user":     {"user_id", "users", "user_id"},
}

// spendReport is spend per day, grouped by team (default), customer (end
// user), api_key or user, with a per-model breakdown, read from the daily
// rollups. start_date and end_date (YYYY-MM-DD, both inclusive) are optional.
// The shape is LiteLLM's:
//
//	[{"group_by_day": "2026-11-01", "teams": [{"team_name": "...", "total_spend": 1.5,
//	  "metadata": [{"model": "gpt-4", "spend": 1.5, "total_tokens": 120, "requests": 3}]}]}]
func (a *API) spendReport(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	groupBy := cmp.Or(q.Get("group_by"), "team")
	g, ok := reportGroups[groupBy]
	if !ok {
		return apierror.BadRequest("group_by", "group_by must be one of team, customer, api_key, user; got %q", groupBy)
	}
	f := store.ReportFilter{GroupBy: g.col, TeamID: q.Get("team_id"), EndUser: q.Get("customer_id"), UserID: q.Get("internal_user_id")}
	if k := q.Get("api_key"); k != "" {
		f.KeyHash = filterHashOf(k)
	}
	var err error
	if f.From, f.To, err = dateRange(q); err != nil {
		return err
	}
	rows, err := a.store.SpendReport(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	type modelSpend struct {
		Model       string  `json:"model"`
		Spend       float64 `json:"spend"`
		TotalTokens int64   `json:"total_tokens"`
		Requests    int64   `json:"requests"`
	}
	out := []map[string]any{}
	var groups []map[string]any
	var day, group string
	for i, row := range rows {
		if i == 0 || row.Day != day {
			day = row.Day
			groups = []map[string]any{}
			out = append(out, map[string]any{"group_by_day": day, g.list: groups})
			group = "\x00"
		}
		if row.Group != group {
			group = row.Group
			entry := map[string]any{g.name: a.groupName(groupBy, group), "total_spend": 0.0, "metadata": []modelSpend{}}
			if groupBy == "team" {
				entry["team_id"] = group
			}
			groups = append(groups, entry)
			out[len(out)-1][g.list] = groups
		}
		entry := groups[len(groups)-1]
		entry["total_spend"] = entry["total_spend"].(float64) + row.Spend
		entry["metadata"] = append(entry["metadata"].([]modelSpend),
			modelSpend{Model: row.Model, Spend: row.Spend, TotalTokens: row.PromptTokens + row.CompletionTokens, Requests: row.Requests})
	}
	return writeJSON(w, out)
}

// groupName is what a report shows for a group: a team's alias, else its id.
func (a *API) groupName(groupBy, id string) string {
	if groupBy == "team" && id != "" {
		if t, ok := a.snap.Team(id); ok && t.TeamAlias != "" {
			return t.TeamAlias
		}
	}
	return id
}

// spendCalculate prices a request or a response without sending anything:
// {"model", "messages"} costs the prompt (counted with the model's
// tokenizer); {"completion_response": {...}} costs its usage (OpenAI or
// Anthropic shaped). The model's deployment overrides apply.
func (a *API) spendCalculate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Model              string          `json:"model"`
		Messages           json.RawMessage `json:"messages"`
		CompletionResponse *struct {
			Model string    `json:"model"`
			Usage *struct { // either shape
				usage.OpenAI
				usage.Anthropic
			} `json:"usage"`
		} `json:"completion_response"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 4<<20))
	if err := dec.Decode(&req); err != nil {
		return apierror.BadRequest("", "body must be a JSON object with model and messages, or completion_response: %v", err)
	}
	var u usage.Usage
	model := req.Model
	switch {
	case req.CompletionResponse != nil:
		cr := req.CompletionResponse
		model = cmp.Or(model, cr.Model)
		if cr.Usage == nil {
			return apierror.BadRequest("completion_response.usage", "completion_response has no usage to price")
		}
		if cr.Usage.InputTokens > 0 || cr.Usage.OutputTokens > 0 {
			u = cr.Usage.Anthropic.Usage()
		} else {
			u = cr.Usage.OpenAI.Usage()
		}
	case len(req.Messages) > 0:
		u.Prompt = tokens.Messages(model, req.Messages)
	default:
		return apierror.BadRequest("messages", "give model and messages, or completion_response")
	}
	if model == "" {
		return apierror.BadRequest("model", "model is required")
	}
	price, ok := a.price(model)
	if !ok {
		return apierror.NotFound("model", "no price is known for model %q", model)
	}
	// prompt_tokens leaves out cache creation, as it always has here.
	return writeJSON(w, map[string]any{"cost": price.Cost(u), "model": model,
		"prompt_tokens": u.Prompt - u.CacheCreation, "completion_tokens": u.Completion})
}

// spendLogs lists spend-log rows, newest first. Filters: api_key (raw key or
// hash), user_id, team_id, end_user, request_id, start_date and end_date
// (YYYY-MM-DD or RFC 3339; end_date is inclusive of its day).
func (a *API) spendLogs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	f := store.SpendFilter{UserID: q.Get("user_id"), TeamID: q.Get("team_id"), EndUser: q.Get("end_user"),
		RequestID: q.Get("request_id"), Page: page(r)}
	if k := q.Get("api_key"); k != "" {
		f.KeyHash = filterHashOf(k)
	}
	var err error
	if f.From, f.To, err = dateRange(q); err != nil {
		return err
	}
	if !seesAll(p) {
		// Non-admins see the spend of their own key, or of their user's keys.
		if p.Key != nil && p.Key.UserID != "" {
			f.UserID = p.Key.UserID
		} else {
			f.KeyHash = p.KeyHash
		}
	}
	logs, total, err := a.store.ListSpendLogs(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	if logs == nil {
		logs = []store.SpendLog{}
	}
	return writeJSON(w, map[string]any{"logs": logs, "total": total})
}

// dateRange reads start_date and end_date (end_date inclusive of its day).
func dateRange(q url.Values) (from, to time.Time, err error) {
	if from, err = parseDate(q.Get("start_date"), false); err != nil {
		return from, to, apierror.BadRequest("start_date", "%v", err)
	}
	if to, err = parseDate(q.Get("end_date"), true); err != nil {
		return from, to, apierror.BadRequest("end_date", "%v", err)
	}
	return from, to, nil
}

func parseDate(s string, endOfDay bool) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	return time.Parse(time.RFC3339, s)
}

// globalSpend is the whole gateway's spend and budget as this replica's
// ledger holds it (booked at once; the store catches up within 100 ms).
func (a *API) globalSpend(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	budget, offset := a.cfg.LiteLLMSettings.MaxBudget, 0.0
	if u, ok := a.snap.User(auth.ProxyBudgetUser); ok { // edited through /user/update
		budget, offset = u.MaxBudget, u.Spend
	}
	spend, err := a.gatewaySpend(r.Context(), offset)
	if err != nil {
		return apierror.Internal(err)
	}
	return writeJSON(w, map[string]any{"spend": spend, "max_budget": budget})
}
