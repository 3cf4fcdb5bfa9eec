package provider

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// TestTargetDoMatchesClientDo: Target.Do of a request the lean path takes
// skips http.Client but answers as Client.Do does: the same response, a
// redirect kept (never followed), the same *url.Error for a connection
// refused and for a redirect whose Location does not parse.
func TestTargetDoMatchesClientDo(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		switch r.URL.Path {
		case "/found":
			w.Header().Set("Location", "/ok")
			w.WriteHeader(http.StatusFound)
		case "/temporary":
			w.Header().Set("Location", "/ok")
			w.WriteHeader(http.StatusTemporaryRedirect)
		case "/nowhere":
			w.WriteHeader(http.StatusMovedPermanently)
		case "/badlocation":
			w.Header()["Location"] = []string{"http://[::1"}
			w.WriteHeader(http.StatusSeeOther)
		default:
			_, _ = w.Write([]byte(`{"ok":true}`))
		}
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()

	pool := NewClients()
	defer pool.CloseIdle()
	target := &Target{client: pool.For("openai")}
	if _, ok := target.client.Transport.(*h1Transport); !ok {
		t.Fatalf("the pool's transport is %T, not the lean one", target.client.Transport)
	}
	type answer struct {
		status int
		body   string
		loc    string
		err    string
		urlErr bool
	}
	send := func(do func(*http.Request) (*http.Response, error), u string) answer {
		req, _ := http.NewRequest(http.MethodPost, u, bytes.NewReader([]byte(`{"a":1}`)))
		resp, err := do(req)
		if err != nil {
			var ue *url.Error
			return answer{err: err.Error(), urlErr: errors.As(err, &ue)}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return answer{status: resp.StatusCode, body: string(b), loc: resp.Header.Get("Location")}
	}
	for _, u := range []string{up.URL + "/ok", up.URL + "/found", up.URL + "/temporary", up.URL + "/nowhere", up.URL + "/badlocation", refused + "/v1/chat/completions"} {
		want := send(target.client.Do, u)
		got := send(target.Do, u)
		if got != want {
			t.Errorf("%s: Target.Do %+v, Client.Do %+v", u, got, want)
		}
	}

	// And it is cheaper: Client's redirect bookkeeping (a copy of the
	// request's headers) is not made.
	allocs := func(do func(*http.Request) (*http.Response, error)) float64 {
		return testing.AllocsPerRun(200, func() {
			req, _ := http.NewRequest(http.MethodPost, up.URL+"/ok", bytes.NewReader([]byte(`{"a":1}`)))
			req.Header["Content-Type"] = []string{"application/json"}
			resp, err := do(req)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	viaClient, viaTarget := allocs(target.client.Do), allocs(target.Do)
	if viaTarget > viaClient-3 {
		t.Errorf("Target.Do made %.1f allocations a request, Client.Do %.1f: want at least 3 fewer", viaTarget, viaClient)
	}
}
