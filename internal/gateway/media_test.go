package gateway

import (
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"mime"
	"mime/multipart"
	"strings"
	"testing"

	"github.com/tollgate/tollgate/internal/provider"
)

// TestFormReencodes: the form goes out with the model replaced (or added
// first when the path named it), every other part byte for byte with its
// headers, a Content-Transfer-Encoding passed on undecoded, under a fresh
// boundary.
func TestFormReencodes(t *testing.T) {
	// The file holds what looks like form syntax, only not the client's
	// boundary.
	file := []byte("\r\n--b\r\nContent-Disposition: form-data\r\n\r\n\x00\xff=3D")
	body := "--XyZ\r\n" +
		"Content-Disposition: form-data; name=\"model\"\r\n\r\nclient-model\r\n" +
		"--XyZ\r\n" +
		"Content-Disposition: form-data; name=\"file\"; filename=\"a b.wav\"\r\n" +
		"Content-Type: audio/wav\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		string(file) + "\r\n" +
		"--XyZ\r\nContent-Disposition: form-data; name=\"response_format\"\r\n\r\nsrt\r\n--XyZ--\r\n"
	f, err := parseForm([]byte(body), "multipart/form-data; boundary=XyZ")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, model string
		path        bool
	}{{"replaced", "dep-model", false}, {"added", "dep-model", true}} {
		fm := f
		if tc.path {
			fm = &form{boundary: f.boundary}
			for _, p := range f.parts {
				if p.name != "model" {
					fm.parts = append(fm.parts, p)
				}
			}
		}
		out := fm.encode(tc.model)
		_, params, err := mime.ParseMediaType(fm.contentType())
		if err != nil || params["boundary"] == "XyZ" {
			t.Fatalf("%s: content type %q", tc.name, fm.contentType())
		}
		r := multipart.NewReader(bytes.NewReader(out), params["boundary"])
		var names []string
		for {
			p, err := r.NextRawPart()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			data, _ := io.ReadAll(p)
			names = append(names, p.FormName())
			switch p.FormName() {
			case "model":
				if string(data) != tc.model {
					t.Errorf("%s: model %q", tc.name, data)
				}
			case "file":
				if !bytes.Equal(data, file) || p.FileName() != "a b.wav" || p.Header.Get("Content-Type") != "audio/wav" ||
					p.Header.Get("Content-Transfer-Encoding") != "quoted-printable" {
					t.Errorf("%s: file part %q %v", tc.name, data, p.Header)
				}
			case "response_format":
				if string(data) != "srt" {
					t.Errorf("%s: response_format %q", tc.name, data)
				}
			}
		}
		if strings.Join(names, ",") != "model,file,response_format" {
			t.Errorf("%s: parts %v", tc.name, names)
		}
	}
}

// TestFormRefusals: what is not a form is a 400 before anything is sent.
func TestFormRefusals(t *testing.T) {
	for _, tc := range []struct{ name, ct, body string }{
		{"json", "application/json", `{"model":"x"}`},
		{"no boundary", "multipart/form-data", "--b\r\n"},
		{"truncated", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nx\r\n--"},
		{"no parts", "multipart/form-data; boundary=b", "--b--\r\n"},
		{"no name", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--\r\n"},
		{"huge field", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\n" + strings.Repeat("a", maxFieldBytes+1) + "\r\n--b--\r\n"},
	} {
		if _, err := parseForm([]byte(tc.body), tc.ct); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	md := &media{op: provider.OpTranscriptions}
	body := "--b\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper\r\n--b--\r\n"
	if _, err := decodeForm(md, []byte(body), "multipart/form-data; boundary=b", ""); err == nil || !strings.Contains(err.Error(), "file") {
		t.Errorf("a transcription without a file: %v", err)
	}
}

func TestWAVSeconds(t *testing.T) {
	wav := func(rate uint32, dataLen int, extra string) []byte {
		b := []byte("RIFF\x00\x00\x00\x00WAVE")
		if extra != "" { // a chunk before fmt, odd-sized, padded
			b = append(b, extra...)
			b = binary.LittleEndian.AppendUint32(b, 3)
			b = append(b, 1, 2, 3, 0)
		}
		b = append(b, "fmt "...)
		b = binary.LittleEndian.AppendUint32(b, 16)
		b = binary.LittleEndian.AppendUint16(b, 1)
		b = binary.LittleEndian.AppendUint16(b, 1)
		b = binary.LittleEndian.AppendUint32(b, rate/2)
		b = binary.LittleEndian.AppendUint32(b, rate)
		b = binary.LittleEndian.AppendUint32(b, 0x00100002)
		b = append(b, "data"...)
		b = binary.LittleEndian.AppendUint32(b, uint32(dataLen))
		return append(b, make([]byte, dataLen)...)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want float64
	}{
		{"plain", wav(16000, 48000, ""), 3},
		{"list chunk first", wav(16000, 8000, "LIST"), 0.5},
		{"truncated data", wav(16000, 48000, "")[:44+16000], 1},
		{"not wav", []byte("ID3\x04 mp3 bytes"), 0},
		{"short", []byte("RIFF"), 0},
	} {
		if got := wavSeconds(tc.b); math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestLastCueEnd(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		ok   bool
	}{
		{"1\n00:00:00,000 --> 00:00:02,500\nhi\n\n2\n00:00:02,500 --> 01:02:03,250\nthere\n", 3723.25, true},
		{"WEBVTT\n\n00:00.000 --> 00:07.125\nhi\n", 7.125, true},
		{"no cues", 0, false},
		{"00:00:01,000 --> garbage", 0, false},
	} {
		got, ok := lastCueEnd([]byte(tc.in))
		if ok != tc.ok || math.Abs(got-tc.want) > 1e-9 {
			t.Errorf("%q: %v %v, want %v %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
