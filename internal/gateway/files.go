package gateway

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/router"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// The Files and Batches APIs (/v1/files, /v1/batches), passed to a
// deployment's own API under the key's authority. The store records who
// created each file and batch and on which deployment (store.ManagedObject):
// a key reaches only its own, later calls go to the same upstream account,
// and listings are served from the store. A batch's usage is charged once,
// at the batch price, when its results are first seen: a retrieval that
// finds it finished, or a read of its output file (docs/endpoints.md).

// filesProviders are the providers whose name may prefix the routes
// (/openai/v1/files), LiteLLM's /{provider}/v1/files. They are literal
// paths, so that a pass-through route under /openai/ cannot shadow them.
var filesProviders = []string{"openai", "azure"}

// filePurposes are the purposes OpenAI's Files API accepts.
var filePurposes = []string{"assistants", "batch", "fine-tune", "vision", "user_data", "evals"}

// batchEndpoints are the endpoints a batch may run (OpenAI's Batch API).
var batchEndpoints = []string{"/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses", "/v1/moderations"}

// gatewayFields are the members that choose a deployment: read by the
// gateway, never passed upstream.
var gatewayFields = []string{"custom_llm_provider", "model", "target_model_names", "litellm_metadata"}

// maxBatchOutput bounds the output file read to price a batch.
const maxBatchOutput = 512 << 20

type files struct {
	g     *Gateway
	store store.Store
	books *Books // nil: nothing is booked
}

// RegisterFiles mounts the Files and Batches routes, with and without /v1
// and under the provider prefixes. They need the store that records
// ownership; books may be nil (nothing is then booked or refused).
func (g *Gateway) RegisterFiles(mux Mux, st store.Store, books *Books) {
	f := &files{g: g, store: st, books: books}
	prefixes := []string{"/v1", ""}
	for _, p := range filesProviders {
		prefixes = append(prefixes, "/"+p+"/v1")
	}
	h := func(fn func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error) http.Handler {
		return apierror.Handler(g.log, func(w http.ResponseWriter, r *http.Request) error {
			p, err := g.authenticate(r)
			if err != nil {
				return err
			}
			return fn(w, r, p)
		})
	}
	for _, p := range prefixes {
		mux.Handle("POST "+p+"/files", h(f.upload))
		mux.Handle("GET "+p+"/files", h(f.list(store.ObjectFile)))
		mux.Handle("GET "+p+"/files/{file_id}", h(f.fileGet))
		mux.Handle("GET "+p+"/files/{file_id}/content", h(f.fileContent))
		mux.Handle("DELETE "+p+"/files/{file_id}", h(f.fileDelete))
		mux.Handle("POST "+p+"/batches", h(f.batchCreate))
		mux.Handle("GET "+p+"/batches", h(f.list(store.ObjectBatch)))
		mux.Handle("GET "+p+"/batches/{batch_id}", h(f.batchGet))
		mux.Handle("POST "+p+"/batches/{batch_id}/cancel", h(f.batchCancel))
	}
}

// reachesAll: admins (isAdmin) reach every file and batch; proxy admin
// viewers may read them all.
func reachesAll(p *auth.Principal, write bool) bool {
	return isAdmin(p) || (!write && p.Role() == auth.RoleProxyAdminViewer)
}

// owned reads the object id of kind that p may reach. Another key's, and
// one the gateway did not create, are 404 alike, so ids do not leak.
func (f *files) owned(ctx context.Context, p *auth.Principal, kind store.ObjectKind, id, param string, write bool) (*store.ManagedObject, error) {
	o, err := f.store.GetObject(ctx, kind, id)
	if err == nil && (o.KeyHash == p.KeyHash || reachesAll(p, write)) {
		return o, nil
	}
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, apierror.Internal(err)
	}
	name := map[store.ObjectKind]string{store.ObjectFile: "File", store.ObjectBatch: "Batch"}[kind]
	return nil, apierror.NotFound(param, "No such %s object: %s", name, clip(id))
}

// choice is how a request names its deployment: a model group (model, or
// LiteLLM's target_model_names), else a provider (the path's prefix,
// custom_llm_provider as a field, query parameter or header), else openai.
type choice struct{ model, provider string }

func choiceOf(r *http.Request, field func(string) string) choice {
	c := choice{model: field("model")}
	if c.model == "" {
		c.model = strings.TrimSpace(strings.Split(field("target_model_names"), ",")[0])
	}
	c.provider = cmp.Or(pathProvider(r), field("custom_llm_provider"), r.URL.Query().Get("custom_llm_provider"),
		r.Header.Get("custom-llm-provider"), "openai")
	return c
}

