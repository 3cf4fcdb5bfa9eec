package gateway

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/pricing"
	"github.com/tollgate/tollgate/internal/provider"
	"github.com/tollgate/tollgate/internal/tokens"
	"github.com/tollgate/tollgate/internal/usage"
)

// media is what the gateway reads of an image or audio request: what it
// is priced by, and for an upload the form to re-encode for each attempt.
type media struct {
	op   provider.Op
	form *form // nil: a JSON body (image generations and edits, speech)
	// Images: n, and the size and quality asked ("" or "auto": the
	// model's choice).
	size, quality string
	// format is response_format: what a transcription answer looks like.
	format string
	// prompt is the bytes of an image prompt (a bound on its text tokens).
	prompt int64
	// inputImages is how many images an edit sends (billed as image
	// tokens by the GPT image models).
	inputImages int64
	// Speech: the text to speak, and its characters; instructions (billed
	// as text tokens by gpt-4o-mini-tts).
	input        string
	characters   int64
	instructions string
	// Audio in: the uploaded file's bytes, and its length when its header
	// says (a WAV file; 0 otherwise).
	upload     int64
	wavSeconds float64
}

// isMedia reports whether op is one of the image and audio operations.
func isMedia(op provider.Op) bool {
	switch op {
	case provider.OpImageGenerations, provider.OpImageEdits, provider.OpImageVariations,
		provider.OpTranscriptions, provider.OpTranslations, provider.OpSpeech:
		return true
	}
	return false
}

func isImage(op provider.Op) bool {
	return op == provider.OpImageGenerations || op == provider.OpImageEdits || op == provider.OpImageVariations
}

func isAudioIn(op provider.Op) bool {
	return op == provider.OpTranscriptions || op == provider.OpTranslations
}

// uploads reports whether op takes a multipart/form-data body.
func uploads(op provider.Op) bool {
	return op == provider.OpImageEdits || op == provider.OpImageVariations || isAudioIn(op)
}

// maxImages is the most images one request may ask for (OpenAI's bound on n).
const maxImages = 10

// decodeMedia reads an image or audio request: a JSON body through
// decode, an upload through parseForm (an image edit may be either: the
// GPT image models take a JSON body naming its images by URL or file id);
// then the members that price it. Nothing that fails here reaches an
// upstream.
func (c *call) decodeMedia() error {
	limit := c.g.opts.MaxBodyBytes
	if uploads(c.op) {
		limit = max(limit, uploadLimit)
	}
	body, err := readBody(c.w, c.r, limit)
	if err != nil {
		return err
	}
	md := &media{op: c.op}
	if uploads(c.op) && !jsonEdit(c.op, c.r.Header.Get("Content-Type")) {
		c.req, err = decodeForm(md, body, c.r.Header.Get("Content-Type"), c.r.PathValue("model"))
	} else {
		c.req, err = decode(body, c.r.PathValue("model"))
	}
	if err != nil {
		return err
	}
	c.req.media = md
	if md.form == nil {
		if err := md.readJSON(c.req); err != nil {
			return err
		}
	}
	if c.req.stream {
		return apierror.BadRequest("stream", "stream is not supported on %s", c.op)
	}
	if c.req.user != "" {
		c.endUser = c.g.auth.EndUser(c.r.Context(), c.p, c.req.user)
	}
	// Tags and metadata as on every other request: the header, the body's
	// (or the form's) metadata and litellm_metadata, the key's and the team's.
	if err := c.readMeta(); err != nil {
		return err
	}
	if err := c.guardLock(); err != nil { // no guardrail reads media, but the lock is LiteLLM's on every route
		return err
	}
	return c.stripMeta()
}

// jsonEdit reports whether an image edit comes as a JSON body.
func jsonEdit(op provider.Op, contentType string) bool {
	mt, _, _ := mime.ParseMediaType(contentType)
	return op == provider.OpImageEdits && mt == "application/json"
}

// maxEditImages is the most input images a JSON image edit may name
// (OpenAI's bound for the GPT image models).
const maxEditImages = 16

