package jsonbody

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScanReadsTopLevelMembers(t *testing.T) {
	body := []byte(` { "model" : "gpt-4", "stream":true, "max_tokens": 42,
		"messages":[{"role":"user","content":"say \"model\": no"}],
		"user":"u\u0031", "extra": {"model":"nested"}, "n": null }`)
	o, err := Scan(body)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := o.String("model"); m != "gpt-4" {
		t.Errorf("model = %q", m)
	}
	if s, ok := o.Bool("stream"); !ok || !s {
		t.Errorf("stream = %v %v", s, ok)
	}
	if n, ok := o.Int("max_tokens"); !ok || n != 42 {
		t.Errorf("max_tokens = %v %v", n, ok)
	}
	if u, _ := o.String("user"); u != "u1" {
		t.Errorf("user = %q, want escape decoded", u)
	}
	if got := string(o.Get("extra")); got != `{"model":"nested"}` {
		t.Errorf("extra = %s", got)
	}
	if !o.Has("n") || !o.IsNull("n") || !o.IsNull("absent") || o.Has("absent") {
		t.Error("null/absent handling wrong")
	}
	if len(o.Members) != 7 {
		t.Errorf("members = %d, want 7", len(o.Members))
	}
}

func TestScanRejects(t *testing.T) {
	tests := []struct {
		name, body, want string
	}{
		{"malformed", `{"model": "x",`, "invalid JSON"},
		{"array", `[1,2]`, "must be a JSON object"},
		{"string", `"x"`, "must be a JSON object"},
		{"empty", ``, "invalid JSON"},
		{"trailing garbage", `{"a":1} x`, "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Scan([]byte(tt.body))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestWith(t *testing.T) {
	tests := []struct {
		name, body, key, val, want string
	}{
		{"replace keeps the rest byte for byte", `{"model": "a" , "x":[1, 2]}`, "model", `"b"`, `{"model": "b" , "x":[1, 2]}`},
		{"append", `{"model":"a"}`, "stream_options", `{"include_usage":true}`, `{"model":"a","stream_options":{"include_usage":true}}`},
		{"append to empty", `{ }`, "k", `1`, `{ "k":1}`},
		{"replace duplicates", `{"m":1,"m":2}`, "m", `3`, `{"m":3,"m":3}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Scan([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			got := string(o.With(tt.key, []byte(tt.val)))
			if got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Fatal("result is not valid JSON")
			}
		})
	}
}

func TestRelax(t *testing.T) {
	tests := []struct {
		name, in, want string
		changed        bool
	}{
		{"trailing comma in object", `{"max_budget": 10,}`, `{"max_budget": 10}`, true},
		{"trailing comma with newline", "{\"a\": [1,2,\n],\n}", "{\"a\": [1,2\n]\n}", true},
		{"hash comment", "{\"models\": [\"beta\"], # 👈 group\n\"max_budget\": 0,}", "{\"models\": [\"beta\"], \n\"max_budget\": 0}", true},
		{"strings untouched", `{"a":"x,}# //","b":"\"#"}`, `{"a":"x,}# //","b":"\"#"}`, false},
		{"slash comment", "{\"a\":1 // c\n}", "{\"a\":1 \n}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, changed := Relax([]byte(tt.in))
			if string(got) != tt.want || changed != tt.changed {
				t.Fatalf("Relax = %q, %v; want %q, %v", got, changed, tt.want, tt.changed)
			}
		})
	}
}

func FuzzWith(f *testing.F) {
	f.Add([]byte(`{"model":"a","b":[1,{"c":"d"}]}`), "model")
	f.Add([]byte(`{}`), "x")
	f.Fuzz(func(t *testing.T, body []byte, key string) {
		o, err := Scan(body)
		if err != nil || !utf8.ValidString(key) {
			return // the gateway only ever sets its own ASCII keys
		}
		out := o.With(key, []byte(`"v"`))
		o2, err := Scan(out)
		if err != nil {
			t.Fatalf("With produced invalid JSON %q from %q: %v", out, body, err)
		}
		if s, _ := o2.String(key); s != "v" {
			t.Fatalf("key %q = %q after With", key, s)
		}
	})
}

func BenchmarkScan(b *testing.B) {
	body := []byte(`{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Write a haiku about gateways and budgets, please."}],"max_tokens":64,"stream":false,"user":"end-user-1","temperature":0.2}`)
	var o Object
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := o.Reset(body); err != nil {
			b.Fatal(err)
		}
	}
}

func TestWithout(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{`{"model":"m","metadata":{"tags":["a"]},"n":1}`, `{"model":"m","n":1}`},
		{`{"metadata":{}}`, `{}`},
		{` { "metadata" : 1 , "model" : "m" , "litellm_metadata":{"x":[1,"}"]} } `, `{"model" : "m"}`},
		{`{"model":"m","nested":{"metadata":1}}`, `{"model":"m","nested":{"metadata":1}}`},
		{`{"metadata":1,"metadata":2,"a":"\"metadata\""}`, `{"a":"\"metadata\""}`},
	}
	for _, tt := range tests {
		o, err := Scan([]byte(tt.in))
		if err != nil {
			t.Fatal(err)
		}
		got := o.Without("metadata", "litellm_metadata")
		if string(got) != tt.want || !json.Valid(got) {
			t.Errorf("Without(%s) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

func TestCursorMatchesReset(t *testing.T) {
	for _, b := range []string{
		`{}`, ` { } `, `{"a":1}`, `{"a":1,"a":2}`, ` {"a" : [1, {"b":"}"}] , "c\"d":"\\", "\u0065":null } `,
		`{"x":{"y":{"z":[]}},"y":"{\"y\":1}"}`, `[]`, `null`, ``, `{`, `{"a":1,}`, `{"a":1}x`, "{\"k\xff\":\"v\xfe\"}",
	} {
		var o Object
		checkCursor(t, []byte(b), &o, o.Reset([]byte(b)))
	}
}
