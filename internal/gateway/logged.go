package gateway

import (
	"bytes"
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/reqtags"
)

// Bounds on what a request adds to its logs: tags (from the request, its
// key and its team) and the request's own metadata. A request past them
// is not refused for it: extra tags are dropped, an oversized metadata
// object is replaced by {"tollgate_truncated": true}.
const (
	maxTags         = reqtags.MaxCount
	maxTagBytes     = reqtags.MaxBytes
	maxMetadataJSON = 16 << 10
)

// callMeta is what a call carries into its spans, callbacks, spend row and
// metric labels beyond who made it: its tags and its own metadata.
type callMeta struct {
	// tags are LiteLLM's request_tags: the x-litellm-tags header, the
	// body's metadata.tags, then the key's, the team's and the answering
	// deployment's tags; each once, in that order (joinTags).
	tags []string
	// client are the tags the request chose (header and body), principal
	// the key's and the team's, own the operator's in effect (principal's,
	// then the deployment's of the attempt); tags joins client and own so
	// that own always fit (joinTags).
	client, principal, own []string
	// metadata is the body's metadata object (litellm_metadata's members
	// winning), LiteLLM's requester_metadata; nil when the body has none.
	metadata map[string]any
	// session is the request's session id: LiteLLM's litellm_session_id
	// body member (its Session Logs), else metadata.session_id (its
	// Langfuse integration's); bounded and cleaned as a tag. "" when none.
	session string
	// traceUser, traceName and generation are LiteLLM's Langfuse metadata
	// (trace_user_id, trace_name, generation_name), for the request span;
	// bounded and cleaned as a tag. "" when none.
	traceUser, traceName, generation string
	// disabled are the callbacks the request turned off for itself
	// (LiteLLM's x-litellm-disable-callbacks header), lower-cased; nil
	// when none.
	disabled []string
	// noLog: the body opts out of content logging ("no-log" or
	// "turn_off_message_logging", which are not forwarded).
	noLog bool
}

// readMeta fills c.meta from the request and its principal. Malformed
// metadata or tags are the client's error: 400, nothing forwarded.
func (c *call) readMeta() error {
	var m callMeta
	m.noLog = rawTrue(c.req.obj.Get("no-log")) || rawTrue(c.req.obj.Get("turn_off_message_logging"))
	for _, member := range []string{"metadata", "litellm_metadata"} {
		raw := c.metaMember(member)
		if raw == nil || string(raw) == "null" {
			continue
		}
		var md map[string]any
		if raw[0] != '{' || json.Unmarshal(raw, &md) != nil {
			return apierror.BadRequest(member, "%s must be a JSON object", member)
		}
		if t, ok := md["tags"]; ok && t != nil {
			var err error
			if m.tags, err = readTags(m.tags, t, member+".tags", member); err != nil {
				return err
			}
		}
		if s, ok := md["session_id"].(string); ok && m.session == "" {
			m.session = cleanID(s)
		}
		if s, ok := md["trace_user_id"].(string); ok {
			m.traceUser = cleanID(s)
		}
		if s, ok := md["trace_name"].(string); ok {
			m.traceName = cleanID(s)
		}
		if s, ok := md["generation_name"].(string); ok {
			m.generation = cleanID(s)
		}
		if len(raw) > maxMetadataJSON {
			// Too large to keep; its tags are read above, and its opt-out
			// of content logging stays, for contentAllowed to read.
			small := map[string]any{"tollgate_truncated": true}
			if v, ok := md["turn_off_message_logging"]; ok {
				small["turn_off_message_logging"] = v
			}
			md = small
		}
		if m.metadata == nil {
			m.metadata = md
		} else {
			for k, v := range md {
				m.metadata[k] = v
			}
		}
	}
	// LiteLLM's top-level body members (never forwarded: gatewayMembers):
	// tags, as metadata.tags, and litellm_session_id.
	if raw := c.metaMember("tags"); raw != nil && string(raw) != "null" {
		var t any
		_ = json.Unmarshal(raw, &t)
		var err error
		if m.tags, err = readTags(m.tags, t, "tags", "tags"); err != nil {
			return err
		}
	}
	if raw := c.metaMember("litellm_session_id"); raw != nil && string(raw) != "null" {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return apierror.BadRequest("litellm_session_id", "litellm_session_id must be a string")
		}
		if s = cleanID(s); s != "" {
			m.session = s
		}
	}
	for _, v := range c.r.Header["X-Litellm-Disable-Callbacks"] {
		for n := range strings.SplitSeq(v, ",") {
			if n = strings.ToLower(strings.TrimSpace(n)); n != "" && len(n) <= 64 && len(m.disabled) < 32 && !slices.Contains(m.disabled, n) {
				m.disabled = append(m.disabled, n)
			}
		}
	}
	if h := c.r.Header["X-Litellm-Tags"]; len(h) > 0 {
		var head []string
		for _, v := range h {
			for t := range strings.SplitSeq(v, ",") {
				head = addTag(head, strings.TrimSpace(t))
			}
		}
		for _, t := range m.tags {
			head = addTag(head, t)
		}
		m.tags = head
	}
	m.client, m.principal = m.tags, principalTags(nil, c.p)
	m.own = m.principal
	m.tags = joinTags(m.own, m.client)
	c.meta = m
	return nil
}

