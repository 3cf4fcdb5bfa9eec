package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// holdingUpstream is an OpenAI-shaped fake: every answer is 3 completion
// tokens; a request whose prompt says "hold" is kept until release is
// closed (or its caller goes away), and counted in arrived first, so the
// test knows it is in flight.
type holdingUpstream struct {
	arrived  atomic.Int64 // held requests received
	answered atomic.Int64 // answers written
	release  chan struct{}
	once     sync.Once
}

func (u *holdingUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	if len(body.Messages) > 0 && body.Messages[0].Content == "hold" {
		u.arrived.Add(1)
		select {
		case <-u.release:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprint(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"a b c"},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}`)
	u.answered.Add(1)
}

func (u *holdingUpstream) open() { u.once.Do(func() { close(u.release) }) }

// TestKill9OnRedisReturnsHoldsAndSpendsOnce SIGKILLs a real replica on
// PostgreSQL + Redis while requests on a budgeted key are in flight on it
// (held on Redis: per-request leases with budget_allotments false, an
// allotment with it on), and checks through a second real replica what
// docs/spend-and-limits.md promises for a crash:
//
//  1. the dead replica's holds (leases, allotments) come back: Redis's
//     held for the key returns to 0 once they expire (--redis-lease-ttl,
//     short here) and a hold of the survivor sweeps them;
//  2. nothing is counted twice (one row per call id, the key's spend is
//     its rows' sum, Redis's spent equals the store's but for the crash
//     window), and the budget is passed by at most the crash window: the
//     answers the dead replica gave and had not written (each answered
//     less than crashWindow before the kill);
//  3. the survivor keeps serving the key (all the room the dead replica
//     held comes back to it) and refuses it once the budget is spent.
func TestKill9OnRedisReturnsHoldsAndSpendsOnce(t *testing.T) {
	pg, rd := os.Getenv("TOLLGATE_TEST_POSTGRES_URL"), os.Getenv("TOLLGATE_TEST_REDIS_URL")
	if pg == "" || rd == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL and TOLLGATE_TEST_REDIS_URL are needed to SIGKILL a replica on PostgreSQL + Redis")
	}
	for _, allot := range []bool{false, true} {
		t.Run(fmt.Sprintf("budget_allotments %v", allot), func(t *testing.T) { kill9OnRedis(t, pg, rd, allot) })
	}
}

func kill9OnRedis(t *testing.T, pg, rd string, allot bool) {
	ctx := context.Background()
	var b [6]byte
	_, _ = rand.Read(b[:])
	suffix := hex.EncodeToString(b[:])
	pgURL := storetest.PostgresSchema(t, pg)
	ropts, err := redis.ParseURL(rd)
	if err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(ropts)
	defer rc.Close()

	up := &holdingUpstream{release: make(chan struct{})}
	fake := httptest.NewServer(up)
	defer fake.Close()
	defer up.open()

	const (
		price  = 0.0003 // 3 completion tokens at 0.0001; a hold of max_tokens 3 is exactly this
		budget = 60     // requests: enough that both replicas hold allotments
		plain  = 4      // answered by the replica that dies, and written
		held   = 4      // in flight on it when it dies
		late   = 2      // answered by it just before it dies: the crash window
	)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`model_list:
  - model_name: gpt-4
    litellm_params: {model: openai/gpt-4o, api_base: %q, input_cost_per_token: 0, output_cost_per_token: 0.0001}
  - model_name: broken
    litellm_params: {model: openai/gpt-4o, api_base: "http://127.0.0.1:1", input_cost_per_token: 0, output_cost_per_token: 0.0001}
general_settings:
  master_key: sk-1234
  database_url: %q
  redis_url: %q
  budget_allotments: %v
`, fake.URL, pgURL, rd, allot)), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	// The leases a dead replica leaves on Redis last 2 s here, not 15 min.
	serve := func() (string, *syncBuilder, func() error, func() error) {
		port := freePort(t)
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		cmd, stderr := start(t, dir, base+"/health/readiness", bin, "serve", "--config", cfg, "--port", fmt.Sprint(port), "--redis-lease-ttl", "2s")
		return base, stderr, func() error { return cmd.Process.Signal(syscall.SIGKILL) }, cmd.Wait
	}
	A, stderrA, killA, waitA := serve() // migrates first
	B, stderrB, _, _ := serve()
	key := "sk-crashredis-" + suffix
	hash := config.HashKey(key)
	if code, body := call(A+"/key/generate", "sk-1234", fmt.Sprintf(`{"key": %q, "max_budget": %v}`, key, budget*price)); code != 200 {
		t.Fatal(code, body)
	}
	st, err := sqlstore.OpenPostgres(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	stored := func() int {
		_, n, err := st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: hash, Status: "success"})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	budgetHash := "{tg}:bud:key:" + hash
	books := func() (spent, heldNow ledger.Amount) {
		v, err := rc.HMGet(ctx, budgetHash, "spent", "held").Result()
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		s, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
		h, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
		return ledger.Amount(s), ledger.Amount(h)
	}

	// leases are the hash's fields that hold an amount: "<amount>:<expiry ms>".
	leases := func() map[string]ledger.Amount {
		all, err := rc.HGetAll(ctx, budgetHash).Result()
		if err != nil {
			t.Fatalf("redis: %v", err)
		}
		m := map[string]ledger.Amount{}
		for f, v := range all {
			a, x, ok := strings.Cut(v, ":")
			n, err1 := strconv.ParseInt(a, 10, 64)
			_, err2 := strconv.ParseInt(x, 10, 64)
			if ok && err1 == nil && err2 == nil && n != 0 {
				m[f] = ledger.Amount(n)
			}
		}
		return m
	}

	// A answers `plain` requests (written to the store before going on),
	// then takes `held` more that the upstream keeps: they hold their
	// amount on Redis (leases, or A's allotment); then answers `late` more,
	// which the crash may lose.
	type answer struct {
		id string
		at time.Time
	}
	var answeredA []answer
	chat := func(base, content string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", base+"/v1/chat/completions",
			strings.NewReader(`{"model":"gpt-4","max_tokens":3,"messages":[{"role":"user","content":"`+content+`"}]}`))
		req.Header.Set("Authorization", "Bearer "+key)
		return http.DefaultClient.Do(req)
	}
	answerA := func() {
		resp, err := chat(A, "hi")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("replica A: %d", resp.StatusCode)
		}
		answeredA = append(answeredA, answer{resp.Header.Get("x-tollgate-call-id"), time.Now()})
	}
	for range plain {
		answerA()
	}
	if !eventually(time.Minute, func() bool { return stored() == plain }) {
		t.Fatalf("the store has %d rows of replica A's %d answers after a minute", stored(), plain)
	}
	var inflight sync.WaitGroup
	var heldServed atomic.Int64
	for range held {
		inflight.Add(1)
		go func() {
			defer inflight.Done()
			if resp, err := chat(A, "hold"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == 200 {
					heldServed.Add(1)
				}
			}
		}()
	}
	if !eventually(time.Minute, func() bool { return up.arrived.Load() == held }) {
		t.Fatalf("the upstream received %d of the %d held requests in a minute\n%s", up.arrived.Load(), held, stderrA)
	}
	for range late {
		answerA()
	}
	_, heldBefore := books()
	if !eventually(time.Minute, func() bool { _, heldBefore = books(); return heldBefore > 0 }) {
		t.Fatalf("nothing held on Redis for %d requests in flight", held)
	}
	if !allot && heldBefore < ledger.USD(held*price) {
		t.Fatalf("Redis holds %v for %d requests in flight of %v each", heldBefore.Dollars(), held, price)
	}
	// A's leases (B has not touched the key): with allotments, A's
	// allotment among them (its flush, every 100 ms, keeps it while the
	// held requests are decided against it).
	deadLeases := map[string]bool{}
	hasAllotment := func() bool {
		deadLeases = map[string]bool{}
		found := false
		for f := range leases() {
			deadLeases[f] = true
			found = found || strings.HasPrefix(f, "al.")
		}
		return found
	}
	if allot && !eventually(time.Minute, hasAllotment) {
		t.Fatalf("replica A holds no allotment of the key on Redis in a minute (leases %v)", deadLeases)
	}
	if !allot && (hasAllotment() || len(deadLeases) != held) {
		t.Fatalf("the key's Redis hash has leases %v for %d requests in flight without allotments", deadLeases, held)
	}
	killed := time.Now()
	if err := killA(); err != nil {
		t.Fatal(err)
	}
	waitA()
	up.open()
	inflight.Wait()
	if heldServed.Load() != 0 {
		t.Fatalf("%d held requests were answered by a killed replica", heldServed.Load())
	}
	t.Logf("killed A with %v held on Redis for the key", heldBefore.Dollars())

	// 1. The dead replica's holds come back: its leases are swept once
	// expired, and held counts only the leases still there. A probe on B
	// (its deployment is unreachable: it holds, fails and costs nothing) is
	// the later hold (or, with allotments, B's flush of the account) that
	// sweeps them. B's own allotment may hold room meanwhile: held must
	// reach 0 once B too is idle (below).
	probe := `{"model":"broken","max_tokens":3,"messages":[{"role":"user","content":"probe"}]}`
	var left []string
	var heldAfter, inLeases ledger.Amount
	if !eventually(2*time.Minute, func() bool {
		all := leases()
		left, inLeases = nil, 0
		for f, a := range all {
			// A dead allotment's amount stays held as the pending reseed
			// 'rq' until B reads the store's spend (from its heartbeat):
			// waited for too, or B is refused early meanwhile.
			if deadLeases[f] || f == "rq" {
				left = append(left, f)
			}
			inLeases += a
		}
		_, heldAfter = books()
		if len(left) == 0 && heldAfter == inLeases {
			return true
		}
		call(B+"/v1/chat/completions", key, probe)
		return false
	}) {
		t.Fatalf("two minutes after the replica holding them was killed (its leases last 2 s), Redis still has %d of its %d leases on the key (%v); held %v, its leases %v\n%s",
			len(left), len(deadLeases), left, heldAfter.Dollars(), inLeases.Dollars(), stderrB)
	}
	t.Logf("the dead replica's %d leases swept %v after the kill", len(deadLeases), time.Since(killed).Round(time.Millisecond))

	// 3. B serves the key until its budget is spent, then refuses it.
	servedB, refused := 0, false
	for !refused && servedB <= budget {
		code, body := call(B+"/v1/chat/completions", key, chat3)
		if refused = code == 400 && strings.Contains(body, "budget_exceeded"); refused {
			break
		}
		if code != 200 {
			t.Fatalf("replica B, the key's request %d after the crash: %d %s", servedB+1, code, body)
		}
		servedB++
	}

	if !refused {
		t.Fatalf("replica B served %d requests after the crash on a budget for %d and did not refuse the key", servedB, budget)
	}

	// 2. The store: one row per call id, the key's spend their sum.
	fromA := map[string]bool{}
	for _, a := range answeredA {
		fromA[a.id] = true
	}
	var rows []store.SpendLog
	var spend float64
	if !eventually(time.Minute, func() bool { // B's writer flushes every 100 ms
		rows, _, err = st.ListSpendLogs(ctx, store.SpendFilter{KeyHash: hash, Status: "success", Page: store.Page{Size: 1000}})
		if err != nil {
			t.Fatal(err)
		}
		k, err := st.GetKey(ctx, hash)
		if err != nil {
			t.Fatal(err)
		}
		spend = k.Spend
		// B's rows are those of no answer of A's: A's own (some of which
		// the crash may have lost) must not stand in for B's not yet written.
		ofB := 0
		for _, l := range rows {
			if !fromA[l.RequestID] {
				ofB++
			}
		}
		return ofB >= servedB
	}) {
		t.Fatalf("the store has %d rows (A's included) for B's %d answers after a minute", len(rows), servedB)
	}
	ids := map[string]bool{}
	var sum float64
	for _, l := range rows {
		if ids[l.RequestID] {
			t.Errorf("call %s has two spend rows", l.RequestID)
		}
		ids[l.RequestID] = true
		sum += l.Cost
	}
	if d := spend - sum; d > 1e-9 || d < -1e-9 {
		t.Errorf("the key's spend is %v, its rows sum to %v", spend, sum)
	}
	var window []time.Duration // A's answers the crash lost
	for _, a := range answeredA {
		if !ids[a.id] {
			window = append(window, killed.Sub(a.at))
		}
	}
	for _, age := range window {
		if age > crashWindow {
			t.Errorf("an answer given %v before SIGKILL was lost; the documented window is %v", age, crashWindow)
		}
	}
	answered := len(answeredA) + servedB
	t.Logf("A answered %d (%d lost in the crash window), B served %d after the crash; %d rows, spend %v; upstream answered %d",
		len(answeredA), len(window), servedB, len(rows), spend, up.answered.Load())
	if len(rows) != answered-len(window) {
		t.Errorf("%d rows for %d answers of which the crash lost %d", len(rows), answered, len(window))
	}
	// Within the budget but for the crash window, and all of it served:
	// what the dead replica held came back to the survivor.
	if answered < budget || answered > budget+len(window) {
		t.Errorf("%d requests answered on a budget for %d, %d lost in the crash window: want %d to %d",
			answered, budget, len(window), budget, budget+len(window))
	}
	// Redis counts each answer once: the store's spend, plus what the crash
	// window lost from the store and not from Redis.
	var spent ledger.Amount
	lo, hi := ledger.USD(spend), ledger.USD(spend+float64(len(window))*price)
	// Nothing held once B is idle too (it returns an idle allotment).
	if !eventually(time.Minute, func() bool { spent, heldAfter = books(); return spent >= lo && spent <= hi && heldAfter == 0 }) {
		t.Errorf("Redis has spent %v, held %v for the key with no request in flight; the store %v, and the crash lost %d answers of %v",
			spent.Dollars(), heldAfter.Dollars(), spend, len(window), price)
	}
}
