package sqlstore_test

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
	"github.com/tollgate/tollgate/internal/store/sqlstore"
	"github.com/tollgate/tollgate/internal/store/storetest"
)

// spendReadBase is the first started_at of the random rows.
var spendReadBase = time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)

// spendReadTags are the tags rows carry and filters ask for: JSON
// punctuation, HTML characters (escaped by json.Marshal) and non-ASCII.
var spendReadTags = []string{"a", "b", "ab", `a"b`, "a,b", "[x", "<t>", "é", `x\`, "b]"}

// randomListedRows are n spend rows with ties in started_at (a few hundred
// distinct instants, some a microsecond apart), call ids in an order
// unrelated to time, answer ids from a small pool (some rows share one,
// some have none), owners, model groups, statuses and tags from small
// pools, and content of various sizes.
func randomListedRows(r *rand.Rand, n int) []store.SpendLog {
	pick := func(vals ...string) string { return vals[r.IntN(len(vals))] }
	rows := make([]store.SpendLog, n)
	for i, p := range r.Perm(n) {
		started := spendReadBase.Add(time.Duration(r.IntN(n/3+1)) * time.Second)
		if r.IntN(5) == 0 {
			started = started.Add(time.Microsecond)
		}
		l := store.SpendLog{
			RequestID:  fmt.Sprintf("call-%05d", p),
			KeyHash:    pick("", "k1", "k2", "k3"),
			UserID:     pick("", "u1", "u2"),
			TeamID:     pick("", "t1", "t2"),
			EndUser:    pick("", "e1"),
			ModelGroup: pick("gpt-a", "gpt-b", ""),
			Deployment: "d",
			Provider:   "openai",
			Status:     []int{0, 200, 200, 201, 400, 429, 500}[r.IntN(7)],
			Cost:       float64(r.IntN(1000)) / 1e4,
			StartedAt:  started,
			EndedAt:    started.Add(time.Duration(r.IntN(3000)) * time.Millisecond),
			CallType:   "acompletion",
		}
		if r.IntN(3) > 0 {
			l.ResponseID = fmt.Sprintf("chatcmpl-%03d", r.IntN(n/2+1))
		}
		for range r.IntN(3) {
			l.RequestTags = append(l.RequestTags, spendReadTags[r.IntN(len(spendReadTags))])
		}
		if r.IntN(4) == 0 {
			l.Metadata = map[string]any{"team": "x", "n": 1.5}
		}
		if r.IntN(2) == 0 {
			l.Messages = json.RawMessage(fmt.Sprintf(`[{"role":"user","content":%q}]`, strings.Repeat("m", r.IntN(400))))
		}
		if r.IntN(2) == 0 {
			l.Response = json.RawMessage(fmt.Sprintf(`{"content":%q}`, strings.Repeat("r", r.IntN(400))))
		}
		if l.Status >= 400 {
			l.ErrorInformation = &store.ErrorInformation{ErrorCode: strconv.Itoa(l.Status), ErrorMessage: "upstream said no"}
		}
		rows[i] = l
	}
	return rows
}

func byStarted(a, b store.SpendLog) int { return a.StartedAt.Compare(b.StartedAt) }

// writeOrder is rows in about the order a writer gets them (by started_at
// with every row moved up to a few dozen places), so that small blocks'
// started ranges overlap.
func writeOrder(r *rand.Rand, rows []store.SpendLog) []store.SpendLog {
	out := slices.Clone(rows)
	slices.SortStableFunc(out, byStarted)
	for i := range out {
		j := min(len(out)-1, i+r.IntN(40))
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// randomSpendFilter is a filter drawn over rows' values: each field set or
// not, values present in the rows or not, time bounds on a row's instant
// (exactly) or between, pages near the start and past the end, content
// budgets from none to a few rows'.
func randomSpendFilter(r *rand.Rand, rows []store.SpendLog) store.SpendFilter {
	var f store.SpendFilter
	one := func(p int) bool { return r.IntN(p) == 0 }
	row := func() *store.SpendLog { return &rows[r.IntN(len(rows))] }
	if one(6) {
		switch l := row(); {
		case one(2) && l.ResponseID != "":
			f.RequestID = l.ResponseID
		case one(8):
			f.RequestID = "call-none"
		default:
			f.RequestID = l.RequestID
		}
	}
	set := func(p int, dst *string, vals ...string) {
		if one(p) {
			*dst = vals[r.IntN(len(vals))]
		}
	}
	set(4, &f.KeyHash, "k1", "k2", "k3", "k9")
	set(5, &f.UserID, "u1", "u2", "u9")
	set(6, &f.TeamID, "t1", "t2")
	set(7, &f.EndUser, "e1", "e9")
	set(5, &f.ModelGroup, "gpt-a", "gpt-b", "gpt-z")
	set(4, &f.Status, "success", "failure", "200", "429", "0", "404")
	set(4, &f.Tag, append(slices.Clone(spendReadTags), "zz", `"a"`, `a"`)...)
	instant := func() time.Time {
		t := row().StartedAt
		switch r.IntN(3) {
		case 0:
			return t
		case 1:
			return t.Add(time.Microsecond)
		}
		return t.Add(-time.Duration(r.IntN(2000)) * time.Millisecond)
	}
	if one(2) {
		f.From = instant()
	}
	if one(2) {
		f.To = instant()
	}
	f.Size = []int{0, 1, 3, 7, 50, 1000}[r.IntN(6)]
	f.Number = []int{0, 1, 2, 3, 9}[r.IntN(5)]
	f.ContentBytes = []int{0, 0, 1, 200, 1000, 5000}[r.IntN(6)]
	return f
}

