package auth

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// Sign-in with OpenID Connect providers: the authorization code flow with
// PKCE (S256), state and nonce.
//
//	GET /v1/auth/oauth/{provider}/start     302 to the provider
//	GET /v1/auth/oauth/{provider}/callback  200 with tokens, like login
//
// Start stores a single-use OAuthState thing (10 minutes) holding the
// nonce and the PKCE verifier. The callback deletes it as it reads it,
// redeems the code with the verifier, verifies the ID token (signature,
// issuer, audience, expiry) and its nonce, and then finds the user: by an
// ExternalIdentity thing named after provider and subject; else by email,
// only when the provider says the address is verified; else it creates
// one when signup is open. The auth service does all of it, so the
// gateway in split mode holds no provider secret, and neither RPC lets a
// caller assert who signed in.

// StateTTL is how long a started sign-in may take to come back.
const StateTTL = 10 * time.Minute

// OIDCProvider configures one OpenID Connect provider.
type OIDCProvider struct {
	// Name names the provider in URLs: /v1/auth/oauth/<name>/start.
	Name string
	// Issuer is the provider's issuer URL; discovery reads
	// <Issuer>/.well-known/openid-configuration and ID tokens must name it.
	Issuer       string
	ClientID     string
	ClientSecret string
	// Scopes default to openid, email and profile.
	Scopes []string
	// RedirectURL defaults to <public URL>/v1/auth/oauth/<name>/callback;
	// it must be registered with the provider exactly.
	RedirectURL string
}

// OIDCConfig configures sign-in with OpenID Connect providers.
type OIDCConfig struct {
	Providers []OIDCProvider
	// Client makes the calls to providers; by default one with a
	// 10-second timeout.
	Client *http.Client
}

var providerName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// SecretEnv names the environment variable that holds a provider's client
// secret: DOTDO_OIDC_<NAME>_CLIENT_SECRET, with - as _.
func SecretEnv(name string) string {
	return "DOTDO_OIDC_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_CLIENT_SECRET"
}

// ParseOIDC reads providers from "name=issuer-url,client-id" pairs,
// several separated by commas ("google=https://accounts.google.com,123,
// okta=https://acme.okta.com,0oa9"), and each client secret from
// SecretEnv(name) through getenv. The provider named workos is WorkOS
// AuthKit: give its AuthKit domain (acme-42.authkit.app, or just acme-42)
// or a custom AuthKit domain as a URL, and the client id of a WorkOS
// Connect OAuth application.
func ParseOIDC(spec string, getenv func(string) string) ([]OIDCProvider, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, nil
	}
	parts := strings.Split(spec, ",")
	if len(parts)%2 != 0 {
		return nil, errors.New(`want name=issuer-url,client-id pairs separated by commas, such as "google=https://accounts.google.com,1234.apps.googleusercontent.com"`)
	}
	var out []OIDCProvider
	for i := 0; i < len(parts); i += 2 {
		name, issuer, _ := strings.Cut(strings.TrimSpace(parts[i]), "=")
		p := OIDCProvider{Name: name, Issuer: strings.TrimSpace(issuer), ClientID: strings.TrimSpace(parts[i+1])}
		if !providerName.MatchString(p.Name) {
			return nil, fmt.Errorf("provider name %q: use lowercase letters, digits and -, starting with a letter (it goes in the callback URL)", p.Name)
		}
		if slices.ContainsFunc(out, func(o OIDCProvider) bool { return o.Name == p.Name }) {
			return nil, fmt.Errorf("provider %s is configured twice", p.Name)
		}
		if p.Name == "workos" {
			p.Issuer = WorkOSIssuer(p.Issuer)
		}
		if err := checkIssuer(p.Issuer); err != nil {
			return nil, fmt.Errorf("provider %s: %w", p.Name, err)
		}
		if p.ClientID == "" || strings.ContainsAny(p.ClientID, " =") {
			return nil, fmt.Errorf("provider %s: client id %q: give the id the provider issued, after the issuer URL and a comma", p.Name, p.ClientID)
		}
		if p.ClientSecret = getenv(SecretEnv(p.Name)); p.ClientSecret == "" {
			return nil, fmt.Errorf("provider %s: set its client secret in the environment variable %s (never on the command line)", p.Name, SecretEnv(p.Name))
		}
		out = append(out, p)
	}
	return out, nil
}

