package server

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// logBuf collects the JSON log of every gateway the package's tests start,
// so that TestMain can scan the whole run for key material.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

var (
	testLog    = &logBuf{}
	testLogger = slog.New(slog.NewJSONHandler(testLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
)

// rawKey matches a raw key as Tollgate generates them, or any sk- token
// long enough to be a secret; key names ("sk-...ABCD") do not match.
var rawKey = regexp.MustCompile(`sk-[A-Za-z0-9_-]{12,}`)

// secrets are the raw keys the tests use that rawKey is too loose to know.
var secrets = []string{"sk-1234", "sk-upstream", "sk-alice-abc123def456", "sk-bob-xyz789uvw012"}

// TestMain runs the package's tests, then fails the run if any log line
// holds a raw key, or if the log is not one JSON object per line with a
// request line per inference request.
func TestMain(m *testing.M) {
	spec, err := newSpecRecord()
	if err != nil {
		fmt.Fprintln(os.Stderr, "spec check:", err)
		os.Exit(1)
	}
	http.DefaultClient.Transport = spec
	waitBoundParallel()
	code := m.Run()
	full := flag.Lookup("test.run").Value.String() == "" // a -run subset may log few requests
	if flag.Lookup("test.list").Value.String() != "" {   // -list runs no test: nothing to check
		spec.remove()
		os.Exit(code)
	}
	if code == 0 {
		if err := spec.check(full); err != nil {
			fmt.Fprintln(os.Stderr, "OpenAPI:", err)
			code = 1
		}
	}
	spec.remove()
	if code == 0 {
		if err := scanLog(testLog.buf.Bytes(), full); err != nil {
			fmt.Fprintln(os.Stderr, "log scan:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func scanLog(log []byte, wantRequests bool) error {
	lines := bytes.Split(bytes.TrimSpace(log), []byte("\n"))
	requests := 0
	for i, line := range lines {
		if len(line) == 0 {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal(line, &rec); err != nil {
			return fmt.Errorf("line %d is not JSON: %s", i+1, line)
		}
		if rec["msg"] == "request" {
			requests++
			for _, f := range []string{"call_id", "key_hash", "model_group", "status", "cost", "latency", "overhead"} {
				if _, ok := rec[f]; !ok {
					return fmt.Errorf("request line %d lacks %q: %s", i+1, f, line)
				}
			}
		}
		if h := fullHash.Find(line); h != nil {
			return fmt.Errorf("line %d holds a whole key hash %q (log the 8-digit prefix): %s", i+1, h, line)
		}
		if k := rawKey.Find(line); k != nil {
			return fmt.Errorf("line %d holds key material %q: %s", i+1, k, line)
		}
		for _, s := range secrets {
			if bytes.Contains(line, []byte(s)) {
				return fmt.Errorf("line %d holds the raw key %q: %s", i+1, s, line)
			}
		}
	}
	if wantRequests && requests < 100 {
		return fmt.Errorf("only %d request lines in %d log lines: is the request log missing?", requests, len(lines))
	}
	return nil
}

func TestScanLogCatchesKeys(t *testing.T) {
	ok := `{"msg":"request","call_id":"a","key_hash":"0123abcd","model_group":"m","status":200,"cost":0,"latency":1,"overhead":1}`
	many := strings.Repeat(ok+"\n", 100)
	if err := scanLog([]byte(many), true); err != nil {
		t.Fatalf("a clean log was refused: %v", err)
	}
	for _, bad := range []string{
		`{"msg":"x","err":"invalid key sk-Zx81hJd0aPq2LmNo3rSt"}`,
		`{"msg":"x","key":"sk-1234"}`,
		`not json`,
		`{"msg":"soft budget crossed","id":"03ac674216f3e15c761ee1a5e255f067953623c8b388b4459e13f978d7c846f4"}`,
	} {
		if scanLog([]byte(many+bad+"\n"), false) == nil {
			t.Errorf("scan accepted %s", bad)
		}
	}
	if scanLog([]byte(ok+"\n"), true) == nil {
		t.Error("scan accepted a log with one request line")
	}
}

// waitBound is how many of the package's parallel tests may run at once
// when -parallel is not given. The tests marked t.Parallel here are the
// ones that spend their time waiting (on leases, periods, deadlines, hook
// timeouts), each against servers and state of its own (its own SQLite
// file or PostgreSQL schema, its own Redis prefix, its own loopback ports);
// the default, GOMAXPROCS (2 on the project's machine), would leave most of
// them waiting for a turn although they need little CPU. Tests that measure
// goroutines, memory or scheduling stay serial: Go runs every serial
// top-level test before the parallel ones start.
const waitBound = 8

func waitBoundParallel() {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && runtime.GOMAXPROCS(0) < waitBound {
		_ = flag.Set("test.parallel", strconv.Itoa(waitBound))
	}
}
