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
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write([]byte(`{"error":{"message":"slow down","type":"rate_limit_error"}}`))
	}))
	defer busy.Close()
	if lat, why := one(c, busy.URL, keySet{one: "k"}, []byte(`{}`)); why != "HTTP 429 rate_limit_error" || lat <= 0 {
		t.Errorf("429: %q after %v", why, lat)
	}
	shed := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":{"message":"overloaded","type":"overloaded_error"}}`))
	}))
	defer shed.Close()
	if _, why := one(c, shed.URL, keySet{}, nil); why != "HTTP 503 overloaded_error without Retry-After" {
		t.Errorf("503 without Retry-After: %q", why)
	}
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
	}))
	defer slow.Close()
	if _, why := one(c, slow.URL, keySet{}, nil); why != "timeout" {
		t.Errorf("slow: %q", why)
	}
	r := Result{Errors: 3, ErrorKinds: map[string]int{"timeout": 1, "HTTP 429": 2}, Throttled: -1, ListenOverflows: -1}
	if got := row(r); !strings.HasSuffix(got, "| – | 0 MB | 3 (HTTP 429: 2, timeout: 1) | – | – |") {
		t.Errorf("row: %s", got)
	}
	r.ShedP99 = 1500 * time.Microsecond
	if got := row(r); !strings.Contains(got, "| 1500 µs | 0 MB |") || strings.Count(got, "|") != strings.Count(Header[:strings.Index(Header, "\n")], "|") {
		t.Errorf("row with a shed p99 (or its cells against the header's): %s", got)
	}
}

// TestKernelCounters: the columns that say what queued a request before
// the gateway saw it (the cgroup's CFS throttling, the kernel's listen
// queue overflows) are read from the kernel's own text, cgroup2's or v1's
// cpu.stat and /proc/net/netstat's TcpExt lines, and shown in the row.
func TestKernelCounters(t *testing.T) {
	v2 := "usage_usec 812345\nuser_usec 600000\nsystem_usec 212345\nnr_periods 90\nnr_throttled 41\nthrottled_usec 2870000\nnr_bursts 0\nburst_usec 0\n"
	if d, ok := parseThrottled(v2); !ok || d != 2870*time.Millisecond {
		t.Errorf("cgroup2 cpu.stat: %v %v, want 2.87s", d, ok)
	}
	v1 := "nr_periods 90\nnr_throttled 41\nthrottled_time 2870000000\n"
	if d, ok := parseThrottled(v1); !ok || d != 2870*time.Millisecond {
		t.Errorf("v1 cpu.stat: %v %v, want 2.87s", d, ok)
	}
	if _, ok := parseThrottled("usage_usec 5\n"); ok {
		t.Error("a cpu.stat without throttling read as one with")
	}
	netstat := "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\nTcpExt: 0 0 1716494 1716600\nIpExt: InNoRoutes ListenOverflows\nIpExt: 0 7\n"
	if n, ok := parseNetstat(netstat, "ListenOverflows"); !ok || n != 1716494 {
		t.Errorf("ListenOverflows: %d %v, want 1716494", n, ok)
	}
	if _, ok := parseNetstat(netstat, "NoSuchCounter"); ok {
		t.Error("a missing counter read")
	}
	if n := listenOverflows(); n < 0 {
		t.Errorf("this machine's /proc/net/netstat: ListenOverflows unread (%d)", n)
	}
	r := Result{Throttled: 412 * time.Millisecond, ListenOverflows: 17607}
	if got := row(r); !strings.HasSuffix(got, "| 0 | 412 ms/s | 17607 |") || strings.Count(got, "|") != strings.Count(Header[:strings.Index(Header, "\n")], "|") {
		t.Errorf("row with throttling and overflows (or its cells against the header's): %s", got)
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
