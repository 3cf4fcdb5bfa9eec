package gateway

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"sync"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/jsonbody"
)

// maxEventBytes bounds one server-sent event (its lines up to the blank
// line) read from an upstream. Chat and Messages streams send events of a
// few hundred bytes; 8 MiB leaves room for inline images in a delta. The
// response-size limit lowers it when it is smaller.
const maxEventBytes = 8 << 20

// errTooLarge: the upstream's answer is over the configured limit.
var errTooLarge = errors.New("upstream answer too large")

// eventLimit is the bound on one event for a response-size limit.
func eventLimit(maxResponse int64) int {
	if maxResponse > 0 && maxResponse < maxEventBytes {
		return int(maxResponse)
	}
	return maxEventBytes
}

// readLimited reads a whole upstream body of at most limit bytes; a larger
// one is errTooLarge. A declared length over the limit fails before anything
// is read. A body of unknown length (chunked: a Go upstream's answer over
// 2 KiB written without a Content-Length, for one; the transport does not
// undo gzip here, DisableCompression) is read in chunks (32 KiB, 32, 64,
// ... to 4 MiB) joined once at the end, so refusing an oversize answer
// costs at most the limit in memory, never a multiple, and memory follows
// the bytes that arrived. The first chunk is a pooled scratch buffer
// (answerScratch) and the body is always copied out of the chunks at its
// size: a 300-byte answer costs 300 bytes, not a 32 KiB chunk kept for the
// call's life.
func readLimited(r io.Reader, declared, limit int64) ([]byte, error) {
	if limit <= 0 {
		return io.ReadAll(r)
	}
	if declared > limit {
		return nil, errTooLarge
	}
	if declared >= 0 && declared <= 4<<20 {
		// Exact size: one allocation (+1 to see a body longer than declared).
		// Larger declared sizes grow as the bytes arrive, so that an
		// upstream declaring much and sending little holds little.
		buf := make([]byte, 0, declared+1)
		for {
			n, err := r.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if int64(len(buf)) > limit {
				return nil, errTooLarge
			}
			if err == io.EOF {
				return buf, nil
			}
			if err != nil {
				return nil, err
			}
			if len(buf) == cap(buf) {
				buf = append(buf, 0)[:len(buf)] // longer than declared: grow
			}
		}
	}
	var (
		chunks [][]byte
		total  int64
		size   = 32 << 10
	)
	// The scratch goes back to the pool when readLimited returns: what it
	// returns is always a copy (below), the reader is done with it (an
	// io.Reader keeps no hold of p after Read returns; net/http's body
	// reads copy into p in the caller's goroutine), and nothing else saw it.
	scratch := answerScratch.Get().(*[]byte)
	defer answerScratch.Put(scratch)
	for i := 0; ; i++ {
		chunk := *scratch
		if i > 0 {
			chunk = make([]byte, size)
		}
		n, err := io.ReadFull(r, chunk)
		total += int64(n)
		if total > limit {
			// Up to the limit was read for nothing: collect it now, so the
			// next answer reuses that memory instead of growing the heap
			// toward twice the limit (a refused answer is rare, a GC cheap).
			chunks, chunk = nil, nil
			runtime.GC()
			return nil, errTooLarge
		}
		if n > 0 {
			chunks = append(chunks, chunk[:n])
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if i > 0 { // the scratch and the first fresh chunk are both 32 KiB
			size = min(size*2, 4<<20)
		}
	}
	out := make([]byte, 0, total) // a copy always: chunks[0] is the pooled scratch
	for _, c := range chunks {
		out = append(out, c...)
	}
	return out, nil
}

// answerScratch holds the 32 KiB first chunks readLimited reads answers of
// unknown length into; none leaves readLimited.
var answerScratch = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// tooLargeFailure is the 502 for a whole answer over the limit; it is not
// retried (the upstream already spent the tokens).
func tooLargeFailure(deployment string, limit int64) *failure {
	return &failure{err: apierror.BadGateway(errTooLarge,
		"deployment %s answered more than %d bytes (general_settings.max_response_size_mb)", deployment, limit)}
}

// errEventTooLarge ends a stream whose upstream sent one event over the bound.
type errEventTooLarge struct{ limit int }

func (e errEventTooLarge) Error() string {
	return fmt.Sprintf("upstream sent a stream event over %d bytes", e.limit)
}

// streamErrorEvent is the event that ends a stream the gateway cut short, in
// the client's API: Anthropic's `event: error`, else OpenAI's data-only
// {"error":{...}} object.
func streamErrorEvent(out []byte, anthropic bool, msg string) []byte {
	m := jsonbody.Quote(msg)
	if anthropic {
		out = append(out, `event: error`+"\n"+`data: {"type":"error","error":{"type":"api_error","message":`...)
		out = append(out, m...)
		return append(out, "}}\n\n"...)
	}
	out = append(out, `data: {"error":{"message":`...)
	out = append(out, m...)
	return append(out, `,"type":"api_error","param":null,"code":"upstream_event_too_large"}}`+"\n\n"...)
}

// eventTooLargeMessage is what the client is told.
func eventTooLargeMessage(limit int) string {
	return "the upstream sent a stream event over " + strconv.Itoa(limit) + " bytes; the stream was ended"
}