// WorkOSIssuer returns the issuer of a WorkOS AuthKit environment from its
// AuthKit domain: "acme-42" and "acme-42.authkit.app" both become
// https://acme-42.authkit.app; a URL (a custom AuthKit domain such as
// https://auth.example.com) is kept as it is.
func WorkOSIssuer(domain string) string {
	if domain == "" || strings.Contains(domain, "://") {
		return domain
	}
	if !strings.Contains(domain, ".") {
		domain += ".authkit.app"
	}
	return "https://" + strings.TrimSuffix(domain, "/")
}

// checkIssuer requires an https URL without query or fragment; http is
// allowed on loopback addresses, for development and tests.
func checkIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("issuer %q: want the provider's issuer URL, such as https://accounts.google.com", issuer)
	}
	if u.Scheme == "http" {
		host := u.Hostname()
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return fmt.Errorf("issuer %q: must be https (http only on localhost)", issuer)
		}
	}
	return nil
}

// oidcSet is the configured providers, each discovered on first use so
// that a provider being down does not stop the server.
type oidcSet struct {
	client    *http.Client
	providers map[string]*oidcProvider
}

type oidcProvider struct {
	cfg OIDCProvider

	mu       sync.Mutex
	ready    *oidcClient // nil until discovery succeeds
	failedAt time.Time
}

// oidcClient is a discovered provider.
type oidcClient struct {
	oauth2   oauth2.Config
	verifier *oidc.IDTokenVerifier
}

func newOIDCSet(cfg OIDCConfig, publicURL string) (*oidcSet, error) {
	set := &oidcSet{client: cfg.Client, providers: map[string]*oidcProvider{}}
	if set.client == nil {
		set.client = &http.Client{Timeout: 10 * time.Second}
	}
	for _, p := range cfg.Providers {
		if !providerName.MatchString(p.Name) {
			return nil, fmt.Errorf("auth: OIDC provider name %q: use lowercase letters, digits and -", p.Name)
		}
		if _, dup := set.providers[p.Name]; dup {
			return nil, fmt.Errorf("auth: OIDC provider %s is configured twice", p.Name)
		}
		if err := checkIssuer(p.Issuer); err != nil {
			return nil, fmt.Errorf("auth: OIDC provider %s: %w", p.Name, err)
		}
		if p.ClientID == "" {
			return nil, fmt.Errorf("auth: OIDC provider %s has no client id", p.Name)
		}
		if len(p.Scopes) == 0 {
			p.Scopes = []string{oidc.ScopeOpenID, "email", "profile"}
		}
		if p.RedirectURL == "" {
			if publicURL == "" {
				return nil, fmt.Errorf("auth: OIDC provider %s needs a redirect URL, or the issuer (public URL) to derive it", p.Name)
			}
			p.RedirectURL = strings.TrimSuffix(publicURL, "/") + "/v1/auth/oauth/" + p.Name + "/callback"
		}
		set.providers[p.Name] = &oidcProvider{cfg: p}
	}
	return set, nil
}

// OIDCProviders returns the names and redirect URLs of the configured
// providers, for the startup log and for registering with providers.
func (s *Service) OIDCProviders() map[string]string {
	out := map[string]string{}
	for name, p := range s.oidc.providers {
		out[name] = p.cfg.RedirectURL
	}
	return out
}

// discoveryRetry is how long a failed discovery is remembered, so that a
// provider that is down is not asked again by every request.
const discoveryRetry = 5 * time.Second

