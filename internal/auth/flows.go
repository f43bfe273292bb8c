package auth

// This file holds the account flows that work by email: password reset,
// email verification, invitations and magic-link sign-in. Each sends a
// one-time token through the email service (its binding, Mailer) and
// redeems it in a second call. Tokens are 256-bit random strings; only
// their SHA-256 is stored (a FlowToken thing with a TTL), and redeeming
// one deletes it in the same atomic batch as its effect, so a token works
// once even when two requests race.

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/reqid"
)

// Mailer is what the flows need from the email service: the
// *email.Service in one process, its Connect client across processes.
type Mailer interface {
	Send(context.Context, *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error)
}

// FlowConfig configures the email flows.
type FlowConfig struct {
	// AppName is the name emails give the application ("dotdo").
	AppName string
	// LinkURL is where the links in emails point: the application's pages
	// /reset-password, /verify-email, /accept-invite and /magic-link, each
	// given ?token=, which post the token back to the API.
	LinkURL string
	// From is the sender; the email service's default when empty.
	From string
	// TTLs of the tokens.
	ResetTTL, VerifyTTL, InviteTTL, MagicTTL time.Duration
}

// Flows runs the email flows of an auth service.
type Flows struct {
	s    *Service
	mail Mailer
	cfg  FlowConfig
}

// Token purposes.
const (
	purposeReset  = "password-reset"
	purposeVerify = "email-verification"
	purposeInvite = "invite"
	purposeMagic  = "magic-link"
)

// NewFlows returns the email flows of s, sending through mail.
func NewFlows(s *Service, mail Mailer, cfg FlowConfig) *Flows {
	if cfg.AppName == "" {
		cfg.AppName = "dotdo"
	}
	if cfg.LinkURL == "" {
		cfg.LinkURL = s.cfg.Issuer
	}
	cfg.LinkURL = strings.TrimSuffix(cfg.LinkURL, "/")
	for _, d := range []struct {
		p *time.Duration
		v time.Duration
	}{{&cfg.ResetTTL, time.Hour}, {&cfg.VerifyTTL, 24 * time.Hour}, {&cfg.InviteTTL, 7 * 24 * time.Hour}, {&cfg.MagicTTL, 15 * time.Minute}} {
		if *d.p <= 0 {
			*d.p = d.v
		}
	}
	return &Flows{s: s, mail: mail, cfg: cfg}
}

// flowToken is a FlowToken thing's data.
type flowToken struct {
	Purpose string `json:"purpose"`
	UserID  string `json:"userId"`
	Email   string `json:"email"`
}

func flowTokenID(token string) string { return "ft_" + hashHex(token) }

// verifiedJSON records that a user proved control of an address.
type verifiedJSON struct {
	Email      string `json:"email"`
	VerifiedAt int64  `json:"verifiedAt"`
}

func verifiedID(userID string) string { return "ver_" + userID }

// issue stores a new token for purpose and emails its link.
func (f *Flows) issue(ctx context.Context, purpose, userID, email string, ttl time.Duration, test bool, data map[string]string) error {
	body, err := randomBase62()
	if err != nil {
		return err
	}
	token := "ft_" + body
	exp := f.s.Now().Add(ttl)
	if err := f.s.batch(ctx, write(flowTokenID(token), "FlowToken", flowToken{Purpose: purpose, UserID: userID, Email: email},
		dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, exp.UnixMicro())); err != nil {
		return err
	}
	page := map[string]string{purposeReset: "/reset-password", purposeVerify: "/verify-email", purposeInvite: "/accept-invite", purposeMagic: "/magic-link"}[purpose]
	link := f.cfg.LinkURL + page + "?token=" + url.QueryEscape(token)
	vars := map[string]string{"appName": f.cfg.AppName, "expiresIn": human(ttl)}
	for k, v := range data {
		vars[k] = v
	}
	switch purpose {
	case purposeReset:
		vars["resetUrl"] = link
	case purposeVerify:
		vars["verifyUrl"] = link
	case purposeInvite:
		vars["acceptUrl"] = link
	case purposeMagic:
		vars["loginUrl"] = link
	}
	_, err = f.mail.Send(ctx, connect.NewRequest(&emailv1.SendRequest{
		Ns: Namespace, From: f.cfg.From, To: []string{email}, Template: purpose, Data: mustJSON(vars), Test: test,
		Tags: []*emailv1.Tag{{Name: "flow", Value: purpose}},
	}))
	return err
}

