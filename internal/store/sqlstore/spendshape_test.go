package sqlstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// fullSpendRow is a spend row with every column set to a value that is
// not its default.
func fullSpendRow(id string, at time.Time) store.SpendLog {
	return store.SpendLog{RequestID: id, KeyHash: "kh", UserID: "u", TeamID: "t", EndUser: "e", ModelGroup: "m",
		Deployment: "d", Provider: "p", PromptTokens: 11, CompletionTokens: 7, CachedTokens: 3, Cost: 0.25, Status: 200,
		LatencyMS: 42, StartedAt: at, EndedAt: at.Add(time.Second), ReportedPromptTokens: 12, ReportedCompletionTokens: 8,
		UsageClamped: true, UsageEstimated: true, ResponseID: "chatcmpl-" + id, CallType: "acompletion",
		RequestTags: []string{"prod", "job:1"}, Metadata: map[string]any{"generation_name": "g"},
		Messages: json.RawMessage(`[{"role":"user","content":"hi"}]`), Response: json.RawMessage(`{"id":"x"}`),
		CacheHit: true, CacheKey: "ck", SavedCost: 0.5, Guardrails: json.RawMessage(`[{"guardrail":"g"}]`),
		ErrorInformation: &store.ErrorInformation{ErrorCode: "500", ErrorClass: "E", LLMProvider: "p", ErrorMessage: "m"}}
}

// zeroField sets the i-th of the row's fields that a spend_logs column
// stores to its zero value; false past the last.
func zeroField(l *store.SpendLog, i int) bool {
	v := reflect.ValueOf(l).Elem()
	n := 0
	for f := range v.NumField() {
		name := v.Type().Field(f).Name
		if name == "RequestID" || name == "StartedAt" || name == "EndedAt" || name == "Budgets" || name == "ContentOmitted" {
			continue
		}
		if n == i {
			v.Field(f).SetZero()
			return true
		}
		n++
	}
	return false
}

// TestSpendRowsOmittingDefaults: SQLite's writer leaves out of a row's
// INSERT the columns whose value is their default. The rows it writes so
// are the rows the INSERT of every column writes: each column's stored
// value and type, for a row with every column set, with none, with each
// one zero in turn and with each pair zero (more shapes than the writer
// prepares, so the INSERT of every column also serves past its bound), in
// batches of every size up to 40; and they read back through
// ListSpendLogs as written.
func TestSpendRowsOmittingDefaults(t *testing.T) {
	ctx := context.Background()
	at := time.Date(2026, 11, 30, 16, 0, 0, 0, time.UTC)
	var rows []store.SpendLog
	rows = append(rows, fullSpendRow("full", at))
	none := store.SpendLog{RequestID: "none", StartedAt: at, EndedAt: at}
	rows = append(rows, none)
	for i := 0; ; i++ {
		l := fullSpendRow(fmt.Sprintf("z%02d", i), at)
		if !zeroField(&l, i) {
			break
		}
		rows = append(rows, l)
		for j := i + 1; ; j++ {
			l := fullSpendRow(fmt.Sprintf("z%02d-%02d", i, j), at)
			zeroField(&l, i)
			if !zeroField(&l, j) {
				break
			}
			rows = append(rows, l)
		}
	}
	neg := fullSpendRow("negzero", at)
	neg.Cost = -1 * 0.0
	rows = append(rows, neg)

	open := func(whole bool) *sqlstore.DB {
		s, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "tollgate.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		sqlstore.WriteSpendRowsWhole(s, whole)
		for start, size := 0, 1; start < len(rows); start, size = start+size, size%40+1 {
			if err := s.ApplySpend(ctx, rows[start:min(start+size, len(rows))]); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	whole, shaped := open(true), open(false)
	cols := []string{"request_id", "key_hash", "user_id", "team_id", "end_user", "model_group", "deployment", "provider",
		"prompt_tokens", "completion_tokens", "cached_tokens", "cost", "status", "latency_ms", "started_at", "ended_at",
		"reported_prompt_tokens", "reported_completion_tokens", "usage_clamped", "usage_estimated", "response_id", "call_type",
		"request_tags", "metadata", "messages", "response", "cache_hit", "cache_key", "saved_cost", "guardrails", "error_information"}
	var sel []string
	for _, c := range cols {
		sel = append(sel, "typeof("+c+")", "quote("+c+")")
	}
	q := "SELECT rowid, " + strings.Join(sel, ", ") + " FROM spend_logs ORDER BY rowid"
	want, err := sqlstore.QueryText(ctx, whole, q)
	if err != nil {
		t.Fatal(err)
	}
	got, err := sqlstore.QueryText(ctx, shaped, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(want) != len(rows) || len(got) != len(rows) {
		t.Fatalf("%d rows written whole, %d shaped; want %d", len(want), len(got), len(rows))
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Errorf("row %d (%s):\n shaped %v\n whole  %v", i, rows[i].RequestID, got[i], want[i])
		}
	}
	listed, total, err := shaped.ListSpendLogs(ctx, store.SpendFilter{RequestID: "full"})
	if err != nil || total != 1 || len(listed) != 1 {
		t.Fatalf("full row listed: %v, %d, %v", listed, total, err)
	}
	if w := fullSpendRow("full", at); !reflect.DeepEqual(listed[0], w) {
		t.Errorf("full row read back:\n got %+v\nwant %+v", listed[0], w)
	}
	listed, _, err = shaped.ListSpendLogs(ctx, store.SpendFilter{RequestID: "none"})
	if err != nil || len(listed) != 1 || !reflect.DeepEqual(listed[0], none) {
		t.Errorf("empty row read back: %+v, %v; want %+v", listed, err, none)
	}
}