// readEditImages checks a JSON image edit's images (each an object with a
// file_id or an image_url) and its optional mask, and counts them: each is
// billed as input image tokens.
func (md *media) readEditImages(o *jsonbody.Object) error {
	var images []map[string]json.RawMessage
	if raw := o.Get("images"); len(raw) == 0 || raw[0] != '[' || json.Unmarshal(raw, &images) != nil || len(images) == 0 || len(images) > maxEditImages {
		return apierror.BadRequest("images", "images must be an array of 1 to %d image references ({\"image_url\"} or {\"file_id\"})", maxEditImages)
	}
	for _, im := range images {
		if !imageRef(im) {
			return apierror.BadRequest("images", "each of images must be an object with a file_id or an image_url string")
		}
	}
	md.inputImages = int64(len(images))
	if !o.IsNull("mask") {
		var mask map[string]json.RawMessage
		if json.Unmarshal(o.Get("mask"), &mask) != nil || !imageRef(mask) {
			return apierror.BadRequest("mask", "mask must be an object with a file_id or an image_url string")
		}
		md.inputImages++
	}
	return nil
}

// imageRef reports whether m names an image by a file_id or image_url
// string.
func imageRef(m map[string]json.RawMessage) bool {
	for _, k := range []string{"file_id", "image_url"} {
		if v := m[k]; len(v) > 1 && v[0] == '"' {
			return true
		}
	}
	return false
}

// decodeForm reads an upload: the model (unless the path names it), the
// file, and the fields that price the call.
func decodeForm(md *media, body []byte, contentType, pathModel string) (*request, error) {
	f, err := parseForm(body, contentType)
	if err != nil {
		return nil, err
	}
	md.form = f
	if err := f.checkFields(md.op); err != nil {
		return nil, err
	}
	req := &request{model: pathModel, outputs: 1}
	if req.model == "" {
		m, _ := f.value("model")
		if m = strings.TrimSpace(m); m == "" {
			return nil, apierror.BadRequest("model", "you must provide a model parameter")
		}
		req.model = m
	}
	fileField := []string{"file"}
	if isImage(md.op) {
		fileField = []string{"image", "image[]"}
	}
	file, ok := f.file(fileField...)
	if !ok {
		return nil, apierror.BadRequest(fileField[0], "the %s file is required (a form part with a filename)", fileField[0])
	}
	md.upload = int64(len(file.data))
	md.wavSeconds = wavSeconds(file.data)
	if md.op == provider.OpImageEdits {
		md.inputImages = f.files(append(fileField, "mask")...) // a mask is an input image too
		p, _ := f.value("prompt")
		if strings.TrimSpace(p) == "" {
			return nil, apierror.BadRequest("prompt", "prompt is required")
		}
		md.prompt = int64(len(p))
	}
	if v, ok := f.value("n"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 1 || n > maxImages {
			return nil, apierror.BadRequest("n", "n must be an integer from 1 to %d", maxImages)
		}
		req.outputs = n
	}
	md.size, _ = f.value("size")
	md.quality, _ = f.value("quality")
	md.format, _ = f.value("response_format")
	req.user, _ = f.value("user")
	if v, _ := f.value("stream"); truthy(v) {
		req.stream = true
	}
	return req, nil
}

// truthy reports whether a form field's value asks for something: Python
// servers (FastAPI, as vLLM's) read "True", "1", "on" and "yes" as true,
// so anything but an empty or false-looking value counts.
func truthy(v string) bool {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "", "false", "0", "off", "no", "f", "n":
		return false
	}
	return true
}

