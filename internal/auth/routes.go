package auth

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/reqid"
)

// API is what the REST routes need from the auth service: the local
// *Service in all-in-one mode, a Connect client in split mode.
type API interface {
	Login(context.Context, *connect.Request[authv1.LoginRequest]) (*connect.Response[authv1.TokensResponse], error)
	Refresh(context.Context, *connect.Request[authv1.RefreshRequest]) (*connect.Response[authv1.TokensResponse], error)
	Logout(context.Context, *connect.Request[authv1.LogoutRequest]) (*connect.Response[authv1.LogoutResponse], error)
	RevokeSession(context.Context, *connect.Request[authv1.RevokeSessionRequest]) (*connect.Response[authv1.RevokeSessionResponse], error)
	ListSessions(context.Context, *connect.Request[authv1.ListSessionsRequest]) (*connect.Response[authv1.ListSessionsResponse], error)
	CreateAPIKey(context.Context, *connect.Request[authv1.CreateAPIKeyRequest]) (*connect.Response[authv1.CreateAPIKeyResponse], error)
	ListAPIKeys(context.Context, *connect.Request[authv1.ListAPIKeysRequest]) (*connect.Response[authv1.ListAPIKeysResponse], error)
	RevokeAPIKey(context.Context, *connect.Request[authv1.RevokeAPIKeyRequest]) (*connect.Response[authv1.RevokeAPIKeyResponse], error)
	GetUser(context.Context, *connect.Request[authv1.GetUserRequest]) (*connect.Response[authv1.UserResponse], error)
	ListUsers(context.Context, *connect.Request[authv1.ListUsersRequest]) (*connect.Response[authv1.ListUsersResponse], error)
	CreateUser(context.Context, *connect.Request[authv1.CreateUserRequest]) (*connect.Response[authv1.UserResponse], error)
	UpdateUser(context.Context, *connect.Request[authv1.UpdateUserRequest]) (*connect.Response[authv1.UserResponse], error)
	DeleteUser(context.Context, *connect.Request[authv1.DeleteUserRequest]) (*connect.Response[authv1.DeleteUserResponse], error)
	JWKS(context.Context, *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error)
	ListAudit(context.Context, *connect.Request[authv1.ListAuditRequest]) (*connect.Response[authv1.ListAuditResponse], error)
	OAuthStart(context.Context, *connect.Request[authv1.OAuthStartRequest]) (*connect.Response[authv1.OAuthStartResponse], error)
	OAuthCallback(context.Context, *connect.Request[authv1.OAuthCallbackRequest]) (*connect.Response[authv1.TokensResponse], error)
}

// Prefixes are the public path prefixes of the auth service.
var Prefixes = []string{"/v1/auth", "/.well-known/jwks.json"}

// OpenRoutes answer callers without credentials: they authenticate by
// what they carry (a password, a refresh token) or are public.
var OpenRoutes = []string{
	"POST /v1/auth/login",
	"POST /v1/auth/refresh",
	"POST /v1/auth/logout",
	"POST /v1/auth/signup",
	"GET /.well-known/jwks.json",
	"GET /v1/auth/oauth/{provider}/start",
	"GET /v1/auth/oauth/{provider}/callback",
}

// Allower limits attempts per key (an account or an IP); a
// ratelimit.Limiter behind a policy fits.
type Allower interface {
	Allow(ctx context.Context, key string) (ok bool, retryAfter time.Duration, err error)
}

// RouteOptions configure the auth routes.
type RouteOptions struct {
	// Can decides permissions; (*Service).Can in all-in-one mode, or the
	// same function over the configured roles.
	Can func(id *authv1.Identity, ns, permission string) bool
	// LoginThrottle, if set, limits login attempts per account and per IP.
	LoginThrottle Allower
	// CustomRoles are the configured roles beside the built-in ones.
	CustomRoles map[string][]string
}

