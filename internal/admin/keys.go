package admin

import (
	"time"

	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/auth"
	"github.com/tollgate/tollgate/internal/jsonbody"
	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// Key routes. Any role but the two viewers may call the writing ones;
// proxy_admin acts on every key, everyone else on the keys of her own user
// (or the key she presents), within keyFields (policy.go).
func (a *API) registerKeys(mux Mux) {
	mux.Handle("POST /key/generate", a.route(writeOwn, a.keyGenerate))
	mux.Handle("GET /key/info", a.route(readOwn, a.keyInfo))
	mux.Handle("POST /key/update", a.route(writeOwn, a.keyUpdate))
	mux.Handle("POST /key/delete", a.route(writeOwn, a.keyDelete))
	mux.Handle("GET /key/list", a.route(readOwn, a.keyList))
	mux.Handle("POST /key/regenerate", a.route(writeOwn, a.keyRegenerate))
	mux.Handle("POST /key/{key}/regenerate", a.route(writeOwn, a.keyRegenerate))
	mux.Handle("POST /key/block", a.route(writeOwn, a.keyBlock(true)))
	mux.Handle("POST /key/unblock", a.route(writeOwn, a.keyBlock(false)))
}

// mayManageKey: admins manage every key; other users only keys of their own
// user id (or the key they present).
func mayManageKey(p *auth.Principal, k *store.Key) bool {
	if seesAll(p) {
		return true
	}
	if p.KeyHash == k.TokenHash {
		return true
	}
	return p.Key != nil && p.Key.UserID != "" && p.Key.UserID == k.UserID
}

func (a *API) keyGenerate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req keyParams
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	// The request as sent is checked before defaults and upper bounds
	// apply: a bound clamps a sane value, it does not repair an absurd one.
	if err := req.validate(); err != nil {
		return err
	}
	if a.keyHook != nil {
		if err := a.askKeyHook(r, obj); err != nil {
			return err
		}
	}
	if !isAdmin(p) {
		// A non-admin creates keys for itself only.
		own := ""
		if p.Key != nil {
			own = p.Key.UserID
		}
		if req.UserID != nil && *req.UserID != own {
			return apierror.Forbidden("%s may create keys only for its own user", p.Role())
		}
		if own == "" {
			// Nothing would bound the keys a user-less key made: its own
			// budget binds only itself.
			return apierror.Forbidden("a key without a user may not create keys; ask a proxy_admin")
		}
		req.UserID = &own
		if err := a.checkOwnNewKey(r.Context(), p, obj, &req); err != nil {
			return err
		}
	}
	applyDefaults(&req, obj, a.cfg.LiteLLMSettings.DefaultKeyGenerateParams)
	k, raw, err := a.createKey(r, p, &req)
	if err != nil {
		return err
	}
	return writeJSON(w, a.withKeyBudget(keyResponse(k, raw), k))
}

// createKey validates req, writes the key and publishes it.
func (a *API) createKey(r *http.Request, p *auth.Principal, req *keyParams) (*store.Key, string, error) {
	applyUpperBounds(req, a.cfg.LiteLLMSettings.UpperboundKeyGenerateParams)
	if err := req.validate(); err != nil {
		return nil, "", err
	}
	if deref(req.UserID) == auth.ProxyBudgetUser {
		// Her record is the gateway's budget; no request is hers.
		return nil, "", apierror.BadRequest("user_id", "%s stands for the gateway's budget (litellm_settings.max_budget) and has no keys", auth.ProxyBudgetUser)
	}
	if err := a.checkBudgetRef(r.Context(), deref(req.BudgetID), "budget_id"); err != nil {
		return nil, "", err
	}
	if req.TeamID != nil && deref(req.TeamID) != "" {
		team, ok := a.snap.Team(*req.TeamID)
		if ok && len(team.Models) > 0 {
			for _, m := range req.Models {
				if !containsModel(team.Models, m) {
					return nil, "", apierror.BadRequest("models", "model %q is not in team %s's models %v", m, team.TeamID, team.Models)
				}
			}
		}
	}
	raw := newRawKey()
	if req.Key != nil {
		raw = *req.Key
		if err := a.checkCustomKey(r.Context(), raw, "key"); err != nil {
			return nil, "", err
		}
	}
	now := a.now()
	k := &store.Key{TokenHash: auth.HashHex(raw), KeyName: auth.Abbreviate(raw), CreatedBy: actor(p)}
	if req.Spend != nil {
		k.Spend = *req.Spend
	}
	if err := req.fill(k, func(string) bool { return true }, now); err != nil {
		return nil, "", err
	}
	if err := a.store.CreateKey(r.Context(), k); err != nil {
		if errors.Is(err, store.ErrConflict) {
			if req.KeyAlias != nil {
				if _, err := a.store.GetKeyByAlias(r.Context(), *req.KeyAlias); err == nil {
					return nil, "", apierror.BadRequest("key_alias", "key_alias %q is already in use", *req.KeyAlias)
				}
			}
			return nil, "", apierror.BadRequest("key", "this key already exists")
		}
		return nil, "", storeError(err, "key", "key")
	}
	if a.newKey != nil {
		a.newKey(r.Context(), k)
	}
	a.snap.PutKey(k)
	a.audit(r.Context(), p, "created", "key", k.TokenHash, nil, k)
	return k, raw, nil
}

