package storetest

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// managedObjects: files and batches round-trip, are listed per owner newest
// first with after/limit paging, and a kind does not see the other's ids.
func managedObjects(t *testing.T, s store.Store) {
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	for i, o := range []store.ManagedObject{
		{ID: "file-a", Kind: store.ObjectFile, KeyHash: "k1", UserID: "u1", TeamID: "t1", ModelGroup: "gpt-4", Deployment: "d1", Provider: "openai"},
		{ID: "file-b", Kind: store.ObjectFile, KeyHash: "k2"},
		{ID: "file-c", Kind: store.ObjectFile, KeyHash: "k1", ParentID: "batch_a"},
		{ID: "batch_a", Kind: store.ObjectBatch, KeyHash: "k1"},
	} {
		o.Object = []byte(fmt.Sprintf(`{"id":%q}`, o.ID))
		o.CreatedAt = base.Add(time.Duration(i) * time.Second)
		if err := s.PutObject(ctx, &o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutObject(ctx, &store.ManagedObject{ID: "file-a", Kind: store.ObjectFile, KeyHash: "k3", Object: []byte(`{}`)}); !errors.Is(err, store.ErrConflict) {
		t.Fatalf("a taken id: %v", err)
	}
	got, err := s.GetObject(ctx, store.ObjectFile, "file-a")
	if err != nil || got.KeyHash != "k1" || got.UserID != "u1" || got.TeamID != "t1" || got.ModelGroup != "gpt-4" ||
		got.Deployment != "d1" || got.Provider != "openai" || string(got.Object) != `{"id":"file-a"}` || !got.CreatedAt.Equal(base) || got.Charged {
		t.Fatalf("get: %+v %v", got, err)
	}
	if got, err := s.GetObject(ctx, store.ObjectFile, "file-c"); err != nil || got.ParentID != "batch_a" {
		t.Fatalf("an output file's batch: %+v %v", got, err)
	}
	if _, err := s.GetObject(ctx, store.ObjectBatch, "file-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a file read as a batch: %v", err)
	}
	ids := func(f store.ObjectFilter) string {
		t.Helper()
		objs, err := s.ListObjects(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		out := ""
		for _, o := range objs {
			out += o.ID + " "
		}
		return out
	}
	if g := ids(store.ObjectFilter{Kind: store.ObjectFile, KeyHash: "k1"}); g != "file-c file-a " {
		t.Fatalf("k1's files: %q", g)
	}
	if g := ids(store.ObjectFilter{Kind: store.ObjectFile}); g != "file-c file-b file-a " {
		t.Fatalf("every file: %q", g)
	}
	if g := ids(store.ObjectFilter{Kind: store.ObjectFile, Limit: 1, After: "file-c"}); g != "file-b " {
		t.Fatalf("page after file-c: %q", g)
	}
	if g := ids(store.ObjectFilter{Kind: store.ObjectBatch, KeyHash: "k2"}); g != "" {
		t.Fatalf("k2's batches: %q", g)
	}
	// A cursor naming another key's object, or another kind's, pages like
	// an id that does not exist: the listing does not reveal it.
	unknown := ids(store.ObjectFilter{Kind: store.ObjectFile, KeyHash: "k2", After: "file-nope"})
	for _, after := range []string{"file-c", "batch_a"} {
		if g := ids(store.ObjectFilter{Kind: store.ObjectFile, KeyHash: "k2", After: after}); g != unknown {
			t.Fatalf("k2's files after %s: %q, after an unknown id: %q", after, g, unknown)
		}
	}
	if err := s.UpdateObject(ctx, store.ObjectFile, "file-a", []byte(`{"id":"file-a","status":"processed"}`)); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetObject(ctx, store.ObjectFile, "file-a"); string(got.Object) != `{"id":"file-a","status":"processed"}` {
		t.Fatalf("after update: %s", got.Object)
	}
	if err := s.UpdateObject(ctx, store.ObjectFile, "nope", []byte(`{}`)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("updating a missing object: %v", err)
	}
	if err := s.DeleteObject(ctx, store.ObjectFile, "file-a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteObject(ctx, store.ObjectFile, "file-a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleting twice: %v", err)
	}
}

// markChargedOnce: of many concurrent MarkCharged calls on one batch,
// exactly one wins, and its cost is the one kept.
func markChargedOnce(t *testing.T, s store.Store) {
	if err := s.PutObject(ctx, &store.ManagedObject{ID: "batch_x", Kind: store.ObjectBatch, KeyHash: "k1", Object: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.MarkCharged(ctx, "file-none", 1); ok || err != nil {
		t.Fatalf("charging a missing batch: %v %v", ok, err)
	}
	var wins atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := s.MarkCharged(ctx, "batch_x", 0.25)
			if err != nil {
				t.Error(err)
			}
			if ok {
				wins.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := wins.Load(); n != 1 {
		t.Fatalf("%d callers charged the batch, want 1", n)
	}
	got, err := s.GetObject(ctx, store.ObjectBatch, "batch_x")
	if err != nil || !got.Charged || got.Cost != 0.25 {
		t.Fatalf("after charging: %+v %v", got, err)
	}
}
