package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/usage"
)

// Images and audio through the whole server: the mock upstream behind the
// real handler, spend rows in SQLite.

const mediaConfig = `
model_list:
  - model_name: dall-e-3
    litellm_params: {model: openai/dall-e-3, api_base: "{{UP}}"}
  - model_name: painter
    litellm_params: {model: openai/dall-e-2, api_base: "{{UP}}"}
  - model_name: gpt-image-1
    litellm_params: {model: openai/gpt-image-1, api_base: "{{UP}}"}
  - model_name: whisper
    litellm_params: {model: openai/whisper-1, api_base: "{{UP}}"}
  - model_name: az-whisper
    litellm_params: {model: azure/my-whisper, api_base: "{{UP}}", api_version: "2024-06-01", api_key: k, input_cost_per_second: 0.0002}
  - model_name: gpt-4o-transcribe
    litellm_params: {model: openai/gpt-4o-transcribe, api_base: "{{UP}}"}
  - model_name: tts-1
    litellm_params: {model: openai/tts-1, api_base: "{{UP}}"}
  - model_name: tts-slow
    litellm_params: {model: openai/tts-1, api_base: "{{UP}}", extra_headers: {x-mock-chunk-delay-ms: "60000"}}
  - model_name: house-painter
    litellm_params: {model: openai/my-diffusion, api_base: "{{UP}}"}
    model_info: {output_cost_per_image: 0.01}
  - model_name: house-voice
    litellm_params: {model: openai/my-voice, api_base: "{{UP}}"}
    model_info: {input_cost_per_character: 0.001}
  - model_name: refusing-painter
    litellm_params: {model: openai/dall-e-2, api_base: "{{UP}}", extra_headers: {x-mock-status: "400"}}
  - model_name: garbled-painter
    litellm_params: {model: openai/dall-e-2, api_base: "{{UP}}", extra_headers: {x-mock-raw-body: "not json"}}
general_settings:
  master_key: sk-1234
`

// upload is a multipart body: fields, then one file part.
func upload(t *testing.T, fields map[string]string, fileField, filename string, file []byte) (string, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for k, v := range fields {
		if err := w.WriteField(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if fileField != "" {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, fileField, filename))
		h.Set("Content-Type", "application/octet-stream")
		pw, err := w.CreatePart(h)
		if err != nil {
			t.Fatal(err)
		}
		pw.Write(file)
	}
	w.Close()
	return b.String(), w.FormDataContentType()
}

// wav is a mono 16-bit WAV file of secs seconds at 8 kHz.
func wav(secs int) []byte {
	const rate = 8000
	data := make([]byte, secs*rate*2)
	for i := range data {
		data[i] = byte(i * 7) // not silence, and bytes that look like CRLF and dashes
	}
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+len(data)))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], 1)
	binary.LittleEndian.PutUint32(h[24:], rate)
	binary.LittleEndian.PutUint32(h[28:], rate*2)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(len(data)))
	return append(h, data...)
}

// wav8 is a mono 8-bit WAV file of secs seconds at 1 kHz (the lowest rate
// the gateway reads a length from): long audio in a small upload (600 s
// in 600 kB where wav's 8 kHz of 16 bits take 9.6 MB, ten seconds of a
// test under the race detector).
func wav8(secs int) []byte {
	const rate = 1000
	data := make([]byte, secs*rate)
	for i := range data {
		data[i] = byte(i * 7)
	}
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+len(data)))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], 1)
	binary.LittleEndian.PutUint32(h[24:], rate)
	binary.LittleEndian.PutUint32(h[28:], rate)
	binary.LittleEndian.PutUint16(h[32:], 1)
	binary.LittleEndian.PutUint16(h[34:], 8)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(len(data)))
	return append(h, data...)
}

// send posts body with contentType and returns the answer's status, headers and bytes.
func (e *spendEnv) send(t *testing.T, path, key, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", e.url+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", contentType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func costHeader(t *testing.T, resp *http.Response) float64 {
	t.Helper()
	c, err := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
	if err != nil {
		t.Fatalf("x-tollgate-response-cost = %q", resp.Header.Get("x-tollgate-response-cost"))
	}
	return c
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*max(1, math.Abs(b)) }

// TestImagesArePricedBySizeAndQuality: dall-e-3 at hd costs what the price
// table's hd entry says per image, twice standard; n images cost n times
// one; the spend rows carry the cost; the upstream got the deployment's
// model.
func TestImagesArePricedBySizeAndQuality(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, mediaConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	perImage := func(quality string) float64 {
		p, ok := pricing.ImageLookup("openai", "dall-e-3", "1024x1024", quality)
		if !ok {
			t.Fatalf("no %s price for dall-e-3", quality)
		}
		return p.MediaCost(usageImages(1, "1024x1024"))
	}
	hd, standard := perImage("hd"), perImage("standard")
	if math.Abs(hd-0.08) > 1e-4 || math.Abs(standard-0.04) > 1e-4 {
		t.Fatalf("price table: hd %v, standard %v per 1024x1024 image", hd, standard)
	}
	var total float64
	for _, tc := range []struct {
		path, body string
		want       float64
	}{
		{"/v1/images/generations", `{"model":"dall-e-3","prompt":"a lighthouse","quality":"hd","size":"1024x1024"}`, hd},
		{"/images/generations", `{"model":"dall-e-3","prompt":"a lighthouse","quality":"standard","n":2}`, 2 * standard},
		{"/v1/images/generations", `{"model":"dall-e-3","prompt":"a lighthouse","quality":"hd","n":3,"response_format":"url"}`, 3 * hd},
	} {
		resp, b := e.send(t, tc.path, key, "application/json", tc.body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", tc.body, resp.StatusCode, b)
		}
		var a struct{ Data []map[string]any }
		if json.Unmarshal(b, &a) != nil || len(a.Data) == 0 {
			t.Fatalf("not an images answer: %s", b)
		}
		if got := costHeader(t, resp); !near(got, tc.want) {
			t.Errorf("%s: cost %v, want %v", tc.body, got, tc.want)
		}
		if m := jsonField(e.mock.LastRequest().Body, "model"); m != "dall-e-3" {
			t.Errorf("upstream asked for model %q", m)
		}
		total += tc.want
	}
	// gpt-image-1 reports token usage: booked by it, not per image.
	resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"gpt-image-1","prompt":"a lighthouse at dusk","quality":"medium"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("gpt-image-1: %d %s", resp.StatusCode, b)
	}
	var a struct {
		Usage struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
		} `json:"usage"`
	}
	json.Unmarshal(b, &a)
	gi, _ := pricing.Lookup("openai", "gpt-image-1")
	want := float64(a.Usage.InputTokens)*gi.InputPerToken + float64(a.Usage.OutputTokens)*gi.OutputPerImageToken
	if a.Usage.OutputTokens == 0 || !near(costHeader(t, resp), want) {
		t.Errorf("gpt-image-1 cost %v, want %v from usage %+v", costHeader(t, resp), want, a.Usage)
	}
	total += want
	e.stop()
	logs, n, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	var sum float64
	for _, l := range logs {
		sum += l.Cost
		if l.CallType != "aimage_generation" || l.Status != 200 {
			t.Errorf("spend row %+v", l)
		}
	}
	if n != 4 || !near(sum, total) {
		t.Fatalf("%d spend rows costing %v, want 4 costing %v", n, sum, total)
	}
}

