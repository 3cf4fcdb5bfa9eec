package admin_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// TestSpendLogsModelAndStatusFilters: /spend/logs keeps the rows of one
// model group (model=) and of one outcome (status=success, failure or a
// code), lists rows even with both dates, refuses a bad status with a 400,
// and an internal user's filter never reaches beyond her own rows.
func TestSpendLogsModelAndStatusFilters(t *testing.T) {
	engines(t, seedConfig, func(t *testing.T, e *env) {
		s, out := e.do("POST", "/user/new", "sk-1234", `{"user_id": "u-filter", "user_role": "internal_user"}`)
		if s != 200 {
			t.Fatalf("user/new: %d %v", s, out)
		}
		own, _ := out["key"].(string)
		now := time.Now()
		rows := []store.SpendLog{
			{RequestID: "f-ok-a", KeyHash: "h1", UserID: "u-filter", ModelGroup: "model-a", Status: 200},
			{RequestID: "f-429-b", KeyHash: "h1", UserID: "u-filter", ModelGroup: "model-b", Status: 429},
			{RequestID: "f-500-a", KeyHash: "h2", UserID: "someone-else", ModelGroup: "model-a", Status: 500},
			{RequestID: "f-0-b", KeyHash: "h2", UserID: "someone-else", ModelGroup: "model-b", Status: 0},
		}
		for i := range rows {
			at := now.Add(time.Duration(i) * time.Millisecond)
			rows[i].StartedAt, rows[i].EndedAt = at, at
		}
		if err := e.store.ApplySpend(context.Background(), rows); err != nil {
			t.Fatal(err)
		}
		ids := func(path, key string) string {
			t.Helper()
			var logs []tagLog
			if s := e.getJSON(path, key, &logs); s != 200 {
				t.Fatalf("%s: %d", path, s)
			}
			got := ""
			for i := len(logs) - 1; i >= 0; i-- {
				if got != "" {
					got += " "
				}
				got += logs[i].CallID
			}
			return got
		}
		today := now.UTC().Format(time.DateOnly)
		for _, c := range []struct{ path, key, want string }{
			{"/spend/logs?model=model-a", "sk-1234", "f-ok-a f-500-a"},
			{"/spend/logs?status=failure", "sk-1234", "f-429-b f-500-a f-0-b"},
			{"/spend/logs?status=success", "sk-1234", "f-ok-a"},
			{"/spend/logs?status=429", "sk-1234", "f-429-b"},
			{"/spend/logs?model=model-b&status=failure", "sk-1234", "f-429-b f-0-b"},
			{"/spend/logs?model=model-a&start_date=" + today + "&end_date=" + today, "sk-1234", "f-ok-a f-500-a"},
			// Her own rows only, whatever she filters on.
			{"/spend/logs?status=failure", own, "f-429-b"},
			{"/spend/logs?model=model-a&user_id=someone-else", own, "f-ok-a"},
		} {
			if got := ids(c.path, c.key); got != c.want {
				t.Errorf("%s as %s: %q, want %q", c.path, map[bool]string{true: "admin", false: "internal user"}[c.key == "sk-1234"], got, c.want)
			}
		}
		for _, bad := range []string{"maybe", "42", "2000"} {
			s, out := e.do("GET", "/spend/logs?status="+bad, "sk-1234", "")
			if s != 400 || fmt.Sprint(out["error"].(map[string]any)["param"]) != "status" {
				t.Errorf("status=%s: %d %v", bad, s, out)
			}
		}
	})
}
