package ledger

import (
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestConcurrentReservationsNeverOverspend: 200 goroutines each try to spend
// the worst case on a key whose budget covers exactly 50 of them, and on a
// team and the global account too. Exactly 50 get through and spend equals
// the budget; nothing is left reserved.
func TestConcurrentReservationsNeverOverspend(t *testing.T) {
	cost := USD(0.0003)
	key := NewAccount(store.KindKey, "k", 0, 50*cost)
	team := NewAccount(store.KindTeam, "t", 0, Unlimited)
	global := NewAccount(store.KindGlobal, "global", 0, USD(1000))
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r, err := Reserve([]*Account{global, team, key}, cost)
			if err != nil {
				var ex *ExceededError
				if !errors.As(err, &ex) || ex.Kind != store.KindKey {
					t.Errorf("unexpected refusal %v", err)
				}
				refused.Add(1)
				return
			}
			ok.Add(1)
			r.Settle(cost)
		}()
	}
	close(start)
	wg.Wait()
	if ok.Load() != 50 || refused.Load() != 150 {
		t.Fatalf("admitted %d, refused %d; want 50 and 150", ok.Load(), refused.Load())
	}
	if key.Spent() != key.Budget() || key.Reserved() != 0 || team.Reserved() != 0 || global.Reserved() != 0 {
		t.Fatalf("key spent %d of %d, reserved key=%d team=%d global=%d", key.Spent(), key.Budget(), key.Reserved(), team.Reserved(), global.Reserved())
	}
	if team.Spent() != 50*cost || global.Spent() != 50*cost {
		t.Fatalf("team %d global %d, want %d", team.Spent(), global.Spent(), 50*cost)
	}
}

func TestRefusalRollsBackEarlierAccounts(t *testing.T) {
	user := NewAccount(store.KindUser, "u", 0, USD(10))
	key := NewAccount(store.KindKey, "k", USD(0.9), USD(1))
	_, err := Reserve([]*Account{user, key}, USD(0.2))
	var ex *ExceededError
	if !errors.As(err, &ex) || ex.Kind != store.KindKey || ex.ID != "k" {
		t.Fatalf("err = %v", err)
	}
	if user.Reserved() != 0 {
		t.Fatalf("user keeps %d reserved after the key refused", user.Reserved())
	}
}

func TestSettleReleaseAndSoftBudget(t *testing.T) {
	a := NewAccount(store.KindKey, "k", 0, USD(1))
	a.SetSoftBudget(USD(0.5))
	r, err := Reserve([]*Account{a}, USD(0.4))
	if err != nil {
		t.Fatal(err)
	}
	if crossed := r.Settle(USD(0.3)); len(crossed) != 0 {
		t.Fatal("soft budget reported before it was crossed")
	}
	r.Settle(USD(5)) // a second settle is a no-op
	if a.Spent() != USD(0.3) || a.Reserved() != 0 {
		t.Fatalf("spent %v reserved %v", a.Spent(), a.Reserved())
	}
	r2, _ := Reserve([]*Account{a}, USD(0.4))
	if crossed := r2.Settle(USD(0.3)); len(crossed) != 1 {
		t.Fatal("soft budget crossing not reported")
	}
	r3, _ := Reserve([]*Account{a}, USD(0.1))
	if crossed := r3.Settle(USD(0.1)); len(crossed) != 0 {
		t.Fatal("soft budget crossing reported twice")
	}
	r4, _ := Reserve([]*Account{a}, USD(0.2))
	r4.Release()
	r4.Release()
	if a.Reserved() != 0 || a.Spent() != USD(0.7) {
		t.Fatalf("after release: spent %v reserved %v", a.Spent(), a.Reserved())
	}
}

