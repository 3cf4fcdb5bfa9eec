package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/translate"
	"github.com/tollgate/tollgate/internal/usage"
)

// The Responses API. POST /v1/responses is a call like chat's (keys,
// budgets, limits, retries, fallbacks); it reaches a deployment that
// serves the API itself untouched but for the model and the response ids,
// and any other deployment through chat completions (translate package).
//
// Stored responses live at the deployment that created them, so the id a
// client gets names that deployment and the key that asked: it is
// "resp_" and the base64url of the deployment id, eight bytes of the key's
// hash and the upstream's id, sealed with an HMAC under the gateway's
// secret. GET, DELETE and input_items then need no database to find the
// deployment, and only that key (or an admin) may use the id.

// registerResponses mounts the Responses API routes under prefix.
func (g *Gateway) registerResponses(mux Mux, prefix string) {
	mux.Handle("POST "+prefix+"/responses", g.handler(provider.OpResponses))
	stored := apierror.Handler(g.log, g.storedResponse)
	mux.Handle("GET "+prefix+"/responses/{id}", stored)
	mux.Handle("DELETE "+prefix+"/responses/{id}", stored)
	mux.Handle("GET "+prefix+"/responses/{id}/input_items", stored)
}

// nativeResponses reports whether t serves the Responses API itself: OpenAI
// and Azure OpenAI do. Other OpenAI-compatible servers are reached through
// chat completions, as LiteLLM bridges them by default.
func nativeResponses(t *provider.Target) bool {
	switch t.D.Provider {
	case "openai", "azure":
		return t.Serves(provider.OpResponses)
	}
	return false
}

// responsesCall is what a Responses request adds to its call: the
// deployment its previous_response_id lives on, and that id as the client
// and as the upstream know it.
type responsesCall struct {
	pin                      string
	prevClient, prevUpstream string
}

// decodeResponses reads the members of a Responses request the gateway acts
// on: max_output_tokens bounds the output (chat's max_tokens, n and
// stream_options mean nothing here), and previous_response_id pins the call
// to the deployment that holds it, for its owner only.
func (c *call) decodeResponses() error {
	req, o := c.req, &c.req.obj
	req.maxTokens, req.outputs, req.clientUsage = 0, 1, false
	if !o.IsNull("max_output_tokens") {
		n, ok := o.Int("max_output_tokens")
		if !ok || n < 0 {
			return apierror.BadRequest("max_output_tokens", "max_output_tokens must be a non-negative integer")
		}
		req.maxTokens = n
	}
	if in := o.Get("input"); in != nil && string(in) != "null" && in[0] != '"' && in[0] != '[' {
		return apierror.BadRequest("input", "input must be a string or a list of input items")
	}
	if bg, _ := o.Bool("background"); bg {
		// A background response is answered "queued" with no usage and runs
		// afterwards, billed upstream: its cost would never be booked.
		return apierror.BadRequest("background", "background responses are not served through this gateway: their usage is never seen, so they could not be charged; omit background")
	}
	if !o.IsNull("instructions") {
		if _, ok := o.String("instructions"); !ok {
			return apierror.BadRequest("instructions", "instructions must be a string")
		}
	}
	if o.IsNull("previous_response_id") {
		return nil
	}
	prev, ok := o.String("previous_response_id")
	if !ok {
		return apierror.BadRequest("previous_response_id", "previous_response_id must be a string")
	}
	ref, ok := c.g.openResponseID(prev)
	if !ok || !mayRead(c.p, ref) {
		e := apierror.BadRequest("previous_response_id", "Previous response with id '%s' not found: it was not created through this gateway with this key by a deployment that stores responses (responses translated to chat completions are not stored).", clip(prev))
		e.Code = "previous_response_not_found"
		return e
	}
	c.rs = &responsesCall{pin: ref.deployment, prevClient: prev, prevUpstream: ref.upstream}
	return nil
}

