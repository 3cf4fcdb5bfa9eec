package server

// Review probes (branch rev1) for the Responses, Files and Batches APIs of
// issue #23. Each test states the behaviour the docs or the house rules
// promise; a failing probe is a defect.

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestProbeBatchLinesRunOnlyTheKeysModel: a key allowed only model group
// gpt-4 (openai/gpt-4o-mini) uploads a batch file whose lines name another
// model of the same upstream account. The batch must not run that model
// (refused, or the lines' model set to the deployment's); today it runs,
// and is priced at gpt-4o-mini's batch price whatever the lines ran.
func TestProbeBatchLinesRunOnlyTheKeysModel(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, filesConfig)
	key := newKey(t, e, `{"models": ["gpt-4"]}`)
	line := strings.Replace(batchLine, `"model":"gpt-4o-mini"`, `"model":"o1-pro"`, 1)
	ct, body := fileUpload(strings.Replace(line, "%d", "0", 1)+"\n", "purpose", "batch", "model", "gpt-4")
	status, b := e.request(t, "POST", "/v1/files", key, ct, body)
	if status != 200 {
		return // refused at upload: fine
	}
	file := idOf(t, "upload", status, b)
	status, b = e.request(t, "POST", "/v1/batches", key, "application/json",
		[]byte(`{"input_file_id":"`+file+`","endpoint":"/v1/chat/completions","completion_window":"24h"}`))
	if status != 200 {
		return // refused at batch creation: fine
	}
	batch := idOf(t, "batch", status, b)
	status, b = e.request(t, "GET", "/v1/batches/"+batch, key, "", nil)
	var got struct {
		Status       string
		OutputFileID string `json:"output_file_id"`
	}
	if status != 200 || json.Unmarshal(b, &got) != nil || got.OutputFileID == "" {
		t.Fatalf("retrieve: %d %s", status, b)
	}
	status, out := e.request(t, "GET", "/v1/files/"+got.OutputFileID+"/content", key, "", nil)
	if status == 200 && strings.Contains(string(out), `"model":"o1-pro"`) {
		t.Fatalf("a key allowed only gpt-4 (gpt-4o-mini) ran o1-pro through a batch: %s", out)
	}
}
