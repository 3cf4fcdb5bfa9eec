package gateway

import "go.opentelemetry.io/otel/attribute"

// requestMetaAttrs adds to the request span what the request's metadata
// says of it for Langfuse, as LiteLLM's Langfuse integration maps it: the
// session (litellm_session_id or metadata.session_id), the trace's user
// (metadata.trace_user_id), the trace's name (metadata.trace_name) and the
// generation's (metadata.generation_name). Each was bounded and cleaned by
// readMeta.
func (c *call) requestMetaAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	m := &c.meta
	if m.session != "" {
		attrs = append(attrs, attribute.String("session.id", m.session), attribute.String("langfuse.session.id", m.session))
	}
	if m.traceUser != "" {
		attrs = append(attrs, attribute.String("langfuse.user.id", m.traceUser))
	}
	if m.traceName != "" {
		attrs = append(attrs, attribute.String("langfuse.trace.name", m.traceName))
	}
	if m.generation != "" {
		attrs = append(attrs, attribute.String("langfuse.observation.name", m.generation))
	}
	if len(c.g.opts.LangfuseDefaultTags) > 0 {
		// Set again after the request's tags: the last value of a key wins.
		tags := append([]string(nil), m.tags...)
		for _, f := range c.g.opts.LangfuseDefaultTags {
			if v := c.defaultTagValue(f); v != "" {
				tags = append(tags, f+":"+v)
			}
		}
		if len(tags) > len(m.tags) {
			attrs = append(attrs, attribute.StringSlice("langfuse.trace.tags", tags))
		}
	}
	return attrs
}

// defaultTagValue is the value of the payload metadata field f, for
// langfuse_default_tags; "" when the call has none (or the key's
// information is redacted).
func (c *call) defaultTagValue(f string) string {
	if f == "cache_hit" {
		return "False" // LiteLLM's spelling; the gateway caches nothing
	}
	p := c.p
	if p == nil || c.g.content.noKeyInfo {
		return ""
	}
	switch f {
	case "user_api_key_alias":
		if p.Key != nil && p.Key.KeyAlias != nil {
			return *p.Key.KeyAlias
		}
	case "user_api_key_user_id":
		if p.Key != nil {
			return p.Key.UserID
		}
	case "user_api_key_team_id":
		if p.Key != nil {
			return p.Key.TeamID
		}
	case "user_api_key_team_alias":
		if p.Team != nil {
			return p.Team.TeamAlias
		}
	case "user_api_key_org_id":
		if p.Team != nil {
			return p.Team.OrganizationID
		}
	case "user_api_key_end_user_id":
		if c.req != nil {
			return clip(c.req.user)
		}
	}
	return ""
}