// TestImageEditReencodesTheForm: the upstream gets the client's form with
// model replaced by the deployment's, the file part byte for byte (its
// filename and content type too), and the call costs one image of the
// size asked.
func TestImageEditReencodesTheForm(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, mediaConfig)
	file := []byte("\x89PNG\r\n\x1a\n\r\n--not-a-boundary\r\n\x00\xff")
	for range 4 {
		file = append(file, file...)
	}
	for _, path := range []string{"/v1/images/edits", "/v1/images/variations", "/openai/deployments/painter/images/edits"} {
		fields := map[string]string{"model": "painter", "n": "2", "size": "512x512"}
		if strings.HasPrefix(path, "/openai/") {
			delete(fields, "model") // the path names it; the upstream's form gets one
		}
		if strings.HasSuffix(path, "edits") {
			fields["prompt"] = "add a boat"
		}
		body, ct := upload(t, fields, "image", "boat.png", file)
		resp, b := e.send(t, path, "sk-1234", ct, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, b)
		}
		rec := e.mock.LastRequest()
		values, files, headers := parseUpload(t, rec.Header.Get("Content-Type"), rec.Body)
		if values["model"] != "dall-e-2" || values["n"] != "2" || values["size"] != "512x512" || values["prompt"] != fields["prompt"] {
			t.Errorf("%s: upstream fields %v", path, values)
		}
		if !bytes.Equal(files["image"], file) {
			t.Errorf("%s: the file reached the upstream changed (%d bytes, sent %d)", path, len(files["image"]), len(file))
		}
		if h := headers["image"]; h.Get("Content-Type") != "application/octet-stream" || !strings.Contains(h.Get("Content-Disposition"), `filename="boat.png"`) {
			t.Errorf("%s: file part headers %v", path, h)
		}
		p, _ := pricing.ImageLookup("openai", "dall-e-2", "512x512", "")
		if want := 2 * p.MediaCost(usageImages(1, "512x512")); want == 0 || !near(costHeader(t, resp), want) {
			t.Errorf("%s: cost %v, want %v", path, costHeader(t, resp), want)
		}
	}
}

// TestTranscriptionsArePricedPerSecond: whisper-1 costs its per-second
// price for every second of audio, whether the answer says how long the
// audio was (json's usage, verbose_json, srt, vtt) or not (text: the WAV
// header says); an Azure deployment's input_cost_per_second is per second
// of audio; gpt-4o-transcribe is booked by its token usage.
func TestTranscriptionsArePricedPerSecond(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, mediaConfig)
	audio := wav(3)
	whisper, _ := pricing.Lookup("openai", "whisper-1")
	if whisper.InputPerAudioSecond != 0.0001 {
		t.Fatalf("whisper-1 per second: %v", whisper.InputPerAudioSecond)
	}
	for _, tc := range []struct{ path, model, format string }{
		{"/v1/audio/transcriptions", "whisper", ""},
		{"/v1/audio/transcriptions", "whisper", "text"},
		{"/audio/transcriptions", "whisper", "verbose_json"},
		{"/v1/audio/translations", "whisper", "srt"},
		{"/v1/audio/translations", "whisper", "vtt"},
	} {
		fields := map[string]string{"model": tc.model}
		if tc.format != "" {
			fields["response_format"] = tc.format
		}
		body, ct := upload(t, fields, "file", "speech.wav", audio)
		resp, b := e.send(t, tc.path, "sk-1234", ct, body)
		if resp.StatusCode != 200 || !strings.Contains(string(b), "quick brown fox") {
			t.Fatalf("%s %s: %d %s", tc.path, tc.format, resp.StatusCode, b)
		}
		if got := costHeader(t, resp); !near(got, 3*0.0001) {
			t.Errorf("%s %q: cost %v, want 3 s at $0.0001", tc.path, tc.format, got)
		}
		_, files, _ := parseUpload(t, e.mock.LastRequest().Header.Get("Content-Type"), e.mock.LastRequest().Body)
		if !bytes.Equal(files["file"], audio) {
			t.Errorf("the audio reached the upstream changed")
		}
	}
	// Azure: the model in the path; the upstream's Azure route; the
	// deployment's own price per second.
	body, ct := upload(t, map[string]string{"response_format": "text"}, "file", "speech.wav", wav(2))
	resp, b := e.send(t, "/openai/deployments/az-whisper/audio/transcriptions", "sk-1234", ct, body)
	if resp.StatusCode != 200 || !near(costHeader(t, resp), 2*0.0002) {
		t.Fatalf("azure: %d %s cost %s", resp.StatusCode, b, resp.Header.Get("x-tollgate-response-cost"))
	}
	if rec := e.mock.LastRequest(); rec.Path != "/openai/deployments/my-whisper/audio/transcriptions" || !strings.Contains(rec.Query, "api-version=") {
		t.Errorf("azure upstream request %s?%s", rec.Path, rec.Query)
	}
	// Token-priced: the answer's usage, its audio tokens at the audio price.
	body, ct = upload(t, map[string]string{"model": "gpt-4o-transcribe"}, "file", "speech.wav", audio)
	resp, b = e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body)
	var a struct {
		Usage struct {
			InputTokens  int64 `json:"input_tokens"`
			OutputTokens int64 `json:"output_tokens"`
			Details      struct {
				AudioTokens int64 `json:"audio_tokens"`
			} `json:"input_token_details"`
		} `json:"usage"`
	}
	json.Unmarshal(b, &a)
	p, _ := pricing.Lookup("openai", "gpt-4o-transcribe")
	want := float64(a.Usage.Details.AudioTokens)*p.InputPerAudioToken + float64(a.Usage.OutputTokens)*p.OutputPerToken
	if resp.StatusCode != 200 || a.Usage.Details.AudioTokens == 0 || !near(costHeader(t, resp), want) {
		t.Fatalf("gpt-4o-transcribe: %d %s cost %v want %v", resp.StatusCode, b, costHeader(t, resp), want)
	}
}

