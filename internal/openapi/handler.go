package openapi

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"sync"
)

//go:embed docs.html
var docsHTML []byte

// docsCSP allows the docs page its own inline script and style block (by
// hash) and requests to this origin, nothing else: no other script, no
// framing.
var docsCSP = "default-src 'none'; script-src " + inlineHash(docsHTML, "<script>", "</script>") +
	"; style-src " + inlineHash(docsHTML, "<style>", "</style>") +
	"; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// inlineHash is the CSP source ('sha256-…') of the text between open and
// close in page, or 'none' when there is none.
func inlineHash(page []byte, open, close string) string {
	_, rest, ok := bytes.Cut(page, []byte(open))
	if !ok {
		return "'none'"
	}
	body, _, ok := bytes.Cut(rest, []byte(close))
	if !ok {
		return "'none'"
	}
	sum := sha256.Sum256(body)
	return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
}

// documents holds Document's bytes per version, built once per process at
// the first request for them: they depend on nothing else, and building
// them (a large MarshalIndent) costs tens of milliseconds and ≈ 4.6 MB
// allocated, and keeps ≈ 0.35 MB live; a gateway nobody asks for its
// document pays none of it.
var documents sync.Map // version -> []byte, never written to

// document is Document(version), built once per process.
func document(version string) []byte {
	d, ok := documents.Load(version)
	if !ok {
		d, _ = documents.LoadOrStore(version, Document(version))
	}
	return d.([]byte)
}

// Register serves /openapi.json and the docs page at / and /docs.
func Register(handle func(pattern string, h http.Handler), version string) {
	handle("GET /openapi.json", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc := document(version)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	page := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Content-Security-Policy", docsCSP)
		_, _ = w.Write(docsHTML)
	})
	handle("GET /{$}", page)
	handle("GET /docs", page)
}
