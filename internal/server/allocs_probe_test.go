package server

import (
	"bufio"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
)

// TestProbeLeanKeepAliveAfterBodyReadWhole: a body the handler read to its
// end (now discarded without a buffer), one read in part, one not read,
// whatever follows Content-Length on the connection — the next request
// pipelined in the same write, trailing bytes that are no request, a
// chunked request (net/http's) — is answered by the lean server as by
// net/http alone, and the connection goes on parsing right.
func TestProbeLeanKeepAliveAfterBodyReadWhole(t *testing.T) {
	got := make(chan leanSeen, 16)
	p := newLeanPair(t, diffHandler(got))
	whole := leanPost("/v1/a", "", `{"n":1}`)
	cases := []struct {
		name, raw string
		n         int
	}{
		{"read whole, then pipelined", whole + leanPost("/v1/b?read=3", "", `{"n":2}`) + whole, 3},
		{"read whole, then a body larger than the buffer read whole", whole + leanPost("/v1/c", "", strings.Repeat("x", 9000)) + whole, 3},
		{"read whole, then trailing bytes that are no request", whole + "{}garbage\r\n\r\n", 2},
		{"read whole, then chunked", whole + "POST /v1/d HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n" + whole, 3},
		{"read in part, then read whole", leanPost("/v1/e?read=2", "", `{"n":5}`) + whole, 2},
		{"read none, then read whole", leanPost("/v1/e?read=none", "", `{"n":6}`) + whole, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := exchangeRaw(t, p.plain, tc.raw, tc.n)
			wantSeen := drain(got, countSeen(want))
			gotA := exchangeRaw(t, p.lean, tc.raw, tc.n)
			gotSeen := drain(got, countSeen(gotA))
			if !reflect.DeepEqual(gotA, want) {
				t.Errorf("lean answers\n%+v\nnet/http's\n%+v", gotA, want)
			}
			if !reflect.DeepEqual(gotSeen, wantSeen) {
				t.Errorf("the handler saw\n%+v\nthrough the lean server, and through net/http\n%+v", gotSeen, wantSeen)
			}
		})
	}

	// The body's bytes arriving after the head, in writes of their own:
	// read whole from the connection, then the next request on it.
	c, err := net.Dial("tcp", p.lean)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	br := bufio.NewReader(c)
	body := `{"late":true}`
	_, _ = io.WriteString(c, strings.TrimSuffix(leanPost("/v1/f", "", body), body))
	for i := range body {
		_, _ = io.WriteString(c, body[i:i+1])
	}
	_, _ = io.WriteString(c, whole)
	for i, path := range []string{"/v1/f", "/v1/a"} {
		a := readAnswer(br)
		if a.Status != "200 OK" || a.Err != "" {
			t.Fatalf("answer %d on one connection: %+v", i, a)
		}
		if s := drain(got, 1); len(s) != 1 || s[0].Path != path {
			t.Fatalf("answer %d: the handler saw %+v, want %s", i, s, path)
		}
	}
}

// countSeen is how many of the answers a handler ran for (200s).
func countSeen(as []leanAnswer) int {
	n := 0
	for _, a := range as {
		if a.Status == "200 OK" {
			n++
		}
	}
	return n
}

// TestProbeBodyDeadlineOnEveryServerPath: request_body_timeout cuts a body
// that trickles, through the real server on both of its paths: the lean
// server (Content-Length) and net/http (a chunked body is handed to it),
// each with apierror.Recover's writer in front of the deadline's setter.
// A setter that did not reach the server's writer would leave both open.
func TestProbeBodyDeadlineOnEveryServerPath(t *testing.T) {
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(mockConfig, "{{UP}}", "http://127.0.0.1:1")+
		"general_settings:\n  master_key: sk-1234\n  request_body_timeout: 1\n"))
	if err != nil {
		t.Fatal(err)
	}
	url, _ := serveSrv(t, cfg, Options{})
	addr := strings.TrimPrefix(url, "http://")
	const head = "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer sk-1234\r\nContent-Type: application/json\r\n"
	paths := []struct{ name, head, drip string }{
		{"lean, Content-Length", head + "Content-Length: 100000\r\n\r\n{", " "},
		{"net/http, chunked", head + "Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n", "1\r\n \r\n"},
	}
	for _, p := range paths {
		t.Run(p.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			done := make(chan struct{})
			defer close(done)
			go func() { // a byte every 200 ms, for a minute at most
				tick := time.NewTicker(200 * time.Millisecond)
				defer tick.Stop()
				for range 300 {
					select {
					case <-done:
						return
					case <-tick.C:
					}
					if _, err := io.WriteString(conn, p.drip); err != nil {
						return
					}
				}
			}()
			if _, err := io.WriteString(conn, p.head); err != nil {
				t.Fatal(err)
			}
			_ = conn.SetReadDeadline(time.Now().Add(45 * time.Second)) // our bound, far past the server's
			b, err := io.ReadAll(conn)
			status, _, _ := strings.Cut(string(b), "\r\n")
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("still open after 45 s (answered %q): the body deadline was not set", status)
			}
			if !strings.HasPrefix(status, "HTTP/1.1 408") {
				t.Fatalf("status %q, want 408", status)
			}
		})
	}
}