// pathProvider is the provider prefix of the route (/azure/v1/files), or "".
func pathProvider(r *http.Request) string {
	first, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if slices.Contains(filesProviders, first) {
		return first
	}
	return ""
}

// pick is the deployment a new file goes to: the model group's first
// deployment with a native API, which p must be allowed to use; or the
// first deployment of the provider among the groups p may use.
func (f *files) pick(p *auth.Principal, c choice) (group string, t *provider.Target, err error) {
	rt := f.g.Router()
	if c.model != "" {
		model := p.ResolveModel(c.model)
		grp, ok := rt.Group(model)
		if !ok {
			e := apierror.NotFound("model", "The model `%s` does not exist or you do not have access to it.", clip(c.model))
			e.Code = "model_not_found"
			return "", nil, e
		}
		if !p.MayUse(model, grp.AccessGroups) && !p.MayUse(c.model, grp.AccessGroups) {
			return "", nil, apierror.Forbidden("this key may not use model %q", clip(c.model))
		}
		for _, t := range grp.Targets {
			if t.HasNative() {
				return grp.Name, t, nil
			}
		}
		return "", nil, apierror.BadRequest("model", "model %q has no deployment whose provider serves files and batches", clip(c.model))
	}
	for _, name := range rt.GroupNames() {
		grp, _ := rt.Group(name)
		if !p.MayUse(name, grp.AccessGroups) {
			continue
		}
		for _, t := range grp.Targets {
			if t.D.Provider == c.provider && t.HasNative() {
				return name, t, nil
			}
		}
	}
	return "", nil, apierror.NotFound("custom_llm_provider", "no deployment of provider %q that this key may use serves files; name a model group in `model`", clip(c.provider))
}

// targetOf is the deployment an object was created on, or, when the config
// no longer has it, another deployment of its model group and provider.
func (f *files) targetOf(o *store.ManagedObject) (*provider.Target, error) {
	if grp, ok := f.g.Router().Group(o.ModelGroup); ok {
		for _, t := range grp.Targets {
			if t.D.ID == o.Deployment {
				return t, nil
			}
		}
		for _, t := range grp.Targets {
			if t.D.Provider == o.Provider && t.HasNative() {
				return t, nil
			}
		}
	}
	e := apierror.NotFound("", "the deployment that holds %s (model group %q) is no longer configured", clip(o.ID), clip(o.ModelGroup))
	e.Code = "model_not_served"
	return nil, e
}

// exchange is one call to a deployment's own API.
type exchange struct {
	status int
	header http.Header
	body   []byte
}

// send makes one call to t's own API and reads the answer (up to limit
// bytes); a 4xx or 5xx answer is returned as the error the client gets.
func (f *files) send(ctx context.Context, t *provider.Target, method, path, contentType string, body []byte, limit int64) (*exchange, error) {
	ctx, cancel := context.WithTimeout(ctx, f.g.timeoutFor(t, false))
	defer cancel()
	resp, err := f.open(ctx, t, method, path, contentType, body)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if limit <= 0 {
		limit = f.g.opts.MaxResponseBytes
	}
	if limit <= 0 {
		limit = maxBatchOutput
	}
	return f.read(t, resp, limit)
}

// open sends one request to t's own API.
func (f *files) open(ctx context.Context, t *provider.Target, method, path, contentType string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := t.Native(ctx, method, path, nil, rd)
	if err != nil {
		return nil, apierror.BadRequest("", "%v", err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := t.Do(req)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			return nil, apierror.GatewayTimeout(err, "deployment %s did not answer in time", t.D.ID)
		}
		return nil, apierror.BadGateway(err, "deployment %s could not be reached", t.D.ID)
	}
	return resp, nil
}

// read reads an answer of t's, up to limit bytes; a 4xx or 5xx answer is
// returned as the error the client gets.
func (f *files) read(t *provider.Target, resp *http.Response, limit int64) (*exchange, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, apierror.BadGateway(err, "deployment %s: the answer was cut short", t.D.ID)
	}
	if int64(len(b)) > limit {
		return nil, apierror.BadGateway(nil, "deployment %s: the answer is larger than %d bytes", t.D.ID, limit)
	}
	x := &exchange{status: resp.StatusCode, header: resp.Header, body: b}
	if x.status >= 400 {
		return x, upstreamError(x)
	}
	return x, nil
}

