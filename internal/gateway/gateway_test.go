package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/gateway"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/rpc"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

const token = "gateway-test-token-0123456789abcdef"

type fixture struct {
	gw   *gateway.Gateway
	logs *bytes.Buffer
	reg  *metrics.Registry
	// healthErr, when set, makes the db upstream report unhealthy.
	healthErr error
}

// newGateway returns a gateway in front of a real db service on SQLite.
func newGateway(t *testing.T, cfg gateway.Config, extra ...gateway.Upstream) *fixture {
	t.Helper()
	svc, err := thingsdb.New(testdb.Open(t, thingsdb.SQLite), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	f := &fixture{logs: &bytes.Buffer{}, reg: metrics.New()}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 20
	}
	cfg.Self = "gateway"
	cfg.InternalToken = token
	path, h := dbv1connect.NewDBServiceHandler(svc, connect.WithInterceptors(rpc.ServerInterceptor()))
	api := thingsdb.Instrument(svc, f.reg, "db")
	ups := append([]gateway.Upstream{{
		Name:     "db",
		Prefixes: thingsdb.Prefixes,
		Routes:   func(mux *http.ServeMux) { thingsdb.Routes(mux, api, thingsdb.RouteOptions{}) },
		RPCPath:  path,
		RPC:      h,
		Health: func(ctx context.Context) error {
			if f.healthErr != nil {
				return f.healthErr
			}
			_, err := svc.Health(ctx, connect.NewRequest(&dbv1.HealthRequest{}))
			return err
		},
	}}, extra...)
	f.gw = gateway.New(cfg, slog.New(slog.NewJSONHandler(f.logs, nil)), f.reg, ups)
	return f
}