// TestSpeechIsStreamedAndPricedPerCharacter: the audio arrives as the
// upstream sends it, whole when the client stays, and costs the input's
// characters at tts-1's price; a client that leaves after the first bytes
// is booked the same (status 499).
func TestSpeechIsStreamedAndPricedPerCharacter(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{Chunks: 4}, mediaConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	input := strings.Repeat("héllo ", 20) // 120 characters, 140 bytes
	resp, b := e.send(t, "/v1/audio/speech", key, "application/json", `{"model":"tts-1","voice":"alloy","input":"`+input+`"}`)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "audio/mpeg" || len(b) != 64*120 {
		t.Fatalf("speech: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(b))
	}

	// The client leaves after the first chunk of a stream that would take
	// three minutes.
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/audio/speech",
		strings.NewReader(`{"model":"tts-slow","voice":"alloy","response_format":"wav","input":"`+input+`"}`))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 16)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatalf("the first audio bytes did not arrive before the upstream finished: %v", err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "audio/wav" {
		t.Errorf("Content-Type %q", ct)
	}
	cancel()
	resp.Body.Close()
	for deadline := time.Now().Add(30 * time.Second); e.mock.Stats().StreamsAborted == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the upstream stream was not cut when the client left")
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.stop()
	logs, n, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	want := 120 * 1.5e-05
	if n != 2 {
		t.Fatalf("%d spend rows, want 2", n)
	}
	statuses := map[int]bool{}
	for _, l := range logs {
		statuses[l.Status] = true
		if !near(l.Cost, want) || l.CallType != "aspeech" {
			t.Errorf("spend row %+v, want cost %v", l, want)
		}
	}
	if !statuses[200] || !statuses[499] {
		t.Errorf("statuses %v, want 200 and 499", statuses)
	}
}

// TestMediaBudgetRefusedBeforeUpstream: in strict mode a call whose worst
// case the budget cannot hold is refused with budget_exceeded before any
// upstream sees it (n images at the size and quality asked, the text to
// speak, the upload's length), and one that fits is served. In default
// mode the one call that does not fit runs (its cost is known, and held
// up to what remains); none can be capped, so a second call while it is
// in flight is refused, as is any call once the budget is spent.
func TestMediaBudgetRefusedBeforeUpstream(t *testing.T) {
	t.Run("strict", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{}, mediaConfig+"litellm_settings:\n  budget_enforcement: strict\n")
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.05}`)
		key := out["key"].(string)
		big, ct := upload(t, map[string]string{"model": "whisper"}, "file", "long.wav", wav8(600)) // 600 s: $0.06
		for _, tc := range []struct{ path, ct, body string }{
			{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"x","quality":"hd"}`},
			{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"x","n":2,"quality":"standard"}`},
			{"/v1/audio/speech", "application/json", `{"model":"tts-1","voice":"alloy","input":"` + strings.Repeat("a", 4000) + `"}`},
			{"/v1/audio/transcriptions", ct, big},
			{"/v1/images/generations", "application/json", `{"model":"house-painter","prompt":"x","n":6}`}, // its own $0.01 an image
		} {
			resp, b := e.send(t, tc.path, key, tc.ct, tc.body)
			if resp.StatusCode != 400 || !strings.Contains(string(b), "budget_exceeded") || strings.Contains(string(b), "max_tokens") {
				t.Errorf("%s %.80s: %d %s, want 400 budget_exceeded", tc.path, tc.body, resp.StatusCode, b)
			}
		}
		if n := e.mock.Stats().Requests; n != 0 {
			t.Fatalf("%d refused calls reached the upstream", n)
		}
		resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"dall-e-3","prompt":"x","quality":"standard"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("an affordable image was refused: %d %s", resp.StatusCode, b)
		}
	})
	t.Run("default", func(t *testing.T) {
		e := startConfig(t, sqliteStore(t), mockupstream.Options{Chunks: 4}, mediaConfig)
		_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.05}`)
		key := out["key"].(string)
		// $0.06 of speech, streamed slowly: the budget's uncovered call.
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", e.url+"/v1/audio/speech",
			strings.NewReader(`{"model":"tts-slow","voice":"alloy","input":"`+strings.Repeat("a", 4000)+`"}`))
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("the uncovered call: %v %v", err, resp)
		}
		if _, err := io.ReadFull(resp.Body, make([]byte, 16)); err != nil {
			t.Fatal(err)
		}
		r, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"dall-e-3","prompt":"x","quality":"standard"}`)
		if r.StatusCode != 400 || !strings.Contains(string(b), "budget_exceeded") {
			t.Fatalf("a second call beside the uncovered one: %d %s", r.StatusCode, b)
		}
		cancel()
		resp.Body.Close()
		// Once the speech is booked ($0.06), the budget is spent.
		for deadline := time.Now().Add(30 * time.Second); ; {
			r, b = e.send(t, "/v1/images/generations", key, "application/json", `{"model":"dall-e-3","prompt":"x","quality":"standard"}`)
			if r.StatusCode == 400 && strings.Contains(string(b), "spend $0.06") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the speech was booked: %d %s", r.StatusCode, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if n := e.mock.Stats().Requests; n != 1 {
			t.Fatalf("%d calls reached the upstream, want the speech alone", n)
		}
	})
}

// TestMediaBadInput: malformed or incomplete requests get an OpenAI-shape
// 400 naming the field, and never reach the upstream.
func TestMediaBadInput(t *testing.T) {
	e := startConfig(t, sqliteStore(t), mockupstream.Options{}, mediaConfig)
	noModel, ct1 := upload(t, map[string]string{"response_format": "json"}, "file", "a.wav", wav(1))
	noFile, ct2 := upload(t, map[string]string{"model": "whisper"}, "", "", nil)
	noPrompt, ct3 := upload(t, map[string]string{"model": "painter"}, "image", "a.png", []byte("png"))
	tooMany, ct4 := upload(t, map[string]string{"model": "painter", "n": "11"}, "image", "a.png", []byte("png"))
	for _, tc := range []struct{ path, ct, body, param string }{
		{"/v1/audio/transcriptions", ct1, noModel, "model"},
		{"/v1/audio/transcriptions", ct2, noFile, "file"},
		{"/v1/images/edits", ct3, noPrompt, "prompt"},
		{"/v1/images/variations", ct4, tooMany, "n"},
		{"/v1/audio/transcriptions", "multipart/form-data; boundary=xyz", "--xyz\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--xy", ""},
		{"/v1/audio/translations", "application/json", `{"model":"whisper"}`, ""},
		{"/v1/images/generations", "application/json", `{"model":"dall-e-3"}`, "prompt"},
		{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"x","n":11}`, "n"},
		{"/v1/images/generations", "application/json", `{"model":"dall-e-3","prompt":"x","size":1024}`, "size"},
		{"/v1/audio/speech", "application/json", `{"model":"tts-1","voice":"alloy"}`, "input"},
		{"/v1/audio/speech", "application/json", `{"voice":"alloy","input":"hi"}`, "model"},
	} {
		resp, b := e.send(t, tc.path, "sk-1234", tc.ct, tc.body)
		var out struct {
			Error struct {
				Message, Type string
				Param         *string
			}
		}
		if resp.StatusCode != 400 || json.Unmarshal(b, &out) != nil || out.Error.Message == "" || out.Error.Type != "invalid_request_error" {
			t.Errorf("%s %.60q: %d %s", tc.path, tc.body, resp.StatusCode, b)
			continue
		}
		if tc.param != "" && (out.Error.Param == nil || *out.Error.Param != tc.param) {
			t.Errorf("%s %.60q: param %v, want %s (%s)", tc.path, tc.body, out.Error.Param, tc.param, b)
		}
	}
	if n := e.mock.Stats().Requests; n != 0 {
		t.Fatalf("%d bad requests reached the upstream", n)
	}
}

