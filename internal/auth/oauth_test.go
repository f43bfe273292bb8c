package auth_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"
	"github.com/oauth2-proxy/mockoidc"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/gateway"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/rpc"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The OIDC tests run the whole flow over real HTTP: our routes on an
// httptest server over a real auth service and db, and
// github.com/oauth2-proxy/mockoidc as the provider, which checks the
// client secret and the PKCE verifier and signs RS256 ID tokens.

// oidcEnv is one provider, one dotdo server and a browser.
type oidcEnv struct {
	t     *testing.T
	svc   *auth.Service
	db    *thingsdb.Service
	clock *clock
	mock  *mockoidc.MockOIDC
	srv   *httptest.Server
	logs  *bytes.Buffer

	mu        sync.Mutex
	tokenReqs []url.Values // what the provider's token endpoint received
	// tamper, when set, rewrites the ID token the provider returns.
	tamper func(idToken string) string
}

// startMock runs mockoidc on ln, recording token requests in e. The
// client credentials are random unless given.
func (e *oidcEnv) startMock(ln net.Listener, client ...string) *mockoidc.MockOIDC {
	e.t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	if len(client) == 2 {
		m.ClientID, m.ClientSecret = client[0], client[1]
	}
	m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == mockoidc.TokenEndpoint {
				b, _ := io.ReadAll(r.Body)
				r.Body = io.NopCloser(bytes.NewReader(b))
				v, _ := url.ParseQuery(string(b))
				e.mu.Lock()
				e.tokenReqs = append(e.tokenReqs, v)
				tamper := e.tamper
				e.mu.Unlock()
				if tamper != nil {
					rec := httptest.NewRecorder()
					next.ServeHTTP(rec, r)
					var body map[string]any
					if json.Unmarshal(rec.Body.Bytes(), &body) == nil {
						if tok, ok := body["id_token"].(string); ok {
							body["id_token"] = tamper(tok)
						}
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(rec.Code)
					json.NewEncoder(w).Encode(body)
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	})
	if err := m.Start(ln, nil); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { m.Shutdown() })
	return m
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// newOIDCEnv starts a provider and a dotdo server on the backend, with
// providers "mock" and "other" (the same provider under a second name).
func newOIDCEnv(t *testing.T, backend, signup string) *oidcEnv {
	t.Helper()
	e := &oidcEnv{t: t, logs: &bytes.Buffer{}}
	e.mock = e.startMock(listen(t))
	e.build(backend, signup, e.mock.Issuer())
	return e
}

// build makes the db, the auth service and the server, with the two
// providers at issuer.
func (e *oidcEnv) build(backend, signup, issuer string) {
	t := e.t
	t.Helper()
	log := slog.New(slog.NewJSONHandler(&lockedWriter{w: e.logs}, nil))
	db, err := thingsdb.New(testdb.Open(t, backend), log)
	if err != nil {
		t.Fatal(err)
	}
	e.clock = &clock{t: time.Now().UTC().Truncate(time.Second)}
	db.Now = e.clock.Now
	e.db = db
	mux := http.NewServeMux()
	e.srv = httptest.NewServer(mux)
	t.Cleanup(e.srv.Close)
	clientID, secret := "dotdo-test-client", "dotdo-test-secret"
	if e.mock != nil {
		clientID, secret = e.mock.ClientID, e.mock.ClientSecret
	}
	providers := []auth.OIDCProvider{
		{Name: "mock", Issuer: issuer, ClientID: clientID, ClientSecret: secret},
		{Name: "other", Issuer: issuer, ClientID: clientID, ClientSecret: secret},
	}
	e.svc, err = auth.New(db, auth.Config{
		Issuer: e.srv.URL, SecretKey: bytes.Repeat([]byte{9}, 32), Signup: signup,
		Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1},
		OIDC:     auth.OIDCConfig{Providers: providers},
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Now = e.clock.Now
	if err := e.svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	auth.Routes(mux, e.svc, auth.RouteOptions{Can: e.svc.Can})
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// eachOIDC runs fn on every backend with a fresh provider and server.
func eachOIDC(t *testing.T, signup string, fn func(t *testing.T, e *oidcEnv)) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, newOIDCEnv(t, name, signup))
		})
	}
}

// browser follows no redirects, so that each step can be looked at.
var browser = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

type reply struct {
	status   int
	location string
	body     []byte
}

func get(t *testing.T, u string) reply {
	t.Helper()
	res, err := browser.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return reply{status: res.StatusCode, location: res.Header.Get("Location"), body: b}
}