// readJSON takes what prices an image generation or edit or a speech
// request from its JSON body (decode has read model, n and user).
func (md *media) readJSON(req *request) error {
	o := &req.obj
	str := func(k string) (string, error) {
		if o.IsNull(k) {
			return "", nil
		}
		s, ok := o.String(k)
		if !ok {
			return "", apierror.BadRequest(k, "%s must be a string", k)
		}
		return s, nil
	}
	var err error
	for _, f := range []struct {
		k   string
		dst *string
	}{{"size", &md.size}, {"quality", &md.quality}, {"response_format", &md.format}} {
		if *f.dst, err = str(f.k); err != nil {
			return err
		}
	}
	switch md.op {
	case provider.OpImageGenerations, provider.OpImageEdits:
		if md.op == provider.OpImageEdits {
			if err := md.readEditImages(o); err != nil {
				return err
			}
		}
		p, err := str("prompt")
		if err != nil {
			return err
		}
		if strings.TrimSpace(p) == "" {
			return apierror.BadRequest("prompt", "prompt is required")
		}
		md.prompt = int64(len(p))
		if req.outputs > maxImages {
			return apierror.BadRequest("n", "n must be an integer from 1 to %d", maxImages)
		}
	case provider.OpSpeech:
		if md.input, err = str("input"); err != nil {
			return err
		}
		if md.input == "" {
			return apierror.BadRequest("input", "input is required: the text to speak")
		}
		md.characters = int64(utf8.RuneCountInString(md.input))
		if md.instructions, err = str("instructions"); err != nil {
			return err
		}
	}
	return nil
}

// contentType is the upstream body's Content-Type ("" is JSON).
func (req *request) contentType() string {
	if md := req.media; md != nil && md.form != nil {
		return md.form.contentType()
	}
	return ""
}

// The sizes and qualities an image request may get when it leaves the
// choice to the model ("auto" or nothing): its hold is the dearest.
var (
	imageSizes     = []string{"1024x1024", "1024x1536", "1536x1024", "1024x1792", "1792x1024", "512x512", "256x256"}
	imageQualities = []string{"high", "hd", "medium", "standard", "low", ""}
)

// imageOutputCeiling bounds the output tokens of one image of a model
// priced by image tokens (gpt-image-1 at high quality, 1536x1024: 6,240).
const imageOutputCeiling = 6240

// lowestAudioBytesPerSecond bounds an audio upload's length when its
// header does not say: 16 kbit/s is below what speech is encoded at in
// practice. It is what the hold assumes, and what is booked when the
// answer does not say either: a client may pick the bitrate and a text
// answer, so any higher rate would let it pay for less than it sent.
const lowestAudioBytesPerSecond = 2_000

// audioTokensPerCharacter estimates the audio tokens a speech model priced
// per token produces for one character of text (about 15 characters and
// 20 audio tokens a second); its answer does not report them.
const audioTokensPerCharacter = 4.0 / 3

// priced is the price a media call to deployment d is booked at, from p
// (d's price): for images the price of one image at the size and quality
// asked (an "auto" one at the dearest the model may choose); for audio in, a
// deployment's input_cost_per_second is per second of audio, not of the
// answer's time.
func (md *media) priced(p pricing.Price, d *config.Deployment, model string) pricing.Price {
	switch {
	case isAudioIn(md.op):
		// The deployment's own price wins, zero (a self-hosted model)
		// included.
		if d.InputCostPerSecond != nil {
			p.InputPerAudioSecond = *d.InputCostPerSecond
		} else if p.InputPerSecond > 0 {
			p.InputPerAudioSecond = p.InputPerSecond
		}
		p.InputPerSecond, p.OutputPerSecond = 0, 0
	case isImage(md.op):
		// One image's price, as one number: the deployment's own price
		// (per image, or per pixel at the largest size it may get); else
		// the table's entry when the request names one size and quality,
		// else the dearest.
		if d.InputCostPerImage != nil || d.OutputCostPerImage != nil || d.InputCostPerPixel != nil {
			sizes, _ := md.choices(model)
			var per float64
			for _, s := range sizes {
				per = max(per, p.MediaCost(usage.Media{Images: 1, ImagePixels: pricing.Pixels(s)}))
			}
			p.OutputPerImage, p.InputPerImage, p.InputPerPixel = per, 0, 0
			break
		}
		per := md.worstImage(p, d.Provider, model)
		if sizes, qualities := md.choices(model); len(sizes) == 1 && len(qualities) == 1 {
			if q, ok := pricing.ImageLookup(d.Provider, model, sizes[0], qualities[0]); ok {
				if c := q.MediaCost(usage.Media{Images: 1, ImagePixels: pricing.Pixels(sizes[0])}); c > 0 {
					per = c
				}
			}
		}
		p.OutputPerImage, p.InputPerImage, p.InputPerPixel = per, 0, 0
	}
	return p
}

