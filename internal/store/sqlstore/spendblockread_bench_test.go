package sqlstore_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// benchSpendRows are n rows as the gateway writes them over a day:
// started about every 50 ms in order (a writer's batches are close to
// time order), 100 keys, 10 users, 3 teams, 4 model groups, one row in 20
// failed, one in 10 tagged, every answered row with an answer id, no
// content (store_prompts_in_spend_logs off).
func benchSpendRows(n int) []store.SpendLog {
	base := time.Date(2026, 11, 30, 0, 0, 0, 0, time.UTC)
	rows := make([]store.SpendLog, n)
	for i := range rows {
		started := base.Add(time.Duration(i)*50*time.Millisecond + time.Duration(i*7919%40)*time.Millisecond)
		l := store.SpendLog{
			RequestID:    fmt.Sprintf("%016x%016x", started.UnixMilli(), i),
			KeyHash:      fmt.Sprintf("key-%03d", i*31%100),
			UserID:       fmt.Sprintf("user-%d", i*7%10),
			TeamID:       fmt.Sprintf("team-%d", i%3),
			ModelGroup:   []string{"gpt-4o", "gpt-4o-mini", "claude", "llama"}[i%4],
			Deployment:   "d1",
			Provider:     "openai",
			Status:       200,
			Cost:         0.0012,
			StartedAt:    started,
			EndedAt:      started.Add(800 * time.Millisecond),
			CallType:     "acompletion",
			ResponseID:   fmt.Sprintf("chatcmpl-%024d", i),
			PromptTokens: 120, CompletionTokens: 340,
		}
		if i%20 == 0 {
			l.Status, l.ResponseID = 429, ""
			l.ErrorInformation = &store.ErrorInformation{ErrorCode: "429", ErrorMessage: "rate limited"}
		}
		if i%10 == 0 {
			l.RequestTags = []string{"batch"}
		}
		rows[i] = l
	}
	return rows
}

// storeBenchRows writes rows into s as SQLite keeps them.
func storeBenchRows(b *testing.B, s *sqlstore.DB, rows []store.SpendLog) {
	if err := sqlstore.StoreSpendBlocks(context.Background(), s, rows, 0); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkListSpendLogsBlocks lists 100,000 rows on SQLite: the first
// page unfiltered, by key, by call id, by answer id, and a page of a
// two-hour range.
func BenchmarkListSpendLogsBlocks(b *testing.B) {
	const n = 100_000
	rows := benchSpendRows(n)
	s := storetest.OpenSQLite(b, filepath.Join(b.TempDir(), "tollgate.db"))
	storeBenchRows(b, s, rows)
	mid := rows[n/2]
	tests := []struct {
		name string
		f    store.SpendFilter
	}{
		{"page", store.SpendFilter{}},
		{"page5", store.SpendFilter{Page: store.Page{Number: 5}}},
		{"key", store.SpendFilter{KeyHash: "key-042"}},
		{"callID", store.SpendFilter{RequestID: mid.RequestID}},
		{"answerID", store.SpendFilter{RequestID: rows[n/2+1].ResponseID}}, // row n/2 failed: no answer id
		{"timeRange", store.SpendFilter{From: mid.StartedAt, To: mid.StartedAt.Add(2 * time.Hour)}},
		{"keyTimeRange", store.SpendFilter{KeyHash: "key-042", From: mid.StartedAt, To: mid.StartedAt.Add(2 * time.Hour)}},
	}
	ctx := context.Background()
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				got, total, err := s.ListSpendLogs(ctx, tt.f)
				if err != nil || len(got) == 0 || total == 0 || (tt.f.RequestID != "" && total != 1) {
					b.Fatalf("%d rows, total %d, %v", len(got), total, err)
				}
			}
		})
	}
}
