package auth

import (
	"context"
	"testing"

	"github.com/tollgate/tollgate/internal/config"
	"github.com/tollgate/tollgate/internal/store"
)

// TestEndUserAsksTheMissPathOnlyWhenMissing: an end user in the snapshot
// is served from it; one missing is asked of EndUserMiss with the
// request's key, which may load it; with the database unreachable, for no
// `user` or a request without a key it is not asked.
func TestEndUserAsksTheMissPathOnlyWhenMissing(t *testing.T) {
	budget := 1.0
	snap := NewSnapshot(&store.Snapshot{EndUsers: []*store.EndUser{{UserID: "here"}}})
	var asked []string
	down := false
	a := NewAuthenticator(&config.Config{}, snap, Options{
		StoreDown: func() bool { return down },
		EndUserMiss: func(_ context.Context, keyHash, id string) bool {
			if keyHash != "kh" {
				t.Errorf("asked about %s with key %q", id, keyHash)
			}
			asked = append(asked, id)
			if id != "elsewhere" {
				return false
			}
			snap.PutEndUser(&store.EndUser{UserID: id, Limits: store.Limits{MaxBudget: &budget}})
			return true
		},
	})
	ctx := context.Background()
	p := &Principal{KeyHash: "kh"}
	if e := a.EndUser(ctx, nil, "keyless"); e != nil {
		t.Fatalf("keyless: %+v", e)
	}
	if e := a.EndUser(ctx, &Principal{}, "keyless"); e != nil {
		t.Fatalf("keyless: %+v", e)
	}
	if e := a.EndUser(ctx, p, "here"); e == nil || e.UserID != "here" {
		t.Fatalf("here: %+v", e)
	}
	if e := a.EndUser(ctx, p, "nobody"); e != nil {
		t.Fatalf("nobody: %+v", e)
	}
	if e := a.EndUser(ctx, p, "elsewhere"); e == nil || e.MaxBudget == nil || *e.MaxBudget != 1 {
		t.Fatalf("elsewhere: %+v", e)
	}
	if e := a.EndUser(ctx, p, ""); e != nil {
		t.Fatalf("no user: %+v", e)
	}
	down = true
	if e := a.EndUser(ctx, p, "unknown-while-down"); e != nil {
		t.Fatalf("unknown-while-down: %+v", e)
	}
	if e := a.EndUser(ctx, p, "elsewhere"); e == nil { // loaded: the snapshot answers
		t.Fatal("elsewhere forgotten")
	}
	if want := []string{"nobody", "elsewhere"}; len(asked) != len(want) || asked[0] != want[0] || asked[1] != want[1] {
		t.Fatalf("asked %q; want %q", asked, want)
	}
}
