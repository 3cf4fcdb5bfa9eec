package auth

import (
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/tollgate/tollgate/internal/store"
)

// compactor shares, across the keys loaded at start-up, what many keys
// hold equal: user, team and budget ids, model and tag lists, small alias
// and metadata maps. Records in the snapshot are immutable (a write
// replaces the record, never edits its maps or slices), so equal values
// can be one value. Its tables live only while the snapshot is built.
type compactor struct {
	strs  map[string]string
	lists map[string][]string
	maps  map[string]map[string]string
	metas map[string]map[string]any
	// Limits are pointers (unset is nil); no one writes through them, so
	// keys with equal limits point at one value.
	floats  map[float64]*float64
	ints    map[int64]*int64
	strPtrs map[string]*string
	// shareds are the keys' shared parts, by the identity of what they
	// hold (each value already shared: equal values are one value).
	shareds map[sharedID]*keyShared
	// Empty maps (a loader may give an empty map, not nil): one each.
	emptyFloats map[string]float64
	emptyInts   map[string]int64
	// slab is where records are carved from (slabs of up to 256): a
	// record costs its 104 bytes, not the 112 of its allocation size class.
	slab []keyRec
	b    strings.Builder
}

func newCompactor() *compactor {
	return &compactor{strs: map[string]string{}, lists: map[string][]string{},
		maps: map[string]map[string]string{}, metas: map[string]map[string]any{},
		floats: map[float64]*float64{}, ints: map[int64]*int64{}, strPtrs: map[string]*string{},
		shareds: map[sharedID]*keyShared{}}
}

// rec is a new record.
func (c *compactor) rec() *keyRec {
	if len(c.slab) == cap(c.slab) {
		c.slab = make([]keyRec, 0, min(max(2*cap(c.slab), 16), 256)) // a few keys take a small slab
	}
	c.slab = c.slab[:len(c.slab)+1]
	return &c.slab[len(c.slab)-1]
}

// sharedID is a keyShared by the identity of each value it holds.
type sharedID struct {
	user, team, budgetID, blockedBy, createdBy string
	models, tags, cacheControls                unsafe.Pointer
	nModels, nTags, nCacheControls             int
	aliases, config, metadata, mmb, mrpm, mtpm unsafe.Pointer
	soft, maxBudget                            *float64
	par, tpm, rpm                              *int64
	duration                                   *string
	blocked                                    bool
}

// mapID is a map's identity (nil for a nil map).
func mapID[M ~map[K]V, K comparable, V any](m M) unsafe.Pointer {
	return *(*unsafe.Pointer)(unsafe.Pointer(&m))
}

// shared is sh, or an earlier equal one.
func (c *compactor) shared(sh *keyShared) *keyShared {
	id := sharedID{user: sh.user, team: sh.team, budgetID: sh.budgetID, blockedBy: sh.blockedBy, createdBy: sh.createdBy,
		models: unsafe.Pointer(unsafe.SliceData(sh.models)), nModels: len(sh.models),
		tags: unsafe.Pointer(unsafe.SliceData(sh.tags)), nTags: len(sh.tags),
		cacheControls: unsafe.Pointer(unsafe.SliceData(sh.cacheControls)), nCacheControls: len(sh.cacheControls),
		aliases: mapID(sh.aliases), config: mapID(sh.config), metadata: mapID(sh.metadata),
		mmb: mapID(sh.modelMaxBudget), mrpm: mapID(sh.modelRPM), mtpm: mapID(sh.modelTPM),
		soft: sh.soft, maxBudget: sh.limits.MaxBudget, par: sh.limits.MaxParallelRequests, tpm: sh.limits.TPMLimit,
		rpm: sh.limits.RPMLimit, duration: sh.limits.BudgetDuration, blocked: sh.blocked}
	if v, ok := c.shareds[id]; ok {
		return v
	}
	v := new(keyShared)
	*v = *sh
	c.shareds[id] = v
	return v
}