// provider returns the discovered provider, discovering it now if needed.
func (s *Service) provider(ctx context.Context, name string) (*oidcClient, error) {
	p, ok := s.oidc.providers[name]
	if !ok {
		return nil, apierr.New(apierr.NotFound, "no sign-in provider named %q is configured", name)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready != nil {
		return p.ready, nil
	}
	unavailable := apierr.New(apierr.Unavailable, "sign-in provider %s is unavailable: its OpenID configuration could not be loaded; try again later", name)
	if !p.failedAt.IsZero() && s.Now().Sub(p.failedAt) < discoveryRetry {
		return nil, unavailable
	}
	// Not the request's cancellation: one caller giving up must not fail
	// the discovery others wait for.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	op, err := oidc.NewProvider(oidc.ClientContext(dctx, s.oidc.client), p.cfg.Issuer)
	if err != nil {
		p.failedAt = s.Now()
		s.log.WarnContext(ctx, "OIDC discovery failed", "provider", name, "issuer", p.cfg.Issuer, "err", err)
		return nil, unavailable
	}
	var meta struct {
		Methods []string `json:"code_challenge_methods_supported"`
	}
	if op.Claims(&meta) == nil && len(meta.Methods) > 0 && !slices.Contains(meta.Methods, "S256") {
		s.log.WarnContext(ctx, "OIDC provider does not list PKCE S256; sending it anyway", "provider", name)
	}
	p.ready = &oidcClient{
		oauth2: oauth2.Config{
			ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret,
			Endpoint: op.Endpoint(), RedirectURL: p.cfg.RedirectURL, Scopes: p.cfg.Scopes,
		},
		verifier: op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, Now: func() time.Time { return s.Now() }}),
	}
	s.log.InfoContext(ctx, "OIDC provider discovered", "provider", name, "issuer", p.cfg.Issuer)
	return p.ready, nil
}

// oauthStateJSON is an OAuthState thing's data, named after the state's
// SHA-256.
type oauthStateJSON struct {
	Provider string `json:"provider"`
	Nonce    string `json:"nonce"`
	Verifier string `json:"verifier"`
}

func stateID(state string) string { return "oas_" + hashHex(state) }

// externalJSON is an ExternalIdentity thing's data: who a provider's
// subject is here.
type externalJSON struct {
	Provider string `json:"provider"`
	Subject  string `json:"subject"`
	UserID   string `json:"userId"`
	// Email is the address the provider gave when the link was made.
	Email string `json:"email,omitempty"`
}

func externalID(provider, subject string) string { return "xid_" + hashHex(provider+"\x00"+subject) }

// randomToken returns 256 random bits, base64url without padding.
func randomToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// OAuthStart begins a sign-in: it stores a single-use state with a nonce
// and a PKCE verifier and returns the provider's authorization URL.
func (s *Service) OAuthStart(ctx context.Context, req *connect.Request[authv1.OAuthStartRequest]) (*connect.Response[authv1.OAuthStartResponse], error) {
	c, err := s.provider(ctx, req.Msg.Provider)
	if err != nil {
		return nil, err
	}
	state, nonce, verifier := randomToken(), randomToken(), oauth2.GenerateVerifier()
	exp := s.Now().Add(StateTTL)
	data := oauthStateJSON{Provider: req.Msg.Provider, Nonce: nonce, Verifier: verifier}
	if err := s.batch(ctx, write(stateID(state), "OAuthState", data, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, exp.UnixMicro())); err != nil {
		return nil, s.internal(ctx, "oauth start", err)
	}
	u := c.oauth2.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier))
	return connect.NewResponse(&authv1.OAuthStartResponse{AuthorizationUrl: u, State: state}), nil
}

var (
	errState   = apierr.New(apierr.Invalid, "unknown, expired or already used sign-in state; start the sign-in again")
	errIDToken = apierr.New(apierr.Unauthenticated, "the provider's ID token is not valid for this sign-in")
)

