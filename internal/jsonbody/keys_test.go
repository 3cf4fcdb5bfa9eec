package jsonbody

import (
	"fmt"
	"testing"
)

// Members' keys are the body's keys whatever their spelling: the known
// ones (constants), near misses of them, escaped ones and others.
func TestKeysAsWritten(t *testing.T) {
	keys := []string{"model", "messages", "max_tokens", "max_completion_tokens", "stream", "stream_options", "temperature", "top_p",
		"n", "user", "tools", "tool_choice", "response_format", "stop", "seed", "metadata", "input", "prompt", "system", "include_usage",
		"Model", "model ", "mode", "models", "", "nn", "x", "émoji", "max_tokens2"}
	var o Object
	for _, k := range keys {
		body := fmt.Sprintf(`{%q: 1, "z": 2}`, k)
		if err := o.Reset([]byte(body)); err != nil {
			t.Fatal(err)
		}
		if len(o.Members) != 2 || o.Members[0].Key != k || string(o.Members[0].Value) != "1" || o.Members[1].Key != "z" {
			t.Fatalf("%s: members %+v", body, o.Members)
		}
		if keyString([]byte(k)) != k {
			t.Fatalf("keyString(%q) = %q", k, keyString([]byte(k)))
		}
	}
	if err := o.Reset([]byte(`{"mod\u0065l": 1}`)); err != nil || o.Members[0].Key != "model" {
		t.Fatalf("escaped key: %+v %v", o.Members, err)
	}
}

// A request body's scan allocates its member slice once, and nothing for
// the usual keys; a rescan of the same Object allocates nothing.
func TestResetAllocations(t *testing.T) {
	body := []byte(`{"model":"gpt-4","max_tokens":8,"stream":false,"temperature":0.2,"messages":[{"role":"user","content":"Say hello."}]}`)
	if n := testing.AllocsPerRun(100, func() {
		var o Object
		if o.Reset(body) != nil {
			t.Fatal("bad body")
		}
		sink = o.Members
	}); n != 1 {
		t.Fatalf("a first scan allocates %v times, want 1", n)
	}
	var o Object
	if n := testing.AllocsPerRun(100, func() { _ = o.Reset(body) }); n != 0 {
		t.Fatalf("a rescan allocates %v times", n)
	}
}

var sink []Member
