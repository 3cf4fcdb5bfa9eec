package gateway

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/provider"
)

// vertexCreds are the Vertex AI credentials one /vertex_ai/* call is made
// with, and where they came from (for the error that names what to set).
type vertexCreds struct {
	project, location, credentials, base string
}

// vertexPath reads the project and location a Vertex AI path names in its
// leading segments ({version}/projects/{project}/locations/{location}/...),
// where Vertex AI reads them; either may be empty. The credentials are
// chosen by that project, so a path naming projects/ twice, or holding a
// dot segment, is refused: its upstream could read another project than
// the one the credentials were chosen for.
func vertexPath(path string) (project, location string, err error) {
	decoded, err := url.PathUnescape(path)
	if err != nil {
		return "", "", apierror.BadRequest("", "/vertex_ai/*: the path is not valid: %v", err)
	}
	parts := strings.Split(strings.Trim(decoded, "/"), "/")
	named := 0
	for _, s := range parts {
		switch s {
		case "projects":
			named++
		case ".", "..":
			return "", "", apierror.BadRequest("", "/vertex_ai/*: the path may not hold a %q segment", s)
		}
	}
	if named > 1 {
		return "", "", apierror.BadRequest("", "/vertex_ai/*: the path names projects/ %d times; Vertex AI paths name one project, first: /v1/projects/{project}/locations/{location}/...", named)
	}
	if len(parts) > 0 && parts[0] != "projects" {
		parts = parts[1:] // the API version: v1, v1beta1
	}
	if len(parts) >= 2 && parts[0] == "projects" {
		project = parts[1]
		if len(parts) >= 4 && parts[2] == "locations" {
			location = parts[3]
		}
	}
	return project, location, nil
}

// vertexCredsFor finds the credentials of a call to project and location,
// as LiteLLM does: a vertex_ai deployment with use_in_pass_through for that
// project (and location, when both name one); else default_vertex_config;
// else DEFAULT_VERTEXAI_PROJECT, DEFAULT_VERTEXAI_LOCATION and
// DEFAULT_GOOGLE_APPLICATION_CREDENTIALS. A deployment's api_base lends its
// scheme and host (LiteLLM's vertex api_base is a whole model URL).
func (p *Pass) vertexCredsFor(project, location string) (vertexCreds, bool) {
	for _, d := range p.opts.Deployments() {
		v := d.Vertex
		if d.Provider != "vertex_ai" || v == nil || !v.PassThrough || v.Project != project {
			continue
		}
		if location != "" && v.Location != "" && v.Location != location {
			continue
		}
		return vertexCreds{project: v.Project, location: v.Location, credentials: v.Credentials, base: hostOf(d.APIBase)}, true
	}
	if dc := p.opts.DefaultVertex(); dc != nil {
		return vertexCreds{project: string(dc.VertexProject), location: string(dc.VertexLocation),
			credentials: string(dc.VertexCredentials), base: hostOf(string(dc.APIBase))}, true
	}
	env := p.opts.Getenv
	if proj := env("DEFAULT_VERTEXAI_PROJECT"); proj != "" {
		return vertexCreds{project: proj, location: env("DEFAULT_VERTEXAI_LOCATION"), credentials: env("DEFAULT_GOOGLE_APPLICATION_CREDENTIALS")}, true
	}
	return vertexCreds{}, false
}

// hostOf is a URL's scheme and host ("" when it has none).
func hostOf(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// vertexHost is Vertex AI's regional endpoint for location (the global
// endpoint for "global" or none).
func vertexHost(location string) string {
	if location == "" || location == "global" {
		return "https://aiplatform.googleapis.com"
	}
	return "https://" + location + "-aiplatform.googleapis.com"
}

// serveVertex forwards a request under /vertex_ai/ to Vertex AI's API with
// an OAuth2 access token from the gateway's Google credentials
// (provider.GoogleTokenSource), governed and charged like the other
// provider routes: Gemini's usageMetadata, or Anthropic's usage for Claude
// on Vertex (rawPredict, streamRawPredict).
func (p *Pass) serveVertex(w http.ResponseWriter, r *http.Request) error {
	pr, err := p.authenticate(r)
	if err != nil {
		return err
	}
	sub := subPath(r, "vertex_ai", false)
	project, location, err := vertexPath(sub)
	if err != nil {
		return err
	}
	vc, ok := p.vertexCredsFor(project, location)
	if !ok {
		e := apierror.NotFound("", "/vertex_ai/* has no Vertex AI credentials: configure default_vertex_config (vertex_project, vertex_location, vertex_credentials), a vertex_ai deployment with use_in_pass_through: true, or DEFAULT_VERTEXAI_PROJECT and DEFAULT_GOOGLE_APPLICATION_CREDENTIALS")
		e.Status, e.Type, e.Code = http.StatusNotImplemented, "api_error", "pass_through_not_configured"
		return e
	}
	ts, err := provider.GoogleTokenSource(context.WithoutCancel(r.Context()), vc.credentials)
	if err != nil {
		e := apierror.Unavailable(err, "/vertex_ai/*: the gateway's Vertex AI credentials cannot be used: %v", err)
		e.Code = "pass_through_not_configured"
		return e
	}
	base := vc.base
	if base == "" {
		base = vertexHost(cmp.Or(location, vc.location))
	}
	d := &config.Deployment{ID: "pass-through/vertex_ai", ModelName: "vertex_ai/*", Model: "*", Provider: "vertex_ai", APIBase: base}
	t := provider.PassTarget(d, base, http.Header{}, p.opts.Clients)
	sign := func(req *http.Request, _ []byte) error {
		tok, err := ts.Token()
		if err != nil {
			return fmt.Errorf("vertex ai access token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		return nil
	}
	return p.run(w, r, pr, t, passCall{path: sub, query: withoutKeyParam(r.URL.RawQuery), header: upstreamHeader(r.Header),
		meter: &nativeMeter{read: (*nativeMeter).vertex}, governed: true, sign: sign})
}

// vertex reads a Vertex AI answer's usage: Gemini's usageMetadata, else
// Anthropic's usage (Claude on Vertex speaks the Messages API).
func (m *nativeMeter) vertex(data []byte) {
	if bytes.Contains(data, []byte(`"usageMetadata"`)) {
		m.gemini(data)
		return
	}
	m.anthropic(data)
}
