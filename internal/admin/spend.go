package admin

import (
	"cmp"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/tokens"
	"github.com/tollgate/tollgate/internal/usage"
)

func (a *API) registerSpend(mux Mux) {
	mux.Handle("GET /spend/logs", a.route(readOwn, a.spendLogs))
	mux.Handle("GET /global/spend", a.route(readAll, a.globalSpend))
	mux.Handle("GET /global/spend/report", a.route(readAll, a.spendReport))
	mux.Handle("POST /spend/calculate", a.route(readOwn, a.spendCalculate))
	// Tag spend is every caller's together: admins and admin viewers only.
	mux.Handle("GET /spend/tags", a.route(readAll, a.spendTags))
	mux.Handle("GET /global/spend/tags", a.route(readAll, a.globalSpendTags))
	mux.Handle("GET /global/spend/all_tag_names", a.route(readAll, a.allTagNames))
	mux.Handle("GET /tag/daily/activity", a.route(readAll, a.tagDailyActivity))
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

// spendLogs is LiteLLM's /spend/logs: a JSON list of LiteLLM_SpendLogs
// rows, newest first. Filters: request_id (the upstream answer's id, as
// LiteLLM keeps it, or Tollgate's call id), api_key (raw key or hash),
// user_id, and Tollgate's team_id and end_user; start_date and end_date
// (YYYY-MM-DD or RFC 3339; end_date is inclusive of its day). With both
// dates and summarize not false, the answer is LiteLLM's summary per day
// instead (spendSummary). page and size page the rows (Tollgate's; without
// them the newest 1,000). tag (Tollgate's) keeps the rows carrying that
// request tag exactly; model (a model group) and status (success,
// failure or an HTTP status code) are Tollgate's too; each of the three
// always lists rows (the summary's rollups have no tags or statuses).
func (a *API) spendLogs(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	summarize := true
	if v := q.Get("summarize"); v != "" {
		var ok bool
		if summarize, ok = config.QueryFlag(v); !ok {
			return apierror.BadRequest("summarize", "summarize must be true or false; got %q", v)
		}
	}
	f := store.SpendFilter{UserID: q.Get("user_id"), TeamID: q.Get("team_id"), EndUser: q.Get("end_user"),
		RequestID: q.Get("request_id"), Tag: q.Get("tag"), ModelGroup: q.Get("model"), Status: q.Get("status"), Page: page(r)}
	if s := f.Status; s != "" && s != "success" && s != "failure" {
		if n, err := strconv.Atoi(s); err != nil || n < 100 || n > 599 {
			return apierror.BadRequest("status", "status must be success, failure or an HTTP status code; got %q", s)
		}
	}
	if f.Page.Size == 0 {
		f.Page.Size = 1000
	}
	f.ContentBytes = spendLogsContentBytes
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
	if summarize && f.Tag == "" && f.ModelGroup == "" && f.Status == "" && q.Get("start_date") != "" && q.Get("end_date") != "" {
		return a.spendSummary(w, r, f)
	}
	logs, _, err := a.store.ListSpendLogs(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	deps := a.deploymentsByID()
	out := make([]spendLogRow, 0, len(logs))
	for i := range logs {
		out = append(out, litellmSpendLog(&logs[i], deps[logs[i].Deployment]))
	}
	return writeJSON(w, out)
}

// spendLogsContentBytes bounds the stored messages and response one
// /spend/logs answer carries (each row's are capped by max_field_bytes, so
// 1,000 rows could otherwise make an answer of over 100 MB): the rows past
// it come with messages and response {} and content_omitted true, and
// request_id= fetches one of them whole.
const spendLogsContentBytes = 16 << 20

// spendLogRow is one row of /spend/logs: LiteLLM's LiteLLM_SpendLogs
// fields, then Tollgate's own (call_id, http_status, latency_ms, ...).
type spendLogRow struct {
	RequestID           string          `json:"request_id"`
	CallType            string          `json:"call_type"`
	APIKey              string          `json:"api_key"`
	Spend               float64         `json:"spend"`
	TotalTokens         int64           `json:"total_tokens"`
	PromptTokens        int64           `json:"prompt_tokens"`
	CompletionTokens    int64           `json:"completion_tokens"`
	StartTime           time.Time       `json:"startTime"`
	EndTime             time.Time       `json:"endTime"`
	CompletionStartTime *time.Time      `json:"completionStartTime"`
	Model               string          `json:"model"`
	ModelID             string          `json:"model_id"`
	ModelGroup          string          `json:"model_group"`
	CustomLLMProvider   string          `json:"custom_llm_provider"`
	APIBase             string          `json:"api_base"`
	User                string          `json:"user"`
	TeamID              string          `json:"team_id"`
	EndUser             string          `json:"end_user"`
	Metadata            map[string]any  `json:"metadata"`
	CacheHit            string          `json:"cache_hit"`
	CacheKey            string          `json:"cache_key"`
	RequestTags         []string        `json:"request_tags"`
	RequesterIP         *string         `json:"requester_ip_address"`
	Messages            json.RawMessage `json:"messages"`
	Response            json.RawMessage `json:"response"`
	Status              string          `json:"status"`

	CallID                   string `json:"call_id"`
	HTTPStatus               int    `json:"http_status"`
	LatencyMS                int64  `json:"latency_ms"`
	CachedTokens             int64  `json:"cached_tokens"`
	ReportedPromptTokens     int64  `json:"reported_prompt_tokens"`
	ReportedCompletionTokens int64  `json:"reported_completion_tokens"`
	UsageClamped             bool   `json:"usage_clamped"`
	UsageEstimated           bool   `json:"usage_estimated"`
	// SavedCost is what a cache hit would have cost at its deployment's
	// price (LiteLLM's saved_cache_cost); 0 for every other row.
	SavedCost float64 `json:"saved_cache_cost"`
	// ContentOmitted: messages and response were left out of this row to
	// keep the answer within spendLogsContentBytes.
	ContentOmitted bool `json:"content_omitted,omitempty"`

	// Guardrails is what the guardrails did ([] when none ran).
	Guardrails json.RawMessage `json:"guardrails"`
}

// litellmSpendLog shapes a stored row as LiteLLM does. request_id is the
// upstream answer's id when it had one (LiteLLM's), else the call id; model
// and api_base come from the deployment when it is still served. The
// request's own metadata goes into metadata as LiteLLM files it: its
// spend_logs_metadata member as spend_logs_metadata, and (Tollgate's, the
// name LiteLLM's logging payload uses) the whole object as
// requester_metadata. messages and response are {} unless stored.
func litellmSpendLog(l *store.SpendLog, d *config.Deployment) spendLogRow {
	status := "success"
	if l.Status >= 400 || l.Status == 0 {
		status = "failure"
	}
	row := spendLogRow{
		RequestID: cmp.Or(l.ResponseID, l.RequestID), CallType: l.CallType, APIKey: l.KeyHash,
		Spend: l.Cost, TotalTokens: l.PromptTokens + l.CompletionTokens, PromptTokens: l.PromptTokens, CompletionTokens: l.CompletionTokens,
		StartTime: l.StartedAt.UTC(), EndTime: l.EndedAt.UTC(), Model: l.ModelGroup, ModelID: l.Deployment, ModelGroup: l.ModelGroup,
		CustomLLMProvider: l.Provider, User: l.UserID, TeamID: l.TeamID, EndUser: l.EndUser,
		Metadata: map[string]any{"user_api_key": l.KeyHash, "user_api_key_user_id": l.UserID, "user_api_key_team_id": l.TeamID,
			"status": status, "tollgate_call_id": l.RequestID},
		CacheHit: "False", CacheKey: l.CacheKey, SavedCost: l.SavedCost, RequestTags: l.RequestTags, Messages: l.Messages, Response: l.Response, Status: status,
		CallID: l.RequestID, HTTPStatus: l.Status, LatencyMS: l.LatencyMS, CachedTokens: l.CachedTokens,
		ReportedPromptTokens: l.ReportedPromptTokens, ReportedCompletionTokens: l.ReportedCompletionTokens,
		UsageClamped: l.UsageClamped, UsageEstimated: l.UsageEstimated, ContentOmitted: l.ContentOmitted,
	}
	if row.RequestTags == nil {
		row.RequestTags = []string{}
	}
	if l.CacheHit {
		row.CacheHit = "True"
	}
	if row.Guardrails = l.Guardrails; len(row.Guardrails) == 0 {
		row.Guardrails = json.RawMessage("[]")
	}
	if len(row.Messages) == 0 {
		row.Messages = emptyObject
	}
	if len(row.Response) == 0 {
		row.Response = emptyObject
	}
	if l.ErrorInformation != nil {
		row.Metadata["error_information"] = l.ErrorInformation
	}
	if l.Metadata != nil {
		row.Metadata["requester_metadata"] = l.Metadata
		if v, ok := l.Metadata["spend_logs_metadata"]; ok {
			row.Metadata["spend_logs_metadata"] = v
		}
	}
	if d != nil {
		if d.Model != "" {
			row.Model = d.Model
		}
		row.APIBase = provider.ShownBase(d.APIBase)
	}
	return row
}

var emptyObject = json.RawMessage(`{}`)

// deploymentsByID are the deployments served now, by id (none without the
// model API).
func (a *API) deploymentsByID() map[string]*config.Deployment {
	m := map[string]*config.Deployment{}
	if a.models == nil {
		return m
	}
	deps, _ := a.models.Deployments()
	for i := range deps {
		m[deps[i].ID] = &deps[i]
	}
	return m
}

// spendSummary is /spend/logs with start_date and end_date: LiteLLM's
// summary, one entry per day from the first day with spend to end_date,
//
//	[{"startTime": "2026-11-01", "spend": 1.5, "users": {"u1": 1.5},
//	  "models": {"gpt-4": 1.5}, "<key hash>": 1.5}]
//
// read from the daily rollups (models are model groups). request_id is not
// applied to a summary (rollups have no request).
func (a *API) spendSummary(w http.ResponseWriter, r *http.Request, f store.SpendFilter) error {
	rf := store.ReportFilter{From: f.From, To: f.To, KeyHash: f.KeyHash, UserID: f.UserID, TeamID: f.TeamID, EndUser: f.EndUser}
	rf.GroupBy = "key_hash"
	byKey, err := a.store.SpendReport(r.Context(), rf)
	if err != nil {
		return apierror.Internal(err)
	}
	rf.GroupBy = "user_id"
	byUser, err := a.store.SpendReport(r.Context(), rf)
	if err != nil {
		return apierror.Internal(err)
	}
	days := map[string]map[string]any{}
	var order []string
	day := func(d string) map[string]any {
		e, ok := days[d]
		if !ok {
			e = map[string]any{"startTime": d, "spend": 0.0, "users": map[string]float64{}, "models": map[string]float64{}}
			days[d] = e
			order = append(order, d)
		}
		return e
	}
	for _, row := range byKey {
		e := day(row.Day)
		e["spend"] = e["spend"].(float64) + row.Spend
		e["models"].(map[string]float64)[row.Model] += row.Spend
		v, _ := e[row.Group].(float64)
		e[row.Group] = v + row.Spend
	}
	for _, row := range byUser {
		day(row.Day)["users"].(map[string]float64)[row.Group] += row.Spend
	}
	slices.Sort(order)
	out := make([]map[string]any, 0, len(order))
	for _, d := range order {
		out = append(out, days[d])
	}
	if len(order) > 0 {
		last, _ := time.Parse(time.DateOnly, order[len(order)-1])
		for d := last.AddDate(0, 0, 1); d.Before(f.To); d = d.AddDate(0, 0, 1) {
			out = append(out, map[string]any{"startTime": d.Format(time.DateOnly), "spend": 0.0, "users": map[string]float64{}, "models": map[string]float64{}})
		}
	}
	return writeJSON(w, out)
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

// maxReportTags bounds the tags one report may name.
const maxReportTags = 100

// tagReport reads the tag rollups for start_date..end_date (inclusive; both
// optional unless required) and the comma-separated tags (none, or
// LiteLLM's "all-tags" among them: every tag), summed per tag and sorted by
// spend, highest first (then by tag).
func (a *API) tagReport(r *http.Request, datesRequired bool) ([]tagTotal, error) {
	q := r.URL.Query()
	if datesRequired && (q.Get("start_date") == "" || q.Get("end_date") == "") {
		return nil, apierror.BadRequest("start_date", "start_date and end_date are required (YYYY-MM-DD)")
	}
	var f store.TagFilter
	var err error
	if f.From, f.To, err = dateRange(q); err != nil {
		return nil, err
	}
	if v := q.Get("tags"); v != "" {
		for t := range strings.SplitSeq(v, ",") {
			if t = strings.TrimSpace(t); t == "all-tags" {
				f.Tags = nil
				break
			} else if t != "" && !slices.Contains(f.Tags, t) {
				f.Tags = append(f.Tags, t)
			}
		}
		if len(f.Tags) > maxReportTags {
			return nil, apierror.BadRequest("tags", "at most %d tags; got %d", maxReportTags, len(f.Tags))
		}
	}
	rows, err := a.store.TagReport(r.Context(), f)
	if err != nil {
		return nil, apierror.Internal(err)
	}
	at := map[string]int{}
	var out []tagTotal
	for _, row := range rows {
		i, ok := at[row.Tag]
		if !ok {
			i = len(out)
			at[row.Tag] = i
			out = append(out, tagTotal{Tag: row.Tag})
		}
		t := &out[i]
		t.Requests += row.Requests
		t.PromptTokens += row.PromptTokens
		t.CompletionTokens += row.CompletionTokens
		t.Spend += row.Spend
	}
	slices.SortFunc(out, func(a, b tagTotal) int {
		return cmp.Or(cmp.Compare(b.Spend, a.Spend), cmp.Compare(a.Tag, b.Tag))
	})
	return out, nil
}

// tagTotal is one tag's spend over a report's days.
type tagTotal struct {
	Tag                                      string
	Requests, PromptTokens, CompletionTokens int64
	Spend                                    float64
}

// spendTags is LiteLLM's /spend/tags: every tag's request count and spend,
// highest spend first, from the daily tag rollups:
//
//	[{"individual_request_tag": "prod", "log_count": 6, "total_spend": 0.0007}]
//
// start_date and end_date (YYYY-MM-DD, inclusive) are optional. A request
// with several tags counts under each.
func (a *API) spendTags(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	tags, err := a.tagReport(r, false)
	if err != nil {
		return err
	}
	type row struct {
		Tag      string  `json:"individual_request_tag"`
		LogCount int64   `json:"log_count"`
		Spend    float64 `json:"total_spend"`
	}
	out := make([]row, 0, len(tags))
	for _, t := range tags {
		out = append(out, row{t.Tag, t.Requests, t.Spend})
	}
	return writeJSON(w, out)
}

// globalSpendTags is LiteLLM's /global/spend/tags (what its UI charts):
// start_date and end_date required, tags optional (comma-separated;
// "all-tags" or none: every tag),
//
//	{"spend_per_tag": [{"name": "prod", "spend": 0.0007, "log_count": 6, ...}]}
//
// highest spend first. Tollgate adds the tokens.
func (a *API) globalSpendTags(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	tags, err := a.tagReport(r, true)
	if err != nil {
		return err
	}
	type row struct {
		Name             string  `json:"name"`
		Spend            float64 `json:"spend"`
		LogCount         int64   `json:"log_count"`
		PromptTokens     int64   `json:"prompt_tokens"`
		CompletionTokens int64   `json:"completion_tokens"`
		TotalTokens      int64   `json:"total_tokens"`
	}
	out := make([]row, 0, len(tags))
	for _, t := range tags {
		out = append(out, row{t.Tag, t.Spend, t.Requests, t.PromptTokens, t.CompletionTokens, t.PromptTokens + t.CompletionTokens})
	}
	return writeJSON(w, map[string]any{"spend_per_tag": out})
}

// allTagNames is LiteLLM's /global/spend/all_tag_names: every tag that has
// spend, {"tag_names": [...]}, sorted.
func (a *API) allTagNames(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	tags, err := a.tagReport(r, false)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(tags))
	for _, t := range tags {
		names = append(names, t.Tag)
	}
	slices.Sort(names)
	return writeJSON(w, map[string]any{"tag_names": names})
}

// spendMetrics are LiteLLM's SpendMetrics. The tag rollup keeps no cache
// token counts: those are 0.
type spendMetrics struct {
	Spend                    float64 `json:"spend"`
	PromptTokens             int64   `json:"prompt_tokens"`
	CompletionTokens         int64   `json:"completion_tokens"`
	TotalTokens              int64   `json:"total_tokens"`
	APIRequests              int64   `json:"api_requests"`
	SuccessfulRequests       int64   `json:"successful_requests"`
	FailedRequests           int64   `json:"failed_requests"`
	CacheReadInputTokens     int64   `json:"cache_read_input_tokens"`
	CacheCreationInputTokens int64   `json:"cache_creation_input_tokens"`
}

func (m *spendMetrics) add(r *store.TagRow) {
	m.Spend += r.Spend
	m.PromptTokens += r.PromptTokens
	m.CompletionTokens += r.CompletionTokens
	m.TotalTokens += r.PromptTokens + r.CompletionTokens
	m.APIRequests += r.Requests
	m.SuccessfulRequests += r.Requests - r.FailedRequests
	m.FailedRequests += r.FailedRequests
}

type metricsWithMetadata struct {
	Metrics  spendMetrics   `json:"metrics"`
	Metadata map[string]any `json:"metadata"`
}

// tagDailyActivity is LiteLLM's /tag/daily/activity: per day (newest
// first), the tags' spend with a breakdown by model group and by tag
// (entities), in LiteLLM's SpendAnalyticsPaginatedResponse shape:
//
//	{"results": [{"date": "2026-11-01", "metrics": {...}, "breakdown": {"models": {...},
//	  "model_groups": {...}, "providers": {}, "api_keys": {}, "entities": {"prod": {"metrics": {...}}}}}],
//	 "metadata": {"total_spend", ..., "page", "total_pages", "has_more"}}
//
// start_date and end_date are required; tags (comma-separated) and model
// (a model group) narrow it; page and page_size page the days (default 10
// days a page, at most 1,000). A request with several tags counts under
// each, in the day's metrics too, as LiteLLM's tag table does.
func (a *API) tagDailyActivity(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	if q.Get("start_date") == "" || q.Get("end_date") == "" {
		return apierror.BadRequest("start_date", "start_date and end_date are required (YYYY-MM-DD)")
	}
	var f store.TagFilter
	var err error
	if f.From, f.To, err = dateRange(q); err != nil {
		return err
	}
	for t := range strings.SplitSeq(q.Get("tags"), ",") {
		if t = strings.TrimSpace(t); t != "" && !slices.Contains(f.Tags, t) {
			f.Tags = append(f.Tags, t)
		}
	}
	if len(f.Tags) > maxReportTags {
		return apierror.BadRequest("tags", "at most %d tags; got %d", maxReportTags, len(f.Tags))
	}
	pageN, size := 1, 10
	for _, v := range []struct {
		name string
		to   *int
		max  int
	}{{"page", &pageN, 1 << 30}, {"page_size", &size, 1000}} {
		if s := q.Get(v.name); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > v.max {
				return apierror.BadRequest(v.name, "%s must be an integer from 1 to %d; got %q", v.name, v.max, s)
			}
			*v.to = n
		}
	}
	rows, err := a.store.TagReport(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	model := q.Get("model")
	type breakdown struct {
		Models      map[string]*metricsWithMetadata `json:"models"`
		ModelGroups map[string]*metricsWithMetadata `json:"model_groups"`
		Providers   map[string]*metricsWithMetadata `json:"providers"`
		APIKeys     map[string]*metricsWithMetadata `json:"api_keys"`
		Entities    map[string]*metricsWithMetadata `json:"entities"`
	}
	type day struct {
		Date      string       `json:"date"`
		Metrics   spendMetrics `json:"metrics"`
		Breakdown breakdown    `json:"breakdown"`
	}
	var days []*day
	var total spendMetrics
	entry := func(m map[string]*metricsWithMetadata, k string) *spendMetrics {
		e := m[k]
		if e == nil {
			e = &metricsWithMetadata{Metadata: map[string]any{}}
			m[k] = e
		}
		return &e.Metrics
	}
	for i := range rows {
		row := &rows[i]
		if model != "" && row.Model != model {
			continue
		}
		if len(days) == 0 || days[len(days)-1].Date != row.Day {
			days = append(days, &day{Date: row.Day, Breakdown: breakdown{Models: map[string]*metricsWithMetadata{}, ModelGroups: map[string]*metricsWithMetadata{},
				Providers: map[string]*metricsWithMetadata{}, APIKeys: map[string]*metricsWithMetadata{}, Entities: map[string]*metricsWithMetadata{}}})
		}
		d := days[len(days)-1]
		d.Metrics.add(row)
		total.add(row)
		entry(d.Breakdown.Models, row.Model).add(row)
		entry(d.Breakdown.ModelGroups, row.Model).add(row)
		entry(d.Breakdown.Entities, row.Tag).add(row)
	}
	slices.Reverse(days) // newest first
	pages := max(1, (len(days)+size-1)/size)
	start := min((pageN-1)*size, len(days))
	results := days[start:min(start+size, len(days))]
	if results == nil {
		results = []*day{}
	}
	return writeJSON(w, map[string]any{"results": results, "metadata": map[string]any{
		"total_spend": total.Spend, "total_prompt_tokens": total.PromptTokens, "total_completion_tokens": total.CompletionTokens,
		"total_tokens": total.TotalTokens, "total_api_requests": total.APIRequests, "total_successful_requests": total.SuccessfulRequests,
		"total_failed_requests": total.FailedRequests, "total_cache_read_input_tokens": 0, "total_cache_creation_input_tokens": 0,
		"page": pageN, "total_pages": pages, "has_more": pageN < pages,
	}})
}