// referenceList is ListSpendLogs over rows in Go: the rows f keeps (a tag
// compared with the row's decoded tags), ordered newest first then by call
// id, paged, and the content budget applied in page order. It returns the
// call ids listed, which rows came without content, and the total.
func referenceList(rows []store.SpendLog, f store.SpendFilter) (ids []string, omitted []bool, total int) {
	var kept []store.SpendLog
	for _, l := range rows {
		switch {
		case f.RequestID != "" && l.RequestID != f.RequestID && l.ResponseID != f.RequestID,
			f.KeyHash != "" && l.KeyHash != f.KeyHash,
			f.UserID != "" && l.UserID != f.UserID,
			f.TeamID != "" && l.TeamID != f.TeamID,
			f.EndUser != "" && l.EndUser != f.EndUser,
			f.ModelGroup != "" && l.ModelGroup != f.ModelGroup,
			f.Tag != "" && !slices.Contains(l.RequestTags, f.Tag),
			!f.From.IsZero() && l.StartedAt.Before(f.From),
			!f.To.IsZero() && !l.StartedAt.Before(f.To):
			continue
		}
		switch f.Status {
		case "":
		case "success":
			if l.Status <= 0 || l.Status >= 400 {
				continue
			}
		case "failure":
			if l.Status < 400 && l.Status != 0 {
				continue
			}
		default:
			if strconv.Itoa(l.Status) != f.Status {
				continue
			}
		}
		kept = append(kept, l)
	}
	slices.SortFunc(kept, func(a, b store.SpendLog) int {
		return cmp.Or(b.StartedAt.Compare(a.StartedAt), strings.Compare(a.RequestID, b.RequestID))
	})
	limit, offset := f.PageBounds()
	content := 0
	for i := offset; i < min(offset+limit, len(kept)); i++ {
		l := kept[i]
		omit := false
		if n := len(l.Messages) + len(l.Response); f.ContentBytes > 0 && n > 0 && content+n > f.ContentBytes {
			omit = true
		} else {
			content += n
		}
		ids, omitted = append(ids, l.RequestID), append(omitted, omit)
	}
	return ids, omitted, len(kept)
}

