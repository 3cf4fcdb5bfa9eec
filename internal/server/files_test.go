package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
)

// Batch tokens bill at half these prices (no batch price overrides them).
const filesConfig = `
model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: "{{UP}}", api_key: sk-up, input_cost_per_token: 0.00001, output_cost_per_token: 0.0001}
  - model_name: other
    litellm_params: {model: openai/other, api_base: "{{UP}}", api_key: sk-up-2, input_cost_per_token: 0, output_cost_per_token: 0.0001}
  - model_name: failing
    litellm_params: {model: openai/failing, api_base: "{{UP}}", api_key: sk-up-3, headers: {x-mock-status: "500"}}
general_settings:
  master_key: sk-1234
`

// batchLine is one batch request: "one two three four" is 4 prompt tokens
// to the mock, and it answers max_tokens 3 with 3 completion tokens.
const batchLine = `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}}`

// fileUpload is a multipart file upload of content with the given fields.
func fileUpload(content string, fields ...string) (string, []byte) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for i := 0; i+1 < len(fields); i += 2 {
		_ = mw.WriteField(fields[i], fields[i+1])
	}
	if content != "" {
		fw, _ := mw.CreateFormFile("file", "in.jsonl")
		_, _ = io.WriteString(fw, content)
	}
	_ = mw.Close()
	return mw.FormDataContentType(), buf.Bytes()
}

func batchInput(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, batchLine+"\n", i)
	}
	return b.String()
}