// key returns k with its shareable values shared; k is the loader's to give.
func (c *compactor) key(k *store.Key) *store.Key {
	k.UserID = c.str(k.UserID)
	k.TeamID = c.str(k.TeamID)
	k.BudgetID = c.str(k.BudgetID)
	k.CreatedBy = c.str(k.CreatedBy)
	k.BlockedBy = c.str(k.BlockedBy)
	k.Models = c.list(k.Models)
	k.Tags = c.list(k.Tags)
	k.AllowedCacheControls = c.list(k.AllowedCacheControls)
	k.Aliases = c.strMap(k.Aliases)
	k.Metadata = c.meta(k.Metadata)
	k.Config = c.meta(k.Config)
	k.ModelMaxBudget = empty(&c.emptyFloats, k.ModelMaxBudget)
	k.ModelSpend = empty(&c.emptyFloats, k.ModelSpend)
	k.ModelRPMLimit = empty(&c.emptyInts, k.ModelRPMLimit)
	k.ModelTPMLimit = empty(&c.emptyInts, k.ModelTPMLimit)
	k.BudgetDuration = share(c.strPtrs, k.BudgetDuration)
	k.SoftBudget = share(c.floats, k.SoftBudget)
	k.MaxBudget = share(c.floats, k.MaxBudget)
	k.MaxParallelRequests = share(c.ints, k.MaxParallelRequests)
	k.TPMLimit = share(c.ints, k.TPMLimit)
	k.RPMLimit = share(c.ints, k.RPMLimit)
	return k
}

// empty is m, or the one empty map when m is empty but not nil.
func empty[V any](one *map[string]V, m map[string]V) map[string]V {
	if m == nil || len(m) > 0 {
		return m
	}
	if *one == nil {
		*one = m
	}
	return *one
}

// share is p, or an earlier pointer to an equal value.
func share[T comparable](seen map[T]*T, p *T) *T {
	if p == nil {
		return nil
	}
	if q, ok := seen[*p]; ok {
		return q
	}
	seen[*p] = p
	return p
}

func (c *compactor) str(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := c.strs[s]; ok {
		return v
	}
	c.strs[s] = s
	return s
}

// maxShared bounds what is looked for to share: lists and maps this small
// (larger ones are rarely equal, and their table key costs more).
const maxShared = 8

// emptyList is every empty (not nil) list of the keys loaded.
var emptyList = []string{}

// part writes s into the table key, length first: parts are told apart
// by their lengths, not by a separator (a JSON string may hold any byte,
// NUL included, so two different lists joined by a separator could
// spell the same key).
func (c *compactor) part(s string) {
	var n [20]byte
	c.b.Write(strconv.AppendInt(n[:0], int64(len(s)), 10))
	c.b.WriteByte(':')
	c.b.WriteString(s)
}

func (c *compactor) list(l []string) []string {
	if len(l) == 0 || len(l) > maxShared {
		if l != nil && len(l) == 0 {
			return emptyList
		}
		return l
	}
	c.b.Reset()
	for _, s := range l {
		c.part(s)
	}
	if v, ok := c.lists[c.b.String()]; ok && len(v) == len(l) && cap(v) == len(v) {
		return v
	}
	l = l[:len(l):len(l)] // an append to the shared list copies it
	for i, s := range l {
		l[i] = c.str(s)
	}
	c.lists[strings.Clone(c.b.String())] = l
	return l
}

func (c *compactor) strMap(m map[string]string) map[string]string {
	if m == nil || len(m) > maxShared {
		return m
	}
	c.b.Reset()
	for _, k := range sortedKeys(m) {
		c.part(k)
		c.part(m[k])
	}
	if v, ok := c.maps[c.b.String()]; ok {
		return v
	}
	c.maps[strings.Clone(c.b.String())] = m
	return m
}

// meta shares a metadata map whose values are all strings, numbers,
// booleans or null (nested values are left alone).
func (c *compactor) meta(m map[string]any) map[string]any {
	if m == nil || len(m) > maxShared {
		return m
	}
	c.b.Reset()
	for _, k := range sortedKeys(m) {
		c.part(k)
		switch v := m[k].(type) {
		case string:
			c.b.WriteString("s")
			c.part(v)
		case bool:
			if v {
				c.b.WriteString("t")
			} else {
				c.b.WriteString("f")
			}
		case nil:
			c.b.WriteString("n")
		case float64:
			c.b.WriteString("d")
			c.part(strconvFloat(v))
		default:
			return m
		}
	}
	if v, ok := c.metas[c.b.String()]; ok {
		return v
	}
	c.metas[strings.Clone(c.b.String())] = m
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func strconvFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