func containsModel(list []string, m string) bool {
	for _, x := range list {
		if x == m || x == "*" || (strings.HasSuffix(x, "*") && strings.HasPrefix(m, strings.TrimSuffix(x, "*"))) {
			return true
		}
	}
	return false
}

// checkCustomKey refuses a chosen raw key that would shadow, or be taken
// for, another key: the master key, a key from the config file (the
// snapshot is searched before static keys, so a virtual key with a static
// key's hash would take its requests), or a string that is the hash of an
// existing key (naming that key by hash would then reach this one).
func (a *API) checkCustomKey(ctx context.Context, raw, param string) error {
	if a.auth.IsMaster(raw) || a.auth.IsStatic(auth.HashHex(raw)) {
		return apierror.BadRequest(param, "this key is reserved: it is the master key or a key from the config file")
	}
	if isHash(raw) {
		h := strings.ToLower(raw)
		if a.auth.IsStatic(h) {
			return apierror.BadRequest(param, "a custom key may not be the hash of another key")
		}
		if _, err := a.store.GetKey(ctx, h); err == nil {
			return apierror.BadRequest(param, "a custom key may not be the hash of another key")
		} else if !errors.Is(err, store.ErrNotFound) {
			return apierror.Internal(err)
		}
	}
	// A secret a regenerated key had names that key's budget account (and,
	// for a while, its late spend): a new key with it would share them.
	if replaced, err := a.store.HashReplaced(ctx, auth.HashHex(raw)); err != nil {
		return apierror.Internal(err)
	} else if replaced {
		return apierror.BadRequest(param, "this key was replaced by /key/regenerate and may not be used again")
	}
	return nil
}

// findKey finds the key a caller names: the key whose raw value is name,
// else, for a 64-hex name, the key whose hash is name. A custom key is never
// the hash of another (checkCustomKey), so the two readings cannot name two
// different keys a caller could confuse.
func (a *API) findKey(ctx context.Context, name string) (*store.Key, error) {
	k, err := a.store.GetKey(ctx, auth.HashHex(name))
	if errors.Is(err, store.ErrNotFound) && isHash(name) {
		k, err = a.store.GetKey(ctx, strings.ToLower(name))
	}
	return k, err
}

// lookupKey finds the key a request names (raw key, hash, or alias); the
// caller must be allowed to manage what is found.
func (a *API) lookupKey(r *http.Request, p *auth.Principal, keyOrHash, alias string) (*store.Key, error) {
	var k *store.Key
	var err error
	switch {
	case keyOrHash != "":
		k, err = a.findKey(r.Context(), keyOrHash)
	case alias != "":
		k, err = a.store.GetKeyByAlias(r.Context(), alias)
	default:
		return nil, apierror.BadRequest("key", "key is required")
	}
	if err != nil {
		return nil, storeError(err, "key", "key")
	}
	if !mayManageKey(p, k) {
		return nil, apierror.Forbidden("this key belongs to another user")
	}
	return k, nil
}

func (a *API) keyInfo(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	given := q.Get("key")
	name := given
	if name == "" && q.Get("key_alias") == "" {
		if p.Key == nil {
			return apierror.BadRequest("key", "key is required")
		}
		name = p.KeyHash // a key asking about itself
	}
	k, err := a.lookupKey(r, p, name, q.Get("key_alias"))
	if err != nil {
		return err
	}
	// The raw key is echoed only as the caller gave it; it is never stored.
	return writeJSON(w, map[string]any{"key": given, "info": a.withKeyBudget(keyResponse(k, ""), k)})
}

