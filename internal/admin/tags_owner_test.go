package admin_test

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// ownChat sends a request to path with the x-litellm-tags header (when
// not empty) and returns the status and the answer.
func (e *env) ownChat(key, path, header, contentType, body string) (int, string) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	if header != "" {
		req.Header.Set("x-litellm-tags", header)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatalf("POST %s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(b)
}

// ownRows polls /spend/logs for key until it lists n rows or 30 s pass.
func (e *env) ownRows(key string, n int) []tagLog {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var logs []tagLog
		e.getJSON("/spend/logs?api_key="+key, "sk-1234", &logs)
		if len(logs) >= n || time.Now().After(deadline) {
			return logs
		}
		time.Sleep(50 * time.Millisecond)
	}
}

const chatBody = `{"model":"priced","messages":[{"role":"user","content":"hi"}]}`

// TestOperatorTagsOutlastClientTags: a key's and its team's tags are the
// operator's cost attribution; a client that sends 32 tags of its own (the
// whole bound) loses some of them, never the key's or the team's, and the
// request still carries at most 32.
func TestOperatorTagsOutlastClientTags(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id":"t-fin","metadata":{"tags":["team-finance"]}}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		key := e.generate(`{"team_id":"t-fin","tags":["cost-center-finance"],"metadata":{"tags":["key-md-tag"]}}`)
		var own []string
		for i := range 32 {
			own = append(own, fmt.Sprintf("c%d", i))
		}
		if s, b := e.ownChat(key, "/v1/chat/completions", strings.Join(own, ","), "application/json", chatBody); s != 200 {
			t.Fatalf("chat: %d %s", s, b)
		}
		logs := e.ownRows(key, 1)
		if len(logs) != 1 {
			t.Fatalf("rows %d", len(logs))
		}
		tags := logs[0].RequestTags
		for _, want := range []string{"cost-center-finance", "key-md-tag", "team-finance", "c0"} {
			if !slices.Contains(tags, want) {
				t.Errorf("row tags %v lack %q", tags, want)
			}
		}
		if len(tags) != 32 {
			t.Errorf("row has %d tags, want the bound (32): %v", len(tags), tags)
		}
	})
}

// TestMediaRequestsCarryTags: image and audio requests carry their tags
// like every other: the header's, the body's metadata.tags (a JSON body)
// or the metadata form field's (an upload), and the key's. The upload's
// metadata field is the gateway's and is not forwarded.
func TestMediaRequestsCarryTags(t *testing.T) {
	cfg := strings.Replace(seedConfig, "general_settings:", `  - model_name: img
    litellm_params: {model: openai/dall-e-3, api_base: "{{UP}}"}
  - model_name: whisper
    litellm_params: {model: openai/whisper-1, api_base: "{{UP}}"}
general_settings:`, 1)
	engines(t, cfg, func(t *testing.T, e *env) {
		key := e.generate(`{"tags": ["key-tag"]}`)
		if s, b := e.ownChat(key, "/v1/images/generations", "hdr-tag", "application/json", `{"model":"img","prompt":"a cat","n":1,"metadata":{"tags":["body-tag"]}}`); s != 200 {
			t.Fatalf("image generation: %d %s", s, b)
		}
		if got := e.mock.LastRequest().Body; bytes.Contains(got, []byte("metadata")) {
			t.Errorf("the image request's metadata was forwarded: %s", got)
		}
		var buf bytes.Buffer
		w := multipart.NewWriter(&buf)
		_ = w.WriteField("model", "whisper")
		_ = w.WriteField("metadata", `{"tags":["form-tag"]}`)
		fw, _ := w.CreateFormFile("file", "a.mp3")
		_, _ = fw.Write(make([]byte, 16000))
		_ = w.Close()
		if s, b := e.ownChat(key, "/v1/audio/transcriptions", "hdr-audio", w.FormDataContentType(), buf.String()); s != 200 {
			t.Fatalf("transcription: %d %s", s, b)
		}
		if got := e.mock.LastRequest().Body; bytes.Contains(got, []byte(`name="metadata"`)) {
			t.Errorf("the upload's metadata field was forwarded: %s", got)
		}
		logs := e.ownRows(key, 2)
		if len(logs) != 2 {
			t.Fatalf("rows %d", len(logs))
		}
		want := map[string][]string{
			"audio_transcription": {"hdr-audio", "form-tag", "key-tag"},
			"image_generation":    {"hdr-tag", "body-tag", "key-tag"},
		}
		for _, l := range logs {
			var callType string
			for ct := range want {
				if slices.Contains(l.RequestTags, want[ct][0]) {
					callType = ct
				}
			}
			if callType == "" || !slices.Equal(l.RequestTags, want[callType]) {
				t.Errorf("a media request's spend row has tags %v, want one of %v", l.RequestTags, want)
			}
		}
		// A form's metadata that is not a JSON object is refused.
		buf.Reset()
		w = multipart.NewWriter(&buf)
		_ = w.WriteField("model", "whisper")
		_ = w.WriteField("metadata", `not json`)
		fw, _ = w.CreateFormFile("file", "a.mp3")
		_, _ = fw.Write(make([]byte, 100))
		_ = w.Close()
		if s, b := e.ownChat(key, "/v1/audio/transcriptions", "", w.FormDataContentType(), buf.String()); s != 400 || !strings.Contains(b, "metadata must be a JSON object") {
			t.Errorf("a form metadata field that is not JSON: %d %s", s, b)
		}
	})
}

