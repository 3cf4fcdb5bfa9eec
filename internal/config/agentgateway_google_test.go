package config

import "testing"

// TestAgentgatewayGoogleProviders: agentgateway's gemini and vertex
// provider blocks, in llm.models and in binds, make deployments of the
// gemini and vertex_ai dialects: the key, the Vertex project and region,
// and a host override that names only a host.
func TestAgentgatewayGoogleProviders(t *testing.T) {
	cfg, err := Parse("agw.yaml", []byte(`
llm:
  models:
    - name: flash
      provider: gemini
      params: {model: gemini-2.0-flash, apiKey: g-key, hostOverride: "http://127.0.0.1:9"}
    - name: vflash
      provider: vertex
      params: {model: gemini-2.5-pro, vertexProject: proj-1, vertexRegion: europe-west4}
binds:
  - port: 4000
    listeners:
      - routes:
          - backends:
              - ai:
                  name: vertex-route
                  provider:
                    vertex: {model: gemini-2.0-flash, projectId: proj-2, region: us-east5}
`))
	if err != nil {
		t.Fatal(err)
	}
	byModel := map[string]Deployment{}
	for _, d := range cfg.Deployments {
		byModel[d.ModelName+"|"+d.Model] = d
	}
	if g := byModel["flash|gemini-2.0-flash"]; g.Provider != "gemini" || g.APIKey != "g-key" || g.APIBase != "http://127.0.0.1:9/v1beta" {
		t.Errorf("gemini = %+v", g)
	}
	if v := byModel["vflash|gemini-2.5-pro"]; v.Provider != "vertex_ai" || v.Vertex == nil || v.Vertex.Project != "proj-1" || v.Vertex.Location != "europe-west4" {
		t.Errorf("vertex = %+v", v)
	}
	if r := byModel["*|gemini-2.0-flash"]; r.Provider != "vertex_ai" || r.Vertex == nil || r.Vertex.Project != "proj-2" || r.Vertex.Location != "us-east5" || r.ID != "vertex-route" {
		t.Errorf("vertex route = %+v", r)
	}
}