func usageImages(n int64, size string) (u usage.Media) {
	u.Images, u.ImagePixels = n, pricing.Pixels(size)
	return u
}

// parseUpload reads a multipart body as the upstream got it.
func parseUpload(t *testing.T, contentType string, body []byte) (map[string]string, map[string][]byte, map[string]textproto.MIMEHeader) {
	t.Helper()
	_, params, err := mime.ParseMediaType(contentType)
	if err != nil {
		t.Fatalf("upstream Content-Type %q: %v", contentType, err)
	}
	values, files, headers := map[string]string{}, map[string][]byte{}, map[string]textproto.MIMEHeader{}
	r := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	for {
		p, err := r.NextPart()
		if err == io.EOF {
			return values, files, headers
		}
		if err != nil {
			t.Fatalf("the upstream got a malformed form: %v", err)
		}
		data, _ := io.ReadAll(p)
		if p.FileName() != "" {
			files[p.FormName()], headers[p.FormName()] = data, p.Header
		} else {
			values[p.FormName()] = string(data)
		}
	}
}

func jsonField(body []byte, name string) string {
	var m map[string]any
	json.Unmarshal(body, &m)
	s, _ := m[name].(string)
	return s
}

// TestUploadFallsBack: an upload whose first deployment fails is retried,
// then falls back to another group; each attempt re-encodes the form with
// its own deployment's model, and the answer is booked at the price of the
// deployment that gave it.
func TestUploadFallsBack(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, strings.Replace(mediaConfig, "general_settings:", `  - model_name: flaky
    litellm_params: {model: openai/whisper-1, api_base: "{{UP}}", extra_headers: {x-mock-status: "500"}}
router_settings:
  num_retries: 1
  allowed_fails: 100
litellm_settings:
  fallbacks: [{"flaky": ["az-whisper"]}]
general_settings:`, 1))
	audio := wav(4)
	body, ct := upload(t, map[string]string{"model": "flaky", "response_format": "verbose_json"}, "file", "a.wav", audio)
	resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body)
	if resp.StatusCode != 200 || resp.Header.Get("x-tollgate-attempted-fallbacks") != "1" || resp.Header.Get("x-tollgate-attempted-retries") != "1" {
		t.Fatalf("%d %s retries %q fallbacks %q", resp.StatusCode, b, resp.Header.Get("x-tollgate-attempted-retries"), resp.Header.Get("x-tollgate-attempted-fallbacks"))
	}
	if by := e.mock.Stats().ByPath; by["/v1/audio/transcriptions"] != 2 || by["/openai/deployments/my-whisper/audio/transcriptions"] != 1 {
		t.Fatalf("upstream requests %v", by)
	}
	rec := e.mock.LastRequest()
	values, files, _ := parseUpload(t, rec.Header.Get("Content-Type"), rec.Body)
	if values["model"] != "my-whisper" || !bytes.Equal(files["file"], audio) {
		t.Fatalf("the fallback got model %q and %d bytes of audio", values["model"], len(files["file"]))
	}
	if got := costHeader(t, resp); !near(got, 4*0.0002) {
		t.Fatalf("cost %v, want 4 s at the Azure deployment's $0.0002", got)
	}
}

// TestMediaPriceOverrides: a deployment's own output_cost_per_image and
// input_cost_per_character (model_info, as LiteLLM takes them) price
// models the table does not know.
func TestMediaPriceOverrides(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, mediaConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{}`)
	key := out["key"].(string)
	resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"house-painter","prompt":"a cat","n":3}`)
	if resp.StatusCode != 200 || !near(costHeader(t, resp), 0.03) {
		t.Fatalf("images: %d %s cost %s", resp.StatusCode, b, resp.Header.Get("x-tollgate-response-cost"))
	}
	resp, b = e.send(t, "/v1/audio/speech", key, "application/json", `{"model":"house-voice","voice":"alloy","input":"hello"}`)
	if resp.StatusCode != 200 || len(b) == 0 {
		t.Fatalf("speech: %d %s", resp.StatusCode, b)
	}
	e.stop()
	logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	costs := map[string]float64{}
	for _, l := range logs {
		costs[l.ModelGroup] = l.Cost
	}
	if !near(costs["house-painter"], 0.03) || !near(costs["house-voice"], 0.005) {
		t.Fatalf("booked %v, want 3 images at $0.01 and 5 characters at $0.001", costs)
	}
}