// start begins a sign-in and returns the provider's authorization URL.
func (e *oidcEnv) start(provider string) *url.URL {
	e.t.Helper()
	r := get(e.t, e.srv.URL+"/v1/auth/oauth/"+provider+"/start")
	if r.status != http.StatusFound {
		e.t.Fatalf("GET /v1/auth/oauth/%s/start = %d %s; want 302", provider, r.status, r.body)
	}
	u, err := url.Parse(r.location)
	if err != nil || !strings.HasPrefix(r.location, e.mock.AuthorizationEndpoint()) {
		e.t.Fatalf("start redirects to %q; want the provider's authorization endpoint %s", r.location, e.mock.AuthorizationEndpoint())
	}
	return u
}

// authorize signs in at the provider as user and returns the callback URL
// the provider sends the browser to.
func (e *oidcEnv) authorize(authURL *url.URL, user *mockoidc.MockUser) *url.URL {
	e.t.Helper()
	if user != nil {
		e.mock.QueueUser(user)
	}
	r := get(e.t, authURL.String())
	if r.status != http.StatusFound {
		e.t.Fatalf("provider authorize = %d %s; want 302", r.status, r.body)
	}
	u, err := url.Parse(r.location)
	if err != nil || !strings.HasPrefix(r.location, e.srv.URL+"/v1/auth/oauth/") {
		e.t.Fatalf("provider redirects to %q; want our callback", r.location)
	}
	return u
}

// tokens is the JSON of a successful login.
type tokens struct {
	AccessToken  string `json:"accessToken"`
	RefreshToken string `json:"refreshToken"`
	TokenType    string `json:"tokenType"`
	ExpiresIn    int64  `json:"expiresIn"`
	SessionID    string `json:"sessionId"`
}

// login runs the whole flow with a browser that follows redirects, as a
// user would, and returns the tokens.
func (e *oidcEnv) login(user *mockoidc.MockUser) tokens {
	e.t.Helper()
	e.mock.QueueUser(user)
	res, err := http.Get(e.srv.URL + "/v1/auth/oauth/mock/start")
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || !strings.HasPrefix(res.Request.URL.String(), e.srv.URL+"/v1/auth/oauth/mock/callback?") {
		e.t.Fatalf("sign-in as %s ended at %s with %d %s; want 200 at our callback", user.Subject, res.Request.URL, res.StatusCode, b)
	}
	var tk tokens
	if err := json.Unmarshal(b, &tk); err != nil {
		e.t.Fatalf("callback body %s: %v", b, err)
	}
	return tk
}

// identity validates an access token.
func (e *oidcEnv) identity(access string) *authv1.Identity {
	e.t.Helper()
	res, err := e.svc.ValidateToken(ctx, connect.NewRequest(&authv1.ValidateTokenRequest{Token: access}))
	if err != nil {
		e.t.Fatalf("ValidateToken(access token from the callback) = %v; want an identity", err)
	}
	return res.Msg.Identity
}

// count returns how many things of a type the auth namespace holds.
func (e *oidcEnv) count(typ string) int {
	e.t.Helper()
	res, err := e.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: auth.Namespace, Type: typ, Limit: 1000}))
	if err != nil {
		e.t.Fatal(err)
	}
	return len(res.Msg.Items)
}

// audit returns the audit events with the given action.
func (e *oidcEnv) audit(action string) []map[string]any {
	e.t.Helper()
	res, err := e.svc.ListAudit(ctx, connect.NewRequest(&authv1.ListAuditRequest{Limit: 1000}))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, b := range res.Msg.Events {
		var ev map[string]any
		json.Unmarshal(b, &ev)
		if ev["action"] == action {
			out = append(out, ev)
		}
	}
	return out
}

// errorCode returns the error code of a JSON error reply.
func errorCode(b []byte) string {
	var v struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	json.Unmarshal(b, &v)
	return v.Error.Code
}

func user(sub, email string, verified bool) *mockoidc.MockUser {
	return &mockoidc.MockUser{Subject: sub, Email: email, EmailVerified: verified, PreferredUsername: sub}
}

