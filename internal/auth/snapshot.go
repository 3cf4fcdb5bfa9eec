package auth

import (
	"slices"
	"sync"
	"time"

	"github.com/tollgate/tollgate/internal/store"
)

// Snapshot is the in-memory copy of keys, users, teams and end users that
// serves authentication with no database round trip. Records are immutable
// once published; a write replaces the record (sync.Map: lock-free reads,
// no global lock on the request path).
type Snapshot struct {
	// keys is the one index of the keys whose token hash is a sha256 hex
	// digest (in any case): digest -> record, sharded under read-write
	// locks so writers do not share one lock. The request path looks a
	// digest up as it is (no hex, no allocation). A digest has one record:
	// the same hash stored in two cases is one key.
	keys [64]keyShard
	// named holds the keys whose hash is not a digest (imported rows,
	// tests): hash -> record. Rarely anything is in it.
	namedMu sync.RWMutex
	named   map[string]*keyRec
	// forgotten is when each recently deleted key was deleted, so that a
	// row read or written just before the deletion and published after it
	// (a resync's, Apply; the miss path's, an edit's, putKey; the start's
	// load, putLoadedKeys) cannot put it back. Pruned after forgetFor.
	forgotten sync.Map // token hash -> time.Time
	// forgotHere is when this process marked each key in forgotten, on its
	// own clock (forgotten holds the deletion's stamp, which for a deletion
	// read from the store is the deleting replica's clock): a row the miss
	// path began reading after then is the store's word after the deletion
	// (PutKeyRead), however the replicas' clocks stand.
	forgotHere sync.Map // token hash -> time.Time
	users      sync.Map // user id -> *store.User
	teams      sync.Map // team id -> *store.Team
	// teamMu makes each team write's compare (putTeam: the later
	// updated_at wins) and store one step.
	teamMu sync.Mutex
	// goneMu guards gone: for each user or team deleted here (or by a
	// resync) in the last forgetFor, which incarnations of it died
	// (goneRec), so that a copy of a dead one published late (an edit that
	// wrote the store before the deletion, a row read before it) cannot
	// bring it back while one made again under the id is taken.
	goneMu   sync.Mutex
	gone     map[localID]goneRec
	endUsers sync.Map // end user id -> *store.EndUser
	// Budgets as objects, and organizations. A key or end user that names
	// a budget is published with the budget's limits filled in where its
	// own are unset (withBudget); its record as stored is kept in rawKeys
	// or rawEndUsers so that a budget's change or deletion can derive it
	// again (PutBudget, DeleteBudget).
	budgets     sync.Map // budget id -> *store.Budget
	orgs        sync.Map // organization id -> *store.Organization
	rawKeys     sync.Map // token hash -> *store.Key as stored (with a budget_id)
	rawEndUsers sync.Map // end user id -> *store.EndUser as stored (with a budget_id)
	// memberBudgets indexes, for each team with members that name a
	// budget, user id -> budget id (so a request does not scan members).
	memberBudgets sync.Map // team id -> map[string]string
	// loaded is closed once the keys read at start-up are in (nil: they
	// were in from the start). Until then a key not yet in is found by
	// the authenticator's miss path, and RangeKeys waits.
	loaded     chan struct{}
	loadedOnce sync.Once
	// local is when this process last published or removed each entity
	// itself (an admin write; the miss path, as of when it read the row:
	// PutKeyRead): kind/id -> time. A resync that read the store before
	// then may hold the row as it was before that write, so Apply leaves
	// the entity alone; the next resync, which reads after it, brings
	// whatever the store has. localMu also
	// makes each of Apply's check-then-put one step against these writes.
	localMu sync.Mutex
	local   map[localID]time.Time
}

// goneRec is a deleted user's or team's tombstone. An entity's
// incarnation is its created_at (set once by the store's create, kept by
// every write): a copy whose created_at is one of created is of a dead
// incarnation and is dropped, whatever its updated_at (an edit written
// before the deletion may be stamped later than the copy held then); one
// made again under the id has a new created_at and is taken, whatever the
// clock of the replica that made it. When no incarnation is known (the
// snapshot held no copy and the caller named none) or the copy has no
// created_at, a copy stamped no later than the deletion here is dropped.
type goneRec struct {
	created []time.Time
	at      time.Time // when deleted here: pruning, and the fallback
}

func (g goneRec) dead(created, updated time.Time) bool {
	if created.IsZero() || len(g.created) == 0 {
		return !updated.After(g.at)
	}
	return slices.ContainsFunc(g.created, func(c time.Time) bool { return c.Equal(created) })
}