// priceOutput reads a batch's output file from t and prices it line by
// line as it arrives (batchCost), never holding the file whole.
func (f *files) priceOutput(ctx context.Context, t *provider.Target, id string) (usage.Usage, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, f.g.timeoutFor(t, false))
	defer cancel()
	resp, err := f.open(ctx, t, http.MethodGet, "/files/"+url.PathEscape(id)+"/content", "", nil)
	if err != nil {
		return usage.Usage{}, 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		_, err := f.read(t, resp, 64<<10)
		return usage.Usage{}, 0, err
	}
	u, cost, err := batchCost(t, &capped{r: resp.Body, left: maxBatchOutput})
	if err != nil {
		return u, cost, apierror.BadGateway(err, "deployment %s: the batch output was not read whole", t.D.ID)
	}
	return u, cost, nil
}

// capped reads r up to left bytes, and fails past them: an output cut at
// the bound must not be priced as if it were whole.
type capped struct {
	r    io.Reader
	left int64
}

func (c *capped) Read(b []byte) (int, error) {
	if int64(len(b)) > c.left+1 {
		b = b[:c.left+1]
	}
	n, err := c.r.Read(b)
	if c.left -= int64(n); c.left < 0 {
		return n, fmt.Errorf("the output is larger than %d bytes", maxBatchOutput)
	}
	return n, err
}

