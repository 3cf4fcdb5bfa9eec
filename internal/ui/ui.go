// Package ui is the admin web UI: static files embedded in the binary (no
// Node at run time) that drive the management API from the browser with
// the operator's key. Permissions are the API's: a viewer's key can read
// but every write is refused by the server, and the UI hides what the key
// may not do.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Register serves the UI under /ui/. Its pages load only their own files
// (no inline script or style, no CDN), so they work under the strict
// Content-Security-Policy the server sets on every page.
func Register(handle func(pattern string, h http.Handler)) {
	sub, _ := fs.Sub(static, "static")
	files := http.StripPrefix("/ui/", http.FileServerFS(sub))
	handle("GET /ui/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r) // security headers: server.pageHeaders
	}))
	handle("GET /ui", http.RedirectHandler("/ui/", http.StatusFound))
}