func TestOIDCLogin(t *testing.T) {
	eachOIDC(t, "open", func(t *testing.T, e *oidcEnv) {
		// Each step, looked at.
		authURL := e.start("mock")
		q := authURL.Query()
		for k, want := range map[string]string{
			"response_type": "code", "client_id": e.mock.ClientID, "code_challenge_method": "S256",
			"scope": "openid email profile", "redirect_uri": e.srv.URL + "/v1/auth/oauth/mock/callback",
		} {
			if got := q.Get(k); got != want {
				t.Errorf("authorization URL %s = %q; want %q", k, got, want)
			}
		}
		for _, k := range []string{"state", "nonce", "code_challenge"} {
			if len(q.Get(k)) < 43 {
				t.Errorf("authorization URL %s = %q; want at least 256 random bits", k, q.Get(k))
			}
		}
		if n := e.count("OAuthState"); n != 1 {
			t.Errorf("after start, %d OAuthState things; want 1", n)
		}
		cb := e.authorize(authURL, user("ada-sub", "Ada@Example.com", true))
		if cb.Path != "/v1/auth/oauth/mock/callback" || cb.Query().Get("state") != q.Get("state") {
			t.Fatalf("callback URL %s; want our mock callback with the state we sent", cb)
		}
		r := get(t, cb.String())
		if r.status != 200 {
			t.Fatalf("GET callback = %d %s; want 200", r.status, r.body)
		}
		var tk tokens
		if err := json.Unmarshal(r.body, &tk); err != nil || tk.TokenType != "Bearer" || tk.ExpiresIn != 3600 || tk.RefreshToken == "" || tk.SessionID == "" {
			t.Fatalf("callback body %s; want the token shape of POST /v1/auth/login", r.body)
		}
		if n := e.count("OAuthState"); n != 0 {
			t.Errorf("after the callback, %d OAuthState things; want 0 (single use)", n)
		}

		// PKCE: the token request carried a verifier whose S256 is the
		// challenge, and the client secret.
		e.mu.Lock()
		treq := e.tokenReqs[len(e.tokenReqs)-1]
		e.mu.Unlock()
		sum := sha256.Sum256([]byte(treq.Get("code_verifier")))
		if got := base64.RawURLEncoding.EncodeToString(sum[:]); treq.Get("code_verifier") == "" || got != q.Get("code_challenge") {
			t.Errorf("token request code_verifier %q hashes to %q; want the challenge %q", treq.Get("code_verifier"), got, q.Get("code_challenge"))
		}
		if treq.Get("code") != cb.Query().Get("code") || treq.Get("redirect_uri") != q.Get("redirect_uri") {
			t.Errorf("token request code %q redirect_uri %q; want %q and %q", treq.Get("code"), treq.Get("redirect_uri"), cb.Query().Get("code"), q.Get("redirect_uri"))
		}

		// The tokens work: the access token validates, the refresh token rotates.
		id := e.identity(tk.AccessToken)
		if id.Email != "ada@example.com" || id.Kind != "user" || id.SessionId != tk.SessionID || len(id.Grants) != 0 {
			t.Errorf("identity = %v; want user ada@example.com with no grants in session %s", id, tk.SessionID)
		}
		if _, err := e.svc.Refresh(ctx, connect.NewRequest(&authv1.RefreshRequest{RefreshToken: tk.RefreshToken})); err != nil {
			t.Errorf("Refresh(refresh token from the callback) = %v; want new tokens", err)
		}
		u, err := e.svc.GetUser(ctx, connect.NewRequest(&authv1.GetUserRequest{Id: id.Subject}))
		if err != nil {
			t.Fatal(err)
		}
		if u.Msg.User.Status != "active" || u.Msg.User.HasPassword || len(u.Msg.User.Grants) != 0 {
			t.Errorf("new user = %v; want active, without password or grants", u.Msg.User)
		}
		// No password, so no password login.
		if _, err := e.svc.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: ""})); code(err) != "unauthenticated" {
			t.Errorf("password login of an SSO-only user = %v; want unauthenticated", err)
		}

		// Signing in again with the same subject reaches the same user,
		// even when the provider now reports another address.
		tk2 := e.login(user("ada-sub", "ada.lovelace@example.org", true))
		if id2 := e.identity(tk2.AccessToken); id2.Subject != id.Subject || tk2.SessionID == tk.SessionID {
			t.Errorf("second sign-in: user %s session %s; want user %s in a new session", id2.Subject, tk2.SessionID, id.Subject)
		}
		if n := e.count("User"); n != 1 {
			t.Errorf("%d users; want 1", n)
		}
		ok := 0
		for _, ev := range e.audit("login") {
			if ev["provider"] == "mock" && ev["outcome"] == "ok" && ev["actor"] == id.Subject {
				ok++
			}
		}
		if ok != 2 {
			t.Errorf("audit has %d successful mock logins for %s; want 2: %v", ok, id.Subject, e.audit("login"))
		}
		// Nothing secret in the log.
		logs := e.logs.String()
		for _, secret := range []string{e.mock.ClientSecret, tk.AccessToken, tk.RefreshToken, treq.Get("code_verifier"), q.Get("state"), q.Get("nonce"), cb.Query().Get("code")} {
			if strings.Contains(logs, secret) {
				t.Errorf("the log contains a secret %q", secret)
			}
		}
	})
}