// request sends one request and returns the status and body.
func (e *spendEnv) request(t *testing.T, method, path, key, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// idOf is the id member of an answer, failing unless status is 200.
func idOf(t *testing.T, what string, status int, body []byte) string {
	t.Helper()
	var obj struct{ ID string }
	if err := json.Unmarshal(body, &obj); status != 200 || err != nil || obj.ID == "" {
		t.Fatalf("%s: %d %s", what, status, body)
	}
	return obj.ID
}

// create sends a request that must answer 200 with an id, and returns it.
func (e *spendEnv) create(t *testing.T, what, method, path, key, contentType string, body []byte) string {
	t.Helper()
	status, b := e.request(t, method, path, key, contentType, body)
	return idOf(t, what, status, b)
}

// wantError checks an OpenAI-shape error with status and, when set, param.
func wantError(t *testing.T, what string, status int, body []byte, wantStatus int, param string) {
	t.Helper()
	var e struct {
		Error *struct {
			Message string  `json:"message"`
			Type    string  `json:"type"`
			Param   *string `json:"param"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == nil || e.Error.Message == "" || e.Error.Type == "" || status != wantStatus {
		t.Fatalf("%s: want an OpenAI-shape %d error, got %d %s", what, wantStatus, status, body)
	}
	if param != "" && (e.Error.Param == nil || *e.Error.Param != param) {
		t.Fatalf("%s: param %v, want %q (%s)", what, e.Error.Param, param, body)
	}
}

func listIDs(t *testing.T, e *spendEnv, path, key string) []string {
	t.Helper()
	status, body := e.request(t, "GET", path, key, "", nil)
	var page struct {
		Object string
		Data   []struct{ ID string }
	}
	if json.Unmarshal(body, &page) != nil || status != 200 || page.Object != "list" {
		t.Fatalf("list %s: %d %s", path, status, body)
	}
	var ids []string
	for _, d := range page.Data {
		ids = append(ids, d.ID)
	}
	return ids
}

// TestFilesOwnedByTheirKey: a key sees, reads and deletes only the files it
// uploaded; another key gets 404 for them (as for an id that does not
// exist), the master key reaches them all; a key may not upload to a model
// it may not use. Every prefix serves the same API.
func TestFilesOwnedByTheirKey(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	a := newKey(t, e, `{"models": ["gpt-4"]}`)
	b := newKey(t, e, `{"models": ["gpt-4"]}`)

	ct, body := fileUpload("hello\n", "purpose", "user_data")
	id := e.create(t, "upload", "POST", "/v1/files", a, ct, body)
	if up := e.mock.LastRequest(); up.Path != "/v1/files" || up.Header.Get("Authorization") != "Bearer sk-up" {
		t.Fatalf("upstream request %s with %q", up.Path, up.Header.Get("Authorization"))
	}
	ct, body = fileUpload(batchInput(1), "purpose", "batch", "custom_llm_provider", "openai")
	idB := e.create(t, "upload as b", "POST", "/openai/v1/files", b, ct, body)
	if strings.Contains(string(e.mock.LastRequest().Body), "custom_llm_provider") {
		t.Fatal("the field that chose the deployment was passed upstream")
	}

	if got := listIDs(t, e, "/v1/files", a); len(got) != 1 || got[0] != id {
		t.Fatalf("a lists %v, want [%s]", got, id)
	}
	if got := listIDs(t, e, "/files", b); len(got) != 1 || got[0] != idB {
		t.Fatalf("b lists %v, want [%s]", got, idB)
	}
	if got := listIDs(t, e, "/v1/files", "sk-1234"); len(got) != 2 || got[0] != idB || got[1] != id {
		t.Fatalf("the master key lists %v, want both, newest first", got)
	}
	if status, body := e.request(t, "GET", "/v1/files/"+id+"/content", a, "", nil); status != 200 || string(body) != "hello\n" {
		t.Fatalf("a reads its content: %d %q", status, body)
	}
	before := e.mock.Stats().Requests
	for _, r := range []struct{ method, path string }{
		{"GET", "/v1/files/" + id}, {"GET", "/v1/files/" + id + "/content"}, {"DELETE", "/v1/files/" + id},
		{"GET", "/v1/files/file-never-made"},
	} {
		status, body := e.request(t, r.method, r.path, b, "", nil)
		wantError(t, "b: "+r.method+" "+r.path, status, body, 404, "file_id")
	}
	if n := e.mock.Stats().Requests; n != before {
		t.Fatalf("%d requests for another key's file reached the upstream", n-before)
	}
	if status, body := e.request(t, "GET", "/v1/files/"+id, "sk-1234", "", nil); idOf(t, "master reads a's file", status, body) != id {
		t.Fatal("wrong file")
	}
	// A proxy_admin_viewer reads every file but deletes only her own; an
	// internal_user's key is like any key: its own files only.
	for _, u := range []string{`{"user_id": "vera", "user_role": "proxy_admin_viewer"}`, `{"user_id": "ivan", "user_role": "internal_user"}`} {
		if resp, out := e.post(t, "/user/new", "sk-1234", u); resp.StatusCode != 200 {
			t.Fatalf("/user/new: %d %v", resp.StatusCode, out)
		}
	}
	viewer := newKey(t, e, `{"user_id": "vera"}`)
	internal := newKey(t, e, `{"user_id": "ivan", "models": ["gpt-4"]}`)
	if got := listIDs(t, e, "/v1/files", viewer); len(got) != 2 {
		t.Fatalf("the viewer lists %v, want both", got)
	}
	if status, body := e.request(t, "GET", "/v1/files/"+id+"/content", viewer, "", nil); status != 200 || string(body) != "hello\n" {
		t.Fatalf("the viewer reads a's content: %d %q", status, body)
	}
	status, body := e.request(t, "DELETE", "/v1/files/"+id, viewer, "", nil)
	wantError(t, "the viewer deletes a's file", status, body, 404, "file_id")
	if got := listIDs(t, e, "/v1/files", internal); len(got) != 0 {
		t.Fatalf("an internal_user's key lists %v, want none", got)
	}
	status, body = e.request(t, "GET", "/v1/files/"+id, internal, "", nil)
	wantError(t, "an internal_user reads a's file", status, body, 404, "file_id")

	if status, body := e.request(t, "DELETE", "/v1/files/"+id, a, "", nil); status != 200 || !strings.Contains(string(body), `"deleted":true`) {
		t.Fatalf("a deletes its file: %d %s", status, body)
	}
	status, body = e.request(t, "GET", "/v1/files/"+id, a, "", nil)
	wantError(t, "a after delete", status, body, 404, "file_id")

	ct, body = fileUpload("x\n", "purpose", "batch", "model", "other")
	before = e.mock.Stats().Requests
	status, body = e.request(t, "POST", "/v1/files", a, ct, body)
	wantError(t, "a uploads to a model it may not use", status, body, 403, "")
	if e.mock.Stats().Requests != before {
		t.Fatal("a refused upload reached the upstream")
	}
}

// TestBatchChargedOnceAtBatchPrice: a batch is charged when it is first
// seen completed, at half the token prices, exactly once however many
// retrievals (the owner's, the master key's, concurrent ones, and reads of
// its output file) see it completed; the spend row and the key's spend
// say so.
func TestBatchChargedOnceAtBatchPrice(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		e := startConfig(t, st, mockupstream.Options{}, filesConfig)
		a := newKey(t, e, `{"models": ["gpt-4"], "max_budget": 10}`)
		ct, body := fileUpload(batchInput(3), "purpose", "batch", "model", "gpt-4")
		file := e.create(t, "upload", "POST", "/v1/files", a, ct, body)
		status, body := e.request(t, "POST", "/v1/batches", a, "application/json",
			[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"job":"nightly"}}`))
		batch := idOf(t, "create batch", status, body)
		if !strings.Contains(string(body), `"status":"validating"`) {
			t.Fatalf("new batch: %s", body)
		}

		var wg sync.WaitGroup
		outputs := make(chan string, 10)
		for i := 0; i < 10; i++ {
			wg.Add(1)
			go func(key string) {
				defer wg.Done()
				status, body := e.request(t, "GET", "/v1/batches/"+batch, key, "", nil)
				var b struct {
					Status       string
					OutputFileID string `json:"output_file_id"`
				}
				if json.Unmarshal(body, &b) != nil || status != 200 {
					t.Errorf("retrieve: %d %s", status, body)
					return
				}
				if b.Status == "completed" {
					outputs <- b.OutputFileID
				}
			}(map[bool]string{true: a, false: "sk-1234"}[i%3 != 0])
		}
		wg.Wait()
		close(outputs)
		out := <-outputs
		if out == "" {
			t.Fatal("no retrieval saw the batch completed")
		}
		status, content := e.request(t, "GET", "/v1/files/"+out+"/content", a, "", nil)
		if status != 200 || strings.Count(string(content), "\n") != 3 {
			t.Fatalf("output file: %d %s", status, content)
		}
		if got := listIDs(t, e, "/v1/batches", a); len(got) != 1 || got[0] != batch {
			t.Fatalf("a lists batches %v", got)
		}
		b := newKey(t, e, `{"models": ["gpt-4"]}`)
		status, body = e.request(t, "GET", "/v1/files/"+out+"/content", b, "", nil)
		wantError(t, "another key reads the output", status, body, 404, "file_id")
		status, body = e.request(t, "POST", "/v1/batches/"+batch+"/cancel", b, "", nil)
		wantError(t, "another key cancels", status, body, 404, "batch_id")

		// 3 answers of 4 prompt and 3 completion tokens at half price.
		want := 3 * (4*0.00001 + 3*0.0001) / 2
		// The budget saw it once too (the store alone would forgive a
		// second booking: its rows are idempotent on request id).
		if acct, ok := e.srv.book.Lookup(store.KindKey, sha(a)); !ok || math.Abs(acct.Spent().Dollars()-want) > 1e-9 {
			t.Fatalf("the key's budget account: %v %v, want %v", ok, acct, want)
		}
		if err := e.stop(); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		logs, _, err := st.ListSpendLogs(ctx, store.SpendFilter{RequestID: "batch:" + batch})
		if err != nil || len(logs) != 1 {
			t.Fatalf("batch spend rows: %d %v", len(logs), err)
		}
		l := logs[0]
		if math.Abs(l.Cost-want) > 1e-12 || l.PromptTokens != 12 || l.CompletionTokens != 9 || l.KeyHash != sha(a) ||
			l.CallType != "aretrieve_batch" || l.ModelGroup != "gpt-4" || l.Status != 200 {
			t.Fatalf("batch spend row %+v, want cost %v", l, want)
		}
		all, _, _ := st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: sha(a), Page: store.Page{Size: 100}})
		var sum float64
		for _, r := range all {
			sum += r.Cost
		}
		k, err := st.GetKey(ctx, sha(a))
		if err != nil || math.Abs(k.Spend-want) > 1e-12 || math.Abs(sum-want) > 1e-12 {
			t.Fatalf("key spend %v, rows sum %v, want %v (%v)", k.Spend, sum, want, err)
		}
		o, err := st.GetObject(ctx, store.ObjectBatch, batch)
		if err != nil || !o.Charged || math.Abs(o.Cost-want) > 1e-12 {
			t.Fatalf("batch row %+v %v", o, err)
		}
	})
}