func (a *API) keyUpdate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req keyParams
	obj, err := decode(r, &req)
	if err != nil {
		return err
	}
	if req.Key == nil || *req.Key == "" {
		return apierror.BadRequest("key", "key is required")
	}
	saved := *req.Key
	req.Key = nil // the key names the target; it is not a new custom key
	if err := req.validate(); err != nil {
		return err
	}
	k, err := a.lookupKey(r, p, saved, "")
	if err != nil {
		return err
	}
	if !isAdmin(p) && obj.Has("user_id") && deref(req.UserID) != k.UserID {
		return apierror.Forbidden("%s may not move a key to another user", p.Role())
	}
	before := *k
	updated := *k
	if err := req.fill(&updated, obj.Has, a.now()); err != nil {
		return err
	}
	if obj.Has("spend") && req.Spend != nil {
		updated.Spend = *req.Spend
	}
	if err := a.checkOwnKeyUpdate(r.Context(), p, obj, k, &updated); err != nil {
		return err
	}
	if obj.Has("budget_id") {
		if err := a.checkBudgetRef(r.Context(), updated.BudgetID, "budget_id"); err != nil {
			return err
		}
	}
	if err := a.store.UpdateKey(r.Context(), &updated); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return apierror.BadRequest("key_alias", "key_alias %q is already in use", deref(updated.KeyAlias))
		}
		return storeError(err, "key", "key")
	}
	if obj.Has("spend") && req.Spend != nil {
		if err := a.setSpendOf(r, store.KindKey, updated.TokenHash, updated.Account(), *req.Spend); err != nil {
			return err
		}
		updated.Spend = *req.Spend
	}
	a.snap.PutKey(&updated)
	a.forgetModelBudgets(r.Context(), &before, &updated)
	a.audit(r.Context(), p, "updated", "key", k.TokenHash, before, updated)
	resp := a.withKeyBudget(keyResponse(&updated, ""), &updated)
	resp["key"] = saved
	return writeJSON(w, resp)
}

// forgetModelBudgets removes from Redis the model budgets (kind
// key_model) that an update dropped from a key's model_max_budget, as a
// deletion removes all of them: left, an unused hash stayed a week. The
// stored spend (budget_spend) stays, so a model budget set again starts
// from it, reseeded on Redis by its next hold; this replica's book keeps
// its account.
func (a *API) forgetModelBudgets(ctx context.Context, before, after *store.Key) {
	if a.shared == nil || len(before.ModelMaxBudget) == 0 {
		return
	}
	acct := before.Account()
	var gone []string
	for m := range before.ModelMaxBudget {
		if _, ok := after.ModelMaxBudget[m]; !ok {
			gone = append(gone, acct+"/"+m)
		}
	}
	if len(gone) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := a.shared.Forget(ctx, store.KindKeyModel, gone...); err != nil {
		a.log.Warn("dropped model budgets not removed from redis; they expire with their hashes", "err", err)
	}
}

// setSpend overwrites an entity's spend in the store and in the ledger.
func (a *API) setSpend(r *http.Request, kind store.Kind, id string, spend float64) error {
	return a.setSpendOf(r, kind, id, id, spend)
}

// setSpendOf is setSpend of the entity whose store record is id and whose
// budget account is acct (a regenerated key's, store.Key.Account).
func (a *API) setSpendOf(r *http.Request, kind store.Kind, id, acct string, spend float64) error {
	if err := a.store.SetSpend(r.Context(), kind, id, spend); err != nil {
		return storeError(err, string(kind), "spend")
	}
	var resetAt time.Time // the period the edit is for, when this replica knows it
	if account, ok := a.book.Lookup(kind, acct); ok {
		account.SetSpent(ledger.USD(spend))
		resetAt = account.ResetAt()
	}
	if a.shared != nil {
		if err := a.shared.SetSpent(r.Context(), kind, acct, ledger.USD(spend), resetAt); err != nil {
			a.log.Warn("spend edit not passed to redis; it applies when the account is next seeded", "err", err)
		}
	}
	return nil
}

