package sqlstore

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// randomSpendLog is a row with every column drawn at random, zero or not,
// as ApplySpend may get it.
func randomSpendLog(r *rand.Rand, i int) store.SpendLog {
	pick := func(vals ...string) string { return vals[r.IntN(len(vals))] }
	n := func() int64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return -r.Int64N(1 << 40)
		}
		return r.Int64N(1 << 50)
	}
	f := func() float64 {
		switch r.IntN(4) {
		case 0:
			return 0
		case 1:
			return math.Copysign(0, -1)
		}
		return r.Float64() * 100
	}
	at := func() time.Time {
		if r.IntN(8) == 0 {
			return time.Time{}
		}
		return time.UnixMicro(1_700_000_000_000_000 + r.Int64N(1<<40)).UTC()
	}
	l := store.SpendLog{
		RequestID: fmt.Sprintf("call-%d-%x", i, r.Uint64()), KeyHash: pick("", "k1", "k2", "ключ"), UserID: pick("", "u1", "u\x002"),
		TeamID: pick("", "t1"), EndUser: pick("", "e1", "e\"2"), ModelGroup: pick("", "gpt-4", "claude"), Deployment: pick("", "d1"),
		Provider: pick("", "openai"), PromptTokens: n(), CompletionTokens: n(), CachedTokens: n(), Cost: f(), Status: int(n() % 600),
		LatencyMS: n(), StartedAt: at(), EndedAt: at(), ReportedPromptTokens: n(), ReportedCompletionTokens: n(),
		UsageClamped: r.IntN(2) == 0, UsageEstimated: r.IntN(2) == 0, ResponseID: pick("", "chatcmpl-1", fmt.Sprintf("msg_%d", i)),
		CallType: pick("", "completion"), CacheHit: r.IntN(2) == 0, CacheKey: pick("", "ck"), SavedCost: f(),
	}
	if r.IntN(2) == 0 {
		l.RequestTags = []string{pick("a", "b,c"), pick("\"q\"", "d")}
	}
	if r.IntN(2) == 0 {
		l.Metadata = map[string]any{"x": pick("1", "two"), "n": 3.5}
	}
	if r.IntN(2) == 0 {
		l.Messages = json.RawMessage(`[{"role":"user","content":"hi"}]`)
	}
	if r.IntN(2) == 0 {
		l.Response = json.RawMessage(`{"choices":[]}`)
	}
	if r.IntN(2) == 0 {
		l.Guardrails = json.RawMessage(`[{"guardrail":"g","mode":"pre_call"}]`)
	}
	if r.IntN(2) == 0 {
		l.ErrorInformation = &store.ErrorInformation{ErrorCode: "502", ErrorClass: "APIConnectionError", LLMProvider: "openai", ErrorMessage: "boom"}
	}
	return l
}

// asListed is l as a listing returns it: times in whole microseconds (UTC),
// the JSON columns through their stored text, negative zero as written.
func asListed(t *testing.T, l store.SpendLog) store.SpendLog {
	t.Helper()
	l.StartedAt, l.EndedAt = fromMicros(micros(l.StartedAt)), fromMicros(micros(l.EndedAt))
	if l.Metadata != nil {
		b, _ := json.Marshal(l.Metadata)
		l.Metadata = nil
		if err := json.Unmarshal(b, &l.Metadata); err != nil {
			t.Fatal(err)
		}
	}
	l.Budgets = nil
	return l
}

func TestSpendBlockRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 200 {
		b := newSpendBlock()
		var want []store.SpendLog
		for i := range 1 + r.IntN(40) {
			l := randomSpendLog(r, round*100+i)
			b.add(&l)
			want = append(want, asListed(t, l))
		}
		if b.rows != len(want) {
			t.Fatalf("rows %d, want %d", b.rows, len(want))
		}
		d := spendRowReader{data: b.data}
		var row spendRow
		for i, w := range want {
			if !d.next(&row) {
				t.Fatalf("round %d: row %d not decoded (%v)", round, i, d.err)
			}
			if got := row.log(false); !reflect.DeepEqual(got, w) {
				t.Fatalf("round %d row %d:\n got %+v\nwant %+v", round, i, got, w)
			}
			if got := row.log(true); !got.ContentOmitted || got.Messages != nil || got.Response != nil {
				t.Fatalf("content not omitted: %+v", got)
			}
			if n := len(w.Messages) + len(w.Response); row.contentBytes() != n {
				t.Fatalf("content bytes %d, want %d", row.contentBytes(), n)
			}
			if !b.mayHoldID(w.RequestID) || (w.ResponseID != "" && !b.mayHoldID(w.ResponseID)) {
				t.Fatalf("id filter lost %q / %q", w.RequestID, w.ResponseID)
			}
			for _, a := range []struct {
				kind byte
				v    string
			}{{attrKey, w.KeyHash}, {attrUser, w.UserID}, {attrTeam, w.TeamID}, {attrEndUser, w.EndUser}, {attrModel, w.ModelGroup}} {
				if a.v != "" && !b.mayHoldAttr(a.kind, a.v) {
					t.Fatalf("attribute filter lost %c %q", a.kind, a.v)
				}
			}
			for _, tag := range w.RequestTags {
				if !b.mayHoldAttr(attrTag, tag) {
					t.Fatalf("attribute filter lost tag %q", tag)
				}
			}
			s, e := micros(w.StartedAt), micros(w.EndedAt)
			if s < b.minStarted || s > b.maxStarted || e < b.minEnded || e > b.maxEnded {
				t.Fatalf("row %d outside the block's ranges", i)
			}
		}
		if d.next(&row) || d.err != nil {
			t.Fatalf("past the last row: %v", d.err)
		}
	}
}

// A full block's filters answer "maybe" for an absent item about 1 % of
// the time; past a few percent they would cost listings most of their
// skips.
func TestSpendBlockFilterFalsePositives(t *testing.T) {
	b := newSpendBlock()
	for i := range spendBlockRows {
		l := store.SpendLog{RequestID: fmt.Sprintf("call-%d", i), ResponseID: fmt.Sprintf("chatcmpl-%d", i),
			KeyHash: fmt.Sprintf("k%d", i), UserID: fmt.Sprintf("u%d", i), TeamID: fmt.Sprintf("t%d", i),
			EndUser: fmt.Sprintf("e%d", i), ModelGroup: fmt.Sprintf("m%d", i), RequestTags: []string{fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i), fmt.Sprintf("c%d", i)}}
		b.add(&l)
	}
	if !b.full() {
		t.Fatal("a block of spendBlockRows rows is not full")
	}
	const probes = 20000
	idHits, attrHits := 0, 0
	for i := range probes {
		if b.mayHoldID(fmt.Sprintf("absent-%d", i)) {
			idHits++
		}
		if b.mayHoldAttr(attrKey, fmt.Sprintf("absent-%d", i)) {
			attrHits++
		}
	}
	for name, hits := range map[string]int{"id": idHits, "attribute": attrHits} {
		if rate := float64(hits) / probes; rate > 0.03 {
			t.Errorf("%s filter: %.2f %% false positives at capacity (fill %.2f, %.2f)", name, 100*rate, filterFill(b.ids), filterFill(b.attrs))
		}
	}
	// Kinds are distinct items: a key is not a user of the same name.
	if b.mayHoldAttr(attrUser, "k1") && b.mayHoldAttr(attrTeam, "k1") && b.mayHoldAttr(attrEndUser, "k1") {
		t.Error("attribute kinds not told apart")
	}
}

// Any prefix or corruption of a block's data decodes without a panic and
// ends with an error or the rows it holds.
func TestSpendBlockMalformedData(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := newSpendBlock()
	for i := range 5 {
		l := randomSpendLog(r, i)
		b.add(&l)
	}
	for cut := range len(b.data) {
		d := spendRowReader{data: b.data[:cut]}
		var row spendRow
		n := 0
		for d.next(&row) {
			n++
		}
		if n >= 5 {
			t.Fatalf("cut at %d of %d decoded all rows", cut, len(b.data))
		}
	}
	for range 2000 {
		data := append([]byte(nil), b.data...)
		data[r.IntN(len(data))] ^= byte(1 + r.IntN(255))
		d := spendRowReader{data: data}
		var row spendRow
		for d.next(&row) {
		}
	}
}