// blockStore is a fresh SQLite store holding rows as spend blocks of at
// most perBlock rows.
func blockStore(t testing.TB, rows []store.SpendLog, perBlock int) *sqlstore.DB {
	t.Helper()
	s := storetest.OpenSQLite(t, filepath.Join(t.TempDir(), "tollgate.db"))
	if err := sqlstore.StoreSpendBlocks(context.Background(), s, rows, perBlock); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestSpendBlocksListLikeReference: SQLite's listing from spend blocks
// (many small blocks with overlapping time ranges, and full-sized ones)
// gives, for random filters and pages, the rows, order, total and content
// budget of the same listing done in Go.
func TestSpendBlocksListLikeReference(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, perBlock := range []int{2, 9, 64, 0} {
		t.Run(fmt.Sprint("perBlock=", perBlock), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(uint64(perBlock), 31))
			rows := randomListedRows(r, 500)
			written := writeOrder(r, rows)
			s := blockStore(t, written, perBlock)
			// The blocks' newest and oldest instants: bounds exactly on a
			// block's range decide whether it counts without decoding.
			var edges []time.Time
			for part := range slices.Chunk(written, cmp.Or(perBlock, 512)) {
				edges = append(edges, slices.MaxFunc(part, byStarted).StartedAt, slices.MinFunc(part, byStarted).StartedAt)
			}
			byID := map[string]*store.SpendLog{}
			for i := range rows {
				byID[rows[i].RequestID] = &rows[i]
			}
			for i := range 300 {
				f := randomSpendFilter(r, rows)
				if i%4 == 0 {
					// Unfiltered, a small page, bounds on block edges.
					f = store.SpendFilter{To: edges[r.IntN(len(edges))], Page: store.Page{Size: 1 + r.IntN(5), Number: 1 + r.IntN(3)}}
					if r.IntN(2) == 0 {
						f.From = edges[r.IntN(len(edges))]
					}
				}
				got, total, err := s.ListSpendLogs(ctx, f)
				if err != nil {
					t.Fatalf("filter %d %+v: %v", i, f, err)
				}
				ids, omitted, want := referenceList(rows, f)
				if total != want {
					t.Fatalf("filter %d %+v: total %d, want %d", i, f, total, want)
				}
				var gotIDs []string
				var gotOmitted []bool
				for _, l := range got {
					gotIDs, gotOmitted = append(gotIDs, l.RequestID), append(gotOmitted, l.ContentOmitted)
					in := byID[l.RequestID]
					if in == nil || l.ResponseID != in.ResponseID || !l.StartedAt.Equal(in.StartedAt) || !slices.Equal(l.RequestTags, in.RequestTags) {
						t.Fatalf("filter %d: row %+v does not hold what was written (%+v)", i, l, in)
					}
					if !l.ContentOmitted && (string(l.Messages) != string(in.Messages) || string(l.Response) != string(in.Response)) {
						t.Fatalf("filter %d: row %s content %q %q, want %q %q", i, l.RequestID, l.Messages, l.Response, in.Messages, in.Response)
					}
				}
				if !slices.Equal(gotIDs, ids) || !slices.Equal(gotOmitted, omitted) {
					t.Fatalf("filter %d %+v:\n got %v %v\nwant %v %v", i, f, gotIDs, gotOmitted, ids, omitted)
				}
			}
		})
	}
}

// TestSpendBlocksListLikePostgres: the same random rows stored as spend
// blocks on SQLite and as spend_logs rows on PostgreSQL (ApplySpend) list
// the same, row for row and field for field, with the same total, for
// hundreds of random filters and pages; a filter one engine refuses the
// other refuses too.
func TestSpendBlocksListLikePostgres(t *testing.T) {
	t.Parallel()
	base := os.Getenv("TOLLGATE_TEST_POSTGRES_URL")
	if base == "" {
		t.Skip("TOLLGATE_TEST_POSTGRES_URL is not set: skipping the comparison with PostgreSQL's spend_logs listing (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	ctx := context.Background()
	r := rand.New(rand.NewPCG(7, 31))
	rows := randomListedRows(r, 900)
	lite := blockStore(t, writeOrder(r, rows), 13)
	pg := storetest.OpenPostgres(t, base)
	for part := range slices.Chunk(rows, 250) {
		if err := pg.ApplySpend(ctx, part); err != nil {
			t.Fatal(err)
		}
	}
	filters := 600
	if raceOn {
		filters = 150
	}
	for i := range filters {
		f := randomSpendFilter(r, rows)
		if i%50 == 0 {
			f.Status = "sucess" // refused by both
		}
		want, wantTotal, wantErr := pg.ListSpendLogs(ctx, f)
		got, total, err := lite.ListSpendLogs(ctx, f)
		if (err != nil) != (wantErr != nil) {
			t.Fatalf("filter %d %+v: error %v, PostgreSQL's %v", i, f, err, wantErr)
		}
		if total != wantTotal {
			t.Fatalf("filter %d %+v: total %d, PostgreSQL's %d", i, f, total, wantTotal)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("filter %d %+v: %d rows differ from PostgreSQL's %d\n got %+v\nwant %+v", i, f, len(got), len(want), got, want)
		}
	}
}

// TestSpendBlocksCorruptIsAnError: a block whose data does not decode,
// whose row count disagrees with its rows or whose range does not hold
// them fails the listing with an error naming the block, rather than
// listing fewer rows or panicking.
func TestSpendBlocksCorruptIsAnError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, damage, want string
	}{
		{"truncated data", `UPDATE spend_blocks SET data = substr(data, 1, length(data) - 5) WHERE id = 2`, "spend block 2"},
		{"garbage data", `UPDATE spend_blocks SET data = x'ffffffffffffffffffffff' WHERE id = 2`, "spend block 2"},
		{"row count", `UPDATE spend_blocks SET row_count = row_count + 1 WHERE id = 2`, "spend block 2"},
		{"range", `UPDATE spend_blocks SET min_started = max_started WHERE id = 2`, "spend block 2"},
		{"format", `UPDATE spend_blocks SET format = 9 WHERE id = 2`, "spend block 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			rows := randomListedRows(rand.New(rand.NewPCG(1, 2)), 60)
			s := blockStore(t, rows, 20)
			if _, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Size: 1000}}); err != nil || total != 60 {
				t.Fatalf("before: total %d, %v", total, err)
			}
			if err := sqlstore.Exec(ctx, s, tt.damage); err != nil {
				t.Fatal(err)
			}
			got, total, err := s.ListSpendLogs(ctx, store.SpendFilter{Page: store.Page{Size: 1000}})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("listing a damaged block: %d rows, total %d, error %v; want an error naming %q", len(got), total, err, tt.want)
			}
		})
	}
}

