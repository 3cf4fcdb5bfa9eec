package gateway

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws/protocol/eventstream"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/usage"
)

// bedrockTarget is Bedrock's runtime API with the gateway's AWS
// credentials: those of the first bedrock deployment that has
// aws_access_key_id or aws_profile_name (its api_base too), else the AWS_*
// environment variables and shared files (provider.ResolveAWS, read on each
// call) with AWS_BEDROCK_RUNTIME_ENDPOINT.
func (p *Pass) bedrockTarget() (*provider.Target, config.AWSCredentials, error) {
	var own *config.AWSCredentials
	base := p.opts.Getenv("AWS_BEDROCK_RUNTIME_ENDPOINT")
	for _, d := range p.opts.Deployments() {
		if d.Provider == "bedrock" && d.AWS != nil && (d.AWS.AccessKeyID != "" || d.AWS.Profile != "") {
			own, base = d.AWS, d.APIBase
			break
		}
	}
	creds, err := provider.ResolveAWS(own, p.opts.Getenv)
	if err != nil {
		e := apierror.NotFound("", "/bedrock/* has no usable AWS credentials: %s", strings.TrimPrefix(err.Error(), provider.ErrUnusable.Error()+": "))
		e.Status, e.Type, e.Code = http.StatusNotImplemented, "api_error", "pass_through_not_configured"
		return nil, creds, e
	}
	if base == "" {
		base = "https://bedrock-runtime." + creds.Region + ".amazonaws.com"
	}
	d := &config.Deployment{ID: "pass-through/bedrock", ModelName: "bedrock/*", Model: "*", Provider: "bedrock", APIBase: base}
	return provider.PassTarget(d, base, http.Header{}, p.opts.Clients), creds, nil
}

// serveBedrock forwards a request under /bedrock/ to Bedrock's runtime API,
// signed with SigV4 (provider.SignAWS).
func (p *Pass) serveBedrock(w http.ResponseWriter, r *http.Request) error {
	pr, err := p.authenticate(r)
	if err != nil {
		return err
	}
	t, creds, err := p.bedrockTarget()
	if err != nil {
		return err
	}
	sign := func(req *http.Request, body []byte) error {
		return provider.SignAWS(req.Context(), req, body, creds, "bedrock", time.Now())
	}
	return p.run(w, r, pr, t, passCall{path: subPath(r, "bedrock", false), query: withoutKeyParam(r.URL.RawQuery), header: upstreamHeader(r.Header),
		meter: &nativeMeter{read: (*nativeMeter).bedrock}, governed: true, sign: sign})
}

// bedrock reads Bedrock's usage: the Converse API's usage (inputTokens,
// outputTokens, cache reads and writes), InvokeModel's answer in the
// model's own shape (Anthropic's usage), and in a stream each event's
// payload: Converse's metadata event, or InvokeModel's base64 chunks, whose
// last carries amazon-bedrock-invocationMetrics.
func (m *nativeMeter) bedrock(data []byte) {
	switch {
	case bytes.Contains(data, []byte(`"bytes"`)):
		var v struct {
			Bytes []byte `json:"bytes"` // base64 in JSON
		}
		if json.Unmarshal(data, &v) == nil && len(v.Bytes) > 0 {
			m.bedrock(v.Bytes)
		}
	case bytes.Contains(data, []byte(`"amazon-bedrock-invocationMetrics"`)):
		var v struct {
			Metrics struct {
				InputTokenCount  int64 `json:"inputTokenCount"`
				OutputTokenCount int64 `json:"outputTokenCount"`
			} `json:"amazon-bedrock-invocationMetrics"`
		}
		if json.Unmarshal(data, &v) == nil {
			m.u, m.ok = usage.Usage{Prompt: v.Metrics.InputTokenCount, Completion: v.Metrics.OutputTokenCount}, true
		}
	case bytes.Contains(data, []byte(`"inputTokens"`)):
		var v struct {
			Usage *struct {
				InputTokens           int64 `json:"inputTokens"`
				OutputTokens          int64 `json:"outputTokens"`
				CacheReadInputTokens  int64 `json:"cacheReadInputTokens"`
				CacheWriteInputTokens int64 `json:"cacheWriteInputTokens"`
			} `json:"usage"`
		}
		if json.Unmarshal(data, &v) == nil && v.Usage != nil {
			u := v.Usage // inputTokens excludes the cache, as Anthropic's do
			m.u = usage.Usage{Prompt: u.InputTokens + u.CacheReadInputTokens + u.CacheWriteInputTokens, Completion: u.OutputTokens,
				Cached: u.CacheReadInputTokens, CacheCreation: u.CacheWriteInputTokens}
			m.ok = true
		}
	case bytes.Contains(data, []byte(`"usage"`)):
		m.anthropic(data)
	default:
		m.content(data)
	}
}

// eventFrames splits AWS's binary event stream (application/
// vnd.amazon.eventstream: a 12-byte prelude of total and header lengths
// and a checksum, the headers, the payload, a trailing checksum) as it
// passes by, and hands the meter each JSON payload. A frame over limit is
// skipped.
type eventFrames struct {
	limit  int
	buf    []byte
	skip   int  // bytes of an oversized frame still to drop
	broken bool // a prelude that cannot be: the rest is not read
	m      *nativeMeter
}

func (f *eventFrames) feed(b []byte) {
	if f.broken {
		return
	}
	n := min(f.skip, len(b))
	f.skip -= n
	f.buf = append(f.buf, b[n:]...)
	for len(f.buf) >= 12 {
		total := int(binary.BigEndian.Uint32(f.buf[0:4]))
		headers := int(binary.BigEndian.Uint32(f.buf[4:8]))
		switch {
		case total < 16+headers:
			f.broken, f.buf = true, nil
			return
		case total > f.limit && len(f.buf) < total:
			f.skip, f.buf = total-len(f.buf), f.buf[:0]
			return
		case len(f.buf) < total:
			return
		}
		if total <= f.limit {
			f.read(f.buf[:total])
		}
		f.buf = f.buf[total:]
	}
}

// read hands the meter one whole frame's JSON payload, decoded by AWS's
// decoder (as ConverseStream's are, bedrock.go): a frame whose checksums
// do not hold is not read.
func (f *eventFrames) read(frame []byte) {
	msg, err := eventstream.NewDecoder().Decode(bytes.NewReader(frame), nil)
	if payload := bytes.TrimSpace(msg.Payload); err == nil && len(payload) > 0 && payload[0] == '{' {
		f.m.read(f.m, payload)
	}
}

// subPath is the client's path below /<prefix>, as it sent it (escaped:
// a signed request must go as it is encoded), with /v1 put in front when v1
// and it has none.
func subPath(r *http.Request, prefix string, v1 bool) string {
	sub := strings.TrimPrefix(r.URL.EscapedPath(), "/"+prefix)
	if sub == "" {
		sub = "/"
	}
	if v1 && sub != "/v1" && !strings.HasPrefix(sub, "/v1/") {
		sub = "/v1" + sub
	}
	return sub
}
