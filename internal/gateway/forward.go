package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/metrics"
	"github.com/tollgate/tollgate/internal/provider"
)

// result is what one forwarded request produced, for metering and the log.
type result struct {
	status     int
	usage      usage
	hasUsage   bool
	chunks     int           // content-bearing stream events seen
	ttfb       time.Duration // upstream response headers, from the request's start
	upstream   time.Duration // time spent waiting on the upstream
	clientGone bool
	model      string // the model the upstream was asked for
}

// errClientGone: the client disconnected; nothing more can be written, so
// it counts as a response already given.
var errClientGone = fmt.Errorf("client disconnected: %w", apierror.ErrResponded)

func (g *Gateway) serve(w http.ResponseWriter, r *http.Request, op provider.Op) (err error) {
	start := time.Now()
	p, err := g.authenticate(r)
	if err != nil {
		return err
	}
	body, err := readBody(w, r, g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	req, err := decode(body, r.PathValue("model"))
	if err != nil {
		return err
	}
	// From here on every request is logged and counted once, refused or not.
	var (
		res    result
		t      *provider.Target
		c      *charge
		callID = newCallID()
	)
	defer func() { g.observe(r, p, req, t, op, callID, &res, c, err, start) }()

	model := p.ResolveModel(req.model)
	grp, ok := g.Router().Group(model)
	if !ok {
		e := apierror.NotFound("model", "The model `%s` does not exist or you do not have access to it.", req.model)
		e.Code = "model_not_found"
		return e
	}
	if !p.MayUse(model, grp.AccessGroups) && (model == req.model || !p.MayUse(req.model, grp.AccessGroups)) {
		return apierror.Forbidden("this key may not use model %q", req.model)
	}
	t = grp.Pick()
	if !t.Serves(op) {
		return apierror.BadRequest("model", "model %q (provider %s) does not serve %s requests", req.model, t.D.Provider, op)
	}
	askUsage := req.stream && (op == provider.OpChat || op == provider.OpCompletions)
	upstreamBody := req.upstreamBody(t.UpstreamModel(model), askUsage)

	h := w.Header()
	h.Set("x-tollgate-call-id", callID)
	h.Set("x-tollgate-model-id", t.D.ID)

	tk, err := g.admit(r.Context(), p, req, t, model)
	if err != nil {
		return err
	}
	if tk != nil {
		defer func() { g.opts.Limits.Limiter.Done(tk, usedTokens(&res, tk.Est)) }()
		limitHeaders(h, tk)
	}
	if g.opts.Meter != nil {
		var exceeded *ledger.ExceededError
		if c, err = g.opts.Meter.reserve(p, req, t, model, callID, upstreamBody, start); err != nil {
			if errors.As(err, &exceeded) && g.opts.Metrics != nil {
				g.opts.Metrics.BudgetRefused(exceeded.Kind.String())
			}
			return err
		}
		defer c.release() // a panic or an early return never strands a hold
	}
	res.model = t.UpstreamModel(model)
	return g.forward(w, r, t, op, req, upstreamBody, &res, start, c)
}

func (g *Gateway) forward(w http.ResponseWriter, r *http.Request, t *provider.Target, op provider.Op,
	req *request, body []byte, res *result, start time.Time, c *charge) error {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	wd := newWatchdog(g.timeoutFor(t, req.stream), cancel)
	defer wd.stop()

	ureq, err := t.NewRequest(ctx, op, body, req.stream)
	if err != nil {
		return apierror.Internal(err)
	}
	sent := time.Now()
	resp, err := t.Do(ureq)
	res.ttfb = time.Since(start)
	if err != nil {
		res.upstream = time.Since(sent)
		return g.upstreamError(r, t, wd, err)
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	copyHeader(w.Header(), resp.Header)

	if resp.StatusCode < 300 && isEventStream(resp.Header) {
		wd.feed()
		err := streamEvents(w, resp, wd, req.clientUsage, res)
		res.upstream = time.Since(sent) // streams are paced by the upstream
		if err != nil && (res.clientGone || r.Context().Err() != nil) {
			res.clientGone = true
		}
		c.settle(res) // an abandoned stream is still charged for what it produced
		if err != nil {
			if res.clientGone || r.Context().Err() != nil {
				res.clientGone = true
				return errClientGone
			}
			g.log.Warn("upstream stream ended early", "model", req.model, "deployment", t.D.ID, "err", err, "timeout", wd.expired.Load())
		}
		return errResponded
	}

	data, err := io.ReadAll(resp.Body)
	res.upstream = time.Since(sent)
	if err != nil {
		return g.upstreamError(r, t, wd, err)
	}
	if resp.StatusCode < 300 {
		res.usage, res.hasUsage = usageFromBody(data)
		if c != nil {
			c.costHeaders(w.Header(), c.settle(res))
		}
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(resp.StatusCode)
	if _, err := w.Write(data); err != nil {
		res.clientGone = true
		return errClientGone
	}
	return errResponded
}

// upstreamError classifies a failed exchange: the client left, the upstream
// was too slow (504), or it could not be reached or broke off (502).
func (g *Gateway) upstreamError(r *http.Request, t *provider.Target, wd *watchdog, err error) error {
	switch {
	case r.Context().Err() != nil:
		return errClientGone
	case wd.expired.Load():
		return apierror.GatewayTimeout(err, "deployment %s of model %q did not answer within %s", t.D.ID, t.D.ModelName, wd.every)
	default:
		return apierror.BadGateway(err, "deployment %s of model %q could not be reached or broke off", t.D.ID, t.D.ModelName)
	}
}

// streamEvents copies a server-sent-event stream to w event by event,
// reading usage from it and hiding the usage-only chunk that the gateway
// asked for on the client's behalf.
func streamEvents(w http.ResponseWriter, resp *http.Response, wd *watchdog, clientUsage bool, res *result) error {
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.StatusCode)
	if err := rc.Flush(); err != nil {
		res.clientGone = true
		return err
	}
	br := bufio.NewReaderSize(resp.Body, 16<<10)
	var event []byte
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			wd.feed()
			event = append(event, line...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue // a long line: keep accumulating it
		}
		if (err == nil && isBlankLine(line)) || (err != nil && len(event) > 0) {
			if observeEvent(event, clientUsage, res) {
				if _, werr := w.Write(event); werr != nil {
					res.clientGone = true
					return werr
				}
			}
			event = event[:0]
			if err := flushWhenIdle(br, rc); err != nil {
				res.clientGone = true
				return err
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// flushWhenIdle is the streaming flush policy, and the only place it lives:
// events are flushed as soon as the upstream has nothing more buffered, so a
// burst of events costs one flush and a lone event is never held back.
func flushWhenIdle(br *bufio.Reader, rc *http.ResponseController) error {
	if br.Buffered() > 0 {
		return nil
	}
	return rc.Flush()
}

// observeEvent reads usage from one SSE event and reports whether the event
// is to be passed on to the client.
func observeEvent(event []byte, clientUsage bool, res *result) bool {
	for rest := event; len(rest) > 0; {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if len(data) == 0 || data[0] != '{' {
			continue // [DONE] and keep-alives
		}
		if !bytes.Contains(data, []byte(`"usage"`)) {
			res.chunks++
			continue
		}
		u, onlyUsage, ok := usageFromChunk(data)
		if ok {
			res.usage, res.hasUsage = u, true
		}
		if onlyUsage && !clientUsage {
			return false
		}
		if !onlyUsage {
			res.chunks++
		}
	}
	return true
}

func isBlankLine(line []byte) bool {
	return len(line) == 1 || (len(line) == 2 && line[0] == '\r')
}

func isEventStream(h http.Header) bool {
	return strings.HasPrefix(h.Get("Content-Type"), "text/event-stream")
}

// hopHeaders are not forwarded from the upstream's response.
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
}

// copyHeader copies the upstream's response headers, except hop-by-hop ones
// and rate-limit headers the gateway set itself (the client's limits are
// the gateway's, not the provider account's).
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		if hopHeaders[k] {
			continue
		}
		if strings.HasPrefix(k, "X-Ratelimit-") && dst[k] != nil {
			continue
		}
		dst[k] = v
	}
}

// observe writes the request's log line and metrics.
func (g *Gateway) observe(r *http.Request, p *auth.Principal, req *request, t *provider.Target, op provider.Op,
	callID string, res *result, c *charge, err error, start time.Time) {
	status := res.status
	switch {
	case res.clientGone:
		status = 499
	case err != nil && !errors.Is(err, errResponded):
		status = apierror.From(err).Status
	}
	total := time.Since(start)
	overhead := max(total-res.upstream, 0)
	keyPrefix := ""
	if len(p.KeyHash) >= 8 {
		keyPrefix = p.KeyHash[:8]
	}
	var alias, user, team, deployment, prov string
	if k := p.Key; k != nil {
		if k.KeyAlias != nil {
			alias = *k.KeyAlias
		}
		user, team = k.UserID, k.TeamID
	}
	if t != nil {
		deployment, prov = t.D.ID, t.D.Provider
	}
	cost := 0.0
	if c != nil {
		cost = c.cost
	}
	g.log.LogAttrs(r.Context(), slog.LevelInfo, "request",
		slog.String("call_id", callID),
		slog.String("op", op.String()),
		slog.String("key_hash", keyPrefix),
		slog.String("key_alias", alias),
		slog.String("user", user),
		slog.String("team", team),
		slog.String("end_user", req.user),
		slog.String("model_group", req.model),
		slog.String("deployment", deployment),
		slog.String("provider", prov),
		slog.Bool("stream", req.stream),
		slog.Int("status", status),
		slog.Int64("prompt_tokens", res.usage.prompt),
		slog.Int64("completion_tokens", res.usage.completion),
		slog.Bool("usage_reported", res.hasUsage),
		slog.Float64("cost", cost),
		slog.Duration("latency", total),
		slog.Duration("overhead", overhead),
	)
	if m := g.opts.Metrics; m != nil {
		m.ObserveRequest(&metrics.Request{
			Operation: op.String(), Provider: prov, RequestModel: req.model, ResponseModel: res.model, ModelGroup: req.model,
			Status: status, PromptTokens: res.usage.prompt, CompletionTokens: res.usage.completion, HasUsage: res.hasUsage,
			Duration: total, TTFT: res.ttfb, Overhead: overhead, Stream: req.stream, Cost: cost,
			KeyHash: p.KeyHash, KeyAlias: alias, User: user, Team: team, EndUser: req.user,
		})
	}
}