// TestDeploymentTagsJoinRequestTags: a deployment's litellm_params.tags
// (LiteLLM's request tags for spend tracking) join the tags of each
// request that deployment answers: the spend row and the tag reports.
func TestDeploymentTagsJoinRequestTags(t *testing.T) {
	cfg := strings.Replace(seedConfig, "general_settings:", `  - model_name: tagged
    litellm_params: {model: openai/tagged-upstream, api_base: "{{UP}}", tags: ["AWS_IAM_PROD"]}
general_settings:`, 1)
	engines(t, cfg, func(t *testing.T, e *env) {
		key := e.generate(`{"tags":["key-tag"]}`)
		if s, b := e.ownChat(key, "/v1/chat/completions", "hdr", "application/json", `{"model":"tagged","messages":[{"role":"user","content":"hi"}]}`); s != 200 {
			t.Fatalf("chat: %d %s", s, b)
		}
		if s, b := e.ownChat(key, "/v1/chat/completions", "", "application/json", `{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`); s != 200 {
			t.Fatalf("chat: %d %s", s, b)
		}
		logs := e.ownRows(key, 2)
		if len(logs) != 2 {
			t.Fatalf("rows %d", len(logs))
		}
		for _, l := range logs {
			want := []string{"key-tag"}
			if slices.Contains(l.RequestTags, "hdr") {
				want = []string{"hdr", "key-tag", "AWS_IAM_PROD"}
			}
			if !slices.Equal(l.RequestTags, want) {
				t.Errorf("row tags %v, want %v (a deployment's tags only on the requests it answered)", l.RequestTags, want)
			}
		}
		var names struct {
			TagNames []string `json:"tag_names"`
		}
		deadline := time.Now().Add(30 * time.Second)
		for !slices.Contains(names.TagNames, "AWS_IAM_PROD") && time.Now().Before(deadline) {
			e.getJSON("/global/spend/all_tag_names", "sk-1234", &names)
			time.Sleep(50 * time.Millisecond)
		}
		if !slices.Contains(names.TagNames, "AWS_IAM_PROD") {
			t.Errorf("the deployment's tag is not in the tag reports: %v", names.TagNames)
		}
	})
}

// TestOperatorTagsKeepTheirMetricSeries: client-chosen tags share a
// bounded number of series; the tags an operator set on keys and teams
// have their own, so clients filling the shared ones (four requests of 32
// made-up tags) leave a key's tag its series.
func TestOperatorTagsKeepTheirMetricSeries(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		if !strings.HasSuffix(t.Name(), "sqlite") {
			t.Skip("metrics do not depend on the store: the SQLite run shows it")
		}
		other := e.generate(`{}`)
		for r := range 4 {
			var junk []string
			for i := range 32 {
				junk = append(junk, fmt.Sprintf("junk-%d-%d", r, i))
			}
			if s, b := e.ownChat(other, "/v1/chat/completions", strings.Join(junk, ","), "application/json", chatBody); s != 200 {
				t.Fatalf("chat: %d %s", s, b)
			}
		}
		finance := e.generate(`{"tags": ["finance"]}`)
		if s, b := e.ownChat(finance, "/v1/chat/completions", "late-client-tag", "application/json", chatBody); s != 200 {
			t.Fatalf("chat: %d %s", s, b)
		}
		resp, err := http.Get(e.url + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		series := 0
		for l := range strings.SplitSeq(string(b), "\n") {
			if strings.Contains(l, "tag_requests_total{") && !strings.HasPrefix(l, "#") {
				series++
			}
		}
		for _, want := range []string{`tag_requests_total{tag="finance"} 1`, `tag_requests_total{tag="other"} 2`} {
			if !strings.Contains(string(b), want) {
				t.Errorf("/metrics lacks %s (%d tag series)", want, series)
			}
		}
		if series != 100+1+1 { // the client share, "other", the key's tag
			t.Errorf("%d tag series, want 102", series)
		}
	})
}

