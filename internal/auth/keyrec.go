package auth

import (
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"time"
	"unsafe"

	"github.com/tollgate/tollgate/internal/store"
)

// keyRec is a key as the snapshot holds it: 104 bytes, where a *store.Key
// is 352 and its hash string 64 more. What many keys hold equal (user,
// team, models, limits, metadata, …) is one keyShared they point at; what
// each key has of its own is packed here (times as Unix nanoseconds, the
// name and alias in one string); what is rarely set sits behind x. The
// token hash is kept as its digest, sum, which the index reads (keyTable);
// a hash that is not in lower case is in x too. A record is immutable
// once published: a write replaces it.
//
// The request path reads a record into the Principal's own store.Key
// (Principal.setKey: no allocation); management code gets a *store.Key
// decoded afresh (Snapshot.Key, RangeKeys).
type keyRec struct {
	sh *keyShared
	// text is the key name, then, when the key has an alias, NUL and the
	// alias.
	text  string
	x     *keyExtra
	spend float64
	// Times as Unix nanoseconds (UTC); timeNone is a nil pointer,
	// timeInX a time kept in x as it was (not UTC, or out of range).
	created, updated, expires, resetAt int64
	// sum is the token hash's digest when it is a sha256 hex digest (in
	// any case; zero when it is not): the index's key.
	sum [32]byte
}

// keyShared is what a key shares with the keys like it: every field of
// store.Key but its hash, name, alias, spend and times.
type keyShared struct {
	user, team, budgetID, blockedBy, createdBy string
	models, tags, cacheControls                []string
	aliases                                    map[string]string
	config, metadata                           map[string]any
	modelMaxBudget                             map[string]float64
	modelRPM, modelTPM                         map[string]int64
	soft                                       *float64
	limits                                     store.Limits // BudgetResetAt is the key's own (keyRec.resetAt)
	blocked                                    bool
}

// keyExtra is what few keys have.
type keyExtra struct {
	hash       string // the token hash when it is not a lower-case hex digest
	name       string // the key name when it holds a NUL (text is then "")
	alias      *string
	modelSpend map[string]float64
	budget     string // store.Key.BudgetAccount (a regenerated key's)
	created    time.Time
	updated    time.Time
	expires    *time.Time
	resetAt    *time.Time
}

const (
	timeNone = math.MinInt64
	timeInX  = math.MinInt64 + 1
)

// packTime is t as Unix nanoseconds when that gives t back exactly.
func packTime(t time.Time) (int64, bool) {
	if t.Year() < 1700 || t.Year() > 2200 {
		return 0, false
	}
	n := t.UnixNano()
	return n, time.Unix(0, n).UTC() == t
}

func unpackTime(n int64) time.Time { return time.Unix(0, n).UTC() }