func human(d time.Duration) string {
	switch {
	case d%(24*time.Hour) == 0:
		n := int(d / (24 * time.Hour))
		return plural(n, "day")
	case d%time.Hour == 0:
		return plural(int(d/time.Hour), "hour")
	default:
		return plural(int(d/time.Minute), "minute")
	}
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

var errToken = apierr.New(apierr.Unauthenticated, "invalid or expired token")

// redeem checks token for purpose and returns it with its user; effect
// returns the writes that go with spending it.
func (f *Flows) redeem(ctx context.Context, token, purpose string, effect func(ft *flowToken, t *dbv1.Thing, u *userJSON) ([]*dbv1.Op, error)) (*flowToken, *userJSON, error) {
	if len(token) != 46 || !strings.HasPrefix(token, "ft_") {
		return nil, nil, errToken
	}
	ft := &flowToken{}
	tt, err := f.s.get(ctx, flowTokenID(token), ft)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
			return nil, nil, errToken
		}
		return nil, nil, err
	}
	if tt.Type != "FlowToken" || ft.Purpose != purpose {
		return nil, nil, errToken
	}
	ut, u, err := f.s.user(ctx, ft.UserID)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, nil, errToken
		}
		return nil, nil, err
	}
	if !strings.EqualFold(u.Email, ft.Email) {
		return nil, nil, errToken // the address changed since the token was sent
	}
	ops, err := effect(ft, ut, u)
	if err != nil {
		return nil, nil, err
	}
	spend := &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Id: flowTokenID(token), IfVersion: tt.Version}}}
	if err := f.s.batch(ctx, append([]*dbv1.Op{spend}, ops...)...); err != nil {
		if apierr.Is(err, apierr.PreconditionFailed) || apierr.Is(err, apierr.NotFound) {
			return nil, nil, errToken // spent by a concurrent request
		}
		return nil, nil, err
	}
	return ft, u, nil
}

func (f *Flows) markVerified(userID, email string) *dbv1.Op {
	return write(verifiedID(userID), "UserVerified", verifiedJSON{Email: email, VerifiedAt: f.s.unix()}, dbv1.Condition_CONDITION_NONE, 0, 0)
}

// userByEmail returns the user with address email, or NotFound.
func (f *Flows) userByEmail(ctx context.Context, email string) (string, *userJSON, error) {
	var ref struct {
		UserID string `json:"userId"`
	}
	if _, err := f.s.get(ctx, emailID(email), &ref); err != nil {
		return "", nil, err
	}
	_, u, err := f.s.user(ctx, ref.UserID)
	return ref.UserID, u, err
}

// ForgotPassword emails a password-reset link to an active user with a
// password. It says nothing about whether the address has an account.
func (f *Flows) ForgotPassword(ctx context.Context, addr, ip string, test bool) error {
	email, err := validEmail(addr)
	if err != nil {
		return err
	}
	id, u, err := f.userByEmail(ctx, email)
	if apierr.Is(err, apierr.NotFound) {
		f.s.audit(ctx, "password.forgot", "", email, "unknown_user", ip)
		return nil
	}
	if err != nil {
		return f.s.internal(ctx, "forgot password", err)
	}
	if u.Status != "active" {
		f.s.audit(ctx, "password.forgot", id, id, "inactive", ip)
		return nil
	}
	if err := f.issue(ctx, purposeReset, id, email, f.cfg.ResetTTL, test, nil); err != nil {
		return f.s.internal(ctx, "send password reset", err)
	}
	f.s.audit(ctx, "password.forgot", id, id, "sent", ip)
	return nil
}

// ResetPassword spends a reset token: sets the password and revokes the
// user's sessions.
func (f *Flows) ResetPassword(ctx context.Context, token, password, ip string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	hash, err := HashPassword(password, f.s.cfg.Password)
	if err != nil {
		return f.s.internal(ctx, "hash password", err)
	}
	ft, _, err := f.redeem(ctx, token, purposeReset, func(ft *flowToken, t *dbv1.Thing, u *userJSON) ([]*dbv1.Op, error) {
		if u.Status != "active" {
			return nil, errToken
		}
		u.PasswordHash = hash
		return []*dbv1.Op{write(t.Id, "User", u, dbv1.Condition_CONDITION_NONE, t.Version, 0), f.markVerified(t.Id, u.Email)}, nil
	})
	if err != nil {
		f.s.audit(ctx, "password.reset", "", "", "invalid_token", ip)
		return f.s.internal(ctx, "reset password", err)
	}
	// A reset is what someone does when they fear a stolen password:
	// every session ends.
	if res, err := f.s.ListSessions(ctx, connect.NewRequest(&authv1.ListSessionsRequest{UserId: ft.UserID})); err == nil {
		for _, ss := range res.Msg.Sessions {
			f.s.revokeSession(ctx, ss.Id, ft.UserID)
		}
	}
	f.s.audit(ctx, "password.reset", ft.UserID, ft.UserID, "ok", ip)
	return nil
}

