package admin_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// teamUpdatesFail is a store whose UpdateTeam always fails, as a database
// that goes away for a moment would.
type teamUpdatesFail struct{ store.Store }

func (teamUpdatesFail) UpdateTeam(context.Context, *store.Team) error {
	return errors.New("team update refused by the test")
}

// TestUserDeleteIsWhole: /user/delete takes the user out of her teams in
// the store's transaction that deletes her. The API did it after that
// transaction, with a team update of its own; when that failed the request
// answered 500 with the user and her keys gone and her memberships (and
// member budgets) left, which a user created again under the id inherited.
func TestUserDeleteIsWhole(t *testing.T) {
	run := func(t *testing.T, st store.Store) {
		e := start(t, seedConfig, teamUpdatesFail{st})
		key := e.newUser("leaver", "internal_user")
		if s, out := e.do("POST", "/team/new", "sk-1234", `{"team_id": "stays", "members_with_roles": [{"user_id": "leaver", "role": "admin"}, {"user_id": "other", "role": "user"}]}`); s != 200 {
			t.Fatalf("team/new: %d %v", s, out)
		}
		if s, out := e.do("POST", "/user/delete", "sk-1234", `{"user_ids": ["leaver"]}`); s != 200 {
			t.Fatalf("user/delete: %d %v", s, out)
		}
		if s, _ := e.chat(key, "gpt-4"); s != 401 {
			t.Fatalf("key of a deleted user: %d", s)
		}
		if team, err := st.GetTeam(context.Background(), "stays"); err != nil || len(team.Members) != 1 || team.Members[0].UserID != "other" {
			t.Fatalf("stored team after the deletion: %v %v", team, err)
		}
		_, out := e.do("GET", "/team/info?team_id=stays", "sk-1234", "")
		info, _ := out["team_info"].(map[string]any)
		if got := toJSON(info["members_with_roles"]); got != `[{"role":"user","user_id":"other"}]` {
			t.Fatalf("team/info after the deletion: %s", got)
		}
	}
	t.Run("sqlite", func(t *testing.T) {
		run(t, storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db")))
	})
	t.Run("postgres", func(t *testing.T) {
		pg := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
		if pg == "" {
			t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run")
		}
		run(t, storetest.OpenPostgres(t, pg))
	})
}
