package sqlstore

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// orderTx records the statements applySpend runs, with their ids.
type orderTx struct{ got []string }

func (o *orderTx) insertRows(rows []store.SpendLog, inserted map[string]bool) error {
	for _, r := range rows {
		inserted[r.RequestID] = true
	}
	return nil
}

func (o *orderTx) exec(q string, args ...any) error {
	verb := strings.Fields(q)
	var ids []any // the row's identity (a new end user's document and time left out)
	for _, a := range args[:min(len(args), 4)] {
		if s, ok := a.(string); ok && strings.HasPrefix(s, "{") {
			break
		}
		ids = append(ids, a)
	}
	table := verb[2] // INSERT INTO table
	if verb[0] == "UPDATE" {
		table = verb[1]
	}
	o.got = append(o.got, fmt.Sprint(table, " ", ids))
	return nil
}

// execN is exec, every row found (no key was replaced).
func (o *orderTx) execN(q string, args ...any) (int64, error) { return 1, o.exec(q, args...) }

// lookup is recorded (a batch whose keys are all there runs none: the
// table order below would show it) and finds nothing.
func (o *orderTx) lookup(_ string, arg any) (string, bool, error) {
	o.got = append(o.got, fmt.Sprint("key_replacements ", arg))
	return "", false, nil
}

// TestApplySpendLocksInOneOrder: however the batch is ordered, applySpend
// updates keys before their owners (users, teams, organizations, end
// users), then budgets, then rollups, each by id: the order deleteOwner
// locks them in (its keys, their budgets, then the owner), so that a
// writer and a team's deletion, or two replicas' writers, wait for each
// other instead of deadlocking (on PostgreSQL a deadlock aborted one: a
// team deleted while its keys' spend was written answered 500). The
// statements came in Go's random map order before.
func TestApplySpendLocksInOneOrder(t *testing.T) {
	at := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	batch := []store.SpendLog{
		{RequestID: "r1", KeyHash: "kb", UserID: "ub", TeamID: "tb", EndUser: "eb", Cost: 1, StartedAt: at, ModelGroup: "m2",
			Budgets: []store.BudgetRef{{Kind: store.KindTeamMember, ID: "b2"}, {Kind: store.KindOrganization, ID: "ob"}}, RequestTags: []string{"y", "x"}},
		{RequestID: "r2", KeyHash: "ka", UserID: "ua", TeamID: "ta", EndUser: "ea", Cost: 2, StartedAt: at, ModelGroup: "m1",
			Budgets: []store.BudgetRef{{Kind: store.KindTeamMember, ID: "b1"}, {Kind: store.KindOrganization, ID: "oa"}}, RequestTags: []string{"x"}},
	}
	var want []string
	for run := range 20 {
		b := slices.Clone(batch)
		if run%2 == 1 {
			slices.Reverse(b)
		}
		o := &orderTx{}
		// PostgreSQL's first run (restart) and SQLite's alike.
		if err := applySpend(o, b, false, &replacements{restart: run%4 < 2}); err != nil {
			t.Fatal(err)
		}
		if want == nil {
			want = o.got
			continue
		}
		if !slices.Equal(o.got, want) {
			t.Fatalf("run %d updated rows in another order:\n%s\nthan run 0:\n%s", run, strings.Join(o.got, "\n"), strings.Join(want, "\n"))
		}
	}
	var tables []string
	for _, s := range want {
		tables = append(tables, strings.Fields(s)[0])
	}
	if got := strings.Join(slices.Compact(tables), " "); got != "keys users teams organizations end_users budget_spend spend_daily spend_daily_tags" {
		t.Fatalf("tables updated in the order %s", got)
	}
}
