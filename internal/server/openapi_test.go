package server

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/openapi"
)

// TestEveryRouteIsDocumented: the OpenAPI document lists exactly the routes
// the server registers (with a store, so the management API is there).
func TestEveryRouteIsDocumented(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", "http://127.0.0.1:1")+"general_settings:\n  master_key: sk-1234\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(cfg, Options{Logger: testLogger, Store: sqliteStore(t)})
	if err != nil {
		t.Fatal(err)
	}
	var served []string
	for _, r := range srv.Routes() {
		// A catch-all {rest...} is documented as the path parameter {rest}.
		served = append(served, strings.NewReplacer("{$}", "", "...}", "}").Replace(r))
	}
	slices.Sort(served)
	documented := openapi.Routes()
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("route %q is served but missing from the OpenAPI document", r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(served, r) {
			t.Errorf("the OpenAPI document lists %q, which is not served", r)
		}
	}
	if len(served) < 60 {
		t.Fatalf("only %d routes registered", len(served))
	}
}

// TestDocsServed: /openapi.json is the document and / and /docs the
// offline page that renders it (no external resource).
func TestDocsServed(t *testing.T) {
	url := serveCfg(t, config.Default(), Options{Store: sqliteStore(t)})
	var doc struct {
		OpenAPI string         `json:"openapi"`
		Paths   map[string]any `json:"paths"`
	}
	if code := getJSON(t, url+"/openapi.json", "", &doc); code != 200 || doc.OpenAPI != "3.1.0" || len(doc.Paths) < 50 {
		t.Fatalf("/openapi.json: %d %s with %d paths", code, doc.OpenAPI, len(doc.Paths))
	}
	for _, p := range []string{"/", "/docs"} {
		resp, err := http.Get(url + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		page := string(body)
		if resp.StatusCode != 200 || !strings.Contains(page, "/openapi.json") || strings.Contains(page, "https://") || strings.Contains(page, "http://") {
			t.Errorf("%s: %d, or the page is not self-contained", p, resp.StatusCode)
		}
	}
	if resp, _ := http.Get(url + "/no-such-page"); resp.StatusCode != 404 {
		t.Errorf("the docs page swallowed an unknown path: %d", resp.StatusCode)
	}
}
