//go:build unix

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/dispatch/wasmtest"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// buildWorkers builds the example workers with the Go toolchain into dir.
func buildWorkers(t *testing.T, dir string, names ...string) {
	t.Helper()
	for _, w := range names {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, w+".wasm"), "../../examples/workers/"+w)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build example worker %s: %v\n%s", w, err, out)
		}
	}
}

// hostDo sends a request with the given Host header and no credential.
func hostDo(t *testing.T, p *proc, method, host, path string, body string) *response {
	t.Helper()
	req, err := http.NewRequest(method, p.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return &response{status: res.StatusCode, header: res.Header, body: b}
}

// deployHTTP uploads a module with the admin key.
func deployHTTP(t *testing.T, p *proc, ns, name string, module []byte, md string, key string) *response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if md != "" {
		w, _ := mw.CreateFormField("metadata")
		io.WriteString(w, md)
	}
	fw, _ := mw.CreateFormFile("module", name+".wasm")
	fw.Write(module)
	mw.Close()
	return do(t, "PUT", p.url+"/v1/dispatch/namespaces/"+ns+"/scripts/"+name, &buf, "Content-Type", mw.FormDataContentType(), "Authorization", "Bearer "+key)
}

func TestDispatchE2E(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) { dispatchE2E(t, be) })
	}
}

