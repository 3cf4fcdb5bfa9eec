package gateway

import (
	"slices"

	"go.opentelemetry.io/otel/attribute"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/tracing"
)

// skipAttrs marks a span of a request that disabled tracing callbacks
// (x-litellm-disable-callbacks: langfuse, langfuse_otel, otel,
// opentelemetry) with the exporters that must not get it; each exporter's
// queue drops the spans that name it (tracing.SkipAttr). Also a span of a
// key or team that logs to its own Langfuse project (ownLangfuse) never
// goes to the gateway-wide one.
func (c *call) skipAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	var skip []string
	for _, n := range c.meta.disabled {
		switch {
		case slices.Contains(config.LangfuseCallbacks, n) && !slices.Contains(skip, "langfuse"):
			skip = append(skip, "langfuse")
		case slices.Contains(config.OTelCallbacks, n) && !slices.Contains(skip, "otel"):
			skip = append(skip, "otel")
		}
	}
	if c.ownLangfuse() && !slices.Contains(skip, "langfuse") {
		skip = append(skip, "langfuse")
	}
	if len(skip) == 0 {
		return attrs
	}
	return append(attrs, attribute.StringSlice(string(tracing.SkipAttr), skip))
}

// requestMetaAttrs adds to the request span what the request's metadata
// says of it for Langfuse, as LiteLLM's Langfuse integration maps it: the
// session (litellm_session_id or metadata.session_id), the trace's user
// (metadata.trace_user_id), the trace's name (metadata.trace_name) and the
// generation's (metadata.generation_name). Each was bounded and cleaned by
// readMeta.
func (c *call) requestMetaAttrs(attrs []attribute.KeyValue) []attribute.KeyValue {
	m := &c.meta
	attrs = c.skipAttrs(attrs)
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
		if c.cache != nil && c.cache.hit != nil {
			return "True" // LiteLLM's spelling
		}
		return "False"
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

// ownLangfuse reports whether the call's key or team names its own
// Langfuse project in metadata.logging (LiteLLM's team/key based logging:
// callback_name langfuse with callback_vars langfuse_public_key, ...).
// Per-key projects are not served: such a call's spans never go to the
// gateway-wide Langfuse project (skipAttrs), and the first call of each
// key says so in the log, once, without the credentials.
func (c *call) ownLangfuse() bool {
	p := c.p
	if p == nil {
		return false
	}
	var who, id string
	switch {
	case p.Key != nil && namesOwnLangfuse(p.Key.Metadata):
		who, id = "key", p.KeyHash
		if len(id) > 8 {
			id = id[:8]
		}
	case p.Team != nil && namesOwnLangfuse(p.Team.Metadata):
		who, id = "team", p.Team.TeamID
	default:
		return false
	}
	if _, warned := c.g.ownLangfuseWarned.LoadOrStore(who+":"+id, struct{}{}); !warned && c.g.log != nil {
		c.g.log.Warn("a "+who+" logs to its own Langfuse project (metadata.logging); per-key and per-team Langfuse projects are not served: its calls' spans are not sent to the gateway-wide Langfuse project (docs/tracing.md)",
			who, clip(id))
	}
	return true
}

// namesOwnLangfuse reports whether metadata's logging list has a langfuse
// entry with its own credentials or host.
func namesOwnLangfuse(md map[string]any) bool {
	list, _ := md["logging"].([]any)
	for _, e := range list {
		entry, _ := e.(map[string]any)
		name, _ := entry["callback_name"].(string)
		if !slices.Contains(config.LangfuseCallbacks, name) {
			continue
		}
		vars, _ := entry["callback_vars"].(map[string]any)
		for _, k := range []string{"langfuse_public_key", "langfuse_secret_key", "langfuse_secret", "langfuse_host"} {
			if v, ok := vars[k]; ok && v != nil && v != "" {
				return true
			}
		}
	}
	return false
}
