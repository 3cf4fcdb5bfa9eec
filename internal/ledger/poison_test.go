package ledger_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestWriterSurvivesARowPostgreSQLRefuses: PostgreSQL refuses text that is
// not UTF-8 (or holds a NUL byte). A row carrying such bytes in its
// content, tags or end user no longer holds back the batch it is in: the
// other rows land, the refused row lands without its client-supplied
// fields, and its cost is booked on its key.
func TestWriterSurvivesARowPostgreSQLRefuses(t *testing.T) {
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL spend-writer test (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	st := storetest.OpenPostgres(t, base)
	ctx := context.Background()
	for _, k := range []string{"kbad", "kgood"} {
		if err := st.CreateKey(ctx, &store.Key{TokenHash: k, KeyName: "sk-..." + k}); err != nil {
			t.Fatal(err)
		}
	}
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	w.FlushEvery = time.Hour // only explicit flushes
	go w.Run()
	defer w.Close()
	now := time.Now()
	row := func(id, key string) store.SpendLog {
		return store.SpendLog{RequestID: id, KeyHash: key, Cost: 1, StartedAt: now, EndedAt: now}
	}
	before := row("good-1", "kgood")
	poison := row("poison", "kbad")
	// Bytes the gateway no longer lets through, but a row must not be able
	// to wedge the writer whatever it holds.
	poison.Messages = []byte("[\"caf\xe9\"]")
	poison.Metadata = map[string]any{"x": "a\x00b"}
	after := row("good-2", "kgood")
	w.Enqueue(before)
	w.Enqueue(poison)
	w.Enqueue(after)
	w.Flush()
	if n := w.Pending(); n != 0 {
		t.Fatalf("%d rows still queued after a flush: the batch with the refused row is retried for ever", n)
	}
	for _, id := range []string{"good-1", "good-2", "poison"} {
		rows, _, err := st.ListSpendLogs(ctx, store.SpendFilter{RequestID: id})
		if err != nil || len(rows) != 1 {
			t.Fatalf("row %s: %v %v", id, rows, err)
		}
		if id == "poison" && (rows[0].Messages != nil || rows[0].Metadata != nil) {
			t.Errorf("the refused row kept its content: %q %v", rows[0].Messages, rows[0].Metadata)
		}
	}
	for key, want := range map[string]float64{"kgood": 2, "kbad": 1} {
		if k, err := st.GetKey(ctx, key); err != nil || k.Spend != want {
			t.Errorf("key %s spend: %v %v, want %v", key, k, err, want)
		}
	}
	if w.Stripped() != 1 || w.Rejected() != 0 {
		t.Errorf("stripped %d, rejected %d; want 1, 0", w.Stripped(), w.Rejected())
	}
}

// refusing is a store that refuses, as data, every row whose request id
// starts with "poison" and, stripped or not, those starting with
// "poison-hard"; and that is down while down is set.
type refusing struct {
	store.Store
	down bool
}

func (r *refusing) ApplySpend(ctx context.Context, batch []store.SpendLog) error {
	if r.down {
		return errors.New("connection refused")
	}
	for _, l := range batch {
		if strings.HasPrefix(l.RequestID, "poison-hard") || strings.HasPrefix(l.RequestID, "poison") && l.Messages != nil {
			return store.ErrRejected
		}
	}
	return r.Store.ApplySpend(ctx, batch)
}

// TestWriterDropsOnlyWhatTheStoreRefuses: a row refused even without its
// content is dropped and counted, the rows around it land; a store that is
// unreachable (not refusing) keeps every row queued for the next flush.
func TestWriterDropsOnlyWhatTheStoreRefuses(t *testing.T) {
	ctx := context.Background()
	sq, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer sq.Close()
	st := &refusing{Store: sq, down: true}
	w := ledger.NewWriter(st, slog.New(slog.DiscardHandler))
	w.FlushEvery = time.Hour
	go w.Run()
	defer w.Close()
	now := time.Now()
	ids := []string{"a", "poison-soft", "b", "poison-hard", "c", "d", "e"}
	for _, id := range ids {
		w.Enqueue(store.SpendLog{RequestID: id, KeyHash: "k", Cost: 1, StartedAt: now, EndedAt: now, Messages: []byte(`"x"`)})
	}
	w.Flush()
	if n := w.Pending(); n != len(ids) || w.Rejected() != 0 {
		t.Fatalf("with the store down: %d rows queued (want %d), %d rejected", n, len(ids), w.Rejected())
	}
	st.down = false
	w.Flush()
	if n := w.Pending(); n != 0 {
		t.Fatalf("%d rows still queued", n)
	}
	for _, id := range ids {
		rows, _, err := sq.ListSpendLogs(ctx, store.SpendFilter{RequestID: id})
		if want := id != "poison-hard"; err != nil || (len(rows) == 1) != want {
			t.Errorf("row %s: %d rows, err %v (want it written: %v)", id, len(rows), err, want)
		}
	}
	if w.Stripped() != 1 || w.Rejected() != 1 {
		t.Errorf("stripped %d, rejected %d; want 1, 1", w.Stripped(), w.Rejected())
	}
}
