package sqlstore

import (
	"database/sql/driver"
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendValuesMatchSpendArgs: SQLite's driver-level row values
// (spendValues) are PostgreSQL's database/sql arguments (spendArgs) as the
// driver's converter makes them, column for column: the two lists of the
// INSERT's columns cannot drift apart unnoticed. Every field of the row is
// set to a value of its own, so a swapped or missing column shows.
func TestSpendValuesMatchSpendArgs(t *testing.T) {
	l := store.SpendLog{
		RequestID: "req", ResponseID: "resp", CallType: "acompletion", KeyHash: "kh", UserID: "u", TeamID: "t",
		EndUser: "eu", ModelGroup: "mg", Deployment: "dep", Provider: "prov",
		PromptTokens: 11, CompletionTokens: 12, CachedTokens: 13, Cost: 1.25, Status: 207, LatencyMS: 14,
		StartedAt: time.UnixMicro(1_700_000_000_000_001), EndedAt: time.UnixMicro(1_700_000_000_000_002),
		ReportedPromptTokens: 15, ReportedCompletionTokens: 16, UsageClamped: true, UsageEstimated: false,
		CacheHit: true, CacheKey: "ck", SavedCost: 2.5,
		RequestTags: []string{"a", "b"}, Metadata: map[string]any{"m": "v"},
		Messages: json.RawMessage(`[{"role":"user"}]`), Response: json.RawMessage(`{"id":"x"}`),
		Guardrails:       json.RawMessage(`[{"guardrail":"g"}]`),
		ErrorInformation: &store.ErrorInformation{ErrorCode: "500", ErrorClass: "InternalServerError"},
	}
	args := spendArgs(nil, &l)
	if len(args) != spendCols {
		t.Fatalf("spendArgs gives %d values, want %d", len(args), spendCols)
	}
	vals := make([]driver.NamedValue, spendCols)
	spendValues(vals, &l)
	for i, a := range args {
		want, err := driver.DefaultParameterConverter.ConvertValue(a)
		if err != nil {
			t.Fatalf("column %d: %v", i, err)
		}
		if !reflect.DeepEqual(vals[i].Value, want) {
			t.Errorf("column %d: spendValues %#v, spendArgs %#v", i, vals[i].Value, want)
		}
	}
}
