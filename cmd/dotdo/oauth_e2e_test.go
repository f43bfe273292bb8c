//go:build unix

package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/dotdo/dotdo/internal/testdb"
)

// publicURL is the --public-url of the OIDC tests: the provider sends the
// browser there, and the test delivers that request to the process under
// test (whose port is only known once it listens).
const publicURL = "http://dotdo.test"

// noFollow is a browser that stops at each redirect.
var noFollow = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// TestOIDCSignIn signs in through an OIDC provider (mockoidc, in this test
// process) with the built binary, all-in-one and split into db, auth and
// gateway processes, where the client secret lives only in the auth
// process.
func TestOIDCSignIn(t *testing.T) {
	t.Parallel()
	m, err := mockoidc.Run()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	oidcArgs := []string{"--oidc", "mock=" + m.Issuer() + "," + m.ClientID, "--public-url", publicURL, "--signup", "open"}
	secretEnv := "DOTDO_OIDC_MOCK_CLIENT_SECRET=" + m.ClientSecret

	for _, be := range testdb.Backends() {
		t.Run("all-in-one/"+be, func(t *testing.T) {
			b := newBackend(t, be)
			p := startProc(t, "dotdo("+be+")", append(b.args(), oidcArgs...), append(b.env(), secretEnv))
			signIn(t, m, p.url, "aio-"+be)
			if strings.Contains(p.logs.String(), m.ClientSecret) {
				t.Error("the process logged the provider's client secret")
			}
		})
		t.Run("split/"+be, func(t *testing.T) {
			db := startDB(t, newBackend(t, be))
			tok := "DOTDO_INTERNAL_TOKEN=" + internalToken
			authProc := startProc(t, "auth", append([]string{"--services", "auth", "--db-url", db.url, "--data-dir", t.TempDir()}, oidcArgs...), []string{tok, secretEnv})
			gw := startProc(t, "gateway", []string{"--services", "gateway", "--db-url", db.url, "--auth-url", authProc.url, "--public-url", publicURL}, []string{tok})
			signIn(t, m, gw.url, "split-"+be)
			for _, p := range []*proc{db, authProc, gw} {
				if strings.Contains(p.logs.String(), m.ClientSecret) {
					t.Errorf("%s logged the provider's client secret", p.name)
				}
			}
		})
	}

	t.Run("a secret is required", func(t *testing.T) {
		code, out := runBinary(t, append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, oidcArgs...), nil)
		if code != 1 || !strings.Contains(out, "DOTDO_OIDC_MOCK_CLIENT_SECRET") {
			t.Errorf("serve --oidc without the secret: exit %d\n%s\nwant exit 1 naming DOTDO_OIDC_MOCK_CLIENT_SECRET", code, out)
		}
	})
}

// signIn runs one sign-in against the dotdo at base and checks the tokens
// work, a spent state is refused and an unknown provider is not found.
func signIn(t *testing.T, m *mockoidc.MockOIDC, base, sub string) {
	t.Helper()
	m.QueueUser(&mockoidc.MockUser{Subject: sub, Email: sub + "@example.com", EmailVerified: true})
	res := browse(t, base+"/v1/auth/oauth/mock/start", http.StatusFound)
	if !strings.HasPrefix(res.location, m.AuthorizationEndpoint()+"?") || !strings.Contains(res.location, "code_challenge_method=S256") {
		t.Fatalf("start redirects to %q; want the provider's authorization endpoint with a PKCE S256 challenge", res.location)
	}
	res = browse(t, res.location, http.StatusFound)
	cb, err := url.Parse(res.location)
	if err != nil || !strings.HasPrefix(res.location, publicURL+"/v1/auth/oauth/mock/callback?") {
		t.Fatalf("the provider redirects to %q; want %s/v1/auth/oauth/mock/callback", res.location, publicURL)
	}
	res = browse(t, base+cb.RequestURI(), http.StatusOK)
	var tk struct {
		AccessToken string `json:"accessToken"`
		TokenType   string `json:"tokenType"`
	}
	if err := json.Unmarshal(res.body, &tk); err != nil || tk.TokenType != "Bearer" || tk.AccessToken == "" {
		t.Fatalf("callback body %s; want tokens", res.body)
	}
	me := do(t, "GET", base+"/v1/auth/me", nil, "Authorization", "Bearer "+tk.AccessToken)
	if email, _ := lookup(me.json(t), "identity.email"); me.status != 200 || email != sub+"@example.com" {
		t.Errorf("GET /v1/auth/me with the access token = %d %s; want 200 for %s@example.com", me.status, me.body, sub)
	}
	if r := browse(t, base+cb.RequestURI(), http.StatusBadRequest); !strings.Contains(string(r.body), `"invalid"`) {
		t.Errorf("spent state: %s; want code invalid", r.body)
	}
	browse(t, base+"/v1/auth/oauth/nope/start", http.StatusNotFound)
}

type browseReply struct {
	location string
	body     []byte
}

// browse sends a GET without credentials and checks the status.
func browse(t *testing.T, u string, want int) browseReply {
	t.Helper()
	res, err := noFollow.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode != want {
		t.Fatalf("GET %s = %d %s; want %d", u, res.StatusCode, b, want)
	}
	return browseReply{location: res.Header.Get("Location"), body: b}
}
