package webhooks

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Users is what the webhooks service needs from the auth service to
// provision directory users.
type Users interface {
	GetUser(context.Context, *connect.Request[authv1.GetUserRequest]) (*connect.Response[authv1.UserResponse], error)
	ListUsers(context.Context, *connect.Request[authv1.ListUsersRequest]) (*connect.Response[authv1.ListUsersResponse], error)
	CreateUser(context.Context, *connect.Request[authv1.CreateUserRequest]) (*connect.Response[authv1.UserResponse], error)
	UpdateUser(context.Context, *connect.Request[authv1.UpdateUserRequest]) (*connect.Response[authv1.UserResponse], error)
	DeleteUser(context.Context, *connect.Request[authv1.DeleteUserRequest]) (*connect.Response[authv1.DeleteUserResponse], error)
}

// WorkOS Directory Sync provisions users in auth and keeps directory
// groups and memberships in the configured namespace:
//
//	DirectoryUser  dsync-user:<directory user id>   {userId, email, name, state, deleted}
//	DirectoryGroup dsync-group:<directory group id> {name, directoryId, deleted}
//	DirectoryMembership dsync-member:<group>:<user> {active}
//	DirectoryUser -memberOf-> DirectoryGroup (while active)
//
// Each is written in the order of the events' created_at: a late older
// event is skipped, a delete leaves a tombstone so a create that arrives
// after it does not bring the user back, and a membership can arrive
// before its user or group (both are made from the event's copy).

type workosEvent struct {
	ID        string          `json:"id"`
	Event     string          `json:"event"`
	CreatedAt string          `json:"created_at"`
	Data      json.RawMessage `json:"data"`
}

type dsyncUser struct {
	ID          string `json:"id"`
	DirectoryID string `json:"directory_id"`
	Email       string `json:"email"`
	Emails      []struct {
		Primary bool   `json:"primary"`
		Value   string `json:"value"`
	} `json:"emails"`
	FirstName string `json:"first_name"`
	LastName  string `json:"last_name"`
	State     string `json:"state"`
}

func (u *dsyncUser) email() string {
	if u.Email != "" {
		return strings.ToLower(u.Email)
	}
	for _, e := range u.Emails {
		if e.Primary {
			return strings.ToLower(e.Value)
		}
	}
	if len(u.Emails) > 0 {
		return strings.ToLower(u.Emails[0].Value)
	}
	return ""
}

func (u *dsyncUser) name() string { return strings.TrimSpace(u.FirstName + " " + u.LastName) }

type dsyncGroup struct {
	ID          string `json:"id"`
	DirectoryID string `json:"directory_id"`
	Name        string `json:"name"`
}

func (s *Service) workosHandlers() map[string]handler {
	return map[string]handler{
		"dsync.user.created":       s.dsyncUserEvent,
		"dsync.user.updated":       s.dsyncUserEvent,
		"dsync.user.deleted":       s.dsyncUserEvent,
		"dsync.group.created":      s.dsyncGroupEvent,
		"dsync.group.updated":      s.dsyncGroupEvent,
		"dsync.group.deleted":      s.dsyncGroupEvent,
		"dsync.group.user_added":   s.dsyncMembership,
		"dsync.group.user_removed": s.dsyncMembership,
	}
}

func workosDecode(body []byte) (*workosEvent, int64, error) {
	var ev workosEvent
	if err := decode(body, &ev); err != nil {
		return nil, 0, err
	}
	t, err := time.Parse(time.RFC3339Nano, ev.CreatedAt)
	if err != nil {
		return nil, 0, permanentf("created_at is not an RFC 3339 time")
	}
	return &ev, t.UnixMicro(), nil
}

func dsyncUserID(id string) string     { return "dsync-user:" + id }
func dsyncGroupID(id string) string    { return "dsync-group:" + id }
func dsyncMemberID(g, u string) string { return "dsync-member:" + g + ":" + u }

type directoryUser struct {
	UserID  string `json:"userId"`
	Email   string `json:"email"`
	Name    string `json:"name"`
	State   string `json:"state"`
	Deleted bool   `json:"deleted"`
	EventAt int64  `json:"eventAt"`
}

func (s *Service) dsyncUserEvent(ctx context.Context, in inbound) error {
	body := in.Body
	ev, at, err := workosDecode(body)
	if err != nil {
		return err
	}
	var u dsyncUser
	if err := decode(ev.Data, &u); err != nil {
		return err
	}
	return s.applyDsyncUser(ctx, &u, at, ev.Event == "dsync.user.deleted")
}

// applyDsyncUser brings the auth user of a directory user in line with the
// directory's state as of time at.
func (s *Service) applyDsyncUser(ctx context.Context, u *dsyncUser, at int64, deleted bool) error {
	if u.ID == "" {
		return permanentf("directory user id missing")
	}
	ns, id := s.cfg.Namespace, dsyncUserID(u.ID)
	if s.users == nil {
		return apierr.New(apierr.Unavailable, "the auth service is not reachable from the webhooks service")
	}
	var cur directoryUser
	t, err := s.get(ctx, ns, id, &cur)
	if err != nil && !apierr.Is(err, apierr.NotFound) {
		return err
	}
	var version int64
	if t != nil {
		version = t.Version
		if cur.EventAt > at {
			return nil // a newer event already decided
		}
	}
	next := directoryUser{UserID: cur.UserID, Email: u.email(), Name: u.name(), State: u.State, Deleted: deleted, EventAt: at}
	if next.Email == "" {
		next.Email = cur.Email
	}
	if deleted {
		if cur.UserID != "" {
			_, err := s.users.DeleteUser(ctx, connect.NewRequest(&authv1.DeleteUserRequest{Id: cur.UserID}))
			if err != nil && !apierr.Is(err, apierr.NotFound) {
				return err
			}
		}
		next.UserID = ""
	} else {
		if next.UserID, err = s.provision(ctx, cur.UserID, &next); err != nil {
			return err
		}
	}
	w := &dbv1.Write{Ns: ns, Id: id, Type: "DirectoryUser", Data: mustJSON(&next), IfVersion: version}
	if t == nil {
		w.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
	}
	_, err = s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
	if apierr.Is(err, apierr.PreconditionFailed) {
		// Another event for this user was applied meanwhile: go again, in
		// order, against what it wrote.
		return apierr.New(apierr.Unavailable, "directory user %s changed meanwhile; retrying", u.ID)
	}
	return err
}

