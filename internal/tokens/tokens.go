// Package tokens counts prompt tokens offline with OpenAI's BPE vocabularies
// (cl100k_base and o200k_base, compiled into the binary). Counts are exact
// for OpenAI models and a close estimate for others.
package tokens

import (
	"encoding/json"
	"strings"
	"sync"

	// The codec package, not the tokenizer package above it: tokenizer.Get
	// names every encoding the library has, so calling it links the r50k and
	// p50k vocabularies too (about 2.5 MB) that no model here uses. Calling
	// the two constructors links only these two.
	"github.com/tiktoken-go/tokenizer/codec"
)

var (
	cl100k   = &lazyCodec{load: codec.NewCl100kBase}
	o200k    = &lazyCodec{load: codec.NewO200kBase}
	o200kFor = []string{"gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o", "gpt-oss"}
)

type lazyCodec struct {
	load func() *codec.Codec
	once sync.Once
	c    *codec.Codec
}

// get loads the vocabulary on first use (tens of milliseconds, once).
func (l *lazyCodec) get() *codec.Codec {
	l.once.Do(func() { l.c = l.load() })
	return l.c
}

// Warm loads both vocabularies, so the first counted request pays nothing.
func Warm() {
	cl100k.get()
	o200k.get()
}

// codecFor picks o200k_base for OpenAI's newer model families, else
// cl100k_base. The provider prefix ("openai/gpt-4o") is ignored.
func codecFor(model string) *codec.Codec {
	if i := strings.LastIndexByte(model, '/'); i >= 0 {
		model = model[i+1:]
	}
	model = strings.ToLower(model)
	for _, p := range o200kFor {
		if strings.HasPrefix(model, p) {
			return o200k.get()
		}
	}
	return cl100k.get()
}

// Text counts the tokens of s as model would.
func Text(model, s string) int64 {
	if s == "" {
		return 0
	}
	n, err := codecFor(model).Count(s)
	if err != nil {
		return int64(len(s)) // invalid UTF-8: at most one token per byte
	}
	return int64(n)
}

// Per-message framing tokens of OpenAI's chat format, and the tokens that
// prime the reply.
const (
	perMessage = 3
	perName    = 1
	replyPrime = 3
	// ImageTokens is what one image is counted as: the most any provider's
	// vision models charge for one (OpenAI high detail ~1,105; Anthropic ~1,600).
	ImageTokens = 1600
)

type message struct {
	Role    string          `json:"role"`
	Name    string          `json:"name"`
	Content json.RawMessage `json:"content"`
}

type part struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Messages counts the prompt tokens of an OpenAI chat messages array (or an
// Anthropic one: string or block content), the way OpenAI bills them.
func Messages(model string, raw json.RawMessage) int64 {
	var msgs []message
	if json.Unmarshal(raw, &msgs) != nil {
		return int64(len(raw))
	}
	c := codecFor(model)
	count := func(s string) int64 {
		if s == "" {
			return 0
		}
		n, err := c.Count(s)
		if err != nil {
			return int64(len(s))
		}
		return int64(n)
	}
	total := int64(replyPrime)
	for _, m := range msgs {
		total += perMessage + count(m.Role)
		if m.Name != "" {
			total += perName + count(m.Name)
		}
		total += content(m.Content, count)
	}
	return total
}

// content counts a message's content: a string, or an array of parts whose
// text is counted and whose images count ImageTokens each. Anything else
// (tool calls, unknown shapes) is counted as its JSON text.
func content(raw json.RawMessage, count func(string) int64) int64 {
	if len(raw) == 0 || string(raw) == "null" {
		return 0
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return count(s)
	}
	var parts []part
	if json.Unmarshal(raw, &parts) == nil {
		var n int64
		for _, p := range parts {
			switch p.Type {
			case "text", "input_text":
				n += count(p.Text)
			case "image_url", "image", "input_image":
				n += ImageTokens
			default:
				n += int64(len(p.Text))
			}
		}
		return n
	}
	return count(string(raw))
}
