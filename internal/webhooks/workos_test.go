package webhooks

import (
	"slices"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

func dsyncUserJSON(id, email, first, state string) map[string]any {
	return map[string]any{"id": id, "object": "directory_user", "directory_id": "directory_1", "first_name": first, "last_name": "Lovelace",
		"emails": []any{map[string]any{"primary": true, "value": email}}, "state": state}
}

func dsyncGroupJSON(id, name string) map[string]any {
	return map[string]any{"id": id, "object": "directory_group", "directory_id": "directory_1", "name": name}
}

// authUser finds the auth user with email, or nil.
func (e *env) authUser(email string) *authv1.User {
	e.t.Helper()
	res, err := e.auth.ListUsers(e.ctx, connect.NewRequest(&authv1.ListUsersRequest{Limit: 1000}))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, u := range res.Msg.Users {
		if u.Email == email {
			return u
		}
	}
	return nil
}

// Each WorkOS Directory Sync handler's effect on the auth service's users
// and on the directory things, with events out of order.
func TestWorkOSHandlers(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		base := time.Now().UTC().Add(-time.Hour)
		seq := 0
		send := func(event string, at time.Duration, data map[string]any) {
			t.Helper()
			seq++
			body := jsonBody(map[string]any{"id": "event_" + uniq("w"), "event": event, "data": data,
				"created_at": base.Add(at).Format(time.RFC3339Nano)})
			if ev := e.deliver(WorkOS, workosDelivery(body), body); ev.Status != StatusProcessed {
				t.Fatalf("%s: %s (%s); want processed", event, ev.Status, ev.Error)
			}
		}
		t.Run("dsync.user.created", func(t *testing.T) {
			send("dsync.user.created", 1*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Ada", "active"))
			u := e.authUser("ada@acme.test")
			if u == nil || u.Name != "Ada Lovelace" || u.Status != "invited" {
				t.Fatalf("auth user = %v; want Ada Lovelace, invited", u)
			}
			if _, d := e.thing("dsync-user:directory_user_1"); d["userId"] != u.Id {
				t.Fatalf("DirectoryUser = %v; want userId %s", d, u.Id)
			}
		})
		t.Run("dsync.user.updated", func(t *testing.T) {
			send("dsync.user.updated", 3*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "inactive"))
			u := e.authUser("ada@acme.test")
			if u.Name != "Augusta Lovelace" || u.Status != "disabled" {
				t.Fatalf("after updated: %v; want renamed and disabled", u)
			}
			// A late, older update does not undo it.
			send("dsync.user.updated", 2*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Ada", "active"))
			if u := e.authUser("ada@acme.test"); u.Status != "disabled" || u.Name != "Augusta Lovelace" {
				t.Fatalf("after a late older update: %v; want unchanged", u)
			}
			send("dsync.user.updated", 4*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"))
			if u := e.authUser("ada@acme.test"); u.Status != "active" {
				t.Fatalf("reactivated: %v; want active", u)
			}
		})
		t.Run("dsync.group.created", func(t *testing.T) {
			send("dsync.group.created", 5*time.Second, dsyncGroupJSON("directory_group_1", "Engineering"))
			if th, g := e.thing("dsync-group:directory_group_1"); th.Type != "DirectoryGroup" || g["name"] != "Engineering" {
				t.Fatalf("group = %v", g)
			}
		})
		t.Run("dsync.group.updated", func(t *testing.T) {
			send("dsync.group.updated", 6*time.Second, dsyncGroupJSON("directory_group_1", "Platform"))
			if _, g := e.thing("dsync-group:directory_group_1"); g["name"] != "Platform" {
				t.Fatalf("group = %v", g)
			}
		})
		t.Run("dsync.group.user_added", func(t *testing.T) {
			send("dsync.group.user_added", 7*time.Second, map[string]any{"directory_id": "directory_1",
				"user": dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"), "group": dsyncGroupJSON("directory_group_1", "Platform")})
			if got := e.related("dsync-user:directory_user_1", "memberOf"); !slices.Contains(got, "dsync-group:directory_group_1") {
				t.Fatalf("memberOf = %v", got)
			}
			// Out of order: the membership of a user and group never seen
			// before provisions both.
			send("dsync.group.user_added", 8*time.Second, map[string]any{"directory_id": "directory_1",
				"user": dsyncUserJSON("directory_user_2", "bob@acme.test", "Bob", "active"), "group": dsyncGroupJSON("directory_group_2", "Sales")})
			if u := e.authUser("bob@acme.test"); u == nil {
				t.Fatal("bob was not provisioned by his membership")
			}
			if _, g := e.thing("dsync-group:directory_group_2"); g["name"] != "Sales" {
				t.Fatalf("group 2 = %v", g)
			}
			// His user.created arriving afterwards, older, changes nothing.
			send("dsync.user.created", 1*time.Second, dsyncUserJSON("directory_user_2", "bob@acme.test", "Robert", "active"))
			if u := e.authUser("bob@acme.test"); u.Name != "Bob Lovelace" {
				t.Fatalf("bob after a late created: %v", u)
			}
		})
		t.Run("dsync.group.user_removed", func(t *testing.T) {
			send("dsync.group.user_removed", 9*time.Second, map[string]any{"directory_id": "directory_1",
				"user": dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"), "group": dsyncGroupJSON("directory_group_1", "Platform")})
			if got := e.related("dsync-user:directory_user_1", "memberOf"); slices.Contains(got, "dsync-group:directory_group_1") {
				t.Fatalf("memberOf after removal = %v", got)
			}
			// A late, older user_added does not bring the membership back.
			send("dsync.group.user_added", 7500*time.Millisecond, map[string]any{"directory_id": "directory_1",
				"user": dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"), "group": dsyncGroupJSON("directory_group_1", "Platform")})
			if got := e.related("dsync-user:directory_user_1", "memberOf"); slices.Contains(got, "dsync-group:directory_group_1") {
				t.Fatalf("memberOf after a late add = %v; want still removed", got)
			}
		})
		t.Run("dsync.group.deleted", func(t *testing.T) {
			send("dsync.group.deleted", 10*time.Second, dsyncGroupJSON("directory_group_1", "Platform"))
			if _, g := e.thing("dsync-group:directory_group_1"); g["deleted"] != true {
				t.Fatalf("group after delete = %v", g)
			}
		})
		t.Run("dsync.user.deleted", func(t *testing.T) {
			id := e.authUser("ada@acme.test").Id
			send("dsync.user.deleted", 11*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"))
			if _, err := e.auth.GetUser(e.ctx, connect.NewRequest(&authv1.GetUserRequest{Id: id})); !apierr.Is(err, apierr.NotFound) {
				t.Fatalf("GetUser after dsync.user.deleted: %v; want not_found", err)
			}
			// A late update from before the deletion does not resurrect her.
			send("dsync.user.updated", 10*time.Second, dsyncUserJSON("directory_user_1", "ada@acme.test", "Augusta", "active"))
			if u := e.authUser("ada@acme.test"); u != nil {
				t.Fatalf("user resurrected by a late update: %v", u)
			}
		})
	})
}