// TestBatchRefusedOverBudget: a key whose budget is spent may upload but
// not start a batch: the 400 budget_exceeded error chat gets, before the
// upstream is asked.
func TestBatchRefusedOverBudget(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	a := newKey(t, e, `{"models": ["gpt-4"], "max_budget": 0.0001}`)
	ct, body := fileUpload(batchInput(1), "purpose", "batch")
	file := e.create(t, "upload", "POST", "/v1/files", a, ct, body)
	if resp, out := e.post(t, "/v1/chat/completions", a, `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}`); resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, out)
	}
	before := e.mock.Stats().ByPath["/v1/batches"]
	status, body := e.request(t, "POST", "/v1/batches", a, "application/json",
		[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	wantError(t, "batch over budget", status, body, 400, "")
	if !strings.Contains(string(body), "budget_exceeded") {
		t.Fatalf("not a budget error: %s", body)
	}
	if e.mock.Stats().ByPath["/v1/batches"] != before {
		t.Fatal("a refused batch reached the upstream")
	}
}

// TestFilesBadInputNeverReachesUpstream: malformed uploads and batches get
// OpenAI-shape 400s naming the field, a request without a key 401, and the
// upstream hears none of them.
func TestFilesBadInputNeverReachesUpstream(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	a := newKey(t, e, `{"models": ["gpt-4"]}`)
	noFile, noFileBody := fileUpload("", "purpose", "batch")
	badPurpose, badPurposeBody := fileUpload("x\n", "purpose", "pictures")
	for _, c := range []struct {
		name, method, path, key, ct string
		body                        []byte
		status                      int
		param                       string
	}{
		{"no file", "POST", "/v1/files", a, noFile, noFileBody, 400, "file"},
		{"bad purpose", "POST", "/v1/files", a, badPurpose, badPurposeBody, 400, "purpose"},
		{"not multipart", "POST", "/v1/files", a, "application/json", []byte(`{"purpose":"batch"}`), 400, "file"},
		{"batch not JSON", "POST", "/v1/batches", a, "application/json", []byte(`input_file_id=file-1`), 400, ""},
		{"batch without file", "POST", "/v1/batches", a, "application/json", []byte(`{"endpoint":"/v1/chat/completions","completion_window":"24h"}`), 400, "input_file_id"},
		{"batch bad endpoint", "POST", "/v1/batches", a, "application/json", []byte(`{"input_file_id":"file-1","endpoint":"/v1/images","completion_window":"24h"}`), 400, "endpoint"},
		{"batch of a file not made here", "POST", "/v1/batches", a, "application/json", []byte(`{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}`), 404, "input_file_id"},
		{"bad limit", "GET", "/v1/files?limit=0", a, "", nil, 400, "limit"},
		{"no key", "GET", "/v1/files", "", "", nil, 401, ""},
		{"unknown provider", "POST", "/v1/files?custom_llm_provider=vertex_ai", a, badPurpose, []byte(strings.Replace(string(badPurposeBody), "pictures", "batch", 1)), 404, "custom_llm_provider"},
	} {
		status, body := e.request(t, c.method, c.path, c.key, c.ct, c.body)
		wantError(t, c.name, status, body, c.status, c.param)
	}
	if n := e.mock.Stats().Requests; n != 0 {
		t.Fatalf("%d bad requests reached the upstream", n)
	}
}

// TestFilesUpstreamErrorPassedThrough: an upstream's own error reaches the
// client with its status, in the OpenAI shape; no file is recorded, but the
// call is a spend row.
func TestFilesUpstreamErrorPassedThrough(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	ct, body := fileUpload("hello\n", "purpose", "user_data", "model", "failing")
	status, body := e.request(t, "POST", "/v1/files", "sk-1234", ct, body)
	wantError(t, "failing upstream", status, body, 500, "")
	if !strings.Contains(string(body), "mock failure 500") {
		t.Fatalf("not the upstream's error: %s", body)
	}
	if got := listIDs(t, e, "/v1/files", "sk-1234"); len(got) != 0 {
		t.Fatalf("a failed upload was recorded: %v", got)
	}
	// The call reached the upstream: it is a spend row, with its status.
	if err := e.stop(); err != nil {
		t.Fatal(err)
	}
	logs, _, err := e.store.ListSpendLogs(context.Background(), store.SpendFilter{})
	if err != nil || len(logs) != 1 || logs[0].CallType != "acreate_file" || logs[0].Status != 500 || logs[0].Cost != 0 || logs[0].ModelGroup != "failing" {
		t.Fatalf("spend rows %+v %v", logs, err)
	}
}

// TestBatchChargedOnceAcrossReplicas: two gateways on one database see a
// batch finish at once; the database's conditional update lets exactly one
// of them book it, on its budget accounts as in the store.
func TestBatchChargedOnceAcrossReplicas(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store) {
		up := httptest.NewServer(mockupstream.New(mockupstream.Options{}))
		defer up.Close()
		cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(filesConfig, "{{UP}}", up.URL)))
		if err != nil {
			t.Fatal(err)
		}
		urlA, srvA := serveSrv(t, cfg, Options{Store: st})
		urlB, srvB := serveSrv(t, cfg, Options{Store: st})
		a, b := &spendEnv{url: urlA, store: st, srv: srvA}, &spendEnv{url: urlB, store: st, srv: srvB}
		key := "sk-batch-owner"
		if resp, out := a.post(t, "/key/generate", "sk-1234", `{"key": "`+key+`", "models": ["gpt-4"]}`); resp.StatusCode != 200 {
			t.Fatalf("/key/generate: %d %v", resp.StatusCode, out)
		}
		ct, body := fileUpload(batchInput(2), "purpose", "batch")
		file := a.create(t, "upload", "POST", "/v1/files", key, ct, body)
		batch := a.create(t, "batch", "POST", "/v1/batches", key, "application/json",
			[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
		var wg sync.WaitGroup
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func(e *spendEnv) {
				defer wg.Done()
				if status, body := e.request(t, "GET", "/v1/batches/"+batch, key, "", nil); status != 200 {
					t.Errorf("retrieve: %d %s", status, body)
				}
			}([]*spendEnv{a, b}[i%2])
		}
		wg.Wait()
		want := 2 * (4*0.00001 + 3*0.0001) / 2
		var booked float64
		for _, s := range []*Server{srvA, srvB} {
			if acct, ok := s.book.Lookup(store.KindKey, sha(key)); ok {
				booked += acct.Spent().Dollars()
			}
		}
		if math.Abs(booked-want) > 1e-9 {
			t.Fatalf("the replicas booked %v in all, want %v once", booked, want)
		}
		o, err := st.GetObject(context.Background(), store.ObjectBatch, batch)
		if err != nil || !o.Charged || math.Abs(o.Cost-want) > 1e-12 {
			t.Fatalf("batch row %+v %v", o, err)
		}
	})
}

