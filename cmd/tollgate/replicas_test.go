package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/mockupstream"
	"github.com/tollgate/tollgate/internal/netsim"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// replicaSet is three gateway processes on one PostgreSQL schema and Redis.
type replicaSet struct {
	t       *testing.T
	bin     string
	dir     string
	cfg     string
	pgURL   string
	ports   []int
	cmds    []*exec.Cmd
	stderrs []*syncBuilder
}

func (rs *replicaSet) url(i int) string { return fmt.Sprintf("http://127.0.0.1:%d", rs.ports[i]) }

func (rs *replicaSet) start(i int) {
	cmd, stderr := start(rs.t, rs.dir, rs.url(i)+"/health/readiness", rs.bin, "serve", "--config", rs.cfg, "--port", fmt.Sprint(rs.ports[i]))
	rs.cmds[i], rs.stderrs[i] = cmd, stderr
}

func call(url, key, body string) (int, string) {
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(limit time.Duration, f func() bool) bool {
	deadline := time.Now().Add(limit)
	for {
		if f() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const chat3 = `{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"one two three four"}]}`

// TestThreeReplicas starts three gateway processes sharing the machine's
// PostgreSQL (a fresh schema) and Redis, and checks what a client and the
// ledger see: keys, blocks and budgets propagate within a second, a shared
// budget and a shared rpm hold exactly, SIGKILL loses at most the crash
// window and SIGTERM nothing.
func TestThreeReplicas(t *testing.T) {
	pg, rd := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if pg == "" || rd == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL are needed for the three-replica test")
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	direct := storetest.PostgresSchema(t, pg)
	u, err := url.Parse(direct)
	if err != nil {
		t.Fatal(err)
	}
	// The replicas reach PostgreSQL through a proxy the test can cut.
	proxy, err := netsim.NewProxy(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Cut()
	u.Host = proxy.Addr()

	mock := mockupstream.New(mockupstream.Options{Delay: 3 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	rs := &replicaSet{t: t, bin: buildBinary(t), dir: t.TempDir(), pgURL: u.String(), cmds: make([]*exec.Cmd, 3), stderrs: make([]*syncBuilder, 3)}
	rs.cfg = filepath.Join(rs.dir, "config.yaml")
	os.WriteFile(rs.cfg, []byte(fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
  database_url: %q
  redis_url: %q
`, up.URL, rs.pgURL, rd)), 0o600)
	for range 3 {
		rs.ports = append(rs.ports, freePort(t))
	}
	rs.start(0) // migrates first
	rs.start(1)
	rs.start(2)
	A, B, C := rs.url(0), rs.url(1), rs.url(2)
	suffix := hex.EncodeToString(b[:])

	// 1. A key created on A works on B at once; blocked on B, refused on C
	// soon after (each replica resyncs every second; the test waits for it, up to 30 s on a busy machine); a budget raised on C applies on A.
	key := "sk-replicas-" + suffix
	if code, body := call(A+"/key/generate", "sk-1234", `{"key": "`+key+`", "max_budget": 0.0003}`); code != 200 {
		t.Fatal(code, body)
	}
	if code, body := call(B+"/v1/chat/completions", key, chat3); code != 200 {
		t.Fatalf("a key created on A, at once on B: %d %s", code, body)
	}
	if !eventually(30*time.Second, func() bool { c, _ := call(A+"/v1/chat/completions", key, chat3); return c == 400 }) {
		t.Fatal("the key's budget (one request) was not spent on A after B's request")
	}
	call(C+"/key/update", "sk-1234", `{"key": "`+key+`", "max_budget": 1}`)
	if !eventually(30*time.Second, func() bool { c, _ := call(A+"/v1/chat/completions", key, chat3); return c == 200 }) {
		t.Fatal("a budget raised on C did not apply on A")
	}
	call(B+"/key/block", "sk-1234", `{"key": "`+key+`"}`)
	if !eventually(30*time.Second, func() bool { c, _ := call(C+"/v1/chat/completions", key, chat3); return c == 401 }) {
		t.Fatal("a key blocked on B was still served by C 30 s later")
	}

	// 2. A budget for 100 requests hammered on all three.
	budgetKey := "sk-budget100-" + suffix
	call(A+"/key/generate", "sk-1234", `{"key": "`+budgetKey+`", "max_budget": 0.03}`)
	served0 := mock.Stats().Requests
	var ok atomic.Int64
	hammer := func(key string, n int) {
		var wg sync.WaitGroup
		for i := range 24 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range n {
					if c, _ := call(rs.url(i%3)+"/v1/chat/completions", key, chat3); c == 200 {
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	hammer(budgetKey, 8)
	if ok.Load() > 100 || ok.Load() < 95 {
		t.Fatalf("three replicas let %d requests through a budget for 100", ok.Load())
	}
	served := mock.Stats().Requests - served0

	// 3. A 30-rpm key shared across the replicas admits exactly 30.
	rpmKey := "sk-rpm30-" + suffix
	call(A+"/key/generate", "sk-1234", `{"key": "`+rpmKey+`", "rpm_limit": 30}`)
	ok.Store(0)
	hammer(rpmKey, 3) // 72 requests within the minute
	if ok.Load() != 30 {
		t.Fatalf("a 30-rpm key admitted %d requests across three replicas", ok.Load())
	}

	// 4. PostgreSQL goes away: known keys keep working on every replica,
	// unknown ones get 503, and the spend of the outage lands afterwards.
	outageKey := "sk-outage-" + suffix
	call(A+"/key/generate", "sk-1234", `{"key": "`+outageKey+`"}`)
	outageServed := 0
	for _, r := range []string{A, B, C} { // every replica has seen the key
		if c, body := call(r+"/v1/chat/completions", outageKey, chat3); c != 200 {
			t.Fatalf("the outage key before the outage: %d %s", c, body)
		}
		outageServed++
	}
	proxy.Cut()
	if !eventually(60*time.Second, func() bool {
		c, _ := call(B+"/v1/chat/completions", "sk-unknown-during-outage", chat3)
		return c == 503
	}) {
		t.Fatal("an unknown key during the outage did not get 503")
	}
	for i := range 6 {
		if c, body := call(rs.url(i%3)+"/v1/chat/completions", outageKey, chat3); c != 200 {
			t.Fatalf("a known key during the outage on replica %d: %d %s", i%3, c, body)
		}
		outageServed++
	}
	if err := proxy.Restore(); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{A, B, C} {
		if !eventually(60*time.Second, func() bool {
			c, _ := call(r+"/v1/chat/completions", "sk-unknown-during-outage", chat3)
			return c == 401
		}) {
			t.Fatalf("unknown keys still get 503 on %s after the database came back", r)
		}
	}
	// The outage's spend lands once the database is back (before step 5
	// kills a replica, whose unwritten rows would then be lost by design).
	watch, err := sqlstore.OpenPostgres(context.Background(), direct)
	if err != nil {
		t.Fatal(err)
	}
	outageRows := func() int {
		_, n, _ := watch.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: config.HashKey(outageKey)})
		return n
	}
	if !eventually(60*time.Second, func() bool { return outageRows() == outageServed }) {
		t.Fatalf("%d spend rows for the %d requests around the outage, 15 s after the database came back", outageRows(), outageServed)
	}
	watch.Close()

	// 5. SIGKILL one replica under load and restart it: only requests it
	// answered within the crash window before dying may lack their row.
	loadKey := "sk-load-" + suffix
	if c, body := call(A+"/key/generate", "sk-1234", `{"key": "`+loadKey+`"}`); c != 200 {
		t.Fatalf("load key: %d %s", c, body)
	}
	type answered struct {
		id      string
		replica int
		at      time.Time
	}
	var mu sync.Mutex
	var done []answered
	ctx, stopLoad := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "POST", rs.url(i%3)+"/v1/chat/completions", strings.NewReader(chat3))
				req.Header.Set("Authorization", "Bearer "+loadKey)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					time.Sleep(10 * time.Millisecond) // the killed replica refuses connections
					continue
				}
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					done = append(done, answered{resp.Header.Get("x-tollgate-call-id"), i % 3, time.Now()})
					mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(700 * time.Millisecond)
	killedAt := time.Now()
	rs.cmds[2].Process.Signal(syscall.SIGKILL)
	rs.cmds[2].Wait()
	time.Sleep(300 * time.Millisecond)
	rs.start(2)
	time.Sleep(300 * time.Millisecond)
	stopLoad()
	wg.Wait()

	// 6. SIGTERM everything: every row but the crash window's is there.
	for i := range 3 {
		rs.cmds[i].Process.Signal(syscall.SIGTERM)
	}
	for i := range 3 {
		if err := rs.cmds[i].Wait(); err != nil {
			t.Fatalf("replica %d exit: %v\n%s", i, err, rs.stderrs[i])
		}
	}
	st, err := sqlstore.OpenPostgres(context.Background(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	k, err := st.GetKey(context.Background(), config.HashKey(budgetKey))
	if err != nil {
		t.Fatal(err)
	}
	if diff := k.Spend - float64(served)*0.0003; diff > 1e-9 || diff < -1e-9 || k.Spend > 0.03+1e-12 {
		t.Fatalf("recorded spend %v for %d served requests (budget 0.03)", k.Spend, served)
	}
	if _, n, _ := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: config.HashKey(outageKey)}); n != outageServed {
		t.Errorf("%d spend rows for the %d requests around the outage", n, outageServed)
	}
	stored := map[string]bool{}
	for page := 1; ; page++ {
		logs, _, err := st.ListSpendLogs(context.Background(), store.SpendFilter{KeyHash: config.HashKey(loadKey), Page: store.Page{Number: page, Size: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range logs {
			stored[l.RequestID] = true
		}
		if len(logs) < 1000 {
			break
		}
	}
	lost := 0
	for _, a := range done {
		if stored[a.id] {
			continue
		}
		lost++
		if a.replica != 2 || killedAt.Sub(a.at) > time.Second || a.at.After(killedAt.Add(50*time.Millisecond)) {
			t.Errorf("request %s answered by replica %d at kill%+v is missing", a.id, a.replica, a.at.Sub(killedAt))
		}
	}
	t.Logf("load: %d answered, %d lost to SIGKILL (all by the killed replica within its crash window)", len(done), lost)
	if len(done) < 100 {
		t.Fatalf("too little load: %d", len(done))
	}
}