// readTags adds a request's tags (t, a decoded JSON value) to tags: an
// array of strings, else the client's error (400 naming what).
func readTags(tags []string, t any, what, param string) ([]string, error) {
	list, ok := t.([]any)
	if !ok {
		return tags, apierror.BadRequest(param, "%s must be an array of strings", what)
	}
	for _, v := range list {
		s, ok := v.(string)
		if !ok {
			return tags, apierror.BadRequest(param, "%s must be an array of strings", what)
		}
		tags = addTag(tags, s)
	}
	return tags, nil
}

// cleanID is a client-chosen id or name for the logs and the traces (a
// session id, a trace name): cleaned as a tag (valid UTF-8, no control
// characters), "" when longer than a tag may be.
func cleanID(s string) string {
	if s = cleanTag(s); len(s) > maxTagBytes {
		return ""
	}
	return s
}

// principalTags adds the key's tags and the team's (its metadata.tags, as
// LiteLLM keeps them) to tags.
func principalTags(tags []string, p *auth.Principal) []string {
	if p == nil {
		return tags
	}
	if k := p.Key; k != nil {
		for _, t := range k.Tags {
			tags = addTag(tags, t)
		}
		tags = metadataTags(tags, k.Metadata)
	}
	if t := p.Team; t != nil {
		tags = metadataTags(tags, t.Metadata)
	}
	return tags
}

func metadataTags(tags []string, md map[string]any) []string {
	list, _ := md["tags"].([]any)
	for _, v := range list {
		if s, ok := v.(string); ok {
			tags = addTag(tags, s)
		}
	}
	if list, ok := md["tags"].([]string); ok {
		for _, s := range list {
			tags = addTag(tags, s)
		}
	}
	return tags
}

// addTag appends t to tags unless it is empty, too long, already there,
// or the list is full. A tag is a metric label and a database value: bytes
// that are not UTF-8 (a header's Latin-1) become U+FFFD and control
// characters are dropped.
func addTag(tags []string, t string) []string {
	t = cleanTag(t)
	if t == "" || len(t) > maxTagBytes || len(tags) >= maxTags || slices.Contains(tags, t) {
		return tags
	}
	return append(tags, t)
}

// cleanTag is t as valid UTF-8 without control characters; t itself (no
// allocation) when it is so already.
func cleanTag(t string) string {
	clean := utf8.ValidString(t)
	for i := 0; clean && i < len(t); i++ {
		clean = t[i] >= 0x20 && t[i] != 0x7f
	}
	if clean && !strings.ContainsRune(t, 0x85) {
		return t
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, strings.ToValidUTF8(t, "\uFFFD"))
}

// maxErrorText bounds the error_str a payload carries.
const maxErrorText = 1 << 10