// upstreamError is an upstream's refusal as the client gets it: its own
// body when that is an OpenAI-shape error, else one made from it.
func upstreamError(x *exchange) error {
	var shaped struct {
		Error *struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(x.body, &shaped) == nil && shaped.Error != nil {
		return &relayed{x}
	}
	typ := "invalid_request_error"
	if x.status >= 500 {
		typ = "api_error"
	}
	return &apierror.Error{Status: x.status, Type: typ, Code: "upstream_error",
		Message: fmt.Sprintf("the deployment answered %d: %s", x.status, clip(strings.TrimSpace(string(x.body))))}
}

// relayed is an upstream's OpenAI-shape error, written as it came.
type relayed struct{ x *exchange }

func (e *relayed) Error() string {
	return fmt.Sprintf("upstream %d: %s", e.x.status, clip(string(e.x.body)))
}

// reply writes an upstream's answer (or relayed error) to the client.
func reply(w http.ResponseWriter, x *exchange) error {
	ct := x.header.Get("Content-Type")
	if ct == "" {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Length", strconv.Itoa(len(x.body)))
	w.WriteHeader(x.status)
	_, _ = w.Write(x.body)
	return errResponded
}

// fail answers err, writing an upstream's own error as it came.
func fail(w http.ResponseWriter, err error) error {
	if r := (*relayed)(nil); errors.As(err, &r) {
		return reply(w, r.x)
	}
	return err
}

// record books an upstream call that costs nothing as a spend row, so that
// every request that reached an upstream is in the spend logs.
func (f *files) record(p *auth.Principal, o *store.ManagedObject, t *provider.Target, callType string, start time.Time, err error) {
	if f.books == nil {
		return
	}
	status := http.StatusOK
	if e := apierror.From(err); err != nil && e != nil {
		status = e.Status
	}
	if r := (*relayed)(nil); errors.As(err, &r) {
		status = r.x.status
	}
	l := store.SpendLog{RequestID: newCallID(), CallType: callType, Deployment: t.D.ID, Provider: t.D.Provider,
		Status: status, StartedAt: start, EndedAt: time.Now()}
	l.LatencyMS = l.EndedAt.Sub(start).Milliseconds()
	if o != nil {
		l.ModelGroup, l.ResponseID = o.ModelGroup, o.ID
	}
	chargedTo(&l, p, l.ModelGroup)
	if f.books.Writer != nil {
		f.books.Writer.Enqueue(l)
	}
}

// call sends one request for o (nil for a new object) to t and books it.
func (f *files) call(r *http.Request, p *auth.Principal, o *store.ManagedObject, t *provider.Target, callType, method, path, contentType string, body []byte, limit int64) (*exchange, error) {
	start := time.Now()
	x, err := f.send(r.Context(), t, method, path, contentType, body, limit)
	f.record(p, o, t, callType, start, err)
	return x, err
}

// upload is POST /v1/files: a multipart form with file and purpose, and
// optionally the fields that choose the deployment, which are not passed on.
func (f *files) upload(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	body, err := readBody(w, r, f.g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	form, err := parseUpload(r.Header.Get("Content-Type"), body)
	if err != nil {
		return err
	}
	group, t, err := f.pick(p, choiceOf(r, form.value))
	if err != nil {
		return err
	}
	if form.value("purpose") == "batch" {
		file := &form.parts[form.fileAt]
		if file.data, err = f.batchLines(p, group, t, file.data); err != nil {
			return err
		}
	}
	up, contentType, err := form.encode()
	if err != nil {
		return err
	}
	x, err := f.call(r, p, &store.ManagedObject{ModelGroup: group}, t, "acreate_file", http.MethodPost, "/files", contentType, up, 0)
	if err != nil {
		return fail(w, err)
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(x.body, &obj) != nil || obj.ID == "" {
		return apierror.BadGateway(nil, "deployment %s answered a file upload without an id", t.D.ID)
	}
	o := f.newObject(p, store.ObjectFile, obj.ID, group, t, x.body)
	if err := f.store.PutObject(r.Context(), o); err != nil {
		return apierror.Internal(fmt.Errorf("record file %s: %w", obj.ID, err))
	}
	return reply(w, x)
}

func (f *files) newObject(p *auth.Principal, kind store.ObjectKind, id, group string, t *provider.Target, obj []byte) *store.ManagedObject {
	o := &store.ManagedObject{ID: id, Kind: kind, KeyHash: p.KeyHash, ModelGroup: group, Deployment: t.D.ID, Provider: t.D.Provider, Object: obj}
	if p.Key != nil {
		o.UserID, o.TeamID = p.Key.UserID, p.Key.TeamID
	}
	return o
}

// uploadForm is a checked multipart upload: its fields, and the parts to
// send upstream (without the gateway's fields).
type uploadForm struct {
	values map[string]string
	parts  []uploadPart
	fileAt int // the index of the part named file
}

type uploadPart struct {
	header textproto.MIMEHeader
	data   []byte
}

func (u *uploadForm) value(name string) string { return u.values[name] }

// encode is the upload as the upstream gets it, and its content type.
func (u *uploadForm) encode() ([]byte, string, error) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range u.parts {
		pw, err := mw.CreatePart(p.header)
		if err != nil {
			return nil, "", apierror.Internal(err)
		}
		_, _ = pw.Write(p.data)
	}
	if err := mw.Close(); err != nil {
		return nil, "", apierror.Internal(err)
	}
	return buf.Bytes(), mw.FormDataContentType(), nil
}

// parseUpload checks a file upload - multipart, one file, a known purpose -
// and keeps it for the upstream without the fields that chose the
// deployment.
func parseUpload(contentType string, body []byte) (*uploadForm, error) {
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, apierror.BadRequest("file", "a file upload is a multipart/form-data body with the fields file and purpose")
	}
	out := &uploadForm{values: map[string]string{}}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	files := 0
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, apierror.BadRequest("file", "malformed multipart body: %v", err)
		}
		name := part.FormName()
		data, err := io.ReadAll(part)
		if err != nil {
			return nil, apierror.BadRequest("file", "malformed multipart body: %v", err)
		}
		if part.FileName() == "" {
			out.values[name] = string(data)
			if slices.Contains(gatewayFields, name) {
				continue
			}
		} else if name == "file" {
			files++
		}
		if part.FileName() != "" && name == "file" {
			out.fileAt = len(out.parts)
		}
		out.parts = append(out.parts, uploadPart{header: part.Header, data: data})
	}
	if files != 1 {
		return nil, apierror.BadRequest("file", "the upload must carry exactly one file in the field `file`")
	}
	if purpose := out.values["purpose"]; !slices.Contains(filePurposes, purpose) {
		return nil, apierror.BadRequest("purpose", "purpose must be one of %s, not %q", strings.Join(filePurposes, ", "), clip(purpose))
	}
	return out, nil
}

// batchLines checks a batch input file, line by line, and sets each
// line's body.model to the deployment's upstream model, as a chat
// request's model is set: the batch runs only what the key may use, on the
// deployment that holds the file, whatever model a line names. Blank lines
// are dropped. The file is bounded by the upload limit; the lines are
// rewritten one at a time.
func (f *files) batchLines(p *auth.Principal, group string, t *provider.Target, in []byte) ([]byte, error) {
	out := make([]byte, 0, len(in))
	rt := f.g.Router()
	for n, rest := 1, in; len(rest) > 0; n++ {
		var line []byte
		line, rest, _ = bytes.Cut(rest, []byte{'\n'})
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		fixed, err := batchLine(p, rt, group, t, line)
		if err != nil {
			return nil, apierror.BadRequest("file", "line %d of the batch file: %v", n, err)
		}
		out = append(append(out, fixed...), '\n')
	}
	if len(out) == 0 {
		return nil, apierror.BadRequest("file", "the batch file holds no requests: one JSON object per line with custom_id, method, url and body")
	}
	return out, nil
}