// buried records the deletion of kind/id now, of the incarnations created
// (zero ones unknown), and prunes tombstones older than forgetFor.
func (s *Snapshot) buried(kind store.Kind, id string, created ...time.Time) {
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	now := time.Now()
	if s.gone == nil {
		s.gone = map[localID]goneRec{}
	}
	for k, g := range s.gone {
		if now.Sub(g.at) > forgetFor {
			delete(s.gone, k)
		}
	}
	g := s.gone[localID{kind, id}]
	for _, c := range created {
		if !c.IsZero() && !slices.ContainsFunc(g.created, c.Equal) {
			g.created = append(g.created, c)
		}
	}
	g.at = now
	s.gone[localID{kind, id}] = g
}

// isDead says whether a copy of kind/id created and stamped as given is of
// an incarnation deleted here in the last forgetFor. An unstamped copy
// (built by hand, not read from a store) is taken as it is.
func (s *Snapshot) isDead(kind store.Kind, id string, created, updated time.Time) bool {
	if updated.IsZero() {
		return false
	}
	s.goneMu.Lock()
	defer s.goneMu.Unlock()
	g, ok := s.gone[localID{kind, id}]
	return ok && time.Since(g.at) <= forgetFor && g.dead(created, updated)
}

type localID struct {
	kind store.Kind
	id   string
}

// here runs fn, a write this process makes, and marks kind/id as written
// here now.
func (s *Snapshot) here(kind store.Kind, id string, fn func()) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	fn()
	if s.local == nil {
		s.local = map[localID]time.Time{}
	}
	s.local[localID{kind, id}] = time.Now()
}

// fromStore runs fn, a write of a row a resync read at read, unless kind/id
// was written here since then (localMu held).
func (s *Snapshot) fromStore(kind store.Kind, id string, read time.Time, fn func()) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	if at, ok := s.local[localID{kind, id}]; ok && !read.IsZero() && at.After(read) {
		return
	}
	fn()
}

// StartLoading says the keys are still to come (PutLoadedKeys, then
// DoneLoading). It is called before the snapshot is shared.
func (s *Snapshot) StartLoading() { s.loaded = make(chan struct{}) }

// DoneLoading says the keys read at start-up are in, or will not come.
func (s *Snapshot) DoneLoading() {
	if s.loaded != nil {
		s.loadedOnce.Do(func() { close(s.loaded) })
	}
}

// Loaded is closed once the keys read at start-up are in.
func (s *Snapshot) Loaded() <-chan struct{} {
	if s.loaded == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.loaded
}

// PutLoadedKeys publishes the keys read at start-up while the snapshot
// already serves. A key is left as it is when the snapshot holds it as
// written at the same time or later (the miss path, a write here or a
// resync put it there since), or when it was deleted after its row was
// read. The records are the snapshot's to keep (they are compacted).
func (s *Snapshot) PutLoadedKeys(ks []*store.Key) {
	s.putLoadedKeys(newCompactor(), ks)
}

// KeyLoader returns PutLoadedKeys for the pages of one load
// (Store.LoadKeys): the pages share one compactor, so that values equal
// across pages are one value. The loader holds the compactor's tables
// until it is dropped.
func (s *Snapshot) KeyLoader() func(page []*store.Key) {
	c := newCompactor()
	return func(page []*store.Key) { s.putLoadedKeys(c, page) }
}

func (s *Snapshot) putLoadedKeys(c *compactor, ks []*store.Key) {
	for _, k := range ks {
		k = c.key(k)
		raw := k
		if k.BudgetID != "" {
			k = s.keyWithBudget(k)
		}
		r := packKey(k, c, nil)
		s.update(k.TokenHash, func(cur *keyRec) *keyRec {
			// Under the index's lock: a deletion marks the key forgotten
			// before it takes this lock to remove it.
			at, gone := s.forgotten.Load(k.TokenHash)
			stale := (cur != nil && !k.UpdatedAt.After(cur.updatedAt())) || (gone && !k.UpdatedAt.After(at.(time.Time)))
			// The same row read first by a resync (it runs during the
			// load: keys written shortly before the start are in its
			// overlap): the load's record, compacted with the others,
			// replaces that copy when it holds the same, rather than the
			// copy's own allocations staying for the key's life; so does
			// its row as stored (rawKeys), for a key that names a budget.
			if stale && (cur == nil || gone || !r.sameAs(cur)) {
				return cur
			}
			s.setRawKey(raw)
			return r
		})
	}
}

// setRawKey keeps k, a key's row as stored, when it names a budget (so
// that a change of the budget derives the key again from it), else
// forgets the key's. Called under the index's lock as the record derived
// from k is put: the start's load (which does not hold localMu) and a
// write of the same key then keep the row and the record of one of them,
// never the row of one and the record of the other (a budget change would
// bring the older row back: TestRawKeyGoesWithItsRecord).
func (s *Snapshot) setRawKey(k *store.Key) {
	if k.BudgetID != "" {
		s.rawKeys.Store(k.TokenHash, k)
	} else {
		s.rawKeys.Delete(k.TokenHash)
	}
}