// SendVerification emails a verification link to the user's address.
func (f *Flows) SendVerification(ctx context.Context, userID string, test bool) error {
	_, u, err := f.s.user(ctx, userID)
	if err != nil {
		return f.s.internal(ctx, "send verification", err)
	}
	if err := f.issue(ctx, purposeVerify, userID, u.Email, f.cfg.VerifyTTL, test, nil); err != nil {
		return f.s.internal(ctx, "send verification", err)
	}
	return nil
}

// VerifyEmail spends a verification token and records the address as
// verified.
func (f *Flows) VerifyEmail(ctx context.Context, token, ip string) (string, error) {
	ft, _, err := f.redeem(ctx, token, purposeVerify, func(ft *flowToken, t *dbv1.Thing, u *userJSON) ([]*dbv1.Op, error) {
		return []*dbv1.Op{f.markVerified(t.Id, u.Email)}, nil
	})
	if err != nil {
		return "", f.s.internal(ctx, "verify email", err)
	}
	f.s.audit(ctx, "email.verified", ft.UserID, ft.UserID, "ok", ip)
	return ft.UserID, nil
}

// Verified reports whether userID has verified its current address.
func (f *Flows) Verified(ctx context.Context, userID string) (bool, error) {
	_, u, err := f.s.user(ctx, userID)
	if err != nil {
		return false, err
	}
	var v verifiedJSON
	if _, err := f.s.get(ctx, verifiedID(userID), &v); err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return false, nil
		}
		return false, err
	}
	return strings.EqualFold(v.Email, u.Email), nil
}

// Invite creates an invited user (no password) and emails an invitation.
func (f *Flows) Invite(ctx context.Context, req *authv1.CreateUserRequest, inviter string, test bool) (*authv1.User, error) {
	req.Invite, req.Password = true, ""
	res, err := f.s.CreateUser(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, err
	}
	u := res.Msg.User
	if inviter == "" {
		inviter = "An administrator"
	}
	if err := f.issue(ctx, purposeInvite, u.Id, u.Email, f.cfg.InviteTTL, test, map[string]string{"inviterName": inviter}); err != nil {
		return nil, f.s.internal(ctx, "send invitation", err)
	}
	return u, nil
}

// AcceptInvite spends an invitation: the user sets a password, becomes
// active with a verified address, and is signed in.
func (f *Flows) AcceptInvite(ctx context.Context, token, password, name, ip, userAgent string) (*authv1.Tokens, error) {
	if err := checkPassword(password); err != nil {
		return nil, err
	}
	if err := checkName(name); err != nil {
		return nil, err
	}
	hash, err := HashPassword(password, f.s.cfg.Password)
	if err != nil {
		return nil, f.s.internal(ctx, "hash password", err)
	}
	ft, u, err := f.redeem(ctx, token, purposeInvite, func(ft *flowToken, t *dbv1.Thing, u *userJSON) ([]*dbv1.Op, error) {
		if u.Status != "invited" {
			return nil, errToken
		}
		u.Status, u.PasswordHash = "active", hash
		if name != "" {
			u.Name = name
		}
		return []*dbv1.Op{write(t.Id, "User", u, dbv1.Condition_CONDITION_NONE, t.Version, 0), f.markVerified(t.Id, u.Email)}, nil
	})
	if err != nil {
		f.s.audit(ctx, "invite.accept", "", "", "invalid_token", ip)
		return nil, f.s.internal(ctx, "accept invite", err)
	}
	tokens, err := f.s.startSession(ctx, ft.UserID, u, ip, userAgent)
	if err != nil {
		return nil, f.s.internal(ctx, "accept invite", err)
	}
	f.s.audit(ctx, "invite.accept", ft.UserID, ft.UserID, "ok", ip)
	return tokens, nil
}

