package mockupstream

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The image and audio endpoints. Images answer with n entries (b64_json,
// or url for the dall-e models when asked); gpt-image models report token
// usage. Transcriptions and translations answer in every response_format,
// the audio's length read from x-mock-audio-seconds, else a WAV header,
// else the upload's size at 16,000 bytes a second; whisper's json reports
// it as usage unless x-mock-no-usage. x-mock-raw-body replaces an images
// answer. Speech streams x-mock-chunks chunks
// of audio bytes (64 per character of input), x-mock-chunk-delay-ms apart.
func (s *Server) registerMedia() {
	for _, p := range []string{"/v1", ""} {
		s.mux.HandleFunc("POST "+p+"/images/generations", s.imageGenerations)
		s.mux.HandleFunc("POST "+p+"/images/edits", s.imageUpload)
		s.mux.HandleFunc("POST "+p+"/images/variations", s.imageUpload)
		s.mux.HandleFunc("POST "+p+"/audio/transcriptions", s.transcription)
		s.mux.HandleFunc("POST "+p+"/audio/translations", s.transcription)
		s.mux.HandleFunc("POST "+p+"/audio/speech", s.speech)
	}
	const az = "/openai/deployments/{deployment}"
	s.mux.HandleFunc("POST "+az+"/images/generations", s.azure(s.imageGenerations))
	s.mux.HandleFunc("POST "+az+"/images/edits", s.azure(s.imageUpload))
	s.mux.HandleFunc("POST "+az+"/images/variations", s.azure(s.imageUpload))
	s.mux.HandleFunc("POST "+az+"/audio/transcriptions", s.azure(s.transcription))
	s.mux.HandleFunc("POST "+az+"/audio/translations", s.azure(s.transcription))
	s.mux.HandleFunc("POST "+az+"/audio/speech", s.azure(s.speech))
}

// imageRequest is what the mock reads of an image request.
type imageRequest struct {
	Model          string `json:"model"`
	Prompt         string `json:"prompt"`
	N              int    `json:"n"`
	ResponseFormat string `json:"response_format"`
}

func (s *Server) imageGenerations(w http.ResponseWriter, r *http.Request) {
	var req imageRequest
	if err := json.Unmarshal(body(r), &req); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return
	}
	if req.Prompt == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "prompt is required")
		return
	}
	s.images(w, r, req)
}

func (s *Server) imageUpload(w http.ResponseWriter, r *http.Request) {
	f, ok := readForm(w, r)
	if !ok {
		return
	}
	if len(f.files["image"]) == 0 && len(f.files["image[]"]) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "image is required")
		return
	}
	req := imageRequest{Model: f.values["model"], Prompt: f.values["prompt"], ResponseFormat: f.values["response_format"]}
	req.N, _ = strconv.Atoi(f.values["n"])
	s.images(w, r, req)
}

// images writes an images answer for req.
func (s *Server) images(w http.ResponseWriter, r *http.Request, req imageRequest) {
	w.Header().Set("Content-Type", "application/json")
	if raw := r.Header.Get("x-mock-raw-body"); raw != "" {
		_, _ = io.WriteString(w, raw)
		return
	}
	model := s.modelFor(r, req.Model)
	n := max(req.N, 1)
	b := []byte(`{"created":` + strconv.FormatInt(time.Now().Unix(), 10) + `,"data":[`)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		if req.ResponseFormat == "url" && strings.HasPrefix(model, "dall-e") {
			b = append(b, `{"url":"https://images.mock.invalid/`+strconv.Itoa(i)+`.png"}`...)
			continue
		}
		b = append(b, `{"b64_json":"`+base64.StdEncoding.EncodeToString(pngHeader)+`"}`...)
	}
	b = append(b, ']')
	if strings.HasPrefix(model, "gpt-image") && r.Header.Get("x-mock-no-usage") == "" {
		text := int64(max(1, len(req.Prompt)/4))
		out := int64(1056 * n) // a medium 1024x1024 image
		b = fmt.Appendf(b, `,"usage":{"input_tokens":%d,"output_tokens":%d,"total_tokens":%d,"input_tokens_details":{"text_tokens":%d,"image_tokens":0}}`, text, out, text+out, text)
	}
	b = append(b, '}')
	_, _ = w.Write(b)
}

// pngHeader stands for an image: a PNG signature.
var pngHeader = []byte("\x89PNG\r\n\x1a\n")

func (s *Server) modelFor(r *http.Request, model string) string {
	if s.opts.Model != "" {
		return s.opts.Model
	}
	if d := r.PathValue("deployment"); d != "" {
		return d
	}
	return model
}