// TestBatchChargedWhenTheClientLeaves: the retrieval that sees a batch
// completed charges it even if its client leaves while the output is read.
func TestBatchChargedWhenTheClientLeaves(t *testing.T) {
	reading, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	fake := http.NewServeMux()
	fake.HandleFunc("POST /v1/files", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"file-in","object":"file","purpose":"batch"}`)
	})
	fake.HandleFunc("POST /v1/batches", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"batch_1","object":"batch","status":"validating"}`)
	})
	fake.HandleFunc("GET /v1/batches/batch_1", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"batch_1","object":"batch","status":"completed","output_file_id":"file-out"}`)
	})
	fake.HandleFunc("GET /v1/files/file-out/content", func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { close(reading) })
		<-release
		io.WriteString(w, `{"custom_id":"a","response":{"status_code":200,"body":{"usage":{"prompt_tokens":4,"completion_tokens":3}}}}`+"\n")
	})
	up := httptest.NewServer(fake)
	defer up.Close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(filesConfig, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	url, _ := serveSrv(t, cfg, Options{Store: st})
	e := &spendEnv{url: url, store: st}
	key := newKey(t, e, `{"models": ["gpt-4"]}`)
	ct, body := fileUpload(batchInput(1), "purpose", "batch")
	e.create(t, "upload", "POST", "/v1/files", key, ct, body)
	e.create(t, "batch", "POST", "/v1/batches", key, "application/json",
		[]byte(`{"input_file_id":"file-in","endpoint":"/v1/chat/completions","completion_window":"24h"}`))

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/batches/batch_1", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select { // the gateway is reading the output: the client leaves
	case <-reading:
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway never read the batch's output")
	}
	cancel()
	<-gone
	close(release)
	want := (4*0.00001 + 3*0.0001) / 2
	if took, ok := within(10*time.Second, func() bool {
		o, err := st.GetObject(context.Background(), store.ObjectBatch, "batch_1")
		return err == nil && o.Charged && math.Abs(o.Cost-want) < 1e-12
	}); !ok {
		t.Fatalf("the batch was not charged %v after its client left", took)
	}
}

// TestViewerMayNotStartBatchesOnOthersFiles: proxy_admin_viewer is a
// read-only role ("delete and cancel only their own"); starting a batch
// on another key's input file is a write on it, refused before the
// upstream is asked.
func TestViewerMayNotStartBatchesOnOthersFiles(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	a := newKey(t, e, `{"models": ["gpt-4"]}`)
	if resp, out := e.post(t, "/user/new", "sk-1234", `{"user_id": "vera", "user_role": "proxy_admin_viewer"}`); resp.StatusCode != 200 {
		t.Fatalf("/user/new: %d %v", resp.StatusCode, out)
	}
	viewer := newKey(t, e, `{"user_id": "vera", "models": ["gpt-4"]}`)
	ct, body := fileUpload(batchInput(1), "purpose", "batch")
	file := e.create(t, "upload", "POST", "/v1/files", a, ct, body)
	before := e.mock.Stats().ByPath["/v1/batches"]
	status, b := e.request(t, "POST", "/v1/batches", viewer, "application/json",
		[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	if status == 200 || e.mock.Stats().ByPath["/v1/batches"] != before {
		t.Fatalf("a proxy_admin_viewer started a batch on another key's file: %d %s", status, b)
	}
}

// TestRegeneratedKeyKeepsItsFiles: /key/regenerate keeps the key (its
// budget, spend, models) under a new secret. Its files and batches, and the
// batch's charge, follow it: the store moves them to the new hash.
func TestRegeneratedKeyKeepsItsFiles(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	old := newKey(t, e, `{"models": ["gpt-4"], "max_budget": 10}`)
	ct, body := fileUpload("hello\n", "purpose", "user_data")
	file := e.create(t, "upload", "POST", "/v1/files", old, ct, body)
	resp, out := e.post(t, "/key/regenerate", "sk-1234", `{"key": "`+old+`"}`)
	fresh, _ := out["key"].(string)
	if resp.StatusCode != 200 || fresh == "" {
		t.Fatalf("regenerate: %d %v", resp.StatusCode, out)
	}
	if status, b := e.request(t, "GET", "/v1/files/"+file, fresh, "", nil); status != 200 {
		t.Fatalf("the regenerated key reads its own file: %d %s", status, b)
	}
}

// TestListAfterDoesNotRevealOthersIDs: endpoints.md promises that
// another key's id answers exactly like an id that does not exist, so the
// list's `after` cursor is looked up among the caller's own objects only.
func TestListAfterDoesNotRevealOthersIDs(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	a := newKey(t, e, `{"models": ["gpt-4"]}`)
	b := newKey(t, e, `{"models": ["gpt-4"]}`)
	ct, body := fileUpload("mine\n", "purpose", "user_data")
	e.create(t, "b uploads", "POST", "/v1/files", b, ct, body)
	ct, body = fileUpload("secret\n", "purpose", "user_data")
	aFile := e.create(t, "a uploads", "POST", "/v1/files", a, ct, body)
	withOthers := listIDs(t, e, "/v1/files?after="+aFile, b)
	withNone := listIDs(t, e, "/v1/files?after=file-does-not-exist", b)
	if len(withOthers) != len(withNone) {
		t.Fatalf("b's listing after a's file id %v differs from after an unknown id %v: the id's existence leaks", withOthers, withNone)
	}
}

// TestBatchMetadataChecked: endpoints.md says bad metadata is a 400
// naming `metadata` that never reaches the provider; OpenAI's metadata is
// up to 16 pairs of strings, keys up to 64 characters, values up to 512.
func TestBatchMetadataChecked(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	key := newKey(t, e, `{"models": ["gpt-4"]}`)
	ct, body := fileUpload(batchInput(1), "purpose", "batch")
	file := e.create(t, "upload", "POST", "/v1/files", key, ct, body)
	seventeen := map[string]string{}
	for i := range 17 {
		seventeen[fmt.Sprint("k", i)] = "v"
	}
	many, _ := json.Marshal(seventeen)
	for name, md := range map[string]string{
		"non-string values": `{"n":1,"deep":{"x":[1]}}`,
		"not an object":     `["a"]`,
		"17 pairs":          string(many),
		"a long key":        `{"` + strings.Repeat("k", 65) + `":"v"}`,
		"a long value":      `{"k":"` + strings.Repeat("v", 513) + `"}`,
	} {
		before := e.mock.Stats().ByPath["/v1/batches"]
		status, b := e.request(t, "POST", "/v1/batches", key, "application/json",
			[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":`+md+`}`))
		if e.mock.Stats().ByPath["/v1/batches"] != before {
			t.Fatalf("%s: reached the upstream (%d %s)", name, status, b)
		}
		wantError(t, name, status, b, 400, "metadata")
	}
	e.create(t, "batch with good metadata", "POST", "/v1/batches", key, "application/json",
		[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h","metadata":{"`+strings.Repeat("k", 64)+`":"`+strings.Repeat("v", 512)+`"}}`))
}

// TestBatchChargedFromItsOutputFile: the batch's usage is in its
// output file. When the retrieval that saw it completed could not read the
// output (a transient upstream error), reading the batch's *error* file
// must not settle the batch (at the error file's $0): the output's usage
// is booked when the output is next seen.
func TestBatchChargedFromItsOutputFile(t *testing.T) {
	var outputReads atomic.Int32
	fake := http.NewServeMux()
	fake.HandleFunc("POST /v1/files", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"file-in","object":"file","purpose":"batch"}`)
	})
	fake.HandleFunc("POST /v1/batches", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"batch_1","object":"batch","status":"validating"}`)
	})
	fake.HandleFunc("GET /v1/batches/batch_1", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"id":"batch_1","object":"batch","status":"completed","output_file_id":"file-out","error_file_id":"file-err"}`)
	})
	fake.HandleFunc("GET /v1/files/file-out/content", func(w http.ResponseWriter, r *http.Request) {
		if outputReads.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"error":{"message":"try again","type":"server_error"}}`)
			return
		}
		io.WriteString(w, `{"custom_id":"a","response":{"status_code":200,"body":{"model":"gpt-4o-mini","usage":{"prompt_tokens":4000,"completion_tokens":3000}}}}`+"\n")
	})
	fake.HandleFunc("GET /v1/files/file-err/content", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"custom_id":"b","response":null,"error":{"code":"invalid_request","message":"bad line"}}`+"\n")
	})
	e := fakeEnv(t, fake, filesConfig)
	key := newKey(t, e, `{"models": ["gpt-4"]}`)
	ct, body := fileUpload(batchInput(1), "purpose", "batch")
	e.create(t, "upload", "POST", "/v1/files", key, ct, body)
	e.create(t, "batch", "POST", "/v1/batches", key, "application/json",
		[]byte(`{"input_file_id":"file-in","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	e.create(t, "retrieve (output read fails)", "GET", "/v1/batches/batch_1", key, "", nil)
	if s, b := e.request(t, "GET", "/v1/files/file-err/content", key, "", nil); s != 200 {
		t.Fatalf("error file: %d %s", s, b)
	}
	e.create(t, "retrieve again", "GET", "/v1/batches/batch_1", key, "", nil)
	if s, b := e.request(t, "GET", "/v1/files/file-out/content", key, "", nil); s != 200 {
		t.Fatalf("output file: %d %s", s, b)
	}
	want := (4000*0.00001 + 3000*0.0001) / 2
	o, err := e.store.GetObject(context.Background(), store.ObjectBatch, "batch_1")
	if err != nil || !o.Charged || math.Abs(o.Cost-want) > 1e-12 {
		t.Fatalf("batch charged=%v cost $%v, want $%v (%v)", o != nil && o.Charged, costOf(o), want, err)
	}
}

