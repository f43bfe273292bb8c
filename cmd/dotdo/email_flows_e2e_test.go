//go:build unix

package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/testdb"
)

var tokenRE = regexp.MustCompile(`token=(ft_[0-9A-Za-z]+)`)

// flowToken finds the newest email of a flow to addr in the _auth
// namespace and returns the token its link carries.
func flowToken(t *testing.T, base, addr, flow string) string {
	t.Helper()
	res := do(t, "GET", base+"/v1/emails?ns=_auth&to="+addr+"&tag=flow="+flow, nil)
	items, _ := res.json(t)["items"].([]any)
	if res.status != http.StatusOK || len(items) == 0 {
		t.Fatalf("no %s email to %s: %d %s", flow, addr, res.status, res.body)
	}
	id := items[0].(map[string]any)["id"].(string)
	v := do(t, "GET", base+"/v1/emails/"+id+"?ns=_auth", nil).json(t)
	if v["template"] != flow {
		t.Fatalf("email %s template %v; want %s", id, v["template"], flow)
	}
	m := tokenRE.FindStringSubmatch(v["text"].(string))
	if m == nil || !strings.Contains(v["html"].(string), m[1]) {
		t.Fatalf("no token link in the %s email: %v", flow, v["text"])
	}
	return m[1]
}

func countEmails(t *testing.T, base, addr string) int {
	t.Helper()
	res := do(t, "GET", base+"/v1/emails?ns=_auth&to="+addr, nil)
	return len(res.json(t)["items"].([]any))
}

