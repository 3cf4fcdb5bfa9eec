package sdktest

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"math"
	"net/http"
	"strconv"
	"testing"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// TestOpenAIImagesAndAudio: the official Go SDK generates images,
// transcribes an upload and streams speech through the gateway, each
// answer priced by its own unit.
func TestOpenAIImagesAndAudio(t *testing.T) {
	c := openaiClient(gw.keys["all"])
	ctx := context.Background()
	var resp *http.Response
	images, err := c.Images.Generate(ctx, openai.ImageGenerateParams{
		Model: openai.ImageModelDallE3, Prompt: "a lighthouse at dusk", N: openai.Int(2),
		Quality: openai.ImageGenerateParamsQualityHD, Size: openai.ImageGenerateParamsSize1024x1024,
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if len(images.Data) != 2 || images.Data[0].B64JSON == "" {
		t.Fatalf("images: %+v", images.Data)
	}
	// dall-e-3 hd 1024x1024: the table's per-pixel price, about $0.08 an image.
	if cost := headerCost(t, resp); math.Abs(cost-0.16) > 1e-3 {
		t.Errorf("two hd images cost %v", cost)
	}

	tr, err := c.Audio.Transcriptions.New(ctx, openai.AudioTranscriptionNewParams{
		Model: openai.AudioModelWhisper1, File: openai.File(bytes.NewReader(wav(2)), "speech.wav", "audio/wav"),
	}, option.WithResponseInto(&resp))
	if err != nil {
		t.Fatal(err)
	}
	if tr.Text == "" {
		t.Fatalf("transcription: %+v", tr)
	}
	if cost := headerCost(t, resp); math.Abs(cost-2*0.0001) > 1e-12 {
		t.Errorf("two seconds of whisper cost %v", cost)
	}

	speech, err := c.Audio.Speech.New(ctx, openai.AudioSpeechNewParams{
		Model: openai.SpeechModelTTS1, Input: "hello there",
		Voice: openai.AudioSpeechNewParamsVoiceUnion{OfString: openai.String("alloy")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer speech.Body.Close()
	audio, err := io.ReadAll(speech.Body)
	if err != nil || len(audio) == 0 || speech.Header.Get("Content-Type") != "audio/mpeg" {
		t.Fatalf("speech: %v, %d bytes of %s", err, len(audio), speech.Header.Get("Content-Type"))
	}
}

func headerCost(t *testing.T, resp *http.Response) float64 {
	t.Helper()
	if resp == nil {
		t.Fatal("no response captured")
	}
	c, err := strconv.ParseFloat(resp.Header.Get("x-tollgate-response-cost"), 64)
	if err != nil {
		t.Fatalf("x-tollgate-response-cost = %q", resp.Header.Get("x-tollgate-response-cost"))
	}
	return c
}

// wav is a silent mono 16-bit WAV file of secs seconds at 8 kHz.
func wav(secs int) []byte {
	const rate = 8000
	h := make([]byte, 44)
	copy(h, "RIFF")
	binary.LittleEndian.PutUint32(h[4:], uint32(36+secs*rate*2))
	copy(h[8:], "WAVEfmt ")
	binary.LittleEndian.PutUint32(h[16:], 16)
	binary.LittleEndian.PutUint16(h[20:], 1)
	binary.LittleEndian.PutUint16(h[22:], 1)
	binary.LittleEndian.PutUint32(h[24:], rate)
	binary.LittleEndian.PutUint32(h[28:], rate*2)
	binary.LittleEndian.PutUint16(h[32:], 2)
	binary.LittleEndian.PutUint16(h[34:], 16)
	copy(h[36:], "data")
	binary.LittleEndian.PutUint32(h[40:], uint32(secs*rate*2))
	return append(h, make([]byte, secs*rate*2)...)
}