// payload is the call as LiteLLM's StandardLoggingPayload describes it,
// for the callbacks. status is what the client got (499: it left).
func (c *call) payload(status int) *callback.Payload {
	p, req, res := c.p, c.req, &c.res
	end := time.Now()
	pl := &callback.Payload{
		ID: c.id, TraceID: c.traceID(), CallType: callType(c.op), ResponseCost: c.cost, Status: "success",
		PromptTokens: res.usage.Prompt, CompletionTokens: res.usage.Completion,
		TotalTokens: res.usage.Prompt + res.usage.Completion,
		StartTime:   unixSeconds(c.start), EndTime: unixSeconds(end),
		Model: res.model, Stream: req.stream, HTTPStatus: status,
		RequestTags: c.meta.tags, Retries: c.retries, Fallbacks: c.fellBack,
		Skip: c.meta.disabled,
	}
	if pl.RequestTags == nil {
		pl.RequestTags = []string{}
	}
	if cp := c.cap; cp != nil {
		pl.Messages, pl.Response = cp.messages, cp.response
	}
	pl.ResponseTime = pl.EndTime - pl.StartTime
	if res.ttfb > 0 {
		pl.CompletionStartTime = unixSeconds(c.start.Add(res.ttfb))
		if req.stream {
			pl.ResponseTime = res.ttfb.Seconds()
		}
	} else {
		pl.CompletionStartTime = pl.EndTime
	}
	if pl.Model == "" {
		pl.Model = req.model
	}
	if c.group != "" {
		pl.ModelGroup = &c.group // the fallback that answered, as on the spend row
	} else if c.model != "" {
		pl.ModelGroup = &c.model
	}
	if t := c.target; t != nil {
		pl.ModelID, pl.APIBase, pl.CustomLLMProvider = &t.D.ID, provider.ShownBase(t.D.APIBase), t.D.Provider
		pl.HiddenParams.ModelID, pl.HiddenParams.APIBase = pl.ModelID, &pl.APIBase
		pl.ModelMapInformation.ModelMapKey = res.model
		if price, ok := t.PriceFor(res.model); ok {
			pl.ModelMapInformation.ModelMapValue = price
		}
	}
	if res.model != "" {
		pl.HiddenParams.LiteLLMModelName = &res.model
	}
	pl.HiddenParams.ResponseCost = &pl.ResponseCost
	c.cachePayload(pl)
	pl.ModelParameters = modelParameters(req)
	if req.user != "" {
		pl.EndUser = &req.user
		if !c.g.content.noKeyInfo {
			pl.Metadata.UserAPIKeyEndUserID = &req.user
		}
	}
	md := &pl.Metadata
	md.RequesterMetadata, md.SessionID = c.meta.metadata, c.meta.session
	if md.RequesterMetadata == nil {
		md.RequesterMetadata = map[string]any{}
	}
	if p != nil && !c.g.content.noKeyInfo { // redact_user_api_key_info keeps them out
		if p.KeyHash != "" {
			md.UserAPIKeyHash = &p.KeyHash
		}
		if k := p.Key; k != nil {
			md.UserAPIKeyAlias = k.KeyAlias
			if k.UserID != "" {
				md.UserAPIKeyUserID = &k.UserID
			}
			if k.TeamID != "" {
				md.UserAPIKeyTeamID = &k.TeamID
			}
		}
		if t := p.Team; t != nil && t.TeamAlias != "" {
			md.UserAPIKeyTeamAlias = &t.TeamAlias
		}
		if t := p.Team; t != nil && t.OrganizationID != "" {
			md.UserAPIKeyOrgID = &t.OrganizationID
		}
	}
	if host, _, err := net.SplitHostPort(c.r.RemoteAddr); err == nil {
		pl.RequesterIPAddress, md.RequesterIPAddress = &host, &host
	}
	if status >= 400 || status == 0 {
		pl.Status = "failure"
		info := &callback.ErrorInformation{ErrorCode: strconv.Itoa(status), LLMProvider: pl.CustomLLMProvider}
		var msg string
		var why endedBy
		why, info.ErrorClass = c.failure(status)
		switch why {
		case endedByGateway:
			msg = apierror.From(c.err).Message
		case endedByClient:
			msg = "the client disconnected"
		case endedByUpstream:
			msg = string(c.upstreamErr)
		}
		msg = c.errorText(msg, info.ErrorClass, status)
		pl.ErrorStr, pl.ErrorInformation = &msg, info
	}
	return pl
}

