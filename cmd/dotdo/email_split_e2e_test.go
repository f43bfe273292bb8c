//go:build unix

package main

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/testdb"
)

// TestEmailSplitE2E runs the email service in its own process (with db
// and queue) behind a gateway,auth process: the REST routes in the
// gateway call it over Connect, and the auth flows send through it.
func TestEmailSplitE2E(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			b := newBackend(t, be)
			token := []string{"DOTDO_INTERNAL_TOKEN=" + internalToken}
			svc := startProc(t, "db,queue,email", append([]string{"--services", "db,queue,email"}, b.args()...), append(b.env(), token...))
			gw := startProc(t, "gateway,auth", []string{"--services", "gateway,auth", "--db-url", svc.url, "--email-url", svc.url, "--data-dir", t.TempDir()}, token)
			base := gw.url

			res := do(t, "GET", base+"/health", nil)
			if !strings.Contains(string(res.body), `"email":{"status":"ok"}`) {
				t.Fatalf("gateway health = %s; want email ok", res.body)
			}
			testKey := createKey(t, base, `{"name":"test","test":true,"role":"user"}`)
			res = do(t, "POST", base+"/v1/emails", `{"from":"a@acme.test","to":"ann@x.test","template":"welcome","data":{"name":"Ann","appName":"Acme","loginUrl":"https://acme.test"}}`, "Authorization", "Bearer "+testKey)
			if res.status != http.StatusAccepted {
				t.Fatalf("POST /v1/emails through the split gateway = %d %s", res.status, res.body)
			}
			v := waitEmail(t, base, res.json(t)["id"].(string), "sent")
			if v["test"] != true || v["provider"] != "outbox" {
				t.Fatalf("a test key's email through the split gateway = %v; want the outbox", v)
			}
			// A 3 MB attachment crosses the Connect hop.
			pdf := base64.StdEncoding.EncodeToString(make([]byte, 3<<20))
			res = do(t, "POST", base+"/v1/emails", `{"from":"a@acme.test","to":"a@x.test","subject":"big","text":"t","attachments":[{"filename":"a.pdf","content":"`+pdf+`"}]}`)
			if res.status != http.StatusAccepted {
				t.Fatalf("3 MB attachment through the split gateway = %d %s", res.status, res.body)
			}
			// Errors keep their code and message across the hop.
			res = do(t, "POST", base+"/v1/emails", `{"from":"a@acme.test","to":"a@x.test","template":"welcome","data":{"name":"x"}}`)
			if res.status != http.StatusUnprocessableEntity || !strings.Contains(string(res.body), `needs the variable \"appName\"`) {
				t.Fatalf("missing variable through the split gateway = %d %s", res.status, res.body)
			}
			if res := do(t, "GET", base+"/v1/email/templates", nil); res.status != 200 || !strings.Contains(string(res.body), "api-key-created") {
				t.Fatalf("templates = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/email/suppressions", `{"email":"gone@x.test"}`); res.status != http.StatusCreated {
				t.Fatalf("suppress = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/emails", `{"from":"a@acme.test","to":"gone@x.test","subject":"s","text":"t"}`); res.status != 422 {
				t.Fatalf("send to a suppressed address = %d %s", res.status, res.body)
			}
			res = do(t, "POST", base+"/v1/emails/batch", `[{"from":"a@acme.test","to":"a@x.test","subject":"1","text":"t"},{"from":"a@acme.test","to":"bad","subject":"2","text":"t"}]`, "X-Batch-Validation", "permissive")
			if res.status != 202 || len(res.json(t)["errors"].([]any)) != 1 {
				t.Fatalf("permissive batch = %d %s", res.status, res.body)
			}
			// The auth process sends its account emails through the email process.
			if res := do(t, "POST", base+"/v1/auth/users", `{"email":"u@x.test","password":"a good password"}`); res.status != http.StatusCreated {
				t.Fatalf("create user = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/auth/magic-link", `{"email":"u@x.test"}`, "Authorization", ""); res.status != http.StatusAccepted {
				t.Fatalf("magic link = %d %s", res.status, res.body)
			}
			tok := flowToken(t, base, "u@x.test", "magic-link")
			if res := do(t, "POST", base+"/v1/auth/magic-link/verify", `{"token":"`+tok+`"}`, "Authorization", ""); res.status != http.StatusOK {
				t.Fatalf("magic-link verify = %d %s", res.status, res.body)
			}
		})
	}
}

// TestEmailFlowsThreeProcesses runs the gateway, auth and email each in
// its own process: the flow routes in the gateway call the auth process's
// AuthFlowsService, which sends through the email process.
func TestEmailFlowsThreeProcesses(t *testing.T) {
	b := newBackend(t, "sqlite")
	token := "DOTDO_INTERNAL_TOKEN=" + internalToken
	svc := startProc(t, "db,queue,email", append([]string{"--services", "db,queue,email"}, b.args()...), []string{token})
	authProc := startProc(t, "auth", []string{"--services", "auth", "--db-url", svc.url, "--email-url", svc.url, "--data-dir", t.TempDir()}, []string{token})
	gw := startProc(t, "gateway", []string{"--services", "gateway", "--db-url", svc.url, "--auth-url", authProc.url, "--email-url", svc.url}, []string{token})
	base := gw.url
	if res := do(t, "POST", base+"/v1/auth/users", `{"email":"three@x.test","password":"three processes"}`); res.status != http.StatusCreated {
		t.Fatalf("create user = %d %s", res.status, res.body)
	}
	if res := do(t, "POST", base+"/v1/auth/password/forgot", `{"email":"three@x.test"}`, "Authorization", ""); res.status != http.StatusAccepted {
		t.Fatalf("forgot = %d %s", res.status, res.body)
	}
	tok := flowToken(t, base, "three@x.test", "password-reset")
	if res := do(t, "POST", base+"/v1/auth/password/reset", `{"token":"`+tok+`","password":"a new password"}`, "Authorization", ""); res.status != http.StatusOK {
		t.Fatalf("reset = %d %s", res.status, res.body)
	}
	if res := do(t, "POST", base+"/v1/auth/password/reset", `{"token":"`+tok+`","password":"a new password"}`, "Authorization", ""); res.status != http.StatusUnauthorized {
		t.Fatalf("reset token reused across processes = %d %s; want 401", res.status, res.body)
	}
	if res := do(t, "POST", base+"/v1/auth/login", `{"email":"three@x.test","password":"a new password"}`, "Authorization", ""); res.status != http.StatusOK {
		t.Fatalf("login with the new password = %d %s", res.status, res.body)
	}
	res := do(t, "POST", base+"/v1/auth/invites", `{"email":"inv@x.test"}`)
	if res.status != http.StatusCreated {
		t.Fatalf("invite = %d %s", res.status, res.body)
	}
	if res := do(t, "POST", base+"/v1/auth/invites/accept", `{"token":"`+flowToken(t, base, "inv@x.test", "invite")+`","password":"accepted here"}`, "Authorization", ""); res.status != http.StatusOK {
		t.Fatalf("accept = %d %s", res.status, res.body)
	}
}
