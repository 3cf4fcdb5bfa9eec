package sqlstore_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestPostgresSpendBatchOverOneGB: a spend writer's batch (MaxBatch, 1000
// rows) whose stored messages add up to more than 1 GB, as with
// content_logging.max_field_bytes of about a megabyte (it has no upper
// bound), is written. PostgreSQL refuses one array, and one Bind message,
// of 1 GB or more: sent as one INSERT of column arrays the batch failed
// every time, and the writer retried it for ever, booking no spend at all.
func TestPostgresSpendBatchOverOneGB(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	if os.Getenv("TOLLGATE_TEST_HEAVY") != "1" {
		// ~50 s and 2 GB under -race: TestPostgresSpendInChunks runs the
		// same split with chunks of a few KiB in every run.
		t.Skip("writes 1.1 GB of messages: set TOLLGATE_TEST_HEAVY=1 to run it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // not the store's default bound: 1.1 GB takes a while
	defer cancel()
	s := storetest.OpenPostgres(t, pg)
	now := time.Now().UTC()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k", KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	// One 1.1 MB messages text shared by every row (the rows' copies are
	// the store's).
	msg := json.RawMessage(`[{"role":"user","content":"` + string(bytes.Repeat([]byte("a"), 1_100_000)) + `"}]`)
	const n = 1000
	batch := make([]store.SpendLog, n)
	for i := range batch {
		batch[i] = store.SpendLog{RequestID: fmt.Sprintf("big-%04d", i), KeyHash: "k", Cost: 0.001, StartedAt: now, EndedAt: now, Messages: msg}
	}
	if err := s.ApplySpend(ctx, batch); err != nil {
		t.Fatalf("a batch of %d rows with %d bytes of messages each: %v", n, len(msg), err)
	}
	_, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Number: 1, Size: 1}})
	if err != nil || total != n {
		t.Errorf("%d rows (%v), want %d", total, err, n)
	}
	k, err := s.GetKey(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if k.Spend < 0.999 || k.Spend > 1.001 {
		t.Errorf("key spend %v, want 1", k.Spend)
	}
}

// TestPostgresSpendInChunks: a batch whose text passes the chunk bound
// (made 8 KiB here, 64 MiB in production) goes in several INSERTs, and
// every row lands once with its text whole: a request id repeated on both
// sides of a chunk boundary counts once, and the batch replayed (the
// writer's retry after a commit it did not hear of) adds nothing.
func TestPostgresSpendInChunks(t *testing.T) {
	pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if pg == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set")
	}
	defer sqlstore.SetSpendChunkBytes(8 << 10)()
	ctx := context.Background()
	s := storetest.OpenPostgres(t, pg)
	now := time.Now().UTC()
	if err := s.CreateKey(ctx, &store.Key{TokenHash: "k", KeyName: "sk-...", CreatedAt: now, UpdatedAt: now}); err != nil {
		t.Fatal(err)
	}
	const n = 40 // ~2.3 KiB a row: 3 rows a chunk, 14 INSERTs
	batch := make([]store.SpendLog, 0, n+1)
	for i := range n {
		msg := json.RawMessage(fmt.Sprintf(`[{"role":"user","content":"%04d %s"}]`, i, bytes.Repeat([]byte("m"), 2000)))
		batch = append(batch, store.SpendLog{RequestID: fmt.Sprintf("chunk-%04d", i), KeyHash: "k", Cost: 0.01, StartedAt: now, EndedAt: now, Messages: msg})
	}
	batch = append(batch, batch[1]) // again, in the last chunk
	for run := range 2 {
		if err := s.ApplySpend(ctx, batch); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		got, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Number: 1, Size: 100}})
		if err != nil || total != n || len(got) != n {
			t.Fatalf("run %d: %d rows (total %d, %v), want %d", run, len(got), total, err, n)
		}
		for _, l := range got {
			var i int
			fmt.Sscanf(l.RequestID, "chunk-%04d", &i)
			if want := batch[i].Messages; !bytes.Equal(l.Messages, want) {
				t.Fatalf("run %d: %s read back %d bytes of messages, want %d", run, l.RequestID, len(l.Messages), len(want))
			}
		}
		k, err := s.GetKey(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if k.Spend < 0.3999 || k.Spend > 0.4001 {
			t.Errorf("run %d: key spend %v, want 0.40 (each request once)", run, k.Spend)
		}
	}
}
