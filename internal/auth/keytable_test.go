package auth

import (
	"crypto/sha256"
	"encoding/binary"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

func tableRec(sum [32]byte, spend float64) *keyRec { return &keyRec{sum: sum, spend: spend} }

// checkTable compares t with want (digest -> spend of the record indexed)
// through every read the table has, and checks its invariants: the count,
// the load bounds, and that every entry is reachable from its home without
// crossing an empty slot.
func checkTable(t *testing.T, tb *keyTable, want map[[32]byte]float64, absent [][32]byte) {
	t.Helper()
	if tb.n != len(want) {
		t.Fatalf("n = %d, want %d", tb.n, len(want))
	}
	for sum, spend := range want {
		r := tb.get(&sum)
		if r == nil || r.sum != sum || r.spend != spend {
			t.Fatalf("get(%x) = %+v, want spend %v", sum[:4], r, spend)
		}
	}
	for _, sum := range absent {
		if _, in := want[sum]; in {
			continue
		}
		if r := tb.get(&sum); r != nil {
			t.Fatalf("get(%x) = %+v, want nil", sum[:4], r)
		}
	}
	seen := 0
	tb.each(func(r *keyRec) bool {
		seen++
		if spend, ok := want[r.sum]; !ok || spend != r.spend {
			t.Fatalf("each gave %x spend %v, not in the model", r.sum[:4], r.spend)
		}
		return true
	})
	if seen != len(want) {
		t.Fatalf("each visited %d, want %d", seen, len(want))
	}
	if len(tb.tags) == 0 {
		return
	}
	size := len(tb.tags)
	if size&(size-1) != 0 || len(tb.slots) != size {
		t.Fatalf("size %d/%d is not a power of two", size, len(tb.slots))
	}
	if tb.n*8 > size*7 {
		t.Fatalf("load %d/%d over 7/8", tb.n, size)
	}
	if size > keyTableMin && tb.n*8 < size {
		t.Fatalf("load %d/%d under 1/8", tb.n, size)
	}
	mask := uint64(size - 1)
	for i := range tb.tags {
		if (tb.tags[i] == 0) != (tb.slots[i] == nil) {
			t.Fatalf("slot %d: tag %x with record %v", i, tb.tags[i], tb.slots[i])
		}
		if tb.slots[i] == nil {
			continue
		}
		h, tag := digestHome(&tb.slots[i].sum)
		if tb.tags[i] != tag {
			t.Fatalf("slot %d: tag %x, want %x", i, tb.tags[i], tag)
		}
		for j := h & mask; j != uint64(i); j = (j + 1) & mask {
			if tb.tags[j] == 0 {
				t.Fatalf("slot %d cut off from its home %d by the empty slot %d", i, h&mask, j)
			}
		}
	}
}

// clustered is a digest whose probe starts at home in a table of up to
// 1<<12 slots (bytes 8..15), the rest from seed: many such digests make
// long runs that wrap around the array's end.
func clustered(home uint64, seed uint64) [32]byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[0:], seed)
	binary.LittleEndian.PutUint64(s[8:], home|seed<<12)
	binary.LittleEndian.PutUint64(s[16:], seed*0x9e3779b97f4a7c15)
	return s
}

func TestKeyTableLookupInsertDelete(t *testing.T) {
	var tb keyTable
	want := map[[32]byte]float64{}
	a, b := sha256.Sum256([]byte("a")), sha256.Sum256([]byte("b"))
	if tb.get(&a) != nil {
		t.Fatal("empty table found a record")
	}
	tb.remove(&a) // nothing in: no effect
	checkTable(t, &tb, want, [][32]byte{a, b})

	tb.put(tableRec(a, 1))
	want[a] = 1
	checkTable(t, &tb, want, [][32]byte{b})
	tb.put(tableRec(a, 2)) // a replacement, not a second entry
	want[a] = 2
	checkTable(t, &tb, want, [][32]byte{b})
	tb.put(tableRec(b, 3))
	want[b] = 3
	tb.remove(&a)
	delete(want, a)
	checkTable(t, &tb, want, [][32]byte{a})
	tb.remove(&a) // twice: no effect
	checkTable(t, &tb, want, [][32]byte{a})
	tb.remove(&b)
	delete(want, b)
	checkTable(t, &tb, want, [][32]byte{a, b})
}

func TestKeyTableResize(t *testing.T) {
	var tb keyTable
	want := map[[32]byte]float64{}
	var all [][32]byte
	sizes := map[int]bool{}
	for i := range 5000 {
		s := sha256.Sum256([]byte(strconv.Itoa(i)))
		all = append(all, s)
		tb.put(tableRec(s, float64(i)))
		want[s] = float64(i)
		sizes[len(tb.tags)] = true
		if i%397 == 0 {
			checkTable(t, &tb, want, all[:0])
		}
	}
	checkTable(t, &tb, want, nil)
	if len(tb.tags) != 8192 { // 5000 > 7/8 of 4096
		t.Fatalf("5000 entries in %d slots, want 8192", len(tb.tags))
	}
	if len(sizes) != 11 { // 8 … 8192
		t.Fatalf("grew through %d sizes, want 11: %v", len(sizes), sizes)
	}
	for i, s := range all {
		tb.remove(&s)
		delete(want, s)
		if i%397 == 0 {
			checkTable(t, &tb, want, all[:i+1])
		}
	}
	checkTable(t, &tb, want, all)
	if len(tb.tags) != keyTableMin {
		t.Fatalf("empty table keeps %d slots, want %d", len(tb.tags), keyTableMin)
	}
}

