package dynamostore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/tollgate/tollgate/internal/store"
)

// entity describes how records of T are kept: item pk "<kind>#<id>", sk
// "#", the record's JSON in "data", its spend in "spend" (authoritative:
// record writes never overwrite it), "kind", "created_at" and
// "updated_at" (microseconds; updated_at feeds the by_kind index).
type entity[T any] struct {
	kind  store.Kind
	table func(*DB) string
	id    func(*T) string
	spend func(*T) *float64
	times func(*T) (created, updated *time.Time)
	// extra are attributes besides the document (a key's alias, user, team).
	extra func(*T) map[string]types.AttributeValue
}

func pkOf(kind store.Kind, id string) string { return string(kind) + "#" + id }

func encode(v any) (string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("dynamostore: cannot store %T: %w: %w", v, store.ErrRejected, err)
	}
	return string(b), nil
}

func (e entity[T]) item(v *T) (map[string]types.AttributeValue, error) {
	data, err := encode(v)
	if err != nil {
		return nil, err
	}
	c, u := e.times(v)
	it := key(pkOf(e.kind, e.id(v)), recordSK)
	it["kind"] = attrS(string(e.kind))
	it["data"] = attrS(data)
	it["spend"] = attrF(*e.spend(v))
	it["created_at"] = attrN(micros(*c))
	it["updated_at"] = attrN(micros(*u))
	if e.extra != nil {
		for k, v := range e.extra(v) {
			it[k] = v
		}
	}
	return it, nil
}

func (e entity[T]) decode(it map[string]types.AttributeValue) (*T, error) {
	v := new(T)
	if err := json.Unmarshal([]byte(getS(it, "data")), v); err != nil {
		return nil, fmt.Errorf("%s: corrupt record %s: %w", e.kind, getS(it, "pk"), err)
	}
	*e.spend(v) = getF(it, "spend")
	// The item's updated_at attribute is what conditional writes compare
	// (UpdateTeam, leaveTeams) and Changes selects on: a record whose JSON
	// says otherwise (a hand edit, an older version's write) is read with it.
	if _, u := e.times(v); getN(it, "updated_at") != 0 && micros(*u) != getN(it, "updated_at") {
		*u = fromMicros(getN(it, "updated_at"))
	}
	return v, nil
}

func (e entity[T]) create(ctx context.Context, s *DB, v *T) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	c, u := e.times(v)
	if c.IsZero() {
		*c = now
	}
	*u = now
	it, err := e.item(v)
	if err != nil {
		return err
	}
	_, err = s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table(s)), Item: it,
		ConditionExpression: aws.String("attribute_not_exists(pk)")})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrConflict, e.kind, e.id(v))
	}
	return classify(err)
}

func (e entity[T]) get(ctx context.Context, s *DB, id string) (*T, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(e.table(s)), Key: key(pkOf(e.kind, id), recordSK), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, err
	}
	if out.Item == nil {
		return nil, fmt.Errorf("%w: %s %s", store.ErrNotFound, e.kind, id)
	}
	return e.decode(out.Item)
}

// update replaces the document (never the spend) of an existing record.
func (e entity[T]) update(ctx context.Context, s *DB, v *T) error {
	return e.updateIf(ctx, s, v, "", nil)
}

// updateIf is update on a further condition (cond, with its values; the
// names #x0 #x1 #x2 are alias, user_id, team_id for keys): ErrNotFound
// when the record is gone or cond fails.
func (e entity[T]) updateIf(ctx context.Context, s *DB, v *T, cond string, condVals map[string]types.AttributeValue) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	_, u := e.times(v)
	*u = store.NextStamp(*u, time.Now()) // only grows: conditions on it hold
	data, err := encode(v)
	if err != nil {
		return err
	}
	set := []string{"#d = :d", "updated_at = :u"}
	names := map[string]string{"#d": "data"}
	vals := map[string]types.AttributeValue{":d": attrS(data), ":u": attrN(micros(*u))}
	var remove []string
	if e.extra != nil {
		for i, k := range []string{"alias", "user_id", "team_id"} {
			ph := fmt.Sprintf("#x%d", i)
			names[ph] = k
			if val, ok := e.extra(v)[k]; ok {
				set = append(set, ph+" = :x"+fmt.Sprint(i))
				vals[":x"+fmt.Sprint(i)] = val
			} else {
				remove = append(remove, ph)
			}
		}
	}
	expr := "SET " + strings.Join(set, ", ")
	if len(remove) > 0 {
		expr += " REMOVE " + strings.Join(remove, ", ")
	}
	condition := "attribute_exists(pk)"
	if cond != "" {
		condition += " AND " + cond
		for k, v := range condVals {
			vals[k] = v
		}
	}
	_, err = s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(e.table(s)), Key: key(pkOf(e.kind, e.id(v)), recordSK),
		UpdateExpression: &expr, ConditionExpression: &condition,
		ExpressionAttributeNames: names, ExpressionAttributeValues: vals})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, e.kind, e.id(v))
	}
	return classify(err)
}

