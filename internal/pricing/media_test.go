package pricing

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/tollgate/tollgate/internal/usage"
)

// TestDeriveKeepsMediaPrices: image and audio entries, which have no token
// prices, are in the table with their own units; a chat model's image
// price (for images in prompts) and a chat model's per-second price are
// not taken as media prices.
func TestDeriveKeepsMediaPrices(t *testing.T) {
	src := []byte(`{
		"hd/1024-x-1024/dall-e-3": {"input_cost_per_pixel": 7.629e-08, "output_cost_per_pixel": 0.0, "mode": "image_generation"},
		"dall-e-3": {"input_cost_per_image": 0.04, "mode": "image_generation"},
		"imagen": {"output_cost_per_image": 0.03, "mode": "image_generation"},
		"whisper-1": {"input_cost_per_second": 0.0001, "output_cost_per_second": 0.0001, "mode": "audio_transcription"},
		"tts-1": {"input_cost_per_character": 1.5e-05, "mode": "audio_speech"},
		"vision-chat": {"input_cost_per_token": 1e-06, "input_cost_per_image": 0.5, "input_cost_per_second": 2, "mode": "chat"},
		"nothing": {"mode": "chat"}
	}`)
	out, err := Derive(src)
	if err != nil {
		t.Fatal(err)
	}
	table := parse(t, out)
	want := map[string]Price{
		"hd/1024-x-1024/dall-e-3": {Mode: "image_generation", MediaPrice: MediaPrice{InputPerPixel: 7.629e-08}},
		"dall-e-3":                {Mode: "image_generation", MediaPrice: MediaPrice{InputPerImage: 0.04}},
		"imagen":                  {Mode: "image_generation", MediaPrice: MediaPrice{OutputPerImage: 0.03}},
		"whisper-1":               {Mode: "audio_transcription", MediaPrice: MediaPrice{InputPerAudioSecond: 0.0001}},
		"tts-1":                   {Mode: "audio_speech", MediaPrice: MediaPrice{InputPerCharacter: 1.5e-05}},
		"vision-chat":             {Mode: "chat", InputPerToken: 1e-06},
	}
	if len(table) != len(want) {
		t.Fatalf("table %v, want %d entries", table, len(want))
	}
	for k, w := range want {
		if table[k] != w {
			t.Errorf("%s = %+v, want %+v", k, table[k], w)
		}
	}
}

// TestMediaCost: per image, else per pixel; image and audio tokens at
// their own prices, the rest of the tokens at the text prices;
// characters; seconds of audio.
func TestMediaCost(t *testing.T) {
	p := Price{InputPerToken: 5e-06, OutputPerToken: 1e-05, MediaPrice: MediaPrice{InputPerPixel: 1e-07,
		InputPerImageToken: 1e-05, OutputPerImageToken: 4e-05, InputPerAudioToken: 6e-06, InputPerCharacter: 1.5e-05, InputPerAudioSecond: 1e-04}}
	for _, tc := range []struct {
		name string
		u    usage.Usage
		want float64
	}{
		{"pixels", usage.Usage{Media: usage.Media{Images: 2, ImagePixels: 1000}}, 2 * 1000 * 1e-07},
		{"image tokens", usage.Usage{Prompt: 100, Completion: 50, Media: usage.Media{ImagePromptTokens: 40, ImageCompletionTokens: 50}},
			60*5e-06 + 40*1e-05 + 50*4e-05},
		{"audio tokens", usage.Usage{Prompt: 100, Completion: 10, Media: usage.Media{AudioPromptTokens: 90}}, 10*5e-06 + 90*6e-06 + 10*1e-05},
		{"characters", usage.Usage{Media: usage.Media{Characters: 120}}, 120 * 1.5e-05},
		{"seconds", usage.Usage{Media: usage.Media{AudioSeconds: 2.5}}, 2.5e-04},
	} {
		if got := p.Cost(tc.u); math.Abs(got-tc.want) > 1e-15 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	perImage := Price{MediaPrice: MediaPrice{InputPerImage: 0.04, InputPerPixel: 1}}
	if got := perImage.Cost(usage.Usage{Media: usage.Media{Images: 3, ImagePixels: 1 << 20}}); math.Abs(got-0.12) > 1e-15 {
		t.Errorf("a per-image price beats the per-pixel one: %v", got)
	}
}

// TestImageLookup: quality and size, then size, then the model; sizes
// written as the price list writes them.
func TestImageLookup(t *testing.T) {
	hd, ok := ImageLookup("openai", "dall-e-3", "1024x1024", "hd")
	if !ok || hd.InputPerPixel == 0 {
		t.Fatalf("hd/1024-x-1024/dall-e-3: %+v %v", hd, ok)
	}
	small, ok := ImageLookup("openai", "dall-e-2", "256x256", "")
	if !ok || small.InputPerPixel == 0 || small == hd {
		t.Fatalf("256-x-256/dall-e-2: %+v", small)
	}
	plain, ok := ImageLookup("openai", "dall-e-3", "999x999", "ultra")
	if !ok || plain.InputPerImage != 0.04 {
		t.Fatalf("an unknown size falls back to the model: %+v", plain)
	}
	if Pixels("1024x1792") != 1024*1792 || Pixels("auto") != 0 || Pixels("x") != 0 {
		t.Fatal("Pixels")
	}
}

func parse(t *testing.T, table []byte) map[string]Price {
	t.Helper()
	var m map[string]Price
	if err := json.Unmarshal(table, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