func costOf(o *store.ManagedObject) float64 {
	if o == nil {
		return 0
	}
	return o.Cost
}

// fakeEnv serves yaml ({{UP}} is fake's URL, a scripted provider) on SQLite.
func fakeEnv(t *testing.T, fake http.Handler, yaml string) *spendEnv {
	t.Helper()
	up := httptest.NewServer(fake)
	t.Cleanup(up.Close)
	cfg, err := config.Parse("t.yaml", []byte(strings.ReplaceAll(yaml, "{{UP}}", up.URL)))
	if err != nil {
		t.Fatal(err)
	}
	st := sqliteStore(t)
	url, srv := serveSrv(t, cfg, Options{Store: st})
	return &spendEnv{url: url, store: st, srv: srv}
}

// TestStrictModeRefusesBudgetedBatches: docs/spend-and-limits.md promises
// that in strict mode spend never passes the budget; a batch takes no hold,
// so a budgeted key may not start one (a 400 before the upstream is asked),
// while a key without a budget may.
func TestStrictModeRefusesBudgetedBatches(t *testing.T) {
	yaml := strings.Replace(filesConfig, "general_settings:", "litellm_settings:\n  budget_enforcement: strict\ngeneral_settings:", 1)
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	for _, c := range []struct {
		key    string
		refuse bool
	}{{`{"models": ["gpt-4"], "max_budget": 0.0002}`, true}, {`{"models": ["gpt-4"]}`, false}} {
		key := newKey(t, e, c.key)
		ct, body := fileUpload(batchInput(3), "purpose", "batch")
		file := e.create(t, "upload", "POST", "/v1/files", key, ct, body)
		before := e.mock.Stats().ByPath["/v1/batches"]
		status, b := e.request(t, "POST", "/v1/batches", key, "application/json",
			[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
		if !c.refuse {
			idOf(t, "a batch without a budget", status, b)
			continue
		}
		wantError(t, "a budgeted batch in strict mode", status, b, 400, "")
		if !strings.Contains(string(b), "budget_enforcement_strict") || e.mock.Stats().ByPath["/v1/batches"] != before {
			t.Fatalf("strict mode: %d %s (upstream asked: %v)", status, b, e.mock.Stats().ByPath["/v1/batches"] != before)
		}
	}
}

// TestBatchLinesRunOnlyTheKeysModel: a batch input file's lines name their
// own model, which the upstream would run on the gateway's account. A line
// naming a model other than the file's model group (another model of the
// same account, one the key may not use) is a 400 naming file before the
// upstream is asked; a line naming the group, an alias or the deployment's
// model runs the deployment's model, which the upstream receives.
func TestBatchLinesRunOnlyTheKeysModel(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	key := newKey(t, e, `{"models": ["gpt-4"]}`)
	line := func(model string) string {
		return strings.Replace(strings.Replace(batchLine, `"model":"gpt-4o-mini"`, `"model":"`+model+`"`, 1), "%d", "0", 1) + "\n"
	}
	for name, content := range map[string]string{
		"another model of the account": line("o1-pro"),
		"a model the key may not use":  line("other"),
		"the second line":              line("gpt-4") + line("o1-pro"),
		"no model":                     `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{}}` + "\n",
		"no custom_id":                 `{"method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4"}}` + "\n",
		"an unknown url":               `{"custom_id":"a","method":"POST","url":"/v1/images/generations","body":{"model":"gpt-4"}}` + "\n",
		"not JSON":                     "hello\n",
		"no lines":                     "\n",
	} {
		before := e.mock.Stats().ByPath["/v1/files"]
		ct, body := fileUpload(content, "purpose", "batch", "model", "gpt-4")
		status, b := e.request(t, "POST", "/v1/files", key, ct, body)
		wantError(t, name, status, b, 400, "file")
		if e.mock.Stats().ByPath["/v1/files"] != before {
			t.Fatalf("%s: a refused batch file reached the upstream", name)
		}
	}
	ct, body := fileUpload(line("gpt-4")+"\n"+line("gpt-4o-mini"), "purpose", "batch", "model", "gpt-4")
	file := e.create(t, "upload", "POST", "/v1/files", key, ct, body)
	if up := string(e.mock.LastRequest().Body); strings.Count(up, `"model":"gpt-4o-mini"`) != 2 || strings.Contains(up, `"model":"gpt-4"`) {
		t.Fatalf("the upstream got lines %s, want both on gpt-4o-mini", up)
	}
	batch := e.create(t, "batch", "POST", "/v1/batches", key, "application/json",
		[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	status, b := e.request(t, "GET", "/v1/batches/"+batch, key, "", nil)
	var got struct {
		OutputFileID string `json:"output_file_id"`
	}
	if status != 200 || json.Unmarshal(b, &got) != nil || got.OutputFileID == "" {
		t.Fatalf("retrieve: %d %s", status, b)
	}
	status, out := e.request(t, "GET", "/v1/files/"+got.OutputFileID+"/content", key, "", nil)
	if status != 200 || strings.Count(string(out), `"status_code":200`) != 2 {
		t.Fatalf("output: %d %s", status, out)
	}
}

// TestBatchLinesOnAWildcardDeployment: on a wildcard deployment (openai/*)
// each line keeps its own model, stripped of the route's prefix as a chat
// request's is, and each must be one the key may use.
func TestBatchLinesOnAWildcardDeployment(t *testing.T) {
	yaml := strings.Replace(filesConfig, "general_settings:", `  - model_name: "openai/*"
    litellm_params: {model: "openai/*", api_base: "{{UP}}", api_key: sk-up-4}
general_settings:`, 1)
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, yaml)
	key := newKey(t, e, `{"models": ["openai/gpt-4o-mini"]}`)
	line := func(model string) string {
		return strings.Replace(strings.Replace(batchLine, `"model":"gpt-4o-mini"`, `"model":"`+model+`"`, 1), "%d", "0", 1) + "\n"
	}
	ct, body := fileUpload(line("openai/gpt-4o-mini")+line("openai/o1-pro"), "purpose", "batch", "model", "openai/gpt-4o-mini")
	status, b := e.request(t, "POST", "/v1/files", key, ct, body)
	wantError(t, "a line on a model the key may not use", status, b, 400, "file")
	ct, body = fileUpload(line("openai/gpt-4o-mini"), "purpose", "batch", "model", "openai/gpt-4o-mini")
	e.create(t, "upload", "POST", "/v1/files", key, ct, body)
	if up := string(e.mock.LastRequest().Body); !strings.Contains(up, `"model":"gpt-4o-mini"`) || strings.Contains(up, "openai/") {
		t.Fatalf("the upstream got %s, want the line on gpt-4o-mini", up)
	}
}
