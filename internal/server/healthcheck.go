package server

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/translate"
)

// endpointHealth is one deployment's check result, in LiteLLM's /health shape.
type endpointHealth struct {
	Model   string `json:"model"`
	ID      string `json:"model_id"`
	APIBase string `json:"api_base,omitempty"`
	Error   string `json:"error,omitempty"`
}

type healthReport struct {
	Healthy   []endpointHealth `json:"healthy_endpoints"`
	Unhealthy []endpointHealth `json:"unhealthy_endpoints"`
	HealthyN  int              `json:"healthy_count"`
	UnhealthN int              `json:"unhealthy_count"`
	CheckedAt time.Time        `json:"checked_at"`
}

// probes are the smallest request of each upstream dialect, in the order
// a deployment's are tried: a one-token answer, else a one-word embedding
// or rerank (%[1]q is the model).
var probes = []struct {
	op   provider.Op
	body string
}{
	{provider.OpChat, `{"model":%[1]q,"max_tokens":1,"messages":[{"role":"user","content":"ping"}]}`},
	{provider.OpMessages, `{"model":%[1]q,"max_tokens":1,"messages":[{"role":"user","content":"ping"}]}`},
	{provider.OpGenerateContent, `{"contents":[{"role":"user","parts":[{"text":"ping"}]}],"generationConfig":{"maxOutputTokens":1}}`},
	{provider.OpCohereChat, `{"model":%[1]q,"max_tokens":1,"messages":[{"role":"user","content":"ping"}]}`},
	{provider.OpEmbeddings, `{"model":%[1]q,"input":"ping"}`},
	{provider.OpBatchEmbedContents, `{"requests":[{"model":"models/%[1]s","content":{"parts":[{"text":"ping"}]}}]}`},
	{provider.OpCohereEmbed, `{"model":%[1]q,"texts":["ping"],"input_type":"search_document","embedding_types":["float"]}`},
	{provider.OpRerank, `{"model":%[1]q,"query":"ping","documents":["ping"]}`},
}

// checkTarget sends the smallest request the deployment serves (probes).
// Wildcard deployments name no model and are not checked.
func checkTarget(ctx context.Context, t *provider.Target) error {
	model := t.UpstreamModel(t.D.ModelName)
	if model == "" || t.D.Model == "" {
		return nil
	}
	op, body := provider.OpChat, ""
	if t.Serves(provider.OpConverse) {
		// Bedrock: Converse, or InvokeModel for an embedding model.
		var b []byte
		op, b = bedrockProbe(model)
		body = string(b)
	}
	for _, p := range probes {
		if body != "" {
			break
		}
		if t.Serves(p.op) {
			op, body = p.op, fmt.Sprintf(p.body, model)
		}
	}
	if body == "" {
		return fmt.Errorf("provider %q: no operation to check", t.D.Provider)
	}
	if v := t.AnthropicVersionInBody(); v != "" && op == provider.OpMessages {
		// Claude on Vertex AI: the model is in the URL, the version in the body.
		body = fmt.Sprintf(`{"anthropic_version":%q,"max_tokens":1,"messages":[{"role":"user","content":"ping"}]}`, v)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := t.NewRequest(ctx, op, model, []byte(body), "", false)
	if err != nil {
		return err
	}
	resp, err := t.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, msg)
	}
	return nil
}

// bedrockProbe is the smallest request to a Bedrock model: a one-token
// Converse, or for an embedding model (Titan, Cohere) a one-word
// InvokeModel in its family's body.
func bedrockProbe(model string) (provider.Op, []byte) {
	if b, err := translate.EmbeddingsToBedrock([]byte(`{"input":"ping"}`), provider.BedrockModelID(model)); err == nil {
		return provider.OpBedrockEmbed, b
	}
	return provider.OpConverse, []byte(`{"messages":[{"role":"user","content":[{"text":"ping"}]}],"inferenceConfig":{"maxTokens":1}}`)
}

// checkAll checks every deployment at once and feeds the router: a
// deployment that fails gets no traffic until a later check passes.
// Disabled deployments are reported unhealthy without a request.
func (s *Server) checkAll(ctx context.Context) *healthReport {
	rt := s.gw.Router()
	rep := &healthReport{Healthy: []endpointHealth{}, Unhealthy: []endpointHealth{}, CheckedAt: time.Now().UTC()}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range rt.GroupNames() {
		g, _ := rt.Group(name)
		for _, t := range g.Targets {
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := checkTarget(ctx, t)
				e := endpointHealth{Model: t.D.ModelName, ID: t.D.ID, APIBase: t.D.APIBase}
				s.health.SetHealthy(t.D.ID, err == nil)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					e.Error = err.Error()
					rep.Unhealthy = append(rep.Unhealthy, e)
				} else {
					rep.Healthy = append(rep.Healthy, e)
				}
			}()
		}
	}
	wg.Wait()
	// Deployments the router disabled (a provider Tollgate does not serve)
	// are unhealthy, with the reason, as LiteLLM lists one it cannot load.
	for _, x := range rt.Disabled() {
		rep.Unhealthy = append(rep.Unhealthy, endpointHealth{Model: x.D.ModelName, ID: x.D.ID, APIBase: x.D.APIBase, Error: x.Reason})
	}
	rep.HealthyN, rep.UnhealthN = len(rep.Healthy), len(rep.Unhealthy)
	return rep
}

// backgroundChecks runs checkAll every health_check_interval (default 300 s)
// while ctx lives, when general_settings.background_health_checks is on.
func (s *Server) backgroundChecks(ctx context.Context) {
	gs := s.cfg.Load().GeneralSettings
	if !gs.BackgroundHealthChecks {
		return
	}
	every := 300 * time.Second
	if gs.HealthCheckInterval != nil && *gs.HealthCheckInterval > 0 {
		every = time.Duration(*gs.HealthCheckInterval)
	}
	for {
		rep := s.checkAll(ctx)
		s.lastHealth.Store(rep)
		if rep.UnhealthN > 0 {
			s.log.Warn("health check: deployments failing", "unhealthy", rep.UnhealthN, "healthy", rep.HealthyN)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(every):
		}
	}
}

// healthAll is GET /health: the last background check's report when
// background checks run, else a check of every deployment now. It needs the
// master key or an admin's key, as it costs a request per deployment.
func (s *Server) healthAll(w http.ResponseWriter, r *http.Request) error {
	p, err := s.authn.Authenticate(r)
	if err != nil {
		return apierror.Unauthorized("%v", err)
	}
	if !p.Master && !s.authn.Open() && (p.Key == nil || p.Role() != auth.RoleProxyAdmin) {
		return apierror.Forbidden("/health checks every deployment; it needs the master key or an admin's key")
	}
	rep := s.lastHealth.Load()
	if rep == nil {
		rep = s.checkAll(r.Context())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(rep)
}
