package sqlstore_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// benchRows is the spend-log size the reports are measured at.
const benchRows = 1_000_000

// seedSpend writes benchRows spend logs over 30 days through ApplySpend (so
// the rollups are what the writer makes): 200 keys in 20 teams, 3 end users
// per key, 5 models.
func seedSpend(b *testing.B, s store.Store) {
	b.Helper()
	start := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	step := 30 * 24 * time.Hour / benchRows
	batch := make([]store.SpendLog, 0, 1000)
	t0 := time.Now()
	for i := range benchRows {
		key := i % 200
		batch = append(batch, store.SpendLog{
			RequestID: fmt.Sprintf("r%07d", i), KeyHash: fmt.Sprintf("key%03d", key), TeamID: fmt.Sprintf("team%02d", key%20),
			UserID: fmt.Sprintf("user%02d", key%50), EndUser: fmt.Sprintf("cust%03d-%d", key, i%3),
			ModelGroup: fmt.Sprintf("model-%d", i%5), PromptTokens: 100, CompletionTokens: 20, Cost: 0.0001,
			StartedAt: start.Add(time.Duration(i) * step), Status: 200,
		})
		if len(batch) == cap(batch) {
			if err := s.ApplySpend(context.Background(), batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	b.Logf("seeded %d spend logs in %v", benchRows, time.Since(t0).Round(time.Second))
}

// BenchmarkReports measures /global/spend/report's queries and a filtered
// /spend/logs page over 1,000,000 spend-log rows, on SQLite and (with
// TOLLGATE_TEST_POSTGRES_URL) PostgreSQL. Seeding takes a minute or two.
//
//	go test -run '^$' -bench Reports -benchtime 20x ./internal/store/sqlstore
func BenchmarkReports(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "tollgate.db"))
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		benchReports(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if base == "" {
			b.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
		}
		benchReports(b, storetest.OpenPostgres(b, base))
	})
}

func benchReports(b *testing.B, s store.Store) {
	seedSpend(b, s)
	ctx := context.Background()
	month := store.ReportFilter{From: time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	for _, g := range []string{"team_id", "end_user", "key_hash"} {
		b.Run("report-30d-by-"+g, func(b *testing.B) {
			f := month
			f.GroupBy = g
			var n int
			for b.Loop() {
				rows, err := s.SpendReport(ctx, f)
				if err != nil {
					b.Fatal(err)
				}
				n = len(rows)
			}
			b.ReportMetric(float64(n), "rows")
		})
	}
	b.Run("report-1d-one-team", func(b *testing.B) {
		f := store.ReportFilter{GroupBy: "key_hash", TeamID: "team07", From: time.Date(2026, 10, 15, 0, 0, 0, 0, time.UTC), To: time.Date(2026, 10, 16, 0, 0, 0, 0, time.UTC)}
		for b.Loop() {
			if _, err := s.SpendReport(ctx, f); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("logs-page-one-key", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "key042", Page: store.Page{Number: 3, Size: 50}}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("total", func(b *testing.B) {
		for b.Loop() {
			if _, err := s.TotalSpend(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// processCPU is the CPU time this process has used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkApplySpend is the spend writer's cost per row: batches of 100
// rows (what 1,000 req/s makes in one 100 ms tick) on SQLite; "tagged"
// rows carry two request tags and a small metadata object, so they also
// write the tag rollup. "random" and "ordered" give the rows request ids
// as the gateway made them before and after they began with the time
// (random hex; milliseconds then random hex), and random response ids as
// upstreams send, into a table already holding 100,000 rows. "keyless"
// rows are "ordered" rows as the plain gateway (no virtual keys) makes
// them: no key hash, user, team or end user; "unanswered" are keyless
// rows without an answer id (failed calls, embeddings). "plainkeyless" and
// "plainunanswered" are "plain" rows (sequential ids, a new table) so.
func BenchmarkApplySpend(b *testing.B) {
	hexID := func(ordered bool) string {
		var r [16]byte
		_, _ = rand.Read(r[:])
		if ordered {
			ms := uint64(time.Now().UnixMilli())
			for i := 5; i >= 0; i-- {
				r[i] = byte(ms)
				ms >>= 8
			}
		}
		return hex.EncodeToString(r[:])
	}
	for _, tt := range []struct {
		name            string
		tagged, ordered bool
		seq             bool
		keyless, noID   bool
	}{{name: "plain", seq: true}, {name: "tagged", tagged: true, seq: true}, {name: "random"}, {name: "ordered", ordered: true},
		{name: "keyless", ordered: true, keyless: true}, {name: "unanswered", ordered: true, keyless: true, noID: true},
		{name: "plainkeyless", seq: true, keyless: true}, {name: "plainunanswered", seq: true, keyless: true, noID: true}} {
		b.Run(tt.name, func(b *testing.B) {
			s, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "tollgate.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			// TOLLGATE_BENCH_PRAGMA (e.g. "PRAGMA wal_autocheckpoint(4000)")
			// runs on the store's one connection first: a setting tried
			// without a build of its own.
			if p := os.Getenv("TOLLGATE_BENCH_PRAGMA"); p != "" {
				if err := sqlstore.Exec(context.Background(), s, p); err != nil {
					b.Fatal(err)
				}
			}
			now := time.Now()
			n, tick := 0, 0
			batch := func() []store.SpendLog {
				batch := make([]store.SpendLog, 100)
				for i := range batch {
					n, tick = n+1, tick+1
					at := now.Add(time.Duration(tick) * 100 * time.Microsecond) // rows end in order, as the gateway's do
					batch[i] = store.SpendLog{RequestID: fmt.Sprintf("r%09d", n), ResponseID: fmt.Sprintf("chatcmpl-%09d", n), CallType: "acompletion", KeyHash: "k", UserID: "u", TeamID: "t", ModelGroup: "gpt-4",
						PromptTokens: 10, CompletionTokens: 8, Cost: 0.0001, Status: 200, StartedAt: at, EndedAt: at}
					if !tt.seq {
						batch[i].RequestID, batch[i].ResponseID = hexID(tt.ordered), "chatcmpl-"+hexID(false)
					}
					if tt.keyless {
						batch[i].KeyHash, batch[i].UserID, batch[i].TeamID = "", "", ""
					}
					if tt.noID {
						batch[i].ResponseID = ""
					}
					if tt.tagged {
						batch[i].RequestTags = []string{"prod", fmt.Sprintf("job:%d", n%10)}
						batch[i].Metadata = map[string]any{"generation_name": "g", "tags": []any{"prod"}}
					}
				}
				return batch
			}
			if !tt.seq {
				for range 1000 {
					if err := s.ApplySpend(context.Background(), batch()); err != nil {
						b.Fatal(err)
					}
				}
				n = 0
			}
			b.ReportAllocs()
			cpu0 := processCPU()
			for b.Loop() {
				if err := s.ApplySpend(context.Background(), batch()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(n), "µs/row")
			// CPU time (user + system, every thread) is what a busy
			// machine disturbs least; it includes making the batches.
			b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(n), "cpu-µs/row")
		})
	}
}