func TestOIDCBadState(t *testing.T) {
	eachOIDC(t, "open", func(t *testing.T, e *oidcEnv) {
		// refused checks a callback answers 400 invalid and creates nothing.
		refused := func(name, u string) {
			t.Helper()
			users, sessions := e.count("User"), e.count("Session")
			r := get(t, u)
			if r.status != 400 || errorCode(r.body) != "invalid" {
				t.Errorf("%s: callback = %d %s; want 400 invalid", name, r.status, r.body)
			}
			if e.count("User") != users || e.count("Session") != sessions {
				t.Errorf("%s: a user or session was created", name)
			}
		}
		cb := e.srv.URL + "/v1/auth/oauth/mock/callback"
		refused("unknown state", cb+"?code=abc&state="+strings.Repeat("A", 43))
		refused("no state", cb+"?code=abc")
		refused("no code", cb+"?state="+e.start("mock").Query().Get("state"))

		// Reused: the same callback twice.
		u := e.authorize(e.start("mock"), user("s1", "s1@example.com", true))
		if r := get(t, u.String()); r.status != 200 {
			t.Fatalf("first callback = %d %s; want 200", r.status, r.body)
		}
		refused("reused state", u.String())

		// Another provider's state: refused, and spent.
		u = e.authorize(e.start("mock"), user("s2", "s2@example.com", true))
		other := *u
		other.Path = "/v1/auth/oauth/other/callback"
		refused("state of another provider", other.String())
		refused("state presented to another provider, then to its own", u.String())

		// The same state spent by two callbacks at once: one wins.
		u = e.authorize(e.start("mock"), user("s4", "s4@example.com", true))
		var wg sync.WaitGroup
		statuses := make([]int, 4)
		for i := range statuses {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := browser.Get(u.String())
				if err == nil {
					statuses[i] = res.StatusCode
					res.Body.Close()
				}
			}()
		}
		wg.Wait()
		wins := 0
		for _, s := range statuses {
			if s == 200 {
				wins++
			} else if s != 400 {
				t.Errorf("concurrent callback = %d; want 200 or 400", s)
			}
		}
		if wins != 1 {
			t.Errorf("%d of 4 concurrent callbacks with one state succeeded; want 1 (%v)", wins, statuses)
		}

		// Expired: 10 minutes to come back.
		u = e.authorize(e.start("mock"), user("s3", "s3@example.com", true))
		e.clock.Advance(auth.StateTTL + time.Second)
		refused("expired state", u.String())

		if n := len(e.audit("login")); n == 0 {
			t.Error("no login audit events")
		}
		bad := 0
		for _, ev := range e.audit("login") {
			if ev["outcome"] == "bad_state" && ev["provider"] != "" {
				bad++
			}
		}
		if bad < 4 {
			t.Errorf("%d bad_state audit events; want at least 4", bad)
		}
	})
}

func TestOIDCBadNonce(t *testing.T) {
	eachOIDC(t, "open", func(t *testing.T, e *oidcEnv) {
		// refused checks a callback answers 401 and starts no session.
		refused := func(name string, u *url.URL) {
			t.Helper()
			r := get(t, u.String())
			if r.status != 401 || errorCode(r.body) != "unauthenticated" {
				t.Errorf("%s: callback = %d %s; want 401 unauthenticated", name, r.status, r.body)
			}
			if n := e.count("Session"); n != 0 {
				t.Errorf("%s: %d sessions; want none", name, n)
			}
			if n := e.count("User"); n != 0 {
				t.Errorf("%s: %d users; want none", name, n)
			}
		}

		// The provider returns an ID token for our state but with another
		// sign-in's nonce (a replayed or injected token).
		a, b := e.start("mock"), e.start("mock")
		q := b.Query()
		q.Set("nonce", a.Query().Get("nonce"))
		b.RawQuery = q.Encode()
		refused("ID token with another sign-in's nonce", e.authorize(b, user("n1", "n1@example.com", true)))
		found := false
		for _, ev := range e.audit("login") {
			found = found || ev["outcome"] == "bad_nonce"
		}
		if !found {
			t.Errorf("no bad_nonce audit event: %v", e.audit("login"))
		}

		// The code of flow A delivered with the state of flow B: its ID
		// token carries nonce A, and its PKCE challenge is A's.
		a, b = e.start("mock"), e.start("mock")
		codeA := e.authorize(a, user("n2", "n2@example.com", true)).Query().Get("code")
		cbB := e.authorize(b, user("n3", "n3@example.com", true))
		q = cbB.Query()
		q.Set("code", codeA)
		cbB.RawQuery = q.Encode()
		refused("code of flow A with the state of flow B", cbB)

		// An ID token without a nonce is refused too.
		c := e.start("mock")
		q = c.Query()
		q.Del("nonce")
		c.RawQuery = q.Encode()
		refused("ID token without a nonce", e.authorize(c, user("n4", "n4@example.com", true)))

		// The provider reporting an error.
		u, _ := url.Parse(e.srv.URL + "/v1/auth/oauth/mock/callback?error=access_denied&state=x")
		refused("provider error", u)
	})
}

