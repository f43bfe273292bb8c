package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/netguard"
)

// restServer serves the REST routes of a replica that refuses private
// addresses.
func restServer(t *testing.T, allowPrivate bool) (*httptest.Server, *replica) {
	t.Helper()
	db := openDB(t, "sqlite")
	r := startReplica(t, db, NewFakeClock(t0()), "r0", func(c *Config) { c.AllowPrivate = allowPrivate })
	mux := http.NewServeMux()
	Routes(mux, r.Service, RouteOptions{})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, r
}

func doJSON(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return res.StatusCode, m
}

func errMessage(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["message"].(string)
	return s
}

func TestBadInput(t *testing.T) {
	srv, _ := restServer(t, false)
	for _, tc := range []struct {
		name, body, want string
	}{
		{"invalid cron", `{"schedule":"61 * * * *","action":{"type":"http","url":"https://example.com/"}}`, "schedule"},
		{"cron with seconds", `{"schedule":"* * * * * *","action":{"type":"http","url":"https://example.com/"}}`, "schedule"},
		{"every under a second", `{"schedule":"@every 100ms","action":{"type":"http","url":"https://example.com/"}}`, "@every"},
		{"unknown zone", `{"schedule":"CRON_TZ=Mars/Base 0 * * * *","action":{"type":"http","url":"https://example.com/"}}`, "schedule"},
		{"unknown action", `{"schedule":"@hourly","action":{"type":"email","url":"https://example.com/"}}`, `action.type "email" is unknown`},
		{"builtin action", `{"schedule":"@hourly","action":{"type":"builtin","builtin":"backup-database"}}`, "reserved"},
		{"no action", `{"schedule":"@hourly"}`, "action is required"},
		{"loopback URL", `{"schedule":"@hourly","action":{"type":"http","url":"http://127.0.0.1:8787/v1/things/x"}}`, "refused"},
		{"localhost URL", `{"schedule":"@hourly","action":{"type":"http","url":"http://localhost/"}}`, "refused"},
		{"private URL", `{"schedule":"@hourly","action":{"type":"http","url":"http://10.1.2.3/hook"}}`, "refused"},
		{"metadata URL", `{"schedule":"@hourly","action":{"type":"http","url":"http://169.254.169.254/latest/meta-data"}}`, "refused"},
		{"IPv6 loopback", `{"schedule":"@hourly","action":{"type":"http","url":"http://[::1]:80/"}}`, "refused"},
		{"mapped IPv4", `{"schedule":"@hourly","action":{"type":"http","url":"http://[::ffff:192.168.0.1]/"}}`, "refused"},
		{"integer IPv4", `{"schedule":"@hourly","action":{"type":"http","url":"http://2130706433/"}}`, "refused"},
		{"not http", `{"schedule":"@hourly","action":{"type":"http","url":"file:///etc/passwd"}}`, "http or https"},
		{"credentials in URL", `{"schedule":"@hourly","action":{"type":"http","url":"https://u:p@example.com/"}}`, "credentials"},
		{"bad method", `{"schedule":"@hourly","action":{"type":"http","method":"TRACE","url":"https://example.com/"}}`, "method"},
		{"host header", `{"schedule":"@hourly","action":{"type":"http","url":"https://example.com/","headers":{"Host":"x"}}}`, "Host"},
		{"queue without queue service", `{"schedule":"@hourly","action":{"type":"queue","queue":"jobs"}}`, "queue service"},
		{"bad overlap", `{"schedule":"@hourly","overlap":"sometimes","action":{"type":"http","url":"https://example.com/"}}`, "overlap"},
		{"bad catch-up", `{"schedule":"@hourly","catchUp":"all","action":{"type":"http","url":"https://example.com/"}}`, "catchUp"},
		{"bad timeout", `{"schedule":"@hourly","timeout":"2d","action":{"type":"http","url":"https://example.com/"}}`, "timeout"},
		{"too many retries", `{"schedule":"@hourly","retries":50,"action":{"type":"http","url":"https://example.com/"}}`, "retries"},
		{"unknown field", `{"schedule":"@hourly","cron":"x","action":{"type":"http","url":"https://example.com/"}}`, "unknown field"},
		{"wrong type", `{"schedule":5,"action":{"type":"http","url":"https://example.com/"}}`, "schedule"},
		{"not JSON", `{"schedule":`, "JSON"},
		{"empty", ``, "empty"},
		{"name mismatch", `{"name":"other","schedule":"@hourly","action":{"type":"http","url":"https://example.com/"}}`, "differs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/nightly?ns=acme", tc.body)
			if code != http.StatusBadRequest || !strings.Contains(errMessage(m), tc.want) {
				t.Errorf("PUT = %d %q; want 400 mentioning %q", code, errMessage(m), tc.want)
			}
		})
	}
	// Nothing was stored.
	if code, m := doJSON(t, "GET", srv.URL+"/v1/schedule/tasks?ns=acme", ""); code != 200 || len(m["items"].([]any)) != 0 {
		t.Errorf("GET tasks after bad input = %d %v; want 200 and no items", code, m)
	}
	for _, tc := range []struct{ method, path string }{
		{"PUT", "/v1/schedule/tasks/Bad%20Name?ns=acme"},
		{"GET", "/v1/schedule/tasks?ns=BAD!"},
		{"GET", "/v1/schedule/tasks?ns=_schedule"}, // system namespace without a grant
	} {
		code, _ := doJSON(t, tc.method, srv.URL+tc.path, `{"schedule":"@hourly","action":{"type":"http","url":"https://example.com/"}}`)
		if code != http.StatusBadRequest && code != http.StatusForbidden {
			t.Errorf("%s %s = %d; want 400 or 403", tc.method, tc.path, code)
		}
	}
	if code, _ := doJSON(t, "GET", srv.URL+"/v1/schedule/tasks/missing?ns=acme", ""); code != http.StatusNotFound {
		t.Errorf("GET missing task = %d; want 404", code)
	}
}

