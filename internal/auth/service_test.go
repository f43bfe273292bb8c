package auth_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

var ctx = context.Background()

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newAuth returns an auth service over a real db service on each backend.
func eachBackend(t *testing.T, fn func(t *testing.T, s *auth.Service, c *clock, logs *bytes.Buffer)) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			logs := &bytes.Buffer{}
			log := slog.New(slog.NewJSONHandler(logs, nil))
			db, err := thingsdb.New(testdb.Open(t, name), log)
			if err != nil {
				t.Fatal(err)
			}
			c := &clock{t: time.Now().UTC().Truncate(time.Second)}
			db.Now = c.Now
			s, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{7}, 32), Signup: "invite-only",
				Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}, CustomRoles: map[string][]string{"mailer": {"email:send"}}}, log)
			if err != nil {
				t.Fatal(err)
			}
			s.Now = c.Now
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			fn(t, s, c, logs)
		})
	}
}

func code(err error) apierr.Code {
	if err == nil {
		return ""
	}
	return apierr.From(err).Code
}

func grants(ns string, roles ...string) map[string]*authv1.Grants {
	return map[string]*authv1.Grants{ns: {Roles: roles}}
}

func TestUsersAndSessions(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *auth.Service, c *clock, logs *bytes.Buffer) {
		const pw = "correct horse battery"
		u, err := s.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "Ada@Example.com", Name: "Ada", Password: pw, Grants: grants("acme", "user")}))
		if err != nil {
			t.Fatal(err)
		}
		if u.Msg.User.Email != "ada@example.com" || u.Msg.User.Status != "active" {
			t.Fatalf("user = %v", u.Msg.User)
		}
		_, err = s.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "ADA@example.COM", Password: pw}))
		if code(err) != apierr.Conflict {
			t.Fatalf("duplicate email (other case) = %v; want conflict", err)
		}
		_, err = s.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "eve@example.com", Password: pw, Signup: true}))
		if code(err) != apierr.Forbidden {
			t.Fatalf("signup while invite-only = %v; want forbidden", err)
		}
		for _, bad := range []*authv1.CreateUserRequest{{Email: "nope", Password: pw}, {Email: "a@b.co", Password: "short"}, {Email: "a@b.co", Password: pw, Grants: grants("acme", "wizard")}} {
			if _, err := s.CreateUser(ctx, connect.NewRequest(bad)); code(err) != apierr.Invalid {
				t.Errorf("CreateUser(%v) = %v; want invalid", bad, err)
			}
		}
		// wrong password, unknown user: the same answer
		_, e1 := s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: "wrong password"}))
		_, e2 := s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "nobody@example.com", Password: pw}))
		if code(e1) != apierr.Unauthenticated || e1.Error() != e2.Error() {
			t.Fatalf("bad logins = %v / %v; want the same 401", e1, e2)
		}
		login, err := s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: pw, UserAgent: "test"}))
		if err != nil {
			t.Fatal(err)
		}
		tok := login.Msg.Tokens
		id, err := s.ValidateToken(ctx, connect.NewRequest(&authv1.ValidateTokenRequest{Token: tok.AccessToken}))
		if err != nil || id.Msg.Identity.Subject != u.Msg.User.Id || !s.Can(id.Msg.Identity, "acme", "things:write") || s.Can(id.Msg.Identity, "other", "things:read") {
			t.Fatalf("identity = %v, %v", id, err)
		}
		// rotation: the new refresh token works, the old one is spent
		r1, err := s.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: tok.RefreshToken}))
		if err != nil || r1.Msg.Tokens.RefreshToken == tok.RefreshToken {
			t.Fatalf("refresh = %v, %v", r1, err)
		}
		// reuse of the spent token revokes the family: the newest dies too
		if _, err := s.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: tok.RefreshToken})); code(err) != apierr.Unauthenticated {
			t.Fatalf("reuse = %v; want 401", err)
		}
		if _, err := s.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: r1.Msg.Tokens.RefreshToken})); code(err) != apierr.Unauthenticated {
			t.Fatalf("refresh after reuse = %v; want 401: the family is revoked", err)
		}
		sessions, _ := s.ListSessions(ctx, connect.NewRequest(&authv1.ListSessionsRequest{UserId: u.Msg.User.Id}))
		if len(sessions.Msg.Sessions) != 0 {
			t.Fatalf("sessions after reuse = %v; want none live", sessions.Msg.Sessions)
		}
		// logout
		l2, _ := s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: pw}))
		if _, err := s.Logout(ctx, connect.NewRequest(&authv1.LogoutRequest{RefreshToken: l2.Msg.Tokens.RefreshToken})); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: l2.Msg.Tokens.RefreshToken})); code(err) != apierr.Unauthenticated {
			t.Fatalf("refresh after logout = %v", err)
		}
		// disabled users cannot log in
		st := "disabled"
		if _, err := s.UpdateUser(ctx, connect.NewRequest(&authv1.UpdateUserRequest{Id: u.Msg.User.Id, Status: &st})); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: pw})); code(err) != apierr.Unauthenticated {
			t.Fatalf("disabled login = %v", err)
		}
		// access tokens expire
		c.Advance(61 * time.Minute)
		if _, err := s.ValidateToken(ctx, connect.NewRequest(&authv1.ValidateTokenRequest{Token: tok.AccessToken})); code(err) != apierr.Unauthenticated {
			t.Fatalf("expired token = %v", err)
		}
		if strings.Contains(logs.String(), pw) || strings.Contains(logs.String(), tok.RefreshToken) || strings.Contains(logs.String(), tok.AccessToken) {
			t.Fatal("a secret reached the log")
		}
	})
}

func TestAPIKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, s *auth.Service, c *clock, logs *bytes.Buffer) {
		var revoked []string
		s.OnKeyRevoked(func(h string) { revoked = append(revoked, h) })
		k, err := s.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "ci", Grants: grants("acme", "viewer")}))
		if err != nil {
			t.Fatal(err)
		}
		secret := k.Msg.Secret
		if !strings.HasPrefix(secret, "sk_live_") || k.Msg.Key.Last4 != secret[len(secret)-4:] {
			t.Fatalf("key = %v", k.Msg.Key)
		}
		id, err := s.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: secret}))
		if err != nil || id.Msg.Identity.KeyId != k.Msg.Key.Id || id.Msg.Identity.Test {
			t.Fatalf("validate = %v, %v", id, err)
		}
		ident := id.Msg.Identity
		for _, tc := range []struct {
			ns, perm string
			ok       bool
		}{{"acme", "things:read", true}, {"acme", "things:write", false}, {"other", "things:read", false}, {"_auth", "things:read", false}} {
			if got := s.Can(ident, tc.ns, tc.perm); got != tc.ok {
				t.Errorf("viewer key Can(%s, %s) = %v; want %v", tc.ns, tc.perm, got, tc.ok)
			}
		}
		test, _ := s.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "t", Test: true, Grants: grants("*", "admin")}))
		tid, _ := s.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: test.Msg.Secret}))
		if !tid.Msg.Identity.Test || !strings.HasPrefix(test.Msg.Secret, "sk_test_") || !s.Can(tid.Msg.Identity, "_auth", "things:read") {
			t.Fatalf("test admin key identity = %v", tid.Msg.Identity)
		}
		// revoked keys stop at once
		if _, err := s.RevokeAPIKey(ctx, connect.NewRequest(&authv1.RevokeAPIKeyRequest{Id: k.Msg.Key.Id})); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: secret})); code(err) != apierr.Unauthenticated {
			t.Fatalf("revoked key = %v; want 401", err)
		}
		if len(revoked) != 1 || revoked[0] != auth.HashAPIKey(secret) {
			t.Fatalf("revocation hooks got %v", revoked)
		}
		// expired keys stop
		exp, _ := s.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "short", Grants: grants("acme", "user"), ExpiresAt: c.Now().Add(time.Hour).Unix()}))
		c.Advance(2 * time.Hour)
		if _, err := s.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: exp.Msg.Secret})); code(err) != apierr.Unauthenticated {
			t.Fatalf("expired key = %v; want 401", err)
		}
		for _, bad := range []string{"", "sk_live_nope", secret[:len(secret)-1] + "x", strings.Replace(secret, "live", "test", 1)} {
			if _, err := s.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: bad})); code(err) != apierr.Unauthenticated {
				t.Errorf("ValidateAPIKey(%q) = %v; want 401", bad, err)
			}
		}
		list, _ := s.ListAPIKeys(ctx, connect.NewRequest(&authv1.ListAPIKeysRequest{}))
		if len(list.Msg.Keys) != 3 || list.Msg.Keys[2].RevokedAt == 0 {
			t.Fatalf("keys = %v", list.Msg.Keys)
		}
		if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), test.Msg.Secret) {
			t.Fatal("a key reached the log")
		}
	})
}
