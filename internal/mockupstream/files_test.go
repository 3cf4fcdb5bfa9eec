package mockupstream

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func do(t *testing.T, method, url, cred, contentType string, body []byte) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, url, bytes.NewReader(body))
	if cred != "" {
		req.Header.Set("Authorization", cred)
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

// TestFilesAndBatches: an upload, a batch on it that completes at its first
// retrieval with an output line per input line carrying usage, and the
// credential scoping and 401 of a request without one.
func TestFilesAndBatches(t *testing.T) {
	srv := httptest.NewServer(New(Options{}))
	defer srv.Close()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	line := `{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}}`
	io.WriteString(fw, strings.ReplaceAll(line, "%d", "1")+"\n"+strings.ReplaceAll(line, "%d", "2")+"\n")
	mw.Close()

	if st, _ := do(t, "POST", srv.URL+"/v1/files", "", mw.FormDataContentType(), buf.Bytes()); st != 401 {
		t.Fatalf("no credential: %d", st)
	}
	st, b := do(t, "POST", srv.URL+"/v1/files", "Bearer a", mw.FormDataContentType(), buf.Bytes())
	var f struct{ ID, Purpose string }
	if json.Unmarshal(b, &f); st != 200 || f.ID == "" || f.Purpose != "batch" {
		t.Fatalf("upload: %d %s", st, b)
	}
	if st, _ := do(t, "GET", srv.URL+"/v1/files/"+f.ID, "Bearer other", "", nil); st != 404 {
		t.Fatalf("another account's file: %d", st)
	}
	st, b = do(t, "POST", srv.URL+"/v1/batches", "Bearer a", "application/json",
		[]byte(`{"input_file_id":"`+f.ID+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	var bt struct {
		ID, Status   string
		OutputFileID *string `json:"output_file_id"`
	}
	if json.Unmarshal(b, &bt); st != 200 || bt.Status != "validating" {
		t.Fatalf("batch: %d %s", st, b)
	}
	_, b = do(t, "GET", srv.URL+"/v1/batches/"+bt.ID, "Bearer a", "", nil)
	if json.Unmarshal(b, &bt); bt.Status != "completed" || bt.OutputFileID == nil {
		t.Fatalf("batch after a retrieval: %s", b)
	}
	_, b = do(t, "GET", srv.URL+"/v1/files/"+*bt.OutputFileID+"/content", "Bearer a", "", nil)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 2 {
		t.Fatalf("output: %s", b)
	}
	var out struct {
		CustomID string `json:"custom_id"`
		Response struct {
			Body struct {
				Usage struct {
					Prompt     int64 `json:"prompt_tokens"`
					Completion int64 `json:"completion_tokens"`
				} `json:"usage"`
			} `json:"body"`
		} `json:"response"`
	}
	json.Unmarshal([]byte(lines[1]), &out)
	// "one two three four" is 18 bytes (4 tokens at 4 bytes each); max_tokens 3.
	if out.CustomID != "r2" || out.Response.Body.Usage.Completion != 3 || out.Response.Body.Usage.Prompt != 4 {
		t.Fatalf("output line: %s", lines[1])
	}
	if st, b := do(t, "DELETE", srv.URL+"/v1/files/"+f.ID, "Bearer a", "", nil); st != 200 || !strings.Contains(string(b), `"deleted":true`) {
		t.Fatalf("delete: %d %s", st, b)
	}
}
