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
	return attrs
}
