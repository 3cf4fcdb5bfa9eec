package gateway

import (
	"encoding/json"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/callback"
	"github.com/tollgate/tollgate/internal/provider"
)

// Bounds on what a request adds to its logs: tags (from the request, its
// key and its team) and the request's own metadata. A request past them
// is not refused for it: extra tags are dropped, an oversized metadata
// object is replaced by {"tollgate_truncated": true}.
const (
	maxTags         = 32
	maxTagBytes     = 128
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
}

// readMeta fills c.meta from the request and its principal. Malformed
// metadata or tags are the client's error: 400, nothing forwarded.
func (c *call) readMeta() error {
	var m callMeta
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
			list, ok := t.([]any)
			if !ok {
				return apierror.BadRequest(member, "%s.tags must be an array of strings", member)
			}
			for _, v := range list {
				s, ok := v.(string)
				if !ok {
					return apierror.BadRequest(member, "%s.tags must be an array of strings", member)
				}
				m.tags = addTag(m.tags, s)
			}
		}
		if len(raw) > maxMetadataJSON {
			md = map[string]any{"tollgate_truncated": true}
		}
		if m.metadata == nil {
			m.metadata = md
		} else {
			for k, v := range md {
				m.metadata[k] = v
			}
		}
	}
	if h := c.r.Header.Values("X-Litellm-Tags"); len(h) > 0 {
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
// or the list is full.
func addTag(tags []string, t string) []string {
	if t == "" || len(t) > maxTagBytes || len(tags) >= maxTags || slices.Contains(tags, t) {
		return tags
	}
	return append(tags, t)
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
	if c.model != "" {
		pl.ModelGroup = &c.model
	}
	if t := c.target; t != nil {
		pl.ModelID, pl.APIBase, pl.CustomLLMProvider = &t.D.ID, provider.ShownBase(t.D.APIBase), t.D.Provider
	}
	if req.user != "" {
		pl.EndUser, pl.Metadata.UserAPIKeyEndUserID = &req.user, &req.user
	}
	md := &pl.Metadata
	md.RequesterMetadata = c.meta.metadata
	if md.RequesterMetadata == nil {
		md.RequesterMetadata = map[string]any{}
	}
	if p != nil {
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
		switch {
		case c.err != nil:
			e := apierror.From(c.err)
			msg, info.ErrorClass = e.Message, e.Type
		case status == 499:
			msg, info.ErrorClass = "the client disconnected", "client_disconnected"
		case c.upstreamErr != nil:
			msg, info.ErrorClass = string(c.upstreamErr), "upstream_error"
		}
		if len(msg) > maxErrorText {
			msg = clipBytes(msg, maxErrorText)
		}
		pl.ErrorStr, pl.ErrorInformation = &msg, info
	}
	return pl
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