// NewSnapshot returns a snapshot holding s (nil for an empty one).
func NewSnapshot(s *store.Snapshot) *Snapshot {
	snap := &Snapshot{}
	if s == nil {
		return snap
	}
	for _, b := range s.Budgets {
		snap.budgets.Store(b.BudgetID, b)
	}
	for _, o := range s.Organizations {
		snap.orgs.Store(o.OrganizationID, o)
	}
	c := newCompactor()
	for _, k := range s.Keys {
		snap.putKey(c.key(k), c)
	}
	for _, u := range s.Users {
		snap.users.Store(u.UserID, u)
	}
	for _, t := range s.Teams {
		snap.putTeam(t)
	}
	for _, e := range s.EndUsers {
		snap.putEndUser(e)
	}
	return snap
}

type keyShard struct {
	mu sync.RWMutex
	t  keyTable
}

// recBySum is the record of digest sum, or nil.
func (s *Snapshot) recBySum(sum *[32]byte) *keyRec {
	sh := &s.keys[sum[0]&63]
	sh.mu.RLock()
	r := sh.t.get(sum)
	sh.mu.RUnlock()
	return r
}

// rec is the record whose token hash is h exactly, or nil.
func (s *Snapshot) rec(h string) *keyRec {
	sum, lower, digest := parseDigest(h)
	if !digest {
		s.namedMu.RLock()
		r := s.named[h]
		s.namedMu.RUnlock()
		return r
	}
	if r := s.recBySum(&sum); r != nil && r.is(h, lower) {
		return r
	}
	return nil // none, or the digest's key stored in another case
}

// is reports whether h (a digest, lower says whether in lower case) is
// the record's token hash exactly.
func (r *keyRec) is(h string, lower bool) bool {
	if r.x != nil && r.x.hash != "" {
		return r.x.hash == h
	}
	return lower
}

// update replaces the record of token hash h by what fn returns for the
// current one (nil: none), under the index's lock; nil removes it.
func (s *Snapshot) update(h string, fn func(cur *keyRec) *keyRec) {
	if !isDigest(h) {
		s.namedMu.Lock()
		defer s.namedMu.Unlock()
		if r := fn(s.named[h]); r != nil {
			if s.named == nil {
				s.named = map[string]*keyRec{}
			}
			s.named[h] = r
		} else {
			delete(s.named, h)
		}
		return
	}
	sum, _ := digestOf(h)
	sh := &s.keys[sum[0]&63]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if r := fn(sh.t.get(&sum)); r != nil {
		if r.sum != sum { // not made for h (packKey sets it): index a copy
			c := *r
			c.sum = sum
			r = &c
		}
		sh.t.put(r)
	} else {
		sh.t.remove(&sum)
	}
}

// KeyBySum returns the key whose sha256 digest is sum, decoded afresh (the
// request path reads it into its Principal instead: setKey).
func (s *Snapshot) KeyBySum(sum *[32]byte) (*store.Key, bool) {
	r := s.recBySum(sum)
	if r == nil {
		return nil, false
	}
	return r.decode(r.hash(lowerHex(sum))), true
}

// KeyMetadata is the metadata of the key with token hash h (not a copy:
// read only), without decoding the key.
func (s *Snapshot) KeyMetadata(h string) (map[string]any, bool) {
	r := s.rec(h)
	if r == nil {
		return nil, false
	}
	return r.sh.metadata, true
}

func (s *Snapshot) removeKey(h string) {
	_, lower := digestOf(h)
	digest := isDigest(h)
	s.update(h, func(cur *keyRec) *keyRec {
		if cur != nil && digest && !cur.is(h, lower) {
			return cur // the digest's key in another case stays
		}
		return nil
	})
}

// Key returns the key with token hash h, decoded afresh (management calls
// and the miss path: it allocates).
func (s *Snapshot) Key(h string) (*store.Key, bool) {
	r := s.rec(h)
	if r == nil {
		return nil, false
	}
	return r.decode(h), true
}

// User returns a user.
func (s *Snapshot) User(id string) (*store.User, bool) { return load[store.User](&s.users, id) }

// Team returns a team.
func (s *Snapshot) Team(id string) (*store.Team, bool) { return load[store.Team](&s.teams, id) }

// EndUser returns an end user.
func (s *Snapshot) EndUser(id string) (*store.EndUser, bool) {
	return load[store.EndUser](&s.endUsers, id)
}