func TestExceededMessageNamesTheNumbers(t *testing.T) {
	a := NewAccount(store.KindTeam, "core-infra", USD(7.2e-05), USD(2e-07))
	a.SetResetAt(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	_, err := Reserve([]*Account{a}, USD(1e-6))
	want := "Budget has been exceeded! Team=core-infra Current cost: 7.2e-05, Max budget: 2e-07; Budget has been exceeded for team core-infra: spend $7.2e-05 (+$0 reserved by requests in flight), max budget $2e-07; this request may cost up to $1e-06; budget resets at 2026-12-01T00:00:00Z"
	if err == nil || err.Error() != want {
		t.Fatalf("got  %v\nwant %s", err, want)
	}
}

// TestExceededMessageInLiteLLMWords: each kind of budget refuses with the
// phrase LiteLLM's proxy uses for it, numbers printed as Python prints them.
func TestExceededMessageInLiteLLMWords(t *testing.T) {
	tests := []struct {
		kind store.Kind
		id   string
		want string
	}{
		{store.KindKey, "0123abcd", "ExceededTokenBudget: Current spend for token: 7.2e-05; Max Budget for Token: 2e-07; "},
		{store.KindUser, "alice", "ExceededBudget: User=alice over budget. Spend=7.2e-05, Budget=2e-07; "},
		{store.KindEndUser, "ishaan3", "ExceededBudget: End User=ishaan3 over budget. Spend=7.2e-05, Budget=2e-07; "},
		{store.KindTeam, "core-infra", "Budget has been exceeded! Team=core-infra Current cost: 7.2e-05, Max budget: 2e-07; "},
		{store.KindTeamMember, "core-infra/alice", "Budget has been exceeded! User=alice in Team=core-infra Current cost: 7.2e-05, Max budget: 2e-07; "},
		{store.KindGlobal, "global", "Budget has been exceeded! Current cost: 7.2e-05, Max budget: 2e-07; "},
	}
	for _, tt := range tests {
		t.Run(string(tt.kind), func(t *testing.T) {
			_, err := Reserve([]*Account{NewAccount(tt.kind, tt.id, USD(7.2e-05), USD(2e-07))}, USD(1e-6))
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Fatalf("got  %v\nwant %s...", err, tt.want)
			}
		})
	}
	_, err := Reserve([]*Account{NewAccount(store.KindUser, "bob", USD(10), USD(10))}, USD(1))
	if err == nil || !strings.HasPrefix(err.Error(), "ExceededBudget: User=bob over budget. Spend=10.0, Budget=10.0; ") {
		t.Fatalf("whole dollars: %v", err)
	}
}

func BenchmarkReserveSettle(b *testing.B) {
	accts := []*Account{
		NewAccount(store.KindGlobal, "g", 0, Unlimited),
		NewAccount(store.KindTeam, "t", 0, USD(1e9)),
		NewAccount(store.KindKey, "k", 0, USD(1e9)),
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r, err := Reserve(accts, 1000)
			if err != nil {
				b.Fatal(err)
			}
			r.Settle(900)
		}
	})
}

// BenchmarkEnqueue is the request path's share of spend logging: queueing
// one row (the writer's batches are BenchmarkSpendLogging's).
func BenchmarkEnqueue(b *testing.B) {
	w := NewWriter(nil, nil)
	now := time.Now()
	l := store.SpendLog{RequestID: "r1", KeyHash: "k", ModelGroup: "gpt-4o", PromptTokens: 12, CompletionTokens: 9,
		Cost: 1e-4, Status: 200, StartedAt: now, EndedAt: now}
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		w.Enqueue(l)
		if n++; n == w.MaxBatch { // the writer takes a full batch away, as Run does
			w.mu.Lock()
			w.dropWritten(n)
			w.mu.Unlock()
			n = 0
		}
	}
}

// TestUSDSaturates: an amount too large for the ledger saturates instead of
// wrapping around to a negative (free) hold, and such a hold is refused by
// any budget.
func TestUSDSaturates(t *testing.T) {
	tests := []struct {
		name string
		in   float64
		want Amount
	}{
		{"cent", 0.01, 10_000_000},
		{"huge", 1e11, MaxAmount},
		{"huge negative", -1e11, -MaxAmount},
		{"infinite", math.Inf(1), MaxAmount},
		{"nan", math.NaN(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := USD(tt.in); got != tt.want {
				t.Fatalf("USD(%v) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
	a := NewAccount(store.KindKey, "k", USD(0.5), USD(1e9))
	if _, err := Reserve([]*Account{a}, USD(1e30)); err == nil {
		t.Fatal("a saturated hold passed a budget")
	}
}
