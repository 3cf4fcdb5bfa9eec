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
	if _, why := one(c, "http://"+closed+"/", "", nil); why != "connection refused" {
		t.Errorf("closed port: %q", why)
	}
	busy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`))
	}))
	defer busy.Close()
	if _, why := one(c, busy.URL, "k", []byte(`{}`)); why != "HTTP 429 rate_limit_error" {
		t.Errorf("429: %q", why)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	defer slow.Close()
	if _, why := one(c, slow.URL, "", nil); why != "timeout" {
		t.Errorf("slow: %q", why)
	}
	r := Result{Errors: 3, ErrorKinds: map[string]int{"timeout": 1, "HTTP 429": 2}}
	if got := row(r); !strings.HasSuffix(got, "| 3 (HTTP 429: 2, timeout: 1) |") {
		t.Errorf("row: %s", got)
	}
}