// OAuthCallback finishes a sign-in: it consumes the state, redeems the
// code with the PKCE verifier, verifies the ID token and its nonce, and
// signs the user in through ExternalLogin.
func (s *Service) OAuthCallback(ctx context.Context, req *connect.Request[authv1.OAuthCallbackRequest]) (*connect.Response[authv1.TokensResponse], error) {
	m := req.Msg
	c, err := s.provider(ctx, m.Provider)
	if err != nil {
		return nil, err
	}
	if m.Code == "" || len(m.Code) > 4096 {
		return nil, apierr.New(apierr.Invalid, "the callback carries no authorization code")
	}
	st, err := s.consumeState(ctx, m.State)
	if err == nil && st.Provider != m.Provider {
		err = errState // spent all the same: a state is good for one try
	}
	if err != nil {
		if apierr.Is(err, apierr.Invalid) {
			s.auditOIDC(ctx, "", m.Provider, "bad_state", m.Ip)
		}
		return nil, err
	}
	tok, err := c.oauth2.Exchange(oidc.ClientContext(ctx, s.oidc.client), m.Code, oauth2.VerifierOption(st.Verifier))
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.Response != nil {
			// Not re.Error(): it quotes the response body, which may echo the code.
			s.log.WarnContext(ctx, "OIDC code exchange refused", "provider", m.Provider, "status", re.Response.StatusCode, "error", re.ErrorCode)
			if re.Response.StatusCode < 500 {
				s.auditOIDC(ctx, "", m.Provider, "bad_code", m.Ip)
				return nil, apierr.New(apierr.Unauthenticated, "the provider did not accept the authorization code; start the sign-in again")
			}
		} else {
			// A transport error names the token endpoint, not the request body.
			s.log.WarnContext(ctx, "OIDC code exchange failed", "provider", m.Provider, "err", err)
		}
		return nil, apierr.New(apierr.Unavailable, "sign-in provider %s could not redeem the code; start the sign-in again", m.Provider)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		s.auditOIDC(ctx, "", m.Provider, "no_id_token", m.Ip)
		return nil, apierr.New(apierr.Unauthenticated, "the provider returned no ID token; is the openid scope allowed for this client?")
	}
	idt, err := c.verifier.Verify(ctx, raw)
	if err != nil {
		s.log.WarnContext(ctx, "OIDC ID token refused", "provider", m.Provider, "reason", err)
		s.auditOIDC(ctx, "", m.Provider, "bad_id_token", m.Ip)
		return nil, errIDToken
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(st.Nonce)) != 1 {
		s.log.WarnContext(ctx, "OIDC ID token refused", "provider", m.Provider, "reason", "nonce does not match the sign-in's")
		s.auditOIDC(ctx, "", m.Provider, "bad_nonce", m.Ip)
		return nil, errIDToken
	}
	var claims struct {
		Email         string          `json:"email"`
		EmailVerified json.RawMessage `json:"email_verified"`
		Name          string          `json:"name"`
		AZP           string          `json:"azp"`
	}
	if err := idt.Claims(&claims); err != nil {
		return nil, errIDToken
	}
	// With several audiences, the token must have been issued to us.
	if len(idt.Audience) > 1 && claims.AZP != c.oauth2.ClientID {
		s.log.WarnContext(ctx, "OIDC ID token refused", "provider", m.Provider, "reason", "several audiences and azp is not our client id")
		s.auditOIDC(ctx, "", m.Provider, "bad_id_token", m.Ip)
		return nil, errIDToken
	}
	// Some providers send "true" as a string.
	verified := string(claims.EmailVerified) == "true" || string(claims.EmailVerified) == `"true"`
	tokens, err := s.ExternalLogin(ctx, ExternalIdentity{Provider: m.Provider, Subject: idt.Subject, Email: claims.Email, EmailVerified: verified, Name: claims.Name}, m.Ip, m.UserAgent)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.TokensResponse{Tokens: tokens}), nil
}

// consumeState reads a state and deletes it, on condition that it is
// still the version read: of two callbacks with the same state, one wins.
func (s *Service) consumeState(ctx context.Context, state string) (*oauthStateJSON, error) {
	if len(state) < 16 || len(state) > 256 {
		return nil, errState
	}
	st := &oauthStateJSON{}
	t, err := s.get(ctx, stateID(state), st)
	if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) || (err == nil && t.Type != "OAuthState") {
		return nil, errState
	}
	if err != nil {
		return nil, s.internal(ctx, "oauth callback", err)
	}
	err = s.batch(ctx, &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Id: t.Id, IfVersion: t.Version}}})
	if apierr.Is(err, apierr.PreconditionFailed) || apierr.Is(err, apierr.NotFound) {
		return nil, errState // another callback spent it first
	}
	if err != nil {
		return nil, s.internal(ctx, "oauth callback", err)
	}
	return st, nil
}