// TestMediaUpstreamFailures: an upstream's refusal reaches the client as
// it came and costs nothing (no row, the hold released); a 2xx that is not
// an images answer is a 502, booked at the price of the image asked for
// (known before the call: the upstream made it and bills it).
func TestMediaUpstreamFailures(t *testing.T) {
	st := sqliteStore(t)
	e := startConfig(t, st, mockupstream.Options{}, mediaConfig)
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": 0.07}`)
	key := out["key"].(string)
	resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"refusing-painter","prompt":"x"}`)
	if resp.StatusCode != 400 || !strings.Contains(string(b), "mock failure 400") {
		t.Fatalf("upstream 400: %d %s", resp.StatusCode, b)
	}
	resp, b = e.send(t, "/v1/images/generations", key, "application/json", `{"model":"garbled-painter","prompt":"x"}`)
	if resp.StatusCode != 502 {
		t.Fatalf("garbled answer: %d %s", resp.StatusCode, b)
	}
	// Nothing more was held back: the rest of the budget still buys images.
	resp, b = e.send(t, "/v1/images/generations", key, "application/json", `{"model":"painter","prompt":"x","n":2}`)
	if resp.StatusCode != 200 {
		t.Fatalf("after the failures: %d %s", resp.StatusCode, b)
	}
	e.stop()
	logs, _, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	rows := map[string]store.SpendLog{}
	for _, l := range logs {
		rows[l.ModelGroup] = l
	}
	if r, ok := rows["refusing-painter"]; !ok || r.Status != 400 || r.Cost != 0 || r.ErrorInformation == nil || len(logs) != 3 {
		t.Fatalf("rows %+v: want the garbled answer, the images, and the refusal as a failure row without cost", logs)
	}
	one, _ := pricing.ImageLookup("openai", "dall-e-2", "1024x1024", "")
	if g := rows["garbled-painter"]; g.Status != 502 || !g.UsageEstimated || !near(g.Cost, one.MediaCost(usageImages(1, "1024x1024"))) {
		t.Errorf("garbled answer booked as %+v, want one image's price", g)
	}
	want := 2 * one.MediaCost(usageImages(1, "1024x1024")) // dall-e-2's default size
	if p := rows["painter"]; p.Status != 200 || want == 0 || !near(p.Cost, want) {
		t.Errorf("images booked as %+v, want %v", p, want)
	}
}

// The tests below run behind a loopback fake upstream whose answer each
// test controls (the mock upstream's answers are well formed).

const fakeMediaConfig = `
model_list:
  - model_name: whisper
    litellm_params: {model: openai/whisper-1, api_base: "{{FAKE}}"}
  - model_name: self-whisper
    litellm_params: {model: openai/whisper-1, api_base: "{{FAKE}}", input_cost_per_second: 0}
  - model_name: dall-e-3
    litellm_params: {model: openai/dall-e-3, api_base: "{{FAKE}}"}
  - model_name: painter
    litellm_params: {model: openai/dall-e-2, api_base: "{{FAKE}}"}
  - model_name: gpt-image-1
    litellm_params: {model: openai/gpt-image-1, api_base: "{{FAKE}}"}
  - model_name: pixel-dalle
    litellm_params: {model: openai/dall-e-3, api_base: "{{FAKE}}", input_cost_per_pixel: 0.0000001}
  - model_name: mod
    litellm_params: {model: openai/omni-moderation-latest, api_base: "{{FAKE}}"}
  - model_name: rerank
    litellm_params: {model: cohere/rerank-v3.5, api_base: "{{FAKE}}", api_key: k}
  - model_name: vllm-rerank
    litellm_params: {model: hosted_vllm/BAAI/bge-reranker-v2-m3, api_base: "{{FAKE}}", input_cost_per_token: 0.00001, output_cost_per_token: 0}
  - model_name: mini-tts
    litellm_params: {model: openai/gpt-4o-mini-tts, api_base: "{{FAKE}}"}
general_settings:
  master_key: sk-1234