// SendMagicLink emails a one-time sign-in link to an active user. It says
// nothing about whether the address has an account.
func (f *Flows) SendMagicLink(ctx context.Context, addr, ip string, test bool) error {
	email, err := validEmail(addr)
	if err != nil {
		return err
	}
	id, u, err := f.userByEmail(ctx, email)
	if apierr.Is(err, apierr.NotFound) {
		f.s.audit(ctx, "magic_link.send", "", email, "unknown_user", ip)
		return nil
	}
	if err != nil {
		return f.s.internal(ctx, "send magic link", err)
	}
	if u.Status != "active" {
		return nil
	}
	if err := f.issue(ctx, purposeMagic, id, email, f.cfg.MagicTTL, test, nil); err != nil {
		return f.s.internal(ctx, "send magic link", err)
	}
	return nil
}

// MagicLogin spends a magic link and starts a session.
func (f *Flows) MagicLogin(ctx context.Context, token, ip, userAgent string) (*authv1.Tokens, error) {
	ft, u, err := f.redeem(ctx, token, purposeMagic, func(ft *flowToken, t *dbv1.Thing, u *userJSON) ([]*dbv1.Op, error) {
		if u.Status != "active" {
			return nil, errToken
		}
		return []*dbv1.Op{f.markVerified(t.Id, u.Email)}, nil
	})
	if err != nil {
		f.s.audit(ctx, "login.magic_link", "", "", "invalid_token", ip)
		return nil, f.s.internal(ctx, "magic link", err)
	}
	tokens, err := f.s.startSession(ctx, ft.UserID, u, ip, userAgent)
	if err != nil {
		return nil, f.s.internal(ctx, "magic link", err)
	}
	f.s.audit(ctx, "login.magic_link", ft.UserID, ft.UserID, "ok", ip)
	return tokens, nil
}

// FlowService is the Connect form of the flows (AuthFlowsService).
type FlowService struct{ f *Flows }

var _ authv1connect.AuthFlowsServiceHandler = (*FlowService)(nil)

// Service returns the Connect handler of the flows.
func (f *Flows) Service() *FlowService { return &FlowService{f: f} }

// FlowsAPI is what the flow routes need: the *FlowService in the auth
// process, or a Connect client to it.
type FlowsAPI interface {
	ForgotPassword(context.Context, *connect.Request[authv1.ForgotPasswordRequest]) (*connect.Response[authv1.FlowSentResponse], error)
	ResetPassword(context.Context, *connect.Request[authv1.ResetPasswordRequest]) (*connect.Response[authv1.ResetPasswordResponse], error)
	SendVerification(context.Context, *connect.Request[authv1.SendVerificationRequest]) (*connect.Response[authv1.FlowSentResponse], error)
	VerifyEmail(context.Context, *connect.Request[authv1.VerifyEmailRequest]) (*connect.Response[authv1.VerifyEmailResponse], error)
	Verified(context.Context, *connect.Request[authv1.VerifiedRequest]) (*connect.Response[authv1.VerifiedResponse], error)
	Invite(context.Context, *connect.Request[authv1.InviteRequest]) (*connect.Response[authv1.UserResponse], error)
	AcceptInvite(context.Context, *connect.Request[authv1.AcceptInviteRequest]) (*connect.Response[authv1.TokensResponse], error)
	SendMagicLink(context.Context, *connect.Request[authv1.SendMagicLinkRequest]) (*connect.Response[authv1.FlowSentResponse], error)
	MagicLogin(context.Context, *connect.Request[authv1.MagicLoginRequest]) (*connect.Response[authv1.TokensResponse], error)
}

func (x *FlowService) ForgotPassword(ctx context.Context, req *connect.Request[authv1.ForgotPasswordRequest]) (*connect.Response[authv1.FlowSentResponse], error) {
	m := req.Msg
	if err := x.f.ForgotPassword(ctx, m.Email, m.Ip, m.Test); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.FlowSentResponse{}), nil
}

func (x *FlowService) ResetPassword(ctx context.Context, req *connect.Request[authv1.ResetPasswordRequest]) (*connect.Response[authv1.ResetPasswordResponse], error) {
	m := req.Msg
	if err := x.f.ResetPassword(ctx, m.Token, m.Password, m.Ip); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.ResetPasswordResponse{}), nil
}