// updateIfUnchanged is update on the condition that the stored updated_at
// is v's as read (a compare-and-swap): store.ErrChanged when the record was
// written since, store.ErrNotFound when it is gone; v keeps its stamp on
// failure.
func (e entity[T]) updateIfUnchanged(ctx context.Context, s *DB, v *T) error {
	_, u := e.times(v)
	read := *u
	err := e.updateIf(ctx, s, v, "updated_at = :was", map[string]types.AttributeValue{":was": attrN(micros(read))})
	if err == nil {
		return nil
	}
	*u = read
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, gerr := e.get(ctx, s, e.id(v)); gerr != nil {
		return err // gone (or unreadable: the write's own answer stands)
	}
	return fmt.Errorf("%w: %s %s", store.ErrChanged, e.kind, e.id(v))
}

// remove deletes a record (ErrNotFound when absent) and leaves a
// tombstone. The tombstone goes first: a delete that fails after it leaves
// the record, which the caller deletes again, while a tombstone lost after
// the delete would leave the record live in other replicas' snapshots.
func (e entity[T]) remove(ctx context.Context, s *DB, id string) error {
	if err := s.tombstone(ctx, e.kind, id); err != nil {
		return err
	}
	_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(e.table(s)), Key: key(pkOf(e.kind, id), recordSK),
		ConditionExpression: aws.String("attribute_exists(pk)")})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, e.kind, id)
	}
	return err
}

func (e entity[T]) delete(ctx context.Context, s *DB, id string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	return e.remove(ctx, s, id)
}

