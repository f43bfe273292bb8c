package auth_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// asCaller serves the auth routes as the gateway would after
// authenticating id.
func asCaller(t *testing.T, svc *auth.Service, custom map[string][]string) func(id *authv1.Identity, method, path, body string) *httptest.ResponseRecorder {
	mux := http.NewServeMux()
	auth.Routes(mux, svc, auth.RouteOptions{
		Can:         func(id *authv1.Identity, ns, p string) bool { return auth.Can(id, ns, p, custom) },
		CustomRoles: custom,
	})
	return func(id *authv1.Identity, method, path, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r = r.WithContext(identity.With(r.Context(), id))
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, r)
		return w
	}
}

// TestNoEscalation: keys:manage and users:manage are not ways to gain or
// take away more than the caller holds.
func TestNoEscalation(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := thingsdb.New(testdb.Open(t, thingsdb.SQLite), log)
	if err != nil {
		t.Fatal(err)
	}
	custom := map[string][]string{"mailer": {"queue:manage"}, "keymaster": {"keys:manage", "users:manage"}}
	svc, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{1}, 32), CustomRoles: custom,
		Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	do := asCaller(t, svc, custom)
	// a key manager whose power is keys:manage and users:manage on _auth
	// and the user role on "acme"
	mgr := &authv1.Identity{Subject: "key_mgr", Kind: "api_key", Grants: map[string]*authv1.Grants{
		"_auth": {Roles: []string{"keymaster"}, Permissions: []string{"things:*"}},
		"acme":  {Roles: []string{"user"}},
	}}
	admin := &authv1.Identity{Subject: "key_admin", Kind: "api_key", Grants: map[string]*authv1.Grants{"*": {Roles: []string{"admin"}}}}
	cases := []struct {
		name, body string
		want       int
	}{
		{"user role on its namespace", `{"name":"a","role":"user","namespaces":["acme"]}`, 201},
		{"admin role", `{"name":"a","role":"admin","namespaces":["acme"]}`, 403},
		{"things:* everywhere", `{"name":"a","permissions":["things:*"]}`, 403},
		{"another namespace", `{"name":"a","role":"viewer","namespaces":["other"]}`, 403},
		{"a custom role it does not hold", `{"name":"a","role":"mailer","namespaces":["acme"]}`, 403},
	}
	for _, tc := range cases {
		if w := do(mgr, "POST", "/v1/auth/keys", tc.body); w.Code != tc.want {
			t.Errorf("manager creates %s = %d %s; want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
	// the manager cannot revoke an admin key; an admin can
	res, err := svc.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "root", Grants: admin.Grants}))
	if err != nil {
		t.Fatal(err)
	}
	if w := do(mgr, "DELETE", "/v1/auth/keys/"+res.Msg.Key.Id, ""); w.Code != 403 {
		t.Fatalf("manager revokes an admin key = %d %s; want 403", w.Code, w.Body)
	}
	if _, err := svc.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: res.Msg.Secret})); err != nil {
		t.Fatalf("admin key stopped working after a refused revocation: %v", err)
	}
	if w := do(admin, "DELETE", "/v1/auth/keys/"+res.Msg.Key.Id, ""); w.Code != 200 {
		t.Fatalf("admin revokes = %d %s", w.Code, w.Body)
	}
	// a viewer cannot manage users or keys at all
	viewer := &authv1.Identity{Subject: "key_v", Kind: "api_key", Grants: map[string]*authv1.Grants{"acme": {Roles: []string{"viewer"}}}}
	for _, path := range []string{"/v1/auth/keys", "/v1/auth/users", "/v1/auth/audit"} {
		if w := do(viewer, "GET", path, ""); w.Code != 403 {
			t.Errorf("viewer GET %s = %d; want 403", path, w.Code)
		}
	}
	if w := do(nil, "GET", "/v1/auth/me", ""); w.Code != 401 {
		t.Errorf("GET /v1/auth/me without identity = %d; want 401", w.Code)
	}
}

// TestBodyDecoding: a body that is not exactly one JSON object of known
// fields is refused whole, with a message naming the fault, and nothing
// is created from the part that did decode.
func TestBodyDecoding(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := thingsdb.New(testdb.Open(t, thingsdb.SQLite), log)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{1}, 32),
		Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	do := asCaller(t, svc, nil)
	admin := &authv1.Identity{Subject: "key_admin", Kind: "api_key", Grants: map[string]*authv1.Grants{"*": {Roles: []string{"admin"}}}}
	for _, tc := range []struct{ name, body, want string }{
		{"two objects", `{"name":"a","role":"viewer"} {"name":"b"}`, "invalid JSON body: trailing data after the JSON value"},
		{"empty", ``, "request body is empty; send a JSON object"},
		{"wrong type", `{"name":5}`, "invalid JSON body: field name must be a string, not number"},
		{"unknown field", `{"name":"a","colour":"red"}`, `invalid JSON body: unknown field \"colour\"`},
	} {
		w := do(admin, "POST", "/v1/auth/keys", tc.body)
		if w.Code != 400 || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("POST /v1/auth/keys with %s = %d %s; want 400 saying %s", tc.name, w.Code, w.Body, tc.want)
		}
	}
	if w := do(admin, "GET", "/v1/auth/keys", ""); w.Code != 200 || strings.Contains(w.Body.String(), `"name":"a"`) {
		t.Errorf("GET /v1/auth/keys after refused bodies = %d %s; want 200 without key a", w.Code, w.Body)
	}
}
