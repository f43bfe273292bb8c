package auth

import (
	"context"
	"encoding/json"
	"errors"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// sessionJSON is a Session thing's data. A session is one refresh-token
// family: every rotation stays in it, and reuse of a spent token revokes it.
type sessionJSON struct {
	UserID    string `json:"userId"`
	UserAgent string `json:"userAgent,omitempty"`
	IP        string `json:"ip,omitempty"`
	RevokedAt int64  `json:"revokedAt,omitempty"`
	LastUsed  int64  `json:"lastUsedAt,omitempty"`
	ExpiresAt int64  `json:"expiresAt"`
}

// refreshJSON is a RefreshToken thing's data, named after the token's
// SHA-256.
type refreshJSON struct {
	SessionID string `json:"sessionId"`
	UsedAt    int64  `json:"usedAt,omitempty"`
}

func refreshID(token string) string { return "rt_" + hashHex(token) }

// newRefreshToken returns an opaque token: rt_ and 43 base62 characters
// (256 bits).
func newRefreshToken() (string, error) {
	body, err := randomBase62()
	if err != nil {
		return "", err
	}
	return "rt_" + body, nil
}

var errLogin = apierr.New(apierr.Unauthenticated, "invalid email or password")

// Login checks an email and password and starts a session.
func (s *Service) Login(ctx context.Context, req *connect.Request[authv1.LoginRequest]) (*connect.Response[authv1.TokensResponse], error) {
	m := req.Msg
	email, err := validEmail(m.Email)
	if err != nil || len(m.Password) > MaxPasswordLen {
		VerifyPassword(m.Password, s.dummy)
		return nil, errLogin
	}
	var ref struct {
		UserID string `json:"userId"`
	}
	if _, err := s.get(ctx, emailID(email), &ref); err != nil {
		if !apierr.Is(err, apierr.NotFound) {
			return nil, s.internal(ctx, "login", err)
		}
		VerifyPassword(m.Password, s.dummy) // same time as a wrong password
		s.audit(ctx, "login", "", email, "unknown_user", m.Ip)
		return nil, errLogin
	}
	_, u, err := s.user(ctx, ref.UserID)
	if err != nil {
		return nil, s.internal(ctx, "login", err)
	}
	hash := u.PasswordHash
	if hash == "" {
		hash = s.dummy
	}
	ok, err := VerifyPassword(m.Password, hash)
	if err != nil {
		return nil, s.internal(ctx, "login", err)
	}
	if !ok || u.PasswordHash == "" || u.Status != "active" {
		s.audit(ctx, "login", ref.UserID, ref.UserID, "failed", m.Ip)
		return nil, errLogin
	}
	tokens, err := s.startSession(ctx, ref.UserID, u, m.Ip, m.UserAgent)
	if err != nil {
		return nil, s.internal(ctx, "login", err)
	}
	s.audit(ctx, "login", ref.UserID, ref.UserID, "ok", m.Ip)
	return connect.NewResponse(&authv1.TokensResponse{Tokens: tokens}), nil
}

// startSession starts a session (a refresh-token family) for a user who
// has proven who they are, by password or through an OIDC provider, and
// returns its first tokens.
func (s *Service) startSession(ctx context.Context, userID string, u *userJSON, ip, userAgent string) (*authv1.Tokens, error) {
	now := s.Now()
	sid := thingsdb.NewPrefixedID("ses_")
	rt, err := newRefreshToken()
	if err != nil {
		return nil, err
	}
	exp := now.Add(s.cfg.RefreshTTL)
	sess := sessionJSON{UserID: userID, UserAgent: clipString(userAgent, 200), IP: ip, ExpiresAt: exp.Unix(), LastUsed: now.Unix()}
	err = s.batch(ctx,
		write(sid, "Session", sess, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, exp.UnixMicro()),
		write(refreshID(rt), "RefreshToken", refreshJSON{SessionID: sid}, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, exp.UnixMicro()))
	if err != nil {
		return nil, err
	}
	access, err := s.keys.Sign(s.claims(u, userID, sid, now))
	if err != nil {
		return nil, err
	}
	return s.tokens(access, rt, sid), nil
}

func (s *Service) tokens(access, refresh, sid string) *authv1.Tokens {
	return &authv1.Tokens{AccessToken: access, RefreshToken: refresh, ExpiresIn: int64(s.cfg.AccessTTL.Seconds()), TokenType: "Bearer", SessionId: sid}
}

func clipString(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

var errRefresh = apierr.New(apierr.Unauthenticated, "invalid refresh token")

// Refresh spends a refresh token for a new access token and a new refresh
// token. Spending one twice revokes its whole session: a spent token in
// someone's hands means it was stolen.
func (s *Service) Refresh(ctx context.Context, req *connect.Request[authv1.RefreshRequest]) (*connect.Response[authv1.TokensResponse], error) {
	tok := req.Msg.RefreshToken
	if len(tok) != 46 {
		return nil, errRefresh
	}
	rt := &refreshJSON{}
	rtThing, err := s.get(ctx, refreshID(tok), rt)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
			return nil, errRefresh
		}
		return nil, s.internal(ctx, "refresh", err)
	}
	sess := &sessionJSON{}
	sessThing, err := s.get(ctx, rt.SessionID, sess)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, errRefresh
		}
		return nil, s.internal(ctx, "refresh", err)
	}
	if rt.UsedAt != 0 {
		s.revokeFamily(ctx, sessThing, sess, "refresh_token_reuse", req.Msg.Ip)
		return nil, errRefresh
	}
	if sess.RevokedAt != 0 {
		return nil, errRefresh
	}
	_, u, err := s.user(ctx, sess.UserID)
	if err != nil || u.Status != "active" {
		return nil, errRefresh
	}
	now := s.Now()
	next, err := newRefreshToken()
	if err != nil {
		return nil, s.internal(ctx, "refresh", err)
	}
	rt.UsedAt = now.Unix()
	sess.LastUsed = now.Unix()
	exp := sess.ExpiresAt * 1e6
	err = s.batch(ctx,
		write(rtThing.Id, "RefreshToken", rt, dbv1.Condition_CONDITION_MUST_EXIST, rtThing.Version, exp),
		write(sessThing.Id, "Session", sess, dbv1.Condition_CONDITION_MUST_EXIST, sessThing.Version, exp),
		write(refreshID(next), "RefreshToken", refreshJSON{SessionID: sessThing.Id}, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, exp))
	if apierr.Is(err, apierr.PreconditionFailed) {
		// Another refresh spent the token first: this is a second use.
		if t, err := s.get(ctx, sessThing.Id, sess); err == nil {
			s.revokeFamily(ctx, t, sess, "refresh_token_reuse", req.Msg.Ip)
		}
		return nil, errRefresh
	}
	if err != nil {
		return nil, s.internal(ctx, "refresh", err)
	}
	access, err := s.keys.Sign(s.claims(u, sess.UserID, sessThing.Id, now))
	if err != nil {
		return nil, s.internal(ctx, "refresh", err)
	}
	return connect.NewResponse(&authv1.TokensResponse{Tokens: s.tokens(access, next, sessThing.Id)}), nil
}