func (x *FlowService) SendVerification(ctx context.Context, req *connect.Request[authv1.SendVerificationRequest]) (*connect.Response[authv1.FlowSentResponse], error) {
	if err := x.f.SendVerification(ctx, req.Msg.UserId, req.Msg.Test); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.FlowSentResponse{}), nil
}

func (x *FlowService) VerifyEmail(ctx context.Context, req *connect.Request[authv1.VerifyEmailRequest]) (*connect.Response[authv1.VerifyEmailResponse], error) {
	uid, err := x.f.VerifyEmail(ctx, req.Msg.Token, req.Msg.Ip)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.VerifyEmailResponse{UserId: uid}), nil
}

func (x *FlowService) Verified(ctx context.Context, req *connect.Request[authv1.VerifiedRequest]) (*connect.Response[authv1.VerifiedResponse], error) {
	ok, err := x.f.Verified(ctx, req.Msg.UserId)
	if err != nil {
		return nil, x.f.s.internal(ctx, "verified status", err)
	}
	return connect.NewResponse(&authv1.VerifiedResponse{Verified: ok}), nil
}

func (x *FlowService) Invite(ctx context.Context, req *connect.Request[authv1.InviteRequest]) (*connect.Response[authv1.UserResponse], error) {
	if req.Msg.User == nil {
		return nil, apierr.New(apierr.Invalid, "user is required")
	}
	u, err := x.f.Invite(ctx, req.Msg.User, req.Msg.Inviter, req.Msg.Test)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.UserResponse{User: u}), nil
}

func (x *FlowService) AcceptInvite(ctx context.Context, req *connect.Request[authv1.AcceptInviteRequest]) (*connect.Response[authv1.TokensResponse], error) {
	m := req.Msg
	t, err := x.f.AcceptInvite(ctx, m.Token, m.Password, m.Name, m.Ip, m.UserAgent)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.TokensResponse{Tokens: t}), nil
}

func (x *FlowService) SendMagicLink(ctx context.Context, req *connect.Request[authv1.SendMagicLinkRequest]) (*connect.Response[authv1.FlowSentResponse], error) {
	m := req.Msg
	if err := x.f.SendMagicLink(ctx, m.Email, m.Ip, m.Test); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.FlowSentResponse{}), nil
}

func (x *FlowService) MagicLogin(ctx context.Context, req *connect.Request[authv1.MagicLoginRequest]) (*connect.Response[authv1.TokensResponse], error) {
	m := req.Msg
	t, err := x.f.MagicLogin(ctx, m.Token, m.Ip, m.UserAgent)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.TokensResponse{Tokens: t}), nil
}

// FlowPrefixes are the path prefixes of the flow routes.
var FlowPrefixes = []string{"/v1/auth/password", "/v1/auth/email", "/v1/auth/invites", "/v1/auth/magic-link"}

// FlowOpenRoutes answer without credentials: they carry a token or ask
// for an email to be sent.
var FlowOpenRoutes = []string{
	"POST /v1/auth/password/forgot",
	"POST /v1/auth/password/reset",
	"POST /v1/auth/email/verify",
	"POST /v1/auth/invites/accept",
	"POST /v1/auth/magic-link",
	"POST /v1/auth/magic-link/verify",
}

// FlowRoutes registers the flows' REST routes; they call the flows through
// api (the *FlowService, or a Connect client to the auth process).
func FlowRoutes(mux *http.ServeMux, api FlowsAPI, opts RouteOptions) {
	h := &flowRest{rest: rest{opts: opts}, api: api}
	mux.HandleFunc("POST /v1/auth/password/forgot", h.forgot)
	mux.HandleFunc("POST /v1/auth/password/reset", h.reset)
	mux.HandleFunc("POST /v1/auth/email/verify/send", h.sendVerify)
	mux.HandleFunc("POST /v1/auth/email/verify", h.verify)
	mux.HandleFunc("GET /v1/auth/email/verify", h.verifiedStatus)
	mux.HandleFunc("POST /v1/auth/invites", h.need("users:manage", h.invite))
	mux.HandleFunc("POST /v1/auth/invites/accept", h.accept)
	mux.HandleFunc("POST /v1/auth/magic-link", h.magic)
	mux.HandleFunc("POST /v1/auth/magic-link/verify", h.magicVerify)
}