// TestSpendBlockFilterBitsUnchanged: the filters are stored, so the bits an
// item sets are the format's: (h1 + i·h2) mod n for i in 0..6, h1 the low
// and h2 the high half (odd) of filterHash, whatever way they are
// computed; and a block grown through growBlockData and reused through
// reset encodes as a new one does.
func TestSpendBlockFilterBitsUnchanged(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{spendIDFilterBytes, spendAttrFilterBytes, 1, 7} {
		got, want := make([]byte, size), make([]byte, size)
		for i := range 2000 {
			s := fmt.Sprintf("item-%d-%x", i, r.Uint64())
			kind := byte(r.IntN(256))
			filterAdd(got, kind, s)
			h, n := filterHash(kind, s), uint64(size)*8
			h1, h2 := h&0xffffffff, h>>32|1
			for j := range uint64(spendFilterHashes) {
				bit := (h1 + j*h2) % n
				want[bit>>3] |= 1 << (bit & 7)
			}
			if !filterHas(want, kind, s) {
				t.Fatalf("size %d: filterHas misses %q", size, s)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("size %d: item %d sets other bits than the format's", size, i)
			}
		}
	}
	reused, fresh := newSpendBlock(), newSpendBlock()
	for i := range 600 {
		l := randomSpendLog(r, i)
		reused.add(&l)
	}
	reused.reset()
	for i := range 300 {
		l := randomSpendLog(r, i)
		reused.add(&l)
		fresh.add(&l)
	}
	if !reflect.DeepEqual(reused, fresh) {
		t.Error("a reset block holds other data or filters than a new one")
	}
}

// BenchmarkSpendBlockAdd is a block's add per row (a row as the gateway
// writes it, with an answer id and all five summary values), and
// "summary" the summary's share of it: the dictionaries and the row's
// part, and the summary's bytes as the writer stores them once a row.
func BenchmarkSpendBlockAdd(b *testing.B) {
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	rows := make([]store.SpendLog, spendBlockRows)
	for i := range rows {
		rows[i] = store.SpendLog{RequestID: fmt.Sprintf("r%09d", i), ResponseID: fmt.Sprintf("chatcmpl-%09d", i), CallType: "acompletion",
			KeyHash: fmt.Sprintf("key-%02d", i%40), UserID: "u", TeamID: "t", ModelGroup: "gpt-4", PromptTokens: 10, CompletionTokens: 8,
			Cost: 0.0001, Status: 200, StartedAt: at.Add(time.Duration(i) * time.Millisecond), EndedAt: at.Add(time.Duration(i) * time.Millisecond)}
	}
	b.Run("add", func(b *testing.B) {
		for b.Loop() {
			blk := newSpendBlock()
			for i := range rows {
				blk.add(&rows[i])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
	})
	// keyed: every row of one virtual key (a 64-digit hash) and its user,
	// as the bench's governed scenario writes them.
	keyed := make([]store.SpendLog, len(rows))
	for i := range keyed {
		keyed[i] = rows[i]
		keyed[i].KeyHash, keyed[i].UserID, keyed[i].TeamID = fmt.Sprintf("%064x", 7), "bench-user", ""
	}
	b.Run("keyed", func(b *testing.B) {
		for b.Loop() {
			blk := newSpendBlock()
			for i := range keyed {
				blk.add(&keyed[i])
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keyed)), "ns/row")
	})
	b.Run("summary", func(b *testing.B) {
		for b.Loop() {
			var s spendSummary
			for i := range rows {
				s.add(&rows[i], micros(rows[i].StartedAt))
			}
			_ = s.bytes()
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(rows)), "ns/row")
	})
}