// PutKey publishes k; the caller must not modify it afterwards.
func (s *Snapshot) PutKey(k *store.Key) {
	s.here(store.KindKey, k.TokenHash, func() { s.putKey(k, nil) })
}

// PutKeyRead publishes k, a row read from the store at read (the miss
// path), and marks the key as known here as of read, not of now: a
// resync that began reading after read knows at least as much (a
// deletion on another replica it read is applied), one that began before
// may hold an older row and leaves the key alone (fromStore).
func (s *Snapshot) PutKeyRead(k *store.Key, read time.Time) {
	s.localMu.Lock()
	defer s.localMu.Unlock()
	s.putKeyAsOf(k, nil, read)
	if s.local == nil {
		s.local = map[localID]time.Time{}
	}
	id := localID{store.KindKey, k.TokenHash}
	if at, ok := s.local[id]; !ok || read.After(at) {
		s.local[id] = read
	}
}

func (s *Snapshot) putKey(k *store.Key, c *compactor) { s.putKeyAsOf(k, c, time.Time{}) }

// putKeyAsOf is putKey for a row read from the store at read (zero:
// unknown). A row read after this process marked the key deleted is of
// the key made again since, whatever its stamp: a deletion from another
// replica carries that replica's clock, which may run ahead of the one
// that stamped the new row (TestKeyMadeAgainAfterSkewedDeletion).
func (s *Snapshot) putKeyAsOf(k *store.Key, c *compactor, read time.Time) {
	raw := k
	if k.BudgetID != "" {
		k = s.keyWithBudget(k)
	}
	s.update(k.TokenHash, func(cur *keyRec) *keyRec {
		// Under the index's lock, as putLoadedKeys: a deletion marks the
		// key forgotten before it takes this lock to remove it. A row
		// written no later than the key's deletion is of the key deleted,
		// read or written before it and published after (the miss path's
		// read, an edit racing /key/delete): it is dropped. One written
		// after it (the key made again) is taken; the mark stays until
		// pruned, so a stale row arriving later still cannot replace it.
		// A record with no stamp (not from a store) is taken as it is.
		if at, gone := s.forgotten.Load(k.TokenHash); gone && !k.UpdatedAt.IsZero() && !k.UpdatedAt.After(at.(time.Time)) {
			here, ok := s.forgotHere.Load(k.TokenHash)
			if read.IsZero() || !ok || !read.After(here.(time.Time)) {
				return cur
			}
		}
		// The miss path's row gives way to one stamped later that was put
		// since its read (a resync that read the key after it: a block
		// from another replica, which on PostgreSQL no later resync reads
		// again: TestMissDoesNotOverwriteFresherResync).
		if !read.IsZero() && cur != nil && cur.updatedAt().After(k.UpdatedAt) {
			return cur
		}
		s.setRawKey(raw)
		r := packKey(k, c, cur)
		if cur != nil && r.sameAs(cur) {
			// Read again unchanged (a resync's overlap): the record in
			// place stays, compacted as it was.
			return cur
		}
		return r
	})
}

// PutUser publishes u, unless it is a stale copy (putUserHere).
func (s *Snapshot) PutUser(u *store.User) {
	s.here(store.KindUser, u.UserID, func() { s.putUserHere(u) })
}

// PutTeam publishes t, unless the snapshot holds a later copy of the team
// (by updated_at: team writes are stamped later than the team they
// replace, store.UpdateTeam) or the team was deleted after t was written:
// copies arrive out of order (two edits' answers, a re-read after a
// member's deletion, the miss path).
func (s *Snapshot) PutTeam(t *store.Team) {
	s.here(store.KindTeam, t.TeamID, func() { s.putTeam(t) })
}

func (s *Snapshot) putTeam(t *store.Team) {
	s.teamMu.Lock()
	defer s.teamMu.Unlock()
	if s.isDead(store.KindTeam, t.TeamID, t.CreatedAt, t.UpdatedAt) {
		return // a copy of the team as it was before its deletion
	}
	// An equal stamp is the same write (its spend may be newer); a copy of
	// another incarnation (made again) is taken.
	if cur, ok := s.Team(t.TeamID); ok && !t.UpdatedAt.IsZero() && cur.CreatedAt.Equal(t.CreatedAt) && cur.UpdatedAt.After(t.UpdatedAt) {
		return
	}
	var byUser map[string]string
	for _, m := range t.Members {
		if m.BudgetID != "" {
			if byUser == nil {
				byUser = map[string]string{}
			}
			byUser[m.UserID] = m.BudgetID
		}
	}
	if byUser != nil {
		s.memberBudgets.Store(t.TeamID, byUser)
	} else {
		s.memberBudgets.Delete(t.TeamID)
	}
	s.teams.Store(t.TeamID, t)
}