// FlowThrottleKeys are the keys the routes that send email ask
// RouteOptions.LoginThrottle about: per address ("login:acct:" prefix, the
// account policy) and per IP, so nobody can flood an inbox.
func FlowThrottleKeys(email, ip string) []string {
	return []string{"login:acct:flow:" + strings.ToLower(strings.TrimSpace(email)), "login:ip:flow:" + ip}
}

type flowRest struct {
	rest
	api FlowsAPI
}

// testCaller reports whether the caller (if any) is a test key: its
// emails go to the outbox.
func testCaller(r *http.Request) bool {
	id := identity.From(r.Context())
	return id != nil && id.Test
}

func (h *flowRest) forgot(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Email string `json:"email"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.throttle(w, r, FlowThrottleKeys(b.Email, reqid.ClientIP(r))...) {
		return
	}
	if _, err := h.api.ForgotPassword(r.Context(), connect.NewRequest(&authv1.ForgotPasswordRequest{Email: b.Email, Ip: reqid.ClientIP(r), Test: testCaller(r)})); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusAccepted, map[string]string{"status": "sent", "message": "if the address has an account, a reset link is on its way"})
}

func (h *flowRest) reset(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Token    string `json:"token"`
		Password string `json:"password"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.api.ResetPassword(r.Context(), connect.NewRequest(&authv1.ResetPasswordRequest{Token: b.Token, Password: b.Password, Ip: reqid.ClientIP(r)})); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, map[string]string{"status": "reset"})
}

// signedInUser returns the caller, who must be a user.
func signedInUser(r *http.Request) (*authv1.Identity, error) {
	id, err := caller(r)
	if err != nil {
		return nil, err
	}
	if id.Kind != "user" {
		return nil, apierr.New(apierr.Forbidden, "only a signed-in user has an address to verify")
	}
	return id, nil
}

func (h *flowRest) sendVerify(w http.ResponseWriter, r *http.Request) {
	id, err := signedInUser(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.api.SendVerification(r.Context(), connect.NewRequest(&authv1.SendVerificationRequest{UserId: id.Subject, Test: testCaller(r)})); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusAccepted, map[string]string{"status": "sent"})
}

func (h *flowRest) verify(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Token string `json:"token"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.VerifyEmail(r.Context(), connect.NewRequest(&authv1.VerifyEmailRequest{Token: b.Token, Ip: reqid.ClientIP(r)}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, map[string]any{"userId": res.Msg.UserId, "verified": true})
}

func (h *flowRest) verifiedStatus(w http.ResponseWriter, r *http.Request) {
	id, err := signedInUser(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Verified(r.Context(), connect.NewRequest(&authv1.VerifiedRequest{UserId: id.Subject}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, map[string]any{"userId": id.Subject, "verified": res.Msg.Verified})
}

func (h *flowRest) invite(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Email  string                    `json:"email"`
		Name   string                    `json:"name"`
		Grants map[string]*authv1.Grants `json:"grants"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.mayGrant(r, b.Grants); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Invite(r.Context(), connect.NewRequest(&authv1.InviteRequest{
		User: &authv1.CreateUserRequest{Email: b.Email, Name: b.Name, Grants: b.Grants}, Inviter: identity.From(r.Context()).GetEmail(), Test: testCaller(r)}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, userJSONOut(res.Msg.User))
}

func (h *flowRest) accept(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Token    string `json:"token"`
		Password string `json:"password"`
		Name     string `json:"name"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.AcceptInvite(r.Context(), connect.NewRequest(&authv1.AcceptInviteRequest{Token: b.Token, Password: b.Password, Name: b.Name, Ip: reqid.ClientIP(r), UserAgent: r.UserAgent()}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, tokensJSON(res.Msg.Tokens))
}

func (h *flowRest) magic(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Email string `json:"email"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.throttle(w, r, FlowThrottleKeys(b.Email, reqid.ClientIP(r))...) {
		return
	}
	if _, err := h.api.SendMagicLink(r.Context(), connect.NewRequest(&authv1.SendMagicLinkRequest{Email: b.Email, Ip: reqid.ClientIP(r), Test: testCaller(r)})); err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusAccepted, map[string]string{"status": "sent", "message": "if the address has an account, a sign-in link is on its way"})
}

func (h *flowRest) magicVerify(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Token string `json:"token"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.MagicLogin(r.Context(), connect.NewRequest(&authv1.MagicLoginRequest{Token: b.Token, Ip: reqid.ClientIP(r), UserAgent: r.UserAgent()}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, tokensJSON(res.Msg.Tokens))
}
