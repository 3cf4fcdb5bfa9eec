package provider

import (
	"bufio"
	"bytes"
	"net/http"
	"reflect"
	"testing"
)

// TestH1HeaderValuesOneString: an upstream answer's header values are read
// into one string (one allocation however many headers an answer has: an
// OpenAI answer has 15-20), with the values, their order under a repeated
// key and the status of net/http's reading; "HTTP/1.1 200 OK" is parsed
// without allocating.
func TestH1HeaderValuesOneString(t *testing.T) {
	const few = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n"
	const many = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Wed, 02 Dec 2026 09:26:45 GMT\r\n" +
		"Content-Length: 2\r\nOpenai-Model: gpt-4o\r\nOpenai-Processing-Ms: 12\r\nX-Request-Id: req_abc\r\n" +
		"Vary:  Origin \t\r\nVary: Accept-Encoding\r\nX-Request-Id: req_2\r\n\r\n"
	br := bufio.NewReader(nil)
	pc := &h1Conn{br: br}
	var r bytes.Reader
	read := func(head string) *http.Response {
		r.Reset([]byte(head))
		br.Reset(&r)
		resp := &http.Response{}
		budget := h1MaxHeaderBytes
		line, err := pc.readLine(&budget)
		if err == nil {
			err = parseStatusLine(line, resp)
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Header = make(http.Header, 8)
		if err := pc.readHeader(resp.Header, &budget); err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for _, head := range []string{few, many} {
		want, err := http.ReadResponse(bufio.NewReader(bytes.NewReader([]byte(head))), nil)
		if err != nil {
			t.Fatal(err)
		}
		got := read(head)
		delete(want.Header, "Content-Length") // net/http moves it to ContentLength only when framing; compare the rest
		gh := got.Header.Clone()
		delete(gh, "Content-Length")
		if !reflect.DeepEqual(gh, want.Header) || got.Status != want.Status || got.StatusCode != 200 || got.Proto != "HTTP/1.1" {
			t.Fatalf("got %q %q, net/http reads %q %q", got.Status, gh, want.Status, want.Header)
		}
	}
	// A buffer headers were read into is reused: the strings handed out
	// before stay as they were.
	first := read(many).Header
	read(few)
	if first.Get("X-Request-Id") != "req_abc" || first["X-Request-Id"][1] != "req_2" {
		t.Fatalf("an earlier answer's values changed: %q", first)
	}
	fewN := testing.AllocsPerRun(100, func() { read(few) })
	manyN := testing.AllocsPerRun(100, func() { read(many) })
	// The 9 values' only allocations beyond the 2's are the second values
	// of Vary and X-Request-Id (a key's slice grows).
	if manyN != fewN+2 {
		t.Errorf("2 headers: %.0f allocations, 9: %.0f; want 2 more", fewN, manyN)
	}
}