// packKey packs k (whose maps and slices become the record's: the caller
// must not modify them afterwards). c, when set, shares what k holds equal
// with the keys it packed before; else prev, the record k replaces, lends
// its shared part when equal (a reset or a spend update changes no more).
func packKey(k *store.Key, c *compactor, prev *keyRec) *keyRec {
	sh := keyShared{user: k.UserID, team: k.TeamID, budgetID: k.BudgetID, blockedBy: k.BlockedBy, createdBy: k.CreatedBy,
		models: k.Models, tags: k.Tags, cacheControls: k.AllowedCacheControls, aliases: k.Aliases, config: k.Config,
		metadata: k.Metadata, modelMaxBudget: k.ModelMaxBudget, modelRPM: k.ModelRPMLimit, modelTPM: k.ModelTPMLimit,
		soft: k.SoftBudget, limits: k.Limits, blocked: k.Blocked}
	sh.limits.BudgetResetAt = nil
	var r *keyRec
	switch {
	case c != nil:
		r = c.rec()
		r.sh = c.shared(&sh)
	case prev != nil && reflect.DeepEqual(*prev.sh, sh):
		r = &keyRec{sh: prev.sh}
	default:
		r = &keyRec{sh: &sh}
	}
	r.spend = k.Spend
	var x keyExtra
	var lower bool
	if r.sum, lower = digestOf(k.TokenHash); !lower {
		x.hash = k.TokenHash
	}
	switch {
	case strings.IndexByte(k.KeyName, 0) >= 0:
		x.name, x.alias = k.KeyName, k.KeyAlias
	case k.KeyAlias != nil:
		r.text = k.KeyName + "\x00" + *k.KeyAlias
	default:
		r.text = k.KeyName
	}
	var ok bool
	if r.created, ok = packTime(k.CreatedAt); !ok {
		r.created, x.created = timeInX, k.CreatedAt
	}
	if r.updated, ok = packTime(k.UpdatedAt); !ok {
		r.updated, x.updated = timeInX, k.UpdatedAt
	}
	r.expires = packPtr(k.Expires, &x.expires)
	r.resetAt = packPtr(k.BudgetResetAt, &x.resetAt)
	x.modelSpend = k.ModelSpend
	x.budget = k.BudgetAccount
	if x.hash != "" || x.name != "" || r.created == timeInX || r.updated == timeInX || x.expires != nil ||
		x.resetAt != nil || x.modelSpend != nil || x.budget != "" {
		r.x = &x
	}
	return r
}

func packPtr(t *time.Time, keep **time.Time) int64 {
	if t == nil {
		return timeNone
	}
	if n, ok := packTime(*t); ok {
		return n
	}
	*keep = t
	return timeInX
}

// digestOf is h's digest when h is a sha256 hex digest (in any case), and
// whether h is in lower case.
func digestOf(h string) (sum [32]byte, lower bool) {
	sum, lower, _ = parseDigest(h)
	return sum, lower
}

// parseDigest decodes h in one pass when it is a sha256 hex digest (in
// any case): its digest, whether it is in lower case, and ok. When h is
// not a digest, all three are zero. Snapshot.rec runs it on every budgeted
// request (the enforcement mode's metadata look-up), so it reads each
// byte once, through hexVal, instead of a validation pass, a second one
// for the digest check and hex.Decode's own (isDigest runs it too).
func parseDigest(h string) (sum [32]byte, lower, ok bool) {
	if len(h) != 64 {
		return sum, false, false
	}
	var seen byte // the OR of every hexVal: 0x80 set by a non-digit, 0x10 by an upper-case one
	for i := range sum {
		a, b := hexVal[h[2*i]], hexVal[h[2*i+1]]
		seen |= a | b
		sum[i] = a<<4 | b&0x0f
	}
	if seen&0x80 != 0 {
		return [32]byte{}, false, false
	}
	return sum, seen&0x10 == 0, true
}

// hexVal is a hex digit's value, with 0x10 set for 'A'-'F'; 0xff for any
// byte that is not a hex digit.
var hexVal = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = byte(c - '0')
	}
	for c := 'a'; c <= 'f'; c++ {
		t[c] = byte(c-'a') + 10
	}
	for c := 'A'; c <= 'F'; c++ {
		t[c] = 0x10 | (byte(c-'A') + 10)
	}
	return t
}()

// isDigest reports whether h is a sha256 hex digest (in any case).
func isDigest(h string) bool {
	_, _, ok := parseDigest(h)
	return ok
}

// hash is the record's token hash as stored, given its lower-case hex
// digest (or "" when the record is not indexed by digest).
func (r *keyRec) hash(lowerHex string) string {
	if r.x != nil && r.x.hash != "" {
		return r.x.hash
	}
	return lowerHex
}

// sameAs says whether r holds what o holds: every field equal, the shared
// part and the extras by value. The key's own spends are compared bit for
// bit (== and reflect.DeepEqual take -0 for 0, which a read shows as
// "-0"); the shared part as packKey lends one (reflect.DeepEqual).
func (r *keyRec) sameAs(o *keyRec) bool {
	if r.text != o.text || math.Float64bits(r.spend) != math.Float64bits(o.spend) || r.created != o.created ||
		r.updated != o.updated || r.expires != o.expires || r.resetAt != o.resetAt || r.sum != o.sum {
		return false
	}
	if (r.x == nil) != (o.x == nil) || r.x != nil && !r.x.sameAs(o.x) {
		return false
	}
	return r.sh == o.sh || reflect.DeepEqual(*r.sh, *o.sh)
}

