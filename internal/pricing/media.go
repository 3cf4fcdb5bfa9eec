package pricing

import (
	"cmp"
	"strconv"
	"strings"

	"github.com/tollgate/tollgate/internal/usage"
)

// MediaPrice is what image and audio models charge besides text tokens,
// under the price list's own names.
type MediaPrice struct {
	// A generated image costs OutputPerImage, else InputPerImage (the
	// dall-e entries' name for the same), else its pixels at InputPerPixel.
	OutputPerImage      float64 `json:"output_cost_per_image,omitempty"`
	InputPerImage       float64 `json:"input_cost_per_image,omitempty"`
	InputPerPixel       float64 `json:"input_cost_per_pixel,omitempty"`
	InputPerImageToken  float64 `json:"input_cost_per_image_token,omitempty"`
	OutputPerImageToken float64 `json:"output_cost_per_image_token,omitempty"`
	InputPerAudioToken  float64 `json:"input_cost_per_audio_token,omitempty"`
	InputPerCharacter   float64 `json:"input_cost_per_character,omitempty"`
	// InputPerAudioSecond is the list's input_cost_per_second of a
	// transcription model: per second of the audio heard.
	InputPerAudioSecond float64 `json:"input_cost_per_audio_second,omitempty"`
}

// MediaCost is what m's media units cost at p (Cost includes it): each
// image at the per-image price, else its pixels at the per-pixel price;
// image and audio tokens at their own prices (the text prices when the
// model has none); characters; seconds of audio heard at the per-second
// price.
func (p Price) MediaCost(m usage.Media) float64 {
	perImage := cmp.Or(p.OutputPerImage, p.InputPerImage)
	if perImage == 0 {
		perImage = float64(m.ImagePixels) * p.InputPerPixel
	}
	imageIn := cmp.Or(p.InputPerImageToken, p.InputPerToken)
	imageOut := cmp.Or(p.OutputPerImageToken, p.OutputPerToken)
	audioIn := cmp.Or(p.InputPerAudioToken, p.InputPerToken)
	return float64(m.Images)*perImage + float64(m.ImagePromptTokens)*imageIn +
		float64(m.ImageCompletionTokens)*imageOut + float64(m.AudioPromptTokens)*audioIn +
		float64(m.Characters)*p.InputPerCharacter + m.AudioSeconds*p.InputPerAudioSecond
}

// deriveMedia takes an entry's media prices from the price list. The
// list's input_cost_per_second means seconds of audio for transcription
// models, so it is kept for them alone (as InputPerAudioSecond): on other
// models it stays a price of the answer's time, set per deployment.
func deriveMedia(mode string, num func(string) float64) MediaPrice {
	m := MediaPrice{
		OutputPerImage: num("output_cost_per_image"), InputPerImage: num("input_cost_per_image"), InputPerPixel: num("input_cost_per_pixel"),
		InputPerImageToken: num("input_cost_per_image_token"), OutputPerImageToken: num("output_cost_per_image_token"),
		InputPerAudioToken: num("input_cost_per_audio_token"), InputPerCharacter: num("input_cost_per_character"),
	}
	if mode == "audio_transcription" {
		m.InputPerAudioSecond = num("input_cost_per_second")
	}
	if mode != "image_generation" && mode != "image_edit" {
		// Chat models list image prices for images in prompts, which
		// their token usage already counts.
		m.OutputPerImage, m.InputPerImage, m.InputPerPixel, m.InputPerImageToken, m.OutputPerImageToken = 0, 0, 0, 0, 0
	}
	if mode != "audio_transcription" && mode != "audio_speech" {
		m.InputPerAudioToken, m.InputPerCharacter = 0, 0
	}
	return m
}

// ImageLookup finds the price of one image of size (as "1024x1024") and
// quality from model as served by provider: the list's
// "quality/size/model" entry (sizes written "1024-x-1024"), then
// "size/model", then the model's own. Size and quality may be "".
func ImageLookup(provider, model, size, quality string) (Price, bool) {
	dashed := strings.ReplaceAll(strings.ToLower(size), "x", "-x-")
	var names []string
	if dashed != "" && quality != "" {
		names = append(names, strings.ToLower(quality)+"/"+dashed+"/"+model)
	}
	if dashed != "" {
		names = append(names, dashed+"/"+model)
	}
	for _, n := range names {
		if p, ok := Lookup(provider, n); ok {
			return p, true
		}
	}
	return Lookup(provider, model)
}

// Pixels is width × height of a size written "1024x1024"; 0 when it is
// not one.
func Pixels(size string) int64 {
	w, h, ok := strings.Cut(strings.ToLower(size), "x")
	if !ok {
		return 0
	}
	wn, err1 := strconv.ParseInt(w, 10, 32)
	hn, err2 := strconv.ParseInt(h, 10, 32)
	if err1 != nil || err2 != nil || wn <= 0 || hn <= 0 {
		return 0
	}
	return wn * hn
}
