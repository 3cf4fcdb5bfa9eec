package sqlstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// pgSpendRows is a batch exercising every spend_logs column on PostgreSQL:
// a row with nothing NULL-able set (no tags, metadata, messages, response,
// guardrails or error information, and "null" JSON that is stored as
// NULL), a full one whose text holds what an array's text form would have
// to quote (commas, braces, quotes, backslashes, the word NULL, unicode),
// a failed one and a large one.
func pgSpendRows(base time.Time) []store.SpendLog {
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	odd := `NULL, {"a,b"} \ é 中文 😀 'q'`
	big := `[{"role":"user","content":"` + strings.Repeat("ä0123456789", 100_000) + `"}]`
	return []store.SpendLog{
		{RequestID: "pg-min", StartedAt: at(1), EndedAt: at(1), Messages: json.RawMessage("null")},
		{RequestID: "pg-full", ResponseID: "chatcmpl-" + odd, CallType: "acompletion", KeyHash: "k", UserID: "NULL", TeamID: "t,{}",
			EndUser: "é 中文", ModelGroup: `m"1"`, Deployment: `d\1`, Provider: "p", PromptTokens: 1 << 40, CompletionTokens: 7, CachedTokens: 3,
			Cost: 0.125, Status: 200, LatencyMS: 42, StartedAt: at(2), EndedAt: at(3), ReportedPromptTokens: -5, ReportedCompletionTokens: 8,
			UsageClamped: true, UsageEstimated: true, CacheHit: true, CacheKey: odd, SavedCost: 0.5,
			RequestTags: []string{"prod", odd, "NULL"}, Metadata: map[string]any{"who": odd, "n": 1.5},
			Messages: json.RawMessage(`[{"role":"user","content":"` + "NULL é 😀" + `"}]`), Response: json.RawMessage(`{"id":"x"}`),
			Guardrails: json.RawMessage(`[{"guardrail":"g"}]`)},
		{RequestID: "pg-failed", KeyHash: "k", ModelGroup: "m", Cost: 0, Status: 503, StartedAt: at(4), EndedAt: at(5),
			ErrorInformation: &store.ErrorInformation{ErrorCode: "503", ErrorClass: "ServiceUnavailableError", LLMProvider: "openai", ErrorMessage: odd}},
		{RequestID: "pg-large", KeyHash: "k", Cost: 0.25, Status: 200, StartedAt: at(6), EndedAt: at(7),
			Messages: json.RawMessage(big), Response: json.RawMessage(`{"choices":[]}`)},
		{RequestID: "pg-empty", KeyHash: "k", Cost: 0.5, StartedAt: at(8), EndedAt: at(8), RequestTags: []string{}, Metadata: map[string]any{},
			Messages: json.RawMessage{}, Response: json.RawMessage("null")},
	}
}