// all reads every record of the kind (a scan of its table).
func (e entity[T]) all(ctx context.Context, s *DB) ([]*T, error) {
	items, err := s.scanAll(ctx, e.table(s), "kind = :k AND sk = :r", nil,
		map[string]types.AttributeValue{":k": attrS(string(e.kind)), ":r": attrS(recordSK)})
	if err != nil {
		return nil, err
	}
	out := make([]*T, 0, len(items))
	for _, it := range items {
		v, err := e.decode(it)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// list pages the records (oldest first, then by id) that keep passes.
func (e entity[T]) list(ctx context.Context, s *DB, keep func(*T) bool, p store.Page) ([]*T, int, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	all, err := e.all(ctx, s)
	if err != nil {
		return nil, 0, err
	}
	if keep != nil {
		all = slices.DeleteFunc(all, func(v *T) bool { return !keep(v) })
	}
	slices.SortFunc(all, func(a, b *T) int {
		ca, _ := e.times(a)
		cb, _ := e.times(b)
		if c := ca.Compare(*cb); c != 0 {
			return c
		}
		return strings.Compare(e.id(a), e.id(b))
	})
	limit, offset := p.PageBounds()
	total := len(all)
	if offset >= total {
		return nil, total, nil
	}
	return all[offset:min(offset+limit, total)], total, nil
}

// since reads the records written at or after at, through the by_kind
// index (keys only) and a consistent batch read of the items.
func (e entity[T]) since(ctx context.Context, s *DB, at time.Time) ([]*T, error) {
	table := e.table(s)
	idx, err := s.queryAll(ctx, &dynamodb.QueryInput{TableName: &table, IndexName: aws.String(kindIndex),
		KeyConditionExpression:    aws.String("kind = :k AND updated_at >= :t"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":k": attrS(string(e.kind)), ":t": attrN(micros(at))}})
	if err != nil {
		return nil, err
	}
	if len(idx) == 0 {
		return nil, nil
	}
	keys := make([]map[string]types.AttributeValue, len(idx))
	for i, it := range idx {
		keys[i] = map[string]types.AttributeValue{"pk": it["pk"], "sk": it["sk"]}
	}
	items, err := s.batchGet(ctx, table, keys)
	if err != nil {
		return nil, err
	}
	var out []*T
	for _, it := range items {
		if getN(it, "updated_at") < micros(at) {
			continue // changed again since the index was read: still current
		}
		v, err := e.decode(it)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

var (
	users = entity[store.User]{kind: store.KindUser, table: func(s *DB) string { return s.users },
		id:    func(u *store.User) string { return u.UserID },
		spend: func(u *store.User) *float64 { return &u.Spend },
		times: func(u *store.User) (*time.Time, *time.Time) { return &u.CreatedAt, &u.UpdatedAt }}
	teams = entity[store.Team]{kind: store.KindTeam, table: func(s *DB) string { return s.users },
		id:    func(t *store.Team) string { return t.TeamID },
		spend: func(t *store.Team) *float64 { return &t.Spend },
		times: func(t *store.Team) (*time.Time, *time.Time) { return &t.CreatedAt, &t.UpdatedAt }}
	endUsers = entity[store.EndUser]{kind: store.KindEndUser, table: func(s *DB) string { return s.users },
		id:    func(e *store.EndUser) string { return e.UserID },
		spend: func(e *store.EndUser) *float64 { return &e.Spend },
		times: func(e *store.EndUser) (*time.Time, *time.Time) { return &e.CreatedAt, &e.UpdatedAt }}
	budgets = entity[store.Budget]{kind: store.KindBudget, table: func(s *DB) string { return s.users },
		id:    func(b *store.Budget) string { return b.BudgetID },
		spend: func(*store.Budget) *float64 { return new(float64) },
		times: func(b *store.Budget) (*time.Time, *time.Time) { return &b.CreatedAt, &b.UpdatedAt }}
	organizations = entity[store.Organization]{kind: store.KindOrganization, table: func(s *DB) string { return s.users },
		id:    func(o *store.Organization) string { return o.OrganizationID },
		spend: func(o *store.Organization) *float64 { return &o.Spend },
		times: func(o *store.Organization) (*time.Time, *time.Time) { return &o.CreatedAt, &o.UpdatedAt }}
	keys = entity[store.Key]{kind: store.KindKey, table: func(s *DB) string { return s.keys },
		id:    func(k *store.Key) string { return k.TokenHash },
		spend: func(k *store.Key) *float64 { return &k.Spend },
		times: func(k *store.Key) (*time.Time, *time.Time) { return &k.CreatedAt, &k.UpdatedAt },
		extra: func(k *store.Key) map[string]types.AttributeValue {
			m := map[string]types.AttributeValue{}
			if a := aliasOf(k); a != "" {
				m["alias"] = attrS(a)
			}
			if k.UserID != "" {
				m["user_id"] = attrS(k.UserID)
			}
			if k.TeamID != "" {
				m["team_id"] = attrS(k.TeamID)
			}
			if k.BudgetAccount != "" {
				m["budget_account"] = attrS(k.BudgetAccount) // HashReplaced
			}
			return m
		}}
)

func (s *DB) CreateUser(ctx context.Context, u *store.User) error { return users.create(ctx, s, u) }
func (s *DB) GetUser(ctx context.Context, id string) (*store.User, error) {
	return users.get(ctx, s, id)
}

// UpdateUser writes u on the condition that the stored updated_at is still
// the one u was read with, as UpdateTeam (store.Store): ErrChanged when it
// is not, ErrNotFound when the user is gone; u keeps its stamp on failure.
func (s *DB) UpdateUser(ctx context.Context, u *store.User) error {
	return users.updateIfUnchanged(ctx, s, u)
}
func (s *DB) DeleteUser(ctx context.Context, id string) error {
	return deleteOwner(ctx, s, users, "user_id", id, func(ctx context.Context) error { return s.leaveTeams(ctx, id) })
}

// leaveTeams takes a user being deleted out of every team's members and
// member budgets, and drops those budgets' spend. DynamoDB has no
// transaction across the items DeleteUser writes (and TransactWriteItems
// cannot read): each team is updated on the condition that it is as read
// (read again on a race), and deleteOwner runs this before it removes the
// user record, so a failure part-way leaves the user there and a
// /user/delete run again finishes the job.
func (s *DB) leaveTeams(ctx context.Context, userID string) error {
	all, err := teams.all(ctx, s)
	if err != nil {
		return err
	}
	for _, t := range all {
		id := t.TeamID // t is nil once the team is found gone
		member := false
		for attempt := 0; ; attempt++ {
			n := len(t.Members) + len(t.MemberBudgets)
			was := micros(t.UpdatedAt)
			t.Members = slices.DeleteFunc(t.Members, func(m store.TeamMember) bool { return m.UserID == userID })
			t.MemberBudgets = slices.DeleteFunc(t.MemberBudgets, func(b store.MemberBudget) bool { return b.UserID == userID })
			if len(t.Members)+len(t.MemberBudgets) == n {
				break
			}
			member = true
			err := teams.updateIf(ctx, s, t, "updated_at = :was", map[string]types.AttributeValue{":was": attrN(was)})
			if err == nil {
				break
			}
			if !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if attempt == 4 {
				// Not an ErrNotFound: /user/delete would take it for "no
				// such user" and answer 200, the user still there.
				return fmt.Errorf("dynamostore: team %s changed on every try while user %s left it: %v", id, userID, err)
			}
			if t, err = teams.get(ctx, s, id); errors.Is(err, store.ErrNotFound) {
				member = false // the team is gone, its member budgets with it (DeleteTeam)
				break
			} else if err != nil {
				return err
			}
		}
		if !member {
			continue
		}
		_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.spend,
			Key: key("budget_spend", string(store.KindTeamMember)+"#"+store.MemberBudgetID(id, userID))})
		if err != nil {
			return err
		}
	}
	return nil
}
func (s *DB) ListUsers(ctx context.Context, p store.Page) ([]*store.User, int, error) {
	return users.list(ctx, s, nil, p)
}

func (s *DB) CreateTeam(ctx context.Context, t *store.Team) error { return teams.create(ctx, s, t) }
func (s *DB) GetTeam(ctx context.Context, id string) (*store.Team, error) {
	return teams.get(ctx, s, id)
}

// UpdateTeam writes t on the condition that the stored updated_at is still
// the one t was read with (store.Store): ErrChanged when it is not, ErrNotFound
// when the team is gone; t keeps its stamp on failure.
func (s *DB) UpdateTeam(ctx context.Context, t *store.Team) error {
	read := t.UpdatedAt
	err := teams.updateIf(ctx, s, t, "updated_at = :was", map[string]types.AttributeValue{":was": attrN(micros(read))})
	if err == nil {
		return nil
	}
	t.UpdatedAt = read
	if !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if _, gerr := teams.get(ctx, s, t.TeamID); gerr != nil {
		return err // gone (or unreadable: the write's own answer stands)
	}
	return fmt.Errorf("%w: %s %s", store.ErrChanged, store.KindTeam, t.TeamID)
}
func (s *DB) DeleteTeam(ctx context.Context, id string) error {
	return deleteOwner(ctx, s, teams, "team_id", id, func(ctx context.Context) error {
		// Its members' budgets' spend goes with it.
		t, err := teams.get(ctx, s, id)
		if err != nil {
			return err
		}
		var members []string
		for _, m := range t.Members {
			members = append(members, m.UserID)
		}
		for _, b := range t.MemberBudgets {
			members = append(members, b.UserID)
		}
		slices.Sort(members)
		for _, u := range slices.Compact(members) {
			_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.spend,
				Key: key("budget_spend", string(store.KindTeamMember)+"#"+store.MemberBudgetID(id, u))})
			if err != nil {
				return err
			}
		}
		return nil
	})
}
func (s *DB) ListTeams(ctx context.Context, p store.Page) ([]*store.Team, int, error) {
	return teams.list(ctx, s, nil, p)
}

