//go:build unix

package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
)

// fakeResend stands in for api.resend.com and counts what reaches it.
type fakeResend struct {
	mu    sync.Mutex
	calls []map[string]any
	auth  []string
}

func (f *fakeResend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	json.Unmarshal(b, &body)
	f.mu.Lock()
	f.calls = append(f.calls, body)
	f.auth = append(f.auth, r.Header.Get("Authorization"))
	n := len(f.calls)
	f.mu.Unlock()
	if r.URL.Path != "/emails" {
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"statusCode":404,"name":"not_found","message":"Not found"}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"re_%d"}`, n)
}

func (f *fakeResend) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.calls)
}

// waitEmail polls GET /v1/emails/{id} until its status is one of want.
func waitEmail(t *testing.T, base, id string, want ...string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var v map[string]any
	for time.Now().Before(deadline) {
		res := do(t, "GET", base+"/v1/emails/"+id, nil)
		if res.status != http.StatusOK {
			t.Fatalf("GET /v1/emails/%s = %d %s", id, res.status, res.body)
		}
		v = res.json(t)
		for _, w := range want {
			if v["status"] == w {
				return v
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("email %s stayed %v: %v", id, v["status"], v)
	return nil
}

func createKey(t *testing.T, base, body string) string {
	t.Helper()
	res := do(t, "POST", base+"/v1/auth/keys", body)
	if res.status != http.StatusCreated {
		t.Fatalf("POST /v1/auth/keys %s = %d %s", body, res.status, res.body)
	}
	return res.json(t)["secret"].(string)
}

func TestEmailE2E(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			fake := &fakeResend{}
			api := httptest.NewServer(fake)
			defer api.Close()
			const resendKey = "re_e2eSecretKey_do_not_log"
			b := newBackend(t, be)
			p := startProc(t, "dotdo("+be+")", append(b.args(), "--email-provider", "resend", "--email-resend-url", api.URL, "--email-from", "Acme <noreply@acme.test>"),
				append(b.env(), "DOTDO_EMAIL_RESEND_API_KEY="+resendKey))
			base := p.url
			welcome := `{"to":"Ann <ann@x.test>","template":"welcome","data":{"name":"Ann","appName":"Acme","loginUrl":"https://acme.test/login"},"tags":[{"name":"kind","value":"welcome"}]}`

			// An sk_test_ key's email lands in the outbox and reaches no provider.
			testKey := createKey(t, base, `{"name":"test","test":true,"role":"user"}`)
			if !strings.HasPrefix(testKey, "sk_test_") {
				t.Fatalf("test key %q", testKey)
			}
			res := do(t, "POST", base+"/v1/emails", welcome, "Authorization", "Bearer "+testKey)
			if res.status != http.StatusAccepted || res.json(t)["status"] != "queued" {
				t.Fatalf("POST /v1/emails with a test key = %d %s; want 202 queued", res.status, res.body)
			}
			testID := res.json(t)["id"].(string)
			v := waitEmail(t, base, testID, "sent", "failed")
			if v["status"] != "sent" || v["provider"] != "outbox" || v["test"] != true || v["subject"] != "Welcome to Acme, Ann" {
				t.Fatalf("test-key email = %v; want sent to the outbox", v)
			}
			if !strings.Contains(v["html"].(string), `href="https://acme.test/login"`) {
				t.Errorf("rendered html = %q", v["html"])
			}
			if n := fake.count(); n != 0 {
				t.Fatalf("the provider received %d calls for a test key's email; want 0", n)
			}

			// A live key's email goes to Resend.
			res = do(t, "POST", base+"/v1/emails", welcome)
			if res.status != http.StatusAccepted {
				t.Fatalf("POST /v1/emails = %d %s", res.status, res.body)
			}
			liveID := res.json(t)["id"].(string)
			v = waitEmail(t, base, liveID, "sent", "failed")
			if v["status"] != "sent" || v["provider"] != "resend" || v["providerId"] != "re_1" || fake.count() != 1 {
				t.Fatalf("live email = %v, provider calls %d; want sent through resend", v, fake.count())
			}
			fake.mu.Lock()
			if fake.auth[0] != "Bearer "+resendKey || fake.calls[0]["from"] != "Acme <noreply@acme.test>" {
				t.Errorf("provider request auth %q from %v", fake.auth[0], fake.calls[0]["from"])
			}
			fake.mu.Unlock()
			// The provider's events reach it through the RPC the webhooks
			// service calls; here through the REST twin.
			res = do(t, "POST", base+"/v1/email/events", `{"provider":"resend","providerMessageId":"re_1","type":"email.delivered","eventId":"evt_1"}`)
			if res.status != http.StatusOK || res.json(t)["status"] != "delivered" {
				t.Fatalf("POST /v1/email/events = %d %s", res.status, res.body)
			}
			res = do(t, "POST", base+"/v1/email/events", `{"emailId":"`+liveID+`","type":"email.sent","eventId":"evt_0","occurredAt":"2020-01-01T00:00:00Z"}`)
			if res.json(t)["status"] != "delivered" {
				t.Fatalf("a late sent moved the status: %s", res.body)
			}

			// Lists and filters.
			res = do(t, "GET", base+"/v1/emails?to=ann@x.test&tag=kind=welcome&status=delivered", nil)
			if items := res.json(t)["items"].([]any); res.status != 200 || len(items) != 1 || items[0].(map[string]any)["id"] != liveID {
				t.Fatalf("GET /v1/emails filtered = %d %s", res.status, res.body)
			}

			// The outbox: what was kept, not delivered.
			res = do(t, "GET", base+"/v1/emails?provider=outbox", nil)
			if items := res.json(t)["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != testID {
				t.Fatalf("GET /v1/emails?provider=outbox = %s; want the test key's email", res.body)
			}
			if res := do(t, "GET", base+"/v1/emails?provider=carrier-pigeon", nil); res.status != http.StatusBadRequest {
				t.Fatalf("unknown provider filter = %d; want 400", res.status)
			}

			// Idempotency over HTTP.
			send := func(body, key string) *response {
				return do(t, "POST", base+"/v1/emails", body, "Idempotency-Key", key)
			}
			a, b2 := send(welcome, "signup-7"), send(welcome, "signup-7")
			if a.status != 202 || b2.status != 202 || a.json(t)["id"] != b2.json(t)["id"] {
				t.Fatalf("same key twice = %s / %s; want one id", a.body, b2.body)
			}
			if c := send(strings.Replace(welcome, "Ann", "Bob", 1), "signup-7"); c.status != http.StatusConflict {
				t.Fatalf("same key, other body = %d %s; want 409", c.status, c.body)
			}
			// Concurrent requests with one key: one email, one id.
			var wg sync.WaitGroup
			ids := make([]any, 12)
			one := `{"to":"once@x.test","subject":"once","text":"t"}`
			for i := range ids {
				wg.Go(func() {
					req, _ := http.NewRequest("POST", base+"/v1/emails", strings.NewReader(one))
					req.Header.Set("Authorization", "Bearer "+testKey)
					req.Header.Set("Idempotency-Key", "concurrent-1")
					res, err := httpClient.Do(req)
					if err != nil {
						return
					}
					var out map[string]any
					json.NewDecoder(res.Body).Decode(&out)
					res.Body.Close()
					ids[i] = out["id"]
				})
			}
			wg.Wait()
			for i := range ids {
				if ids[i] == nil || ids[i] != ids[0] {
					t.Fatalf("concurrent requests with one key got ids %v; want one", ids)
				}
			}
			if items := do(t, "GET", base+"/v1/emails?to=once@x.test", nil).json(t)["items"].([]any); len(items) != 1 {
				t.Fatalf("concurrent requests with one key stored %d emails; want 1", len(items))
			}
			// Resend's own field spellings work too.
			res = do(t, "POST", base+"/v1/emails", `{"to":["r@x.test"],"subject":"s","text":"t","reply_to":"support@acme.test","attachments":[{"filename":"a.txt","content":"aGk=","content_type":"text/plain"}]}`, "Authorization", "Bearer "+testKey)
			if res.status != 202 {
				t.Fatalf("Resend spellings = %d %s", res.status, res.body)
			}
			if v := waitEmail(t, base, res.json(t)["id"].(string), "sent"); v["replyTo"].([]any)[0] != "support@acme.test" || v["attachments"].([]any)[0].(map[string]any)["contentType"] != "text/plain" {
				t.Fatalf("Resend spellings stored as %v", v)
			}

			// Bad input: the envelope, nothing queued.
			for _, tc := range []struct{ body, want string }{
				{`{"subject":"s","text":"t"}`, "to is required"},
				{`{"to":"nope","subject":"s","text":"t"}`, "not a valid email address"},
				{`{"to":"a@x.test","template":"welcome","html":"<p>x</p>","data":{}}`, "not both"},
				{`{"to":"a@x.test","template":"welcome","data":{"name":"x","appName":"y"}}`, `"loginUrl"`},
			} {
				res := do(t, "POST", base+"/v1/emails", tc.body)
				env := res.json(t)["error"].(map[string]any)
				if res.status != http.StatusUnprocessableEntity || !strings.Contains(env["message"].(string), tc.want) || env["requestId"] == "" {
					t.Errorf("POST %s = %d %s; want 422 mentioning %s", tc.body, res.status, res.body, tc.want)
				}
			}
			if res := do(t, "POST", base+"/v1/emails", `{"to":`); res.status != http.StatusBadRequest {
				t.Errorf("malformed JSON = %d; want 400", res.status)
			}
			// Attachments beyond the gateway's default 1 MiB body limit are accepted.
			pdf := base64.StdEncoding.EncodeToString(make([]byte, 3<<20))
			res = do(t, "POST", base+"/v1/emails", `{"to":"a@x.test","subject":"big","text":"see attached","attachments":[{"filename":"a.pdf","content":"`+pdf+`","contentType":"application/pdf"}]}`, "Authorization", "Bearer "+testKey)
			if res.status != http.StatusAccepted {
				t.Fatalf("3 MB attachment = %d %s; want 202", res.status, res.body)
			}
			v = waitEmail(t, base, res.json(t)["id"].(string), "sent")
			if att := v["attachments"].([]any)[0].(map[string]any); att["size"] != float64(3<<20) {
				t.Errorf("attachment = %v", att)
			}
			big := base64.StdEncoding.EncodeToString(make([]byte, 11<<20))
			res = do(t, "POST", base+"/v1/emails", `{"to":"a@x.test","subject":"big","text":"t","attachments":[{"filename":"a.pdf","content":"`+big+`"}]}`)
			if res.status != http.StatusRequestEntityTooLarge {
				t.Errorf("11 MB attachment = %d; want 413", res.status)
			}

			// Permissions: no credential, a viewer, a tenant of another namespace.
			if res := do(t, "POST", base+"/v1/emails", welcome, "Authorization", ""); res.status != http.StatusUnauthorized {
				t.Errorf("no credential = %d; want 401", res.status)
			}
			viewer := createKey(t, base, `{"name":"v","role":"viewer"}`)
			if res := do(t, "POST", base+"/v1/emails", welcome, "Authorization", "Bearer "+viewer); res.status != http.StatusForbidden {
				t.Errorf("viewer send = %d; want 403", res.status)
			}
			tenant := createKey(t, base, `{"name":"acme","permissions":["email:send","email:read"],"namespaces":["acme"]}`)
			if res := do(t, "POST", base+"/v1/emails?ns=acme", welcome, "Authorization", "Bearer "+tenant); res.status != http.StatusAccepted {
				t.Errorf("tenant send in its namespace = %d %s", res.status, res.body)
			}
			if res := do(t, "GET", base+"/v1/emails/"+liveID, nil, "Authorization", "Bearer "+tenant); res.status != http.StatusForbidden {
				t.Errorf("tenant reading the default namespace = %d; want 403", res.status)
			}
			if res := do(t, "GET", base+"/v1/emails/"+liveID+"?ns=acme", nil, "Authorization", "Bearer "+tenant); res.status != http.StatusNotFound {
				t.Errorf("tenant reading another namespace's email through its own = %d; want 404", res.status)
			}
			if res := do(t, "GET", base+"/v1/things/_email/"+liveID, nil, "Authorization", "Bearer "+tenant); res.status != http.StatusForbidden {
				t.Errorf("tenant reading _email directly = %d; want 403", res.status)
			}

			// Templates and preview.
			res = do(t, "GET", base+"/v1/email/templates", nil)
			if res.status != 200 || !strings.Contains(string(res.body), `"magic-link"`) {
				t.Fatalf("GET /v1/email/templates = %d %s", res.status, res.body)
			}
			res = do(t, "POST", base+"/v1/email/templates/magic-link/preview", `{"data":{"appName":"Acme","loginUrl":"https://acme.test/m?t=1","expiresIn":"15 minutes"}}`)
			if res.status != 200 || res.json(t)["subject"] != "Your Acme sign-in link" {
				t.Fatalf("preview = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/email/templates/magic-link/preview", `{"data":{}}`); res.status != 422 {
				t.Errorf("preview without data = %d; want 422", res.status)
			}

			// Suppressions.
			if res := do(t, "POST", base+"/v1/email/suppressions", `{"email":"gone@x.test","reason":"asked"}`); res.status != http.StatusCreated {
				t.Fatalf("POST suppression = %d %s", res.status, res.body)
			}
			res = do(t, "POST", base+"/v1/emails", `{"to":"gone@x.test","subject":"s","text":"t"}`)
			if res.status != 422 || !strings.Contains(string(res.body), "suppress") {
				t.Fatalf("send to a suppressed address = %d %s; want 422", res.status, res.body)
			}
			res = do(t, "GET", base+"/v1/emails?status=suppressed", nil)
			if items := res.json(t)["items"].([]any); len(items) != 1 {
				t.Fatalf("suppressed emails listed: %s", res.body)
			}
			if res := do(t, "GET", base+"/v1/email/suppressions", nil); !strings.Contains(string(res.body), "gone@x.test") {
				t.Fatalf("GET suppressions = %s", res.body)
			}
			if res := do(t, "DELETE", base+"/v1/email/suppressions/gone@x.test", nil); res.status != http.StatusNoContent {
				t.Fatalf("DELETE suppression = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/emails", `{"to":"gone@x.test","subject":"s","text":"t"}`, "Authorization", "Bearer "+testKey); res.status != 202 {
				t.Fatalf("send after unsuppress = %d %s", res.status, res.body)
			}

			// Batch.
			res = do(t, "POST", base+"/v1/emails/batch", `[{"to":"a@x.test","subject":"1","text":"t"},{"to":"bad","subject":"2","text":"t"}]`, "X-Batch-Validation", "permissive", "Authorization", "Bearer "+testKey)
			out := res.json(t)
			if res.status != 202 || len(out["data"].([]any)) != 1 || out["errors"].([]any)[0].(map[string]any)["index"] != float64(1) {
				t.Fatalf("permissive batch = %d %s", res.status, res.body)
			}
			if res := do(t, "POST", base+"/v1/emails/batch", `[{"to":"a@x.test","subject":"1","text":"t"},{"to":"bad","subject":"2","text":"t"}]`); res.status != 422 {
				t.Fatalf("strict batch = %d %s; want 422", res.status, res.body)
			}

			m := do(t, "GET", base+"/metrics", nil)
			for _, series := range []string{`dotdo_email_deliveries_total{outcome="sent",provider="outbox"}`, `dotdo_email_deliveries_total{outcome="sent",provider="resend"} `,
				`dotdo_email_accepted_total{provider="resend",status="suppressed"} 1`, `dotdo_email_events_total{type="delivered"} 1`, `dotdo_email_provider_seconds_count{provider="resend"} `} {
				if !strings.Contains(string(m.body), series) {
					t.Errorf("/metrics lacks %s", series)
				}
			}
			if strings.Contains(p.logs.String(), resendKey) {
				t.Fatalf("the provider's API key appears in the log")
			}
		})
	}
}
