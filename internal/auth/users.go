package auth

import (
	"context"
	"encoding/json"
	"unicode/utf8"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// userJSON is a User thing's data.
type userJSON struct {
	Email        string               `json:"email"`
	Name         string               `json:"name,omitempty"`
	Status       string               `json:"status"`
	Grants       map[string]grantJSON `json:"grants,omitempty"`
	PasswordHash string               `json:"passwordHash,omitempty"`
}

// emailID is the id of the thing that reserves an address: creating it
// create-only in the same batch as the user makes addresses unique.
func emailID(email string) string { return "email_" + hashHex(email)[:40] }

func userOut(t *dbv1.Thing, u *userJSON) *authv1.User {
	return &authv1.User{
		Id: t.Id, Email: u.Email, Name: u.Name, Status: u.Status, Grants: toGrants(u.Grants),
		CreatedAt: t.CreatedAt / 1e6, UpdatedAt: t.UpdatedAt / 1e6, HasPassword: u.PasswordHash != "",
	}
}

func checkName(n string) error {
	if len(n) > 200 || !utf8.ValidString(n) {
		return apierr.New(apierr.Invalid, "name must be at most 200 bytes of UTF-8")
	}
	return nil
}

func checkPassword(p string) error {
	if n := utf8.RuneCountInString(p); n < MinPasswordLen || len(p) > MaxPasswordLen {
		return apierr.New(apierr.Invalid, "password must be %d to %d characters", MinPasswordLen, MaxPasswordLen)
	}
	return nil
}

// CreateUser creates a user, or invites one (no password, status invited).
// Self-service signup is refused unless signup is open.
func (s *Service) CreateUser(ctx context.Context, req *connect.Request[authv1.CreateUserRequest]) (*connect.Response[authv1.UserResponse], error) {
	m := req.Msg
	if m.Signup && s.cfg.Signup != "open" {
		return nil, apierr.New(apierr.Forbidden, "signup is invite-only")
	}
	email, err := validEmail(m.Email)
	if err != nil {
		return nil, err
	}
	if err := checkName(m.Name); err != nil {
		return nil, err
	}
	u := &userJSON{Email: email, Name: m.Name, Status: "active"}
	if u.Grants, err = s.fromGrants(m.Grants); err != nil {
		return nil, err
	}
	if m.Signup && len(u.Grants) > 0 {
		return nil, apierr.New(apierr.Forbidden, "signup cannot grant roles")
	}
	if m.Invite {
		if m.Password != "" {
			return nil, apierr.New(apierr.Invalid, "an invited user sets a password when accepting; send none")
		}
		u.Status = "invited"
	} else {
		if err := checkPassword(m.Password); err != nil {
			return nil, err
		}
		if u.PasswordHash, err = HashPassword(m.Password, s.cfg.Password); err != nil {
			return nil, s.internal(ctx, "hash password", err)
		}
	}
	id := thingsdb.NewPrefixedID("usr_")
	err = s.batch(ctx,
		write(emailID(email), "UserEmail", map[string]string{"userId": id}, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0),
		write(id, "User", u, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil, apierr.New(apierr.Conflict, "a user with email %s already exists", email)
	}
	if err != nil {
		return nil, s.internal(ctx, "create user", err)
	}
	t, err := s.get(ctx, id, nil)
	if err != nil {
		return nil, s.internal(ctx, "create user", err)
	}
	return connect.NewResponse(&authv1.UserResponse{User: userOut(t, u)}), nil
}

func (s *Service) user(ctx context.Context, id string) (*dbv1.Thing, *userJSON, error) {
	u := &userJSON{}
	t, err := s.get(ctx, id, u)
	if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
		return nil, nil, apierr.New(apierr.NotFound, "user %s not found", id)
	}
	if err != nil {
		return nil, nil, err
	}
	if t.Type != "User" {
		return nil, nil, apierr.New(apierr.NotFound, "user %s not found", id)
	}
	return t, u, nil
}

// GetUser returns one user.
func (s *Service) GetUser(ctx context.Context, req *connect.Request[authv1.GetUserRequest]) (*connect.Response[authv1.UserResponse], error) {
	t, u, err := s.user(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "get user", err)
	}
	return connect.NewResponse(&authv1.UserResponse{User: userOut(t, u)}), nil
}