func (s *DB) CreateEndUser(ctx context.Context, e *store.EndUser) error {
	return endUsers.create(ctx, s, e)
}
func (s *DB) GetEndUser(ctx context.Context, id string) (*store.EndUser, error) {
	return endUsers.get(ctx, s, id)
}
func (s *DB) UpdateEndUser(ctx context.Context, e *store.EndUser) error {
	return endUsers.update(ctx, s, e)
}
func (s *DB) DeleteEndUser(ctx context.Context, id string) error { return endUsers.delete(ctx, s, id) }
func (s *DB) ListEndUsers(ctx context.Context, p store.Page) ([]*store.EndUser, int, error) {
	return endUsers.list(ctx, s, nil, p)
}

func (s *DB) CreateBudget(ctx context.Context, b *store.Budget) error {
	return budgets.create(ctx, s, b)
}
func (s *DB) GetBudget(ctx context.Context, id string) (*store.Budget, error) {
	return budgets.get(ctx, s, id)
}
func (s *DB) UpdateBudget(ctx context.Context, b *store.Budget) error {
	return budgets.update(ctx, s, b)
}
func (s *DB) DeleteBudget(ctx context.Context, id string) error { return budgets.delete(ctx, s, id) }
func (s *DB) ListBudgets(ctx context.Context, p store.Page) ([]*store.Budget, int, error) {
	return budgets.list(ctx, s, nil, p)
}

func (s *DB) CreateOrganization(ctx context.Context, o *store.Organization) error {
	return organizations.create(ctx, s, o)
}
func (s *DB) GetOrganization(ctx context.Context, id string) (*store.Organization, error) {
	return organizations.get(ctx, s, id)
}
func (s *DB) UpdateOrganization(ctx context.Context, o *store.Organization) error {
	return organizations.update(ctx, s, o)
}
func (s *DB) DeleteOrganization(ctx context.Context, id string) error {
	return organizations.delete(ctx, s, id)
}
func (s *DB) ListOrganizations(ctx context.Context, p store.Page) ([]*store.Organization, int, error) {
	return organizations.list(ctx, s, nil, p)
}

// deleteOwner deletes a user or team and each key whose attr names it
// (LiteLLM deletes them too), leaving a tombstone for each. A missing owner
// is ErrNotFound and deletes nothing; the keys (and then also) go before
// the owner, so a failure part-way leaves the owner to delete again, with
// its keys.
func deleteOwner[T any](ctx context.Context, s *DB, e entity[T], attr, id string, also func(context.Context) error) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(e.table(s)), Key: key(pkOf(e.kind, id), recordSK),
		ConsistentRead: aws.Bool(true), ProjectionExpression: aws.String("pk")})
	if err != nil {
		return err
	}
	if out.Item == nil {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, e.kind, id)
	}
	items, err := s.scanAll(ctx, s.keys, "#a = :id AND sk = :r", map[string]string{"#a": attr},
		map[string]types.AttributeValue{":id": attrS(id), ":r": attrS(recordSK)})
	if err != nil {
		return err
	}
	err = parallel(len(items), 8, func(i int) error {
		return s.dropKey(ctx, strings.TrimPrefix(getS(items[i], "pk"), pkOf(store.KindKey, "")), getS(items[i], "alias"))
	})
	if err != nil {
		return err
	}
	if also != nil {
		if err := also(ctx); err != nil {
			return err
		}
	}
	return e.remove(ctx, s, id)
}

// Keys: the key table holds, in partition "key#<hash>", the key's record
// (sk "#") and its model budgets' spend (sk "model#<budget id>"); and in
// partition "alias#<alias>" the lock that keeps aliases unique.

func aliasOf(k *store.Key) string {
	if k.KeyAlias != nil {
		return *k.KeyAlias
	}
	return ""
}

func aliasPK(a string) string { return "alias#" + a }