// TestSpendBlocksListCancelled: a listing whose context has ended returns
// the context's error and no rows.
func TestSpendBlocksListCancelled(t *testing.T) {
	t.Parallel()
	rows := randomListedRows(rand.New(rand.NewPCG(3, 4)), 300)
	s := blockStore(t, rows, 10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got, total, err := s.ListSpendLogs(ctx, store.SpendFilter{KeyHash: "k1"})
	if !errors.Is(err, context.Canceled) || got != nil || total != 0 {
		t.Fatalf("cancelled listing: %d rows, total %d, error %v; want context.Canceled", len(got), total, err)
	}
}

// TestSpendBlocksTagOnStoredText: the tag filter compares the stored JSON
// text, as SQLite's spend_logs statement did (these answers are that
// statement's), where tags of invalid UTF-8 are all written "\ufffd": a
// filter of one such tag finds a row of another (the blocks' attribute
// filter, which holds the tags as given, must not skip its block), and not
// a row of the valid U+FFFD, written as itself. (PostgreSQL refuses such
// a tag: its batch fails on the tag rollup.)
func TestSpendBlocksTagOnStoredText(t *testing.T) {
	t.Parallel()
	at := spendReadBase
	rows := []store.SpendLog{
		{RequestID: "invalid", RequestTags: []string{"\xff"}, StartedAt: at, EndedAt: at},
		{RequestID: "replacement", RequestTags: []string{"\uFFFD"}, StartedAt: at, EndedAt: at},
	}
	s := blockStore(t, rows, 1)
	tests := []struct {
		tag  string
		want []string
	}{
		{"\xfe", []string{"invalid"}},
		{"\xff", []string{"invalid"}},
		{"\uFFFD", []string{"replacement"}},
	}
	for _, tt := range tests {
		got, total, err := s.ListSpendLogs(context.Background(), store.SpendFilter{Tag: tt.tag})
		var ids []string
		for _, l := range got {
			ids = append(ids, l.RequestID)
		}
		if err != nil || total != len(tt.want) || !slices.Equal(ids, tt.want) {
			t.Errorf("tag %q: %v (total %d, %v), want %v", tt.tag, ids, total, err, tt.want)
		}
	}
}

// endingContext is a context that ends (Err) after its Err has been
// asked a number of times, without a Done channel: a listing sees it end
// only by asking.
type endingContext struct {
	context.Context
	left int
}

// Deadline is an hour away: the store takes the context as it is rather
// than bounding it with one of its own (whose Err would not ask this one).
func (c *endingContext) Deadline() (time.Time, bool) { return time.Now().Add(time.Hour), true }

func (c *endingContext) Err() error {
	if c.left--; c.left < 0 {
		return context.Canceled
	}
	return nil
}

// TestSpendBlocksListStopsBetweenBlocks: a listing walking many blocks
// asks its context between blocks and stops with its error once it ends.
func TestSpendBlocksListStopsBetweenBlocks(t *testing.T) {
	t.Parallel()
	rows := randomListedRows(rand.New(rand.NewPCG(5, 6)), 300)
	s := blockStore(t, rows, 10) // 30 blocks, every one walked for the key's total
	got, total, err := s.ListSpendLogs(&endingContext{Context: context.Background(), left: 10}, store.SpendFilter{KeyHash: "k1"})
	if !errors.Is(err, context.Canceled) || got != nil || total != 0 {
		t.Fatalf("listing whose context ended after 10 asks: %d rows, total %d, error %v; want context.Canceled", len(got), total, err)
	}
}