// MemberBudget is user's own budget within team t, or nil: the budget
// object her membership names (budget_id, set by proxy_admin or an
// org_admin), bounded by her max_budget_in_team (which a team admin may
// set): the lower max_budget wins, the object's limits and period stay, so
// that a team admin cannot lift what an admin gave the member.
func (s *Snapshot) MemberBudget(t *store.Team, user string) *store.Budget {
	if t == nil || user == "" {
		return nil
	}
	var obj *store.Budget
	if v, ok := s.memberBudgets.Load(t.TeamID); ok {
		if id, ok := v.(map[string]string)[user]; ok {
			obj, _ = s.Budget(id)
		}
	}
	mb, ok := t.MemberBudget(user)
	switch {
	case !ok:
		return obj
	case obj == nil:
		return &store.Budget{BudgetID: mb.BudgetID, Limits: store.Limits{MaxBudget: &mb.MaxBudget}}
	}
	b := *obj // the object is shared: bound a copy
	if b.MaxBudget == nil || mb.MaxBudget < *b.MaxBudget {
		b.MaxBudget = &mb.MaxBudget
	}
	return &b
}

// PutEndUser publishes e.
func (s *Snapshot) PutEndUser(e *store.EndUser) {
	s.here(store.KindEndUser, e.UserID, func() { s.putEndUser(e) })
}

func (s *Snapshot) putEndUser(e *store.EndUser) {
	if e.BudgetID != "" {
		s.rawEndUsers.Store(e.UserID, e)
		e = s.endUserWithBudget(e)
	} else {
		s.rawEndUsers.Delete(e.UserID)
	}
	s.endUsers.Store(e.UserID, e)
}

// Budget returns a budget object.
func (s *Snapshot) Budget(id string) (*store.Budget, bool) { return load[store.Budget](&s.budgets, id) }

// Organization returns an organization.
func (s *Snapshot) Organization(id string) (*store.Organization, bool) {
	return load[store.Organization](&s.orgs, id)
}

// PutOrganization publishes o.
func (s *Snapshot) PutOrganization(o *store.Organization) {
	s.here(store.KindOrganization, o.OrganizationID, func() { s.orgs.Store(o.OrganizationID, o) })
}

// DeleteOrganization removes an organization.
func (s *Snapshot) DeleteOrganization(id string) {
	s.here(store.KindOrganization, id, func() { s.orgs.Delete(id) })
}

// PutBudget publishes b and derives again every key and end user that
// names it, so that the next request is held to the budget as it is now.
func (s *Snapshot) PutBudget(b *store.Budget) {
	s.here(store.KindBudget, b.BudgetID, func() { s.putBudget(b) })
}

func (s *Snapshot) putBudget(b *store.Budget) {
	s.budgets.Store(b.BudgetID, b)
	s.rederive(b.BudgetID)
}

// DeleteBudget removes a budget; what named it keeps only its own limits.
func (s *Snapshot) DeleteBudget(id string) {
	s.here(store.KindBudget, id, func() { s.deleteBudget(id) })
}

func (s *Snapshot) deleteBudget(id string) {
	s.budgets.Delete(id)
	s.rederive(id)
}

func (s *Snapshot) rederive(id string) {
	s.rawKeys.Range(func(_, v any) bool {
		if k := v.(*store.Key); k.BudgetID == id {
			if s.rec(k.TokenHash) != nil {
				s.putKey(k, nil)
			}
		}
		return true
	})
	s.rawEndUsers.Range(func(_, v any) bool {
		if e := v.(*store.EndUser); e.BudgetID == id {
			if _, live := s.endUsers.Load(e.UserID); live {
				s.putEndUser(e)
			}
		}
		return true
	})
}

// TeamOrganization is the organization team t belongs to and the budget
// that organization names (either may be nil).
func (s *Snapshot) TeamOrganization(t *store.Team) (*store.Organization, *store.Budget) {
	if t == nil || t.OrganizationID == "" {
		return nil, nil
	}
	o, ok := s.Organization(t.OrganizationID)
	if !ok {
		return nil, nil
	}
	b, _ := s.Budget(o.BudgetID)
	return o, b
}

// The limits a budget object gives what names it: each applies where the
// record's own is unset. budget_duration comes with the budget's reset time
// unless the record has one of its own (set by its first reset).

func (s *Snapshot) keyWithBudget(k *store.Key) *store.Key {
	b, ok := s.Budget(k.BudgetID)
	if !ok {
		return k
	}
	e := *k
	fillLimits(&e.Limits, &b.Limits)
	fillF(&e.SoftBudget, b.SoftBudget)
	if len(e.ModelMaxBudget) == 0 {
		e.ModelMaxBudget = modelBudgets(b.ModelMaxBudget)
	}
	return &e
}