// lockAlias claims alias for hash; ErrConflict when a key holds it
// already (hash itself too: the caller then did not take it).
func (s *DB) lockAlias(ctx context.Context, alias, hash string) error {
	if alias == "" {
		return nil
	}
	it := key(aliasPK(alias), recordSK)
	it["hash"] = attrS(hash)
	_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.keys, Item: it,
		ConditionExpression: aws.String("attribute_not_exists(pk)")})
	if isCondFailed(err) {
		return fmt.Errorf("%w: key alias %q", store.ErrConflict, alias)
	}
	return err
}

// unlockAlias releases alias if hash holds it.
func (s *DB) unlockAlias(ctx context.Context, alias, hash string) error {
	if alias == "" {
		return nil
	}
	_, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.keys, Key: key(aliasPK(alias), recordSK),
		ConditionExpression:       aws.String("#h = :h"),
		ExpressionAttributeNames:  map[string]string{"#h": "hash"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":h": attrS(hash)}})
	if isCondFailed(err) {
		return nil
	}
	return err
}

// moveAlias passes alias's lock from one hash to another; ErrConflict when
// from does not hold it.
func (s *DB) moveAlias(ctx context.Context, alias, from, to string) error {
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &s.keys, Key: key(aliasPK(alias), recordSK),
		UpdateExpression: aws.String("SET #h = :to"), ConditionExpression: aws.String("#h = :from"),
		ExpressionAttributeNames:  map[string]string{"#h": "hash"},
		ExpressionAttributeValues: map[string]types.AttributeValue{":from": attrS(from), ":to": attrS(to)}})
	if isCondFailed(err) {
		return fmt.Errorf("%w: key alias %q", store.ErrConflict, alias)
	}
	return err
}

func (s *DB) CreateKey(ctx context.Context, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	now := time.Now().UTC()
	if k.CreatedAt.IsZero() {
		k.CreatedAt = now
	}
	k.UpdatedAt = now
	it, err := keys.item(k)
	if err != nil {
		return err
	}
	return s.putKey(ctx, k, it)
}

// putKey writes a new key item under its alias lock.
func (s *DB) putKey(ctx context.Context, k *store.Key, it map[string]types.AttributeValue) error {
	if err := s.lockAlias(ctx, aliasOf(k), k.TokenHash); err != nil {
		return err
	}
	_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.keys, Item: it, ConditionExpression: aws.String("attribute_not_exists(pk)")})
	if err != nil {
		_ = s.unlockAlias(ctx, aliasOf(k), k.TokenHash)
		if isCondFailed(err) {
			return fmt.Errorf("%w: key %s", store.ErrConflict, k.TokenHash)
		}
		return classify(err)
	}
	return nil
}

// readKey reads a key's partition: its record and model spend.
func (s *DB) readKey(ctx context.Context, hash string) (*store.Key, []map[string]types.AttributeValue, error) {
	items, err := s.partition(ctx, s.keys, pkOf(store.KindKey, hash))
	if err != nil {
		return nil, nil, err
	}
	var k *store.Key
	var models []map[string]types.AttributeValue
	for _, it := range items {
		if getS(it, "sk") == recordSK {
			if k, err = keys.decode(it); err != nil {
				return nil, nil, err
			}
		} else if strings.HasPrefix(getS(it, "sk"), "model#") {
			models = append(models, it)
		}
	}
	if k == nil {
		return nil, nil, fmt.Errorf("%w: key %s", store.ErrNotFound, hash)
	}
	attachModelSpend(k, models)
	return k, models, nil
}

func attachModelSpend(k *store.Key, models []map[string]types.AttributeValue) {
	k.ModelSpend = nil
	for _, it := range models {
		if _, model, ok := strings.Cut(getS(it, "id"), "/"); ok {
			if k.ModelSpend == nil {
				k.ModelSpend = map[string]float64{}
			}
			k.ModelSpend[model] = getF(it, "spend")
		}
	}
}

func (s *DB) GetKey(ctx context.Context, hash string) (*store.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	k, _, err := s.readKey(ctx, hash)
	return k, err
}

func (s *DB) GetKeyByAlias(ctx context.Context, alias string) (*store.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.keys, Key: key(aliasPK(alias), recordSK), ConsistentRead: aws.Bool(true)})
	if err != nil {
		return nil, err
	}
	if out.Item == nil {
		return nil, fmt.Errorf("%w: key alias %q", store.ErrNotFound, alias)
	}
	k, _, err := s.readKey(ctx, getS(out.Item, "hash"))
	return k, err
}