// batchLine checks one batch request and returns it with its body's model
// set to t's upstream model.
func batchLine(p *auth.Principal, rt *router.Router, group string, t *provider.Target, line []byte) ([]byte, error) {
	var l struct {
		CustomID string          `json:"custom_id"`
		Method   string          `json:"method"`
		URL      string          `json:"url"`
		Body     json.RawMessage `json:"body"`
	}
	var whole, body jsonbody.Object
	switch {
	case whole.Reset(line) != nil || json.Unmarshal(line, &l) != nil:
		return nil, errors.New("not a JSON object with custom_id, method, url and body")
	case l.CustomID == "":
		return nil, errors.New("custom_id is required")
	case l.Method != http.MethodPost:
		return nil, errors.New(`method must be "POST"`)
	case !slices.Contains(batchEndpoints, l.URL):
		return nil, fmt.Errorf("url must be one of %s", strings.Join(batchEndpoints, ", "))
	case body.Reset(l.Body) != nil:
		return nil, errors.New("body must be a JSON object")
	}
	model, _ := body.String("model")
	if model == "" {
		return nil, errors.New("body.model is required")
	}
	upstream, err := lineModel(p, rt, group, t, model)
	if err != nil {
		return nil, err
	}
	return whole.With("body", body.With("model", quote(upstream))), nil
}

// lineModel is the upstream model a batch line naming model runs: model
// must be the file's model group (or an alias of it, or the deployment's
// own model name), and one the key may use.
func lineModel(p *auth.Principal, rt *router.Router, group string, t *provider.Target, model string) (string, error) {
	if !t.Wildcard() && (model == group || model == t.D.Model || model == t.D.Provider+"/"+t.D.Model) {
		return t.UpstreamModel(model), nil
	}
	resolved := p.ResolveModel(model)
	grp, ok := rt.Group(resolved)
	if !ok || grp.Name != group {
		return "", fmt.Errorf("body.model %q is not model %q, which this file was uploaded for (a batch runs on one deployment)", clip(model), clip(group))
	}
	if !p.MayUse(resolved, grp.AccessGroups) && !p.MayUse(model, grp.AccessGroups) {
		return "", fmt.Errorf("this key may not use model %q", clip(model))
	}
	return t.UpstreamModel(resolved), nil
}

// list serves GET /v1/files and /v1/batches from the store: the caller's
// own (an admin's: all), newest first, as last seen, paged by after and
// limit as OpenAI pages them.
func (f *files) list(kind store.ObjectKind) func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		q := r.URL.Query()
		limit := 20
		if s := q.Get("limit"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n < 1 || n > 10000 {
				return apierror.BadRequest("limit", "limit must be a whole number from 1 to 10000")
			}
			limit = n
		}
		filter := store.ObjectFilter{Kind: kind, After: q.Get("after"), Limit: limit + 1}
		if !reachesAll(p, false) {
			filter.KeyHash = p.KeyHash
		}
		objs, err := f.store.ListObjects(r.Context(), filter)
		if err != nil {
			return apierror.Internal(err)
		}
		more := len(objs) > limit
		objs = objs[:min(len(objs), limit)]
		data := make([]json.RawMessage, len(objs))
		for i, o := range objs {
			data[i] = o.Object
		}
		page := map[string]any{"object": "list", "data": data, "has_more": more}
		if len(objs) > 0 {
			page["first_id"], page["last_id"] = objs[0].ID, objs[len(objs)-1].ID
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(page)
	}
}

func (f *files) fileGet(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	o, t, err := f.ownedTarget(r, p, store.ObjectFile, r.PathValue("file_id"), false)
	if err != nil {
		return err
	}
	x, err := f.call(r, p, o, t, "afile_retrieve", http.MethodGet, "/files/"+url.PathEscape(o.ID), "", nil, 0)
	if err != nil {
		return fail(w, err)
	}
	if err := f.store.UpdateObject(r.Context(), store.ObjectFile, o.ID, x.body); err != nil {
		f.g.log.Warn("file not refreshed in the store", "file_id", o.ID, "err", err)
	}
	return reply(w, x)
}