// Routes registers the auth service's REST routes. Admin routes need a
// permission on the _auth namespace: users:manage, keys:manage or
// audit:read (admins have all).
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	h := &rest{api: api, opts: opts}
	mux.HandleFunc("POST /v1/auth/login", h.login)
	mux.HandleFunc("POST /v1/auth/refresh", h.refresh)
	mux.HandleFunc("POST /v1/auth/logout", h.logout)
	mux.HandleFunc("POST /v1/auth/signup", h.signup)
	mux.HandleFunc("GET /.well-known/jwks.json", h.jwks)
	mux.HandleFunc("GET /v1/auth/me", h.me)
	mux.HandleFunc("GET /v1/auth/sessions", h.sessions)
	mux.HandleFunc("DELETE /v1/auth/sessions/{id}", h.revokeSession)
	mux.HandleFunc("POST /v1/auth/check", h.check)
	mux.HandleFunc("POST /v1/auth/users", h.need("users:manage", h.createUser))
	mux.HandleFunc("GET /v1/auth/users", h.need("users:manage", h.listUsers))
	mux.HandleFunc("GET /v1/auth/users/{id}", h.need("users:manage", h.getUser))
	mux.HandleFunc("PATCH /v1/auth/users/{id}", h.need("users:manage", h.updateUser))
	mux.HandleFunc("DELETE /v1/auth/users/{id}", h.need("users:manage", h.deleteUser))
	mux.HandleFunc("POST /v1/auth/keys", h.need("keys:manage", h.createKey))
	mux.HandleFunc("GET /v1/auth/keys", h.need("keys:manage", h.listKeys))
	mux.HandleFunc("DELETE /v1/auth/keys/{id}", h.need("keys:manage", h.revokeKey))
	mux.HandleFunc("GET /v1/auth/audit", h.need("audit:read", h.listAudit))
	mux.HandleFunc("GET /v1/auth/oauth/{provider}/start", h.oauthStart)
	mux.HandleFunc("GET /v1/auth/oauth/{provider}/callback", h.oauthCallback)
}

type rest struct {
	api  API
	opts RouteOptions
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

// ok writes v, which may hold tokens or secrets: it is not to be cached.
func (h *rest) ok(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	apierr.WriteJSON(w, status, v)
}

// need wraps a handler with the permission it requires on _auth.
func (h *rest) need(perm string, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := identity.From(r.Context())
		if id == nil {
			h.fail(w, r, apierr.New(apierr.Unauthenticated, "authentication required"))
			return
		}
		if !h.opts.Can(id, Namespace, perm) {
			h.fail(w, r, apierr.New(apierr.Forbidden, "missing permission %s", perm))
			return
		}
		next(w, r)
	}
}

func caller(r *http.Request) (*authv1.Identity, error) {
	id := identity.From(r.Context())
	if id == nil {
		return nil, apierr.New(apierr.Unauthenticated, "authentication required")
	}
	return id, nil
}

type tokensOut struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	TokenType    string `json:"tokenType"`
	ExpiresIn    int64  `json:"expiresIn"`
	SessionID    string `json:"sessionId"`
}

func tokensJSON(t *authv1.Tokens) tokensOut {
	return tokensOut{AccessToken: t.AccessToken, RefreshToken: t.RefreshToken, TokenType: t.TokenType, ExpiresIn: t.ExpiresIn, SessionID: t.SessionId}
}

func (h *rest) throttle(w http.ResponseWriter, r *http.Request, keys ...string) bool {
	if h.opts.LoginThrottle == nil {
		return true
	}
	for _, k := range keys {
		ok, retry, err := h.opts.LoginThrottle.Allow(r.Context(), k)
		if err != nil {
			continue // a limiter outage must not lock everyone out
		}
		if !ok {
			secs := int(retry.Seconds() + 0.999)
			if secs < 1 {
				secs = 1
			}
			w.Header().Set("Retry-After", strconv.Itoa(secs))
			h.fail(w, r, apierr.New(apierr.RateLimited, "too many login attempts; retry in %d seconds", secs))
			return false
		}
	}
	return true
}

