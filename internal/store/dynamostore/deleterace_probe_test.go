package dynamostore_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	neturl "net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/tollgate/tollgate/internal/store"
)

// TestProbeUserDeletionMeetsATeamDeletion: a user is deleted while one of
// her teams is deleted. DeleteUser's leaveTeams read the team, its
// conditional update then failed (the team gone) and the re-read found
// nothing: the loop variable became nil and the member budget's spend was
// dropped through it, a nil dereference (a panic in /user/delete). The
// team's deletion is forced between the read and the update by a loopback
// proxy in front of the server.
func TestProbeUserDeletionMeetsATeamDeletion(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	o := options(t, u.String())
	direct := open(t, o)
	var armed atomic.Bool
	var hookErr atomic.Value
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".UpdateItem") && armed.CompareAndSwap(true, false) {
			if err := direct.DeleteTeam(r.Context(), "team"); err != nil {
				hookErr.Store(err.Error())
			}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	po := o
	po.Endpoint = srv.URL
	s := open(t, po)
	ctx := context.Background()
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTeam(ctx, &store.Team{TeamID: "team", Members: []store.TeamMember{{UserID: "leaver"}},
		MemberBudgets: []store.MemberBudget{{UserID: "leaver", MaxBudget: 5}}}); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	err = func() (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = fmt.Errorf("panic: %v", p)
			}
		}()
		return s.DeleteUser(ctx, "leaver")
	}()
	if err != nil {
		t.Fatalf("DeleteUser while her team is deleted: %v", err)
	}
	if e := hookErr.Load(); e != nil || armed.Load() {
		t.Fatalf("the team was not deleted in between (hook: %v, still armed: %v)", e, armed.Load())
	}
	if _, err := s.GetUser(ctx, "leaver"); err == nil {
		t.Error("the user is still there")
	}
}

// TestProbeUserDeletionOutrunByTeamEditsIsAnError: a team edited on every
// one of DeleteUser's conditional updates makes leaveTeams give up. It
// gave up with the update's ErrNotFound, which /user/delete takes for "no
// such user" and answers 200: the user stayed, her keys gone. Giving up is
// an error of its own (a 500; run again, it finishes the job).
func TestProbeUserDeletionOutrunByTeamEditsIsAnError(t *testing.T) {
	t.Parallel()
	u, err := neturl.Parse(endpoint(t))
	if err != nil {
		t.Fatal(err)
	}
	o := options(t, u.String())
	direct := open(t, o)
	var armed atomic.Bool
	var hookErr atomic.Value
	next := httputil.NewSingleHostReverseProxy(u)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".UpdateItem") && armed.Load() {
			// Another admin edits the team first, every time.
			tm, err := direct.GetTeam(r.Context(), "team")
			if err == nil {
				err = direct.UpdateTeam(r.Context(), tm)
			}
			if err != nil {
				hookErr.Store(err.Error())
			}
		}
		next.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	po := o
	po.Endpoint = srv.URL
	s := open(t, po)
	ctx := context.Background()
	if err := s.CreateUser(ctx, &store.User{UserID: "leaver"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateTeam(ctx, &store.Team{TeamID: "team", Members: []store.TeamMember{{UserID: "leaver"}}}); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	err = s.DeleteUser(ctx, "leaver")
	armed.Store(false)
	if e := hookErr.Load(); e != nil {
		t.Fatalf("the team edit: %v", e)
	}
	if _, getErr := s.GetUser(ctx, "leaver"); getErr == nil && (err == nil || errors.Is(err, store.ErrNotFound)) {
		t.Errorf("DeleteUser left the user there and said %v", err)
	}
}