// revokeFamily revokes a session (every refresh token of it) and audits why.
func (s *Service) revokeFamily(ctx context.Context, t *dbv1.Thing, sess *sessionJSON, why, ip string) {
	if sess.RevokedAt == 0 {
		sess.RevokedAt = s.unix()
		if err := s.batch(ctx, write(t.Id, "Session", sess, dbv1.Condition_CONDITION_MUST_EXIST, 0, sess.ExpiresAt*1e6)); err != nil {
			s.log.ErrorContext(ctx, "revoke session failed", "session", t.Id, "err", err)
		}
	}
	s.audit(ctx, why, sess.UserID, t.Id, "revoked", ip)
}

// Logout revokes the session of a refresh token.
func (s *Service) Logout(ctx context.Context, req *connect.Request[authv1.LogoutRequest]) (*connect.Response[authv1.LogoutResponse], error) {
	rt := &refreshJSON{}
	if _, err := s.get(ctx, refreshID(req.Msg.RefreshToken), rt); err != nil {
		if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
			return nil, errRefresh
		}
		return nil, s.internal(ctx, "logout", err)
	}
	if err := s.revokeSession(ctx, rt.SessionID, ""); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.LogoutResponse{}), nil
}

// RevokeSession revokes a session; with user_id, only that user's.
func (s *Service) RevokeSession(ctx context.Context, req *connect.Request[authv1.RevokeSessionRequest]) (*connect.Response[authv1.RevokeSessionResponse], error) {
	if err := s.revokeSession(ctx, req.Msg.SessionId, req.Msg.UserId); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.RevokeSessionResponse{}), nil
}