func (h *rest) login(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email    string `json:"email"`
		Password string `json:"password"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	ip := reqid.ClientIP(r)
	if !h.throttle(w, r, "login:ip:"+ip, "login:acct:"+hashHex(strings.ToLower(strings.TrimSpace(body.Email)))) {
		return
	}
	res, err := h.api.Login(r.Context(), connect.NewRequest(&authv1.LoginRequest{Email: body.Email, Password: body.Password, UserAgent: r.UserAgent(), Ip: ip}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, tokensJSON(res.Msg.Tokens))
}

func (h *rest) refresh(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Refresh(r.Context(), connect.NewRequest(&authv1.RefreshRequest{RefreshToken: body.RefreshToken, UserAgent: r.UserAgent(), Ip: reqid.ClientIP(r)}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, tokensJSON(res.Msg.Tokens))
}

func (h *rest) logout(w http.ResponseWriter, r *http.Request) {
	var body struct {
		RefreshToken string `json:"refreshToken"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.api.Logout(r.Context(), connect.NewRequest(&authv1.LogoutRequest{RefreshToken: body.RefreshToken})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type userIn struct {
	Email    string                    `json:"email"`
	Name     string                    `json:"name"`
	Password string                    `json:"password"`
	Grants   map[string]*authv1.Grants `json:"grants"`
	Invite   bool                      `json:"invite"`
}

func (h *rest) signup(w http.ResponseWriter, r *http.Request) {
	var body userIn
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if !h.throttle(w, r, "signup:ip:"+reqid.ClientIP(r)) {
		return
	}
	res, err := h.api.CreateUser(r.Context(), connect.NewRequest(&authv1.CreateUserRequest{Email: body.Email, Name: body.Name, Password: body.Password, Grants: body.Grants, Signup: true}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, userJSONOut(res.Msg.User))
}

func (h *rest) jwks(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.JWKS(r.Context(), connect.NewRequest(&authv1.JWKSRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(res.Msg.Jwks)
}

func (h *rest) me(w http.ResponseWriter, r *http.Request) {
	id, err := caller(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := map[string]any{"identity": identityJSONOut(id)}
	if id.Kind == "user" {
		if u, err := h.api.GetUser(r.Context(), connect.NewRequest(&authv1.GetUserRequest{Id: id.Subject})); err == nil {
			out["user"] = userJSONOut(u.Msg.User)
		}
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) sessions(w http.ResponseWriter, r *http.Request) {
	id, err := caller(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if id.Kind != "user" {
		h.fail(w, r, apierr.New(apierr.Forbidden, "sessions belong to users; this is an API key"))
		return
	}
	res, err := h.api.ListSessions(r.Context(), connect.NewRequest(&authv1.ListSessionsRequest{UserId: id.Subject}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]sessionRest, len(res.Msg.Sessions))
	for i, s := range res.Msg.Sessions {
		items[i] = sessionRest{ID: s.Id, UserID: s.UserId, CreatedAt: rfc3339(s.CreatedAt), ExpiresAt: rfc3339(s.ExpiresAt), LastUsedAt: rfc3339(s.LastUsedAt), UserAgent: s.UserAgent, IP: s.Ip}
	}
	h.ok(w, http.StatusOK, map[string]any{"items": items})
}

func (h *rest) revokeSession(w http.ResponseWriter, r *http.Request) {
	id, err := caller(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	userID := id.Subject
	if h.opts.Can(id, Namespace, "users:manage") {
		userID = "" // admins may revoke anyone's
	} else if id.Kind != "user" {
		h.fail(w, r, apierr.New(apierr.Forbidden, "sessions belong to users; this is an API key"))
		return
	}
	if _, err := h.api.RevokeSession(r.Context(), connect.NewRequest(&authv1.RevokeSessionRequest{SessionId: r.PathValue("id"), UserId: userID})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) check(w http.ResponseWriter, r *http.Request) {
	id, err := caller(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var body struct {
		Namespace  string `json:"namespace"`
		Permission string `json:"permission"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if !ValidPermission(body.Permission) || body.Namespace == "" {
		h.fail(w, r, apierr.New(apierr.Invalid, "send a namespace and a permission such as things:read"))
		return
	}
	out := map[string]any{"allowed": h.opts.Can(id, body.Namespace, body.Permission)}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) createUser(w http.ResponseWriter, r *http.Request) {
	var body userIn
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.mayGrant(r, body.Grants); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.CreateUser(r.Context(), connect.NewRequest(&authv1.CreateUserRequest{Email: body.Email, Name: body.Name, Password: body.Password, Grants: body.Grants, Invite: body.Invite}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, userJSONOut(res.Msg.User))
}

// mayGrant refuses grants the caller does not hold itself: keys:manage or
// users:manage must not be a way to become admin.
func (h *rest) mayGrant(r *http.Request, grants map[string]*authv1.Grants) error {
	id := identity.From(r.Context())
	for ns, g := range grants {
		perms := append(Expand(g.GetRoles(), h.opts.CustomRoles), g.GetPermissions()...)
		for _, p := range perms {
			ok := false
			if ns == "*" {
				// "*" reaches every tenant namespace: the caller must hold
				// p there too, not merely on some namespace.
				ok = id.GetKind() == "service" || id.GetGrants()["*"] != nil &&
					Allowed(append(Expand(id.Grants["*"].GetRoles(), h.opts.CustomRoles), id.Grants["*"].GetPermissions()...), p)
			} else {
				ok = h.opts.Can(id, ns, p)
			}
			if !ok {
				return apierr.New(apierr.Forbidden, "cannot grant %s on %s: you do not hold it", p, ns)
			}
		}
	}
	return nil
}

func (h *rest) listUsers(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	res, err := h.api.ListUsers(r.Context(), connect.NewRequest(&authv1.ListUsersRequest{Limit: int32(limit), Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	users := make([]userRest, len(res.Msg.Users))
	for i, u := range res.Msg.Users {
		users[i] = userJSONOut(u)
	}
	out := map[string]any{"items": users}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) getUser(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.GetUser(r.Context(), connect.NewRequest(&authv1.GetUserRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, userJSONOut(res.Msg.User))
}

func (h *rest) updateUser(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name     *string                   `json:"name"`
		Status   *string                   `json:"status"`
		Grants   map[string]*authv1.Grants `json:"grants"`
		Password *string                   `json:"password"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.mayGrant(r, body.Grants); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.UpdateUser(r.Context(), connect.NewRequest(&authv1.UpdateUserRequest{
		Id: r.PathValue("id"), Name: body.Name, Status: body.Status, Grants: body.Grants, SetGrants: body.Grants != nil, Password: body.Password,
		ActorId: identity.From(r.Context()).GetSubject(),
	}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, userJSONOut(res.Msg.User))
}

func (h *rest) deleteUser(w http.ResponseWriter, r *http.Request) {
	if _, err := h.api.DeleteUser(r.Context(), connect.NewRequest(&authv1.DeleteUserRequest{Id: r.PathValue("id")})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) createKey(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name        string                    `json:"name"`
		Test        bool                      `json:"test"`
		Role        string                    `json:"role"`
		Permissions []string                  `json:"permissions"`
		Namespaces  []string                  `json:"namespaces"`
		Grants      map[string]*authv1.Grants `json:"grants"`
		ExpiresAt   *time.Time                `json:"expiresAt"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	grants := body.Grants
	if body.Role != "" || len(body.Permissions) > 0 {
		if grants != nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "send role/permissions/namespaces or grants, not both"))
			return
		}
		grants = map[string]*authv1.Grants{}
		nss := body.Namespaces
		if len(nss) == 0 {
			nss = []string{"*"}
		}
		for _, ns := range nss {
			g := &authv1.Grants{Permissions: body.Permissions}
			if body.Role != "" {
				g.Roles = []string{body.Role}
			}
			grants[ns] = g
		}
	}
	if err := h.mayGrant(r, grants); err != nil {
		h.fail(w, r, err)
		return
	}
	req := &authv1.CreateAPIKeyRequest{Name: body.Name, Test: body.Test, Grants: grants, CreatedBy: identity.From(r.Context()).GetSubject()}
	if body.ExpiresAt != nil {
		req.ExpiresAt = body.ExpiresAt.Unix()
	}
	res, err := h.api.CreateAPIKey(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, map[string]any{"key": keyJSONOut(res.Msg.Key), "secret": res.Msg.Secret})
}

func (h *rest) listKeys(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.ListAPIKeys(r.Context(), connect.NewRequest(&authv1.ListAPIKeysRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	keys := make([]keyRest, len(res.Msg.Keys))
	for i, k := range res.Msg.Keys {
		keys[i] = keyJSONOut(k)
	}
	h.ok(w, http.StatusOK, map[string]any{"items": keys})
}

func (h *rest) revokeKey(w http.ResponseWriter, r *http.Request) {
	// A caller may only revoke keys it could have made: keys:manage must
	// not be a way to lock out the admins.
	keys, err := h.api.ListAPIKeys(r.Context(), connect.NewRequest(&authv1.ListAPIKeysRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, k := range keys.Msg.Keys {
		if k.Id == r.PathValue("id") {
			if err := h.mayGrant(r, k.Grants); err != nil {
				h.fail(w, r, apierr.New(apierr.Forbidden, "cannot revoke key %s: it holds grants you do not", k.Id))
				return
			}
		}
	}
	res, err := h.api.RevokeAPIKey(r.Context(), connect.NewRequest(&authv1.RevokeAPIKeyRequest{Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, keyJSONOut(res.Msg.Key))
}

func (h *rest) listAudit(w http.ResponseWriter, r *http.Request) {
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	res, err := h.api.ListAudit(r.Context(), connect.NewRequest(&authv1.ListAuditRequest{Limit: int32(limit), Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]json.RawMessage, len(res.Msg.Events))
	for i, e := range res.Msg.Events {
		items[i] = e
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	h.ok(w, http.StatusOK, out)
}