func (s *DB) UpdateKey(ctx context.Context, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := encode(k); err != nil {
		return err
	}
	// The write is conditional on the alias read: an update that raced
	// another one changing the alias reads again, so that exactly the
	// alias the key ends with stays locked.
	for range 10 {
		cur, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: &s.keys, Key: key(pkOf(store.KindKey, k.TokenHash), recordSK),
			ConsistentRead: aws.Bool(true), ProjectionExpression: aws.String("alias")})
		if err != nil {
			return err
		}
		if cur.Item == nil {
			return fmt.Errorf("%w: key %s", store.ErrNotFound, k.TokenHash)
		}
		old, alias := getS(cur.Item, "alias"), aliasOf(k)
		if alias != old {
			if err := s.lockAlias(ctx, alias, k.TokenHash); err != nil {
				return err
			}
		}
		cond, vals := "attribute_not_exists(#x0)", map[string]types.AttributeValue(nil)
		if old != "" {
			cond, vals = "#x0 = :oldalias", map[string]types.AttributeValue{":oldalias": attrS(old)}
		}
		if err := keys.updateIf(ctx, s, k, cond, vals); err != nil {
			if alias != old {
				_ = s.unlockAlias(ctx, alias, k.TokenHash)
			}
			if errors.Is(err, store.ErrNotFound) {
				continue // gone, or its alias changed since read: read again
			}
			return err
		}
		if alias != old {
			return s.unlockAlias(ctx, old, k.TokenHash)
		}
		return nil
	}
	return fmt.Errorf("%w: key %s: its alias kept changing", store.ErrConflict, k.TokenHash)
}

// ReplaceKey moves a key's record to a new hash (regenerate), keeping its
// spend, its model budgets' spend and its managed objects.
func (s *DB) ReplaceKey(ctx context.Context, oldHash string, k *store.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	old, models, err := s.readKey(ctx, oldHash)
	if err != nil {
		return err
	}
	k.Spend = old.Spend
	k.UpdatedAt = time.Now().UTC()
	it, err := keys.item(k)
	if err != nil {
		return err
	}
	if a := aliasOf(k); a != "" && a == aliasOf(old) {
		// The lock passes from the old hash to the new one in one
		// conditional write: released and taken again, another key could
		// take the alias in between.
		if err := s.moveAlias(ctx, a, oldHash, k.TokenHash); err != nil {
			return err
		}
		_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.keys, Item: it, ConditionExpression: aws.String("attribute_not_exists(pk)")})
		if err != nil {
			_ = s.moveAlias(ctx, a, k.TokenHash, oldHash)
			if isCondFailed(err) {
				return fmt.Errorf("%w: key %s", store.ErrConflict, k.TokenHash)
			}
			return classify(err)
		}
	} else if err := s.putKey(ctx, k, it); err != nil {
		return err
	}
	var reqs []types.WriteRequest
	for _, m := range models {
		id := k.TokenHash + strings.TrimPrefix(getS(m, "id"), oldHash)
		n := key(pkOf(store.KindKey, k.TokenHash), "model#"+id)
		n["id"], n["spend"] = attrS(id), m["spend"]
		reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: n}})
	}
	if err := s.batchWrite(ctx, s.keys, reqs); err != nil {
		return err
	}
	if err := s.dropKey(ctx, oldHash, aliasOf(old)); err != nil {
		return err
	}
	// The key's files and batches follow it to its new secret.
	objs, err := s.scanAll(ctx, s.config, "key_hash = :h", nil, map[string]types.AttributeValue{":h": attrS(oldHash)})
	if err != nil {
		return err
	}
	return parallel(len(objs), 8, func(i int) error {
		_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: &s.config, Key: key(getS(objs[i], "pk"), getS(objs[i], "sk")),
			UpdateExpression:          aws.String("SET key_hash = :n"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":n": attrS(k.TokenHash)}})
		return err
	})
}

// HashReplaced: hash is a key's budget account (a scan of the keys
// table; there is no forwarding on DynamoDB).
func (s *DB) HashReplaced(ctx context.Context, hash string) (bool, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	items, err := s.scanAll(ctx, s.keys, "budget_account = :h", nil, map[string]types.AttributeValue{":h": attrS(hash)})
	return len(items) > 0, err
}

// HashesReplaced: HashReplaced for each of hashes in one scan of the keys
// table (the records that have a budget account), however many hashes
// (HashReplaced per hash made one scan each). The scan returns the budget
// account alone: whole records of every regenerated key would be sent on
// each resync that brings a deletion.
func (s *DB) HashesReplaced(ctx context.Context, hashes []string) (map[string]bool, error) {
	used := map[string]bool{}
	if len(hashes) == 0 {
		return used, nil
	}
	ctx, cancel := s.bound(ctx)
	defer cancel()
	want := make(map[string]bool, len(hashes))
	for _, h := range hashes {
		want[h] = true
	}
	p := dynamodb.NewScanPaginator(s.c, &dynamodb.ScanInput{TableName: &s.keys, ConsistentRead: aws.Bool(true),
		FilterExpression: aws.String("attribute_exists(budget_account)"), ProjectionExpression: aws.String("budget_account")})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Items {
			if a := getS(it, "budget_account"); want[a] {
				used[a] = true
			}
		}
	}
	return used, nil
}

// dropKey leaves a tombstone (first, as remove does), then deletes a
// key's partition (record and model budgets) and its alias lock.
func (s *DB) dropKey(ctx context.Context, hash, alias string) error {
	if err := s.tombstone(ctx, store.KindKey, hash); err != nil {
		return err
	}
	return s.dropKeyItems(ctx, hash, alias)
}

