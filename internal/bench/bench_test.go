package bench

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestOneNamesFailures: the harness says why requests failed, so that a
// results table with errors can be read.
func TestOneNamesFailures(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	c := &http.Client{Timeout: 200 * time.Millisecond}
	if _, why := one(c, "http://"+closed+"/", keySet{}, nil); why != "connection refused" {
		t.Errorf("closed port: %q", why)
	}
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`))
	}))
	defer busy.Close()
	if _, why := one(c, busy.URL, keySet{one: "k"}, []byte(`{}`)); why != "HTTP 429 rate_limit_error" {
		t.Errorf("429: %q", why)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	defer slow.Close()
	if _, why := one(c, slow.URL, keySet{}, nil); why != "timeout" {
		t.Errorf("slow: %q", why)
	}
	r := Result{Errors: 3, ErrorKinds: map[string]int{"timeout": 1, "HTTP 429": 2}}
	if got := row(r); !strings.HasSuffix(got, "| 3 (HTTP 429: 2, timeout: 1) |") {
		t.Errorf("row: %s", got)
	}
}

// TestSlope: the soak's trend is a least-squares fit.
func TestSlope(t *testing.T) {
	tests := []struct {
		name string
		x, y []float64
		want float64
	}{
		{"flat", []float64{0, 1, 2, 3}, []float64{5, 5, 5, 5}, 0},
		{"rising", []float64{0, 1, 2, 3}, []float64{1, 3, 5, 7}, 2},
		{"noisy flat", []float64{0, 1, 2, 3}, []float64{4, 6, 4, 6}, 0.4},
		{"one point", []float64{1}, []float64{9}, 0},
	}
	for _, tt := range tests {
		if got := slope(tt.x, tt.y); got < tt.want-1e-9 || got > tt.want+1e-9 {
			t.Errorf("%s: slope %v, want %v", tt.name, got, tt.want)
		}
	}
}
