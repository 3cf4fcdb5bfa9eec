package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// crashWindow is the documented bound on what a SIGKILL can lose: rows
// queued since the last flush (at most 100 ms old) plus the batch being
// committed. The assertion allows for a slow commit on a loaded CI machine;
// the log line reports what was actually lost.
const crashWindow = time.Second

// TestKill9LosesOnlyTheCrashWindow runs the real binary under load, kills
// it with SIGKILL, and checks that every request answered more than
// crashWindow before the kill has its spend-log row, and that spend columns
// and logs agree (they are written in one transaction). It then restarts the
// gateway on the same database.
func TestKill9LosesOnlyTheCrashWindow(t *testing.T) {
	bin := buildBinary(t)
	mock := mockupstream.New(mockupstream.Options{Delay: 2 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: %q, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
`, up.URL)), 0o600)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port))

	req, _ := http.NewRequest("POST", base+"/key/generate", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var gen struct{ Key string }
	json.NewDecoder(resp.Body).Decode(&gen)
	resp.Body.Close()

	type answered struct {
		id string
		at time.Time
	}
	var mu sync.Mutex
	var done []answered
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "POST", base+"/v1/chat/completions",
					strings.NewReader(`{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`))
				req.Header.Set("Authorization", "Bearer "+gen.Key)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					done = append(done, answered{resp.Header.Get("x-tollgate-call-id"), time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	stopLoad()
	wg.Wait()

	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "tollgate.db"))
	if err != nil {
		t.Fatalf("database after SIGKILL: %v\n%s", err, stderr)
	}
	logs, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{Page: store.Page{Size: 1000}})
	for page := 2; err == nil && len(logs) < total; page++ {
		var more []store.SpendLog
		more, _, err = st.ListSpendLogs(context.Background(), store.SpendFilter{Page: store.Page{Number: page, Size: 1000}})
		logs = append(logs, more...)
	}
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	var sum float64
	for _, l := range logs {
		stored[l.RequestID] = true
		sum += l.Cost
	}
	var lostAges []time.Duration
	for _, a := range done {
		if !stored[a.id] {
			lostAges = append(lostAges, killed.Sub(a.at))
		}
	}
	sort.Slice(lostAges, func(i, j int) bool { return lostAges[i] > lostAges[j] })
	served := mock.Stats().Requests
	t.Logf("upstream served %d, client saw %d answered, stored %d; lost %d answered rows, oldest answered %v before the kill",
		served, len(done), total, len(lostAges), firstOr(lostAges))
	if len(done) < 100 {
		t.Fatalf("too little load to measure: %d requests", len(done))
	}
	if len(lostAges) > 0 && lostAges[0] > crashWindow {
		t.Errorf("a request answered %v before SIGKILL was lost; the documented window is %v", lostAges[0], crashWindow)
	}
	k, err := st.GetKey(context.Background(), config.HashKey(gen.Key))
	if err != nil {
		t.Fatal(err)
	}
	if diff := k.Spend - sum; diff > 1e-9 || diff < -1e-9 {
		t.Errorf("key spend %v but its spend logs sum to %v: a batch was half written", k.Spend, sum)
	}
	st.Close()

	// The gateway comes back on the same database with the stored spend.
	start(t, dir, base+"/health/readiness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port))
	req, _ = http.NewRequest("GET", base+"/key/info?key="+gen.Key, nil)
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var info struct {
		Info struct{ Spend float64 } `json:"info"`
	}
	json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if d := info.Info.Spend - sum; d > 1e-9 || d < -1e-9 {
		t.Errorf("after restart /key/info spend = %v, want %v", info.Info.Spend, sum)
	}
}

func firstOr(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[0]
}

// TestSIGTERMBooksStreamsCutByShutdownTimeout: SIGTERM with a
// --shutdown-timeout shorter than a stream in flight cuts the stream, and
// what it produced is still in the store when the process has exited: the
// spend-log row with its tokens and the key's spend.
func TestSIGTERMBooksStreamsCutByShutdownTimeout(t *testing.T) {
	bin := buildBinary(t)
	mock := mockupstream.New(mockupstream.Options{Chunks: 50, ChunkDelay: 100 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o-mini, api_base: %q, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
`, up.URL)), 0o600)
	port := freePort(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	cmd, stderr := start(t, dir, base+"/health/liveliness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port), "--shutdown-timeout", "200ms")

	req, _ := http.NewRequest("POST", base+"/key/generate", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer sk-1234")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var gen struct{ Key string }
	json.NewDecoder(resp.Body).Decode(&gen)
	resp.Body.Close()

	words := strings.Repeat("word ", 60)
	req, _ = http.NewRequest("POST", base+"/v1/chat/completions",
		strings.NewReader(`{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"`+words+`"}]}`))
	req.Header.Set("Authorization", "Bearer "+gen.Key)
	stream, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Body.Close()
	r := bufio.NewReader(stream.Body)
	for seen := 0; seen < 3; {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before the shutdown: %v", err)
		}
		if strings.HasPrefix(line, "data: {") {
			seen++
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, r) // the shutdown timeout cuts the stream
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done: // non-zero: the timeout cut a request
	case <-time.After(30 * time.Second):
		t.Fatalf("serve did not exit after SIGTERM\n%s", stderr)
	}

	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "tollgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	logs, total, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: config.HashKey(gen.Key)})
	if err != nil {
		t.Fatal(err)
	}
	if total != 1 || logs[0].CompletionTokens < 2 || logs[0].Cost <= 0 {
		t.Fatalf("stream cut by the shutdown booked as %+v (total %d)\n%s", logs, total, stderr)
	}
	k, err := st.GetKey(context.Background(), config.HashKey(gen.Key))
	if err != nil {
		t.Fatal(err)
	}
	if d := k.Spend - logs[0].Cost; d > 1e-12 || d < -1e-12 {
		t.Fatalf("key spend %v, spend row %v", k.Spend, logs[0].Cost)
	}
}
