// Package openapi is the gateway's OpenAPI 3.1 description, built in Go so
// that it lives next to the routes it describes, and the offline docs page
// that renders it. The server's tests fail when a registered route is
// missing from it, and validate real requests and responses against it.
package openapi

import (
	"encoding/json"
	"sort"
	"strings"
)

type obj = map[string]any

func ref(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func arr(items any) obj { return obj{"type": "array", "items": items} }

func str(desc string) obj { return obj{"type": "string", "description": desc} }

var (
	num     = obj{"type": "number"}
	integer = obj{"type": "integer"}
	boolean = obj{"type": "boolean"}
	anyObj  = obj{"type": "object", "additionalProperties": true}
	nullStr = obj{"type": []string{"string", "null"}}
	nullNum = obj{"type": []string{"number", "null"}}
	nullInt = obj{"type": []string{"integer", "null"}}
)

// object is an open object schema (clients and upstreams add fields).
func object(required []string, props obj) obj {
	o := obj{"type": "object", "properties": props, "additionalProperties": true}
	if len(required) > 0 {
		o["required"] = required
	}
	return o
}

func jsonBody(schema any) obj {
	return obj{"required": true, "content": obj{"application/json": obj{"schema": schema}}}
}

func jsonResp(desc string, schema any) obj {
	return obj{"description": desc, "content": obj{"application/json": obj{"schema": schema}}}
}

// op is one operation. Every operation answers errors in the OpenAI shape
// (the Anthropic shape on /v1/messages), declared as the default response.
type op struct {
	method, path, tag, summary string
	body                       any
	params                     []obj
	ok                         obj
	stream                     bool // 200 may also be text/event-stream
	anthropic                  bool
	public                     bool // no key needed
	form                       bool // the body is multipart/form-data
	jsonAlt                    any  // a form's body may also be this JSON schema
}

func query(name, desc string, required bool) obj {
	return obj{"name": name, "in": "query", "required": required, "schema": obj{"type": "string"}, "description": desc}
}

func path(name string) obj {
	return obj{"name": name, "in": "path", "required": true, "schema": obj{"type": "string"}}
}

func operations() []op {
	keyInfo := []obj{query("key", "the raw key or its sha256 hash", false)}
	page := []obj{query("page", "page number, from 1", false), query("size", "page size, at most 1000", false)}
	chat := op{tag: "inference", summary: "Chat completion (OpenAI API); `stream: true` answers server-sent events",
		body: ref("ChatCompletionRequest"), ok: jsonResp("the completion", ref("ChatCompletion")), stream: true}
	comp := op{tag: "inference", summary: "Text completion (OpenAI API)", body: ref("CompletionRequest"), ok: jsonResp("the completion", anyObj), stream: true}
	emb := op{tag: "inference", summary: "Embeddings (OpenAI API)", body: ref("EmbeddingRequest"), ok: jsonResp("the embeddings", ref("EmbeddingList"))}
	models := op{tag: "inference", summary: "Models the caller's key may use, with LiteLLM's filters", ok: jsonResp("the models", ref("ModelList")),
		params: []obj{query("team_id", "that team's models (admins: any team; others: their key's team)", false),
			query("include_model_access_groups", "true: list the access groups too", false), query("only_model_access_groups", "true: list only the access groups", false),
			query("return_wildcard_routes", "true: list wildcard routes (openai/*) beside the models they match", false),
			query("include_metadata", "true: each model gets metadata.fallbacks", false), query("fallback_type", "general (default), context_window or content_policy", false),
			query("scope", "expand: a proxy admin sees every model", false)}}
	var ops []op
	for _, prefix := range []string{"/v1", ""} {
		for _, o := range []struct {
			op
			p string
		}{{chat, "/chat/completions"}, {comp, "/completions"}, {emb, "/embeddings"}} {
			x := o.op
			x.method, x.path = "POST", prefix+o.p
			ops = append(ops, x)
		}
		m := models
		m.method, m.path = "GET", prefix+"/models"
		ops = append(ops, m)
	}
	ops = append(ops, responsesOperations()...)
	for _, o := range []struct {
		op
		p string
	}{{chat, "/chat/completions"}, {comp, "/completions"}, {emb, "/embeddings"}} {
		x := o.op
		x.method, x.path, x.params = "POST", "/openai/deployments/{model}"+o.p, []obj{path("model")}
		x.summary += " — Azure OpenAI style, the model in the path"
		x.body = anyObj // the model comes from the path
		ops = append(ops, x)
	}
	// Moderations and rerank, passed through to the deployments serving them.
	moderation := op{tag: "inference", summary: "Classify text (OpenAI moderations); without a model, the configured moderation model answers",
		body: ref("ModerationRequest"), ok: jsonResp("one result per input", ref("Moderation"))}
	rerank := op{tag: "inference", summary: "Rerank documents against a query (Cohere's body), booked per search unit or token",
		body: ref("RerankRequest"), ok: jsonResp("the documents' scores, best first", ref("Rerank"))}
	for _, p := range []string{"/v1/moderations", "/moderations"} {
		x := moderation
		x.method, x.path = "POST", p
		ops = append(ops, x)
	}
	for _, p := range []string{"/v1/rerank", "/rerank", "/v2/rerank"} {
		x := rerank
		x.method, x.path = "POST", p
		ops = append(ops, x)
	}
	ops = append(ops, passThroughOps()...)
	ops = append(ops,
		op{method: "POST", path: "/v1/messages", tag: "inference", summary: "Anthropic Messages API, routed to any deployment", body: ref("MessagesRequest"),
			ok: jsonResp("the message", ref("Message")), stream: true, anthropic: true},
		op{method: "POST", path: "/v1/messages/count_tokens", tag: "inference", summary: "Count a Messages request's input tokens, locally",
			body: ref("MessagesRequest"), ok: jsonResp("the count", object([]string{"input_tokens"}, obj{"input_tokens": integer})), anthropic: true},

		op{method: "GET", path: "/health", tag: "health", summary: "Check every deployment (master key or admin)", ok: jsonResp("the report", ref("HealthReport"))},
		op{method: "GET", path: "/health/liveliness", tag: "health", summary: "The process is up", ok: jsonResp("alive", nullStr), public: true},
		op{method: "GET", path: "/health/liveness", tag: "health", summary: "The process is up", ok: jsonResp("alive", nullStr), public: true},
		op{method: "GET", path: "/health/readiness", tag: "health", summary: "The database answers (LiteLLM's readiness shape)", ok: jsonResp("ready", ref("Readiness")), public: true},
		op{method: "GET", path: "/health/readiness/details", tag: "health", summary: "The same, for any key (LiteLLM's authenticated form)", ok: jsonResp("ready", ref("Readiness"))},
		op{method: "GET", path: "/routes", tag: "health", summary: "Every route this server serves (LiteLLM's shape)", ok: jsonResp("the routes", object([]string{"routes"}, obj{"routes": arr(object([]string{"path", "methods"},
			obj{"path": str(""), "methods": arr(str("")), "name": str(""), "endpoint": str("")}))}))},
		op{method: "GET", path: "/model_group/info", tag: "models", summary: "LiteLLM's ModelGroupInfo for each model group the caller may use", params: []obj{query("model_group", "only this group", false)},
			ok: jsonResp("the groups", object([]string{"data"}, obj{"data": arr(object([]string{"model_group", "providers", "mode"}, obj{"model_group": str(""), "providers": arr(str("")),
				"max_input_tokens": nullNum, "max_output_tokens": nullNum, "input_cost_per_token": nullNum, "output_cost_per_token": nullNum, "mode": str(""), "tpm": nullNum, "rpm": nullNum,
				"supports_function_calling": boolean, "supports_vision": boolean, "supported_openai_params": arr(str(""))}))}))},
		op{method: "GET", path: "/guardrails/list", tag: "models", summary: "The configured guardrails (LiteLLM's shape; active is false for a kind Tollgate does not serve), for any valid key",
			ok: jsonResp("the guardrails", object([]string{"guardrails"}, obj{"guardrails": arr(object([]string{"guardrail_name", "litellm_params", "active"},
				obj{"guardrail_name": str(""), "litellm_params": anyObj, "guardrail_info": anyObj, "active": boolean}))}))},
		op{method: "GET", path: "/metrics", tag: "health", summary: "Prometheus metrics (the master key or an admin's key when require_auth_for_metrics_endpoint)",
			ok: obj{"description": "Prometheus text", "content": obj{"text/plain": obj{"schema": obj{"type": "string"}}}}, public: true},
		op{method: "GET", path: "/openapi.json", tag: "docs", summary: "This document", ok: jsonResp("the document", anyObj), public: true},
		op{method: "GET", path: "/", tag: "docs", summary: "Interactive API docs", ok: obj{"description": "HTML", "content": obj{"text/html": obj{"schema": obj{"type": "string"}}}}, public: true},
		op{method: "GET", path: "/ui/", tag: "docs", summary: "The admin web UI (its files live under /ui/)", ok: obj{"description": "HTML, JS and CSS", "content": obj{"text/html": obj{"schema": obj{"type": "string"}}}}, public: true},
		op{method: "GET", path: "/ui", tag: "docs", summary: "Redirects to /ui/", ok: obj{"description": "the UI", "content": obj{"text/html": obj{"schema": obj{"type": "string"}}}}, public: true},
		op{method: "GET", path: "/docs", tag: "docs", summary: "Interactive API docs", ok: obj{"description": "HTML", "content": obj{"text/html": obj{"schema": obj{"type": "string"}}}}, public: true},

		op{method: "POST", path: "/key/generate", tag: "keys", summary: "Create a virtual key", body: ref("KeyRequest"), ok: jsonResp("the key, shown once", ref("KeyCreated"))},
		op{method: "GET", path: "/key/info", tag: "keys", summary: "A key's record and spend", params: keyInfo, ok: jsonResp("the key", object([]string{"info"}, obj{"key": str("the hash"), "info": ref("Key")}))},
		op{method: "POST", path: "/key/update", tag: "keys", summary: "Change a key", body: ref("KeyRequest"), ok: jsonResp("the key", ref("Key"))},
		op{method: "POST", path: "/key/delete", tag: "keys", summary: "Delete keys by key or alias", body: object(nil, obj{"keys": arr(str("")), "key_aliases": arr(str(""))}), ok: jsonResp("the deleted keys", object(nil, obj{"deleted_keys": arr(str(""))}))},
		op{method: "GET", path: "/key/list", tag: "keys", summary: "Keys, paged and filtered", params: append(page, query("user_id", "", false), query("team_id", "", false), query("key_alias", "", false), query("return_full_object", "", false)),
			ok: jsonResp("the keys", object([]string{"keys"}, obj{"keys": arr(obj{}), "total_count": integer, "current_page": integer, "total_pages": integer}))},
		op{method: "POST", path: "/key/regenerate", tag: "keys", summary: "Replace a key's secret, keeping its record", body: ref("KeyRequest"), ok: jsonResp("the new key", ref("KeyCreated"))},
		op{method: "POST", path: "/key/{key}/regenerate", tag: "keys", summary: "Replace a key's secret (key in the path)", params: []obj{path("key")}, body: anyObj, ok: jsonResp("the new key", ref("KeyCreated"))},
		op{method: "POST", path: "/key/block", tag: "keys", summary: "Block a key", body: object([]string{"key"}, obj{"key": str("")}), ok: jsonResp("the key", ref("Key"))},
		op{method: "POST", path: "/key/unblock", tag: "keys", summary: "Unblock a key", body: object([]string{"key"}, obj{"key": str("")}), ok: jsonResp("the key", ref("Key"))},

		op{method: "POST", path: "/user/new", tag: "users", summary: "Create a user (and a key for it)", body: ref("Entity"), ok: jsonResp("the user and its key", anyObj)},
		op{method: "GET", path: "/user/info", tag: "users", summary: "A user, its keys and teams", params: []obj{query("user_id", "", false)}, ok: jsonResp("the user", anyObj)},
		op{method: "POST", path: "/user/update", tag: "users", summary: "Change a user (an unknown user_id creates her)", body: ref("Entity"), ok: jsonResp("the user", anyObj)},
		op{method: "POST", path: "/user/delete", tag: "users", summary: "Delete users", body: object(nil, obj{"user_ids": arr(str(""))}), ok: jsonResp("done", anyObj)},
		op{method: "GET", path: "/user/list", tag: "users", summary: "Users, paged", params: page, ok: jsonResp("the users", anyObj)},

		op{method: "POST", path: "/team/new", tag: "teams", summary: "Create a team", body: ref("Entity"), ok: jsonResp("the team", anyObj)},
		op{method: "GET", path: "/team/info", tag: "teams", summary: "A team, its members and keys", params: []obj{query("team_id", "", true)}, ok: jsonResp("the team", anyObj)},
		op{method: "POST", path: "/team/update", tag: "teams", summary: "Change a team", body: ref("Entity"), ok: jsonResp("the team", anyObj)},
		op{method: "POST", path: "/team/delete", tag: "teams", summary: "Delete teams", body: object(nil, obj{"team_ids": arr(str(""))}), ok: jsonResp("done", anyObj)},
		op{method: "GET", path: "/team/list", tag: "teams", summary: "Teams", ok: jsonResp("the teams", obj{"type": []string{"array", "object"}})},
		op{method: "POST", path: "/team/block", tag: "teams", summary: "Block a team (and its keys)", body: object([]string{"team_id"}, obj{"team_id": str("")}), ok: jsonResp("the team", anyObj)},
		op{method: "POST", path: "/team/unblock", tag: "teams", summary: "Unblock a team", body: object([]string{"team_id"}, obj{"team_id": str("")}), ok: jsonResp("the team", anyObj)},
		op{method: "POST", path: "/team/member_add", tag: "teams", summary: "Add members (by user_id or user_email)", body: object([]string{"team_id"}, obj{"team_id": str(""), "member": obj{}, "max_budget_in_team": nullNum}), ok: jsonResp("the team, with updated_users and updated_team_memberships", anyObj)},
		op{method: "POST", path: "/team/member_update", tag: "teams", summary: "Change a member's role or budget in the team", body: object([]string{"team_id"}, obj{"team_id": str(""), "user_id": str(""), "user_email": str(""), "role": str("admin or user"), "max_budget_in_team": nullNum}),
			ok: jsonResp("the member", object([]string{"team_id", "user_id"}, obj{"team_id": str(""), "user_id": str(""), "user_email": nullStr, "max_budget_in_team": nullNum}))},
		op{method: "POST", path: "/team/member_delete", tag: "teams", summary: "Remove a member (a non-member is a 400)", body: object([]string{"team_id"}, obj{"team_id": str(""), "user_id": str(""), "user_email": str("")}), ok: jsonResp("the team", anyObj)},

		op{method: "GET", path: "/cache/ping", tag: "cache", summary: "Whether the response cache answers (proxy_admin, proxy_admin_viewer); 503 when it is off or down", ok: jsonResp("healthy", object([]string{"status", "cache_type"}, obj{"status": str("healthy"), "cache_type": str("local or redis"), "ping_response": boolean}))},
		op{method: "POST", path: "/cache/delete", tag: "cache", summary: "Delete cached answers by key (x-litellm-cache-key; proxy_admin)", body: object([]string{"keys"}, obj{"keys": arr(str(""))}), ok: jsonResp("done", object([]string{"status"}, obj{"status": str("success")}))},
		op{method: "POST", path: "/cache/flushall", tag: "cache", summary: "Delete every cached answer (proxy_admin)", ok: jsonResp("done", object([]string{"status"}, obj{"status": str("success")}))},
		op{method: "GET", path: "/audit/list", tag: "spend", summary: "Management writes, newest first", params: page, ok: jsonResp("the audit log", anyObj)},
		op{method: "GET", path: "/spend/logs", tag: "spend", summary: "Spend-log rows, newest first, as LiteLLM_SpendLogs (a summary per day with start_date, end_date and summarize)", params: append(page, query("api_key", "", false), query("user_id", "", false), query("team_id", "", false),
			query("end_user", "", false), query("request_id", "the upstream answer's id (chatcmpl-..., msg_...) or Tollgate's call id", false), query("start_date", "YYYY-MM-DD or RFC 3339", false), query("end_date", "YYYY-MM-DD (inclusive) or RFC 3339", false),
			query("summarize", "with both dates: true (default) answers LiteLLM's per-day summary, false the rows", false),
			query("tag", "Tollgate's: only rows carrying this request tag (exactly); always lists rows", false),
			query("model", "Tollgate's: only rows of this model group; always lists rows", false),
			query("status", "Tollgate's: success (HTTP status below 400), failure, or one HTTP status code; always lists rows", false)),
			ok: jsonResp("the rows, or the summary per day", obj{"anyOf": []any{arr(ref("SpendLog")), arr(ref("SpendSummaryDay"))}})},
		op{method: "GET", path: "/global/spend", tag: "spend", summary: "The gateway's spend and budget", ok: jsonResp("spend", object([]string{"spend"}, obj{"spend": num, "max_budget": nullNum}))},
		op{method: "GET", path: "/global/spend/report", tag: "spend", summary: "Spend per day, grouped", params: []obj{query("start_date", "", false), query("end_date", "", false),
			query("group_by", "team (default), customer, api_key or user", false), query("team_id", "", false), query("customer_id", "", false), query("api_key", "", false), query("internal_user_id", "", false)},
			ok: jsonResp("per day", arr(object([]string{"group_by_day"}, obj{"group_by_day": str("YYYY-MM-DD")})))},
		op{method: "GET", path: "/spend/tags", tag: "spend", summary: "Spend per request tag, highest first (admins and admin viewers)", params: []obj{query("start_date", "YYYY-MM-DD", false), query("end_date", "YYYY-MM-DD (inclusive)", false)},
			ok: jsonResp("per tag", arr(object([]string{"individual_request_tag", "log_count", "total_spend"}, obj{"individual_request_tag": str(""), "log_count": integer, "total_spend": num})))},
		op{method: "GET", path: "/global/spend/tags", tag: "spend", summary: "Spend per request tag for a date range, highest first (admins and admin viewers)",
			params: []obj{query("start_date", "YYYY-MM-DD", true), query("end_date", "YYYY-MM-DD (inclusive)", true), query("tags", "comma-separated; none or all-tags: every tag", false)},
			ok: jsonResp("per tag", object([]string{"spend_per_tag"}, obj{"spend_per_tag": arr(object([]string{"name", "spend", "log_count"},
				obj{"name": str("the tag"), "spend": num, "log_count": integer, "prompt_tokens": integer, "completion_tokens": integer, "total_tokens": integer}))}))},
		op{method: "GET", path: "/tag/daily/activity", tag: "spend", summary: "Tag spend per day with breakdowns by model group and tag, newest first (admins and admin viewers)",
			params: []obj{query("start_date", "YYYY-MM-DD", true), query("end_date", "YYYY-MM-DD (inclusive)", true), query("tags", "comma-separated; none: every tag", false),
				query("model", "a model group", false), query("page", "", false), query("page_size", "days a page (default 10, at most 1000)", false)},
			ok: jsonResp("LiteLLM's SpendAnalyticsPaginatedResponse", object([]string{"results", "metadata"}, obj{"results": arr(object([]string{"date", "metrics", "breakdown"},
				obj{"date": str("YYYY-MM-DD"), "metrics": anyObj, "breakdown": anyObj})), "metadata": anyObj}))},
		op{method: "GET", path: "/global/spend/all_tag_names", tag: "spend", summary: "Every request tag with spend (admins and admin viewers)",
			ok: jsonResp("the tags", object([]string{"tag_names"}, obj{"tag_names": arr(str(""))}))},
		op{method: "POST", path: "/spend/calculate", tag: "spend", summary: "Price a request or a response", body: object(nil, obj{"model": str(""), "messages": arr(anyObj), "completion_response": anyObj}),
			ok: jsonResp("the cost", object([]string{"cost"}, obj{"cost": num, "model": str(""), "prompt_tokens": integer, "completion_tokens": integer}))},

		op{method: "POST", path: "/model/new", tag: "models", summary: "Add a deployment", body: ref("ModelEntry"), ok: jsonResp("the deployment", ref("ModelEntry"))},
		op{method: "POST", path: "/model/update", tag: "models", summary: "Change a deployment added through the API", body: anyObj, ok: jsonResp("the deployment", ref("ModelEntry"))},
		op{method: "POST", path: "/model/delete", tag: "models", summary: "Delete a deployment added through the API", body: object([]string{"id"}, obj{"id": str("")}), ok: jsonResp("done", anyObj)},
	)
	for _, p := range []string{"/model/info", "/v1/model/info", "/v2/model/info"} {
		ops = append(ops, op{method: "GET", path: p, tag: "models", summary: "Deployments the caller may use, without credentials",
			params: []obj{query("litellm_model_id", "", false)}, ok: jsonResp("the deployments", object([]string{"data"}, obj{"data": arr(ref("ModelEntry"))}))})
	}
	budgetObj := object(nil, obj{"budget_id": str("made up when absent"), "max_budget": nullNum, "soft_budget": nullNum, "max_parallel_requests": nullInt,
		"tpm_limit": nullInt, "rpm_limit": nullInt, "budget_duration": nullStr, "model_max_budget": anyObj, "budget_reset_at": nullStr})
	list := obj{"type": "array", "items": anyObj}
	member := object(nil, obj{"role": str("org_admin, internal_user or internal_user_viewer"), "user_id": nullStr, "user_email": nullStr})
	orgMember := object([]string{"organization_id"}, obj{"organization_id": str(""), "user_id": nullStr, "user_email": nullStr,
		"role": nullStr, "max_budget_in_organization": nullNum})
	ops = append(ops,
		op{method: "POST", path: "/budget/new", tag: "budgets", summary: "Create a budget object (limits that end users, keys, team memberships and organizations name by budget_id)", body: budgetObj, ok: jsonResp("the budget", anyObj)},
		op{method: "POST", path: "/budget/update", tag: "budgets", summary: "Change a budget object; what names it follows at once", body: budgetObj, ok: jsonResp("the budget", anyObj)},
		op{method: "POST", path: "/budget/info", tag: "budgets", summary: "Budget objects by id", body: object([]string{"budgets"}, obj{"budgets": arr(str(""))}), ok: jsonResp("the budgets", list)},
		op{method: "GET", path: "/budget/list", tag: "budgets", summary: "Every budget object", params: page, ok: jsonResp("the budgets", list)},
		op{method: "POST", path: "/budget/delete", tag: "budgets", summary: "Delete a budget object nothing names", body: object([]string{"id"}, obj{"id": str("")}), ok: jsonResp("the deleted budget", anyObj)},
		op{method: "POST", path: "/organization/new", tag: "organizations", summary: "Create an organization (and its budget, unless budget_id names one)",
			body: object([]string{"organization_alias"}, obj{"organization_id": nullStr, "organization_alias": str(""), "models": arr(str("")), "budget_id": nullStr,
				"metadata": anyObj, "max_budget": nullNum, "soft_budget": nullNum, "tpm_limit": nullInt, "rpm_limit": nullInt, "max_parallel_requests": nullInt,
				"budget_duration": nullStr, "model_max_budget": anyObj}), ok: jsonResp("the organization", anyObj)},
		op{method: "GET", path: "/organization/info", tag: "organizations", summary: "An organization, its members, teams and budget", params: []obj{query("organization_id", "", true)}, ok: jsonResp("the organization", anyObj)},
		op{method: "POST", path: "/organization/info", tag: "organizations", summary: "Organizations by id (LiteLLM's older form of GET /organization/info)",
			body: object([]string{"organizations"}, obj{"organizations": arr(str(""))}), ok: jsonResp("the organizations", list)},
		op{method: "GET", path: "/organization/list", tag: "organizations", summary: "Organizations (a member sees hers)", params: page, ok: jsonResp("the organizations", list)},
		op{method: "POST", path: "/organization/member_add", tag: "organizations", summary: "Add members (users are created when new)",
			body: object([]string{"organization_id", "member"}, obj{"organization_id": str(""), "member": obj{"oneOf": []any{member, arr(member)}}, "max_budget_in_organization": nullNum}),
			ok:   jsonResp("the users and memberships", anyObj)},
	)
	for _, m := range []string{"PATCH", "POST"} {
		ops = append(ops,
			op{method: m, path: "/organization/update", tag: "organizations", summary: "Change an organization (LiteLLM: PATCH)",
				body: object([]string{"organization_id"}, obj{"organization_id": str(""), "organization_alias": nullStr, "budget_id": nullStr, "spend": nullNum,
					"metadata": anyObj, "models": arr(str("")), "blocked": boolean, "updated_by": nullStr}), ok: jsonResp("the organization", anyObj)},
			op{method: m, path: "/organization/member_update", tag: "organizations", summary: "Change a member's role or budget (LiteLLM: PATCH)", body: orgMember, ok: jsonResp("the membership", anyObj)})
	}
	for _, m := range []string{"DELETE", "POST"} {
		ops = append(ops,
			op{method: m, path: "/organization/delete", tag: "organizations", summary: "Delete organizations and their teams (LiteLLM: DELETE)",
				body: object([]string{"organization_ids"}, obj{"organization_ids": arr(str(""))}), ok: jsonResp("the deleted organizations", list)},
			op{method: m, path: "/organization/member_delete", tag: "organizations", summary: "Remove a member (LiteLLM: DELETE)", body: orgMember, ok: jsonResp("the removed membership", anyObj)})
	}
	for _, prefix := range []string{"/customer", "/end_user"} {
		ops = append(ops,
			op{method: "POST", path: prefix + "/new", tag: "customers", summary: "Create an end user", body: ref("Entity"), ok: jsonResp("the end user", anyObj)},
			op{method: "GET", path: prefix + "/info", tag: "customers", summary: "An end user", params: []obj{query("end_user_id", "", true)}, ok: jsonResp("the end user", anyObj)},
			op{method: "POST", path: prefix + "/update", tag: "customers", summary: "Change an end user", body: ref("Entity"), ok: jsonResp("the end user", anyObj)},
			op{method: "POST", path: prefix + "/delete", tag: "customers", summary: "Delete end users", body: object(nil, obj{"user_ids": arr(str(""))}), ok: jsonResp("done", anyObj)},
			op{method: "POST", path: prefix + "/block", tag: "customers", summary: "Block end users", body: object(nil, obj{"user_ids": arr(str(""))}), ok: jsonResp("done", anyObj)},
			op{method: "POST", path: prefix + "/unblock", tag: "customers", summary: "Unblock end users", body: object(nil, obj{"user_ids": arr(str(""))}), ok: jsonResp("done", anyObj)},
			op{method: "GET", path: prefix + "/list", tag: "customers", summary: "End users", ok: jsonResp("the end users", obj{"type": []string{"array", "object"}})},
		)
	}
	ops = append(ops, fileOps()...)
	return append(ops, mediaOperations()...)
}

func schemas() obj {
	message := object([]string{"role"}, obj{"role": str("system, developer, user, assistant or tool"), "content": obj{}, "tool_calls": arr(anyObj), "tool_call_id": str("")})
	budget := obj{"max_budget": nullNum, "soft_budget": nullNum, "budget_duration": nullStr, "max_parallel_requests": nullInt,
		"tpm_limit": nullInt, "rpm_limit": nullInt, "metadata": anyObj}
	keyProps := obj{"key": str("a custom raw key (sk-...)"), "key_alias": nullStr, "duration": nullStr, "models": arr(str("")), "aliases": anyObj, "config": anyObj,
		"spend": num, "user_id": nullStr, "team_id": nullStr, "blocked": boolean, "tags": arr(str("")), "budget_id": nullStr,
		"model_max_budget": anyObj, "model_rpm_limit": anyObj, "model_tpm_limit": anyObj}
	for k, v := range budget {
		keyProps[k] = v
	}
	entity := object(nil, obj{"user_id": nullStr, "team_id": nullStr, "team_alias": nullStr, "user_role": nullStr, "user_email": nullStr, "alias": nullStr,
		"models": arr(str("")), "members_with_roles": arr(anyObj), "blocked": boolean, "model_aliases": anyObj, "budget_id": nullStr, "organization_id": nullStr,
		"guardrails": arr(str("a guardrail name; a team keeps them in metadata.guardrails"))})
	for k, v := range budget {
		entity["properties"].(obj)[k] = v
	}
	all := obj{
		"Error": object([]string{"error"}, obj{"error": object([]string{"message", "type"}, obj{
			"message": str(""), "type": str("invalid_request_error, authentication_error, permission_error, not_found_error, rate_limit_error, budget_exceeded, api_error, timeout_error"),
			"param": nullStr, "code": nullStr})}),
		"AnthropicError": object([]string{"type", "error"}, obj{"type": obj{"const": "error"}, "error": object([]string{"type", "message"}, obj{"type": str(""), "message": str("")})}),
		"ChatCompletionRequest": object([]string{"model", "messages"}, obj{"model": str(""), "messages": arr(message), "stream": boolean,
			"max_tokens": nullInt, "max_completion_tokens": nullInt, "user": str("the end user"), "stream_options": anyObj, "tools": arr(anyObj)}),
		// Upstream answers pass through as sent: nothing is required.
		"ChatCompletion":    object(nil, obj{"id": str(""), "object": str(""), "model": str(""), "choices": arr(anyObj), "usage": ref("Usage")}),
		"Usage":             object(nil, obj{"prompt_tokens": integer, "completion_tokens": integer, "total_tokens": integer, "prompt_tokens_details": anyObj}),
		"CompletionRequest": object([]string{"model"}, obj{"model": str(""), "prompt": obj{}, "stream": boolean, "max_tokens": nullInt}),
		"EmbeddingRequest":  object([]string{"model", "input"}, obj{"model": str(""), "input": obj{}}),
		"EmbeddingList":     object([]string{"data"}, obj{"object": str(""), "data": arr(anyObj), "model": str(""), "usage": anyObj}),
		"ModelList":         object([]string{"data"}, obj{"object": str(""), "data": arr(object([]string{"id"}, obj{"id": str(""), "object": str(""), "owned_by": str("")}))}),
		"MessagesRequest":   object([]string{"model", "messages"}, obj{"model": str(""), "messages": arr(anyObj), "system": obj{}, "max_tokens": integer, "stream": boolean, "metadata": anyObj, "tools": arr(anyObj)}),
		"Message":           object([]string{"type", "content"}, obj{"id": str(""), "type": str(""), "role": str(""), "model": str(""), "content": arr(anyObj), "stop_reason": nullStr, "usage": anyObj}),
		"HealthReport":      object([]string{"healthy_endpoints", "unhealthy_endpoints"}, obj{"healthy_endpoints": arr(anyObj), "unhealthy_endpoints": arr(anyObj), "healthy_count": integer, "unhealthy_count": integer}),
		"KeyRequest":        object(nil, keyProps),
		"KeyCreated":        object([]string{"key", "token"}, obj{"key": str("the raw key, shown once"), "key_name": str("sk-...ABCD"), "token": str("sha256 of the key"), "expires": nullStr}),
		"Key":               object(nil, obj{"token": str("sha256 of the key"), "key_name": str(""), "spend": num, "max_budget": nullNum, "expires": nullStr}),
		"Entity":            entity,
		"SpendLog": object([]string{"request_id", "call_type", "api_key", "startTime", "endTime"}, obj{"request_id": str("the upstream answer's id, else the call id"), "call_type": str("acompletion, atext_completion, aembedding, anthropic_messages, aresponses"),
			"api_key": str("key hash"), "spend": num, "total_tokens": integer, "prompt_tokens": integer, "completion_tokens": integer, "startTime": str("RFC 3339"), "endTime": str("RFC 3339"),
			"model": str(""), "model_id": str(""), "model_group": str(""), "custom_llm_provider": str(""), "api_base": str(""), "user": str(""), "team_id": str(""), "end_user": str(""),
			"metadata":  obj{"type": "object", "description": "LiteLLM's: user_api_key, user_api_key_user_id, user_api_key_team_id, status, and on a failed request error_information {error_code, error_class, llm_provider, error_message}; the request's own metadata as requester_metadata and its spend_logs_metadata member as spend_logs_metadata"},
			"cache_hit": str("True when answered from the response cache, else False"), "cache_key": str("the cache key a hit was served under (x-litellm-cache-key)"), "saved_cache_cost": obj{"type": "number", "description": "what a cache hit would have cost at its deployment's price"}, "request_tags": arr(str("")), "messages": obj{"description": "what was asked, redacted, when stored; else {}"}, "response": obj{"description": "what was answered, redacted, when stored; else {}"}, "status": str("success or failure"), "call_id": str("Tollgate's call id (x-tollgate-call-id)"), "http_status": integer, "latency_ms": integer,
			"reported_prompt_tokens": integer, "reported_completion_tokens": integer, "usage_clamped": boolean, "usage_estimated": boolean,
			"content_omitted": obj{"type": "boolean", "description": "true when messages and response were left out to keep the answer within its 16 MiB of stored content; fetch the row with request_id"}}),
		"Readiness": object([]string{"status", "db"}, obj{"status": str("healthy or unhealthy"), "db": str("connected, unreachable, or Not connected"), "cache": obj{"type": "null"},
			"litellm_version": str("Tollgate's version"), "version": str(""), "success_callbacks": arr(str("")), "use_aiohttp_transport": boolean, "log_level": str(""), "is_detailed_debug": boolean}),
		"SpendSummaryDay": object([]string{"startTime", "spend", "users", "models"}, obj{"startTime": str("YYYY-MM-DD"), "spend": num, "users": obj{"type": "object", "additionalProperties": num},
			"models": obj{"type": "object", "additionalProperties": num}}),
		"ModelEntry": object(nil, obj{"model_name": str(""), "litellm_params": anyObj, "model_info": anyObj}),
		"ModerationRequest": object([]string{"input"}, obj{"input": obj{"description": "a string, or an array of strings or of multi-modal inputs"},
			"model": str("optional: the configured moderation model when absent")}),
		"Moderation": object([]string{"results"}, obj{"id": str(""), "model": str(""), "results": arr(object([]string{"flagged"},
			obj{"flagged": boolean, "categories": anyObj, "category_scores": anyObj}))}),
		"RerankRequest": object([]string{"model", "query", "documents"}, obj{"model": str(""), "query": str(""),
			"documents": arr(obj{"description": "a string, or an object with text"}), "top_n": integer, "return_documents": boolean}),
		"Rerank": object([]string{"results"}, obj{"id": str(""), "results": arr(object([]string{"index", "relevance_score"},
			obj{"index": integer, "relevance_score": num, "document": anyObj})), "meta": anyObj, "usage": anyObj}),
	}
	for k, v := range fileSchemas() {
		all[k] = v
	}
	for k, v := range responsesSchemas() {
		all[k] = v
	}
	for k, v := range mediaSchemas() {
		all[k] = v
	}
	return all
}

// Document is the OpenAPI 3.1 document of every route the gateway serves.
func Document(version string) []byte {
	paths := obj{}
	for _, o := range operations() {
		item, _ := paths[o.path].(obj)
		if item == nil {
			item = obj{}
			paths[o.path] = item
		}
		errSchema := ref("Error")
		if o.anthropic {
			errSchema = ref("AnthropicError")
		}
		ok := o.ok
		if o.stream {
			content := obj{}
			for k, v := range ok["content"].(obj) {
				content[k] = v
			}
			content["text/event-stream"] = obj{"schema": obj{"type": "string", "description": "server-sent events"}}
			ok = obj{"description": ok["description"], "content": content}
		}
		operation := obj{
			"tags": []string{o.tag}, "summary": o.summary,
			"operationId": strings.ToLower(o.method) + strings.NewReplacer("/", "_", "{", "", "}", "", ".", "_").Replace(o.path),
			"responses":   obj{"200": ok, "default": jsonResp("an error", errSchema)},
		}
		if o.public {
			operation["security"] = []any{}
		}
		switch {
		case o.form:
			operation["requestBody"] = formBody(o.body, o.jsonAlt)
		case o.body != nil:
			operation["requestBody"] = jsonBody(o.body)
		}
		if len(o.params) > 0 {
			operation["parameters"] = o.params
		}
		item[strings.ToLower(o.method)] = operation
	}
	doc := obj{
		"openapi": "3.1.0",
		"info": obj{"title": "Tollgate", "version": version,
			"description": "An LLM gateway: the OpenAI and Anthropic APIs in front of many providers, with virtual keys, budgets, rate limits and spend tracking. The management API is wire-compatible with the LiteLLM proxy's."},
		"security": []any{obj{"bearer": []string{}}, obj{"apiKey": []string{}}},
		"paths":    paths,
		"components": obj{
			"schemas": schemas(),
			"securitySchemes": obj{
				"bearer": obj{"type": "http", "scheme": "bearer", "description": "the master key or a virtual key"},
				"apiKey": obj{"type": "apiKey", "in": "header", "name": "x-api-key"},
			},
		},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return b
}

// Routes lists the document's operations as "METHOD /path", sorted.
func Routes() []string {
	var out []string
	for _, o := range operations() {
		out = append(out, o.method+" "+o.path)
	}
	sort.Strings(out)
	return out
}