// ListUsers returns users, oldest first, a page at a time.
func (s *Service) ListUsers(ctx context.Context, req *connect.Request[authv1.ListUsersRequest]) (*connect.Response[authv1.ListUsersResponse], error) {
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "User", Limit: req.Msg.Limit, Cursor: req.Msg.Cursor}))
	if err != nil {
		return nil, s.internal(ctx, "list users", err)
	}
	out := &authv1.ListUsersResponse{NextCursor: res.Msg.NextCursor, Users: []*authv1.User{}}
	for _, t := range res.Msg.Items {
		var u userJSON
		if err := json.Unmarshal(t.Data, &u); err != nil {
			return nil, s.internal(ctx, "list users", err)
		}
		out.Users = append(out.Users, userOut(t, &u))
	}
	return connect.NewResponse(out), nil
}

// UpdateUser changes a user's name, status, grants or password.
func (s *Service) UpdateUser(ctx context.Context, req *connect.Request[authv1.UpdateUserRequest]) (*connect.Response[authv1.UserResponse], error) {
	m := req.Msg
	t, u, err := s.user(ctx, m.Id)
	if err != nil {
		return nil, s.internal(ctx, "update user", err)
	}
	if m.Name != nil {
		if err := checkName(*m.Name); err != nil {
			return nil, err
		}
		u.Name = *m.Name
	}
	if m.Status != nil {
		switch *m.Status {
		case "active", "disabled":
		default:
			return nil, apierr.New(apierr.Invalid, "status must be active or disabled")
		}
		if *m.Status == "active" && u.Status == "invited" && u.PasswordHash == "" {
			return nil, apierr.New(apierr.Invalid, "an invited user becomes active by setting a password or signing in with a provider")
		}
		u.Status = *m.Status
	}
	rolesChanged := false
	if m.SetGrants {
		if u.Grants, err = s.fromGrants(m.Grants); err != nil {
			return nil, err
		}
		rolesChanged = true
	}
	if m.Password != nil {
		if err := checkPassword(*m.Password); err != nil {
			return nil, err
		}
		if u.PasswordHash, err = HashPassword(*m.Password, s.cfg.Password); err != nil {
			return nil, s.internal(ctx, "hash password", err)
		}
		if u.Status == "invited" {
			u.Status = "active"
		}
	}
	err = s.batch(ctx, write(t.Id, "User", u, dbv1.Condition_CONDITION_MUST_EXIST, t.Version, 0))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil, apierr.New(apierr.Conflict, "user %s changed meanwhile; retry", t.Id)
	}
	if err != nil {
		return nil, s.internal(ctx, "update user", err)
	}
	if rolesChanged {
		s.audit(ctx, "user.roles_changed", m.ActorId, t.Id, "ok", "")
	}
	if m.Status != nil {
		s.audit(ctx, "user.status_changed", m.ActorId, t.Id, *m.Status, "")
	}
	t, u, err = s.user(ctx, t.Id)
	if err != nil {
		return nil, s.internal(ctx, "update user", err)
	}
	return connect.NewResponse(&authv1.UserResponse{User: userOut(t, u)}), nil
}

// DeleteUser removes a user and frees the address; their sessions can no
// longer be refreshed.
func (s *Service) DeleteUser(ctx context.Context, req *connect.Request[authv1.DeleteUserRequest]) (*connect.Response[authv1.DeleteUserResponse], error) {
	_, u, err := s.user(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "delete user", err)
	}
	if err := s.batch(ctx, del(req.Msg.Id), del(emailID(u.Email))); err != nil {
		return nil, s.internal(ctx, "delete user", err)
	}
	return connect.NewResponse(&authv1.DeleteUserResponse{}), nil
}