// choices are the sizes and qualities an image request may get: those it
// asks for; when it says nothing, OpenAI's defaults (1024x1024 and
// standard for the dall-e models, "auto" for the others); for "auto",
// every one the model may choose.
func (md *media) choices(model string) (sizes, qualities []string) {
	dalle := strings.Contains(model, "dall-e")
	pick := func(v, dalleDefault string, all []string) []string {
		switch {
		case v == "" && dalle:
			return []string{dalleDefault}
		case v == "" || v == "auto":
			return all
		}
		return []string{v}
	}
	return pick(md.size, "1024x1024", imageSizes), pick(md.quality, "standard", imageQualities)
}

// worstImage is the most one image can cost at the sizes and qualities
// the request may get: the price list's dearest entry, else the
// image-token ceiling at p's output price.
func (md *media) worstImage(p pricing.Price, providerName, model string) float64 {
	sizes, qualities := md.choices(model)
	var most float64
	for _, s := range sizes {
		for _, q := range qualities {
			if e, ok := pricing.ImageLookup(providerName, model, s, q); ok {
				most = max(most, e.MediaCost(usage.Media{Images: 1, ImagePixels: pricing.Pixels(s)}))
			}
		}
	}
	if most == 0 {
		most = imageOutputCeiling * cmp.Or(p.OutputPerImageToken, p.OutputPerToken)
	}
	return most
}

// worst is the most the call can cost at p (priced's price), before the
// call: n images at priced's price of one (and the prompt's text and each
// input image's tokens, for models priced by tokens); the text to speak
// and its instructions; for audio in, secondsBound's length, or the
// model's token limits.
func (md *media) worst(p pricing.Price, n int64) float64 {
	switch {
	case isImage(md.op):
		return float64(n)*p.MediaCost(usage.Media{Images: 1}) + float64(md.prompt)*p.InputPerToken +
			float64(md.inputImages*imageTokenCeiling)*cmp.Or(p.InputPerImageToken, p.InputPerToken)
	case md.op == provider.OpSpeech:
		chars := float64(md.characters)
		return chars*p.InputPerCharacter + float64(len(md.input)+len(md.instructions))*p.InputPerToken +
			chars*2*audioTokensPerCharacter*p.OutputPerToken
	default:
		secs := md.secondsBound()
		in, out := cmp.Or(p.MaxInputTokens, 16_000), cmp.Or(p.MaxOutputTokens, pricing.DefaultMaxOutput)
		return secs*p.InputPerAudioSecond + float64(in)*cmp.Or(p.InputPerAudioToken, p.InputPerToken) + float64(out)*p.OutputPerToken
	}
}

// secondsBound is the most audio an upload can hold: the length its WAV
// header gives, rounded up to the second (providers report and bill whole
// seconds), else its size at the lowest bitrate.
func (md *media) secondsBound() float64 {
	if md.wavSeconds > 0 {
		return math.Ceil(md.wavSeconds)
	}
	return float64(md.upload) / lowestAudioBytesPerSecond
}

