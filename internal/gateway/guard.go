package gateway

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"sort"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/guardrail"
	"github.com/tollgate/tollgate/internal/provider"
)

// callGuard is a call's guardrails (docs/guardrails.md): those it runs,
// the placeholders to map back in its answer, the during_call check in
// flight, and what each guardrail did.
type callGuard struct {
	requested []string               // named by the request (body or metadata)
	off       []string               // switched off by the request ({"name": false})
	run       []*guardrail.Guardrail // selected: default_on and named by request, key, team
	restore   map[string]string      // placeholder → text, for output_parse_pii
	during    chan guardrail.Result
	modes     guardrail.Mode // the selected guardrails' modes together
	post      bool           // some guardrail runs post_call
	outcomes  []guardrail.Outcome
}

// hdrAppliedGuardrails is LiteLLM's header naming the guardrails a call ran.
const hdrAppliedGuardrails = "X-Litellm-Applied-Guardrails"

// readGuardrails reads the guardrails the request names: LiteLLM's
// guardrails member (a list of names, or an object keyed by name) or
// metadata.guardrails. Called before the gateway's members are stripped.
func (c *call) readGuardrails() error {
	if err := c.guardLock(); err != nil {
		return err
	}
	if c.g.opts.Guardrails.Empty() || c.req.media != nil || !guardsOp(c.op) {
		return nil
	}
	var names, off []string
	for _, raw := range [][]byte{c.req.obj.Get("guardrails"), metaGuardrails(c.metaMember("metadata")), metaGuardrails(c.metaMember("litellm_metadata"))} {
		if raw == nil || string(raw) == "null" {
			continue
		}
		n, f, ok := guardrailNames(raw)
		if !ok {
			return apierror.BadRequest("guardrails", "guardrails must be a list of guardrail names or an object keyed by guardrail name")
		}
		names, off = append(names, n...), append(off, f...)
	}
	c.guard = &callGuard{requested: names, off: off} // guardInput selects (default_on ones too) once the principal is known
	return nil
}

// guardLock refuses, as LiteLLM does (403), a request that names
// guardrails (top-level guardrails, metadata.guardrails or
// litellm_metadata.guardrails: a list or an object, {"name": false}
// included) when its team or key carries LiteLLM's lock, metadata
// {"guardrails": {"modify_guardrails": false}}. It runs at decode, before
// the call is routed, admitted, held or logged, and whatever guardrails
// are configured; a key or team without the lock costs two map lookups.
func (c *call) guardLock() error {
	who := ""
	switch {
	case c.p == nil:
		return nil
	case c.p.Team != nil && guardrail.ModifyLocked(c.p.Team.Metadata):
		who = "team"
	case c.p.Key != nil && guardrail.ModifyLocked(c.p.Key.Metadata):
		who = "key"
	default:
		return nil
	}
	for _, raw := range [][]byte{c.metaMember("guardrails"), metaGuardrails(c.metaMember("metadata")), metaGuardrails(c.metaMember("litellm_metadata"))} {
		if raw != nil && string(raw) != "null" {
			e := apierror.Forbidden("Your %s does not have permission to modify guardrails.", who)
			e.Param = "guardrails"
			return e
		}
	}
	return nil
}

// metaGuardrails is the guardrails member of a metadata object.
func metaGuardrails(raw []byte) []byte {
	if len(raw) == 0 || raw[0] != '{' {
		return nil
	}
	var md struct {
		Guardrails json.RawMessage `json:"guardrails"`
	}
	if json.Unmarshal(raw, &md) != nil {
		return nil
	}
	return md.Guardrails
}

// guardrailNames reads ["a","b"], {"a": {...}} or {"a": true} (on), and
// LiteLLM's per-request switch {"a": false} (off: a default_on guardrail
// does not run for this request).
func guardrailNames(raw []byte) (on, off []string, ok bool) {
	if json.Unmarshal(raw, &on) == nil {
		return on, nil, true
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return nil, nil, false
	}
	for k, v := range obj {
		if string(bytes.TrimSpace(v)) == "false" {
			off = append(off, k)
		} else {
			on = append(on, k)
		}
	}
	sort.Strings(on)
	sort.Strings(off)
	return on, off, true
}