func dispatchE2E(t *testing.T, be string) {
	dir := t.TempDir()
	buildWorkers(t, dir, "hello", "echo")
	b := newBackend(t, be)
	args := []string{"--domain", "example.test", "--rate-limit-anon", "100000/1m", "--dispatch-wall-limit", "2s"}
	p := startAllInOne(t, b, args...)
	cli := func(args ...string) (int, string) {
		t.Helper()
		return runBinary(t, append(args, "--url", p.url), []string{"DOTDO_API_KEY=" + adminKey})
	}
	hello := filepath.Join(dir, "hello.wasm")

	// Deploy with the CLI; call by path and by host name.
	if code, out := cli("deploy", "--ns", "tenant", "--name", "hello", "--tag", "demo", hello); code != 0 || !strings.Contains(out, "version 1") {
		t.Fatalf("dotdo deploy = %d %s", code, out)
	}
	if r := do(t, "GET", p.url+"/dispatch/tenant/hello/", nil, "Authorization", ""); r.status != 200 || string(r.body) != "Hello from hello\n" {
		t.Fatalf("by path = %d %s", r.status, r.body)
	}
	if r := hostDo(t, p, "GET", "hello.tenant.example.test", "/any/path", ""); r.status != 200 || string(r.body) != "Hello from hello\n" {
		t.Fatalf("by host = %d %s", r.status, r.body)
	}
	if r := hostDo(t, p, "GET", "nope.tenant.example.test", "/", ""); r.status != 404 {
		t.Fatalf("unknown script by host = %d %s; want 404", r.status, r.body)
	}
	// Update, list, roll back, delete by tag.
	if code, out := cli("deploy", "--ns", "tenant", "--name", "hello", "--tag", "demo", "--env", "GREETING=Howdy", hello); code != 0 || !strings.Contains(out, "version 2") {
		t.Fatalf("second deploy = %d %s", code, out)
	}
	if r := hostDo(t, p, "GET", "hello.tenant.example.test", "/", ""); string(r.body) != "Howdy from hello\n" {
		t.Fatalf("after update = %d %s", r.status, r.body)
	}
	if code, out := cli("scripts", "list", "--ns", "tenant"); code != 0 || !strings.Contains(out, "hello") || !strings.Contains(out, "demo") {
		t.Fatalf("dotdo scripts list = %d %s", code, out)
	}
	if code, out := cli("scripts", "rollback", "--ns", "tenant", "--name", "hello"); code != 0 || !strings.Contains(out, "version 1") {
		t.Fatalf("rollback = %d %s", code, out)
	}
	if r := hostDo(t, p, "GET", "hello.tenant.example.test", "/", ""); string(r.body) != "Hello from hello\n" {
		t.Fatalf("after rollback = %d %s", r.status, r.body)
	}
	echo, _ := os.ReadFile(filepath.Join(dir, "echo.wasm"))
	if r := deployHTTP(t, p, "tenant", "echo", echo, `{"tags":["keep"],"limits":{"wallMs":1000,"memoryMb":48}}`, adminKey); r.status != 201 {
		t.Fatalf("deploy echo = %d %s", r.status, r.body)
	}
	if code, out := cli("scripts", "delete", "--ns", "tenant", "--tags", "demo"); code != 0 || !strings.Contains(out, "hello") {
		t.Fatalf("delete by tag = %d %s", code, out)
	}
	if r := hostDo(t, p, "GET", "hello.tenant.example.test", "/", ""); r.status != 404 {
		t.Fatalf("deleted script = %d %s; want 404", r.status, r.body)
	}

	// Echo by host: headers, body, status; the tenant's Authorization
	// header reaches its app on the host route; stderr is logged with the
	// request ID.
	r := hostDo(t, p, "POST", "echo.tenant.example.test", "/p?status=202&log=hello-stderr", "payload")
	if r.status != 202 || r.header.Get("X-Echo") != "yes" || !strings.Contains(string(r.body), `"body":"payload"`) {
		t.Fatalf("echo = %d %v %s", r.status, r.header, r.body)
	}
	rid := r.header.Get("X-Request-Id")
	p.waitLog("the script's stderr with its request ID", func(rec map[string]any) bool {
		return rec["msg"] == "script stderr" && rec["line"] == "hello-stderr" && rec["request_id"] == rid
	})

	// Limits through the real binary.
	start := time.Now()
	if r := hostDo(t, p, "GET", "echo.tenant.example.test", "/?loop=1", ""); r.status != 504 {
		t.Fatalf("loop = %d %s; want 504", r.status, r.body)
	}
	t.Logf("loop stopped after %v (limit 1000 ms, through the gateway)", time.Since(start))
	if r := deployHTTP(t, p, "tenant", "hog", wasmtest.MemoryHog(), `{"limits":{"memoryMb":16}}`, adminKey); r.status != 201 {
		t.Fatalf("deploy hog = %d %s", r.status, r.body)
	}
	if r := hostDo(t, p, "GET", "hog.tenant.example.test", "/", ""); r.status != 502 || !strings.Contains(string(r.body), "bad_gateway") {
		t.Fatalf("growing memory past the limit = %d %s; want 502", r.status, r.body)
	}
	if r := hostDo(t, p, "GET", "echo.tenant.example.test", "/after", ""); r.status != 200 {
		t.Fatalf("request after the limits = %d %s; want 200", r.status, r.body)
	}
	if r := deployHTTP(t, p, "tenant", "evil", wasmtest.Importing("env", "system"), "", adminKey); r.status != 422 || !strings.Contains(string(r.body), "env.system") {
		t.Fatalf("unknown import = %d %s; want 422", r.status, r.body)
	}

	// A custom host name reaches a script; the platform's own hosts
	// cannot be claimed.
	if r := deployHTTP(t, p, "tenant", "site", wasmtest.Minimal(), `{"hosts":["www.customer.example"]}`, adminKey); r.status != 201 {
		t.Fatalf("deploy with a custom host = %d %s", r.status, r.body)
	}
	if r := hostDo(t, p, "GET", "www.customer.example", "/", ""); r.status != 200 || string(r.body) != "ok" {
		t.Fatalf("by custom host = %d %s", r.status, r.body)
	}
	for _, h := range []string{"db.example.test", "example.test", "127.0.0.1"} {
		if r := deployHTTP(t, p, "tenant", "hijack", wasmtest.Minimal(), `{"hosts":["`+h+`"]}`, adminKey); r.status != 403 && r.status != 400 {
			t.Fatalf("claiming %s = %d %s; want 403 or 400", h, r.status, r.body)
		}
	}
	if r := hostDo(t, p, "GET", "db.example.test", "/health", ""); r.status != 200 || !strings.Contains(string(r.body), `"status"`) {
		t.Fatalf("the db host after the refused claims = %d %s", r.status, r.body)
	}

	// 200 concurrent requests by host name.
	var wg sync.WaitGroup
	errs := make(chan string, 200)
	for i := range 200 {
		wg.Go(func() {
			want := fmt.Sprintf("c-%d", i)
			req, _ := http.NewRequest("POST", p.url+"/"+want, strings.NewReader(want))
			req.Host = "echo.tenant.example.test"
			res, err := httpClient.Do(req)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer res.Body.Close()
			var got struct{ Path, Body string }
			body, _ := io.ReadAll(res.Body)
			json.Unmarshal(body, &got)
			if res.StatusCode != 200 || got.Path != "/"+want || got.Body != want {
				errs <- fmt.Sprintf("%d %s", res.StatusCode, body)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent request: %s", e)
	}

	// Permissions: deploy:write on the namespace.
	r = do(t, "POST", p.url+"/v1/auth/keys", `{"name":"acme deployer","permissions":["deploy:write","deploy:read"],"namespaces":["acme"]}`)
	if r.status != 201 {
		t.Fatalf("create key = %d %s", r.status, r.body)
	}
	acmeKey, _ := r.json(t)["secret"].(string)
	if r := do(t, "PUT", p.url+"/v1/dispatch/namespaces/acme", `{}`, "Authorization", "Bearer "+acmeKey); r.status != 201 {
		t.Fatalf("create namespace acme with its key = %d %s", r.status, r.body)
	}
	if r := deployHTTP(t, p, "tenant", "x", wasmtest.Minimal(), "", acmeKey); r.status != 403 {
		t.Fatalf("deploy to tenant with acme's key = %d %s; want 403", r.status, r.body)
	}
	if r := deployHTTP(t, p, "acme", "x", wasmtest.Minimal(), "", acmeKey); r.status != 201 {
		t.Fatalf("deploy to acme with its key = %d %s", r.status, r.body)
	}
	if r := do(t, "GET", p.url+"/v1/dispatch/namespaces/tenant/scripts", nil, "Authorization", "Bearer "+acmeKey); r.status != 403 {
		t.Fatalf("list tenant's scripts with acme's key = %d %s; want 403", r.status, r.body)
	}
	if r := do(t, "GET", p.url+"/v1/dispatch/namespaces/acme/scripts", nil, "Authorization", ""); r.status != 401 {
		t.Fatalf("list without a key = %d %s; want 401", r.status, r.body)
	}
	if r := do(t, "GET", p.url+"/v1/dispatch/namespaces", nil, "Authorization", "Bearer "+acmeKey); r.status != 200 || strings.Contains(string(r.body), `"tenant"`) || !strings.Contains(string(r.body), `"acme"`) {
		t.Fatalf("namespaces acme's key sees = %d %s; want acme only", r.status, r.body)
	}

	// A restart serves the first request from the compilation cache.
	p.stop()
	p2 := startAllInOne(t, b, args...)
	if r := hostDo(t, p2, "GET", "echo.tenant.example.test", "/again", ""); r.status != 200 {
		t.Fatalf("first request after restart = %d %s", r.status, r.body)
	}
	cache, _ := os.ReadDir(filepath.Join(b.dataDir, "wasm-cache"))
	if len(cache) == 0 {
		t.Errorf("%s/wasm-cache is empty", b.dataDir)
	}
}

// TestDispatchSplitE2E runs the dispatch service in its own process,
// behind a gateway that serves the REST routes and the script hosts
// through the dispatch service's Connect contract.
func TestDispatchSplitE2E(t *testing.T) {
	dir := t.TempDir()
	buildWorkers(t, dir, "hello")
	hello, _ := os.ReadFile(filepath.Join(dir, "hello.wasm"))
	b := newBackend(t, thingsdb.SQLite)
	if len(testdb.Backends()) > 1 {
		b = newBackend(t, thingsdb.Postgres)
	}
	db := startDB(t, b)
	disp := startProc(t, "dispatch", []string{"--services", "dispatch", "--db-url", db.url, "--data-dir", t.TempDir()},
		[]string{"DOTDO_INTERNAL_TOKEN=" + internalToken})
	gw := startGateway(t, db.url, "--dispatch-url", disp.url, "--domain", "example.test")

	// The dispatch process answers only callers with the service credential.
	if r := do(t, "GET", disp.url+"/v1/dispatch/namespaces", nil); r.status != 401 {
		t.Fatalf("dispatch process without the internal token = %d %s; want 401", r.status, r.body)
	}
	if r := deployHTTP(t, gw, "tenant", "hello", hello, `{"tags":["demo"],"hosts":["hello.customer.example"]}`, adminKey); r.status != 201 {
		t.Fatalf("deploy through the gateway = %d %s", r.status, r.body)
	}
	if r := do(t, "GET", gw.url+"/dispatch/tenant/hello/", nil, "Authorization", ""); r.status != 200 || string(r.body) != "Hello from hello\n" {
		t.Fatalf("by path = %d %s", r.status, r.body)
	}
	if r := hostDo(t, gw, "GET", "hello.tenant.example.test", "/", ""); r.status != 200 || string(r.body) != "Hello from hello\n" {
		t.Fatalf("by host = %d %s", r.status, r.body)
	}
	// The gateway learns custom hosts from the store within its refresh.
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := hostDo(t, gw, "GET", "hello.customer.example", "/", "")
		if r.status == 200 && string(r.body) == "Hello from hello\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("by custom host = %d %s", r.status, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if r := deployHTTP(t, gw, "tenant", "hello", hello, `{"tags":["demo"],"env":{"GREETING":"Howdy"}}`, adminKey); r.status != 200 {
		t.Fatalf("update = %d %s", r.status, r.body)
	}
	if r := hostDo(t, gw, "GET", "hello.tenant.example.test", "/", ""); string(r.body) != "Howdy from hello\n" {
		t.Fatalf("after update = %d %s", r.status, r.body)
	}
	if r := do(t, "POST", gw.url+"/v1/dispatch/namespaces/tenant/scripts/hello/rollback", nil); r.status != 200 {
		t.Fatalf("rollback = %d %s", r.status, r.body)
	}
	if r := hostDo(t, gw, "GET", "hello.tenant.example.test", "/", ""); string(r.body) != "Hello from hello\n" {
		t.Fatalf("after rollback = %d %s", r.status, r.body)
	}
	// Errors cross the contract unchanged.
	if r := deployHTTP(t, gw, "tenant", "evil", wasmtest.Importing("env", "x"), "", adminKey); r.status != 422 || !strings.Contains(string(r.body), "env.x") {
		t.Fatalf("bad module = %d %s; want 422", r.status, r.body)
	}
	if r := deployHTTP(t, gw, "tenant", "spin", wasmtest.Loop(), `{"limits":{"wallMs":200}}`, adminKey); r.status != 201 {
		t.Fatalf("deploy loop = %d %s", r.status, r.body)
	}
	if r := hostDo(t, gw, "GET", "spin.tenant.example.test", "/", ""); r.status != 504 || !strings.Contains(string(r.body), `"timeout"`) {
		t.Fatalf("loop = %d %s; want 504", r.status, r.body)
	}
	if r := do(t, "DELETE", gw.url+"/v1/dispatch/namespaces/tenant/scripts?tags=demo", nil); r.status != 200 || !strings.Contains(string(r.body), "hello") {
		t.Fatalf("delete by tag = %d %s", r.status, r.body)
	}
	if r := hostDo(t, gw, "GET", "hello.tenant.example.test", "/", ""); r.status != 404 {
		t.Fatalf("deleted script = %d %s; want 404", r.status, r.body)
	}
	if r := do(t, "GET", gw.url+"/health", nil); r.status != 200 || !strings.Contains(string(r.body), `"dispatch":{"status":"ok"}`) {
		t.Fatalf("health = %d %s; want dispatch ok", r.status, r.body)
	}
}
