package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/callback"
)

// TestProbeConcurrentStreamsDoNotMix: concurrent streams, each with its
// own letter, some abandoned by the client mid-stream and some cut by the
// upstream, must each deliver and capture only their own letter (pooled
// stream buffers must not be shared between live streams).
func TestProbeConcurrentStreamsDoNotMix(t *testing.T) {
	up := func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		letter := "A"
		for _, l := range "ABCDEFGH" {
			if strings.Contains(string(b), "letter-"+string(l)) {
				letter = string(l)
			}
		}
		cut := strings.Contains(string(b), "cut")
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		for i := range 40 {
			if cut && i == 20 {
				return // upstream breaks off mid-stream
			}
			fmt.Fprintf(w, "data: {\"id\":\"c-%s\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"%s\"}}]}\n\n", letter, strings.Repeat(letter, 700))
			if i%5 == 0 {
				fl.Flush()
			}
		}
		_, _ = io.WriteString(w, "data: [DONE]\n\n")
	}
	url, pub := contentRig(t, ContentLogging{}, up)
	pub.got = make(chan *callback.Payload, 256)
	const n = 48
	var wg sync.WaitGroup
	errs := make(chan string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			letter := string("ABCDEFGH"[i%8])
			extra := ""
			if i%3 == 1 {
				extra = " cut"
			}
			body := `{"model":"g","stream":true,"max_tokens":50,"messages":[{"role":"user","content":"letter-` + letter + extra + `"}]}`
			path := "/v1/chat/completions"
			if i%2 == 1 {
				path = "/v1/messages" // translated to Anthropic's events
			}
			req, _ := http.NewRequest("POST", url+path, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			if i%3 == 2 { // abandon after a little
				buf := make([]byte, 3000)
				_, _ = io.ReadFull(resp.Body, buf)
				checkLetters(errs, "client (abandoned)", letter, string(buf))
				return
			}
			b, _ := io.ReadAll(resp.Body)
			checkLetters(errs, "client", letter, string(b))
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	deadline := time.After(60 * time.Second)
	for got := 0; got < n; got++ {
		select {
		case pl := <-pub.got:
			letter := ""
			for _, l := range "ABCDEFGH" {
				if strings.Contains(string(pl.Messages), "letter-"+string(l)) {
					letter = string(l)
				}
			}
			if letter == "" {
				t.Errorf("payload without its prompt: %s", pl.Messages)
				continue
			}
			errs := make(chan string, 1)
			checkLetters(errs, "captured response", letter, string(pl.Response))
			close(errs)
			for e := range errs {
				t.Errorf("%s: %.300s", e, pl.Response)
			}
			if !strings.Contains(string(pl.Response), strings.Repeat(letter, 50)) {
				t.Errorf("stream %s: captured response lacks its text: %.300s", letter, pl.Response)
			}
		case <-deadline:
			t.Logf("only %d payloads", got)
			return
		}
	}
}

func checkLetters(errs chan<- string, what, letter, s string) {
	for _, l := range "ABCDEFGH" {
		if string(l) != letter && strings.Contains(s, strings.Repeat(string(l), 50)) {
			errs <- fmt.Sprintf("%s of stream %s got %s text", what, letter, string(l))
			return
		}
	}
}
