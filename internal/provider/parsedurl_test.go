package provider

import (
	"context"
	"net/http"
	"reflect"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
)

// NewRequest copies a URL parsed when the target was built instead of
// parsing the string per request: the request must be what
// http.NewRequestWithContext makes of the string (URL, Host), for every
// dialect and operation, and its URL its own: a change to one request's URL
// (an authorizer adding a query, say) must not reach the next request.
func TestNewRequestURLAsParsed(t *testing.T) {
	bases := []string{"", "http://127.0.0.1:18090/v1", "https://user:pw@example.com:8443/base/", "http://[::1]:9000", "http://h.example:/v1", "http://h.example/a%2Fb?x=1"}
	n := 0
	for name := range dialects {
		for _, base := range bases {
			d := &config.Deployment{ModelName: "m", Provider: name, Model: "mod", APIBase: base, APIKey: "k", APIVersion: "2024-02-01"}
			tg, err := build(d)
			if err != nil {
				continue
			}
			for op := Op(0); op < numOps; op++ {
				if !tg.Serves(op) || tg.modelURL != nil {
					continue
				}
				want, err := http.NewRequest(http.MethodPost, tg.urls[op], nil)
				if err != nil {
					t.Fatalf("%s %q op %v: %v", name, base, op, err)
				}
				if tg.parsed[op] == nil {
					t.Errorf("%s %q op %v: URL %q not parsed at build", name, base, op, tg.urls[op])
					continue
				}
				for i := 0; i < 2; i++ {
					got, err := tg.NewRequest(context.Background(), op, "mod", []byte(`{}`), "", false)
					if err != nil {
						t.Fatal(err)
					}
					if !reflect.DeepEqual(got.URL, want.URL) || got.Host != want.Host {
						t.Fatalf("%s %q op %v: URL %#v host %q, net/http parses %#v host %q", name, base, op, got.URL, got.Host, want.URL, want.Host)
					}
					if got.URL == tg.parsed[op] {
						t.Fatalf("%s %q op %v: the request shares the target's URL", name, base, op)
					}
					got.URL.RawQuery, got.URL.Path, got.URL.Host = "leak=1", "/leak", "leak.example"
				}
				n++
			}
		}
	}
	if n < 20 {
		t.Fatalf("only %d dialect/op pairs checked", n)
	}
}

// TestNewRequestJSONContentTypeShared: a JSON request's Content-Type is the
// shared read-only value, not a slice made per request (one allocation
// fewer on every upstream call), and any other type is the request's own.
func TestNewRequestJSONContentTypeShared(t *testing.T) {
	d := &config.Deployment{ModelName: "m", Provider: "openai", Model: "mod", APIBase: "http://127.0.0.1:18090/v1", APIKey: "k"}
	tg, err := build(d)
	if err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"model":"mod"}`)
	for _, ct := range []string{"", "application/json"} {
		req, err := tg.NewRequest(context.Background(), OpChat, "mod", body, ct, false)
		if err != nil {
			t.Fatal(err)
		}
		if v := req.Header["Content-Type"]; len(v) != 1 || v[0] != "application/json" || cap(v) != 1 {
			t.Fatalf("content type %q: %q (cap %d)", ct, v, cap(v))
		}
		req.Header.Add("Content-Type", "x/y") // reallocates: the shared value stays
		if contentJSON[0] != "application/json" || len(contentJSON) != 1 {
			t.Fatalf("the shared value changed: %q", contentJSON)
		}
	}
	req, err := tg.NewRequest(context.Background(), OpChat, "mod", body, "multipart/form-data; boundary=b", false)
	if err != nil {
		t.Fatal(err)
	}
	if v := req.Header["Content-Type"]; len(v) != 1 || v[0] != "multipart/form-data; boundary=b" {
		t.Fatalf("multipart: %q", v)
	}
	json := testing.AllocsPerRun(200, func() { _, _ = tg.NewRequest(context.Background(), OpChat, "mod", body, "", false) })
	other := testing.AllocsPerRun(200, func() { _, _ = tg.NewRequest(context.Background(), OpChat, "mod", body, "text/plain", false) })
	if json != other-1 {
		t.Errorf("a JSON request: %.0f allocations, another type %.0f: want one fewer", json, other)
	}
}