// fileContent is GET /v1/files/{id}/content. Reading a batch's output file
// charges the batch, if no retrieval did yet; its error file holds no usage,
// so reading it charges nothing.
func (f *files) fileContent(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	o, t, err := f.ownedTarget(r, p, store.ObjectFile, r.PathValue("file_id"), false)
	if err != nil {
		return err
	}
	x, err := f.call(r, p, o, t, "afile_content", http.MethodGet, "/files/"+url.PathEscape(o.ID)+"/content", "", nil, maxBatchOutput)
	if err != nil {
		return fail(w, err)
	}
	if o.ParentID != "" {
		if b, err := f.store.GetObject(r.Context(), store.ObjectBatch, o.ParentID); err == nil && !b.Charged && outputFileOf(b.Object) == o.ID {
			if u, cost, err := batchCost(t, bytes.NewReader(x.body)); err == nil {
				f.charge(context.WithoutCancel(r.Context()), p, b, u, cost)
			}
		}
	}
	return reply(w, x)
}

func (f *files) fileDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	o, t, err := f.ownedTarget(r, p, store.ObjectFile, r.PathValue("file_id"), true)
	if err != nil {
		return err
	}
	x, err := f.call(r, p, o, t, "afile_delete", http.MethodDelete, "/files/"+url.PathEscape(o.ID), "", nil, 0)
	if err != nil {
		return fail(w, err)
	}
	if err := f.store.DeleteObject(r.Context(), store.ObjectFile, o.ID); err != nil && !errors.Is(err, store.ErrNotFound) {
		return apierror.Internal(err)
	}
	return reply(w, x)
}

// ownedTarget is owned and targetOf together.
func (f *files) ownedTarget(r *http.Request, p *auth.Principal, kind store.ObjectKind, id string, write bool) (*store.ManagedObject, *provider.Target, error) {
	param := map[store.ObjectKind]string{store.ObjectFile: "file_id", store.ObjectBatch: "batch_id"}[kind]
	o, err := f.owned(r.Context(), p, kind, id, param, write)
	if err != nil {
		return nil, nil, err
	}
	t, err := f.targetOf(o)
	return o, t, err
}