// TestKeyAndTeamTagsPastBoundsRefused: a key's tags (tags, metadata.tags)
// and a team's (metadata.tags) ride on every request, where more than 32
// or one past 128 bytes could not be carried; /key/generate, /key/update,
// /team/new and /team/update refuse them with a 400 that says the bound,
// and change nothing. A tag at the bound is kept and reaches the rows.
func TestKeyAndTeamTagsPastBoundsRefused(t *testing.T) {
	engines(t, tagConfig, func(t *testing.T, e *env) {
		long := strings.Repeat("x", 129)
		many := `"t0"` + strings.Repeat(`,"t"`, 32)
		key := e.generate(`{"tags": ["kept"]}`)
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id":"t-1","metadata":{"tags":["team-kept"]}}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		tests := []struct {
			name, path, body, want string
		}{
			{"generate long", "/key/generate", `{"tags":["` + long + `"]}`, "at most 128 bytes"},
			{"generate many", "/key/generate", `{"tags":[` + many + `]}`, "at most 32"},
			{"generate empty", "/key/generate", `{"tags":[""]}`, "is empty"},
			{"generate control", "/key/generate", `{"tags":["a\u0000b"]}`, "control character"},
			{"generate metadata long", "/key/generate", `{"metadata":{"tags":["` + long + `"]}}`, "metadata.tags[0]"},
			{"generate metadata not a list", "/key/generate", `{"metadata":{"tags":"a"}}`, "array of strings"},
			{"update long", "/key/update", `{"key":"` + key + `","tags":["` + long + `"]}`, "at most 128 bytes"},
			{"update metadata control", "/key/update", `{"key":"` + key + `","metadata":{"tags":["a\nb"]}}`, "control character"},
			{"team new long", "/team/new", `{"team_id":"t-2","metadata":{"tags":["` + long + `"]}}`, "at most 128 bytes"},
			{"team update many", "/team/update", `{"team_id":"t-1","metadata":{"tags":[` + many + `]}}`, "at most 32"},
		}
		for _, tt := range tests {
			s, out := e.do("POST", tt.path, "sk-1234", tt.body)
			msg := fmt.Sprint(out["error"])
			if s != 400 || !strings.Contains(msg, tt.want) {
				t.Errorf("%s: %d %s, want a 400 saying %q", tt.name, s, msg, tt.want)
			}
		}
		if s, _ := e.do("GET", "/team/info?team_id=t-2", "sk-1234", ""); s != 404 {
			t.Errorf("a refused /team/new made the team (info %d)", s)
		}
		var team struct {
			TeamInfo struct {
				Metadata map[string]any `json:"metadata"`
			} `json:"team_info"`
		}
		e.getJSON("/team/info?team_id=t-1", "sk-1234", &team)
		if tags := fmt.Sprint(team.TeamInfo.Metadata["tags"]); tags != "[team-kept]" {
			t.Errorf("a refused /team/update changed the team's tags: %s", tags)
		}
		atBound := strings.Repeat("y", 128)
		if s, out := e.do("POST", "/key/update", "sk-1234", `{"key":"`+key+`","tags":["kept","`+atBound+`"]}`); s != 200 {
			t.Fatalf("update at the bound: %d %v", s, out)
		}
		if s, b := e.ownChat(key, "/v1/chat/completions", "", "application/json", chatBody); s != 200 {
			t.Fatalf("chat: %d %s", s, b)
		}
		logs := e.ownRows(key, 1)
		if len(logs) != 1 || !slices.Equal(logs[0].RequestTags, []string{"kept", atBound}) {
			t.Errorf("rows %d, tags %v: want the key's two tags", len(logs), logs)
		}
	})
}
