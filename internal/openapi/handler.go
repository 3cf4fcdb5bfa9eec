package openapi

import (
	_ "embed"
	"net/http"
)

//go:embed docs.html
var docsHTML []byte

// Register serves /openapi.json and the docs page at / and /docs.
func Register(handle func(pattern string, h http.Handler), version string) {
	doc := Document(version)
	handle("GET /openapi.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(docsHTML)
	})
	handle("GET /{$}", page)
	handle("GET /docs", page)
}