// modelBudgets is a budget object's model_max_budget ({"model":
// {"max_budget": n}}, or LiteLLM's key shapes: a number, {"budget_limit":
// n}) as a key's per-model budgets; nil when it names none.
func modelBudgets(m map[string]any) map[string]float64 {
	var out map[string]float64
	for model, v := range m {
		var f float64
		switch x := v.(type) {
		case float64:
			f = x
		case map[string]any:
			n, ok := x["max_budget"].(float64)
			if !ok {
				if n, ok = x["budget_limit"].(float64); !ok {
					continue
				}
			}
			f = n
		default:
			continue
		}
		if out == nil {
			out = map[string]float64{}
		}
		out[model] = f
	}
	return out
}

func (s *Snapshot) endUserWithBudget(u *store.EndUser) *store.EndUser {
	b, ok := s.Budget(u.BudgetID)
	if !ok {
		return u
	}
	e := *u
	fillLimits(&e.Limits, &b.Limits)
	return &e
}

// fillLimits sets each of dst's limits that is unset to b's.
func fillLimits(dst, b *store.Limits) {
	fillF(&dst.MaxBudget, b.MaxBudget)
	fillI(&dst.MaxParallelRequests, b.MaxParallelRequests)
	fillI(&dst.TPMLimit, b.TPMLimit)
	fillI(&dst.RPMLimit, b.RPMLimit)
	fillPeriod(dst, b)
}

func fillF(dst **float64, v *float64) {
	if *dst == nil {
		*dst = v
	}
}

func fillI(dst **int64, v *int64) {
	if *dst == nil {
		*dst = v
	}
}

func fillPeriod(dst, b *store.Limits) {
	if dst.BudgetDuration != nil || b.BudgetDuration == nil {
		return
	}
	dst.BudgetDuration = b.BudgetDuration
	if dst.BudgetResetAt == nil {
		dst.BudgetResetAt = b.BudgetResetAt
	}
}

// DeleteKey removes a key, deleted from the store just now.
func (s *Snapshot) DeleteKey(h string) {
	s.here(store.KindKey, h, func() { s.deleteKeyAt(h, time.Now()) })
}

func (s *Snapshot) deleteKeyAt(h string, at time.Time) {
	s.forgotHere.Store(h, time.Now())
	s.forgotten.Store(h, at)
	s.rawKeys.Delete(h)
	s.removeKey(h)
}

// forgetFor is how long a deletion outranks rows read before it: far longer
// than a resync's overlap.
const forgetFor = time.Minute

// RangeKeys calls fn for every key until fn returns false (management
// calls only: it visits the whole snapshot). While the keys read at
// start-up are still coming it waits for them.
func (s *Snapshot) RangeKeys(fn func(*store.Key) bool) {
	<-s.Loaded()
	s.rangeKeys(fn)
}

func (s *Snapshot) rangeKeys(fn func(*store.Key) bool) {
	s.rangeRecs(func(r *keyRec, sum *[32]byte, named string) bool { return fn(r.decode(r.tokenHash(sum, named))) })
}

// tokenHash is the token hash of a record indexed by digest sum, or
// named when that is not "".
func (r *keyRec) tokenHash(sum *[32]byte, named string) string {
	if named != "" {
		return named
	}
	return r.hash(lowerHex(sum))
}

// rangeRecs calls fn for every record with its token hash until fn
// returns false. A shard's records are copied out, so fn runs with no
// lock held (it may write to the snapshot).
func (s *Snapshot) rangeRecs(fn func(r *keyRec, sum *[32]byte, named string) bool) {
	var batch []*keyRec
	for i := range s.keys {
		sh := &s.keys[i]
		sh.mu.RLock()
		batch = batch[:0]
		sh.t.each(func(r *keyRec) bool {
			batch = append(batch, r)
			return true
		})
		sh.mu.RUnlock()
		for _, r := range batch {
			if !fn(r, &r.sum, "") { // records are immutable: their sum too
				return
			}
		}
	}
	s.namedMu.RLock()
	named := make(map[string]*keyRec, len(s.named))
	for h, r := range s.named {
		named[h] = r
	}
	s.namedMu.RUnlock()
	for h, r := range named {
		if !fn(r, nil, h) {
			return
		}
	}
}

// RangeTeams calls fn for every team until fn returns false.
func (s *Snapshot) RangeTeams(fn func(*store.Team) bool) {
	s.teams.Range(func(_, v any) bool { return fn(v.(*store.Team)) })
}

// RangeUsers calls fn for every user until fn returns false.
func (s *Snapshot) RangeUsers(fn func(*store.User) bool) {
	s.users.Range(func(_, v any) bool { return fn(v.(*store.User)) })
}