// historyBound bounds the prompt of a Responses call whose input lives
// upstream, not in its body: a previous_response_id, a conversation or a
// stored prompt brings turns the body does not hold, and OpenAI bills them
// as input. Such a prompt can fill the model's context window (maxInput,
// referenceCeiling when unknown); 0 for any other call.
func historyBound(c *call, op provider.Op, maxInput int64) int64 {
	o := &c.req.obj
	if op != provider.OpResponses || (o.IsNull("previous_response_id") && o.IsNull("conversation") && o.IsNull("prompt")) {
		return 0
	}
	if maxInput <= 0 {
		return referenceCeiling
	}
	return maxInput
}

// pinned reports whether t may not serve the call: another deployment holds
// its previous response.
func (c *call) pinned(t *provider.Target) bool {
	return c.rs != nil && c.rs.pin != "" && t.D.ID != c.rs.pin
}

// pinTo checks that grp holds the deployment the call is pinned to.
func (c *call) pinTo(grp *router.Group) error {
	for _, t := range grp.Targets {
		if !c.pinned(t) {
			return nil
		}
	}
	e := apierror.BadRequest("previous_response_id", "previous_response_id was created by a deployment of another model than %q: ask the model it was created with", clip(c.req.model))
	e.Code = "previous_response_other_model"
	return e
}

// wire picks how the call reaches t.
func (c *call) wire(t *provider.Target) (wire, bool) {
	if c.op != provider.OpResponses {
		return wireFor(c.op, t)
	}
	switch {
	case nativeResponses(t):
		return c.responsesNative(t), true
	case t.Serves(provider.OpChat):
		return c.responsesViaChat(), true
	}
	// Any deployment a chat request reaches translated (Anthropic,
	// Gemini, ...) takes a Responses request through chat.
	if cw, ok := wireFor(provider.OpChat, t); ok {
		return c.responsesThrough(cw), true
	}
	return wire{}, false
}

// responsesNative passes the exchange through; only the model, and the
// response ids (sealed for the client, opened for the upstream), change.
func (c *call) responsesNative(t *provider.Target) wire {
	return wire{
		op: provider.OpResponses,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			body := req.obj.With("model", quote(model))
			if c.rs == nil {
				return body, nil
			}
			var o jsonbody.Object
			if err := o.Reset(body); err != nil {
				return nil, err
			}
			return o.With("previous_response_id", quote(c.rs.prevUpstream)), nil
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			var o jsonbody.Object
			if err := o.Reset(body); err != nil {
				return nil, usage.Usage{}, err
			}
			u, _ := usage.ParseResponses(o.Get("usage"))
			up, _ := o.String("id")
			return c.sealIDs(t, up, body), u, nil
		},
		stream: func(*request) translate.Stream {
			return &sealedStream{c: c, t: t, inner: translate.ResponsesPassthrough()}
		},
	}
}

// responsesViaChat translates to a chat-only deployment.
func (c *call) responsesViaChat() wire {
	return wire{
		op: provider.OpChat,
		body: func(req *request, model string, _ bool) ([]byte, error) {
			return translate.ResponsesToChat(req.obj.Body(), model)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			return translate.ChatToResponse(body, c.req.obj.Body())
		},
		stream: func(req *request) translate.Stream { return translate.ChatToResponsesStream(req.obj.Body()) },
	}
}

// responsesThrough translates through chat to a deployment that a chat
// request reaches by cw: Responses to chat, then cw's translation, and
// back the same way.
func (c *call) responsesThrough(cw wire) wire {
	asChat := func(req *request, model string) (*request, error) {
		chat, err := translate.ResponsesToChat(req.obj.Body(), model)
		if err != nil {
			return nil, err
		}
		r := &request{model: req.model, stream: req.stream, clientUsage: true} // the usage chunk feeds response.completed
		return r, r.obj.Reset(chat)
	}
	return wire{
		op: cw.op,
		body: func(req *request, model string, askUsage bool) ([]byte, error) {
			r, err := asChat(req, model)
			if err != nil {
				return nil, err
			}
			return cw.body(r, model, askUsage)
		},
		response: func(body []byte) ([]byte, usage.Usage, error) {
			chat, u, err := cw.response(body)
			if err != nil {
				return nil, u, err
			}
			out, _, err := translate.ChatToResponse(chat, c.req.obj.Body())
			return out, u, err
		},
		stream: func(req *request) translate.Stream {
			return translate.Chain(cw.stream(&request{model: req.model, stream: true, clientUsage: true}), translate.ChatToResponsesStream(req.obj.Body()))
		},
		errBody: cw.errBody,
	}
}