// ExternalIdentity is who a provider says signed in.
type ExternalIdentity struct {
	Provider string
	// Subject is the provider's stable id for the user (the sub claim).
	Subject string
	Email   string
	// EmailVerified is the provider's word that the user controls Email.
	EmailVerified bool
	Name          string
}

// errRelink means another sign-in changed the same records meanwhile:
// look again.
var errRelink = errors.New("relink")

// ExternalLogin signs in a user whom a provider has authenticated and
// starts a session, as Login does. The user is the one linked to the
// provider's subject; else the one with the same email, only when the
// provider says the address is verified (the link is then recorded);
// else a new user (active, no password, no grants) when signup is open.
// It returns forbidden when signup is invite-only or the account is
// disabled, and conflict when an account has the email but the provider
// does not vouch for it.
//
// The caller must have verified the identity (OAuthCallback verifies an
// ID token); that is why this is a method and not an RPC.
func (s *Service) ExternalLogin(ctx context.Context, id ExternalIdentity, ip, userAgent string) (*authv1.Tokens, error) {
	if id.Provider == "" || id.Subject == "" || len(id.Subject) > 255 {
		return nil, apierr.New(apierr.Unauthenticated, "the provider's identity has no subject")
	}
	if checkName(id.Name) != nil {
		id.Name = ""
	}
	for range 3 {
		userID, u, err := s.externalUser(ctx, id, ip)
		if errors.Is(err, errRelink) {
			continue
		}
		if err != nil {
			return nil, s.internal(ctx, "external login", err)
		}
		tokens, err := s.startSession(ctx, userID, u, ip, userAgent)
		if err != nil {
			return nil, s.internal(ctx, "external login", err)
		}
		s.auditOIDC(ctx, userID, id.Provider, "ok", ip)
		return tokens, nil
	}
	return nil, apierr.New(apierr.Conflict, "the account changed during sign-in; try again")
}

// externalUser finds, links or creates the user of an external identity.
func (s *Service) externalUser(ctx context.Context, id ExternalIdentity, ip string) (string, *userJSON, error) {
	xid := externalID(id.Provider, id.Subject)
	link := &externalJSON{}
	var stale int64 // version of a link whose user was deleted
	lt, err := s.get(ctx, xid, link)
	switch {
	case err == nil:
		t, u, err := s.user(ctx, link.UserID)
		if err == nil {
			return s.admit(ctx, t, u, id, ip)
		}
		if !apierr.Is(err, apierr.NotFound) {
			return "", nil, err
		}
		stale = lt.Version
	case !apierr.Is(err, apierr.NotFound):
		return "", nil, err
	}
	linkOp := func(userID, email string) *dbv1.Op {
		data := externalJSON{Provider: id.Provider, Subject: id.Subject, UserID: userID, Email: email}
		if stale != 0 {
			return write(xid, "ExternalIdentity", data, dbv1.Condition_CONDITION_MUST_EXIST, stale, 0)
		}
		return write(xid, "ExternalIdentity", data, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0)
	}

	email, err := validEmail(id.Email)
	if err != nil {
		s.auditOIDC(ctx, "", id.Provider, "no_email", ip)
		return "", nil, apierr.New(apierr.Forbidden, "the provider shared no usable email address, which a new account needs; allow the email scope for this client")
	}
	var ref struct {
		UserID string `json:"userId"`
	}
	_, err = s.get(ctx, emailID(email), &ref)
	if err == nil {
		if !id.EmailVerified {
			s.auditOIDC(ctx, ref.UserID, id.Provider, "email_unverified", ip)
			return "", nil, apierr.New(apierr.Conflict, "an account with email %s exists, and %s does not say the address is verified, so it is not linked; sign in to that account another way", email, id.Provider)
		}
		t, u, err := s.user(ctx, ref.UserID)
		if err != nil {
			return "", nil, err
		}
		if u.Status == "disabled" {
			s.auditOIDC(ctx, t.Id, id.Provider, "disabled", ip)
			return "", nil, errDisabled
		}
		ops := []*dbv1.Op{linkOp(t.Id, email)}
		if u.Status == "invited" {
			// Proving the address through the provider accepts the invitation.
			u.Status = "active"
			ops = append(ops, write(t.Id, "User", u, dbv1.Condition_CONDITION_MUST_EXIST, t.Version, 0))
		}
		if err := s.batch(ctx, ops...); err != nil {
			if apierr.Is(err, apierr.PreconditionFailed) {
				return "", nil, errRelink
			}
			return "", nil, err
		}
		s.audit(ctx, "identity.linked", t.Id, xid, "verified_email", ip)
		return t.Id, u, nil
	}
	if !apierr.Is(err, apierr.NotFound) {
		return "", nil, err
	}
	if s.cfg.Signup != "open" {
		s.auditOIDC(ctx, "", id.Provider, "signup_closed", ip)
		return "", nil, apierr.New(apierr.Forbidden, "signup is invite-only: ask an admin to invite %s", email)
	}
	uid := thingsdb.NewPrefixedID("usr_")
	u := &userJSON{Email: email, Name: id.Name, Status: "active"}
	err = s.batch(ctx,
		write(emailID(email), "UserEmail", map[string]string{"userId": uid}, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0),
		write(uid, "User", u, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0),
		linkOp(uid, email))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return "", nil, errRelink
	}
	if err != nil {
		return "", nil, err
	}
	s.audit(ctx, "identity.linked", uid, xid, "signup", ip)
	return uid, u, nil
}