// RangeEndUsers calls fn for every end user (with its budget's limits
// filled in) until fn returns false.
func (s *Snapshot) RangeEndUsers(fn func(*store.EndUser) bool) {
	s.endUsers.Range(func(_, v any) bool { return fn(v.(*store.EndUser)) })
}

// RangeOrganizations calls fn for every organization until fn returns false.
func (s *Snapshot) RangeOrganizations(fn func(*store.Organization) bool) {
	s.orgs.Range(func(_, v any) bool { return fn(v.(*store.Organization)) })
}

// DeleteUser removes a user; created is the created_at of the record
// deleted (zero: unknown; the copy the snapshot holds names it too). A
// copy of her published later is dropped (goneRec).
func (s *Snapshot) DeleteUser(id string, created time.Time) {
	s.here(store.KindUser, id, func() { s.deleteUser(id, created) })
}

func (s *Snapshot) deleteUser(id string, created time.Time) {
	var held time.Time
	if cur, ok := s.users.Load(id); ok {
		held = cur.(*store.User).CreatedAt
	}
	s.buried(store.KindUser, id, created, held)
	s.users.Delete(id)
}

// putUserHere is PutUser's write (localMu held). Two writes of one user
// publish in any order, and a write may publish after her deletion: a copy
// of a deleted incarnation (goneRec), or stamped earlier than the copy of
// the same incarnation the snapshot has, is stale and dropped (a user's
// updated_at only grows, store.NextStamp). A record without a stamp (not
// from a store) is published as it is.
func (s *Snapshot) putUserHere(u *store.User) {
	if s.isDead(store.KindUser, u.UserID, u.CreatedAt, u.UpdatedAt) {
		return
	}
	if cur, ok := s.users.Load(u.UserID); ok && !u.UpdatedAt.IsZero() {
		if c := cur.(*store.User); c.CreatedAt.Equal(u.CreatedAt) && c.UpdatedAt.After(u.UpdatedAt) {
			return
		}
	}
	s.users.Store(u.UserID, u)
}

// DeleteTeam removes a team; created is as DeleteUser's.
func (s *Snapshot) DeleteTeam(id string, created time.Time) {
	s.here(store.KindTeam, id, func() { s.deleteTeam(id, created) })
}

// deleteTeam removes a team; a copy of the incarnation deleted is not
// published again (goneRec): not by its stamp, which an edit written
// before the deletion but published after it outruns, nor by the
// deletion's time, which a team made again on a replica whose clock is
// behind would not pass (its keys would be served without its block and
// budgets).
func (s *Snapshot) deleteTeam(id string, created time.Time) {
	s.teamMu.Lock()
	defer s.teamMu.Unlock()
	var held time.Time
	if cur, ok := s.Team(id); ok {
		held = cur.CreatedAt
	}
	s.buried(store.KindTeam, id, created, held)
	s.teams.Delete(id)
	s.memberBudgets.Delete(id)
}

// DeleteEndUser removes an end user.
func (s *Snapshot) DeleteEndUser(id string) {
	s.here(store.KindEndUser, id, func() { s.deleteEndUser(id) })
}

func (s *Snapshot) deleteEndUser(id string) {
	s.endUsers.Delete(id)
	s.rawEndUsers.Delete(id)
}

func load[T any](m *sync.Map, id string) (*T, bool) {
	v, ok := m.Load(id)
	if !ok {
		return nil, false
	}
	return v.(*T), true
}

// keyUsable says why a key may not be used, or "" when it may.
func keyUsable(k *store.Key, team *store.Team, now time.Time) string {
	switch {
	case k.Blocked:
		return "key is blocked"
	case k.Expires != nil && !k.Expires.After(now):
		return "key expired at " + k.Expires.UTC().Format(time.RFC3339)
	case team != nil && team.Blocked:
		return "team " + team.TeamID + " is blocked"
	}
	return ""
}

// orgUsable says why a key of an organization's team may not be used.
func orgUsable(o *store.Organization) string {
	if o != nil && o.Blocked {
		return "organization " + o.OrganizationID + " is blocked"
	}
	return ""
}