// batchCreate is POST /v1/batches: the input file must be the caller's,
// the batch runs on the deployment that holds it, and a caller whose budget
// is spent is refused before the upstream is asked.
func (f *files) batchCreate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	body, err := readBody(w, r, f.g.opts.MaxBodyBytes)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return apierror.BadRequest("", "the body must be a JSON object with input_file_id, endpoint and completion_window")
	}
	var req struct {
		InputFileID      string          `json:"input_file_id"`
		Endpoint         string          `json:"endpoint"`
		CompletionWindow string          `json:"completion_window"`
		Metadata         json.RawMessage `json:"metadata"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return apierror.BadRequest("", "the body does not fit a batch: %v", err)
	}
	switch {
	case req.InputFileID == "":
		return apierror.BadRequest("input_file_id", "input_file_id is required")
	case !slices.Contains(batchEndpoints, req.Endpoint):
		return apierror.BadRequest("endpoint", "endpoint must be one of %s", strings.Join(batchEndpoints, ", "))
	case req.CompletionWindow != "24h":
		return apierror.BadRequest("completion_window", "completion_window must be \"24h\"")
	}
	if err := checkMetadata(req.Metadata); err != nil {
		return err
	}
	in, err := f.owned(r.Context(), p, store.ObjectFile, req.InputFileID, "input_file_id", true)
	if err != nil {
		return err
	}
	t, err := f.targetOf(in)
	if err != nil {
		return err
	}
	if grp, ok := f.g.Router().Group(in.ModelGroup); ok && !reachesAll(p, true) && !p.MayUse(in.ModelGroup, grp.AccessGroups) {
		return apierror.Forbidden("this key may not use model %q", clip(in.ModelGroup))
	}
	if f.books != nil {
		if err := f.books.MayAfford(p, in.ModelGroup); err != nil {
			return err
		}
	}
	for _, k := range gatewayFields {
		delete(fields, k)
	}
	up, _ := json.Marshal(fields)
	x, err := f.call(r, p, in, t, "acreate_batch", http.MethodPost, "/batches", "application/json", up, 0)
	if err != nil {
		return fail(w, err)
	}
	var obj struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(x.body, &obj) != nil || obj.ID == "" {
		return apierror.BadGateway(nil, "deployment %s answered a batch without an id", t.D.ID)
	}
	o := f.newObject(p, store.ObjectBatch, obj.ID, in.ModelGroup, t, x.body)
	if err := f.store.PutObject(r.Context(), o); err != nil {
		return apierror.Internal(fmt.Errorf("record batch %s: %w", obj.ID, err))
	}
	f.seen(context.WithoutCancel(r.Context()), p, o, t, x.body)
	return reply(w, x)
}

// outputFileOf is the output_file_id of a batch object, or "".
func outputFileOf(batch []byte) string {
	var b struct {
		OutputFileID string `json:"output_file_id"`
	}
	_ = json.Unmarshal(batch, &b)
	return b.OutputFileID
}

// checkMetadata holds a batch's metadata to OpenAI's rule: at most 16
// pairs, keys of up to 64 characters, string values of up to 512, so that
// the upstream never sees what it would refuse.
func checkMetadata(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var m map[string]any
	if json.Unmarshal(raw, &m) != nil {
		return apierror.BadRequest("metadata", "metadata must be an object of strings")
	}
	if len(m) > 16 {
		return apierror.BadRequest("metadata", "metadata may hold at most 16 pairs, not %d", len(m))
	}
	for k, v := range m {
		s, ok := v.(string)
		switch {
		case utf8.RuneCountInString(k) > 64:
			return apierror.BadRequest("metadata", "metadata keys are at most 64 characters: %q", clip(k))
		case !ok:
			return apierror.BadRequest("metadata", "metadata values must be strings: %q is not", clip(k))
		case utf8.RuneCountInString(s) > 512:
			return apierror.BadRequest("metadata", "metadata values are at most 512 characters: %q", clip(k))
		}
	}
	return nil
}

func (f *files) batchGet(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return f.batchCall(w, r, p, false, "aretrieve_batch", http.MethodGet, "")
}

func (f *files) batchCancel(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	return f.batchCall(w, r, p, true, "acancel_batch", http.MethodPost, "/cancel")
}

// batchCall retrieves or cancels a batch and acts on what it says.
func (f *files) batchCall(w http.ResponseWriter, r *http.Request, p *auth.Principal, write bool, callType, method, suffix string) error {
	o, t, err := f.ownedTarget(r, p, store.ObjectBatch, r.PathValue("batch_id"), write)
	if err != nil {
		return err
	}
	x, err := f.call(r, p, o, t, callType, method, "/batches/"+url.PathEscape(o.ID)+suffix, "", nil, 0)
	if err != nil {
		return fail(w, err)
	}
	if err := f.store.UpdateObject(r.Context(), store.ObjectBatch, o.ID, x.body); err != nil {
		f.g.log.Warn("batch not refreshed in the store", "batch_id", o.ID, "err", err)
	}
	// A client that leaves now does not stop the charge: the batch ended.
	f.seen(context.WithoutCancel(r.Context()), p, o, t, x.body)
	return reply(w, x)
}

// seen acts on a batch as the upstream described it: its output and error
// files become the owner's, and a batch that ended with an output file is
// charged, unless it was already.
func (f *files) seen(ctx context.Context, p *auth.Principal, o *store.ManagedObject, t *provider.Target, obj []byte) {
	var b struct {
		Status       string  `json:"status"`
		OutputFileID *string `json:"output_file_id"`
		ErrorFileID  *string `json:"error_file_id"`
	}
	if json.Unmarshal(obj, &b) != nil {
		return
	}
	for _, id := range []*string{b.OutputFileID, b.ErrorFileID} {
		if id == nil || *id == "" {
			continue
		}
		stub, _ := json.Marshal(map[string]string{"id": *id, "object": "file", "purpose": "batch_output"})
		file := &store.ManagedObject{ID: *id, Kind: store.ObjectFile, KeyHash: o.KeyHash, UserID: o.UserID, TeamID: o.TeamID,
			ModelGroup: o.ModelGroup, Deployment: o.Deployment, Provider: o.Provider, ParentID: o.ID, Object: stub}
		if err := f.store.PutObject(ctx, file); err != nil && !errors.Is(err, store.ErrConflict) {
			f.g.log.Warn("batch output file not recorded", "batch_id", o.ID, "file_id", *id, "err", err)
		}
	}
	ended := b.Status == "completed" || b.Status == "cancelled" || b.Status == "expired"
	if !ended || b.OutputFileID == nil || *b.OutputFileID == "" || o.Charged {
		return
	}
	start := time.Now()
	u, cost, err := f.priceOutput(ctx, t, *b.OutputFileID)
	f.record(p, o, t, "afile_content", start, err)
	if err != nil {
		f.g.log.Warn("batch output not read: it is charged when its output is next read", "batch_id", o.ID, "err", err)
		return
	}
	f.charge(ctx, p, o, u, cost)
}

// charge books a batch's usage, priced at the batch price, once:
// the store's conditional update decides which caller (of any replica)
// books, so a batch is never charged twice.
func (f *files) charge(ctx context.Context, p *auth.Principal, o *store.ManagedObject, u usage.Usage, cost float64) {
	if f.books == nil {
		return
	}
	won, err := f.store.MarkCharged(ctx, o.ID, cost)
	if err != nil {
		f.g.log.Error("batch not charged: the store did not answer; it is charged when it is next read", "batch_id", o.ID, "err", err)
		return
	}
	if !won {
		return
	}
	owner := p
	if p.KeyHash != o.KeyHash {
		owner = f.owner(o)
	}
	f.books.BookUnheld(owner, store.SpendLog{RequestID: "batch:" + o.ID, ResponseID: o.ID, CallType: "aretrieve_batch",
		ModelGroup: o.ModelGroup, Deployment: o.Deployment, Provider: o.Provider,
		PromptTokens: u.Prompt, CompletionTokens: u.Completion, CachedTokens: u.Cached,
		ReportedPromptTokens: u.Prompt, ReportedCompletionTokens: u.Completion,
		Cost: cost, Status: http.StatusOK, StartedAt: o.CreatedAt, EndedAt: time.Now()})
}

// owner is the principal a batch is charged to when someone else (an
// admin) read it: its key as the snapshot has it, else what the row says.
func (f *files) owner(o *store.ManagedObject) *auth.Principal {
	p := &auth.Principal{KeyHash: o.KeyHash}
	snap := f.books.Snap
	if snap == nil {
		return p
	}
	k, ok := snap.Key(o.KeyHash)
	if !ok {
		p.Key = &store.Key{TokenHash: o.KeyHash, UserID: o.UserID, TeamID: o.TeamID}
		return p
	}
	p.Key = k
	if k.UserID != "" {
		p.User, _ = snap.User(k.UserID)
	}
	if k.TeamID != "" {
		p.Team, _ = snap.Team(k.TeamID)
		p.Org, p.OrgBudget = snap.TeamOrganization(p.Team)
		p.MemberBudget = snap.MemberBudget(p.Team, k.UserID)
	}
	return p
}

// batchCost sums the usage of a batch's output lines (each an answer with
// response.body.usage, chat/completions/embeddings or Responses shape) and
// prices each at its model's batch price on t. The output is read line by
// line; an error reading it (cut short, too long) is returned, and the
// partial sums must not be charged.
func batchCost(t *provider.Target, output io.Reader) (total usage.Usage, cost float64, err error) {
	sc := bufio.NewScanner(output)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line struct {
			Response struct {
				Body struct {
					Model string          `json:"model"`
					Usage json.RawMessage `json:"usage"`
				} `json:"body"`
			} `json:"response"`
		}
		if json.Unmarshal(sc.Bytes(), &line) != nil {
			continue
		}
		u := lineUsage(line.Response.Body.Usage)
		price, _ := t.PriceFor(t.UpstreamModel(line.Response.Body.Model))
		cost += price.Batch().Cost(u)
		total.Prompt += u.Prompt
		total.Completion += u.Completion
		total.Cached += u.Cached
	}
	return total, cost, sc.Err()
}

// lineUsage reads an answer's usage in OpenAI's chat shape or the
// Responses API's (input_tokens, output_tokens); negative counts are 0.
func lineUsage(raw json.RawMessage) usage.Usage {
	u, _ := usage.Parse(raw)
	if u.Prompt == 0 && u.Completion == 0 {
		var r struct {
			Input   int64 `json:"input_tokens"`
			Output  int64 `json:"output_tokens"`
			Details *struct {
				Cached int64 `json:"cached_tokens"`
			} `json:"input_tokens_details"`
		}
		if json.Unmarshal(raw, &r) == nil {
			u = usage.Usage{Prompt: r.Input, Completion: r.Output}
			if r.Details != nil {
				u.Cached = r.Details.Cached
			}
		}
	}
	u.Prompt, u.Completion = max(u.Prompt, 0), max(u.Completion, 0)
	u.Cached = min(max(u.Cached, 0), u.Prompt)
	return u
}