var errDisabled = apierr.New(apierr.Forbidden, "this account is disabled")

// admit lets a linked user in: not when disabled; an invited one becomes
// active.
func (s *Service) admit(ctx context.Context, t *dbv1.Thing, u *userJSON, id ExternalIdentity, ip string) (string, *userJSON, error) {
	switch u.Status {
	case "disabled":
		s.auditOIDC(ctx, t.Id, id.Provider, "disabled", ip)
		return "", nil, errDisabled
	case "invited":
		u.Status = "active"
		if err := s.batch(ctx, write(t.Id, "User", u, dbv1.Condition_CONDITION_MUST_EXIST, t.Version, 0)); err != nil {
			if apierr.Is(err, apierr.PreconditionFailed) {
				return "", nil, errRelink
			}
			return "", nil, err
		}
	}
	return t.Id, u, nil
}

// auditOIDC records a login through a provider, with the provider's name.
func (s *Service) auditOIDC(ctx context.Context, userID, provider, outcome, ip string) {
	ev := map[string]string{"action": "login", "actor": userID, "target": userID, "outcome": outcome, "provider": provider}
	if ip != "" {
		ev["ip"] = ip
	}
	exp := s.Now().Add(90 * 24 * time.Hour).UnixMicro()
	_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: thingsdb.NewPrefixedID("aud_"), Type: "AuditEvent", Data: mustJSON(ev), ExpiresAt: exp}}))
	if err != nil {
		s.log.WarnContext(ctx, "audit event not recorded", "action", "login", "err", err)
	}
}

// --- REST ---

func (h *rest) oauthStart(w http.ResponseWriter, r *http.Request) {
	if !h.throttle(w, r, "oauth:ip:"+reqid.ClientIP(r)) {
		return
	}
	res, err := h.api.OAuthStart(r.Context(), connect.NewRequest(&authv1.OAuthStartRequest{Provider: r.PathValue("provider")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, res.Msg.AuthorizationUrl, http.StatusFound)
}

var providerError = regexp.MustCompile(`^[a-z_]{1,64}$`)

func (h *rest) oauthCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if e := q.Get("error"); e != "" {
		if !providerError.MatchString(e) {
			e = "error"
		}
		h.fail(w, r, apierr.New(apierr.Unauthenticated, "the provider did not sign you in (%s); start the sign-in again", e))
		return
	}
	res, err := h.api.OAuthCallback(r.Context(), connect.NewRequest(&authv1.OAuthCallbackRequest{
		Provider: r.PathValue("provider"), Code: q.Get("code"), State: q.Get("state"), UserAgent: r.UserAgent(), Ip: reqid.ClientIP(r),
	}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, tokensJSON(res.Msg.Tokens))
}