// Apply brings the snapshot up to date with changes read from the store:
// deletions first, then the rows as they are now (a row deleted and created
// again in one window survives). Applying the same changes twice is harmless.
// read is when the resync began reading: an entity this process wrote or
// removed itself after then is left as it is (the row read may predate that
// write: a team's lock lifted, a key blocked, would flip back until the next
// resync); the zero time applies everything.
func (s *Snapshot) Apply(changed *store.Snapshot, deleted []store.Deletion, read time.Time) {
	// Keys go first: a user or team deleted with its keys must never be
	// seen gone while its keys (a blocked team's, say) still authenticate.
	for _, d := range deleted {
		if d.Kind == store.KindKey {
			s.fromStore(d.Kind, d.ID, read, func() { s.deleteKeyAt(d.ID, d.At) })
		}
	}
	for _, d := range deleted {
		var del func(string)
		switch d.Kind {
		// A user or team made again since the deletion (created after
		// it), the record read again by a later look, stays: buried, its
		// row read with the record would be taken for a dead copy.
		case store.KindUser:
			del = func(id string) {
				if u, ok := s.User(id); !ok || !u.CreatedAt.After(d.At) {
					s.deleteUser(id, time.Time{})
				}
			}
		case store.KindTeam:
			del = func(id string) {
				if t, ok := s.Team(id); !ok || !t.CreatedAt.After(d.At) {
					s.deleteTeam(id, time.Time{})
				}
			}
		case store.KindEndUser:
			del = s.deleteEndUser
		case store.KindOrganization:
			del = func(id string) { s.orgs.Delete(id) }
		case store.KindBudget:
			del = s.deleteBudget
		default:
			continue
		}
		s.fromStore(d.Kind, d.ID, read, func() { del(d.ID) })
	}
	if changed != nil {
		s.applyChanged(changed, read)
	}
	if !read.IsZero() { // marks older than this read outrank nothing to come
		s.localMu.Lock()
		for id, at := range s.local {
			if !at.After(read) {
				delete(s.local, id)
			}
		}
		s.localMu.Unlock()
	}
}

func (s *Snapshot) applyChanged(changed *store.Snapshot, read time.Time) {
	// Budgets before what names them: a key read with its new budget_id
	// must find the budget.
	for _, b := range changed.Budgets {
		s.fromStore(store.KindBudget, b.BudgetID, read, func() { s.putBudget(b) })
	}
	for _, o := range changed.Organizations {
		s.fromStore(store.KindOrganization, o.OrganizationID, read, func() { s.orgs.Store(o.OrganizationID, o) })
	}
	// End users before the keys: a key read in the same resync as an end
	// user made before it must not be served while the end user is still
	// missing (it would be taken for a new one: a key the snapshot has
	// does not read missing end users from the store).
	for _, e := range changed.EndUsers {
		s.fromStore(store.KindEndUser, e.UserID, read, func() { s.putEndUser(e) })
	}
	for _, k := range changed.Keys {
		// A row last written before its key was deleted is stale: this
		// resync read it before the deletion (here, or in the store).
		if at, ok := s.forgotten.Load(k.TokenHash); ok && !k.UpdatedAt.After(at.(time.Time)) {
			continue
		}
		s.fromStore(store.KindKey, k.TokenHash, read, func() { s.putKey(k, nil) })
	}
	cutoff := time.Now().Add(-forgetFor)
	s.forgotten.Range(func(h, at any) bool {
		if at.(time.Time).Before(cutoff) {
			s.forgotten.Delete(h)
			s.forgotHere.Delete(h)
		}
		return true
	})
	for _, u := range changed.Users {
		s.fromStore(store.KindUser, u.UserID, read, func() { s.putUserHere(u) })
	}
	for _, t := range changed.Teams {
		s.fromStore(store.KindTeam, t.TeamID, read, func() { s.putTeam(t) })
	}
}

// Periods calls fn for every key, user, team and end user that has a budget
// period (budget_duration and budget_reset_at), for the period sweep.
func (s *Snapshot) Periods(fn func(kind store.Kind, id, duration string, resetAt time.Time)) {
	visit := func(kind store.Kind, id string, l *store.Limits) {
		if d, at := l.BudgetDuration, l.BudgetResetAt; d != nil && *d != "" && at != nil {
			fn(kind, id, *d, *at)
		}
	}
	s.rangeRecs(func(r *keyRec, sum *[32]byte, named string) bool { // what is not in yet is visited next time
		if d := r.sh.limits.BudgetDuration; d != nil && *d != "" && r.resetAt != timeNone {
			var at *time.Time
			if r.resetAt == timeInX {
				at = r.x.resetAt // rare fields live in x only when one is set
			} else {
				t := unpackTime(r.resetAt)
				at = &t
			}
			fn(store.KindKey, r.tokenHash(sum, named), *d, *at)
		}
		return true
	})
	s.users.Range(func(_, v any) bool {
		u := v.(*store.User)
		visit(store.KindUser, u.UserID, &u.Limits)
		return true
	})
	s.teams.Range(func(_, v any) bool {
		t := v.(*store.Team)
		visit(store.KindTeam, t.TeamID, &t.Limits)
		return true
	})
	s.endUsers.Range(func(_, v any) bool {
		e := v.(*store.EndUser)
		visit(store.KindEndUser, e.UserID, &e.Limits)
		return true
	})
}