// TestKeyTableAgainstMap runs random operations on a table and on a map,
// with digests random and digests crowded on a few homes (long runs that
// wrap around the end), comparing them after each step.
func TestKeyTableAgainstMap(t *testing.T) {
	for _, crowd := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(1, uint64(len(strconv.FormatBool(crowd)))))
		var tb keyTable
		want := map[[32]byte]float64{}
		var pool [][32]byte
		for i := range 3000 {
			if crowd {
				pool = append(pool, clustered(uint64(4088+rng.IntN(16)), uint64(i+1)))
			} else {
				pool = append(pool, sha256.Sum256([]byte("k"+strconv.Itoa(i))))
			}
		}
		for step := range 40000 {
			s := pool[rng.IntN(len(pool))]
			switch op := rng.IntN(10); {
			case op < 5:
				tb.put(tableRec(s, float64(step)))
				want[s] = float64(step)
			case op < 9:
				tb.remove(&s)
				delete(want, s)
			default:
				r := tb.get(&s)
				if spend, ok := want[s]; ok != (r != nil) || ok && r.spend != spend {
					t.Fatalf("crowd %v step %d: get = %v, want %v (in: %v)", crowd, step, r, spend, ok)
				}
			}
			if step%1000 == 0 || crowd && step%500 == 0 {
				checkTable(t, &tb, want, pool[:50])
			}
		}
		checkTable(t, &tb, want, pool)
	}
}

func FuzzKeyTable(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 0x81, 0x82, 0x41, 7, 7, 0x87})
	f.Fuzz(func(t *testing.T, ops []byte) {
		var tb keyTable
		want := map[[32]byte]float64{}
		var seen [][32]byte
		for i, op := range ops {
			// Low 5 bits: one of 32 digests crowded on 4 homes near the end
			// of a small table; the high bits: put, remove, get.
			s := clustered(uint64(6+op&3), uint64(op&31)+1)
			seen = append(seen, s)
			switch op >> 6 {
			case 0, 1:
				tb.put(tableRec(s, float64(i)))
				want[s] = float64(i)
			case 2:
				tb.remove(&s)
				delete(want, s)
			default:
				_ = tb.get(&s)
			}
			checkTable(t, &tb, want, seen)
		}
	})
}

// TestSnapshotIndexConcurrent writes, deletes and reads keys of one
// snapshot from several goroutines (run with -race): each reader sees a
// key's record or none, never another key's.
func TestSnapshotIndexConcurrent(t *testing.T) {
	s := NewSnapshot(nil)
	hash := func(i int) string { return lowerHex(ptr(sha256.Sum256([]byte("c" + strconv.Itoa(i))))) }
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				h := hash(w*2000 + i)
				s.update(h, func(*keyRec) *keyRec { return packKey(keyWithHash(h), nil, nil) })
				if i%3 == 0 {
					s.update(h, func(*keyRec) *keyRec { return nil })
				}
			}
		}()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8000 {
				h := hash(i)
				if r := s.rec(h); r != nil && r.tokenHash(&r.sum, "") != h {
					t.Errorf("rec(%s) is %s's record", h, r.tokenHash(&r.sum, ""))
					return
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	s.rangeRecs(func(r *keyRec, sum *[32]byte, named string) bool { n++; return true })
	if want := 4 * (2000 - 667); n != want {
		t.Fatalf("%d keys in, want %d", n, want)
	}
}

func ptr[T any](v T) *T { return &v }

func keyWithHash(h string) *store.Key { return &store.Key{TokenHash: h, KeyName: "k" + h[:6]} }

// BenchmarkKeyTableGet looks up digests in one shard's worth of keys at
// 100,000 keys (1,562), in the table and in the map it replaced.
func BenchmarkKeyTableGet(b *testing.B) {
	var tb keyTable
	m := map[[32]byte]*keyRec{}
	var sums [][32]byte
	for i := range 1562 {
		s := sha256.Sum256([]byte(strconv.Itoa(i)))
		sums = append(sums, s)
		r := tableRec(s, 0)
		tb.put(r)
		m[s] = r
	}
	b.Run("table", func(b *testing.B) {
		for i := range b.N {
			if tb.get(&sums[i%len(sums)]) == nil {
				b.Fatal("missing")
			}
		}
	})
	b.Run("map", func(b *testing.B) {
		for i := range b.N {
			if m[sums[i%len(sums)]] == nil {
				b.Fatal("missing")
			}
		}
	})
}