// dropKeyItems deletes a key's partition and its alias lock.
func (s *DB) dropKeyItems(ctx context.Context, hash, alias string) error {
	items, err := s.partition(ctx, s.keys, pkOf(store.KindKey, hash))
	if err != nil {
		return err
	}
	var reqs []types.WriteRequest
	for _, it := range items {
		reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: key(getS(it, "pk"), getS(it, "sk"))}})
	}
	if err := s.batchWrite(ctx, s.keys, reqs); err != nil {
		return err
	}
	return s.unlockAlias(ctx, alias, hash)
}

func (s *DB) DeleteKey(ctx context.Context, hash string) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	// The tombstone first (see remove); one for a key that is not there
	// is harmless.
	if err := s.tombstone(ctx, store.KindKey, hash); err != nil {
		return err
	}
	out, err := s.c.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: &s.keys, Key: key(pkOf(store.KindKey, hash), recordSK),
		ConditionExpression: aws.String("attribute_exists(pk)"), ReturnValues: types.ReturnValueAllOld})
	if isCondFailed(err) {
		return fmt.Errorf("%w: key %s", store.ErrNotFound, hash)
	}
	if err != nil {
		return err
	}
	return s.dropKeyItems(ctx, hash, getS(out.Attributes, "alias"))
}

func (s *DB) ListKeys(ctx context.Context, f store.KeyFilter) ([]*store.Key, int, error) {
	return keys.list(ctx, s, func(k *store.Key) bool {
		return (f.UserID == "" || k.UserID == f.UserID) && (f.TeamID == "" || k.TeamID == f.TeamID) &&
			(f.Alias == "" || strings.Contains(aliasOf(k), f.Alias))
	}, f.Page)
}

// Tombstones live in the config table, partition "deletions#<UTC day>",
// sort key "<microseconds>#<kind>#<id>"; Changes reads the days it needs.

func (s *DB) tombstone(ctx context.Context, kind store.Kind, id string) error {
	now := time.Now().UTC()
	it := key("deletions#"+now.Format(time.DateOnly), fmt.Sprintf("%016d#%s#%s", micros(now), kind, id))
	it["kind"], it["id"], it["at"] = attrS(string(kind)), attrS(id), attrN(micros(now))
	// Read for two days at most; "ttl" lets DynamoDB's TTL (when the
	// operator enables it on the config table) remove it after a week.
	it["ttl"] = attrN(now.Add(7 * 24 * time.Hour).Unix())
	_, err := s.c.PutItem(ctx, &dynamodb.PutItemInput{TableName: &s.config, Item: it})
	return err
}

// tombstoneDays is how far back Changes reads tombstones (SQL keeps 24 h).
const tombstoneDays = 2

func (s *DB) deletions(ctx context.Context, since time.Time) ([]store.Deletion, error) {
	now := time.Now().UTC()
	from := since.UTC()
	if floor := now.AddDate(0, 0, -tombstoneDays); from.Before(floor) {
		from = floor
	}
	var out []store.Deletion
	for d := from.Truncate(24 * time.Hour); !d.After(now); d = d.AddDate(0, 0, 1) {
		items, err := s.queryAll(ctx, &dynamodb.QueryInput{TableName: &s.config, ConsistentRead: aws.Bool(true),
			KeyConditionExpression:    aws.String("pk = :pk AND sk >= :from"),
			ExpressionAttributeValues: map[string]types.AttributeValue{":pk": attrS("deletions#" + d.Format(time.DateOnly)), ":from": attrS(fmt.Sprintf("%016d", micros(since)))}})
		if err != nil {
			return nil, err
		}
		for _, it := range items {
			out = append(out, store.Deletion{Kind: store.Kind(getS(it, "kind")), ID: getS(it, "id"), At: fromMicros(getN(it, "at"))})
		}
	}
	return out, nil
}

var kindEntities = map[store.Kind]func(*DB) string{
	store.KindKey: func(s *DB) string { return s.keys }, store.KindUser: func(s *DB) string { return s.users },
	store.KindTeam: func(s *DB) string { return s.users }, store.KindEndUser: func(s *DB) string { return s.users },
	store.KindOrganization: func(s *DB) string { return s.users },
}

// ResetBudget starts a new budget period, conditional on the record read
// (data unchanged), as sqlstore does: replicas sweeping at once reset once.
func (s *DB) ResetBudget(ctx context.Context, kind store.Kind, id string, next time.Time) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	table, ok := kindEntities[kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", kind)
	}
	k := key(pkOf(kind, id), recordSK)
	for range 5 {
		out, err := s.c.GetItem(ctx, &dynamodb.GetItemInput{TableName: aws.String(table(s)), Key: k, ConsistentRead: aws.Bool(true)})
		if err != nil {
			return err
		}
		if out.Item == nil {
			return fmt.Errorf("%w: %s %s", store.ErrNotFound, kind, id)
		}
		data, updated := getS(out.Item, "data"), getN(out.Item, "updated_at")
		// A stamp later than the one read, as every team write's: an
		// editor who read the team before the reset finds it changed
		// (UpdateTeam), also on a clock behind, or in one microsecond.
		now := s.now().UTC()
		stamp := store.NextStamp(fromMicros(updated), now)
		enc, ok, err := store.ResetRecord(data, next, now, stamp)
		if err != nil || !ok {
			return err // !ok: this period, or a later one, has started already
		}
		_, err = s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table(s)), Key: k,
			UpdateExpression:         aws.String("SET spend = :z, #d = :d, updated_at = :u"),
			ConditionExpression:      aws.String("#d = :old AND updated_at = :was"),
			ExpressionAttributeNames: map[string]string{"#d": "data"},
			ExpressionAttributeValues: map[string]types.AttributeValue{":z": attrN(0), ":d": attrS(enc), ":u": attrN(micros(stamp)),
				":old": attrS(data), ":was": attrN(updated)}})
		if isCondFailed(err) {
			continue // changed since read: read again
		}
		return classify(err)
	}
	return fmt.Errorf("reset %s %s: the record kept changing", kind, id)
}