// TestPostgresSpendRowsRoundTrip: PostgreSQL's spend_logs rows (written as
// column arrays) read back through ListSpendLogs exactly as written, the
// NULL-able columns NULL where they were nil; a batch replayed with new
// rows among it inserts and counts only the new ones.
func TestPostgresSpendRowsRoundTrip(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	ctx := context.Background()
	s := storetest.OpenPostgres(t, pg)
	now := time.Now().UTC()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k", KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	base := time.UnixMicro(time.Now().Add(-time.Hour).UnixMicro()).UTC()
	rows := pgSpendRows(base)
	if err := s.ApplySpend(ctx, rows); err != nil {
		t.Fatal(err)
	}
	got, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Number: 1, Size: 100}})
	if err != nil {
		t.Fatal(err)
	}
	if total != len(rows) || len(got) != len(rows) {
		t.Fatalf("%d rows (total %d), want %d", len(got), total, len(rows))
	}
	byID := map[string]store.SpendLog{}
	for _, l := range got {
		byID[l.RequestID] = l
	}
	for _, w := range rows {
		want := w
		// What a row reads back as: JSON "null" and empty values are NULL.
		if len(want.RequestTags) == 0 {
			want.RequestTags = nil
		}
		if len(want.Metadata) == 0 {
			want.Metadata = nil
		}
		for _, r := range []*json.RawMessage{&want.Messages, &want.Response, &want.Guardrails} {
			if len(*r) == 0 || string(*r) == "null" {
				*r = nil
			}
		}
		if !reflect.DeepEqual(byID[w.RequestID], want) {
			g := byID[w.RequestID]
			g.Messages, want.Messages = trimRaw(g.Messages), trimRaw(want.Messages)
			t.Errorf("row %s:\n got %+v\nwant %+v", w.RequestID, g, want)
		}
	}
	nulls, err := sqlstore.QueryInt(ctx, s, `SELECT count(*) FROM spend_logs WHERE request_tags IS NULL AND metadata IS NULL AND messages IS NULL
		AND response IS NULL AND guardrails IS NULL AND error_information IS NULL`)
	if err != nil {
		t.Fatal(err)
	}
	if nulls != 2 { // pg-min, pg-empty
		t.Errorf("%d rows with every NULL-able column NULL, want 2", nulls)
	}

	// Replayed with two new rows, one of them twice: only those count.
	again := append(pgSpendRows(base), store.SpendLog{RequestID: "pg-new", KeyHash: "k", Cost: 1, StartedAt: base, EndedAt: base},
		store.SpendLog{RequestID: "pg-new", KeyHash: "k", Cost: 1, StartedAt: base, EndedAt: base},
		store.SpendLog{RequestID: "pg-new2", KeyHash: "k", Cost: 2, StartedAt: base, EndedAt: base})
	if err := s.ApplySpend(ctx, again[2:]); err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySpend(ctx, again); err != nil {
		t.Fatal(err)
	}
	if _, total, err = s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Number: 1, Size: 1}}); err != nil || total != len(rows)+2 {
		t.Errorf("%d rows after the replays (%v), want %d", total, err, len(rows)+2)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if want := 0.125 + 0.25 + 0.5 + 1 + 2; k.Spend != want {
		t.Errorf("key spend %v after the replays, want %v (each row once)", k.Spend, want)
	}
}

func trimRaw(r json.RawMessage) json.RawMessage {
	if len(r) > 200 {
		return json.RawMessage(fmt.Sprintf("%s... (%d bytes)", r[:200], len(r)))
	}
	return r
}

// BenchmarkApplySpendPG: PostgreSQL's ApplySpend of a batch of gateway-like
// rows (one key, user and team, 10 end users, a little metadata, no
// messages), 100 and 1000 rows: the spend writer's transaction, whose
// spend_logs INSERT dominated the gateway's CPU (issue 31, item 3).
func BenchmarkApplySpendPG(b *testing.B) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		b.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	for _, size := range []int{100, 1000} {
		b.Run(fmt.Sprintf("rows=%d", size), func(b *testing.B) {
			ctx := context.Background()
			s, err := sqlstore.OpenPostgres(ctx, storetest.PostgresSchema(b, pg))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			now := seedSpendOwners(b, ctx, s)
			n := 0
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				batch := make([]store.SpendLog, size)
				for i := range batch {
					n++
					batch[i] = store.SpendLog{RequestID: fmt.Sprintf("r%09d", n), ResponseID: fmt.Sprintf("chatcmpl-%09d", n), CallType: "acompletion",
						KeyHash: "k", KeyCreatedAt: now, UserID: "u", TeamID: "t", EndUser: fmt.Sprintf("e%d", n%10), ModelGroup: "gpt-4",
						Deployment: "gpt-4-0", Provider: "openai", PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, LatencyMS: 3,
						StartedAt: now, EndedAt: now, Metadata: map[string]any{"job": "bench"}}
				}
				b.StartTimer()
				if err := s.ApplySpend(ctx, batch); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