func (x *keyExtra) sameAs(o *keyExtra) bool {
	a, b := *x, *o
	a.modelSpend, b.modelSpend = nil, nil
	if !reflect.DeepEqual(a, b) || (x.modelSpend == nil) != (o.modelSpend == nil) || len(x.modelSpend) != len(o.modelSpend) {
		return false
	}
	for m, v := range x.modelSpend {
		if w, ok := o.modelSpend[m]; !ok || math.Float64bits(v) != math.Float64bits(w) {
			return false
		}
	}
	return true
}

func (r *keyRec) updatedAt() time.Time {
	if r.updated == timeInX {
		return r.x.updated
	}
	return unpackTime(r.updated)
}

// keySlots is where a decoded key's pointer fields point.
type keySlots struct {
	alias            string
	expires, resetAt time.Time
}

// fill sets k to the record, with token hash h; its pointer fields that
// are the key's own point into slots.
func (r *keyRec) fill(k *store.Key, h string, slots *keySlots) {
	sh := r.sh
	*k = store.Key{TokenHash: h, UserID: sh.user, TeamID: sh.team, Models: sh.models, Aliases: sh.aliases,
		Config: sh.config, Metadata: sh.metadata, Tags: sh.tags, Spend: r.spend, SoftBudget: sh.soft, Limits: sh.limits,
		ModelMaxBudget: sh.modelMaxBudget, ModelRPMLimit: sh.modelRPM, ModelTPMLimit: sh.modelTPM,
		AllowedCacheControls: sh.cacheControls, BudgetID: sh.budgetID, Blocked: sh.blocked, BlockedBy: sh.blockedBy,
		CreatedBy: sh.createdBy}
	if r.x != nil {
		k.ModelSpend, k.BudgetAccount = r.x.modelSpend, r.x.budget
	}
	if r.x != nil && r.text == "" && r.x.name != "" {
		k.KeyName, k.KeyAlias = r.x.name, r.x.alias
	} else if i := strings.IndexByte(r.text, 0); i >= 0 {
		k.KeyName = r.text[:i]
		slots.alias = r.text[i+1:]
		k.KeyAlias = &slots.alias
	} else {
		k.KeyName = r.text
	}
	if r.created == timeInX {
		k.CreatedAt = r.x.created
	} else {
		k.CreatedAt = unpackTime(r.created)
	}
	k.UpdatedAt = r.updatedAt()
	k.Expires = r.unpackPtr(r.expires, &slots.expires, func(x *keyExtra) *time.Time { return x.expires })
	k.BudgetResetAt = r.unpackPtr(r.resetAt, &slots.resetAt, func(x *keyExtra) *time.Time { return x.resetAt })
}

func (r *keyRec) unpackPtr(n int64, slot *time.Time, kept func(*keyExtra) *time.Time) *time.Time {
	switch n {
	case timeNone:
		return nil
	case timeInX:
		return kept(r.x)
	}
	*slot = unpackTime(n)
	return slot
}

// decode is the record as a *store.Key of its own.
func (r *keyRec) decode(h string) *store.Key {
	d := new(struct {
		k     store.Key
		slots keySlots
	})
	r.fill(&d.k, h, &d.slots)
	return &d.k
}

// lowerHex is sum as lower-case hex, allocated.
func lowerHex(sum *[32]byte) string { return hex.EncodeToString(sum[:]) }

// hexInto is sum as lower-case hex in buf, as a string that aliases buf.
func hexInto(buf *[64]byte, sum *[32]byte) string {
	hex.Encode(buf[:], sum[:])
	return unsafe.String(&buf[0], len(buf))
}
