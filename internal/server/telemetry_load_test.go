package server

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestConcurrentCallsWithTelemetryBookOnce: 40 calls at once (whole
// answers, streams, retries, fallbacks, clients leaving mid-stream, upstream
// errors), then a shutdown: with content logging and a webhook on, the
// store holds exactly the rows the same calls book with both off, and the
// webhook got exactly one payload per call.
func TestConcurrentCallsWithTelemetryBookOnce(t *testing.T) {
	var answered atomic.Int64 // calls answered 200 in the last run, cut streams included
	run := func(t *testing.T, url, key string, _ func()) int {
		answered.Store(0)
		ok := func(code int) {
			if code == 200 {
				answered.Add(1)
			}
		}
		var wg sync.WaitGroup
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				switch i % 5 {
				case 0:
					ok(moneyChat(t, url, key, "ok", false))
				case 1:
					ok(moneyChat(t, url, key, "flaky", true))
				case 2:
					ok(moneyChat(t, url, key, "down", true))
				case 3:
					ok(moneyChat(t, url, key, "bad", false))
				case 4:
					body, _ := readChunks(t, url, key, 2)
					body.Close()
					ok(200)
				}
			}(i)
		}
		wg.Wait()
		return 200
	}
	stores(t, func(t *testing.T, st store.Store) {
		off := moneyCase(t, st, false, run)
		offAnswered := int(answered.Load())
		on := moneyCase(t, st, true, run)
		onAnswered := int(answered.Load())
		// Calls refused upstream have a failure row without cost.
		if n := answeredCount(t, off.rows); n != offAnswered {
			t.Errorf("telemetry off: %d answered rows for %d answered calls", n, offAnswered)
		}
		if n := answeredCount(t, on.rows); n != onAnswered {
			t.Errorf("telemetry on: %d answered rows for %d answered calls", n, onAnswered)
		}
		if len(on.rows) != len(off.rows) {
			t.Errorf("rows: on %d, off %d", len(on.rows), len(off.rows))
		}
		sum := func(rows []store.SpendLog) (s float64) {
			for _, r := range rows {
				s += r.Cost
			}
			return s
		}
		// Cut streams are estimated by what they carried, which varies a
		// little between runs; the whole answers are exact.
		exact := func(rows []store.SpendLog) (n int) {
			for _, r := range rows {
				if !r.UsageEstimated {
					n++
				}
			}
			return n
		}
		if onAnswered == offAnswered && exact(on.rows) != exact(off.rows) {
			t.Errorf("exactly-priced rows: on %d, off %d (spend on %v, off %v)", exact(on.rows), exact(off.rows), sum(on.rows), sum(off.rows))
		}
		ids := map[string]int{}
		for _, p := range on.payloads {
			ids[fmt.Sprint(p["id"])]++
		}
		if len(on.payloads) != 40 || len(ids) != 40 {
			var dup []string
			for id, n := range ids {
				if n > 1 {
					dup = append(dup, id)
				}
			}
			t.Errorf("%d payloads for 40 calls (%d distinct; twice: %s)", len(on.payloads), len(ids), strings.Join(dup, ","))
		}
	})
}

// answeredCount is the rows of calls that got an answer (a status below
// 400, or tokens booked, as for a stream the client left); the others must
// be failure rows without cost.
func answeredCount(t *testing.T, rows []store.SpendLog) int {
	t.Helper()
	n := 0
	for _, r := range rows {
		if answered(r) {
			n++
		} else if r.Cost != 0 || r.ErrorInformation == nil {
			t.Errorf("failure row %+v: want cost 0 and error_information", r)
		}
	}
	return n
}

func answered(r store.SpendLog) bool {
	return r.Status < 400 || r.PromptTokens+r.CompletionTokens > 0
}

// answeredRows are rows' answered ones (answered), after checking
// that the others - failures, want of them - cost nothing.
func answeredRows(t *testing.T, rows []store.SpendLog, failures int) []store.SpendLog {
	t.Helper()
	var out []store.SpendLog
	for _, r := range rows {
		if answered(r) {
			out = append(out, r)
		} else if r.Cost != 0 || r.ErrorInformation == nil {
			t.Errorf("failure row %+v: want cost 0 and error_information", r)
		}
	}
	if got := len(rows) - len(out); got != failures {
		t.Errorf("%d failure rows, want %d", got, failures)
	}
	return out
}
