package gateway

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/tollgate/tollgate/internal/apierror"
)

// TestReadBodySized: a request body with a declared length is read into
// one buffer of that length (+1), whole and unchanged, whatever the reads'
// sizes; an undeclared one (chunked) as before; the limit still answers 413.
func TestReadBodySized(t *testing.T) {
	body := bytes.Repeat([]byte(`{"model":"demo","messages":[]}`), 1400) // 42 KB
	read := func(declared int64, r io.Reader, limit int64) ([]byte, error) {
		req := httptest.NewRequest("POST", "/v1/chat/completions", r)
		req.ContentLength = declared
		return readBody(httptest.NewRecorder(), req, limit)
	}
	for _, tc := range []struct {
		name     string
		declared int64
		r        func() io.Reader
	}{
		{"declared", int64(len(body)), func() io.Reader { return bytes.NewReader(body) }},
		{"declared, one byte a read", int64(len(body)), func() io.Reader { return iotest.OneByteReader(bytes.NewReader(body)) }},
		{"declared, data with EOF", int64(len(body)), func() io.Reader { return iotest.DataErrReader(bytes.NewReader(body)) }},
		{"chunked", -1, func() io.Reader { return bytes.NewReader(body) }},
	} {
		got, err := read(tc.declared, tc.r(), 1<<20)
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("%s: %d bytes, %v", tc.name, len(got), err)
		}
		if tc.declared >= 0 && cap(got) != len(body)+1 {
			t.Errorf("%s: cap %d, want %d", tc.name, cap(got), len(body)+1)
		}
	}
	if got, err := read(0, strings.NewReader(""), 1<<20); err != nil || len(got) != 0 {
		t.Fatalf("empty: %q, %v", got, err)
	}
	// Declared above presizeMax: starts there and grows as bytes arrive.
	big := bytes.Repeat([]byte("x"), presizeMax*3)
	if got, err := read(int64(len(big)), bytes.NewReader(big), 1<<30); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big: %d bytes, %v", len(got), err)
	}
	setup := testing.AllocsPerRun(20, func() {
		req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		_, _ = req, httptest.NewRecorder()
	})
	all := testing.AllocsPerRun(20, func() {
		if _, err := read(int64(len(body)), bytes.NewReader(body), 1<<20); err != nil {
			t.Fatal(err)
		}
	})
	if all-setup > 5 { // the MaxBytesReader, one buffer and the harness (5; io.ReadAll: 19)
		t.Errorf("declared 42 KB body: %v allocations besides the request's %v", all-setup, setup)
	}
	for _, declared := range []int64{int64(len(body)), -1} {
		_, err := read(declared, bytes.NewReader(body), 1000)
		if e, ok := err.(*apierror.Error); !ok || e.Status != http.StatusRequestEntityTooLarge {
			t.Fatalf("over the limit, declared %d: %v", declared, err)
		}
	}
}

// TestReadLimitedCopiesOutOfScratch: an answer of unknown length is read
// through the pooled scratch buffer and returned as its own copy, at its
// size: answers read later (through the same scratch) leave it unchanged,
// every length and read pattern comes back whole, and a 300-byte answer
// allocates about 300 bytes, not a 32 KiB chunk.
func TestReadLimitedCopiesOutOfScratch(t *testing.T) {
	mk := func(n int, c byte) []byte { return bytes.Repeat([]byte{c}, n) }
	first, err := readLimited(bytes.NewReader(mk(300, 'a')), -1, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := readLimited(iotest.HalfReader(bytes.NewReader(mk(300+i, byte('b'+i%20)))), -1, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(first, mk(300, 'a')) || cap(first) != 300 {
		t.Fatalf("the first answer changed after later reads (len %d cap %d): %.40q", len(first), cap(first), first)
	}
	for _, n := range []int{0, 1, 300, 32<<10 - 1, 32 << 10, 32<<10 + 1, 100 << 10} {
		want := make([]byte, n)
		for i := range want {
			want[i] = byte(i * 7)
		}
		for _, r := range []io.Reader{bytes.NewReader(want), iotest.OneByteReader(bytes.NewReader(want)), iotest.DataErrReader(bytes.NewReader(want))} {
			got, err := readLimited(r, -1, 1<<20)
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes: got %d, %v", n, len(got), err)
			}
		}
	}
	if _, err := readLimited(bytes.NewReader(mk(100<<10, 'x')), -1, 50<<10); err != errTooLarge {
		t.Fatalf("over the limit: %v", err)
	}
	if raceOn {
		return // the race detector's sync.Pool drops a share of what is put back
	}
	body := mk(300, 'z')
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 100 {
		if _, err := readLimited(bytes.NewReader(body), -1, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	runtime.ReadMemStats(&after)
	if per := (after.TotalAlloc - before.TotalAlloc) / 100; per > 2048 {
		t.Errorf("a 300-byte answer of unknown length allocated %d bytes a read", per)
	}
}
