package gateway

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/internal/provider"
)

// joinTags is a request's tags: the client's (header, then body) in the
// room the operator's tags leave, then the operator's (key, team,
// deployment), each once and at most maxTags in all. A client's tags can
// never push out a tag the operator set: own are bounded by maxTags
// themselves (addTag), and the client's get what is left.
func joinTags(own, client []string) []string {
	if len(own) == 0 {
		return client
	}
	room := maxTags - len(own)
	out := make([]string, 0, min(maxTags, len(own)+len(client)))
	for _, t := range client {
		if len(out) >= room {
			break
		}
		if !slices.Contains(own, t) {
			out = append(out, t)
		}
	}
	for _, t := range own {
		out = addTag(out, t)
	}
	return out
}

// deploymentTags sets the call's tags for an attempt on t: the request's
// with t's litellm_params.tags among the operator's (LiteLLM's request
// tags for spend tracking). Each attempt carries its own deployment's, so
// the attempt that answered is the one whose tags the spend row, the
// payload, the span and the metrics get.
func (c *call) deploymentTags(t *provider.Target) {
	m := &c.meta
	if len(t.D.Tags) == 0 && len(m.own) == len(m.principal) {
		return // no deployment tags now, nor from an earlier attempt
	}
	own := slices.Clip(m.principal)
	for _, tag := range t.D.Tags {
		own = addTag(own, tag)
	}
	m.own = own
	m.tags = joinTags(own, m.client)
}

// metaMember is the raw JSON of the request's metadata or litellm_metadata:
// a member of a JSON body, or a text field of a form (an upload) holding a
// JSON object; nil when there is none.
func (c *call) metaMember(member string) []byte {
	if md := c.req.media; md != nil && md.form != nil {
		v, ok := md.form.value(member)
		if !ok || strings.TrimSpace(v) == "" {
			return nil
		}
		if !json.Valid([]byte(v)) {
			return []byte(`"not JSON"`) // refused by readMeta as not an object
		}
		return []byte(v)
	}
	return c.req.obj.Get(member)
}