func TestTaskREST(t *testing.T) {
	srv, r := restServer(t, false)
	body := `{"schedule":"CRON_TZ=Europe/Paris 0 9 * * 1-5","jitter":"30s","timeout":"20s","retries":1,"overlap":"buffer_one","catchUp":"run_once","catchUpWindow":"2h",
		"action":{"type":"http","method":"post","url":"https://hooks.example.com/nightly?token=x","headers":{"X-Api-Key":"k"},"body":"{\"a\":1}"}}`
	code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/nightly?ns=acme", body)
	if code != http.StatusCreated {
		t.Fatalf("PUT = %d %v; want 201", code, m)
	}
	for k, want := range map[string]any{"ns": "acme", "name": "nightly", "jitter": "30s", "timeout": "20s", "retries": 1.0, "overlap": "buffer_one",
		"catchUp": "run_once", "catchUpWindow": "2h", "enabled": true, "builtin": false, "retryBackoff": "10s"} {
		if m[k] != want {
			t.Errorf("task.%s = %v; want %v", k, m[k], want)
		}
	}
	if a := m["action"].(map[string]any); a["method"] != "POST" {
		t.Errorf("action.method = %v; want POST", a["method"])
	}
	next, err := time.Parse(time.RFC3339, m["nextRunAt"].(string))
	if err != nil {
		t.Fatalf("nextRunAt = %v", m["nextRunAt"])
	}
	paris, _ := time.LoadLocation("Europe/Paris")
	if lt := next.In(paris); lt.Hour() != 9 || lt.Minute() != 0 || lt.Weekday() == time.Saturday || lt.Weekday() == time.Sunday {
		t.Errorf("nextRunAt = %v (%v in Paris); want a weekday at 09:00 Paris", next, lt)
	}
	// Replace: 200, createdAt kept.
	code, m2 := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/nightly?ns=acme", `{"schedule":"@hourly","retries":0,"action":{"type":"http","url":"https://hooks.example.com/x"}}`)
	if code != http.StatusOK || m2["createdAt"] != m["createdAt"] || m2["overlap"] != "skip" {
		t.Errorf("second PUT = %d %v; want 200, same createdAt, defaults back", code, m2)
	}
	// Another namespace does not see it.
	if _, m := doJSON(t, "GET", srv.URL+"/v1/schedule/tasks?ns=other", ""); len(m["items"].([]any)) != 0 {
		t.Errorf("tasks in ns other = %v; want none", m["items"])
	}
	if _, m := doJSON(t, "GET", srv.URL+"/v1/schedule/tasks?ns=acme", ""); len(m["items"].([]any)) != 1 {
		t.Errorf("tasks in ns acme = %v; want 1", m["items"])
	}
	code, m = doJSON(t, "POST", srv.URL+"/v1/schedule/tasks/nightly/disable?ns=acme", "")
	if code != 200 || m["enabled"] != false || m["nextRunAt"] != nil {
		t.Errorf("disable = %d %v; want enabled false, no nextRunAt", code, m)
	}
	code, m = doJSON(t, "POST", srv.URL+"/v1/schedule/tasks/nightly/run?ns=acme", "")
	if code != http.StatusAccepted || m["id"] == "" || m["trigger"] != "manual" {
		t.Fatalf("run = %d %v; want 202 with a run id", code, m)
	}
	id := m["id"].(string)
	waitFor(t, "the manual run to fail (example.com is not reachable from tests or answers)", func() bool {
		_, m := doJSON(t, "GET", srv.URL+"/v1/schedule/tasks/nightly/runs/"+id+"?ns=acme", "")
		return m["status"] != "running" && m["status"] != "retrying"
	})
	_, m = doJSON(t, "GET", srv.URL+"/v1/schedule/tasks/nightly/runs?ns=acme&limit=1", "")
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["id"] != id {
		t.Errorf("runs = %v; want the manual run", m)
	}
	if code, _ := doJSON(t, "DELETE", srv.URL+"/v1/schedule/tasks/nightly?ns=acme", ""); code != http.StatusNoContent {
		t.Errorf("DELETE = %d; want 204", code)
	}
	if code, _ := doJSON(t, "DELETE", srv.URL+"/v1/schedule/tasks/nightly?ns=acme", ""); code != http.StatusNotFound {
		t.Errorf("second DELETE = %d; want 404", code)
	}
	_ = r
}

