package auth

import "encoding/binary"

// keyTable is one shard's index of the keys whose token hash is a sha256
// digest: digest -> record, the record holding its digest (keyRec.sum).
// It replaces a map[[32]byte]*keyRec, whose slots hold the 32-byte digest
// next to the pointer (≈ 63 B a key at 100,000 keys, measured; docs/
// performance.md, branch mem79): here a slot is a pointer and a tag byte,
// ≈ 10–20 B a key, and the digest is in the record it indexes anyway.
//
// Open addressing with linear probing over a power-of-two array. A tag is
// 0 for an empty slot, else seven bits of the digest with the high bit
// set, so a probe reads the record only when its tag matches (one read a
// lookup, almost always). The load is kept at most 7/8 (tags make long
// probe runs cheap: a run of tags is one cache line) and at least 1/8 by
// shrinking. Deletion shifts the entries after the deleted one back (no
// tombstones). The caller locks (the shard's lock).
type keyTable struct {
	tags  []uint8
	slots []*keyRec
	n     int
}

const keyTableMin = 8

// digestHome is where sum's probe starts and its tag. Bytes 8..15 of the
// digest: byte 0 picks the shard, and a sha256 digest's bytes are uniform.
func digestHome(sum *[32]byte) (h uint64, tag uint8) {
	h = binary.LittleEndian.Uint64(sum[8:16])
	return h, uint8(h>>57) | 0x80
}

// get is the record of digest sum, or nil.
func (t *keyTable) get(sum *[32]byte) *keyRec {
	if t.n == 0 {
		return nil
	}
	h, tag := digestHome(sum)
	mask := uint64(len(t.tags) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch t.tags[i] {
		case 0:
			return nil
		case tag:
			if r := t.slots[i]; r.sum == *sum {
				return r
			}
		}
	}
}

// put indexes r under its digest r.sum, replacing the record there.
func (t *keyTable) put(r *keyRec) {
	if (t.n+1)*8 > len(t.tags)*7 {
		t.resize(max(keyTableMin, 2*len(t.tags)))
	}
	if t.insert(r) {
		t.n++
	}
}

// insert puts r in its slot, and reports whether it is a new entry (no
// room check).
func (t *keyTable) insert(r *keyRec) bool {
	h, tag := digestHome(&r.sum)
	mask := uint64(len(t.tags) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		switch t.tags[i] {
		case 0:
			t.tags[i], t.slots[i] = tag, r
			return true
		case tag:
			if t.slots[i].sum == r.sum {
				t.slots[i] = r
				return false
			}
		}
	}
}

// remove takes digest sum out (nothing when it is not in).
func (t *keyTable) remove(sum *[32]byte) {
	if t.n == 0 {
		return
	}
	h, tag := digestHome(sum)
	mask := uint64(len(t.tags) - 1)
	i := h & mask
	for ; ; i = (i + 1) & mask {
		if t.tags[i] == 0 {
			return
		}
		if t.tags[i] == tag && t.slots[i].sum == *sum {
			break
		}
	}
	// Shift back every entry of the run after i whose home is not in
	// (i, j] cyclically: it was probed past i, so it must not be cut off
	// from its home by the hole.
	for j := (i + 1) & mask; t.tags[j] != 0; j = (j + 1) & mask {
		hj, _ := digestHome(&t.slots[j].sum)
		k := hj & mask
		if i <= j && i < k && k <= j || i > j && (i < k || k <= j) {
			continue
		}
		t.tags[i], t.slots[i] = t.tags[j], t.slots[j]
		i = j
	}
	t.tags[i], t.slots[i] = 0, nil
	t.n--
	if len(t.tags) > keyTableMin && t.n*8 < len(t.tags) {
		t.resize(len(t.tags) / 2)
	}
}

// resize moves the entries to an array of size slots (a power of two
// with room for them).
func (t *keyTable) resize(size int) {
	old := t.slots
	t.tags, t.slots = make([]uint8, size), make([]*keyRec, size)
	for _, r := range old {
		if r != nil {
			t.insert(r)
		}
	}
}

// each calls fn for every record until fn returns false.
func (t *keyTable) each(fn func(*keyRec) bool) {
	for _, r := range t.slots {
		if r != nil && !fn(r) {
			return
		}
	}
}
