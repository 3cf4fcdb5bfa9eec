package sqlstore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// beforePartial is the last migration before spend_logs_key and
// spend_logs_response_tail became partial (00016).
const beforePartial = 15

// spendEngines opens a store migrated up to version (0: all) on each
// engine the environment has: SQLite always, PostgreSQL with
// TOLLGATE_TEST_POSTGRES_URL (a schema of its own). reopen opens the same
// database again, migrating it fully.
type spendEngine struct {
	name   string
	open   func(t *testing.T, version int64) *sqlstore.DB
	reopen func(t *testing.T) *sqlstore.DB
}

func spendEngines(t *testing.T) []spendEngine {
	path := filepath.Join(t.TempDir(), "tollgate.db")
	sqlite := spendEngine{name: "sqlite",
		open: func(t *testing.T, version int64) *sqlstore.DB {
			s, err := sqlstore.OpenSQLiteAt(context.Background(), path, version)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}}
	sqlite.reopen = func(t *testing.T) *sqlstore.DB { return sqlite.open(t, 0) }
	engines := []spendEngine{sqlite}
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Log("TOLLGATE_TEST_POSTGRES_URL is not set: SQLite only")
		return engines
	}
	u := storetest.PostgresSchema(t, base)
	pg := spendEngine{name: "postgres",
		open: func(t *testing.T, version int64) *sqlstore.DB {
			s, err := sqlstore.OpenPostgresAt(context.Background(), u, version)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}}
	pg.reopen = func(t *testing.T) *sqlstore.DB { return pg.open(t, 0) }
	return append(engines, pg)
}

// spendRows are n rows of each kind a gateway writes: with a key and an
// answer id, with neither (the plain gateway), a key without an answer id
// (a failed call), an answer id without a key. prefix keeps the call and
// answer ids of different batches apart.
func spendRows(prefix string, n int, at time.Time) []store.SpendLog {
	var rows []store.SpendLog
	for i := range n {
		for kind, k := range []struct{ key, answer string }{{"k1", "chatcmpl-" + prefix}, {"", "chatcmpl-" + prefix}, {"k2", ""}, {"", "msg_" + prefix}} {
			r := store.SpendLog{RequestID: fmt.Sprintf("%s-%d-%d", prefix, kind, i), KeyHash: k.key, ModelGroup: "m",
				Status: 200, StartedAt: at.Add(time.Duration(i) * time.Second), EndedAt: at.Add(time.Duration(i) * time.Second)}
			if k.key != "" {
				r.UserID = "u-" + k.key
			}
			if k.answer != "" {
				r.ResponseID = fmt.Sprintf("%s%dx%d", k.answer, kind, i)
			}
			rows = append(rows, r)
		}
	}
	return rows
}

// checkFound: every row is found by its call id, its answer id, its key
// (within its second), and the key and unfiltered counts are all.
// createSpendKeys creates the keys spendRows names, so that a store at an
// older schema books their spend without looking for a replaced key
// (key_replacements came with migration 00017).
func createSpendKeys(t *testing.T, s *sqlstore.DB) {
	t.Helper()
	for _, k := range []string{"k1", "k2"} {
		if err := s.CreateKey(context.Background(), &store.Key{TokenHash: k, UserID: "u-" + k}); err != nil {
			t.Fatal(err)
		}
	}
}

func checkFound(t *testing.T, s *sqlstore.DB, rows []store.SpendLog, want map[string]int, total int) {
	t.Helper()
	ctx := context.Background()
	for _, r := range rows {
		for _, f := range []store.SpendFilter{{RequestID: r.RequestID}, {RequestID: r.ResponseID}, {KeyHash: r.KeyHash, From: r.StartedAt, To: r.StartedAt.Add(time.Second)}} {
			if f.RequestID == "" && f.KeyHash == "" {
				continue
			}
			logs, _, err := s.ListSpendLogs(ctx, f)
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, l := range logs {
				found = found || l.RequestID == r.RequestID
			}
			if !found {
				t.Errorf("%+v: row %s not found (%d rows)", f, r.RequestID, len(logs))
			}
		}
	}
	for key, n := range want {
		if _, got, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: key}); err != nil || got != n {
			t.Errorf("key %s: %d rows, %v; want %d", key, got, err, n)
		}
	}
	if _, got, err := s.ListSpendLogs(ctx, store.SpendFilter{}); err != nil || got != total {
		t.Errorf("all: %d rows, %v; want %d", got, err, total)
	}
}