// SetSpend overwrites an entity's spend.
func (s *DB) SetSpend(ctx context.Context, kind store.Kind, id string, spend float64) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	table, ok := kindEntities[kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", kind)
	}
	_, err := s.c.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(table(s)), Key: key(pkOf(kind, id), recordSK),
		UpdateExpression: aws.String("SET spend = :s"), ConditionExpression: aws.String("attribute_exists(pk)"),
		ExpressionAttributeValues: map[string]types.AttributeValue{":s": attrF(spend)}})
	if isCondFailed(err) {
		return fmt.Errorf("%w: %s %s", store.ErrNotFound, kind, id)
	}
	return err
}

func (s *DB) LoadAll(ctx context.Context) (*store.Snapshot, error) {
	snap, err := s.LoadAllButKeys(ctx)
	if err != nil {
		return nil, err
	}
	if snap.Keys, err = s.loadKeys(ctx); err != nil {
		return nil, err
	}
	return snap, nil
}

// LoadKeys reads the key table in one scan (records and model spend) and
// hands it over as one page: a key's model spend items may come in any
// scan page, so the records are complete only at the end.
func (s *DB) LoadKeys(ctx context.Context, page func([]*store.Key) error) error {
	ks, err := s.loadKeys(ctx)
	if err != nil || len(ks) == 0 {
		return err
	}
	return page(ks)
}

func (s *DB) loadKeys(ctx context.Context) ([]*store.Key, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	items, err := s.scanAll(ctx, s.keys, "", nil, nil)
	if err != nil {
		return nil, err
	}
	byHash := map[string]*store.Key{}
	models := map[string][]map[string]types.AttributeValue{}
	var out []*store.Key
	for _, it := range items {
		pk, sk := getS(it, "pk"), getS(it, "sk")
		hash, ok := strings.CutPrefix(pk, pkOf(store.KindKey, ""))
		switch {
		case !ok:
		case sk == recordSK:
			k, err := keys.decode(it)
			if err != nil {
				return nil, err
			}
			byHash[hash] = k
			out = append(out, k)
		case strings.HasPrefix(sk, "model#"):
			models[hash] = append(models[hash], it)
		}
	}
	for h, k := range byHash {
		attachModelSpend(k, models[h])
	}
	return out, nil
}

// LoadAllButKeys reads the user table in one scan.
func (s *DB) LoadAllButKeys(ctx context.Context) (*store.Snapshot, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	items, err := s.scanAll(ctx, s.users, "sk = :r", nil, map[string]types.AttributeValue{":r": attrS(recordSK)})
	if err != nil {
		return nil, err
	}
	var snap store.Snapshot
	for _, it := range items {
		var err error
		switch store.Kind(getS(it, "kind")) {
		case store.KindUser:
			err = add(&snap.Users, users, it)
		case store.KindTeam:
			err = add(&snap.Teams, teams, it)
		case store.KindEndUser:
			err = add(&snap.EndUsers, endUsers, it)
		case store.KindBudget:
			err = add(&snap.Budgets, budgets, it)
		case store.KindOrganization:
			err = add(&snap.Organizations, organizations, it)
		}
		if err != nil {
			return nil, err
		}
	}
	return &snap, nil
}

func add[T any](dst *[]*T, e entity[T], it map[string]types.AttributeValue) error {
	v, err := e.decode(it)
	if err == nil {
		*dst = append(*dst, v)
	}
	return err
}

// Changes reads the records written at or after since through the by_kind
// index, and the tombstones of the days since.
func (s *DB) Changes(ctx context.Context, since time.Time) (*store.Snapshot, []store.Deletion, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	var snap store.Snapshot
	var err error
	if snap.Keys, err = keys.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	// Each changed key's model spend, several keys at once: a bulk key
	// import makes thousands of changed keys per tick, whose reads one
	// after the other would outlast the resync's deadline.
	_ = parallel(len(snap.Keys), workers, func(i int) error {
		if full, _, err := s.readKey(ctx, snap.Keys[i].TokenHash); err == nil {
			snap.Keys[i].ModelSpend = full.ModelSpend
		}
		return nil
	})
	if snap.Users, err = users.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	if snap.Teams, err = teams.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	if snap.EndUsers, err = endUsers.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	if snap.Budgets, err = budgets.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	if snap.Organizations, err = organizations.since(ctx, s, since); err != nil {
		return nil, nil, err
	}
	dels, err := s.deletions(ctx, since)
	if err != nil {
		return nil, nil, err
	}
	return &snap, dels, nil
}