// provision creates or updates the auth user for a directory user and
// returns its id. A user who already exists with the address (invited by
// hand, or signed up) is adopted.
func (s *Service) provision(ctx context.Context, userID string, d *directoryUser) (string, error) {
	if userID != "" {
		res, err := s.users.GetUser(ctx, connect.NewRequest(&authv1.GetUserRequest{Id: userID}))
		if apierr.Is(err, apierr.NotFound) {
			userID = "" // deleted in dotdo meanwhile: provision again
		} else if err != nil {
			return "", err
		} else {
			return userID, s.syncUser(ctx, res.Msg.User, d)
		}
	}
	if d.Email == "" {
		return "", permanentf("directory user has no email")
	}
	if d.State != "" && d.State != "active" {
		// An inactive user unknown to dotdo is not created just to be
		// disabled.
		return "", nil
	}
	res, err := s.users.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: d.Email, Name: d.Name, Invite: true}))
	if apierr.Is(err, apierr.Conflict) {
		u, err := s.userByEmail(ctx, d.Email)
		if err != nil {
			return "", err
		}
		return u.Id, s.syncUser(ctx, u, d)
	}
	if err != nil {
		return "", err
	}
	return res.Msg.User.Id, nil
}

// syncUser applies the directory's name and state to an auth user.
func (s *Service) syncUser(ctx context.Context, u *authv1.User, d *directoryUser) error {
	req := &authv1.UpdateUserRequest{Id: u.Id, ActorId: "webhooks:workos"}
	changed := false
	if d.Name != "" && d.Name != u.Name {
		req.Name, changed = &d.Name, true
	}
	want := ""
	switch {
	case d.State != "" && d.State != "active" && u.Status != "disabled":
		want = "disabled"
	case (d.State == "" || d.State == "active") && u.Status == "disabled":
		want = "active"
	}
	if want != "" {
		req.Status, changed = &want, true
	}
	if !changed {
		return nil
	}
	_, err := s.users.UpdateUser(ctx, connect.NewRequest(req))
	return err
}

func (s *Service) userByEmail(ctx context.Context, email string) (*authv1.User, error) {
	cursor := ""
	for {
		res, err := s.users.ListUsers(ctx, connect.NewRequest(&authv1.ListUsersRequest{Limit: 1000, Cursor: cursor}))
		if err != nil {
			return nil, err
		}
		for _, u := range res.Msg.Users {
			if strings.EqualFold(u.Email, email) {
				return u, nil
			}
		}
		if res.Msg.NextCursor == "" {
			return nil, apierr.New(apierr.Unavailable, "user %s exists but was not found; retrying", email)
		}
		cursor = res.Msg.NextCursor
	}
}

func (s *Service) dsyncGroupEvent(ctx context.Context, in inbound) error {
	body := in.Body
	ev, at, err := workosDecode(body)
	if err != nil {
		return err
	}
	var g dsyncGroup
	if err := decode(ev.Data, &g); err != nil {
		return err
	}
	if g.ID == "" {
		return permanentf("directory group id missing")
	}
	_, err = s.upsert(ctx, s.cfg.Namespace, dsyncGroupID(g.ID), "DirectoryGroup",
		map[string]any{"workosId": g.ID, "name": g.Name, "directoryId": g.DirectoryID, "deleted": ev.Event == "dsync.group.deleted"}, at, false)
	return err
}

func (s *Service) dsyncMembership(ctx context.Context, in inbound) error {
	body := in.Body
	ev, at, err := workosDecode(body)
	if err != nil {
		return err
	}
	var d struct {
		DirectoryID string     `json:"directory_id"`
		User        dsyncUser  `json:"user"`
		Group       dsyncGroup `json:"group"`
	}
	if err := decode(ev.Data, &d); err != nil {
		return err
	}
	if d.User.ID == "" || d.Group.ID == "" {
		return permanentf("user or group missing")
	}
	added := ev.Event == "dsync.group.user_added"
	ns := s.cfg.Namespace
	if added {
		// The membership may come first: make the user and the group from
		// the event's copies, unless newer events already wrote them.
		if err := s.applyDsyncUser(ctx, &d.User, at, false); err != nil {
			return err
		}
		if _, err := s.upsert(ctx, ns, dsyncGroupID(d.Group.ID), "DirectoryGroup",
			map[string]any{"workosId": d.Group.ID, "name": d.Group.Name, "directoryId": d.DirectoryID}, 0, true); err != nil {
			return err
		}
	}
	wrote, err := s.upsert(ctx, ns, dsyncMemberID(d.Group.ID, d.User.ID), "DirectoryMembership",
		map[string]any{"group": dsyncGroupID(d.Group.ID), "user": dsyncUserID(d.User.ID), "active": added}, at, false)
	if err != nil || !wrote {
		return err
	}
	if added {
		return s.relate(ctx, ns, dsyncUserID(d.User.ID), "memberOf", dsyncGroupID(d.Group.ID))
	}
	return s.unrelate(ctx, ns, dsyncUserID(d.User.ID), "memberOf", dsyncGroupID(d.Group.ID))
}