// The address an HTTP action dials is checked after name resolution, so a
// public-looking name that resolves inside is refused too.
func TestDialTimeGuard(t *testing.T) {
	h := newHook(t, nil)
	c := newHTTPClient(false)
	_, err := c.Get(h.URL)
	var refused errRefused
	if !errors.As(err, &refused) {
		t.Fatalf("GET %s through the guarded client = %v; want a refusal", h.URL, err)
	}
	if len(h.snapshot()) != 0 {
		t.Fatal("the refused call reached the server")
	}
	// A name (not a literal) passes the URL check and is refused when
	// dialled: the machine's own host name resolves to a local address.
	host, _ := os.Hostname()
	addrs, _ := net.LookupHost(host)
	local := false
	for _, a := range addrs {
		if ip, err := netip.ParseAddr(a); err == nil && !netguard.Public(ip) {
			local = true
		}
	}
	if !local {
		t.Logf("host name %q resolves to %v, none of them private; only the literal check above ran", host, addrs)
		return
	}
	srv, r := restServer(t, false)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(h.URL, "http://"))
	ln, err := net.Listen("tcp", net.JoinHostPort(addrs[0], "0"))
	if err == nil {
		ln.Close()
	}
	code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/sneaky?ns=acme", `{"schedule":"@hourly","retries":0,"action":{"type":"http","url":"http://`+host+`:`+port+`/"}}`)
	if code != http.StatusCreated {
		t.Fatalf("PUT with a host name = %d %v; want 201 (checked at dial time)", code, m)
	}
	_, m = doJSON(t, "POST", srv.URL+"/v1/schedule/tasks/sneaky/run?ns=acme", "")
	id := m["id"].(string)
	waitFor(t, "the run to fail", func() bool {
		_, m = doJSON(t, "GET", srv.URL+"/v1/schedule/tasks/sneaky/runs/"+id+"?ns=acme", "")
		return m["status"] == "failed"
	})
	if !strings.Contains(m["error"].(string), "refused to connect") {
		t.Errorf("run error = %q; want the dial-time refusal", m["error"])
	}
	if len(h.snapshot()) != 0 {
		t.Error("the refused call reached the server")
	}
	_ = r
	_ = context.Background
}

