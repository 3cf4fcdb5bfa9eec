package callback

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/tollgate/tollgate/internal/config"
)

// newClient is a sink's own HTTP client: attempts are bounded by their
// context, not by a client timeout. It follows no redirect: sinks send
// secrets in headers (DD-API-KEY, a webhook's Authorization, ...) that
// must not go to wherever an answer points; a 3xx is a failed send.
func newClient(insecure bool) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	if insecure {
		t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // s3_verify: false asks for it
	}
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// do sends req and turns an answer that is not 2xx into a *StatusError.
// A transport error names the URL by scheme and host only: a webhook's
// path and query often hold its secret, and the error is logged.
func do(c *http.Client, req *http.Request) error {
	resp, err := c.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			ue.URL = shownURL(req.URL)
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 == 3 {
		return &StatusError{Code: resp.StatusCode, Body: "a redirect (not followed: point the sink at the final URL)"}
	}
	return &StatusError{Code: resp.StatusCode, Body: string(b)}
}

// shownURL is what logs may say of u: its scheme and host.
func shownURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// webhook is LiteLLM's generic_api: the payloads, as they are, POSTed as a
// JSON array (json_array), newline-delimited (ndjson), or one per request
// (single).
type webhook struct {
	client   *http.Client
	endpoint string
	headers  http.Header
	format   string
}

// newWebhook builds the generic_api sink from a callback_settings entry,
// or (set nil) from GENERIC_LOGGER_ENDPOINT and GENERIC_LOGGER_HEADERS
// ("Name=value,Name2=value2"). Only the bare name generic_api falls back
// on those variables: any other entry without an endpoint (absent, or an
// os.environ/ reference to an unset variable) is an error, so that its
// payloads and headers never go to another webhook's endpoint.
func newWebhook(name string, set *config.CallbackSettings, getenv func(string) string) (*webhook, error) {
	w := &webhook{client: newClient(false), headers: http.Header{}, format: "json_array"}
	w.headers.Set("Content-Type", "application/json")
	if env := getenv("GENERIC_LOGGER_HEADERS"); env != "" && (set == nil || name == "generic_api") {
		for item := range strings.SplitSeq(env, ",") {
			if k, v, ok := strings.Cut(item, "="); ok && strings.TrimSpace(k) != "" {
				w.headers.Set(strings.TrimSpace(k), strings.TrimSpace(v))
			}
		}
	}
	if set != nil {
		w.endpoint = string(set.Endpoint)
		for k, v := range set.Headers {
			w.headers.Set(k, string(v))
		}
		switch set.LogFormat {
		case "", "json_array", "ndjson", "single":
			if set.LogFormat != "" {
				w.format = set.LogFormat
			}
		default:
			return nil, fmt.Errorf("log_format %q: want json_array, ndjson or single", set.LogFormat)
		}
		for _, t := range set.EventTypes {
			if t != "llm_api_success" && t != "llm_api_failure" {
				return nil, fmt.Errorf("event_types: %q is not llm_api_success or llm_api_failure", t)
			}
		}
	}
	bare := set == nil || name == "generic_api"
	if w.endpoint == "" && bare {
		w.endpoint = getenv("GENERIC_LOGGER_ENDPOINT")
	}
	if w.endpoint == "" {
		if bare {
			return nil, errors.New("no endpoint: set GENERIC_LOGGER_ENDPOINT (or callback_settings.generic_api.endpoint)")
		}
		return nil, errors.New("no endpoint: callback_settings." + name + ".endpoint is not set (or names an unset environment variable)")
	}
	if u, err := url.Parse(w.endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("endpoint is not an http(s) URL")
	}
	return w, nil
}

func (w *webhook) Encode(p *Payload) ([]byte, error) { return json.Marshal(p) }

func (w *webhook) Send(ctx context.Context, b *Batch) error {
	if w.format == "single" {
		for ; b.Done < len(b.Items); b.Done++ {
			if err := w.post(ctx, b.Items[b.Done]); err != nil {
				return err
			}
		}
		return nil
	}
	var body []byte
	if w.format == "ndjson" {
		body = bytes.Join(b.Items, []byte("\n"))
	} else {
		body = jsonArray(b.Items)
	}
	return w.post(ctx, body)
}

func (w *webhook) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header = w.headers.Clone()
	return do(w.client, req)
}

func jsonArray(items [][]byte) []byte {
	n := 2
	for _, it := range items {
		n += len(it) + 1
	}
	out := make([]byte, 0, n)
	out = append(out, '[')
	for i, it := range items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, it...)
	}
	return append(out, ']')
}

// datadog sends to Datadog's logs intake as LiteLLM's datadog callback
// does: each payload is one log entry whose message is the payload's JSON,
// a batch is one gzipped JSON array.
type datadog struct {
	client                *http.Client
	url, apiKey           string
	source, service, host string
	tags                  string // the fixed part of ddtags
}

