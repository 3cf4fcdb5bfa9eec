package sdktest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/tollgate/tollgate/sdktest/internal/harness"
)

// TestS3CallbackWritesJSONLinesObjects: the s3 logging callback of a real
// gateway writes to an S3-compatible server (gofakes3, in this process):
// signed, path-style PutObjects under s3_path/<date>/, each a batch of
// LiteLLM standard logging payloads one per line. s3_batch_size 2 and
// s3_flush_interval 1: three requests make a full object at once and one
// more a second later.
func TestS3CallbackWritesJSONLinesObjects(t *testing.T) {
	backend := s3mem.New()
	if err := backend.CreateBucket("tg-logs"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var puts []string
	fake := gofakes3.New(backend).Server()
	s3 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut {
			mu.Lock()
			puts = append(puts, r.URL.Path+" "+r.Header.Get("Authorization"))
			mu.Unlock()
		}
		fake.ServeHTTP(w, r)
	}))
	defer s3.Close()

	dir := t.TempDir()
	bin, err := harness.Binary(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("TG_SDKTEST_S3_SECRET", "s3-secret") // the gateway inherits it
	g, err := harness.Start(bin, dir, func(up string) string {
		return fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0.000001, output_cost_per_token: 0.00001}
general_settings:
  master_key: sk-s3-master
litellm_settings:
  callbacks: ["s3"]
  s3_callback_params:
    s3_bucket_name: tg-logs
    s3_region_name: eu-west-1
    s3_endpoint_url: %s
    s3_aws_access_key_id: AKIDTEST
    s3_aws_secret_access_key: os.environ/TG_SDKTEST_S3_SECRET
    s3_path: tollgate/logs
    s3_batch_size: 2
    s3_flush_interval: 1
`, up, s3.URL)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Stop()

	for i := 0; i < 3; i++ {
		req, _ := http.NewRequest("POST", g.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}`))
		req.Header.Set("Authorization", "Bearer sk-s3-master")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: status %d", i, resp.StatusCode)
		}
	}

	type object struct {
		key   string
		lines []map[string]any
	}
	read := func() []object {
		l, err := backend.ListBucket("tg-logs", &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
		if err != nil {
			t.Fatal(err)
		}
		var out []object
		for _, c := range l.Contents {
			obj, err := backend.GetObject("tg-logs", c.Key, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(obj.Contents)
			obj.Contents.Close()
			o := object{key: c.Key}
			for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
				var p map[string]any
				if err := json.Unmarshal([]byte(line), &p); err != nil {
					t.Fatalf("object %s: line %q is not JSON", c.Key, line)
				}
				o.lines = append(o.lines, p)
			}
			out = append(out, o)
		}
		return out
	}
	var objects []object
	deadline := time.Now().Add(60 * time.Second)
	for {
		objects = read()
		n := 0
		for _, o := range objects {
			n += len(o.lines)
		}
		if n >= 3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s the bucket holds %d payloads, want 3\ngateway log:\n%s", n, g.Logs())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(objects) != 2 || len(objects[0].lines)+len(objects[1].lines) != 3 {
		t.Fatalf("%d objects, want a batch of two and one of one", len(objects))
	}
	ids := map[string]bool{}
	for _, o := range objects {
		if !strings.HasPrefix(o.key, "tollgate/logs/"+time.Now().UTC().Format("2006")) || !strings.HasSuffix(o.key, ".jsonl") {
			t.Errorf("object key %q, want tollgate/logs/<date>/<time>-<random>.jsonl", o.key)
		}
		for _, p := range o.lines {
			md, _ := p["metadata"].(map[string]any)
			if p["call_type"] != "acompletion" || p["model_group"] != "gpt-4" || p["status"] != "success" || md["user_api_key_hash"] == nil {
				t.Errorf("line is not the request's payload: %v", p)
			}
			ids[fmt.Sprint(p["id"])] = true
		}
	}
	if len(ids) != 3 {
		t.Errorf("%d distinct payload ids, want 3", len(ids))
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range puts {
		if !strings.HasPrefix(p, "/tg-logs/tollgate/logs/") || !strings.Contains(p, "AWS4-HMAC-SHA256 Credential=AKIDTEST/") || !strings.Contains(p, "/eu-west-1/s3/aws4_request") {
			t.Errorf("PutObject not path-style or not signed: %s", p)
		}
	}
}
