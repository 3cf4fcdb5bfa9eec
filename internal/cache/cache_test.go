package cache

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

func TestKeyIgnoresOrderWhitespaceAndNonAnswerFields(t *testing.T) {
	base := KeyParts{CallType: "acompletion", Model: "gpt-4", Scope: "team:a",
		Body: []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0.2}`)}
	same := base
	same.Body = []byte(`{ "temperature": 0.2, "user": "u1", "metadata": {"k": 1},
		"messages": [ {"content": "hi", "role": "user"} ], "cache": {"ttl": 5} }`)
	if Key(base) != Key(same) {
		t.Fatal("key order, whitespace, user, metadata or cache changed the key")
	}
	tests := []struct {
		name   string
		change func(p *KeyParts)
	}{
		{"temperature", func(p *KeyParts) { p.Body = bytes.Replace(p.Body, []byte("0.2"), []byte("0.3"), 1) }},
		{"model group", func(p *KeyParts) { p.Model = "gpt-4o" }},
		{"scope", func(p *KeyParts) { p.Scope = "team:b" }},
		{"namespace", func(p *KeyParts) { p.Namespace = "evals" }},
		{"call type", func(p *KeyParts) { p.CallType = "anthropic_messages" }},
		{"stream", func(p *KeyParts) { p.Body = bytes.Replace(p.Body, []byte(`{`), []byte(`{"stream":true,`), 1) }},
	}
	for _, tt := range tests {
		p := base
		p.Body = append([]byte(nil), base.Body...)
		tt.change(&p)
		if Key(p) == Key(base) {
			t.Errorf("%s did not change the key", tt.name)
		}
	}
}

func TestLocalIsBoundedByBytes(t *testing.T) {
	ctx := context.Background()
	l := NewLocal(localShards * 4096)
	body := bytes.Repeat([]byte("x"), 1000)
	for i := range 1000 {
		_ = l.Set(ctx, fmt.Sprint("k", i), &Entry{Body: body}, time.Minute)
	}
	if n := l.Bytes(); n > localShards*4096 || n == 0 {
		t.Fatalf("local cache holds %d bytes, bound %d", n, localShards*4096)
	}
	if e, _ := l.Get(ctx, "k999"); e == nil {
		t.Fatal("the last entry stored was evicted")
	}
	if e, _ := l.Get(ctx, "k0"); e != nil {
		t.Fatal("the oldest entry survived a full cache")
	}
	_ = l.Set(ctx, "big", &Entry{Body: bytes.Repeat([]byte("x"), 8192)}, time.Minute)
	if e, _ := l.Get(ctx, "big"); e != nil {
		t.Fatal("an entry over a shard's bound was stored")
	}
	_ = l.Set(ctx, "brief", &Entry{Body: body}, -time.Second) // expired when stored
	if e, _ := l.Get(ctx, "brief"); e != nil {
		t.Fatal("an expired entry was served")
	}
}

func TestEntryRoundTrip(t *testing.T) {
	e := &Entry{Stored: time.UnixMicro(1700000000000000), ContentType: "text/event-stream", Body: []byte("data: {}\n\n"),
		Deployment: "d1", Provider: "openai", PromptTokens: 4, CompletionTokens: 3, Cost: 0.0003}
	got, err := Decode(e.Encode())
	if err != nil || !got.Stored.Equal(e.Stored) || got.ContentType != e.ContentType || !bytes.Equal(got.Body, e.Body) ||
		got.Cost != e.Cost || got.CompletionTokens != 3 || got.Deployment != "d1" {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {0, 0, 0, 9, '{'}, {0, 0, 0, 1, 'x'}} {
		if _, err := Decode(bad); err == nil {
			t.Errorf("Decode(%q) did not fail", bad)
		}
	}
}

func TestIndexFindsTheNearestAboveThreshold(t *testing.T) {
	x := NewIndex(3)
	x.Add("p", []float32{1, 0}, "east")
	x.Add("p", []float32{0, 1}, "north")
	x.Add("q", []float32{1, 0}, "other-partition")
	if k, sim, ok := x.Nearest("p", []float32{0.9, 0.1}, 0.95); !ok || k != "east" || sim < 0.95 {
		t.Fatalf("nearest: %q %v %v", k, sim, ok)
	}
	if _, _, ok := x.Nearest("p", []float32{1, 1}, 0.95); ok {
		t.Fatal("a vector below the threshold matched")
	}
	if _, _, ok := x.Nearest("r", []float32{1, 0}, 0.5); ok {
		t.Fatal("a partition with no vectors matched")
	}
	x.Add("p", []float32{-1, 0}, "west") // the fourth: the oldest (east) goes
	if x.Len() != 3 {
		t.Fatalf("index holds %d, bound 3", x.Len())
	}
	if k, _, ok := x.Nearest("p", []float32{1, 0}, 0.99); ok {
		t.Fatalf("an evicted vector matched: %q", k)
	}
	if _, _, ok := x.Nearest("p", []float32{0, 0}, 0); ok {
		t.Fatal("a zero vector matched")
	}
}

// BenchmarkIndexNearest is a semantic lookup that misses at the index's
// default bound: 2,000 vectors of 1,536 dimensions in one partition.
func BenchmarkIndexNearest(b *testing.B) {
	x := NewIndex(DefaultIndexSize)
	v := make([]float32, 1536)
	for i := range DefaultIndexSize {
		for j := range v {
			v[j] = float32((i*31+j*17)%97) - 48
		}
		x.Add("p", v, fmt.Sprint(i))
	}
	for b.Loop() {
		x.Nearest("p", v, 1.1)
	}
}

// TestIndexDroppedWithEntries: deleting or flushing through WithIndex
// drops the prompts' vectors with their answers, so a semantic lookup no
// longer finds a key whose answer is gone.
func TestIndexDroppedWithEntries(t *testing.T) {
	x := NewIndex(0)
	b := WithIndex(NewLocal(0), x)
	x.Add("p", []float32{1, 0}, "k1")
	x.Add("p", []float32{0, 1}, "k2")
	if err := b.Delete(context.Background(), "k1"); err != nil {
		t.Fatal(err)
	}
	if k, _, ok := x.Nearest("p", []float32{1, 0}, 0.9); ok {
		t.Fatalf("deleted key %s still found", k)
	}
	if x.Len() != 1 {
		t.Fatalf("%d vectors after a delete, want 1", x.Len())
	}
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if x.Len() != 0 {
		t.Fatalf("%d vectors after a flush", x.Len())
	}
}
