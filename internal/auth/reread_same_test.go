package auth

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// view is what a request or a management read can tell of k: its JSON,
// every float's sign, every time's zone.
func rrView(k *store.Key) string {
	b, _ := json.Marshal(k)
	s := string(b)
	s += fmt.Sprintf("|spend %x", math.Float64bits(k.Spend))
	for m, v := range k.ModelSpend {
		s += fmt.Sprintf("|ms %s %x", m, math.Float64bits(v))
	}
	if k.MaxBudget != nil {
		s += fmt.Sprintf("|mb %x", math.Float64bits(*k.MaxBudget))
	}
	for _, t := range []*time.Time{&k.CreatedAt, &k.UpdatedAt, k.Expires, k.BudgetResetAt} {
		if t != nil {
			s += "|" + t.Location().String() + t.String()
		}
	}
	return s
}

func rrBase() *store.Key {
	at := time.Date(2026, 12, 1, 10, 0, 0, 123000, time.UTC)
	exp := at.Add(48 * time.Hour)
	reset := at.Add(24 * time.Hour)
	alias := "al"
	f := 5.0
	d := "30d"
	return &store.Key{TokenHash: HashHex("sk-rr"), KeyName: "sk-...rr", KeyAlias: &alias, UserID: "u", TeamID: "t",
		Models: []string{"m"}, Aliases: map[string]string{"a": "b"}, Metadata: map[string]any{"x": 1.0},
		Config: map[string]any{"c": "d"}, Spend: 0, Limits: store.Limits{MaxBudget: &f, BudgetDuration: &d, BudgetResetAt: &reset},
		ModelSpend: map[string]float64{"m": 0}, BudgetID: "b", Expires: &exp, CreatedAt: at, UpdatedAt: at,
		BudgetAccount: "acct"}
}

// TestRereadKeepsOnlyWhatReadsTheSame: a row read again with the same
// updated_at but any field a reader tells apart (a spend of -0, a zone, a
// nil map for an empty one, …) replaces the record (putKey), and the
// load's copy never replaces a resync's that reads otherwise.
func TestRereadKeepsOnlyWhatReadsTheSame(t *testing.T) {
	zone := time.FixedZone("X", 0)
	muts := map[string]func(k *store.Key){
		"spend -0":        func(k *store.Key) { k.Spend = math.Copysign(0, -1) },
		"model spend -0":  func(k *store.Key) { k.ModelSpend["m"] = math.Copysign(0, -1) },
		"model spend nil": func(k *store.Key) { k.ModelSpend = nil },
		"model spend NaN": func(k *store.Key) { k.ModelSpend["m"] = math.NaN() },
		"max budget -0":   func(k *store.Key) { z := math.Copysign(0, -1); k.MaxBudget = &z },
		"spend NaN":       func(k *store.Key) { k.Spend = math.NaN() },
		"created zone":    func(k *store.Key) { k.CreatedAt = k.CreatedAt.In(zone) },
		"updated zone":    func(k *store.Key) { k.UpdatedAt = k.UpdatedAt.In(zone) },
		"expires zone":    func(k *store.Key) { e := k.Expires.In(zone); k.Expires = &e },
		"expires nil":     func(k *store.Key) { k.Expires = nil },
		"reset zone":      func(k *store.Key) { e := k.BudgetResetAt.In(zone); k.BudgetResetAt = &e },
		"reset nil":       func(k *store.Key) { k.BudgetResetAt = nil },
		"alias nil":       func(k *store.Key) { k.KeyAlias = nil },
		"alias empty":     func(k *store.Key) { e := ""; k.KeyAlias = &e },
		"aliases empty":   func(k *store.Key) { k.Aliases = map[string]string{} },
		"models empty":    func(k *store.Key) { k.Models = []string{} },
		"budget account":  func(k *store.Key) { k.BudgetAccount = "" },
		"budget id":       func(k *store.Key) { k.BudgetID = "" },
		"metadata int":    func(k *store.Key) { k.Metadata = map[string]any{"x": json.Number("1")} },
		"name nul":        func(k *store.Key) { k.KeyName = "a\x00b" },
		"blocked by":      func(k *store.Key) { k.BlockedBy = "owner" },
		"created by":      func(k *store.Key) { k.CreatedBy = "me" },
		"cache controls":  func(k *store.Key) { k.AllowedCacheControls = []string{"no-cache"} },
	}
	f := 7.0
	budget := &store.Budget{BudgetID: "b", Limits: store.Limits{TPMLimit: new(int64), MaxBudget: &f}}
	for name, mut := range muts {
		t.Run(name, func(t *testing.T) {
			// putKey: an admin write, then the resync's read of another row.
			s := NewSnapshot(&store.Snapshot{Budgets: []*store.Budget{budget}})
			s.PutKey(rrBase())
			want := rrBase()
			mut(want)
			s.Apply(&store.Snapshot{Keys: []*store.Key{clone2(want)}}, nil, time.Time{})
			exp := s.keyWithBudget(want)
			if got, _ := s.Key(want.TokenHash); got == nil || rrView(got) != rrView(exp) {
				t.Errorf("putKey: read %v\nwant %v", rrView(got), rrView(exp))
			}
			// The load: a resync's copy first, then the load's row stamped
			// alike: what is read is the resync's copy.
			s = NewSnapshot(&store.Snapshot{Budgets: []*store.Budget{budget}})
			s.StartLoading()
			s.Apply(&store.Snapshot{Keys: []*store.Key{rrBase()}}, nil, time.Time{})
			before, _ := s.Key(rrBase().TokenHash)
			s.KeyLoader()([]*store.Key{clone2(want)})
			s.DoneLoading()
			if got, _ := s.Key(rrBase().TokenHash); got == nil || rrView(got) != rrView(before) {
				t.Errorf("load: read %v\nwant %v", rrView(got), rrView(before))
			}
		})
	}
}

func clone2(k *store.Key) *store.Key {
	c := *k
	if k.ModelSpend != nil {
		c.ModelSpend = map[string]float64{}
		for m, v := range k.ModelSpend {
			c.ModelSpend[m] = v
		}
	}
	return &c
}