func (f *fixture) do(method, host, path, body string, hdr ...string) *httptest.ResponseRecorder {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if host != "" {
		req.Host = host
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	f.gw.ServeHTTP(rec, req)
	return rec
}

func errCode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var env struct {
		Error struct {
			Code      string `json:"code"`
			Message   string `json:"message"`
			RequestID string `json:"requestId"`
		} `json:"error"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Error.Code == "" {
		t.Fatalf("body %q is not the error envelope", rec.Body.String())
	}
	if env.Error.RequestID != rec.Header().Get("X-Request-Id") {
		t.Errorf("envelope requestId %q != header %q", env.Error.RequestID, rec.Header().Get("X-Request-Id"))
	}
	return env.Error.Code
}

func TestRoutingByPath(t *testing.T) {
	f := newGateway(t, gateway.Config{})
	if rec := f.do("PUT", "", "/v1/things/app/a", `{"type":"T"}`); rec.Code != 201 {
		t.Fatalf("PUT = %d %s; want 201", rec.Code, rec.Body)
	}
	if rec := f.do("GET", "", "/v1/things/app/a", ""); rec.Code != 200 || rec.Header().Get("ETag") != `"1"` {
		t.Fatalf("GET = %d etag %q; want 200 \"1\"", rec.Code, rec.Header().Get("ETag"))
	}
	if rec := f.do("GET", "", "/v1/nothing", ""); rec.Code != 404 || errCode(t, rec) != "not_found" {
		t.Fatalf("unknown path = %d %s; want 404 envelope", rec.Code, rec.Body)
	}
	rec := f.do("POST", "", "/v1/things/app/a", "{}")
	if rec.Code != 405 || errCode(t, rec) != "method_not_allowed" || !strings.Contains(rec.Header().Get("Allow"), "GET") {
		t.Fatalf("wrong method = %d %s allow %q; want 405 envelope with Allow", rec.Code, rec.Body, rec.Header().Get("Allow"))
	}
	// Connect paths are for services: without the internal token, 401
	for _, tok := range []string{"", "wrong", token[:len(token)-1]} {
		rec = f.do("POST", "", "/dotdo.db.v1.DBService/Get", `{"ns":"app","id":"a"}`, "Content-Type", "application/json", "Dotdo-Internal-Token", tok)
		if rec.Code != 401 || errCode(t, rec) != "unauthenticated" {
			t.Fatalf("Connect Get with token %q = %d %s; want 401", tok, rec.Code, rec.Body)
		}
	}
	// with it, the Connect path is routed to the db service
	rec = f.do("POST", "", "/dotdo.db.v1.DBService/Get", `{"ns":"app","id":"a"}`, "Content-Type", "application/json", "Dotdo-Internal-Token", token)
	if rec.Code != 200 || !strings.Contains(rec.Body.String(), `"version":"1"`) {
		t.Fatalf("Connect Get = %d %s", rec.Code, rec.Body)
	}
	rec = f.do("POST", "", "/dotdo.db.v1.DBService/Get", `{"ns":"app","id":"zz"}`, "Content-Type", "application/json", "Dotdo-Internal-Token", token)
	if rec.Code != 404 || !strings.Contains(rec.Body.String(), `"not_found"`) {
		t.Fatalf("Connect Get missing = %d %s; want not_found", rec.Code, rec.Body)
	}
}

func TestRoutingByHost(t *testing.T) {
	other := gateway.Upstream{Name: "queue", Prefixes: []string{"/v1/queues"}, Routes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /v1/queues", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "queues") })
	}}
	f := newGateway(t, gateway.Config{Domain: "example.com", Hosts: map[string]string{"data.acme.io": "db"}}, other)
	cases := []struct {
		host, path string
		want       int
	}{
		{"db.example.com", "/v1/things/app/x", 404},    // routed to db: thing not found
		{"db.example.com", "/v1/queues", 404},          // not a db route on the db host
		{"queue.example.com", "/v1/queues", 200},       // the queue host
		{"queue.example.com", "/v1/things/app/x", 404}, // db route on the queue host
		{"DB.Example.com:8787", "/v1/queues", 404},     // case and port ignored
		{"data.acme.io", "/v1/queues", 404},
		{"data.acme.io", "/v1/things/app", 200},
		{"api.other.org", "/v1/queues", 200}, // unmapped hosts reach everything
		{"api.other.org", "/v1/things/app", 200},
		{"db.example.com", "/health", 200},
	}
	for _, tc := range cases {
		rec := f.do("GET", tc.host, tc.path, "")
		if rec.Code != tc.want {
			t.Errorf("GET %s%s = %d %s; want %d", tc.host, tc.path, rec.Code, rec.Body, tc.want)
		}
	}
	// the db host really reaches db: the error is the db's, not the gateway's
	if rec := f.do("GET", "db.example.com", "/v1/things/app/x", ""); !strings.Contains(rec.Body.String(), "thing app/x not found") {
		t.Errorf("db host body = %s", rec.Body)
	}
}

func TestRequestIDAndAccessLog(t *testing.T) {
	f := newGateway(t, gateway.Config{})
	rec := f.do("GET", "", "/v1/things/app/x", "", "X-Request-Id", "my-id-123")
	if got := rec.Header().Get("X-Request-Id"); got != "my-id-123" {
		t.Fatalf("X-Request-Id = %q; want the one sent", got)
	}
	rec = f.do("GET", "", "/v1/things/app/x", "", "X-Request-Id", "bad id with spaces")
	gen := rec.Header().Get("X-Request-Id")
	if gen == "" || gen == "bad id with spaces" {
		t.Fatalf("invalid X-Request-Id kept or none generated: %q", gen)
	}
	lines := strings.Split(strings.TrimSpace(f.logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 2 requests; want 2:\n%s", len(lines), f.logs)
	}
	var line map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &line); err != nil {
		t.Fatal(err)
	}
	if line["request_id"] != "my-id-123" || line["route"] != "GET /v1/things/{ns}/{id}" || line["status"] != float64(404) || line["method"] != "GET" {
		t.Fatalf("access line = %v", line)
	}
}

func TestInternalListener(t *testing.T) {
	f := newGateway(t, gateway.Config{Internal: true})
	if rec := f.do("GET", "", "/health", ""); rec.Code != 200 {
		t.Fatalf("internal /health = %d; want 200 without a token", rec.Code)
	}
	for _, path := range []string{"/metrics", "/v1/things/app/a"} {
		if rec := f.do("GET", "", path, ""); rec.Code != 401 || errCode(t, rec) != "unauthenticated" {
			t.Fatalf("internal %s without token = %d; want 401", path, rec.Code)
		}
		if rec := f.do("GET", "", path, "", "Dotdo-Internal-Token", token); rec.Code == 401 {
			t.Fatalf("internal %s with token = 401", path)
		}
	}
	if !strings.Contains(f.logs.String(), `"status":401`) {
		t.Fatal("refused internal calls are not in the access log")
	}
}

func TestBodyLimit(t *testing.T) {
	f := newGateway(t, gateway.Config{MaxBodyBytes: 2048})
	big := `{"type":"T","data":{"s":"` + strings.Repeat("x", 3000) + `"}}`
	rec := f.do("PUT", "", "/v1/things/app/big", big)
	if rec.Code != 413 || errCode(t, rec) != "too_large" {
		t.Fatalf("oversize body = %d %s; want 413", rec.Code, rec.Body)
	}
	// without Content-Length the limit still holds while reading
	req := httptest.NewRequest("PUT", "/v1/things/app/big", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	rr := httptest.NewRecorder()
	f.gw.ServeHTTP(rr, req)
	if rr.Code != 413 {
		t.Fatalf("chunked oversize body = %d %s; want 413", rr.Code, rr.Body)
	}
	if rec := f.do("GET", "", "/v1/things/app/big", ""); rec.Code != 404 {
		t.Fatalf("oversize write stored something: %d", rec.Code)
	}
}

func TestPanicRecovery(t *testing.T) {
	boom := gateway.Upstream{Name: "boom", Prefixes: []string{"/boom"}, Routes: func(mux *http.ServeMux) {
		mux.HandleFunc("GET /boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	}}
	f := newGateway(t, gateway.Config{}, boom)
	rec := f.do("GET", "", "/boom", "")
	if rec.Code != 500 || errCode(t, rec) != "internal" || strings.Contains(rec.Body.String(), "kaboom") {
		t.Fatalf("panic = %d %s; want 500 envelope without details", rec.Code, rec.Body)
	}
	if !strings.Contains(f.logs.String(), "kaboom") {
		t.Fatal("panic not logged")
	}
	if rec := f.do("GET", "", "/health", ""); rec.Code != 200 {
		t.Fatalf("gateway unusable after a panic: %d", rec.Code)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	f := newGateway(t, gateway.Config{})
	rec := f.do("GET", "", "/health", "")
	if rec.Code != 200 || rec.Body.String() != `{"status":"ok","services":{"db":{"status":"ok"},"gateway":{"status":"ok"}}}` {
		t.Fatalf("health = %d %s", rec.Code, rec.Body)
	}
	f.healthErr = errors.New("database unreachable")
	rec = f.do("GET", "", "/health", "")
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"status":"degraded"`) || !strings.Contains(rec.Body.String(), `"db":{"status":"unavailable"`) {
		t.Fatalf("degraded health = %d %s", rec.Code, rec.Body)
	}
	f.do("GET", "", "/v1/things/app/nope", "")
	f.do("PUT", "", "/v1/things/app/a", `{"type":"T"}`)
	rec = f.do("GET", "", "/metrics", "")
	body := rec.Body.String()
	for _, want := range []string{
		`dotdo_http_requests_total{code="404",route="GET /v1/things/{ns}/{id}"} 1`,
		`dotdo_http_requests_total{code="201",route="PUT /v1/things/{ns}/{id}"} 1`,
		`dotdo_http_request_errors_total{class="4xx",route="GET /v1/things/{ns}/{id}"} 1`,
		`dotdo_http_request_duration_seconds_count{route="PUT /v1/things/{ns}/{id}"} 1`,
		`dotdo_binding_calls_total{binding="db",method="Get"} 1`,
		`dotdo_binding_call_errors_total{binding="db",code="not_found",method="Get"} 1`,
		`dotdo_binding_call_duration_seconds_count{binding="db",method="Put"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestMetricsNeedAccess(t *testing.T) {
	f := newGateway(t, gateway.Config{
		Auth:          staticAuth{"viewer-token": {Subject: "v", Kind: "api_key"}, "admin-token": {Subject: "a", Kind: "api_key"}},
		MetricsAccess: func(id *authv1.Identity) bool { return id.GetSubject() == "a" },
		RateLimit:     func(http.ResponseWriter, *http.Request, string, *authv1.Identity) bool { return false }, // deny everything limited
	})
	if rec := f.do("GET", "", "/metrics", ""); rec.Code != 401 {
		t.Fatalf("/metrics without credential = %d; want 401", rec.Code)
	}
	if rec := f.do("GET", "", "/metrics", "", "Authorization", "Bearer viewer-token"); rec.Code != 403 {
		t.Fatalf("/metrics as viewer = %d; want 403", rec.Code)
	}
	// /health is open and never rate limited, even when every limited
	// request is refused
	if rec := f.do("GET", "", "/health", ""); rec.Code != 200 {
		t.Fatalf("/health under a refusing limiter = %d; want 200", rec.Code)
	}
}

// staticAuth authenticates fixed tokens; the gateway's own logic is what
// the test exercises.
type staticAuth map[string]*authv1.Identity

func (s staticAuth) Authenticate(_ context.Context, token string) (*authv1.Identity, error) {
	if id, ok := s[token]; ok {
		return id, nil
	}
	return nil, apierr.New(apierr.Unauthenticated, "invalid or expired credential")
}

// TestRefusedCredentialsAreLimited: a bad credential is charged to the
// anonymous (per-IP) budget, so guessing keys is throttled.
func TestRefusedCredentialsAreLimited(t *testing.T) {
	budget := 2
	f := newGateway(t, gateway.Config{
		Auth: staticAuth{"good": {Subject: "g", Kind: "api_key"}},
		RateLimit: func(w http.ResponseWriter, _ *http.Request, _ string, id *authv1.Identity) bool {
			if id != nil {
				return true
			}
			if budget == 0 {
				w.WriteHeader(http.StatusTooManyRequests)
				return false
			}
			budget--
			return true
		},
	})
	want := []int{401, 401, 429, 429}
	for i, w := range want {
		if rec := f.do("GET", "", "/v1/things/app/x", "", "Authorization", "Bearer guess"); rec.Code != w {
			t.Fatalf("guess %d = %d; want %d", i, rec.Code, w)
		}
	}
	if rec := f.do("GET", "", "/v1/things/app/x", "", "Authorization", "Bearer good"); rec.Code != 404 {
		t.Fatalf("good key after guesses = %d; want 404 (its own budget)", rec.Code)
	}
}
