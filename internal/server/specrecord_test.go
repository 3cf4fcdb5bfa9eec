package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"

	"github.com/tollgate/tollgate/internal/openapi"
)

// specRecord records every request the package's tests send through
// http.DefaultClient, with its response, so that TestMain can have each
// checked against the OpenAPI document: the document cannot drift from
// what the gateway really accepts and answers. The validator (kin-openapi)
// lives in the sdktest module, package spec, so that it stays out of the
// gateway's go.mod; check runs it there on what was recorded.
type specRecord struct {
	base http.RoundTripper
	dir  string

	mu  sync.Mutex
	f   *os.File
	enc *json.Encoder
	err error
}

// specExchange is one line of exchanges.jsonl; sdktest/spec reads it.
type specExchange struct {
	Method         string      `json:"method"`
	URL            string      `json:"url"`
	Header         http.Header `json:"header"`
	Body           []byte      `json:"body"`
	Status         int         `json:"status"`
	ResponseHeader http.Header `json:"response_header"`
	ResponseBody   []byte      `json:"response_body,omitempty"`
	ResponseUnread bool        `json:"response_unread,omitempty"`
}

func newSpecRecord() (*specRecord, error) {
	dir, err := os.MkdirTemp("", "tollgate-spec-")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "openapi.json"), openapi.Document("test"), 0o600); err != nil {
		return nil, err
	}
	f, err := os.Create(filepath.Join(dir, "exchanges.jsonl"))
	if err != nil {
		return nil, err
	}
	return &specRecord{base: http.DefaultTransport, dir: dir, f: f, enc: json.NewEncoder(f)}, nil
}

func (c *specRecord) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
		req.Body.Close()
		req.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp, err := c.base.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	ex := specExchange{Method: req.Method, URL: req.URL.String(), Header: req.Header.Clone(), Body: body,
		Status: resp.StatusCode, ResponseHeader: resp.Header.Clone()}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		// Streams and text are not read: their schema is a string.
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(data))
		ex.ResponseBody, ex.ResponseUnread = data, err != nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = c.enc.Encode(ex)
	}
	return resp, nil
}

// check has sdktest/spec validate what was recorded; full asks that at
// least 200 exchanges were checked (a -run subset may make few).
func (c *specRecord) check(full bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.f.Close(); err != nil && c.err == nil {
		c.err = err
	}
	if c.err != nil {
		return fmt.Errorf("recording exchanges: %w", c.err)
	}
	least := "0"
	if full {
		least = "200"
	}
	cmd := exec.Command("go", "test", "-count=1", "-v", "-run", "^TestExchanges$", "./spec")
	cmd.Dir = "../../sdktest"
	cmd.Env = append(os.Environ(), "TOLLGATE_SPEC_EXCHANGES="+c.dir, "TOLLGATE_SPEC_MIN_EXCHANGES="+least)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("--- PASS: TestExchanges")) {
		return fmt.Errorf("sdktest/spec: %v\n%s", err, out)
	}
	return nil
}

func (c *specRecord) remove() { os.RemoveAll(c.dir) }
