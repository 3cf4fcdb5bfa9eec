package server

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// BenchmarkCacheHandler is one chat request through the whole handler with
// the local response cache on: a miss (a new prompt each time: forwarded to
// the in-process demo upstream, then stored) and a hit (the same prompt:
// served from the cache), as a whole answer and as a stream. The hits'
// latency is reported at p50 and p99 (ns).
func BenchmarkCacheHandler(b *testing.B) {
	h, key := benchGateway(b, "litellm_settings:\n  cache: true\n")
	do := func(b *testing.B, body string, wantHit bool) time.Duration {
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
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