func (s *Service) revokeSession(ctx context.Context, id, userID string) error {
	sess := &sessionJSON{}
	t, err := s.get(ctx, id, sess)
	if err != nil || t.Type != "Session" || (userID != "" && sess.UserID != userID) {
		if err == nil || apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
			return apierr.New(apierr.NotFound, "session %s not found", id)
		}
		return s.internal(ctx, "revoke session", err)
	}
	if sess.RevokedAt != 0 {
		return nil
	}
	sess.RevokedAt = s.unix()
	if err := s.batch(ctx, write(id, "Session", sess, dbv1.Condition_CONDITION_MUST_EXIST, 0, sess.ExpiresAt*1e6)); err != nil {
		return s.internal(ctx, "revoke session", err)
	}
	return nil
}

// ListSessions returns a user's live sessions, newest first.
func (s *Service) ListSessions(ctx context.Context, req *connect.Request[authv1.ListSessionsRequest]) (*connect.Response[authv1.ListSessionsResponse], error) {
	where, _ := json.Marshal(map[string]string{"userId": req.Msg.UserId})
	out := &authv1.ListSessionsResponse{Sessions: []*authv1.Session{}}
	lr := &dbv1.ListRequest{Ns: Namespace, Type: "Session", Where: string(where), Order: "-createdAt", Limit: 1000}
	for {
		res, err := s.db.List(ctx, connect.NewRequest(lr))
		if err != nil {
			return nil, s.internal(ctx, "list sessions", err)
		}
		for _, t := range res.Msg.Items {
			var d sessionJSON
			if err := json.Unmarshal(t.Data, &d); err != nil {
				return nil, s.internal(ctx, "list sessions", err)
			}
			if d.RevokedAt != 0 {
				continue
			}
			out.Sessions = append(out.Sessions, &authv1.Session{Id: t.Id, UserId: d.UserID, CreatedAt: t.CreatedAt / 1e6, ExpiresAt: d.ExpiresAt, LastUsedAt: d.LastUsed, UserAgent: d.UserAgent, Ip: d.IP})
		}
		if res.Msg.NextCursor == "" {
			break
		}
		lr.Cursor = res.Msg.NextCursor
	}
	return connect.NewResponse(out), nil
}

// ValidateToken verifies an access token and returns its identity.
func (s *Service) ValidateToken(ctx context.Context, req *connect.Request[authv1.ValidateTokenRequest]) (*connect.Response[authv1.IdentityResponse], error) {
	c, err := s.Verifier().Verify(req.Msg.Token)
	if errors.Is(err, ErrUnknownKey) {
		if rerr := s.rotateKeys(ctx); rerr == nil {
			c, err = s.Verifier().Verify(req.Msg.Token)
		}
	}
	if err != nil {
		return nil, apierr.New(apierr.Unauthenticated, "invalid access token")
	}
	return connect.NewResponse(&authv1.IdentityResponse{Identity: IdentityOf(c)}), nil
}

// IdentityOf returns the identity an access token's claims describe.
func IdentityOf(c *Claims) *authv1.Identity {
	var exp int64
	if c.ExpiresAt != nil {
		exp = c.ExpiresAt.Unix()
	}
	return &authv1.Identity{Subject: c.Subject, Kind: "user", Email: c.Email, Grants: toGrants(c.Grants), SessionId: c.SessionID, ExpiresAt: exp}
}