// cause is the text of what ended the call, for telling a context window
// apart from another bad request.
func (c *call) cause() []byte {
	if c.err == nil {
		return nil
	}
	return []byte(c.err.Error())
}

// errorClass is LiteLLM's exception class for a call that ended with
// status: its error_information.error_class. typ and code are the
// gateway's own error's (apierror), body the upstream's answer or the
// error's text.
func errorClass(status int, typ, code string, body []byte) string {
	switch {
	case typ == "budget_exceeded" || code == "budget_exceeded":
		return "BudgetExceededError"
	case code == "content_policy_violation" || bytes.Contains(body, []byte("content_policy_violation")):
		return "ContentPolicyViolationError"
	case status == 400 && isContextWindow(body):
		return "ContextWindowExceededError"
	}
	switch status {
	case 400:
		return "BadRequestError"
	case 401:
		return "AuthenticationError"
	case 403:
		return "PermissionDeniedError"
	case 404:
		return "NotFoundError"
	case 408, 504:
		return "Timeout"
	case 422:
		return "UnprocessableEntityError"
	case 429:
		return "RateLimitError"
	case 500:
		return "InternalServerError"
	case 502:
		return "APIConnectionError" // unreachable, broke off, or answered nonsense
	case 503:
		return "ServiceUnavailableError"
	}
	if status >= 400 && status < 500 {
		return "BadRequestError"
	}
	return "APIError"
}

// Bounds on model_parameters: members, and the bytes of one value.
const (
	maxModelParams     = 32
	maxModelParamBytes = 256
)

// notModelParams are the body's members that are not the model's
// parameters: what is asked, of whom, by whom, and how it is delivered.
var notModelParams = map[string]bool{
	"model": true, "messages": true, "prompt": true, "input": true, "instructions": true, "system": true,
	"stream": true, "stream_options": true, "metadata": true, "litellm_metadata": true, "user": true,
	"api_base": true, "base_url": true, "api_version": true, "organization": true, "extra_headers": true,
	"previous_response_id": true, "file": true, "image": true, "mask": true, "documents": true, "query": true,
}

// modelParameters is LiteLLM's model_parameters: the request's optional
// parameters (temperature, max_tokens, top_p, ...), its top-level members
// that are numbers, booleans or short strings, other than the ones above
// and anything named like a credential; at most maxModelParams, each as
// the client wrote it.
func modelParameters(req *request) map[string]any {
	out := map[string]any{}
	for _, m := range req.obj.Members {
		if len(out) >= maxModelParams {
			break
		}
		v := m.Value
		if len(v) == 0 || len(v) > maxModelParamBytes || notModelParams[m.Key] || secretName(m.Key) {
			continue
		}
		switch v[0] {
		case '{', '[', 'n':
			continue
		}
		out[m.Key] = json.RawMessage(v)
	}
	return out
}

// secretName reports whether a member's name says it holds a credential.
func secretName(k string) bool {
	k = strings.ToLower(k)
	return strings.Contains(k, "key") || strings.Contains(k, "secret") || strings.Contains(k, "password") || strings.Contains(k, "credential") || strings.Contains(k, "auth")
}

// errorText is the error_str a payload carries. Providers echo the
// offending input (and sometimes the key) in their errors, so the text is
// content: masked with the policy's redactor (a JSON body's strings
// decoded first), and, when the call's content may not leave the process
// (turn_off_message_logging, an opt-out), replaced by the error's class
// and status alone.
func (c *call) errorText(msg, class string, status int) string {
	if msg == "" {
		return msg
	}
	if !contentAllowed(c) {
		return class + " (" + strconv.Itoa(status) + ")"
	}
	red := c.g.content.red
	if b := []byte(msg); json.Valid(b) {
		msg = string(red.JSON(b))
	} else if len(msg) > maxErrorText+512 {
		msg = red.String(clipBytes(msg, maxErrorText+512))
	} else {
		msg = red.String(msg)
	}
	return strings.ToValidUTF8(clipBytes(msg, maxErrorText), "\uFFFD")
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMicro()) / 1e6 }

// clipBytes cuts s to at most n bytes on a rune boundary.
func clipBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