func FuzzParseTaskBody(f *testing.F) {
	for _, s := range []string{
		`{"schedule":"@hourly","action":{"type":"http","url":"https://example.com/"}}`,
		`{"schedule":"*/5 * * * *","retries":0,"overlap":"allow","action":{"type":"queue","queue":"jobs","body":"{}"}}`,
		`{"schedule":"@every 2s","enabled":false,"action":{"type":"http","headers":{"A":"b"}}}`,
		`{}`, `[]`, `{"retries":"x"}`, `null`,
	} {
		f.Add([]byte(s))
	}
	s, err := New(nil, Config{}, quietLog())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pb, err := ParseTaskBody(b, "acme", "fuzz")
		if err != nil {
			return
		}
		if pb.Ns != "acme" || pb.Name != "fuzz" {
			t.Fatalf("parsed task is %s/%s; want acme/fuzz", pb.Ns, pb.Name)
		}
		s.compile(pb) // must not panic
	})
}

// Header values are sealed at rest, shown redacted, sent as given, and
// kept when a task read through the API is written back.
func TestHeadersSealedAndRedacted(t *testing.T) {
	db := openDB(t, "sqlite")
	clk := NewFakeClock(t0())
	key := make([]byte, 32)
	key[0] = 7
	r := startReplica(t, db, clk, "r0", func(c *Config) { c.SecretKey = key })
	mux := http.NewServeMux()
	Routes(mux, r.Service, RouteOptions{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	var got []string
	var mu sync.Mutex
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		got = append(got, req.Header.Get("X-Api-Key"))
		mu.Unlock()
	}))
	defer h.Close()
	body := `{"schedule":"@hourly","action":{"type":"http","url":"` + h.URL + `","headers":{"X-Api-Key":"s3cr3t-value"}}}`
	code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/hook?ns=acme", body)
	if code != 201 || m["action"].(map[string]any)["headers"].(map[string]any)["X-Api-Key"] != Redacted {
		t.Fatalf("PUT = %d %v; want the header redacted", code, m)
	}
	for _, th := range listThings(t, db, Namespace, typeTask) {
		if strings.Contains(string(th.Data), "s3cr3t") {
			t.Fatalf("stored task holds the header value in clear: %s", th.Data)
		}
	}
	_, m = doJSON(t, "GET", srv.URL+"/v1/schedule/tasks/hook?ns=acme", "")
	back, _ := json.Marshal(map[string]any{"schedule": "@daily", "action": m["action"]})
	if code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/hook?ns=acme", string(back)); code != 200 {
		t.Fatalf("PUT of the task as read = %d %v", code, m)
	}
	doJSON(t, "POST", srv.URL+"/v1/schedule/tasks/hook/run?ns=acme", "")
	waitFor(t, "the call", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	if got[0] != "s3cr3t-value" {
		t.Errorf("the receiver got X-Api-Key %q; want the value given", got[0])
	}
	// A new task cannot send the placeholder.
	if code, m := doJSON(t, "PUT", srv.URL+"/v1/schedule/tasks/other?ns=acme", string(back)); code != 400 || !strings.Contains(errMessage(m), "send the value") {
		t.Errorf("PUT of a placeholder for a new task = %d %v; want 400", code, m)
	}
	// A replica without the key says so instead of sending garbage.
	r2 := startReplica(t, db, clk, "nokey", nil)
	res, err := r2.RunTask(context.Background(), connect.NewRequest(&schedulev1.RunTaskRequest{Ns: "acme", Name: "hook"}))
	if err != nil {
		t.Fatal(err)
	}
	waitAdvancing(t, clk, 10*time.Second, "the keyless run to fail", func() bool {
		g, _ := r2.GetRun(context.Background(), connect.NewRequest(&schedulev1.GetRunRequest{Ns: "acme", Name: "hook", Id: res.Msg.Run.Id}))
		return g != nil && g.Msg.Run.Status == statusFailed && strings.Contains(g.Msg.Run.Error, "DOTDO_SECRET_KEY")
	})
}