func TestEmailAuthFlowsE2E(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			b := newBackend(t, be)
			p := startProc(t, "dotdo("+be+")", append(b.args(), "--email-app-name", "Acme", "--email-link-url", "https://app.acme.test"), b.env())
			base := p.url
			anon := []string{"Authorization", ""}
			post := func(path, body string, hdr ...string) *response { return do(t, "POST", base+path, body, hdr...) }

			// Invitation: an admin invites, the invitee accepts with a password
			// and is signed in; the link works once.
			res := post("/v1/auth/invites", `{"email":"new@x.test","name":"New","grants":{"acme":{"roles":["user"]}}}`)
			if res.status != http.StatusCreated || res.json(t)["status"] != "invited" {
				t.Fatalf("POST /v1/auth/invites = %d %s", res.status, res.body)
			}
			tok := flowToken(t, base, "new@x.test", "invite")
			v := do(t, "GET", base+"/v1/emails?ns=_auth&to=new@x.test", nil).json(t)["items"].([]any)[0].(map[string]any)
			if !strings.Contains(v["subject"].(string), "invited you to Acme") {
				t.Errorf("invite subject = %v", v["subject"])
			}
			res = post("/v1/auth/invites/accept", `{"token":"`+tok+`","password":"correct horse battery"}`, anon...)
			if res.status != http.StatusOK || res.json(t)["accessToken"] == nil {
				t.Fatalf("accept invite = %d %s", res.status, res.body)
			}
			access := res.json(t)["accessToken"].(string)
			if res := post("/v1/auth/invites/accept", `{"token":"`+tok+`","password":"another password 1"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("second accept = %d %s; want 401", res.status, res.body)
			}
			if res := do(t, "GET", base+"/v1/auth/email/verify", nil, "Authorization", "Bearer "+access); res.json(t)["verified"] != true {
				t.Errorf("accepting an invitation verifies the address: %s", res.body)
			}
			if res := post("/v1/auth/login", `{"email":"new@x.test","password":"correct horse battery"}`, anon...); res.status != http.StatusOK {
				t.Fatalf("login after accepting = %d %s", res.status, res.body)
			}

			// Verification of a user created with a password.
			if res := post("/v1/auth/users", `{"email":"v@x.test","password":"verify me please"}`); res.status != http.StatusCreated {
				t.Fatalf("create user = %d %s", res.status, res.body)
			}
			login := post("/v1/auth/login", `{"email":"v@x.test","password":"verify me please"}`, anon...).json(t)
			vAccess := login["accessToken"].(string)
			status := func() any {
				return do(t, "GET", base+"/v1/auth/email/verify", nil, "Authorization", "Bearer "+vAccess).json(t)["verified"]
			}
			if status() != false {
				t.Fatalf("a new user is not verified")
			}
			if res := post("/v1/auth/email/verify/send", "", "Authorization", "Bearer "+vAccess); res.status != http.StatusAccepted {
				t.Fatalf("send verification = %d %s", res.status, res.body)
			}
			if res := post("/v1/auth/email/verify", `{"token":"`+flowToken(t, base, "v@x.test", "email-verification")+`"}`, anon...); res.status != http.StatusOK {
				t.Fatalf("verify = %d %s", res.status, res.body)
			}
			if status() != true {
				t.Fatalf("not verified after the link")
			}

			// Password reset: the old password and the old sessions stop working.
			if res := post("/v1/auth/password/forgot", `{"email":"nobody@x.test"}`, anon...); res.status != http.StatusAccepted {
				t.Fatalf("forgot for an unknown address = %d; want 202 all the same", res.status)
			}
			if n := countEmails(t, base, "nobody@x.test"); n != 0 {
				t.Fatalf("an unknown address got %d emails", n)
			}
			if res := post("/v1/auth/password/forgot", `{"email":"v@x.test"}`, anon...); res.status != http.StatusAccepted {
				t.Fatalf("forgot = %d %s", res.status, res.body)
			}
			tok = flowToken(t, base, "v@x.test", "password-reset")
			if res := post("/v1/auth/password/reset", `{"token":"`+tok+`","password":"short"}`, anon...); res.status != http.StatusBadRequest {
				t.Fatalf("reset with a short password = %d; want 400", res.status)
			}
			if res := post("/v1/auth/password/reset", `{"token":"`+tok+`","password":"a brand new password"}`, anon...); res.status != http.StatusOK {
				t.Fatalf("reset = %d %s", res.status, res.body)
			}
			if res := post("/v1/auth/password/reset", `{"token":"`+tok+`","password":"yet another password"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("reset token reused = %d; want 401", res.status)
			}
			if res := post("/v1/auth/login", `{"email":"v@x.test","password":"verify me please"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("old password = %d; want 401", res.status)
			}
			if res := post("/v1/auth/refresh", `{"refreshToken":"`+login["refreshToken"].(string)+`"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("a session from before the reset = %d; want 401", res.status)
			}
			if res := post("/v1/auth/login", `{"email":"v@x.test","password":"a brand new password"}`, anon...); res.status != http.StatusOK {
				t.Fatalf("new password = %d %s", res.status, res.body)
			}

			// Magic link.
			if res := post("/v1/auth/magic-link", `{"email":"v@x.test"}`, anon...); res.status != http.StatusAccepted {
				t.Fatalf("magic link = %d %s", res.status, res.body)
			}
			tok = flowToken(t, base, "v@x.test", "magic-link")
			res = post("/v1/auth/magic-link/verify", `{"token":"`+tok+`"}`, anon...)
			if res.status != http.StatusOK || res.json(t)["accessToken"] == nil {
				t.Fatalf("magic-link verify = %d %s", res.status, res.body)
			}
			if me := do(t, "GET", base+"/v1/auth/me", nil, "Authorization", "Bearer "+res.json(t)["accessToken"].(string)); !strings.Contains(string(me.body), "v@x.test") {
				t.Fatalf("GET /v1/auth/me with the magic-link session = %s", me.body)
			}
			if res := post("/v1/auth/magic-link/verify", `{"token":"`+tok+`"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("magic link reused = %d; want 401", res.status)
			}
			// A token of one flow does not work in another; garbage is refused.
			post("/v1/auth/magic-link", `{"email":"v@x.test"}`, anon...)
			tok = flowToken(t, base, "v@x.test", "magic-link")
			if res := post("/v1/auth/password/reset", `{"token":"`+tok+`","password":"a brand new password 2"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("magic token used for a reset = %d; want 401", res.status)
			}
			if res := post("/v1/auth/magic-link/verify", `{"token":"ft_nope"}`, anon...); res.status != http.StatusUnauthorized {
				t.Fatalf("garbage token = %d; want 401", res.status)
			}
			// The links point at the application's pages.
			v = do(t, "GET", base+"/v1/emails?ns=_auth&to=v@x.test&tag=flow=magic-link", nil).json(t)["items"].([]any)[0].(map[string]any)
			full := do(t, "GET", base+"/v1/emails/"+v["id"].(string)+"?ns=_auth", nil).json(t)
			if !strings.Contains(full["text"].(string), "https://app.acme.test/magic-link?token=ft_") || full["from"] != "Acme <noreply@127.0.0.1>" {
				t.Fatalf("magic-link email from %v text %q", full["from"], full["text"])
			}
			// Nobody can flood an inbox: 5 emails per address in 15 minutes.
			limited := false
			for range 5 {
				res := post("/v1/auth/password/forgot", `{"email":"V@x.test"}`, anon...)
				if res.status == http.StatusTooManyRequests {
					limited = res.header.Get("Retry-After") != ""
					break
				}
			}
			if !limited {
				t.Fatalf("no 429 with Retry-After after 8 account emails to one address")
			}
			if strings.Contains(p.logs.String(), tok) {
				t.Fatalf("a flow token appears in the log")
			}
		})
	}
}