// TestOIDCBadIDToken has the provider return ID tokens that must not be
// believed; each is refused with 401 and nothing is created.
func TestOIDCBadIDToken(t *testing.T) {
	eachOIDC(t, "open", func(t *testing.T, e *oidcEnv) {
		other, err := mockoidc.RandomKeypair(2048) // NewKeypair(nil) is the provider's own default key
		if err != nil {
			t.Fatal(err)
		}
		// resign changes the claims and signs with kp (the provider's own
		// key unless told otherwise).
		resign := func(kp *mockoidc.Keypair, change func(jwt.MapClaims)) func(string) string {
			return func(tok string) string {
				c := jwt.MapClaims{}
				if _, _, err := jwt.NewParser().ParseUnverified(tok, c); err != nil {
					t.Errorf("provider's ID token: %v", err)
				}
				change(c)
				if kp == nil {
					kp = e.mock.Keypair
				}
				out, err := kp.SignJWT(c)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}
		payload := func(change func(jwt.MapClaims)) func(string) string {
			return func(tok string) string {
				parts := strings.Split(tok, ".")
				b, _ := base64.RawURLEncoding.DecodeString(parts[1])
				c := jwt.MapClaims{}
				json.Unmarshal(b, &c)
				change(c)
				b, _ = json.Marshal(c)
				parts[1] = base64.RawURLEncoding.EncodeToString(b)
				return strings.Join(parts, ".")
			}
		}
		now := time.Now()
		for _, tc := range []struct {
			name   string
			tamper func(string) string
		}{
			{"tampered payload", payload(func(c jwt.MapClaims) { c["sub"] = "someone-else" })},
			{"alg none", func(tok string) string {
				parts := strings.Split(tok, ".")
				return base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
			}},
			{"signed by another key", resign(other, func(jwt.MapClaims) {})},
			{"expired", resign(nil, func(c jwt.MapClaims) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-time.Hour).Unix(), now.Add(-time.Hour).Unix(), now.Add(-time.Minute).Unix()
			})},
			{"not yet valid", resign(nil, func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })},
			{"wrong issuer", resign(nil, func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })},
			{"wrong audience", resign(nil, func(c jwt.MapClaims) { c["aud"] = []string{"another-client"} })},
			{"several audiences, issued to another", resign(nil, func(c jwt.MapClaims) {
				c["aud"], c["azp"] = []string{e.mock.ClientID, "another-client"}, "another-client"
			})},
			{"no ID token", func(string) string { return "" }},
		} {
			e.mu.Lock()
			e.tamper = tc.tamper
			e.mu.Unlock()
			r := get(t, e.authorize(e.start("mock"), user("bad-"+tc.name, "bad@example.com", true)).String())
			if r.status != 401 || errorCode(r.body) != "unauthenticated" {
				t.Errorf("%s: callback = %d %s; want 401 unauthenticated", tc.name, r.status, r.body)
			}
		}
		if e.count("User") != 0 || e.count("Session") != 0 || e.count("ExternalIdentity") != 0 {
			t.Errorf("users %d, sessions %d, identities %d; want none", e.count("User"), e.count("Session"), e.count("ExternalIdentity"))
		}

		// Several audiences are fine when the token was issued to us.
		e.mu.Lock()
		e.tamper = resign(nil, func(c jwt.MapClaims) {
			c["aud"], c["azp"] = []string{e.mock.ClientID, "another-client"}, e.mock.ClientID
		})
		e.mu.Unlock()
		if id := e.identity(e.login(user("azp-ok", "azp@example.com", true)).AccessToken); id.Email != "azp@example.com" {
			t.Errorf("identity %v; want azp@example.com", id)
		}
	})
}

