package translate

import (
	"time"

	"github.com/tollgate/tollgate/internal/usage"
)

// chunkOut is the client side of a stream translated into OpenAI chat
// chunks (from Gemini, from Cohere): the answer's id, model and time, and
// what the upstream reported so far.
type chunkOut struct {
	includeUsage bool // the client asked for the usage chunk
	model, id    string
	created      int64
	usage        usage.Usage
	hasUsage     bool
	started      bool   // the first chunk (the role) is written
	calls        int    // tool calls begun
	finish       string // the upstream's finish reason, in its own words
	chunks       int    // content-bearing chunks written
}

func newChunkOut(model string, includeUsage bool) chunkOut {
	return chunkOut{model: model, includeUsage: includeUsage, created: time.Now().Unix()}
}

// chunk appends one chat.completion.chunk with delta and finish.
func (s *chunkOut) chunk(out []byte, delta map[string]any, finish any) []byte {
	return appendData(out, map[string]any{"id": s.id, "object": "chat.completion.chunk", "created": s.created, "model": s.model,
		"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}}})
}

// end appends what a started stream still owes its client: the last chunk
// with the finish reason (OpenAI's words), the usage chunk when asked for,
// and [DONE].
func (s *chunkOut) end(out []byte, finish string) []byte {
	if !s.started {
		return out
	}
	out = s.chunk(out, map[string]any{}, finish)
	if s.includeUsage && s.hasUsage {
		out = appendData(out, map[string]any{"id": s.id, "object": "chat.completion.chunk", "created": s.created, "model": s.model,
			"choices": []any{}, "usage": s.usage.OpenAI()})
	}
	return append(out, "data: [DONE]\n\n"...)
}

func (s *chunkOut) Usage() (usage.Usage, bool) { return s.usage, s.hasUsage }
func (s *chunkOut) Chunks() int                { return s.chunks }