func (s *Server) transcription(w http.ResponseWriter, r *http.Request) {
	f, ok := readForm(w, r)
	if !ok {
		return
	}
	file := f.files["file"]
	if len(file) == 0 {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "file is required")
		return
	}
	model := s.modelFor(r, f.values["model"])
	secs := float64(len(file)) / 16_000
	if v, err := strconv.ParseFloat(r.Header.Get("x-mock-audio-seconds"), 64); err == nil {
		secs = v
	} else if d := wavLength(file); d > 0 {
		secs = d
	}
	text := "The quick brown fox jumps over the lazy dog."
	task := "transcribe"
	if strings.HasSuffix(r.URL.Path, "/translations") {
		task = "translate"
	}
	switch format := f.values["response_format"]; format {
	case "text":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, text+"\n")
	case "srt", "vtt":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, subtitles(format, text, secs))
	case "verbose_json":
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, `{"task":%q,"language":"english","duration":%g,"text":%q,"segments":[{"id":0,"seek":0,"start":0,"end":%g,"text":%q}]}`, task, secs, text, secs, text)
	default:
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Header.Get("x-mock-no-usage") != "":
			_, _ = fmt.Fprintf(w, `{"text":%q}`, text)
		case strings.HasPrefix(model, "whisper"):
			_, _ = fmt.Fprintf(w, `{"text":%q,"usage":{"type":"duration","seconds":%g}}`, text, secs)
		default: // gpt-4o-transcribe and its kin are billed by tokens
			audio := int64(secs * 10)
			_, _ = fmt.Fprintf(w, `{"text":%q,"usage":{"type":"tokens","input_tokens":%d,"input_token_details":{"text_tokens":0,"audio_tokens":%d},"output_tokens":%d,"total_tokens":%d}}`,
				text, audio, audio, len(text)/4, audio+int64(len(text)/4))
		}
	}
}

// subtitles is text as one SRT or WebVTT cue lasting secs.
func subtitles(format, text string, secs float64) string {
	stamp := func(sep string) string {
		ms := int64(secs * 1000)
		return fmt.Sprintf("%02d:%02d:%02d%s%03d", ms/3_600_000, ms/60_000%60, ms/1000%60, sep, ms%1000)
	}
	if format == "vtt" {
		return "WEBVTT\n\n00:00:00.000 --> " + stamp(".") + "\n" + text + "\n\n"
	}
	return "1\n00:00:00,000 --> " + stamp(",") + "\n" + text + "\n\n"
}

// wavLength is a WAV file's length in seconds from its header; 0 when it
// is not one.
func wavLength(b []byte) float64 {
	if len(b) < 44 || string(b[:4]) != "RIFF" || string(b[8:12]) != "WAVE" || string(b[12:16]) != "fmt " {
		return 0
	}
	rate := binary.LittleEndian.Uint32(b[28:32])
	if rate == 0 || string(b[36:40]) != "data" {
		return 0
	}
	return float64(binary.LittleEndian.Uint32(b[40:44])) / float64(rate)
}

// speechTypes are the audio formats of /audio/speech.
var speechTypes = map[string]string{
	"": "audio/mpeg", "mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac",
	"flac": "audio/flac", "wav": "audio/wav", "pcm": "audio/pcm",
}

func (s *Server) speech(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Input          string `json:"input"`
		Voice          string `json:"voice"`
		ResponseFormat string `json:"response_format"`
	}
	if err := json.Unmarshal(body(r), &req); err != nil {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed JSON: "+err.Error())
		return
	}
	ct, ok := speechTypes[req.ResponseFormat]
	if req.Input == "" || req.Voice == "" || !ok {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "input and voice are required, and response_format must be mp3, opus, aac, flac, wav or pcm")
		return
	}
	w.Header().Set("Content-Type", ct)
	flusher, _ := w.(http.Flusher)
	chunks := max(s.intHeader(r, "x-mock-chunks", s.opts.Chunks), 1)
	delay := s.duration(r, "x-mock-chunk-delay-ms", s.opts.ChunkDelay)
	audio := bytes.Repeat([]byte{0xff, 0xfb, 0x90, 0x64}, 16*utf8.RuneCountInString(req.Input))
	per := (len(audio) + chunks - 1) / chunks
	for i := 0; i < len(audio); i += per {
		if i > 0 && delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				s.aborted.Add(1)
				return
			}
		}
		if !s.write(w, flusher, audio[i:min(i+per, len(audio))]) {
			s.aborted.Add(1)
			return
		}
	}
	s.completed.Add(1)
}

// form is a multipart upload as the mock reads it.
type form struct {
	values map[string]string
	files  map[string][]byte
}

func readForm(w http.ResponseWriter, r *http.Request) (*form, bool) {
	_, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || params["boundary"] == "" {
		openAIError(w, http.StatusBadRequest, "invalid_request_error", "expected a multipart/form-data body")
		return nil, false
	}
	f := &form{values: map[string]string{}, files: map[string][]byte{}}
	mr := multipart.NewReader(bytes.NewReader(body(r)), params["boundary"])
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			return f, true
		}
		if err != nil {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed multipart body: "+err.Error())
			return nil, false
		}
		data, err := io.ReadAll(p)
		if err != nil {
			openAIError(w, http.StatusBadRequest, "invalid_request_error", "malformed multipart body: "+err.Error())
			return nil, false
		}
		if p.FileName() != "" {
			f.files[p.FormName()] = data
		} else {
			f.values[p.FormName()] = string(data)
		}
	}
}
