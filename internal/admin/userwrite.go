package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/tollgate/tollgate/internal/apierror"
	"github.com/tollgate/tollgate/internal/store"
)

// userEditAttempts bounds how often editUser redoes a change on a user
// that other writes keep changing under it.
const userEditAttempts = 5

// editUser is a read-modify-write of user id that loses no concurrent
// write: change is applied to a copy of the user as read (read, when the
// caller has just read her; else read from st) and reports whether there
// is anything to write; the write is conditional on the user being still
// as read (store.UpdateUser). When another write came in between (a
// /user/update, a team's change of her teams, a budget reset), she is read
// again and change applied again to her, up to userEditAttempts times,
// then errUserBusy (nothing written). change must be safe to run again on a
// fresh copy. It returns the user as read by the attempt that wrote and as
// written (nil when change found nothing to write). Store errors come back
// as they are (ErrNotFound: she is gone, or was deleted before the write);
// the last attempt lost is errUserBusy.
func editUser(ctx context.Context, st store.Store, id string, read *store.User, change func(*store.User) (bool, error)) (before, after *store.User, err error) {
	for attempt := 1; ; attempt++ {
		if read == nil {
			if read, err = st.GetUser(ctx, id); err != nil {
				return nil, nil, err
			}
		}
		upd := *read
		if ok, err := change(&upd); err != nil || !ok {
			return read, nil, err
		}
		fillUserDefaults(&upd)
		err = st.UpdateUser(ctx, &upd)
		if err == nil {
			return read, &upd, nil
		}
		if !errors.Is(err, store.ErrChanged) {
			return nil, nil, err
		}
		if attempt == userEditAttempts {
			return nil, nil, fmt.Errorf("user %s: %w", id, errUserBusy)
		}
		read = nil
	}
}

// errUserBusy is editUser's answer when each of its attempts lost to
// another write of the user: nothing of this edit was written to her. The
// caller says what that leaves (userError: the user was not changed;
// syncUserTeams: the team change was written, her teams were not).
var errUserBusy = errors.New("changed on each attempt to write this edit")

// userError is storeError for editUser's errors: its own answers (the
// change's refusals) stand as they are; errUserBusy is a 409.
func userError(err error, id, param string) error {
	if errors.Is(err, errUserBusy) {
		return apierror.WithStatus(http.StatusConflict, "user %s changed on each of %d attempts to write this edit (other edits of her at the same time); the user was not changed: send it again", id, userEditAttempts)
	}
	var ae *apierror.Error
	if errors.As(err, &ae) {
		return ae
	}
	return storeError(err, "user "+id, param)
}