// TestSpendRowsSurvivePartialIndexes: rows written before migration 00016
// (full key and answer-id indexes) are found by every lookup after it, as
// are rows written after it, and again after 00016 is rolled back.
// PostgreSQL only: SQLite writes spend rows into spend_blocks (00018), which
// a store migrated only to 00015 lacks, and keeps no row in spend_logs
// (TestMoveSpendLogs covers the rows an older version left there).
func TestSpendRowsSurvivePartialIndexes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, e := range spendEngines(t)[1:] {
		t.Run(e.name, func(t *testing.T) {
			at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			old := e.open(t, beforePartial)
			createSpendKeys(t, old)
			before := spendRows("old", 30, at)
			if err := old.ApplySpend(ctx, before); err != nil {
				t.Fatal(err)
			}
			old.Close()

			s := e.reopen(t)
			checkFound(t, s, before, map[string]int{"k1": 30, "k2": 30}, 120)
			after := spendRows("new", 30, at.Add(time.Hour))
			if err := s.ApplySpend(ctx, after); err != nil {
				t.Fatal(err)
			}
			all := append(before, after...)
			checkFound(t, s, all, map[string]int{"k1": 60, "k2": 60}, 240)

			if err := sqlstore.MigrateDownTo(ctx, s, beforePartial); err != nil {
				t.Fatalf("down: %v", err)
			}
			checkFound(t, s, all, map[string]int{"k1": 60, "k2": 60}, 240)
			if err := s.Migrate(ctx); err != nil {
				t.Fatalf("up again: %v", err)
			}
			checkFound(t, s, all, map[string]int{"k1": 60, "k2": 60}, 240)
		})
	}
}

// spendPlanFilters are ListSpendLogs' filters: /spend/logs' (api_key,
// user_id, team_id, end_user, request_id as a call or an answer id, dates,
// model, status, tag) alone and as the admin UI combines them.
var spendPlanFilters = func() []struct {
	name  string
	f     store.SpendFilter
	index string // an index the plans must use ("" for none in particular)
} {
	from, to := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), time.Date(2026, 11, 2, 0, 0, 0, 0, time.UTC)
	page := store.Page{Number: 2, Size: 50}
	return []struct {
		name  string
		f     store.SpendFilter
		index string
	}{
		{"all", store.SpendFilter{Page: page}, "spend_logs_started"},
		{"key", store.SpendFilter{KeyHash: "k1", Page: page}, "spend_logs_key"},
		{"key and dates", store.SpendFilter{KeyHash: "k1", From: from, To: to}, "spend_logs_key"},
		{"key and model", store.SpendFilter{KeyHash: "k1", ModelGroup: "m"}, "spend_logs_key"},
		{"key and status", store.SpendFilter{KeyHash: "k1", Status: "failure"}, "spend_logs_key"},
		{"call or answer id", store.SpendFilter{RequestID: "chatcmpl-abc"}, "spend_logs_response_tail"},
		{"answer id and key", store.SpendFilter{RequestID: "chatcmpl-abc", KeyHash: "k1"}, ""},
		{"dates", store.SpendFilter{From: from, To: to}, "spend_logs_started"},
		{"user", store.SpendFilter{UserID: "u"}, ""},
		{"team", store.SpendFilter{TeamID: "t"}, ""},
		{"end user", store.SpendFilter{EndUser: "e"}, ""},
		{"user and dates", store.SpendFilter{UserID: "u", From: from, To: to}, "spend_logs_started"},
		{"model", store.SpendFilter{ModelGroup: "m"}, ""},
		{"status", store.SpendFilter{Status: "429"}, ""},
		{"tag", store.SpendFilter{Tag: "prod"}, ""},
	}
}()

// unpartial is q as it was before 00016: without the partial indexes'
// conditions.
func unpartial(q string) string {
	return strings.NewReplacer(" AND key_hash <> ''", "", " AND response_id <> ''", "").Replace(q)
}

// TestSpendLogsPlans: every ListSpendLogs statement plans after migration
// 00016 as its former text did before it, so no filter lost the index it
// used (SQLite uses a partial index only when the query's WHERE carries
// the index's condition verbatim; PostgreSQL only when it can prove it).
// PostgreSQL only: SQLite's spend rows are in spend_blocks (00018), and its
// listing does not read spend_logs' indexes.
func TestSpendLogsPlans(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, e := range spendEngines(t)[1:] {
		t.Run(e.name, func(t *testing.T) {
			at := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
			old := e.open(t, beforePartial)
			createSpendKeys(t, old)
			if err := old.ApplySpend(ctx, spendRows("r", 50, at)); err != nil {
				t.Fatal(err)
			}
			type plans struct{ count, page string }
			was := map[string]plans{}
			for _, c := range spendPlanFilters {
				count, page, args, err := sqlstore.SpendLogsQueries(c.f)
				if err != nil {
					t.Fatal(err)
				}
				var p plans
				if p.count, err = sqlstore.Plan(ctx, old, unpartial(count), args...); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if p.page, err = sqlstore.Plan(ctx, old, unpartial(page), args...); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				was[c.name] = p
			}
			old.Close()
			s := e.reopen(t)
			for _, c := range spendPlanFilters {
				count, page, args, err := sqlstore.SpendLogsQueries(c.f)
				if err != nil {
					t.Fatal(err)
				}
				var p plans
				if p.count, err = sqlstore.Plan(ctx, s, count, args...); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				if p.page, err = sqlstore.Plan(ctx, s, page, args...); err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				w := was[c.name]
				if e.name == "sqlite" && (p.count != w.count || p.page != w.page) {
					t.Errorf("%s: plans changed\nbefore 00016:\n%s\n%s\nafter:\n%s\n%s", c.name, w.count, w.page, p.count, p.page)
				}
				for _, q := range []string{p.count, p.page} {
					if c.index != "" && !strings.Contains(q, c.index) {
						t.Errorf("%s: the plan does not use %s:\n%s", c.name, c.index, q)
					}
				}
				t.Logf("%s:\n%s\n%s", c.name, p.count, p.page)
			}
		})
	}
}