// ddEntry is one log entry of the intake (LiteLLM's DatadogPayload).
type ddEntry struct {
	DDSource string `json:"ddsource"`
	DDTags   string `json:"ddtags"`
	Hostname string `json:"hostname"`
	Message  string `json:"message"`
	Service  string `json:"service"`
	Status   string `json:"status"`
}

func newDatadog(getenv func(string) string) (*datadog, error) {
	or := func(name, def string) string {
		if v := getenv(name); v != "" {
			return v
		}
		return def
	}
	d := &datadog{client: newClient(false), apiKey: getenv("DD_API_KEY"),
		source: or("DD_SOURCE", "litellm"), service: or("DD_SERVICE", "litellm-server"), host: getenv("HOSTNAME")}
	d.tags = strings.Join([]string{"env:" + or("DD_ENV", "unknown"), "service:" + d.service,
		"version:" + or("DD_VERSION", "unknown"), "HOSTNAME:" + d.host, "POD_NAME:" + or("POD_NAME", "unknown")}, ",")
	// LiteLLM's names: DD_AGENT_HOST is ddtrace's (APM), set in many pods
	// by Datadog's admission controller, and says nothing of logs.
	if agent := getenv("LITELLM_DD_AGENT_HOST"); agent != "" {
		d.url = "http://" + net.JoinHostPort(agent, or("LITELLM_DD_AGENT_PORT", "10518")) + "/api/v2/logs"
	} else {
		if d.apiKey == "" {
			return nil, errors.New("DD_API_KEY is not set (or set LITELLM_DD_AGENT_HOST to send through a Datadog agent)")
		}
		site := getenv("DD_SITE")
		if site == "" && getenv("DD_BASE_URL") == "" && getenv("DATADOG_BASE_URL") == "" && getenv("_DATADOG_BASE_URL") == "" {
			return nil, errors.New("DD_SITE is not set (for example us5.datadoghq.com)")
		}
		d.url = "https://http-intake.logs." + site + "/api/v2/logs"
	}
	for _, name := range []string{"_DATADOG_BASE_URL", "DATADOG_BASE_URL", "DD_BASE_URL"} {
		if base := getenv(name); base != "" {
			d.url = strings.TrimSuffix(base, "/") + "/api/v2/logs"
			break
		}
	}
	return d, nil
}

// ddMaxEntry is the most bytes one entry may have: the intake takes logs
// of up to 1 MB (and batches of up to 5 MB, 1,000 entries).
const ddMaxEntry = 1_000_000

// ddTruncated replaces the messages and the response of a payload whose
// entry would pass ddMaxEntry.
var ddTruncated = json.RawMessage(`"[truncated by tollgate: the Datadog entry would pass 1 MB]"`)

func (d *datadog) Encode(p *Payload) ([]byte, error) {
	b, err := d.encode(p)
	if err != nil || len(b) <= ddMaxEntry {
		return b, err
	}
	cut := *p
	cut.Messages, cut.Response = ddTruncated, ddTruncated
	if b, err = d.encode(&cut); err != nil || len(b) <= ddMaxEntry {
		return b, err
	}
	return nil, fmt.Errorf("the Datadog entry has %d bytes without its content, over the intake's 1 MB", len(b))
}

func (d *datadog) encode(p *Payload) ([]byte, error) {
	msg, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	e := ddEntry{DDSource: d.source, DDTags: d.tags, Hostname: d.host, Message: string(msg), Service: d.service, Status: "info"}
	if p.Failed() {
		e.Status = "error"
	}
	team := p.Metadata.UserAPIKeyTeamAlias
	if team == nil || *team == "" {
		team = p.Metadata.UserAPIKeyTeamID
	}
	if len(p.RequestTags) > 0 || team != nil && *team != "" {
		var sb strings.Builder
		sb.WriteString(d.tags)
		for _, t := range p.RequestTags {
			if v := ddTagValue(t); v != "" {
				sb.WriteString(",request_tag:")
				sb.WriteString(v)
			}
		}
		if team != nil {
			if v := ddTagValue(*team); v != "" {
				sb.WriteString(",team:")
				sb.WriteString(v)
			}
		}
		e.DDTags = sb.String()
	}
	return json.Marshal(e)
}

// ddTagValue makes a value (a request tag, a team's alias: the client's
// or an admin's words) one Datadog tag value, as LiteLLM normalizes them:
// lower case; letters, digits and _ - : . / kept, anything else (',' that
// would start another tag, spaces, ...) '_'; runs of '_' made one; no
// '_' at either end.
func ddTagValue(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	under := false
	for _, r := range strings.ToLower(s) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("-:./", r) {
			b.WriteRune(r)
			under = false
			continue
		}
		if !under {
			b.WriteByte('_')
			under = true
		}
	}
	return strings.Trim(b.String(), "_")
}

