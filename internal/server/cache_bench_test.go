package server

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// BenchmarkCacheHandler is one chat request through the whole handler with
// the local response cache on: a miss (a new prompt each time: forwarded to
// the in-process demo upstream, then stored) and a hit (the same prompt:
// served from the cache), as a whole answer and as a stream. The hits'
// latency is reported at p50 and p99 (ns).
func BenchmarkCacheHandler(b *testing.B) {
	cfg, err := config.Parse("b.yaml", []byte("model_list:\n  - model_name: demo\n    litellm_params: {model: demo/demo}\n    model_info: {id: demo}\ngeneral_settings:\n  master_key: sk-1234\nlitellm_settings:\n  cache: true\n"))
	if err != nil {
		b.Fatal(err)
	}
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "tollgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	srv, err := New(cfg, Options{Logger: testLogger, Store: st})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = srv.Serve(ctx, ln); close(done) }()
	defer func() { stop(); <-done }()
	h := srv.Handler()
	req := httptest.NewRequest("POST", "/key/generate", strings.NewReader(`{"max_budget": 1000000}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out struct{ Key string }
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != 200 {
		b.Fatalf("/key/generate: %d %s", rec.Code, rec.Body)
	}
	do := func(b *testing.B, body string, wantHit bool) time.Duration {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+out.Key)
		rec := httptest.NewRecorder()
		t0 := time.Now()
		h.ServeHTTP(rec, req)
		d := time.Since(t0)
		if rec.Code != http.StatusOK || (rec.Header().Get("X-Tollgate-Cache-Hit") == "true") != wantHit {
			b.Fatalf("%d hit=%q want %v %s", rec.Code, rec.Header().Get("X-Tollgate-Cache-Hit"), wantHit, rec.Body)
		}
		return d
	}
	for _, stream := range []string{"", `"stream":true,`} {
		name := "whole"
		if stream != "" {
			name = "stream"
		}
		b.Run(name+"/miss", func(b *testing.B) {
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				do(b, `{"model":"demo",`+stream+`"messages":[{"role":"user","content":"miss `+strconv.Itoa(i)+`"}]}`, false)
			}
		})
		b.Run(name+"/hit", func(b *testing.B) {
			body := `{"model":"demo",` + stream + `"messages":[{"role":"user","content":"hello there"}]}`
			do(b, strings.Replace(body, `"model"`, `"cache":{"no-cache":true},"model"`, 1), false) // store it
			b.ReportAllocs()
			var lat []time.Duration
			for b.Loop() {
				lat = append(lat, do(b, body, true))
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2]), "p50-ns")
			b.ReportMetric(float64(lat[len(lat)*99/100]), "p99-ns")
		})
	}
}