// namesIn reads a list of names from a key's or team's metadata member.
func namesIn(md map[string]any, member string) []string {
	raw, ok := md[member].([]any)
	if !ok {
		return nil
	}
	out := make([]string, 0, len(raw))
	for _, v := range raw {
		if s, ok := v.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// guardSelect selects the call's guardrails (before admission: a request
// naming an unknown guardrail is a 400 that takes no place under the rate
// limits).
func (c *call) guardSelect() error {
	cg := c.guard
	if cg == nil {
		return nil
	}
	var keyNames, teamNames []string
	if k := c.p.Key; k != nil {
		keyNames = namesIn(k.Metadata, "guardrails")
	}
	if t := c.p.Team; t != nil {
		teamNames = namesIn(t.Metadata, "guardrails")
	}
	sel, err := c.g.opts.Guardrails.Select(cg.requested, keyNames, teamNames)
	if err == nil && len(cg.off) > 0 {
		_, err = c.g.opts.Guardrails.Select(cg.off) // an unknown name is refused as above
	}
	if err != nil {
		return apierror.BadRequest("guardrails", "%v", err)
	}
	if len(cg.off) > 0 {
		// LiteLLM's {"name": false} switches a default_on guardrail off
		// for this request; one the request also names, or the key or
		// its team names, stays on (what a key or team carries is not
		// the caller's to remove).
		keep := map[string]bool{}
		for _, list := range [][]string{cg.requested, keyNames, teamNames} {
			for _, n := range list {
				keep[n] = true
			}
		}
		sel = slices.DeleteFunc(sel, func(g *guardrail.Guardrail) bool {
			return !keep[g.Name] && slices.Contains(cg.off, g.Name)
		})
	}
	if len(sel) == 0 {
		c.guard = nil
		return nil
	}
	cg.run = sel
	names := make([]string, len(sel))
	for i, g := range sel {
		names[i] = g.Name
		cg.modes |= g.Mode
	}
	c.w.Header()[hdrAppliedGuardrails] = []string{strings.Join(names, ",")}
	cg.post = cg.modes&guardrail.PostCall != 0
	return nil
}

// guardInput runs the selected pre_call guardrails on the request's
// text, after admission: a block ends the call before anything is held or
// sent (400 naming the guardrail); a mask rewrites the body, the only
// case in which it is re-encoded. during_call guardrails start here and
// run beside the upstream call.
func (c *call) guardInput() error {
	cg := c.guard
	if cg == nil {
		return nil
	}
	sel, modes := cg.run, cg.modes
	if modes&(guardrail.PreCall|guardrail.DuringCall) == 0 {
		return nil
	}
	var maxBytes, maxTokens int64
	if k := c.p.Key; k != nil {
		maxBytes, maxTokens = metaInt(k.Metadata, "max_input_bytes"), metaInt(k.Metadata, "max_input_tokens")
	}
	body := c.req.obj.Body()
	// The request's body is never written (a mask replaces it, jsonbody
	// makes new bodies): its texts may share its bytes.
	spans := guardrail.TextsShared(body)
	in := c.guardInputOf(spans, false)
	in.Body, in.MaxInputBytes, in.MaxInputTokens = body, maxBytes, maxTokens
	if modes&guardrail.PreCall != 0 {
		res := guardrail.Run(c.r.Context(), sel, guardrail.PreCall, in)
		c.guardOutcomes(res.Outcomes)
		if res.Blocked != nil {
			return guardError(res)
		}
		if res.Texts != nil {
			if err := c.req.obj.Reset(guardrail.RewriteEdits(body, spans, res.Texts, res.Edits)); err != nil {
				return apierror.Internal(err)
			}
			in.Texts = res.Texts
			if c.cap != nil {
				// The content kept for the spend log, callbacks and
				// traces is the masked request, never what was masked.
				c.startCapture()
			}
		}
		cg.restore = res.Restore
	}
	if modes&guardrail.DuringCall != 0 {
		cg.during = make(chan guardrail.Result, 1)
		ctx := c.r.Context()
		go func() { cg.during <- guardrail.Run(ctx, sel, guardrail.DuringCall, in) }()
	}
	return nil
}

// guardInputOf is the guardrails' input for texts.
func (c *call) guardInputOf(spans []guardrail.Span, answer bool) *guardrail.Input {
	in := &guardrail.Input{Texts: make([]string, len(spans)), Response: answer, CallID: c.id, KeyHash: c.p.KeyHash}
	if c.req != nil {
		in.Model = c.req.model
		in.EndUser = c.req.user
	}
	for i, s := range spans {
		in.Texts[i] = s.Text
	}
	if k := c.p.Key; k != nil {
		in.UserID, in.TeamID = k.UserID, k.TeamID
		if k.KeyAlias != nil {
			in.KeyAlias = *k.KeyAlias
		}
	}
	return in
}

func metaInt(md map[string]any, k string) int64 {
	switch v := md[k].(type) {
	case float64:
		return int64(v)
	case int64:
		return v
	case int:
		return int64(v)
	}
	return 0
}

// guardError is the client's error for a blocked call: 400 naming the
// guardrail (OpenAI's shape, or Anthropic's on /v1/messages), or 503 when
// an external guardrail failing closed could not answer.
func guardError(res guardrail.Result) error {
	if res.Unavailable {
		e := apierror.Unavailable(nil, "guardrail %q could not check the request and fails closed", res.Blocked.Name)
		e.Code = "guardrail_unavailable"
		return e
	}
	e := apierror.BadRequest("guardrails", "Violated guardrail policy: guardrail %q blocked the request: %s", res.Blocked.Name, res.Reason)
	e.Code = "guardrail_violation"
	return e
}

// guardOutcomes keeps, counts and logs what the guardrails did; never the
// text they found.
func (c *call) guardOutcomes(os []guardrail.Outcome) {
	if len(os) == 0 {
		return
	}
	c.guard.outcomes = append(c.guard.outcomes, os...)
	for _, o := range os {
		c.g.opts.Guardrails.Record(o)
		if o.Action != guardrail.Passed {
			c.g.log.Info("guardrail", "call_id", c.id, "guardrail", o.Guardrail, "mode", o.Mode, "action", o.Action, "entities", o.Entities)
		}
	}
}

// waitDuring waits for the during_call guardrails, before any of the
// answer is written: a block is the call's answer (the upstream's tokens
// are booked: the call happened).
func (c *call) waitDuring() error {
	cg := c.guard
	if cg == nil || cg.during == nil {
		return nil
	}
	res := <-cg.during
	cg.during = nil
	c.guardOutcomes(res.Outcomes)
	if res.Blocked != nil {
		return guardError(res)
	}
	return nil
}

// guardAnswer runs the post_call guardrails on a whole answer and maps
// output_parse_pii placeholders back. A block is a 400; what the upstream
// produced is booked all the same (finish settles it).
func (c *call) guardAnswer(data []byte) ([]byte, error) {
	cg := c.guard
	if cg == nil {
		return data, nil
	}
	if err := c.waitDuring(); err != nil {
		return nil, err
	}
	if !cg.post && len(cg.restore) == 0 {
		return data, nil
	}
	spans := guardrail.Texts(data)
	if len(spans) == 0 {
		return data, nil
	}
	in := c.guardInputOf(spans, true)
	// Placeholders the request's masks made are mapped back first (only
	// those: the map is this request's), so that the post_call guardrails
	// check what the client gets and their own masks, whatever their
	// placeholders, are never mapped back to the request's text.
	if len(cg.restore) > 0 {
		in.Texts = restoreAll(in.Texts, cg.restore)
	}
	texts := in.Texts
	if cg.post {
		res := guardrail.Run(c.r.Context(), cg.run, guardrail.PostCall, in)
		c.guardOutcomes(res.Outcomes)
		if res.Blocked != nil {
			return nil, guardError(res)
		}
		if res.Texts != nil {
			texts = res.Texts
		}
	}
	return guardrail.Rewrite(data, spans, texts), nil
}

// restoreAll maps placeholders back to their text in each of texts.
func restoreAll(texts []string, restore map[string]string) []string {
	out := texts
	for i, t := range texts {
		if !strings.Contains(t, "<") {
			continue
		}
		r := restoreText(t, restore)
		if r != t {
			if &out[0] == &texts[0] {
				out = append([]string(nil), texts...)
			}
			out[i] = r
		}
	}
	return out
}

// restoreText replaces each <PLACEHOLDER> of restore in t, in one pass.
func restoreText(t string, restore map[string]string) string {
	var b strings.Builder
	at := 0
	for i := 0; i < len(t); {
		j := strings.IndexByte(t[i:], '<')
		if j < 0 {
			break
		}
		i += j
		k := strings.IndexByte(t[i:], '>')
		if k < 0 {
			break
		}
		if v, ok := restore[t[i:i+k+1]]; ok {
			b.WriteString(t[at:i])
			b.WriteString(v)
			at = i + k + 1
		}
		i += k + 1
	}
	if at == 0 {
		return t
	}
	b.WriteString(t[at:])
	return b.String()
}

// guardsOp reports whether the guardrails read op's bodies (not media,
// pass-through or rerank).
func guardsOp(op provider.Op) bool {
	switch op {
	case provider.OpChat, provider.OpCompletions, provider.OpMessages, provider.OpEmbeddings, provider.OpResponses, provider.OpModerations:
		return true
	}
	return false
}

// guardRow puts what the guardrails did on the spend row h settles.
func (c *call) guardRow(h hold) {
	cg := c.guard
	if cg == nil || len(cg.outcomes) == 0 {
		return
	}
	ch, ok := h.(*charge)
	if !ok {
		return
	}
	if b, err := json.Marshal(cg.outcomes); err == nil {
		ch.log.Guardrails = b
	}
}

// guardrailInfo is one entry of GET /guardrails/list, in LiteLLM's shape
// (guardrail_name, litellm_params, guardrail_info) with Tollgate's active:
// false for a kind Tollgate does not serve.
type guardrailInfo struct {
	Name   string         `json:"guardrail_name"`
	Params map[string]any `json:"litellm_params"`
	Info   map[string]any `json:"guardrail_info,omitempty"`
	Active bool           `json:"active"`
}

// listGuardrails serves GET /guardrails/list to any valid key: the
// configured guardrails, credentials left out.
func (g *Gateway) listGuardrails(w http.ResponseWriter, r *http.Request) error {
	if _, err := g.authenticate(r); err != nil {
		return err
	}
	out := struct {
		Guardrails []guardrailInfo `json:"guardrails"`
	}{Guardrails: []guardrailInfo{}}
	for _, gr := range g.opts.Guardrails.List() {
		out.Guardrails = append(out.Guardrails, guardrailInfo{Name: gr.Name, Params: gr.Params, Info: gr.Info, Active: gr.Active})
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(out)
}

// changed reports whether a guardrail masked the request.
func (cg *callGuard) changed() bool {
	for _, o := range cg.outcomes {
		if o.Action == guardrail.Masked {
			return true
		}
	}
	return false
}

// blockedAny reports whether a guardrail blocked the call (a stream it
// ended with an error event among them); nil: none ran.
func (cg *callGuard) blockedAny() bool {
	if cg == nil {
		return false
	}
	for _, o := range cg.outcomes {
		if o.Action == guardrail.Blocked {
			return true
		}
	}
	return false
}