// relayMedia relays a 2xx answer to an image or audio call and reads what
// it is booked by: speech is streamed as it comes, the rest read whole.
func (c *call) relayMedia(t *provider.Target, resp *http.Response, wd *watchdog, sent time.Time) error {
	if c.op == provider.OpSpeech {
		return c.relaySpeech(resp, wd, sent)
	}
	res, w := &c.res, c.w
	data, err := readLimited(resp.Body, resp.ContentLength, c.g.opts.MaxResponseBytes)
	res.upstream = time.Since(sent)
	if errors.Is(err, errTooLarge) {
		c.unusableMedia()
		return tooLargeFailure(t.D.ID, c.g.opts.MaxResponseBytes)
	}
	if err != nil {
		return c.upstreamError(t, wd, err)
	}
	u, reported, err := c.req.media.usageOf(data, c.req.outputs)
	if err != nil {
		c.unusableMedia()
		return &failure{err: apierror.BadGateway(err, "deployment %s answered %d with something that is not a %s response", t.D.ID, resp.StatusCode, c.op)}
	}
	res.usage, res.hasUsage, res.estimated = u, reported, !reported
	res.id, _ = answerID(data)
	copyHeader(w.Header(), resp.Header)
	return c.writeWhole(resp.StatusCode, data)
}

// unusableMedia marks a 2xx media answer the client cannot be given (too
// large, or not an answer) as a 502. Images are booked as the n asked for,
// at the price known before the call (the upstream made them and bills
// them); a transcription's length is unknown, so it is booked as a row
// without cost.
func (c *call) unusableMedia() {
	res := &c.res
	res.status = http.StatusBadGateway
	if !isImage(c.op) {
		res.unusable = true
		return
	}
	res.usage = usage.Usage{Media: usage.Media{Images: max(c.req.outputs, 1)}}
	res.hasUsage, res.estimated = false, true
}

// relaySpeech streams the audio of a speech answer to the client as it
// arrives. What it costs is known before the first byte (the text's
// characters, or its tokens): a client that leaves, or an upstream that
// breaks off, is booked the same, as the provider bills the text.
func (c *call) relaySpeech(resp *http.Response, wd *watchdog, sent time.Time) error {
	res, w, md := &c.res, c.w, c.req.media
	res.usage = usage.Usage{Media: usage.Media{Characters: md.characters}}
	res.hasUsage = true
	if c.hold != nil {
		if p, _ := c.target.PriceFor(res.model); p.InputPerToken > 0 || p.OutputPerToken > 0 {
			// A model priced per token: the text counted with its
			// tokenizer, the audio estimated from the text's length.
			res.usage.Prompt = tokens.Text(res.model, md.input) + tokens.Text(res.model, md.instructions)
			res.usage.Completion = int64(float64(md.characters) * audioTokensPerCharacter)
			res.hasUsage, res.estimated = false, true
		}
	}
	copyHeader(w.Header(), resp.Header)
	c.durationHeaders(w.Header(), time.Since(sent))
	if hd := c.hold; hd != nil {
		hd.streamHeaders(w.Header())
	}
	rc := http.NewResponseController(w)
	w.WriteHeader(resp.StatusCode)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			wd.feed()
			if _, werr := w.Write(buf[:n]); werr != nil || rc.Flush() != nil {
				res.clientGone = true
				return errClientGone
			}
		}
		if err != nil {
			res.upstream = time.Since(sent)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if c.r.Context().Err() != nil {
				res.clientGone = true
				return errClientGone
			}
			c.g.log.Warn("upstream speech ended early", "model", clip(c.req.model), "err", err, "timeout", wd.expired.Load())
			return nil
		}
	}
}