func TestOIDCLinking(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			t.Run("verified email links the existing user", func(t *testing.T) {
				t.Parallel()
				e := newOIDCEnv(t, be, "invite-only")
				const pw = "correct horse battery"
				u, err := e.svc.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "grace@example.com", Password: pw, Grants: grants("acme", "user")}))
				if err != nil {
					t.Fatal(err)
				}
				tk := e.login(user("grace-sub", "Grace@Example.com", true))
				id := e.identity(tk.AccessToken)
				if id.Subject != u.Msg.User.Id || strings.Join(id.Grants["acme"].GetRoles(), ",") != "user" {
					t.Errorf("identity = %v; want the existing user %s with her grants", id, u.Msg.User.Id)
				}
				if n := e.count("User"); n != 1 {
					t.Errorf("%d users; want 1", n)
				}
				if n := e.count("ExternalIdentity"); n != 1 {
					t.Errorf("%d ExternalIdentity things; want 1", n)
				}
				if evs := e.audit("identity.linked"); len(evs) != 1 || evs[0]["outcome"] != "verified_email" || evs[0]["actor"] != u.Msg.User.Id {
					t.Errorf("identity.linked audit = %v; want one, verified_email, for %s", evs, u.Msg.User.Id)
				}
				// Her password still works, and the link holds by subject
				// after the provider's address changes.
				if _, err := e.svc.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "grace@example.com", Password: pw})); err != nil {
					t.Errorf("password login after linking = %v", err)
				}
				if id2 := e.identity(e.login(user("grace-sub", "grace@elsewhere.example", false)).AccessToken); id2.Subject != u.Msg.User.Id {
					t.Errorf("sign-in by linked subject reached %s; want %s", id2.Subject, u.Msg.User.Id)
				}
			})

			t.Run("unverified email does not link", func(t *testing.T) {
				t.Parallel()
				e := newOIDCEnv(t, be, "open")
				u, err := e.svc.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "grace@example.com", Password: "correct horse battery", Grants: grants("*", "admin")}))
				if err != nil {
					t.Fatal(err)
				}
				for i := range 2 { // a second try is refused too: nothing was linked
					cb := e.authorize(e.start("mock"), user("mallory", "grace@example.com", false))
					r := get(t, cb.String())
					if r.status != 409 || errorCode(r.body) != "conflict" {
						t.Errorf("try %d: unverified email of an existing user: callback = %d %s; want 409 conflict", i, r.status, r.body)
					}
				}
				if n := e.count("ExternalIdentity"); n != 0 {
					t.Errorf("%d ExternalIdentity things; want none", n)
				}
				if n := e.count("Session"); n != 0 {
					t.Errorf("%d sessions; want none", n)
				}
				// A new address that is not verified makes a new user when
				// signup is open, never the existing one.
				tk := e.login(user("newbie", "newbie@example.com", false))
				if id := e.identity(tk.AccessToken); id.Subject == u.Msg.User.Id || id.Email != "newbie@example.com" || len(id.Grants) != 0 {
					t.Errorf("identity = %v; want a new user without grants", id)
				}
				if n := e.count("User"); n != 2 {
					t.Errorf("%d users; want 2", n)
				}
			})

			t.Run("invite-only refuses strangers", func(t *testing.T) {
				t.Parallel()
				e := newOIDCEnv(t, be, "invite-only")
				for _, tc := range []struct {
					name  string
					user  *mockoidc.MockUser
					code  int
					error string
				}{
					{"unverified", user("x1", "x1@example.com", false), 403, "forbidden"},
					{"verified", user("x2", "x2@example.com", true), 403, "forbidden"},
					{"no email", &mockoidc.MockUser{Subject: "x3"}, 403, "forbidden"},
				} {
					r := get(t, e.authorize(e.start("mock"), tc.user).String())
					if r.status != tc.code || errorCode(r.body) != tc.error {
						t.Errorf("%s: callback = %d %s; want %d %s", tc.name, r.status, r.body, tc.code, tc.error)
					}
				}
				if e.count("User") != 0 || e.count("Session") != 0 || e.count("ExternalIdentity") != 0 {
					t.Errorf("users %d, sessions %d, identities %d; want none", e.count("User"), e.count("Session"), e.count("ExternalIdentity"))
				}
			})

			t.Run("invited user accepts by verified email; disabled user is refused", func(t *testing.T) {
				t.Parallel()
				e := newOIDCEnv(t, be, "invite-only")
				inv, err := e.svc.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "invitee@example.com", Invite: true}))
				if err != nil {
					t.Fatal(err)
				}
				if id := e.identity(e.login(user("inv-sub", "invitee@example.com", true)).AccessToken); id.Subject != inv.Msg.User.Id {
					t.Errorf("invitee signed in as %s; want %s", id.Subject, inv.Msg.User.Id)
				}
				got, _ := e.svc.GetUser(ctx, connect.NewRequest(&authv1.GetUserRequest{Id: inv.Msg.User.Id}))
				if got.Msg.User.Status != "active" {
					t.Errorf("invitee status %q after signing in; want active", got.Msg.User.Status)
				}
				dis := "disabled"
				if _, err := e.svc.UpdateUser(ctx, connect.NewRequest(&authv1.UpdateUserRequest{Id: inv.Msg.User.Id, Status: &dis})); err != nil {
					t.Fatal(err)
				}
				sessions, links := e.count("Session"), e.count("ExternalIdentity")
				for _, tc := range []struct{ name, sub string }{
					{"by subject", "inv-sub"},
					{"by verified email, not yet linked", "inv-other-sub"},
				} {
					r := get(t, e.authorize(e.start("mock"), user(tc.sub, "invitee@example.com", true)).String())
					if r.status != 403 || errorCode(r.body) != "forbidden" {
						t.Errorf("disabled user %s: callback = %d %s; want 403 forbidden", tc.name, r.status, r.body)
					}
				}
				if e.count("Session") != sessions || e.count("ExternalIdentity") != links {
					t.Errorf("disabled user: sessions %d -> %d, links %d -> %d; want no change", sessions, e.count("Session"), links, e.count("ExternalIdentity"))
				}
			})

			t.Run("deleted user's link is replaced", func(t *testing.T) {
				t.Parallel()
				e := newOIDCEnv(t, be, "open")
				first := e.identity(e.login(user("del-sub", "del@example.com", true)).AccessToken)
				if _, err := e.svc.DeleteUser(ctx, connect.NewRequest(&authv1.DeleteUserRequest{Id: first.Subject})); err != nil {
					t.Fatal(err)
				}
				second := e.identity(e.login(user("del-sub", "del@example.com", true)).AccessToken)
				if second.Subject == first.Subject {
					t.Errorf("sign-in after deletion reached the deleted user %s", first.Subject)
				}
				if n := e.count("ExternalIdentity"); n != 1 {
					t.Errorf("%d ExternalIdentity things; want 1", n)
				}
			})
		})
	}
}

