package server

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/mockupstream"
)

// TestProbeFusedMultiAccountBooksEachAccount: a gated (fused) request on
// a key with several rate-limit rules (rpm, tpm, parallel) whose user,
// team and end user have budgets too holds and books on every one of the
// four accounts: after the requests, each has spent the served requests'
// cost and holds nothing (a wrong offset in the fused script books one
// account's numbers on another, or leaves a hold behind).
func TestProbeFusedMultiAccountBooksEachAccount(t *testing.T) {
	mock := mockupstream.New(mockupstream.Options{Delay: 2 * time.Millisecond})
	up := httptest.NewServer(mock)
	defer up.Close()
	e := startFused(t, 2, up.URL)
	for _, c := range [][2]string{
		{"/user/new", `{"user_id": "pf-user", "max_budget": 7}`},
		{"/team/new", `{"team_id": "pf-team", "max_budget": 8}`},
		{"/customer/new", `{"user_id": "pf-end", "max_budget": 9}`},
		{"/customer/new", `{"user_id": "pf-tiny", "max_budget": 0.00000001}`},
	} {
		if code, body := send(t, e.urls[0]+c[0], "sk-1234", c[1]); code != 200 {
			t.Fatal(c[0], code, body)
		}
	}
	e.key(t, "sk-probe-fused", `"max_budget": 6, "user_id": "pf-user", "team_id": "pf-team", "rpm_limit": 100000, "tpm_limit": 10000000, "max_parallel_requests": 100`)
	first := mock.Stats().Requests
	// End users reach the other gateway with its next resync (its key is
	// older than them, so its requests do not read them from the store):
	// wait till both refuse pf-tiny (made after pf-end).
	for _, u := range e.urls {
		if _, ok := within(30*time.Second, func() bool {
			c, _ := send(t, u+"/v1/chat/completions", "sk-probe-fused", `{"model":"gpt-4","max_tokens":3,"user":"pf-tiny","messages":[{"role":"user","content":"one two three four"}]}`)
			return c != 200
		}); !ok {
			t.Fatal("a gateway does not know the end users")
		}
	}
	before := mock.Stats().Requests
	var wg sync.WaitGroup
	var mu sync.Mutex
	codes := map[int]int{}
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				code, _ := send(t, e.urls[i%2]+"/v1/chat/completions", "sk-probe-fused", `{"model":"gpt-4","max_tokens":3,"user":"pf-end","messages":[{"role":"user","content":"one two three four"}]}`)
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	served := mock.Stats().Requests - before
	if codes[200] != 30 || served != 30 {
		t.Fatalf("answered %v, %d served", codes, served)
	}
	// The key, user and team paid for the requests of the wait too.
	all := mock.Stats().Requests - first
	for k, n := range map[string]int64{"key:" + sha("sk-probe-fused"): all, "user:pf-user": all, "team:pf-team": all, "end_user:pf-end": served} {
		var spent, held int64
		var err error
		ok := false
		if _, ok = within(30*time.Second, func() bool {
			spent, err = e.rc.HGet(context.Background(), "{"+e.prefix+"}:bud:"+k, "spent").Int64()
			held, _ = e.rc.HGet(context.Background(), "{"+e.prefix+"}:bud:"+k, "held").Int64()
			return err == nil && held == 0 && spent == int64(ledger.USD(0.0003))*n
		}); !ok {
			t.Errorf("%s: spent %d (%v), held %d; want spent %d, held 0", k, spent, err, held, int64(ledger.USD(0.0003))*n)
		}
	}
}