`

const strictBudgets = "litellm_settings:\n  budget_enforcement: strict\n"

// mediaFake counts the requests it serves and keeps the last one's body.
type mediaFake struct {
	calls atomic.Int64
	last  atomic.Value // []byte: the last request's body
	ct    atomic.Value // string: its Content-Type
}

// startMediaFake starts the server (fakeMediaConfig plus extra) in front
// of a fake upstream that answers every request with answer.
func startMediaFake(t *testing.T, answer http.HandlerFunc, extra string) (*spendEnv, *mediaFake, store.Store) {
	t.Helper()
	mf := &mediaFake{}
	fake := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mf.calls.Add(1)
		b, _ := io.ReadAll(r.Body)
		mf.last.Store(b)
		mf.ct.Store(r.Header.Get("Content-Type"))
		r.Body = io.NopCloser(bytes.NewReader(b))
		answer(w, r)
	}))
	t.Cleanup(fake.Close)
	st := sqliteStore(t)
	yaml := strings.ReplaceAll(fakeMediaConfig, "{{FAKE}}", fake.URL) + extra
	return startConfig(t, st, mockupstream.Options{}, yaml), mf, st
}

func jsonAnswer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}
}

func textAnswer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, body)
	}
}

// budgetKey is a new key with max_budget budget.
func budgetKey(t *testing.T, e *spendEnv, budget string) string {
	t.Helper()
	_, out := e.post(t, "/key/generate", "sk-1234", `{"max_budget": `+budget+`}`)
	k, _ := out["key"].(string)
	if k == "" {
		t.Fatalf("no key: %v", out)
	}
	return k
}

// keySpend is what the store booked for key, once the server has stopped.
func keySpend(t *testing.T, e *spendEnv, st store.Store, key string) (float64, []store.SpendLog) {
	t.Helper()
	e.stop()
	logs, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: sha(key)})
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, l := range logs {
		sum += l.Cost
	}
	return sum, logs
}

// wantRefused fails unless an answer is a 400 with param (when not "")
// and error type typ.
func wantRefused(t *testing.T, what string, resp *http.Response, b []byte, typ, param string) {
	t.Helper()
	var out struct {
		Error struct {
			Type  string
			Param *string
		}
	}
	if resp.StatusCode != 400 || json.Unmarshal(b, &out) != nil || out.Error.Type != typ {
		t.Errorf("%s: %d %.200s, want a 400 %s", what, resp.StatusCode, b, typ)
		return
	}
	if param != "" && (out.Error.Param == nil || *out.Error.Param != param) {
		t.Errorf("%s: param %v, want %s (%.200s)", what, out.Error.Param, param, b)
	}
}

// pcmWAV is a mono 16-bit 16 kHz WAV of secs seconds whose header declares
// byteRate as its byte rate (honest: 32,000).
func pcmWAV(secs int, byteRate uint32) []byte {
	const rate = 16000
	data := make([]byte, secs*rate*2)
	for i := range data {
		data[i] = byte(i * 13)
	}
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+len(data)))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1) // PCM
	binary.LittleEndian.PutUint16(h[22:], 1) // mono
	binary.LittleEndian.PutUint32(h[24:], rate)
	binary.LittleEndian.PutUint32(h[28:], byteRate)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(len(data)))
	return append(h, data...)
}

// TestWAVLengthIgnoresHeaderByteRate: a PCM WAV is as long as its data
// over sample rate × block size, whatever its header's byte rate says: 20
// s of 16 kHz audio ($0.002) whose header claims a byte rate of 0xFFFFFFFF
// (read by it, well under a millisecond) is held (a strict $0.001 budget
// refuses it before the upstream) and booked as 20 s.
func TestWAVLengthIgnoresHeaderByteRate(t *testing.T) {
	e, mf, _ := startMediaFake(t, textAnswer("the quick brown fox\n"), strictBudgets)
	small, big := budgetKey(t, e, "0.001"), budgetKey(t, e, "100")
	body, ct := upload(t, map[string]string{"model": "whisper", "response_format": "text"}, "file", "talk.wav", pcmWAV(20, 0xFFFFFFFF))
	resp, b := e.send(t, "/v1/audio/transcriptions", small, ct, body)
	wantRefused(t, "20 s of audio on a $0.001 strict budget", resp, b, "budget_exceeded", "")
	if mf.calls.Load() != 0 {
		t.Fatalf("the refused call reached the upstream")
	}
	resp, b = e.send(t, "/v1/audio/transcriptions", big, ct, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got, want := costHeader(t, resp), 20*0.0001; !near(got, want) {
		t.Errorf("20 s of PCM audio (header byte rate 0xFFFFFFFF) booked $%g, want $%g", got, want)
	}
}

// mp3Frames is secs seconds of MPEG-1 Layer III frames at 32 kbit/s, 44.1
// kHz mono: 104-byte frames of 1,152 samples each.
func mp3Frames(secs int) []byte {
	frames := secs * 44100 / 1152
	frame := make([]byte, 104)
	frame[0], frame[1], frame[2], frame[3] = 0xFF, 0xFB, 0x10, 0xC4
	var b bytes.Buffer
	for range frames {
		b.Write(frame)
	}
	return b.Bytes()
}

// TestTextTranscriptBookedAtLowestBitrate: a transcript whose answer says
// nothing of the audio's length (response_format text) of an upload whose
// header does not either is booked as the hold bounds it, at 16 kbit/s: 100
// s of 32 kbit/s MP3 is booked as its 398 kB at 2 kB/s, never below the
// 100 s the provider bills.
func TestTextTranscriptBookedAtLowestBitrate(t *testing.T) {
	e, _, st := startMediaFake(t, textAnswer("the quick brown fox\n"), "")
	key := budgetKey(t, e, "100")
	mp3 := mp3Frames(100)
	body, ct := upload(t, map[string]string{"model": "whisper", "response_format": "text"}, "file", "talk.mp3", mp3)
	resp, b := e.send(t, "/v1/audio/transcriptions", key, ct, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	spent, logs := keySpend(t, e, st, key)
	if want := float64(len(mp3)) / 2000 * 0.0001; !near(spent, want) || len(logs) != 1 || !logs[0].UsageEstimated {
		t.Errorf("100 s of 32 kbit/s MP3 booked $%g (%+v), want $%g (its bytes at 2 kB/s), marked estimated", spent, logs, want)
	}
}

// TestMediaUsageClampedToRequest: what an image or transcription answer
// reports is booked within what was asked for and held: five images for
// n=1 are booked as one, a million seconds for a 3 s WAV as 3 s; both rows
// say the usage was clamped.
func TestMediaUsageClampedToRequest(t *testing.T) {
	t.Run("images beyond n", func(t *testing.T) {
		five := `{"created":1,"data":[{"url":"u"},{"url":"u"},{"url":"u"},{"url":"u"},{"url":"u"}]}`
		e, _, st := startMediaFake(t, jsonAnswer(five), strictBudgets)
		key := budgetKey(t, e, "0.05")
		resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"dall-e-3","prompt":"x","n":1,"quality":"standard","size":"1024x1024"}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		spent, logs := keySpend(t, e, st, key)
		one, _ := pricing.ImageLookup("openai", "dall-e-3", "1024x1024", "standard")
		want := one.MediaCost(usageImages(1, "1024x1024"))
		if want == 0 || !near(spent, want) || len(logs) != 1 || !logs[0].UsageClamped {
			t.Errorf("n=1, five images answered: booked $%g (%+v), want one image at $%g, clamped", spent, logs, want)
		}
	})
	t.Run("seconds beyond the WAV header", func(t *testing.T) {
		e, _, st := startMediaFake(t, jsonAnswer(`{"task":"transcribe","language":"english","duration":1000000,"text":"hi"}`), strictBudgets)
		key := budgetKey(t, e, "1")
		body, ct := upload(t, map[string]string{"model": "whisper", "response_format": "verbose_json"}, "file", "a.wav", wav(3))
		resp, b := e.send(t, "/v1/audio/transcriptions", key, ct, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		spent, logs := keySpend(t, e, st, key)
		if !near(spent, 3*0.0001) || len(logs) != 1 || !logs[0].UsageClamped {
			t.Errorf("a 3 s WAV reported as 1e6 s: booked $%g (%+v), want 3 s, clamped", spent, logs)
		}
	})
	t.Run("whole seconds of a shorter WAV", func(t *testing.T) {
		// Providers report (and bill) whole seconds: 2.5 s of audio
		// reported as 3 s is within the bound.
		e, _, st := startMediaFake(t, jsonAnswer(`{"text":"hi","usage":{"type":"duration","seconds":3}}`), strictBudgets)
		key := budgetKey(t, e, "1")
		body, ct := upload(t, map[string]string{"model": "whisper"}, "file", "a.wav", wav(3)[:44+40000])
		resp, b := e.send(t, "/v1/audio/transcriptions", key, ct, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		spent, logs := keySpend(t, e, st, key)
		if !near(spent, 3*0.0001) || len(logs) != 1 || logs[0].UsageClamped {
			t.Errorf("2.5 s of WAV reported as 3 s: booked $%g (%+v), want 3 s, not clamped", spent, logs)
		}
	})
}

// TestImageEditHoldsInputImages: a gpt-image-1 edit holds, besides its
// output image and prompt, each input image at the most tokens an image
// can cost: four input images at medium quality do not fit a strict $0.20
// budget and are refused before the upstream; the same edit with one input
// image fits.
func TestImageEditHoldsInputImages(t *testing.T) {
	ans := `{"created":1,"data":[{"b64_json":"aGk="}],"usage":{"total_tokens":5260,"input_tokens":1100,"output_tokens":4160,"input_tokens_details":{"text_tokens":50,"image_tokens":1050}}}`
	e, mf, _ := startMediaFake(t, jsonAnswer(ans), strictBudgets)
	key := budgetKey(t, e, "0.2")
	edit := func(images int) (string, string) {
		var b bytes.Buffer
		w := multipart.NewWriter(&b)
		w.WriteField("model", "gpt-image-1")
		w.WriteField("prompt", "put these products in one gift basket")
		w.WriteField("size", "1024x1024")
		w.WriteField("quality", "medium")
		for i := range images {
			fw, _ := w.CreateFormFile("image[]", fmt.Sprintf("p%d.png", i))
			fw.Write([]byte("\x89PNG fake image bytes"))
		}
		w.Close()
		return b.String(), w.FormDataContentType()
	}
	body, ct := edit(4)
	resp, out := e.send(t, "/v1/images/edits", key, ct, body)
	wantRefused(t, "a 4-image medium-quality edit on a strict $0.20 budget", resp, out, "budget_exceeded", "")
	if mf.calls.Load() != 0 {
		t.Fatalf("the refused edit reached the upstream")
	}
	body, ct = edit(1)
	if resp, out = e.send(t, "/v1/images/edits", key, ct, body); resp.StatusCode != 200 {
		t.Errorf("a 1-image edit on a strict $0.20 budget: %d %s", resp.StatusCode, out)
	}
}

// TestDuplicateFormFieldsRefused: a form that repeats a field the call is
// priced or routed by is refused before the upstream, naming the field: the
// gateway would price the first and a server that reads the last
// (Starlette's) would make what was not held for. A file part named model
// is refused the same way (it would be forwarded next to the deployment's).
func TestDuplicateFormFieldsRefused(t *testing.T) {
	e, mf, _ := startMediaFake(t, jsonAnswer(`{"created":1,"data":[{"url":"u"}]}`), "")
	part := func(name, value string) string {
		return "--B\r\nContent-Disposition: form-data; name=\"" + name + "\"\r\n\r\n" + value + "\r\n"
	}
	image := "--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n"
	audio := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\n" + string(wav(1)) + "\r\n"
	for _, tc := range []struct{ path, body, param string }{
		{"/v1/images/variations", part("model", "painter") + part("n", "1") + part("n", "10") + image, "n"},
		{"/v1/images/variations", part("model", "painter") + part("size", "256x256") + part("size", "1024x1024") + image, "size"},
		{"/v1/images/edits", part("model", "gpt-image-1") + part("prompt", "x") + part("quality", "low") + part("quality", "high") + image, "quality"},
		{"/v1/images/variations", part("model", "painter") + part("model", "dall-e-3") + image, "model"},
		{"/v1/audio/transcriptions", part("model", "whisper") + part("response_format", "json") + part("response_format", "text") + audio, "response_format"},
		{"/v1/audio/transcriptions", part("model", "whisper") + audio + audio, "file"},
		{"/openai/deployments/whisper/audio/transcriptions?api-version=2024-06-01",
			"--B\r\nContent-Disposition: form-data; name=\"model\"; filename=\"m\"\r\n\r\ngpt-4o-transcribe\r\n" + audio, "model"},
	} {
		resp, b := e.send(t, tc.path, "sk-1234", "multipart/form-data; boundary=B", tc.body+"--B--\r\n")
		wantRefused(t, tc.path+" "+tc.param, resp, b, "invalid_request_error", tc.param)
	}
	if n := mf.calls.Load(); n != 0 {
		t.Errorf("%d refused forms reached the upstream", n)
	}
}

// TestStreamFormFieldRefusedWhenTruthy: an upload's stream field is
// refused whenever a Python server would read it as true, not only for
// "true".
func TestStreamFormFieldRefusedWhenTruthy(t *testing.T) {
	e, mf, _ := startMediaFake(t, jsonAnswer(`{"text":"hi","usage":{"type":"duration","seconds":1}}`), "")
	for _, v := range []string{"true", "True", "1", "on", "yes"} {
		body, ct := upload(t, map[string]string{"model": "whisper", "stream": v}, "file", "a.wav", wav(1))
		resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body)
		wantRefused(t, "stream="+v, resp, b, "invalid_request_error", "stream")
	}
	if n := mf.calls.Load(); n != 0 {
		t.Errorf("%d streaming uploads reached the upstream", n)
	}
	body, ct := upload(t, map[string]string{"model": "whisper", "stream": "false"}, "file", "a.wav", wav(1))
	if resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body); resp.StatusCode != 200 {
		t.Errorf("stream=false: %d %s", resp.StatusCode, b)
	}
}

// TestDeploymentPixelPriceWins: a deployment's input_cost_per_pixel
// prices its images even where the table has a per-image price for the
// model: dall-e-3 at 1024x1024 is booked at 1,048,576 px × $1e-7, not the
// table's $0.04.
func TestDeploymentPixelPriceWins(t *testing.T) {
	e, _, _ := startMediaFake(t, jsonAnswer(`{"created":1,"data":[{"url":"u"}]}`), "")
	resp, b := e.send(t, "/v1/images/generations", "sk-1234", "application/json", `{"model":"pixel-dalle","prompt":"x","size":"1024x1024","quality":"standard"}`)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got, want := costHeader(t, resp), 1024*1024*1e-7; !near(got, want) {
		t.Errorf("deployment input_cost_per_pixel 1e-7: 1024x1024 booked $%g, want $%g", got, want)
	}
}

// TestZeroSecondPriceOverrideHonoured: a self-hosted whisper-1 deployment
// priced input_cost_per_second: 0 books its transcriptions at $0, not at
// the table's $0.0001 a second.
func TestZeroSecondPriceOverrideHonoured(t *testing.T) {
	e, _, _ := startMediaFake(t, jsonAnswer(`{"text":"hi","usage":{"type":"duration","seconds":3}}`), "")
	for _, tc := range []struct {
		model string
		want  float64
	}{{"self-whisper", 0}, {"whisper", 3 * 0.0001}} {
		body, ct := upload(t, map[string]string{"model": tc.model}, "file", "a.wav", wav(3))
		resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body)
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, b)
		}
		if got := costHeader(t, resp); !near(got, tc.want) {
			t.Errorf("%s: 3 s booked $%g, want $%g", tc.model, got, tc.want)
		}
	}
}

// TestTooLargeImageAnswerBookedAtHeldPrice: an images answer over
// max_response_size_mb (1 MiB here) is a 502 to the client, and booked at
// the price of the n images asked for, known before the call: the upstream
// made them and bills them.
func TestTooLargeImageAnswerBookedAtHeldPrice(t *testing.T) {
	img := strings.Repeat("A", 700<<10)
	ans := `{"created":1,"data":[{"b64_json":"` + img + `"},{"b64_json":"` + img + `"}]}`
	e, mf, st := startMediaFake(t, jsonAnswer(ans), "  max_response_size_mb: 1\n")
	key := budgetKey(t, e, "100")
	resp, b := e.send(t, "/v1/images/generations", key, "application/json", `{"model":"painter","prompt":"x","n":2,"size":"1024x1024","response_format":"b64_json"}`)
	if resp.StatusCode != 502 || mf.calls.Load() != 1 {
		t.Fatalf("answer over the bound: %d %.100s (upstream calls %d), want one call and a 502", resp.StatusCode, b, mf.calls.Load())
	}
	spent, logs := keySpend(t, e, st, key)
	one, _ := pricing.ImageLookup("openai", "dall-e-2", "1024x1024", "")
	want := 2 * one.MediaCost(usageImages(1, "1024x1024"))
	if want == 0 || !near(spent, want) || len(logs) != 1 || logs[0].Status != 502 || !logs[0].UsageEstimated {
		t.Errorf("2 images made upstream, answer over the size bound: booked $%g in %+v, want $%g in one 502 row", spent, logs, want)
	}
}

// TestSubtitleTranscriptBookedToWAVLength: an srt transcript is booked to
// the end of its last cue, but never below the WAV header's length: 60 s
// of audio with one second of speech at its start is booked as 60 s, as
// the provider bills the audio it heard.
func TestSubtitleTranscriptBookedToWAVLength(t *testing.T) {
	e, _, _ := startMediaFake(t, textAnswer("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n"), "")
	body, ct := upload(t, map[string]string{"model": "whisper", "response_format": "srt"}, "file", "a.wav", wav(60))
	resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", ct, body)
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, b)
	}
	if got, want := costHeader(t, resp), 60*0.0001; !near(got, want) {
		t.Errorf("a 60 s WAV with srt output booked $%g (%.0f s), want $%g", got, got/0.0001, want)
	}
}

// TestSpeechInstructionsBooked: gpt-4o-mini-tts bills the text of
// instructions as input tokens; they are held and booked with the input's.
func TestSpeechInstructionsBooked(t *testing.T) {
	e, _, _ := startMediaFake(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "audio/mpeg")
		w.Write(make([]byte, 256))
	}, "")
	instructions := strings.Repeat("Speak like a calm museum guide, slowly and warmly. ", 800) // ~40 kB
	body, _ := json.Marshal(map[string]string{"model": "mini-tts", "voice": "alloy", "input": "hi", "instructions": instructions})
	resp, b := e.send(t, "/v1/audio/speech", "sk-1234", "application/json", string(body))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %.80s", resp.StatusCode, b)
	}
	e.stop()
	logs, _, _ := e.store.ListSpendLogs(context.Background(), store.SpendFilter{})
	p, _ := pricing.Lookup("openai", "gpt-4o-mini-tts")
	floor := float64(len(instructions)) / 8 * p.InputPerToken // fewer than 8 bytes a token
	if len(logs) != 1 || p.InputPerToken == 0 || logs[0].Cost < floor {
		t.Errorf("speech with %d bytes of instructions booked %+v, want at least $%g", len(instructions), logs, floor)
	}
}

// TestFormPartCountBounded: a form of more than maxParts (1,000) parts,
// or a part whose headers are over 8 KiB, is refused before the upstream:
// every part costs a header map kept for each attempt.
func TestFormPartCountBounded(t *testing.T) {
	e, mf, _ := startMediaFake(t, jsonAnswer(`{"text":"hi","usage":{"type":"duration","seconds":1}}`), "")
	file := "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n" + string(wav(1)) + "\r\n--B--\r\n"
	model := "--B\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n"
	tiny := "--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n"
	for _, tc := range []struct{ what, body string }{
		{"1,001 parts", model + strings.Repeat(tiny, 999) + file},
		{"a 9 KiB part header", model + "--B\r\nContent-Disposition: form-data; name=\"x\"\r\nX-Pad: " + strings.Repeat("a", 9<<10) + "\r\n\r\n\r\n" + file},
	} {
		resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", "multipart/form-data; boundary=B", tc.body)
		wantRefused(t, tc.what, resp, b, "invalid_request_error", "")
	}
	if n := mf.calls.Load(); n != 0 {
		t.Errorf("%d oversized forms reached the upstream", n)
	}
	// At the bound, the form is served.
	resp, b := e.send(t, "/v1/audio/transcriptions", "sk-1234", "multipart/form-data; boundary=B", model+strings.Repeat(tiny, 998)+file)
	if resp.StatusCode != 200 {
		t.Errorf("1,000 parts: %d %.100s", resp.StatusCode, b)
	}
}

// TestJSONImageEdit: an image edit may come as JSON (the GPT image
// models' form in OpenAI's API: images by image_url or file_id); it is
// passed through as JSON with the deployment's model, holds each image it
// names as input image tokens (four do not fit a strict $0.20 budget at
// medium quality, one does), and a body whose images are missing or not
// image references is refused before the upstream.
func TestJSONImageEdit(t *testing.T) {
	e, mf, _ := startMediaFake(t, jsonAnswer(`{"created":1,"data":[{"b64_json":"aGk="}],"usage":{"input_tokens":10,"output_tokens":100}}`), strictBudgets)
	key := budgetKey(t, e, "0.2")
	edit := func(images int) string {
		refs := make([]string, images)
		for i := range refs {
			refs[i] = fmt.Sprintf(`{"image_url":"https://example.com/%d.png"}`, i)
		}
		return `{"model":"gpt-image-1","prompt":"add a hat","quality":"medium","size":"1024x1024","images":[` + strings.Join(refs, ",") + `]}`
	}
	resp, b := e.send(t, "/v1/images/edits", key, "application/json", edit(4))
	wantRefused(t, "a 4-image JSON edit on a strict $0.20 budget", resp, b, "budget_exceeded", "")
	for _, tc := range []struct{ body, param string }{
		{`{"model":"gpt-image-1","prompt":"x"}`, "images"},
		{`{"model":"gpt-image-1","prompt":"x","images":[]}`, "images"},
		{`{"model":"gpt-image-1","prompt":"x","images":["https://example.com/a.png"]}`, "images"},
		{`{"model":"gpt-image-1","prompt":"x","images":[{"detail":"high"}]}`, "images"},
		{`{"model":"gpt-image-1","prompt":"x","images":[{"file_id":"f"}],"mask":"m"}`, "mask"},
		{`{"model":"gpt-image-1","images":[{"file_id":"f"}]}`, "prompt"},
	} {
		resp, b := e.send(t, "/v1/images/edits", key, "application/json", tc.body)
		wantRefused(t, tc.body, resp, b, "invalid_request_error", tc.param)
	}
	if n := mf.calls.Load(); n != 0 {
		t.Fatalf("%d refused edits reached the upstream", n)
	}
	resp, b = e.send(t, "/v1/images/edits", key, "application/json", edit(1))
	if resp.StatusCode != 200 || mf.calls.Load() != 1 {
		t.Fatalf("JSON image edit: %d %.120s (upstream calls %d)", resp.StatusCode, b, mf.calls.Load())
	}
	last, _ := mf.last.Load().([]byte)
	if ct, _ := mf.ct.Load().(string); !strings.HasPrefix(ct, "application/json") || jsonField(last, "model") != "gpt-image-1" || !strings.Contains(string(last), `"images":[{"image_url":"https://example.com/0.png"}]`) {
		t.Errorf("upstream got %s %s", ct, last)
	}
}