func TestOIDCProviders(t *testing.T) {
	t.Parallel()
	e := newOIDCEnv(t, thingsdb.SQLite, "open")
	for _, tc := range []struct{ path, code string }{
		{"/v1/auth/oauth/nope/start", "not_found"},
		{"/v1/auth/oauth/nope/callback?code=a&state=" + strings.Repeat("A", 43), "not_found"},
	} {
		if r := get(t, e.srv.URL+tc.path); errorCode(r.body) != tc.code {
			t.Errorf("GET %s = %d %s; want %s", tc.path, r.status, r.body, tc.code)
		}
	}
}

// TestOIDCDiscovery checks discovery is lazy: the service starts while
// the provider is down, answers 503, and works once the provider is up.
func TestOIDCDiscovery(t *testing.T) {
	t.Parallel()
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	e := &oidcEnv{t: t, logs: &bytes.Buffer{}}
	e.build(thingsdb.SQLite, "open", "http://"+addr+mockoidc.IssuerBase)

	r := get(t, e.srv.URL+"/v1/auth/oauth/mock/start")
	if r.status != 503 || errorCode(r.body) != "unavailable" || !strings.Contains(string(r.body), "mock") {
		t.Fatalf("start with the provider down = %d %s; want 503 unavailable naming the provider", r.status, r.body)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the provider's port was taken meanwhile: %v", err)
	}
	// The service was configured before the provider existed: give the
	// provider the credentials the service has.
	e.mock = e.startMock(ln, "dotdo-test-client", "dotdo-test-secret")

	// A failure is remembered for a few seconds.
	if r := get(t, e.srv.URL+"/v1/auth/oauth/mock/start"); r.status != 503 {
		t.Errorf("start right after a failed discovery = %d; want 503 (not asked again yet)", r.status)
	}
	e.clock.Advance(6 * time.Second)
	tk := e.login(user("late", "late@example.com", true))
	if id := e.identity(tk.AccessToken); id.Email != "late@example.com" {
		t.Errorf("identity %v; want late@example.com", id)
	}
}

// TestOIDCOverConnect runs the REST routes over a Connect client to the
// auth service, as the gateway does in split mode.
func TestOIDCOverConnect(t *testing.T) {
	t.Parallel()
	e := newOIDCEnv(t, thingsdb.SQLite, "open")
	const token = "internal-token-0123456789abcdef0123456789"
	// the listener of a split-mode auth process, as cmd/dotdo builds it
	path, h := authv1connect.NewAuthServiceHandler(e.svc, rpc.ServerOptions()...)
	listener := gateway.New(gateway.Config{Internal: true, InternalToken: token, MaxBodyBytes: 1 << 20},
		slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(), []gateway.Upstream{{Name: "auth", RPCPath: path, RPC: h}})
	authSrv := httptest.NewServer(listener)
	t.Cleanup(authSrv.Close)
	client := authv1connect.NewAuthServiceClient(http.DefaultClient, authSrv.URL, rpc.ClientOptions(token)...)

	gw := http.NewServeMux()
	auth.Routes(gw, client, auth.RouteOptions{Can: e.svc.Can})
	gwSrv := httptest.NewServer(gw)
	t.Cleanup(gwSrv.Close)

	// The provider redirects to the configured callback (e.srv); send
	// that callback to the gateway instead.
	r := get(t, gwSrv.URL+"/v1/auth/oauth/mock/start")
	authURL, _ := url.Parse(r.location)
	if r.status != 302 || authURL == nil {
		t.Fatalf("start through Connect = %d %s; want 302", r.status, r.body)
	}
	cb := e.authorize(authURL, user("rpc-sub", "rpc@example.com", true))
	r = get(t, gwSrv.URL+cb.RequestURI())
	if r.status != 200 {
		t.Fatalf("callback through Connect = %d %s; want 200", r.status, r.body)
	}
	var tk tokens
	json.Unmarshal(r.body, &tk)
	if id := e.identity(tk.AccessToken); id.Email != "rpc@example.com" {
		t.Errorf("identity %v; want rpc@example.com", id)
	}
	// Errors keep their codes across the RPC.
	if r := get(t, gwSrv.URL+cb.RequestURI()); r.status != 400 || errorCode(r.body) != "invalid" {
		t.Errorf("reused state through Connect = %d %s; want 400 invalid", r.status, r.body)
	}
	if r := get(t, gwSrv.URL+"/v1/auth/oauth/nope/start"); r.status != 404 {
		t.Errorf("unknown provider through Connect = %d %s; want 404", r.status, r.body)
	}
}