func (a *API) keyDelete(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Keys       []string `json:"keys"`
		KeyAliases []string `json:"key_aliases"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Keys)+len(req.KeyAliases) == 0 {
		return apierror.BadRequest("keys", "keys or key_aliases is required")
	}
	// Resolve every key first, so that one bad name deletes nothing.
	var targets []*store.Key
	for _, k := range req.Keys {
		key, err := a.lookupKey(r, p, k, "")
		if err != nil {
			return err
		}
		targets = append(targets, key)
	}
	for _, al := range req.KeyAliases {
		key, err := a.lookupKey(r, p, "", al)
		if err != nil {
			return err
		}
		targets = append(targets, key)
	}
	// Spend queued here under these keys' hashes goes to their records
	// now: written after the deletion, it would land on a key made again
	// with one of their secrets.
	a.flushQueued()
	deleted := make([]string, 0, len(targets))
	// The deleted keys' accounts go here and on Redis together, once the
	// deletions are done (or one failed): a few Redis scripts, not a round
	// trip per key.
	var gone []*store.Key
	for i, k := range targets {
		if err := a.store.DeleteKey(r.Context(), k.TokenHash); err != nil && !errors.Is(err, store.ErrNotFound) {
			ForgetKeys(r.Context(), a.book, a.shared, a.log, gone)
			return apierror.Internal(err)
		}
		a.snap.DeleteKey(k.TokenHash)
		gone = append(gone, k)
		a.audit(r.Context(), p, "deleted", "key", k.TokenHash, k, nil)
		if i < len(req.Keys) {
			deleted = append(deleted, req.Keys[i])
		} else {
			deleted = append(deleted, req.KeyAliases[i-len(req.Keys)])
		}
	}
	ForgetKeys(r.Context(), a.book, a.shared, a.log, gone)
	return writeJSON(w, map[string]any{"deleted_keys": deleted})
}

// flushQueued writes the spend this replica has queued before keys are
// deleted (/key/delete, and a user's, team's or organisation's deletion,
// which takes their keys): written after, spend queued under a key's hash
// would land on a key made again with its secret.
func (a *API) flushQueued() {
	if a.flushSpend != nil {
		a.flushSpend()
	}
}

// forgetBatch is how many Redis hashes one ForgetKeys script deletes.
const forgetBatch = 500

// ForgetKeys drops the budget accounts of keys, deleted, and their model
// budgets', from book and (shared not nil) Redis: a key made later with
// the same secret starts from its own spend, not the deleted key's. The
// replica that deletes keys (/key/delete, an owner's deletion) calls it
// once for all of them, and every other one when its resync brings the
// deletions (a hold it took on Redis in between, on its older view of an
// account, would have seeded the hash again). One pass over the book, and
// Redis's hashes deleted forgetBatch to a script: a bulk deletion of
// thousands of keys makes a few round trips, not one per key.
func ForgetKeys(ctx context.Context, book *ledger.Book, shared *ledger.Shared, log *slog.Logger, keys []*store.Key) {
	if len(keys) == 0 {
		return
	}
	accts := make([]string, len(keys))
	for i, k := range keys {
		accts[i] = k.Account()
	}
	book.Forget(store.KindKey, accts...)
	if shared == nil {
		return
	}
	var models []string
	for i, k := range keys {
		for m := range k.ModelMaxBudget {
			models = append(models, accts[i]+"/"+m)
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second+time.Duration(len(keys)+len(models))*time.Millisecond)
	defer cancel()
	var err error
	for _, set := range []struct {
		kind store.Kind
		ids  []string
	}{{store.KindKey, accts}, {store.KindKeyModel, models}} {
		for ids := range slices.Chunk(set.ids, forgetBatch) {
			if err = shared.Forget(ctx, set.kind, ids...); err != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	if err != nil {
		log.Warn("deleted keys' budgets not removed from redis; they expire with their hashes", "keys", len(keys), "err", err)
	}
}

func (a *API) keyList(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	q := r.URL.Query()
	f := store.KeyFilter{UserID: q.Get("user_id"), TeamID: q.Get("team_id"), Alias: q.Get("key_alias"), Page: page(r)}
	if !seesAll(p) {
		if p.Key == nil || p.Key.UserID == "" {
			f.UserID = "\x00none" // a key without a user sees no other keys
		} else {
			f.UserID = p.Key.UserID
		}
	}
	keys, total, err := a.store.ListKeys(r.Context(), f)
	if err != nil {
		return apierror.Internal(err)
	}
	full := q.Get("return_full_object") == "true"
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		if full {
			out = append(out, keyResponse(k, ""))
		} else {
			out = append(out, k.TokenHash)
		}
	}
	limit, _ := f.PageBounds()
	pg := max(f.Number, 1)
	return writeJSON(w, map[string]any{
		"keys": out, "total_count": total, "current_page": pg, "total_pages": (total + limit - 1) / limit,
	})
}

func (a *API) keyRegenerate(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var req struct {
		Key       string   `json:"key"`
		NewKey    *string  `json:"new_key"`
		MaxBudget *float64 `json:"max_budget"`
	}
	if _, err := decode(r, &req); err != nil {
		return err
	}
	name := firstOf(r.PathValue("key"), req.Key)
	old, err := a.lookupKey(r, p, name, "")
	if err != nil {
		return err
	}
	raw := newRawKey()
	if req.NewKey != nil {
		if len(*req.NewKey) < 8 {
			return apierror.BadRequest("new_key", "new_key must be at least 8 characters")
		}
		if err := a.checkCustomKey(r.Context(), *req.NewKey, "new_key"); err != nil {
			return err
		}
		raw = *req.NewKey
	}
	k := *old
	// The budget account stays the key's: holds in flight, settles still
	// to come and spend queued under the old hash are on it, and so count
	// against the new key's budget at once, here and on every replica
	// (which learns the new record with the replacement), in process and on
	// Redis alike.
	k.BudgetAccount = old.Account()
	k.TokenHash, k.KeyName = auth.HashHex(raw), auth.Abbreviate(raw)
	if req.MaxBudget != nil {
		if err := checkUSD("max_budget", *req.MaxBudget); err != nil {
			return err
		}
		if !isAdmin(p) && (old.MaxBudget == nil || *old.MaxBudget != *req.MaxBudget) {
			return apierror.Forbidden("max_budget may be set only by proxy_admin (you are %s)", p.Role())
		}
		k.MaxBudget = req.MaxBudget
	}
	if err := a.store.ReplaceKey(r.Context(), old.TokenHash, &k); err != nil {
		return storeError(err, "key", "key")
	}
	if old.TokenHash != k.TokenHash {
		// Not for the key's own secret given again: its new row, stamped
		// before this, would be taken for a copy of the deleted key.
		a.snap.DeleteKey(old.TokenHash)
	}
	if a.newKey != nil {
		a.newKey(r.Context(), &k)
	}
	a.snap.PutKey(&k)
	a.audit(r.Context(), p, "regenerated", "key", k.TokenHash, map[string]string{"token": old.TokenHash}, k)
	return writeJSON(w, keyResponse(&k, raw))
}

func (a *API) keyBlock(block bool) handler {
	return func(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
		var req struct {
			Key string `json:"key"`
		}
		if _, err := decode(r, &req); err != nil {
			return err
		}
		k, err := a.lookupKey(r, p, req.Key, "")
		if err != nil {
			return err
		}
		// An owner may block her key, and unblock it only when she blocked
		// it: a block by an admin (or of unknown origin) binds her.
		by := "owner"
		if isAdmin(p) {
			by = "admin"
		}
		if !block && !isAdmin(p) && k.Blocked && k.BlockedBy != "owner" {
			return apierror.Forbidden("this key was blocked by an admin; only proxy_admin may unblock it")
		}
		updated := *k
		updated.Blocked, updated.BlockedBy = block, by
		switch {
		case !block:
			updated.BlockedBy = ""
		case k.Blocked:
			// Blocking a blocked key changes nothing: an owner re-blocking
			// an admin's block must not make it hers to lift.
			updated.BlockedBy = k.BlockedBy
		}
		if err := a.store.UpdateKey(r.Context(), &updated); err != nil {
			return storeError(err, "key", "key")
		}
		a.snap.PutKey(&updated)
		action := map[bool]string{true: "blocked", false: "unblocked"}[block]
		a.audit(r.Context(), p, action, "key", k.TokenHash, k, updated)
		return writeJSON(w, keyResponse(&updated, ""))
	}
}

// KeyHookVars are the CEL variables custom_key_generate expressions may use:
// request is the /key/generate body as sent.
var KeyHookVars = []string{"request"}

// askKeyHook lets general_settings.custom_key_generate refuse a key: a
// refusal ("decision": false) is a 403 with its message, as in LiteLLM; an
// exception a Python hook raised is a 400 with its message; a hook that
// cannot answer (down, too slow) is a 503 naming the hook. None of them
// creates a key.
func (a *API) askKeyHook(r *http.Request, obj *jsonbody.Object) error {
	var body map[string]any
	if err := json.Unmarshal(obj.Body(), &body); err != nil {
		return apierror.BadRequest("", "%v", err)
	}
	d, err := a.keyHook.Decide(r.Context(), map[string]any{"request": body}, "")
	if err != nil {
		return apierror.Unavailable(err, "key generation refused: %v", err)
	}
	if !d.Allow {
		msg := d.Message
		if msg == "" {
			msg = "refused by general_settings.custom_key_generate"
		}
		if d.Status != 0 { // the hook's HTTPException / ProxyException status
			return apierror.WithStatus(d.Status, "%s", msg)
		}
		if d.Raised {
			return apierror.BadRequest("", "%s", msg)
		}
		return apierror.Forbidden("%s", msg)
	}
	return nil
}