// usageOf reads what an image or transcription answer is booked by. An
// image answer that reports token usage (gpt-image-1) is booked by it;
// else by its images. A transcription is booked by the seconds of audio
// the answer reports (usage.seconds, or verbose_json's duration), the end
// of its last subtitle (srt, vtt: at least the WAV header's length, as
// the provider bills the audio, not the speech in it), or the token usage
// it reports; when it says none, by secondsBound (reported false: an
// estimate).
func (md *media) usageOf(data []byte, n int64) (usage.Usage, bool, error) {
	if isImage(md.op) {
		var a struct {
			Data  []json.RawMessage `json:"data"`
			Usage *imageUsage       `json:"usage"`
		}
		if err := json.Unmarshal(data, &a); err != nil {
			return usage.Usage{}, false, err
		}
		if a.Usage != nil && a.Usage.InputTokens+a.Usage.OutputTokens > 0 {
			return a.Usage.usage(), true, nil
		}
		images := int64(len(a.Data))
		if a.Data == nil {
			images = n
		}
		return usage.Usage{Media: usage.Media{Images: images}}, true, nil
	}
	switch md.format {
	case "text":
	case "srt", "vtt":
		if secs, ok := lastCueEnd(data); ok {
			return usage.Usage{Media: usage.Media{AudioSeconds: max(secs, md.wavSeconds)}}, true, nil
		}
	default: // json, verbose_json, diarized_json
		var a struct {
			Duration *float64        `json:"duration"`
			Usage    json.RawMessage `json:"usage"`
		}
		if err := json.Unmarshal(data, &a); err != nil {
			return usage.Usage{}, false, err
		}
		if u, ok := transcriptionUsage(a.Usage); ok {
			return u, true, nil
		}
		if a.Duration != nil {
			return usage.Usage{Media: usage.Media{AudioSeconds: max(*a.Duration, 0)}}, true, nil
		}
	}
	if md.wavSeconds > 0 {
		return usage.Usage{Media: usage.Media{AudioSeconds: md.wavSeconds}}, true, nil
	}
	return usage.Usage{Media: usage.Media{AudioSeconds: md.secondsBound()}}, false, nil
}

// imageUsage is the usage member of a gpt-image-1 answer: every output
// token is an image token.
type imageUsage struct {
	InputTokens        int64 `json:"input_tokens"`
	OutputTokens       int64 `json:"output_tokens"`
	InputTokensDetails struct {
		ImageTokens int64 `json:"image_tokens"`
	} `json:"input_tokens_details"`
}

func (i imageUsage) usage() usage.Usage {
	return usage.Usage{Prompt: i.InputTokens, Completion: i.OutputTokens, Media: usage.Media{
		ImagePromptTokens: i.InputTokensDetails.ImageTokens, ImageCompletionTokens: i.OutputTokens}}
}

// transcriptionUsage reads a transcription's usage member: seconds of
// audio ("type": "duration"), or tokens with their audio part.
func transcriptionUsage(raw []byte) (usage.Usage, bool) {
	var u struct {
		Type              string  `json:"type"`
		Seconds           float64 `json:"seconds"`
		InputTokens       int64   `json:"input_tokens"`
		OutputTokens      int64   `json:"output_tokens"`
		InputTokenDetails struct {
			AudioTokens int64 `json:"audio_tokens"`
		} `json:"input_token_details"`
	}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &u) != nil {
		return usage.Usage{}, false
	}
	switch u.Type {
	case "duration":
		return usage.Usage{Media: usage.Media{AudioSeconds: max(u.Seconds, 0)}}, true
	case "tokens":
		return usage.Usage{Prompt: u.InputTokens, Completion: u.OutputTokens,
			Media: usage.Media{AudioPromptTokens: u.InputTokenDetails.AudioTokens}}, true
	}
	return usage.Usage{}, false
}

// lastCueEnd is the end time of the last cue of an SRT or WebVTT answer
// ("00:01:02,500 --> 00:01:05,250"): how far into the audio speech was
// heard, in seconds.
func lastCueEnd(data []byte) (float64, bool) {
	i := bytes.LastIndex(data, []byte("-->"))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(data[i+3:], " \t")
	end := bytes.IndexAny(rest, " \t\r\n")
	if end < 0 {
		end = len(rest)
	}
	stamp := strings.ReplaceAll(string(rest[:end]), ",", ".")
	parts := strings.Split(stamp, ":")
	var secs float64
	for _, p := range parts {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v < 0 {
			return 0, false
		}
		secs = secs*60 + v
	}
	return secs, len(parts) >= 2
}

