// Package provider turns a configured deployment into something the gateway
// can send requests to: the upstream URL for each operation, the auth and
// extra headers, and a pooled HTTP client. One file per upstream dialect
// holds what is particular to it.
package provider

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/pricing"
)

// Op is an inference operation, in the OpenAI API's terms.
type Op uint8

// The operations a deployment may serve.
const (
	OpChat Op = iota
	OpCompletions
	OpEmbeddings
	OpMessages // Anthropic Messages API
	OpResponses
	OpImageGenerations
	OpImageEdits
	OpImageVariations
	OpTranscriptions
	OpTranslations
	OpSpeech
	OpModerations
	OpRerank
	// OpGenerateContent is Google's generateContent (Gemini, Vertex AI):
	// chat and Messages requests reach it translated.
	OpGenerateContent
	// OpBatchEmbedContents is Gemini's batchEmbedContents: embeddings
	// requests reach it translated.
	OpBatchEmbedContents
	// OpCohereChat and OpCohereEmbed are Cohere's v2 chat and embed:
	// chat and embeddings requests reach them translated.
	OpCohereChat
	OpCohereEmbed
	// OpConverse is Amazon Bedrock's Converse API (ConverseStream when
	// streamed): chat and Messages requests reach it translated.
	OpConverse
	// OpBedrockEmbed is Bedrock's InvokeModel for an embedding model, in
	// the model family's body (Titan, Cohere): embeddings requests reach
	// it translated.
	OpBedrockEmbed
	numOps
)

var opNames = [numOps + 1]string{"chat", "text_completion", "embeddings", "messages", "responses",
	"image_generation", "image_edit", "image_variation", "audio_transcription", "audio_translation", "audio_speech",
	"moderation", "rerank", "generate_content", "batch_embed_contents", "cohere_chat", "cohere_embed", "converse", "bedrock_embed", OpPassThrough: "pass_through"}

// openAIPaths are the paths of the operations in the OpenAI API (and of
// rerank in the Cohere-style API that OpenAI-compatible servers serve),
// below the API's root (…/v1).
var openAIPaths = map[Op]string{
	OpChat: "/chat/completions", OpCompletions: "/completions", OpEmbeddings: "/embeddings",
	OpResponses: "/responses", OpImageGenerations: "/images/generations", OpImageEdits: "/images/edits",
	OpImageVariations: "/images/variations", OpTranscriptions: "/audio/transcriptions",
	OpTranslations: "/audio/translations", OpSpeech: "/audio/speech", OpModerations: "/moderations",
	OpRerank: "/rerank",
}

// String is the OpenTelemetry GenAI operation name.
func (o Op) String() string { return opNames[o] }

// Target is one deployment made ready to receive requests. It is immutable
// after Build and safe for concurrent use.
type Target struct {
	D      *config.Deployment
	Price  pricing.Price // the table's price with the deployment's overrides
	Priced bool          // false: neither the table nor the config knows a price
	client *http.Client
	urls   [numOps]string // "" where the dialect does not serve the op
	// parsed is urls parsed once, as http.NewRequest would parse each
	// (empty port removed), where the URL does not depend on the model:
	// NewRequest copies it instead of parsing the string per request.
	parsed [numOps]*url.URL
	// root is the API root the dialect's native paths lie under (…/v1 for
	// OpenAI-compatible upstreams, …/openai for Azure, …/v1 for
	// Anthropic), and rootQuery the query every native request carries
	// (Azure's api-version); "" where the dialect has none.
	root, rootQuery string
	header          http.Header // auth and configured headers, set on every request
	wildcard        bool        // forwards the client's model name
	// modelURL, when set, is the URL of a request for op to model: for
	// dialects that name the model in the path, and a stream in the
	// method (Google's models/{model}:streamGenerateContent).
	modelURL func(op Op, model string, stream bool) string
	// authorize, when set, adds credentials that change over time or sign
	// the request (an OAuth2 access token, an AWS SigV4 signature over
	// body) to each request.
	authorize func(req *http.Request, body []byte) error
	// anthropicVersion: see AnthropicVersionInBody.
	anthropicVersion string
}

// dialect describes how one kind of upstream is addressed.
type dialect struct {
	// defaultBase is used when api_base is empty; "" means api_base is required.
	defaultBase string
	// build fills t.urls and t.header from the deployment.
	build func(t *Target, base *url.URL) error
}