func (d *datadog) Send(ctx context.Context, b *Batch) error {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(jsonArray(b.Items))
	if err := zw.Close(); err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, &buf)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	if d.apiKey != "" {
		req.Header.Set("DD-API-KEY", d.apiKey)
	}
	return do(d.client, req)
}

// s3Sink writes each batch as one JSON lines object (one payload a line)
// with PutObject, signed with SigV4.
type s3Sink struct {
	client *http.Client
	base   *url.URL // the bucket's URL: path-style under an endpoint, else virtual-hosted
	prefix string   // s3_path, without slashes at either end
	region string
	creds  aws.Credentials
	signer *v4.Signer
}

func newS3(p *config.S3CallbackParams, getenv func(string) string) (*s3Sink, error) {
	if p == nil || p.S3BucketName == "" {
		return nil, errors.New("litellm_settings.s3_callback_params.s3_bucket_name is not set")
	}
	// The request's path is escaped as S3 escapes it (awsEscapePath) and
	// signed as sent: escaping it again would not match.
	s := &s3Sink{signer: v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }), prefix: strings.Trim(string(p.S3Path), "/"), region: string(p.S3RegionName)}
	if s.region == "" {
		s.region = getenv("AWS_REGION")
	}
	if s.region == "" {
		s.region = getenv("AWS_DEFAULT_REGION")
	}
	if s.region == "" {
		s.region = "us-east-1"
	}
	s.creds = aws.Credentials{AccessKeyID: string(p.S3AWSAccessKeyID), SecretAccessKey: string(p.S3AWSSecretAccessKey), SessionToken: string(p.S3AWSSessionToken)}
	if s.creds.AccessKeyID == "" {
		s.creds = aws.Credentials{AccessKeyID: getenv("AWS_ACCESS_KEY_ID"), SecretAccessKey: getenv("AWS_SECRET_ACCESS_KEY"), SessionToken: getenv("AWS_SESSION_TOKEN")}
	}
	if s.creds.AccessKeyID == "" || s.creds.SecretAccessKey == "" {
		return nil, errors.New("no credentials: set s3_aws_access_key_id and s3_aws_secret_access_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
	}
	bucket := string(p.S3BucketName)
	if ep := string(p.S3EndpointURL); ep != "" {
		u, err := url.Parse(strings.TrimSuffix(ep, "/"))
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("s3_endpoint_url %q is not an http(s) URL", ep)
		}
		u.Path += "/" + bucket
		s.base = u
	} else {
		scheme := "https"
		if p.S3UseSSL != nil && !*p.S3UseSSL {
			scheme = "http"
		}
		if strings.Contains(bucket, ".") {
			// Virtual-hosted, my.logs.s3.<region>.amazonaws.com is not
			// covered by S3's wildcard certificate: path-style, as the SDKs.
			s.base = &url.URL{Scheme: scheme, Host: "s3." + s.region + ".amazonaws.com", Path: "/" + bucket}
		} else {
			s.base = &url.URL{Scheme: scheme, Host: bucket + ".s3." + s.region + ".amazonaws.com"}
		}
	}
	s.client = newClient(p.S3Verify != nil && !*p.S3Verify)
	return s, nil
}

func (s *s3Sink) Encode(p *Payload) ([]byte, error) { return json.Marshal(p) }

// key is where a batch goes: s3_path/<date>/<time>-<id>.jsonl, dated by the
// batch's oldest payload (UTC).
func (s *s3Sink) key(b *Batch) string {
	t := b.First.UTC()
	k := t.Format("2006-01-02") + "/" + t.Format("15-04-05.000000") + "-" + b.ID + ".jsonl"
	if s.prefix != "" {
		k = s.prefix + "/" + k
	}
	return k
}

func (s *s3Sink) Send(ctx context.Context, b *Batch) error {
	n := 0
	for _, it := range b.Items {
		n += len(it) + 1
	}
	body := make([]byte, 0, n)
	for _, it := range b.Items {
		body = append(body, it...)
		body = append(body, '\n')
	}
	u := *s.base
	u.Path += "/" + s.key(b)
	u.RawPath = awsEscapePath(u.Path)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), bytes.NewReader(body))
	if err != nil {
		return err
	}
	sum := sha256.Sum256(body)
	hash := hex.EncodeToString(sum[:])
	req.Header.Set("Content-Type", "application/x-ndjson")
	req.Header.Set("X-Amz-Content-Sha256", hash)
	if err := s.signer.SignHTTP(ctx, s.creds, req, hash, "s3", s.region, time.Now()); err != nil {
		return err
	}
	return do(s.client, req)
}

// awsEscapePath escapes a path as SigV4 canonicalizes it for S3: every
// byte but the unreserved A-Z a-z 0-9 - . _ ~ (and the '/' separators) as
// %XX, upper case. Go's own path escaping keeps = + : , ; @ and others,
// which S3 escapes in its canonical request: a key holding them would
// never match its signature.
func awsEscapePath(p string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' || c == '/' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}