// wavSeconds is the length of a PCM WAV file from its header: the data
// chunk's size over the sample rate times the block size, the fields a
// decoder plays it by (the header's byte rate is not one of them, so a
// client could set it to anything). 0 when data is not one, or its format
// fields are not those of plain PCM or float samples: such an upload is
// bounded by its size instead.
func wavSeconds(data []byte) float64 {
	if len(data) < 12 || string(data[:4]) != "RIFF" || string(data[8:12]) != "WAVE" {
		return 0
	}
	var bytesPerSecond float64
	for p := 12; p+8 <= len(data); {
		id, size := string(data[p:p+4]), binary.LittleEndian.Uint32(data[p+4:p+8])
		body := data[p+8:]
		if id != "data" && int64(size) > int64(len(body)) {
			return 0
		}
		switch id {
		case "fmt ":
			bytesPerSecond = pcmBytesPerSecond(body[:size])
		case "data":
			if bytesPerSecond == 0 {
				return 0
			}
			// A streamed WAV may declare an unknown size: count what came.
			n := min(int64(size), int64(len(body)))
			return float64(n) / bytesPerSecond
		}
		p += 8 + int(size) + int(size&1)
	}
	return 0
}

// pcmBytesPerSecond is sample rate × block size of a WAV fmt chunk of
// uncompressed samples (PCM, IEEE float, or the extensible form of
// either), when its fields agree with each other; else 0.
func pcmBytesPerSecond(fmtChunk []byte) float64 {
	if len(fmtChunk) < 16 {
		return 0
	}
	le := binary.LittleEndian
	format, channels := le.Uint16(fmtChunk[0:2]), int(le.Uint16(fmtChunk[2:4]))
	rate, align, bits := le.Uint32(fmtChunk[4:8]), int(le.Uint16(fmtChunk[12:14])), int(le.Uint16(fmtChunk[14:16]))
	switch {
	case format != 1 && format != 3 && format != 0xFFFE:
		return 0
	case channels < 1 || channels > 64 || rate < 1000 || rate > 768_000:
		return 0
	case bits < 8 || bits > 64 || align != channels*((bits+7)/8):
		return 0
	}
	return float64(rate) * float64(align)
}

// mediaRoutes are the image and audio paths, after /v1 (or nothing) and
// after Azure's /openai/deployments/{model}.
var mediaRoutes = []struct {
	path string
	op   provider.Op
}{
	{"/images/generations", provider.OpImageGenerations},
	{"/images/edits", provider.OpImageEdits},
	{"/images/variations", provider.OpImageVariations},
	{"/audio/transcriptions", provider.OpTranscriptions},
	{"/audio/translations", provider.OpTranslations},
	{"/audio/speech", provider.OpSpeech},
}

// registerMedia mounts the image and audio routes.
func (g *Gateway) registerMedia(mux Mux) {
	for _, rt := range mediaRoutes {
		for _, prefix := range []string{"/v1", "", "/openai/deployments/{model}"} {
			mux.Handle("POST "+prefix+rt.path, g.handler(rt.op))
		}
	}
}

// clampMedia keeps a media call's counts at or above zero, the image and
// audio parts of the tokens within the totals, the images within the n
// asked for and the seconds within what the upload can hold (0: no
// bound); it reports whether it changed u.
func clampMedia(u *usage.Usage, images int64, seconds float64) bool {
	before := *u
	pos := func(v *int64) { *v = max(*v, 0) }
	for _, v := range []*int64{&u.Prompt, &u.Completion, &u.Images, &u.ImagePixels, &u.Characters} {
		pos(v)
	}
	if images > 0 {
		u.Images = min(u.Images, images)
	}
	u.AudioSeconds = max(u.AudioSeconds, 0)
	if seconds > 0 {
		u.AudioSeconds = min(u.AudioSeconds, seconds)
	}
	u.ImagePromptTokens = min(max(u.ImagePromptTokens, 0), u.Prompt)
	u.AudioPromptTokens = min(max(u.AudioPromptTokens, 0), u.Prompt-u.ImagePromptTokens)
	u.ImageCompletionTokens = min(max(u.ImageCompletionTokens, 0), u.Completion)
	u.Cached, u.CacheCreation, u.Reasoning = 0, 0, 0
	return *u != before
}