var dialects = map[string]dialect{}

func register(names []string, d dialect) {
	for _, n := range names {
		dialects[n] = d
	}
}

// Supported reports whether provider names a dialect Tollgate can forward to.
func Supported(provider string) bool {
	_, ok := dialects[provider]
	return ok
}

// Build prepares d for forwarding on pool's client for its provider. It fails
// for unknown providers, a missing or malformed api_base, and other
// configuration the upstream could never accept, so that such mistakes
// surface at start-up rather than per request.
func Build(d *config.Deployment, pool *Clients) (*Target, error) {
	t, err := build(d)
	if err != nil {
		return nil, err
	}
	t.client = pool.For(d.Provider)
	return t, nil
}

// ErrUnusable marks a deployment that is configured correctly but cannot be
// used on this machine (its credentials cannot be read): the router
// disables it, with the reason, rather than refusing the whole config.
var ErrUnusable = errors.New("deployment unusable")

// Check fails where Build would, without a client: the validation of a
// deployment that is not (yet) routed.
func Check(d *config.Deployment) error {
	_, err := build(d)
	return err
}

func build(d *config.Deployment) (*Target, error) {
	dl, ok := dialects[d.Provider]
	if !ok {
		return nil, fmt.Errorf("model %q: provider %q is not supported", d.ModelName, d.Provider)
	}
	raw := d.APIBase
	if raw == "" {
		raw = dl.defaultBase
	}
	if raw == "" {
		return nil, fmt.Errorf("model %q: provider %q needs litellm_params.api_base", d.ModelName, d.Provider)
	}
	base, err := url.Parse(strings.TrimRight(raw, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("model %q: api_base %q is not an http(s) URL", d.ModelName, raw)
	}
	t := &Target{D: d, header: http.Header{}, wildcard: d.Model == "" || strings.HasSuffix(d.Model, "*")}
	if err := dl.build(t, base); err != nil {
		return nil, fmt.Errorf("model %q: %w", d.ModelName, err)
	}
	for k, v := range d.Headers {
		t.header.Set(k, v)
	}
	t.parseURLs()
	t.Price, t.Priced = DeploymentPrice(d)
	return t, nil
}

// parseURLs fills t.parsed from t.urls (none when a model names the URL).
func (t *Target) parseURLs() {
	if t.modelURL != nil {
		return
	}
	for op, s := range t.urls {
		if s == "" {
			continue
		}
		if u, err := url.Parse(s); err == nil {
			u.Host = removeEmptyPort(u.Host)
			t.parsed[op] = u
		}
	}
}

// removeEmptyPort is net/http's: an empty port ("host:") is dropped.
func removeEmptyPort(host string) string {
	if strings.LastIndex(host, ":") > strings.LastIndex(host, "]") {
		return strings.TrimSuffix(host, ":")
	}
	return host
}

// DeploymentPrice is the table price of the deployment's base_model (else
// its model), with the config's per-token overrides on top.
func DeploymentPrice(d *config.Deployment) (pricing.Price, bool) {
	name := d.BaseModel
	if name == "" {
		name = d.Model
	}
	return priceAs(d, name)
}

// PriceFor is the price of a request this target sends upstream as model:
// the deployment's own (its overrides, base_model or model) when it has one;
// else, on a wildcard route, the table's price of the model forwarded. The
// second result is false when nobody knows a price.
func (t *Target) PriceFor(model string) (pricing.Price, bool) {
	if t.Priced || !t.wildcard || model == "" {
		return t.Price, t.Priced
	}
	return priceAs(t.D, model)
}

// ServedPrice is the table's price of the model an upstream says it served,
// for a deployment whose own price is unknown (a fine-tune, an Azure
// deployment name): the last place a price can come from.
func (t *Target) ServedPrice(served string) (pricing.Price, bool) {
	if served == "" {
		return pricing.Price{}, false
	}
	return priceAs(t.D, served)
}

// priceAs is the table price of name as the deployment's provider serves
// it, with the deployment's per-token overrides on top. Overriding only the
// input price scales the table's cache prices by the same factor.
func priceAs(d *config.Deployment, name string) (pricing.Price, bool) {
	p, ok := pricing.Lookup(d.Provider, name)
	if !ok && d.Provider == "bedrock" {
		p, ok = bedrockPrice(name)
	}
	if in := d.InputCostPerToken; in != nil && p.InputPerToken > 0 {
		// An input price override keeps the model's cache discounts: the
		// cache prices scale with it unless they are overridden too.
		ratio := *in / p.InputPerToken
		p.CacheReadPerToken *= ratio
		p.CacheCreationPerToken *= ratio
	}
	// The table's batch prices are for the table's token prices: an
	// override of those bills batches at half the override (Price.Batch).
	if d.InputCostPerToken != nil {
		p.InputPerTokenBatches = 0
	}
	if d.OutputCostPerToken != nil {
		p.OutputPerTokenBatches = 0
	}
	// An image is priced per image, else per pixel (MediaCost): a
	// deployment that sets either prices its images alone, whatever the
	// table's other image prices.
	if d.InputCostPerImage != nil || d.OutputCostPerImage != nil || d.InputCostPerPixel != nil {
		p.InputPerImage, p.OutputPerImage, p.InputPerPixel = 0, 0, 0
	}
	for _, o := range []struct {
		v   *float64
		dst *float64
	}{
		{d.InputCostPerToken, &p.InputPerToken}, {d.OutputCostPerToken, &p.OutputPerToken},
		{d.CacheReadInputTokenCost, &p.CacheReadPerToken}, {d.CacheCreationInputTokenCost, &p.CacheCreationPerToken},
		{d.InputCostPerSecond, &p.InputPerSecond}, {d.OutputCostPerSecond, &p.OutputPerSecond},
		{d.InputCostPerImage, &p.InputPerImage}, {d.OutputCostPerImage, &p.OutputPerImage},
		{d.InputCostPerPixel, &p.InputPerPixel}, {d.InputCostPerCharacter, &p.InputPerCharacter},
	} {
		if o.v != nil {
			*o.dst = *o.v
			ok = true
		}
	}
	return p, ok
}

// UpstreamModel is the model name to send upstream for a client request
// that asked for requested. A wildcard deployment forwards the client's name,
// less the provider prefix its pattern names: with model_name "openai/*",
// "openai/gpt-4o" goes upstream as "gpt-4o"; with "*" a name goes as is.
func (t *Target) UpstreamModel(requested string) string {
	if !t.wildcard {
		return t.D.Model
	}
	prefix := strings.TrimSuffix(t.D.ModelName, "*")
	if i := strings.LastIndexByte(prefix, '/'); i >= 0 {
		return strings.TrimPrefix(requested, prefix[:i+1])
	}
	return requested
}

// Wildcard reports whether the target forwards the client's model name (its
// price is then the forwarded model's, request by request).
func (t *Target) Wildcard() bool { return t.wildcard }

// Serves reports whether the target's dialect has an endpoint for op.
func (t *Target) Serves(op Op) bool { return op < numOps && t.urls[op] != "" }

// The upstream request's Accept values, shared by every request.
var (
	acceptStream = []string{"text/event-stream"}
	acceptJSON   = []string{"application/json"}
	contentJSON  = []string{"application/json"}
)

// NewRequest builds the upstream request for op to model carrying body,
// of contentType ("" is JSON; a multipart upload names its boundary).
func (t *Target) NewRequest(ctx context.Context, op Op, model string, body []byte, contentType string, stream bool) (*http.Request, error) {
	u := t.urls[op]
	if u == "" {
		return nil, fmt.Errorf("provider %q does not serve %s", t.D.Provider, op)
	}
	var parsed *url.URL
	if t.modelURL != nil {
		u = t.modelURL(op, model, stream)
	} else if parsed = t.parsed[op]; parsed != nil {
		u = "" // parsed at once; the request gets its own copy below
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if parsed != nil {
		*req.URL = *parsed
		req.Host = parsed.Host
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	// Canonical keys assigned directly (Set would canonicalise them again);
	// the Accept values and JSON's Content-Type are shared, read-only
	// slices: a later Add reallocates (their capacity is one), a Set
	// replaces them.
	if contentType == "" || contentType == "application/json" {
		req.Header["Content-Type"] = contentJSON
	} else {
		req.Header["Content-Type"] = []string{contentType}
	}
	if stream {
		req.Header["Accept"] = acceptStream
	} else {
		req.Header["Accept"] = acceptJSON
	}
	if t.authorize != nil { // last: a signature covers the headers above
		if err := t.authorize(req, body); err != nil {
			return nil, err
		}
	}
	return req, nil
}

// Native builds a request to path below the deployment's API root (see
// Target.root: "/files/file-abc" on OpenAI is …/v1/files/file-abc), with
// the deployment's auth and configured headers: the upstream's own API,
// for the routes the gateway passes on rather than calls as an operation
// (stored responses, files, batches). query is added to the root's.
func (t *Target) Native(ctx context.Context, method, path string, query url.Values, body io.Reader) (*http.Request, error) {
	if t.root == "" {
		return nil, fmt.Errorf("provider %q has no native API Tollgate can reach", t.D.Provider)
	}
	u, err := url.Parse(t.root + path)
	if err != nil {
		return nil, err
	}
	q, _ := url.ParseQuery(t.rootQuery)
	for k, v := range query {
		q[k] = v
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	for k, v := range t.header {
		req.Header[k] = v
	}
	return req, nil
}

// HasNative reports whether the deployment's own API is reachable (Native).
func (t *Target) HasNative() bool { return t.root != "" }

// Do sends req on the target's pooled client.
func (t *Target) Do(req *http.Request) (*http.Response, error) {
	if h1, ok := t.client.Transport.(*h1Transport); ok && t.client.Jar == nil && t.client.Timeout == 0 &&
		req.URL != nil && req.RequestURI == "" && req.Header != nil && h1.eligible(req) {
		return h1.do(req)
	}
	return t.client.Do(req)
}

// joinV1 appends path to an OpenAI-compatible base URL. A base with no path
// (http://host:8000) gets the conventional /v1 prefix; a base with a path
// (https://api.openai.com/v1, https://openrouter.ai/api/v1) is used as given,
// which is what the OpenAI SDKs do with base_url.
func joinV1(base *url.URL, path string) string {
	u := *base
	if u.Path == "" {
		u.Path = "/v1"
	}
	u.Path += path
	return u.String()
}

// Clients is a pool of HTTP clients, one per provider: one connection pool
// per upstream dialect, sized for many concurrent streams to few hosts. Its
// owner (a server, or a router built without one) shares it across every
// target it builds, reloads included, so connections outlive a rebuilt
// routing table; two owners in one process share nothing. The zero value is
// not usable: use NewClients.
type Clients struct {
	mu sync.Mutex
	m  map[string]*http.Client
}

// NewClients returns an empty pool.
func NewClients() *Clients { return &Clients{m: map[string]*http.Client{}} }

// CloseIdle closes the idle connections of every client in the pool; the
// owner calls it when it stops. Clients stay usable (a later request dials).
func (p *Clients) CloseIdle() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.m {
		c.CloseIdleConnections()
	}
}

// For returns the pool's client for provider, making it on first use.
func (p *Clients) For(provider string) *http.Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.m[provider]; ok {
		return c
	}
	var rt http.RoundTripper
	if provider == "demo" {
		rt = &demoTransport{}
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConns = 1024
		tr.MaxIdleConnsPerHost = 512
		tr.IdleConnTimeout = 90 * time.Second
		tr.ResponseHeaderTimeout = 0 // bounded per request by the deployment's timeout
		tr.DisableCompression = true // bodies pass through as the upstream encodes them
		tr.ForceAttemptHTTP2 = true
		// Plain http:// upstreams with a known request length take the
		// lean HTTP/1.1 path; everything else goes to tr unchanged.
		rt = newH1Transport(tr)
	}
	c := &http.Client{Transport: rt, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	p.m[provider] = c
	return c
}

// ShownBase is an api_base as it may be shown to callers (response headers,
// spend logs, /model/info): without the user information and query string
// a URL may carry credentials in.
func ShownBase(base string) string {
	if !strings.ContainsAny(base, "?#@") {
		return base // the usual case, without an allocation
	}
	base, _, _ = strings.Cut(base, "?")
	base, _, _ = strings.Cut(base, "#")
	if scheme, rest, ok := strings.Cut(base, "://"); ok {
		host, path, _ := strings.Cut(rest, "/")
		if i := strings.LastIndexByte(host, '@'); i >= 0 {
			host = host[i+1:]
		}
		base = scheme + "://" + host
		if path != "" || strings.HasSuffix(rest, "/") {
			base += "/" + path
		}
	}
	return base
}