func TestParseOIDC(t *testing.T) {
	env := map[string]string{
		"DOTDO_OIDC_GOOGLE_CLIENT_SECRET":   "g-secret",
		"DOTDO_OIDC_WORKOS_CLIENT_SECRET":   "w-secret",
		"DOTDO_OIDC_MY_IDP_CLIENT_SECRET":   "m-secret",
		"DOTDO_OIDC_LOCALDEV_CLIENT_SECRET": "l-secret",
	}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		spec    string
		want    []auth.OIDCProvider
		wantErr string
	}{
		{spec: "", want: nil},
		{spec: "google=https://accounts.google.com,123.apps.googleusercontent.com", want: []auth.OIDCProvider{
			{Name: "google", Issuer: "https://accounts.google.com", ClientID: "123.apps.googleusercontent.com", ClientSecret: "g-secret"}}},
		{spec: "google=https://accounts.google.com,g1, my-idp=https://idp.example.com/realms/x,m1", want: []auth.OIDCProvider{
			{Name: "google", Issuer: "https://accounts.google.com", ClientID: "g1", ClientSecret: "g-secret"},
			{Name: "my-idp", Issuer: "https://idp.example.com/realms/x", ClientID: "m1", ClientSecret: "m-secret"}}},
		{spec: "workos=acme-42,client_01J", want: []auth.OIDCProvider{
			{Name: "workos", Issuer: "https://acme-42.authkit.app", ClientID: "client_01J", ClientSecret: "w-secret"}}},
		{spec: "workos=acme-42.authkit.app,client_01J", want: []auth.OIDCProvider{
			{Name: "workos", Issuer: "https://acme-42.authkit.app", ClientID: "client_01J", ClientSecret: "w-secret"}}},
		{spec: "workos=https://auth.example.com,client_01J", want: []auth.OIDCProvider{
			{Name: "workos", Issuer: "https://auth.example.com", ClientID: "client_01J", ClientSecret: "w-secret"}}},
		{spec: "localdev=http://127.0.0.1:5556/dex,dev", want: []auth.OIDCProvider{
			{Name: "localdev", Issuer: "http://127.0.0.1:5556/dex", ClientID: "dev", ClientSecret: "l-secret"}}},
		{spec: "google=https://accounts.google.com", wantErr: "pairs"},
		{spec: "okta=https://acme.okta.com,0oa1", wantErr: "DOTDO_OIDC_OKTA_CLIENT_SECRET"},
		{spec: "Google=https://accounts.google.com,g1", wantErr: "lowercase"},
		{spec: "google=http://accounts.google.com,g1", wantErr: "https"},
		{spec: "google=accounts.google.com,g1", wantErr: "issuer URL"},
		{spec: "google=https://accounts.google.com,", wantErr: "client id"},
		{spec: "google=https://accounts.google.com,g1,google=https://accounts.google.com,g2", wantErr: "twice"},
	} {
		got, err := auth.ParseOIDC(tc.spec, getenv)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseOIDC(%q) = %v, %v; want an error mentioning %q", tc.spec, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || len(got) != len(tc.want) {
			t.Errorf("ParseOIDC(%q) = %v, %v; want %v", tc.spec, got, err, tc.want)
			continue
		}
		for i := range got {
			if g, w := got[i], tc.want[i]; g.Name != w.Name || g.Issuer != w.Issuer || g.ClientID != w.ClientID || g.ClientSecret != w.ClientSecret {
				t.Errorf("ParseOIDC(%q)[%d] = %+v; want %+v", tc.spec, i, g, w)
			}
		}
	}
}
