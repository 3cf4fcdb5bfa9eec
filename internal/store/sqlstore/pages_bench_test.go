package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
)

// base62 is n random base-62 characters, the alphabet of OpenAI's and
// Anthropic's answer ids.
func base62(n int) string {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// BenchmarkSpendPages counts the WAL pages a batch of 100 spend rows
// writes (pages/row: what the commit writes and the checkpoint copies back,
// the writer's main I/O), with rows as the gateway makes them (time-ordered
// call ids, base-62 answer ids, 64-hex key hashes, one or 20 keys) after
// 30,000 rows. SQLite's rows go into spend blocks (00018); until then this
// measured what each spend_logs index cost (docs/performance.md).
// Deterministic, unlike CPU time on a shared machine.
//
//	go test -run '^$' -bench SpendPages -benchtime 20x ./internal/store/sqlstore
func BenchmarkSpendPages(b *testing.B) {
	for _, keys := range []int{1, 20} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			ctx := context.Background()
			s, err := sqlstore.OpenSQLite(ctx, filepath.Join(b.TempDir(), "tollgate.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			start, n := time.Now(), 0
			batch := func() []store.SpendLog {
				rows := make([]store.SpendLog, 100)
				for i := range rows {
					n++
					var r [10]byte
					_, _ = rand.Read(r[:])
					at := start.Add(time.Duration(n) * time.Millisecond)
					rows[i] = store.SpendLog{RequestID: fmt.Sprintf("%012x%s", at.UnixMilli(), hex.EncodeToString(r[:])), ResponseID: "chatcmpl-" + base62(29),
						KeyHash: fmt.Sprintf("%064x", n%keys), UserID: "user", TeamID: "team", ModelGroup: "gpt-4o", Deployment: "gpt-4o-east", Provider: "openai",
						CallType: "acompletion", PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, StartedAt: at, EndedAt: at.Add(300 * time.Millisecond)}
				}
				return rows
			}
			for range 300 {
				if err := s.ApplySpend(ctx, batch()); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := sqlstore.WALFrames(ctx, s); err != nil {
				b.Fatal(err)
			}
			frames, rows := 0, 0
			for b.Loop() {
				if err := s.ApplySpend(ctx, batch()); err != nil {
					b.Fatal(err)
				}
				f, err := sqlstore.WALFrames(ctx, s)
				if err != nil {
					b.Fatal(err)
				}
				frames, rows = frames+f, rows+100
			}
			b.ReportMetric(float64(frames)/float64(rows), "pages/row")
		})
	}
}