// seal is how the response ids of one answer change on their way to the
// client: the upstream's id becomes the sealed one, and the previous
// response's becomes the id the client sent. The call's spend row records
// the sealed id.
type seal struct {
	up, sealed         []byte // quoted JSON strings
	prevUp, prevClient []byte
}

func (c *call) seal(t *provider.Target, up string) *seal {
	sealed := c.g.sealResponseID(t.D.ID, ownerOf(c.p), up)
	c.res.id = sealed
	s := &seal{up: jsonbody.Quote(up), sealed: jsonbody.Quote(sealed)}
	if c.rs != nil {
		s.prevUp, s.prevClient = jsonbody.Quote(c.rs.prevUpstream), jsonbody.Quote(c.rs.prevClient)
	}
	return s
}

// apply rewrites the ids in b: every JSON string equal to an upstream id.
func (s *seal) apply(b []byte) []byte {
	b = bytes.ReplaceAll(b, s.up, s.sealed)
	if s.prevUp != nil {
		b = bytes.ReplaceAll(b, s.prevUp, s.prevClient)
	}
	return b
}

// sealIDs seals the ids of a whole answer whose upstream id is up.
func (c *call) sealIDs(t *provider.Target, up string, body []byte) []byte {
	if up == "" {
		return body
	}
	return c.seal(t, up).apply(body)
}

// replaceString replaces every JSON string value old (quoted) in b.
func replaceString(b []byte, old, new string) []byte {
	return bytes.ReplaceAll(b, jsonbody.Quote(old), jsonbody.Quote(new))
}

// sealedStream passes a Responses stream through with its response ids
// sealed: the upstream's id is learnt from the first event that names it.
type sealedStream struct {
	c     *call
	t     *provider.Target
	inner translate.Stream
	seal  *seal
}

func (s *sealedStream) Event(ev, out []byte) []byte {
	if s.seal == nil {
		if up := streamResponseID(ev); up != "" {
			s.seal = s.c.seal(s.t, up)
		}
	}
	start := len(out)
	out = s.inner.Event(ev, out)
	if s.seal == nil {
		return out
	}
	sealed := s.seal.apply(out[start:])
	return append(out[:start], sealed...)
}

func (s *sealedStream) End(out []byte) []byte      { return s.inner.End(out) }
func (s *sealedStream) Usage() (usage.Usage, bool) { return s.inner.Usage() }
func (s *sealedStream) Chunks() int                { return s.inner.Chunks() }

// streamResponseID is the id of the response an event carries
// (response.created and the others that hold the whole response).
func streamResponseID(ev []byte) string {
	_, data, _ := bytes.Cut(ev, []byte("data:"))
	data, _, _ = bytes.Cut(data, []byte{'\n'})
	var o jsonbody.Object
	if o.Reset(bytes.TrimSpace(data)) != nil {
		return ""
	}
	var r jsonbody.Object
	if raw := o.Get("response"); len(raw) == 0 || r.Reset(raw) != nil {
		return ""
	}
	id, _ := r.String("id")
	return id
}

// ---- response ids ----

// responseRef is what a sealed response id holds.
type responseRef struct {
	deployment string
	owner      [8]byte // the first bytes of the creating key's hash; zero: no key
	upstream   string
}

const (
	idVersion = 1
	idMACLen  = 12
)

// newResponseSecret is the key response ids are sealed with when the
// server gives none: ids then last as long as the process.
func newResponseSecret() []byte {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return b
}

// sealResponseID is the id the client gets for response up of deployment.
func (g *Gateway) sealResponseID(deployment string, owner [8]byte, up string) string {
	raw := make([]byte, 0, 1+binary.MaxVarintLen64+len(deployment)+len(owner)+len(up)+idMACLen)
	raw = append(raw, idVersion)
	raw = binary.AppendUvarint(raw, uint64(len(deployment)))
	raw = append(raw, deployment...)
	raw = append(raw, owner[:]...)
	raw = append(raw, up...)
	raw = append(raw, g.idMAC(raw)...)
	return "resp_" + base64.RawURLEncoding.EncodeToString(raw)
}

