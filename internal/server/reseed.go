package server

import (
	"context"
	"errors"
	"time"

	"github.com/tollgate/tollgate/internal/ledger"
	"github.com/tollgate/tollgate/internal/store"
)

// storeSpend reads an entity's spend as st has it now, for the reseed of
// a budget a dead replica's swept allotment left pending on Redis
// (ledger.SpendReader; docs/allotments.md, Failures). Keys, users, teams
// and end users are read one row each; the other kinds (budgets kept in
// budget_spend, organisations, the gateway's) are not read alone: their
// pending reseed lapses to the reseeding hold's own view. The id is the
// account's (a regenerated key's first hash): the record read is the one
// book names it by (recordName).
//
// w, this replica's spend writer (nil: none), is flushed before each read:
// spend this replica settled on Redis and had not yet written to the store
// would be missing from the read, and Redis, brought to it, would lose it
// for good (CI's TestRegeneratedKeyReseededFromStore failure: Redis one
// request short, the sweeping request's own). Other live replicas'
// unwritten batches are the bound left (docs/allotments.md).
func storeSpend(st store.Store, book *ledger.Book, w *ledger.Writer) ledger.SpendReader {
	return func(ctx context.Context, kind store.Kind, id string) (ledger.Amount, time.Time, bool, error) {
		if w != nil {
			w.Flush()
		}
		id = recordName(book, kind, id)
		var (
			spend float64
			l     store.Limits
			err   error
		)
		switch kind {
		case store.KindKey:
			var k *store.Key
			if k, err = st.GetKey(ctx, id); err == nil {
				spend, l = k.Spend, k.Limits
				err = budgetPeriod(ctx, st, k.BudgetID, &l)
			}
		case store.KindUser:
			var u *store.User
			if u, err = st.GetUser(ctx, id); err == nil {
				spend, l = u.Spend, u.Limits
			}
		case store.KindTeam:
			var t *store.Team
			if t, err = st.GetTeam(ctx, id); err == nil {
				spend, l = t.Spend, t.Limits
			}
		case store.KindEndUser:
			var e *store.EndUser
			if e, err = st.GetEndUser(ctx, id); err == nil {
				spend, l = e.Spend, e.Limits
				err = budgetPeriod(ctx, st, e.BudgetID, &l)
			}
		default:
			return 0, time.Time{}, false, nil
		}
		if errors.Is(err, store.ErrNotFound) {
			return 0, time.Time{}, false, nil
		}
		if err != nil {
			return 0, time.Time{}, false, err
		}
		var at time.Time
		if l.BudgetResetAt != nil {
			at = *l.BudgetResetAt
		}
		return ledger.USD(spend), at, true, nil
	}
}

// recordName is the id of the store record an account of book is booked
// on: a regenerated key's account keeps its first hash as id
// (store.Key.BudgetAccount) while its record is under the key's current
// hash, the account's Name. An account book does not have is its id.
func recordName(book *ledger.Book, kind store.Kind, id string) string {
	if book != nil {
		if a, ok := book.Lookup(kind, id); ok {
			return a.Name()
		}
	}
	return id
}

// budgetPeriod fills l's budget period from the budget object id (a key's
// or end user's budget_id) as the snapshot does (auth.fillPeriod): the
// account's period on Redis is then the budget's reset time, and a read
// without it never matched it (TestProbeReseedBudgetIDPeriod). A budget
// gone since is no period.
func budgetPeriod(ctx context.Context, st store.Store, id string, l *store.Limits) error {
	if id == "" || l.BudgetDuration != nil {
		return nil
	}
	b, err := st.GetBudget(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if b.Limits.BudgetDuration != nil {
		l.BudgetDuration = b.Limits.BudgetDuration
		if l.BudgetResetAt == nil {
			l.BudgetResetAt = b.Limits.BudgetResetAt
		}
	}
	return nil
}
