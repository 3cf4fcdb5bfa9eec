package sqlstore_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// TestApplySpendTellsRefusalFromUnavailability: PostgreSQL refusing a
// row's bytes (not UTF-8, a NUL byte) is store.ErrRejected, which the spend
// writer isolates; a store that is not there (closed) is not, so the
// writer keeps retrying the batch.
func TestApplySpendTellsRefusalFromUnavailability(t *testing.T) {
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	s := storetest.OpenPostgres(t, base)
	ctx := context.Background()
	now := time.Now()
	for name, l := range map[string]store.SpendLog{
		"latin-1 content": {RequestID: "r1", Messages: []byte("\"caf\xe9\""), StartedAt: now, EndedAt: now},
		"NUL end user":    {RequestID: "r2", EndUser: "a\x00b", StartedAt: now, EndedAt: now},
	} {
		if err := s.ApplySpend(ctx, []store.SpendLog{l}); !errors.Is(err, store.ErrRejected) {
			t.Errorf("%s: %v, want store.ErrRejected", name, err)
		}
	}
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "ok", StartedAt: now, EndedAt: now}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.ApplySpend(ctx, []store.SpendLog{{RequestID: "r3", StartedAt: now, EndedAt: now}}); err == nil || errors.Is(err, store.ErrRejected) {
		t.Errorf("a closed store: %v, want an error that is not store.ErrRejected", err)
	}
}