// openResponseID reads a sealed id; false when it is not one this gateway
// sealed (another secret, another API's id, a forgery).
func (g *Gateway) openResponseID(id string) (responseRef, bool) {
	enc, ok := strings.CutPrefix(id, "resp_")
	if !ok {
		return responseRef{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil || len(raw) < 1+1+8+idMACLen || raw[0] != idVersion {
		return responseRef{}, false
	}
	body, mac := raw[:len(raw)-idMACLen], raw[len(raw)-idMACLen:]
	if !hmac.Equal(mac, g.idMAC(body)) {
		return responseRef{}, false
	}
	n, k := binary.Uvarint(body[1:])
	rest := body[1+max(k, 0):]
	if k <= 0 || n > uint64(len(rest)) || len(rest)-int(n) < 8 {
		return responseRef{}, false
	}
	ref := responseRef{deployment: string(rest[:n])}
	copy(ref.owner[:], rest[n:n+8])
	ref.upstream = string(rest[n+8:])
	return ref, ref.upstream != ""
}

func (g *Gateway) idMAC(b []byte) []byte {
	m := hmac.New(sha256.New, g.opts.ResponseIDSecret)
	m.Write(b)
	return m.Sum(nil)[:idMACLen]
}

// ownerOf is the part of the caller's key hash a response id holds.
func ownerOf(p *auth.Principal) (o [8]byte) {
	h := p.KeyHash
	if p.Key != nil && p.Key.TokenHash != "" {
		h = p.Key.TokenHash
	}
	if len(h) >= 16 {
		_, _ = hex.Decode(o[:], []byte(h[:16]))
	}
	return o
}

// isAdmin: the master key, or a key of a proxy admin.
func isAdmin(p *auth.Principal) bool {
	return p.Master || p.Role() == auth.RoleProxyAdmin
}

// mayRead reports whether p may use the stored response ref: its creator
// or an admin.
func mayRead(p *auth.Principal, ref responseRef) bool {
	return isAdmin(p) || ownerOf(p) == ref.owner
}

// findTarget is the deployment id of rt, with its group.
func findTarget(rt *router.Router, id string) (*router.Group, *provider.Target) {
	for _, name := range rt.GroupNames() {
		grp, ok := rt.Group(name)
		if !ok {
			continue
		}
		for _, t := range grp.Targets {
			if t.D.ID == id {
				return grp, t
			}
		}
	}
	return nil, nil
}

// storedResponse serves GET and DELETE /v1/responses/{id} and GET
// /v1/responses/{id}/input_items: the request goes to the deployment that
// created the response, for the key that created it or an admin. These
// calls cost no tokens, but each takes a place under the caller's request
// limits and is a spend row of cost 0, as every call that reaches an
// upstream is.
func (g *Gateway) storedResponse(w http.ResponseWriter, r *http.Request) error {
	p, err := g.authenticate(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	ref, ok := g.openResponseID(id)
	if !ok || !mayRead(p, ref) {
		e := apierror.NotFound("", "No response with id '%s' found: it was not created through this gateway with this key by a deployment that stores responses (responses translated to chat completions are not stored).", clip(id))
		e.Code = "response_not_found"
		return e
	}
	grp, t := findTarget(g.Router(), ref.deployment)
	if t == nil || !nativeResponses(t) {
		e := apierror.NotFound("", "Response '%s' was created by deployment %s, which is no longer configured.", clip(id), clip(ref.deployment))
		e.Code = "response_not_found"
		return e
	}
	if !isAdmin(p) && !p.MayUse(grp.Name, grp.AccessGroups) {
		return apierror.Forbidden("this key may no longer use model %q, which created response %s", grp.Name, clip(id))
	}
	release, err := g.admitStored(r, p, grp.Name, t)
	if err != nil {
		return err
	}
	defer release()
	start := time.Now()
	status, err := g.relayStored(w, r, t, ref, id)
	g.recordStored(p, grp.Name, t, storedCallType(r), id, start, status, err)
	return err
}

// relayStored makes a stored-response call to t and writes its answer,
// returning the upstream's status (0 when it did not answer).
func (g *Gateway) relayStored(w http.ResponseWriter, r *http.Request, t *provider.Target, ref responseRef, id string) (int, error) {
	suffix := "/" + url.PathEscape(ref.upstream)
	if strings.HasSuffix(r.URL.Path, "/input_items") {
		suffix += "/input_items"
	}
	ctx, cancel := context.WithTimeout(r.Context(), g.timeoutFor(t, false))
	defer cancel()
	ureq, err := t.ResponsesRequest(ctx, r.Method, suffix, r.URL.Query())
	if err != nil {
		return 0, apierror.Internal(err)
	}
	resp, err := t.Do(ureq)
	if err != nil {
		if ctx.Err() != nil && r.Context().Err() == nil {
			return 0, apierror.GatewayTimeout(err, "deployment %s did not answer within %s", t.D.ID, g.timeoutFor(t, false))
		}
		return 0, apierror.BadGateway(err, "deployment %s could not be reached or broke off", t.D.ID)
	}
	defer resp.Body.Close()
	data, err := readLimited(resp.Body, resp.ContentLength, g.opts.MaxResponseBytes)
	if errors.Is(err, errTooLarge) {
		return resp.StatusCode, tooLargeFailure(t.D.ID, g.opts.MaxResponseBytes).err
	}
	if err != nil {
		return resp.StatusCode, apierror.BadGateway(err, "deployment %s broke off its answer", t.D.ID)
	}
	data = replaceString(data, ref.upstream, id)
	data = g.sealPrevious(data, ref)
	copyHeader(w.Header(), resp.Header)
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(data)
	return resp.StatusCode, errResponded
}

// admitStored takes a stored-response call's place under the limits that
// apply to p's requests on group (rpm_limit, max_parallel_requests, ...);
// release gives it back. Such a call uses no tokens.
func (g *Gateway) admitStored(r *http.Request, p *auth.Principal, group string, t *provider.Target) (release func(), err error) {
	release = func() {}
	if g.opts.Limits == nil {
		return release, nil
	}
	c := &call{g: g, r: r, p: p, req: &request{model: group}, model: group}
	tk, err := g.opts.Limits.admit(c, t)
	if err != nil || tk == nil {
		return release, err
	}
	return func() { g.opts.Limits.done(tk, 0) }, nil
}

// storedCallType is LiteLLM's call type of a stored-response call.
func storedCallType(r *http.Request) string {
	switch {
	case strings.HasSuffix(r.URL.Path, "/input_items"):
		return "alist_input_items"
	case r.Method == http.MethodDelete:
		return "adelete_responses"
	}
	return "aget_responses"
}

// recordStored writes a stored-response call's spend row, of cost 0.
func (g *Gateway) recordStored(p *auth.Principal, group string, t *provider.Target, callType, id string, start time.Time, status int, err error) {
	b, ok := g.opts.Meter.(*Books)
	if !ok || b.Writer == nil {
		return
	}
	if e := apierror.From(err); status == 0 && e != nil {
		status = e.Status
	}
	l := store.SpendLog{RequestID: newCallID(), ResponseID: id, CallType: callType, ModelGroup: group,
		Deployment: t.D.ID, Provider: t.D.Provider, Status: status, StartedAt: start, EndedAt: time.Now()}
	l.LatencyMS = l.EndedAt.Sub(start).Milliseconds()
	chargedTo(&l, p, group)
	b.Writer.Enqueue(l)
}

// sealPrevious seals the previous_response_id a stored response names, for
// the same deployment and owner.
func (g *Gateway) sealPrevious(data []byte, ref responseRef) []byte {
	var o jsonbody.Object
	if o.Reset(data) != nil {
		return data
	}
	prev, ok := o.String("previous_response_id")
	if !ok || prev == "" {
		return data
	}
	return o.With("previous_response_id", jsonbody.Quote(g.sealResponseID(ref.deployment, ref.owner, prev)))
}
