package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/dispatch/wasmtest"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

func TestDefaultNamespaces(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	r := e.do("GET", "/v1/dispatch/namespaces", nil)
	if r.status != 200 {
		t.Fatalf("GET namespaces = %s", r)
	}
	var out struct{ Items []NamespaceInfo }
	json.Unmarshal(r.body, &out)
	var names []string
	for _, n := range out.Items {
		names = append(names, n.Name)
	}
	if strings.Join(names, ",") != "internal,public,tenant" {
		t.Errorf("namespaces = %v; want internal, public, tenant", names)
	}
	if r := e.do("DELETE", "/v1/dispatch/namespaces/tenant", nil); r.status != 409 {
		t.Errorf("DELETE built-in namespace = %s; want 409", r)
	}
	// A restart does not change them.
	if err := e.s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestDeployServeUpdateRollbackDelete(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{HostPattern: "{script}.{ns}.example.test"})
		hello := worker(t, "hello")
		if r := e.deploy("tenant", "hello", hello, Metadata{Tags: []string{"demo", "v1"}}); r.status != 201 {
			t.Fatalf("first deploy = %s; want 201", r)
		}
		if r := e.do("GET", "/dispatch/tenant/hello/x", nil); r.status != 200 || string(r.body) != "Hello from hello\n" {
			t.Fatalf("GET by path = %s; want 200 Hello from hello", r)
		}
		if r := e.do("GET", "/anything", nil, "Host", "hello.tenant.example.test"); r.status != 200 || string(r.body) != "Hello from hello\n" {
			t.Fatalf("GET by host = %s; want 200 Hello from hello", r)
		}
		// Update: a new version with an environment variable.
		if r := e.deploy("tenant", "hello", hello, Metadata{Tags: []string{"demo", "v2"}, Env: map[string]string{"GREETING": "Howdy"}}); r.status != 200 {
			t.Fatalf("second deploy = %s; want 200", r)
		}
		if r := e.do("GET", "/dispatch/tenant/hello", nil); string(r.body) != "Howdy from hello\n" {
			t.Fatalf("after update = %s; want Howdy", r)
		}
		// A bad module is refused and the running version stays.
		if r := e.deploy("tenant", "hello", []byte("\x00asm\x01\x00\x00\x00garbage"), nil); r.status != 422 {
			t.Fatalf("deploy of a broken module = %s; want 422", r)
		}
		if r := e.do("GET", "/dispatch/tenant/hello", nil); string(r.body) != "Howdy from hello\n" {
			t.Fatalf("after refused deploy = %s; want the running version", r)
		}
		r := e.do("GET", "/v1/dispatch/namespaces/tenant/scripts/hello/versions", nil)
		if !contains(string(r.body), `"version":2`) || contains(string(r.body), `"version":3`) {
			t.Fatalf("versions = %s; want 1 and 2", r)
		}
		if r := e.do("POST", "/v1/dispatch/namespaces/tenant/scripts/hello/rollback", nil); r.status != 200 {
			t.Fatalf("rollback = %s", r)
		}
		if r := e.do("GET", "/dispatch/tenant/hello", nil); string(r.body) != "Hello from hello\n" {
			t.Fatalf("after rollback = %s; want version 1's greeting", r)
		}
		if r := e.do("POST", "/v1/dispatch/namespaces/tenant/scripts/hello/rollback", nil); r.status != 409 {
			t.Fatalf("second rollback = %s; want 409 (no earlier version)", r)
		}
		e.mustDeploy("tenant", "other", hello, Metadata{Tags: []string{"keep"}})
		r = e.do("GET", "/v1/dispatch/namespaces/tenant/scripts?tags=demo,v1", nil)
		if !contains(string(r.body), `"name":"hello"`) || contains(string(r.body), `"name":"other"`) {
			t.Fatalf("list by tags = %s; want hello only", r)
		}
		if r := e.do("DELETE", "/v1/dispatch/namespaces/tenant/scripts", nil); r.status != 400 {
			t.Fatalf("delete without tags = %s; want 400", r)
		}
		if r := e.do("DELETE", "/v1/dispatch/namespaces/tenant/scripts?tags=demo", nil); r.status != 200 || !contains(string(r.body), `"hello"`) {
			t.Fatalf("delete by tag = %s", r)
		}
		if r := e.do("GET", "/dispatch/tenant/hello", nil); r.status != 404 || r.errCode(t) != "not_found" {
			t.Fatalf("deleted script = %s; want 404 not_found", r)
		}
		if r := e.do("GET", "/dispatch/tenant/other", nil); r.status != 200 {
			t.Fatalf("untagged script = %s; want it kept", r)
		}
		// Nothing of the deleted script is left in the store.
		res, err := e.db.List(context.Background(), connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Where: `{"script":"hello"}`, Type: typeChunk}))
		if err != nil || len(res.Msg.Items) != 0 {
			t.Fatalf("chunks of the deleted script: %v, %v; want none", res, err)
		}
	})
}

func TestEchoCGI(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	e.mustDeploy("tenant", "echo", worker(t, "echo"), nil)
	r := e.do("POST", "/dispatch/tenant/echo/a/b?x=1&y=2&status=201", strings.NewReader("the body"),
		"X-Custom", "yes", "Content-Type", "text/plain", "Authorization", "Bearer sk_live_secret")
	if r.status != 201 || r.header.Get("X-Echo") != "yes" {
		t.Fatalf("echo = %s %v; want 201 with X-Echo", r, r.header)
	}
	if r.header.Get("Content-Security-Policy") != "sandbox" {
		t.Errorf("path route response without Content-Security-Policy: sandbox")
	}
	var got struct {
		Method  string
		Path    string
		Query   map[string][]string
		Headers map[string]string
		Body    string
	}
	json.Unmarshal(r.body, &got)
	if got.Method != "POST" || got.Path != "/a/b" || got.Query["y"][0] != "2" || got.Body != "the body" ||
		got.Headers["X-Custom"] != "yes" || got.Headers["Content-Type"] != "text/plain" {
		t.Fatalf("echo saw %+v", got)
	}
	if _, ok := got.Headers["Authorization"]; ok {
		t.Errorf("the worker saw the caller's dotdo credential on the path route")
	}
}

func TestInfiniteLoopStopped(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	const limit = 300
	e.mustDeploy("tenant", "spin", wasmtest.Loop(), Metadata{Limits: Limits{WallMS: limit}})
	e.mustDeploy("tenant", "echo", worker(t, "echo"), Metadata{Limits: Limits{WallMS: limit}})
	for _, c := range []struct{ name, path string }{{"hand-written loop", "/dispatch/tenant/spin"}, {"Go loop", "/dispatch/tenant/echo?loop=1"}} {
		start := time.Now()
		r := e.do("GET", c.path, nil)
		took := time.Since(start)
		if r.status != 504 || r.errCode(t) != "timeout" {
			t.Fatalf("%s = %s; want 504 timeout", c.name, r)
		}
		t.Logf("%s: stopped after %v (limit %d ms)", c.name, took, limit)
	}
	if r := e.do("GET", "/dispatch/tenant/echo?x=1", nil); r.status != 200 {
		t.Fatalf("next request to the same script = %s; want 200", r)
	}
	// The stopped instances gave their memory back.
	if n := e.s.mem.inUse(); n != 0 {
		t.Errorf("%d linear memories still in use after the requests ended", n)
	}
}

func TestMemoryLimitTraps(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	e.mustDeploy("tenant", "hog", wasmtest.MemoryHog(), Metadata{Limits: Limits{MemoryMB: 16}})
	e.mustDeploy("tenant", "echo", worker(t, "echo"), Metadata{Limits: Limits{MemoryMB: 48}})
	for _, path := range []string{"/dispatch/tenant/hog", "/dispatch/tenant/echo?alloc=64"} {
		r := e.do("GET", path, nil)
		if r.status != 502 || r.errCode(t) != "bad_gateway" {
			t.Fatalf("%s = %s; want 502 bad_gateway", path, r)
		}
	}
	if r := e.do("GET", "/dispatch/tenant/echo?alloc=8", nil); r.status != 200 {
		t.Fatalf("echo within its memory = %s; want 200", r)
	}
	if n := e.s.mem.inUse(); n != 0 {
		t.Errorf("%d linear memories still in use after the requests ended", n)
	}
	// A module that needs more memory at start than the limit is refused.
	if r := e.deploy("tenant", "big", wasmtest.BigMemory(1024), Metadata{Limits: Limits{MemoryMB: 16}}); r.status != 422 {
		t.Fatalf("deploy of a 64 MiB module under 16 MiB = %s; want 422", r)
	}
}

func TestImportsRefused(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	e.mustDeploy("tenant", "w", wasmtest.Minimal(), nil)
	for _, c := range []struct {
		name   string
		module []byte
		want   string
	}{
		{"unknown module", wasmtest.Importing("env", "evil"), "env.evil"},
		{"unknown host function", wasmtest.Importing("dotdo", "exec"), "dotdo.exec"},
		{"not wasm", []byte("#!/bin/sh\necho hi\n"), "not a WebAssembly module"},
		{"no _start", (&wasmtest.Module{MemoryMin: 1}).Encode(), "_start"},
	} {
		r := e.deploy("tenant", "w", c.module, nil)
		if r.status != 422 || !contains(string(r.body), c.want) {
			t.Errorf("%s: deploy = %s; want 422 naming %q", c.name, r, c.want)
		}
	}
	if r := e.do("GET", "/dispatch/tenant/w", nil); r.status != 200 || string(r.body) != "ok" {
		t.Fatalf("after refused deploys = %s; want the first version", r)
	}
	sc, err := e.s.Script(context.Background(), "tenant", "w")
	if err != nil || sc.Current.Version != 1 || len(sc.Stored) != 1 {
		t.Fatalf("script after refused deploys: %+v, %v; want version 1 only", sc, err)
	}
}

func TestThingsStayInTheirNamespace(t *testing.T) {
	eachBackend(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		e.putNamespace("acme", NamespaceInput{})
		notes := worker(t, "notes")
		e.mustDeploy("tenant", "notes", notes, nil)
		e.mustDeploy("acme", "notes", notes, nil)
		if r := e.do("PUT", "/dispatch/tenant/notes/notes/n1", strings.NewReader("secret of tenant")); r.status != 200 {
			t.Fatalf("put note = %s", r)
		}
		if r := e.do("GET", "/dispatch/tenant/notes/notes/n1", nil); r.status != 200 || !contains(string(r.body), "secret of tenant") {
			t.Fatalf("get own note = %s", r)
		}
		if r := e.do("GET", "/dispatch/acme/notes/notes/n1", nil); r.status != 404 || !contains(string(r.body), "not_found") {
			t.Fatalf("another namespace's script read it: %s; want 404", r)
		}
		// The note is a thing in namespace tenant, as the db API shows.
		res, err := e.db.Get(context.Background(), connect.NewRequest(&dbv1.GetRequest{Ns: "tenant", Id: "n1"}))
		if err != nil || !contains(string(res.Msg.Thing.Data), "secret of tenant") {
			t.Fatalf("thing tenant/n1: %v", err)
		}
		if _, err := e.db.Get(context.Background(), connect.NewRequest(&dbv1.GetRequest{Ns: "acme", Id: "n1"})); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("thing acme/n1 = %v; want not found", err)
		}
		if r := e.do("GET", "/dispatch/tenant/notes/notes", nil); !contains(string(r.body), `"id":"n1"`) {
			t.Fatalf("list = %s", r)
		}
	})
}

func TestFetchPolicy(t *testing.T) {
	allowedSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from allowed "+r.URL.Path)
	}))
	defer allowedSrv.Close()
	var mu sync.Mutex
	var seen []string
	otherSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.URL.String())
		mu.Unlock()
		io.WriteString(w, "other")
	}))
	defer otherSrv.Close()
	handler := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		target := r.Header.Get("Dotdo-Fetch-Url")
		if strings.Contains(target, "blocked") {
			http.Error(w, "refused by the outbound handler", http.StatusForbidden)
			return
		}
		io.WriteString(w, "handled "+target+" for "+r.Header.Get("Dotdo-Namespace")+"/"+r.Header.Get("Dotdo-Script"))
	}))
	defer handler.Close()

	e := newEnv(t, thingsdb.SQLite, Config{AllowPrivateEgress: true}) // the test servers are on loopback
	host := strings.TrimPrefix(allowedSrv.URL, "http://")
	e.putNamespace("listed", NamespaceInput{Outbound: Outbound{Mode: OutboundAllowlist, Allow: []string{host}}, Limits: Limits{Subrequests: 3}})
	e.putNamespace("proxied", NamespaceInput{Outbound: Outbound{Mode: OutboundHandler, Handler: handler.URL}})
	notes := worker(t, "notes")
	for _, ns := range []string{"tenant", "listed", "proxied"} {
		e.mustDeploy(ns, "notes", notes, nil)
	}
	if r := e.do("GET", "/dispatch/listed/notes/fetch?url="+allowedSrv.URL+"/hi", nil); r.status != 200 || !contains(string(r.body), "from allowed /hi") {
		t.Fatalf("allowed fetch = %s", r)
	}
	if r := e.do("GET", "/dispatch/listed/notes/fetch?url="+otherSrv.URL+"/x", nil); r.status != 502 || !contains(string(r.body), "forbidden") || !contains(string(r.body), "allowlist") {
		t.Fatalf("fetch outside the allowlist = %s; want the module to see forbidden", r)
	}
	if r := e.do("GET", "/dispatch/tenant/notes/fetch?url="+otherSrv.URL+"/y", nil); r.status != 502 || !contains(string(r.body), "allows no outbound") {
		t.Fatalf("fetch with no egress = %s; want forbidden", r)
	}
	mu.Lock()
	if len(seen) != 0 {
		t.Errorf("refused fetches reached the server: %v", seen)
	}
	mu.Unlock()
	if r := e.do("GET", "/dispatch/proxied/notes/fetch?url=http://example.com/a", nil); r.status != 200 || !contains(string(r.body), "handled http://example.com/a for proxied/notes") {
		t.Fatalf("fetch through the handler = %s", r)
	}
	if r := e.do("GET", "/dispatch/proxied/notes/fetch?url=http://blocked.example/", nil); r.status != 200 || !contains(string(r.body), `"status":403`) {
		t.Fatalf("fetch refused by the handler = %s; want the handler's 403", r)
	}
	// The subrequest limit (3 in namespace listed) holds.
	r := e.do("GET", "/dispatch/listed/notes/fetch?n=5&url="+allowedSrv.URL, nil)
	var got struct {
		OK     int
		Errors []string
	}
	json.Unmarshal(r.body, &got)
	if got.OK != 3 || strings.Join(got.Errors, ",") != "rate_limited,rate_limited" {
		t.Fatalf("5 fetches under a limit of 3 = %s; want 3 ok and 2 rate_limited", r)
	}
}

func TestResponseLimit(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	e.mustDeploy("tenant", "big", wasmtest.Respond("Content-Type: text/plain\n\n"+strings.Repeat("x", 5000)), Metadata{Limits: Limits{ResponseBytes: 1024}})
	if r := e.do("GET", "/dispatch/tenant/big", nil); r.status != 502 || !contains(string(r.body), "response limit") {
		t.Fatalf("big response = %s; want 502", r)
	}
	e.mustDeploy("tenant", "nocgi", wasmtest.Respond("just text"), nil)
	if r := e.do("GET", "/dispatch/tenant/nocgi", nil); r.status != 502 || !contains(string(r.body), "invalid CGI") {
		t.Fatalf("non-CGI output = %s; want 502", r)
	}
}

func TestConcurrentRequests(t *testing.T) {
	// A long queue timeout: under -race on a busy machine 200 Go
	// instances take more than the default 10 s to get through 8 slots.
	e := newEnv(t, thingsdb.SQLite, Config{QueueTimeout: 2 * time.Minute})
	e.mustDeploy("tenant", "echo", worker(t, "echo"), nil)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			want := fmt.Sprintf("request-%d", i)
			req, _ := http.NewRequest("POST", e.srv.URL+"/dispatch/tenant/echo/"+want, strings.NewReader(want))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer res.Body.Close()
			var got struct{ Path, Body string }
			b, _ := io.ReadAll(res.Body)
			json.Unmarshal(b, &got)
			if res.StatusCode != 200 || got.Path != "/"+want || got.Body != want {
				errs <- fmt.Errorf("request %d: %d %s", i, res.StatusCode, b)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestCompilationCacheSurvivesRestart(t *testing.T) {
	cacheDir := t.TempDir()
	e := newEnv(t, thingsdb.SQLite, Config{CacheDir: cacheDir})
	e.mustDeploy("tenant", "hello", worker(t, "hello"), nil)
	e.s.Close()
	entries, _ := os.ReadDir(cacheDir)
	if len(entries) == 0 {
		t.Fatalf("compilation cache %s is empty after a deploy", cacheDir)
	}
	e2 := newEnvOn(t, e.db, Config{CacheDir: cacheDir}, e.s.log, e.log, e.mu)
	if r := e2.do("GET", "/dispatch/tenant/hello", nil); r.status != 200 {
		t.Fatalf("first request after restart = %s", r)
	}
}

func TestPrivateNamespace(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{HostPattern: "{script}.{ns}.example.test"})
	e.mustDeploy("internal", "w", wasmtest.Minimal(), nil)
	if r := e.do("GET", "/dispatch/internal/w", nil); r.status != 401 {
		t.Fatalf("private script without credentials = %s; want 401", r)
	}
	if r := e.do("GET", "/", nil, "Host", "w.internal.example.test"); r.status != 404 {
		t.Fatalf("private script by host = %s; want 404", r)
	}
}

func TestBadInput(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	for _, c := range []struct {
		name, method, path, body, ct string
		want                         int
	}{
		{"bad namespace name", "PUT", "/v1/dispatch/namespaces/Bad_Name", "{}", "", 400},
		{"unknown field", "PUT", "/v1/dispatch/namespaces/x", `{"nope":1}`, "", 400},
		{"limit above max", "PUT", "/v1/dispatch/namespaces/x", `{"limits":{"wallMs":999999}}`, "", 400},
		{"bad outbound", "PUT", "/v1/dispatch/namespaces/x", `{"outbound":{"mode":"allowlist","allow":["a b"]}}`, "", 400},
		{"not multipart", "PUT", "/v1/dispatch/namespaces/tenant/scripts/x", "\x00asm", "application/wasm", 415},
		{"no namespace", "GET", "/v1/dispatch/namespaces/nope/scripts", "", "", 404},
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		h := []string{}
		if c.ct != "" {
			h = []string{"Content-Type", c.ct}
		}
		if r := e.do(c.method, c.path, body, h...); r.status != c.want {
			t.Errorf("%s: %s %s = %s; want %d", c.name, c.method, c.path, r, c.want)
		}
	}
	if r := e.deploy("tenant", "x", wasmtest.Minimal(), Metadata{Tags: strings.Split("a,b,c,d,e,f,g,h,i", ",")}); r.status != 400 {
		t.Errorf("9 tags = %s; want 400", r)
	}
	if r := e.deploy("tenant", "x", wasmtest.Minimal(), Metadata{Env: map[string]string{"PATH_INFO": "x"}}); r.status != 400 {
		t.Errorf("env overriding CGI = %s; want 400", r)
	}
	if r := e.deploy("tenant", "x", wasmtest.Minimal(), Metadata{Limits: Limits{WallMS: 999999}}); r.status != 400 {
		t.Errorf("script limit above namespace = %s; want 400", r)
	}
	if r := e.do("GET", "/v1/dispatch/namespaces/tenant/scripts", nil); !contains(string(r.body), `"items":[]`) {
		t.Errorf("refused deploys left scripts: %s", r)
	}
}

// TestMemoryNotShared checks that an instance never sees memory an
// earlier one wrote, though memories are reused.
func TestMemoryNotShared(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{})
	e.mustDeploy("tenant", "snoop", wasmtest.Snoop(), nil)
	for i := range 20 {
		if r := e.do("GET", "/dispatch/tenant/snoop", nil); r.status != 200 || string(r.body) != "clean" {
			t.Fatalf("request %d = %s; want clean memory", i, r)
		}
	}
}

func TestCustomHosts(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{HostPattern: "{script}.{ns}.example.test", Reserved: func(h string) bool { return h == "api.example.test" }})
	e.putNamespace("acme", NamespaceInput{})
	hello := worker(t, "hello")
	e.mustDeploy("acme", "site", hello, map[string]any{"hosts": []string{"www.acme.example", "Acme.Example."}})
	for _, host := range []string{"www.acme.example", "acme.example:8080", "site.acme.example.test"} {
		if r := e.do("GET", "/", nil, "Host", host); r.status != 200 || string(r.body) != "Hello from site\n" {
			t.Fatalf("GET via %s = %s", host, r)
		}
	}
	// A host reaches one script only, and never the platform's own.
	if r := e.deploy("tenant", "thief", hello, map[string]any{"hosts": []string{"www.acme.example"}}); r.status != 409 {
		t.Fatalf("claiming a taken host = %s; want 409", r)
	}
	if r := e.deploy("tenant", "thief", hello, map[string]any{"hosts": []string{"api.example.test"}}); r.status != 403 {
		t.Fatalf("claiming the API's host = %s; want 403", r)
	}
	for _, bad := range []string{"localhost", "127.0.0.1", "a..b", "x_y.example"} {
		if r := e.deploy("tenant", "thief", hello, map[string]any{"hosts": []string{bad}}); r.status != 400 {
			t.Errorf("host %q = %s; want 400", bad, r)
		}
	}
	if r := e.do("GET", "/dispatch/tenant/thief", nil); r.status != 404 {
		t.Fatalf("refused deploys created the script: %s", r)
	}
	// A deploy without hosts keeps them; an empty list drops them.
	e.mustDeploy("acme", "site", hello, Metadata{Env: map[string]string{"GREETING": "Hi"}})
	if r := e.do("GET", "/", nil, "Host", "www.acme.example"); string(r.body) != "Hi from site\n" {
		t.Fatalf("after a deploy without hosts = %s", r)
	}
	e.mustDeploy("acme", "site", hello, map[string]any{"hosts": []string{"acme.example"}})
	if e.s.MatchHost("www.acme.example") || !e.s.MatchHost("acme.example") {
		t.Fatalf("after replacing the hosts: www %v, bare %v; want false, true", e.s.MatchHost("www.acme.example"), e.s.MatchHost("acme.example"))
	}
	// Now free, the host can go to another script; a restart loads them.
	e.mustDeploy("tenant", "other", hello, map[string]any{"hosts": []string{"www.acme.example"}})
	e2 := newEnvOn(t, e.db, Config{}, e.s.log, e.log, e.mu)
	if r := e2.do("GET", "/", nil, "Host", "www.acme.example"); string(r.body) != "Hello from other\n" {
		t.Fatalf("after restart = %s", r)
	}
	if r := e.do("DELETE", "/v1/dispatch/namespaces/tenant/scripts/other", nil); r.status != 204 {
		t.Fatalf("delete = %s", r)
	}
	if e.s.MatchHost("www.acme.example") {
		t.Fatalf("a deleted script's host still matches")
	}
}

// TestFetchRefusesPrivateAddresses checks that an allowlist cannot open
// loopback or link-local addresses to tenant code unless the operator
// allows it.
func TestFetchRefusesPrivateAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a fetch reached the loopback server: %s", r.URL)
	}))
	defer srv.Close()
	e := newEnv(t, thingsdb.SQLite, Config{})
	host := strings.TrimPrefix(srv.URL, "http://")
	e.putNamespace("greedy", NamespaceInput{Outbound: Outbound{Mode: OutboundAllowlist, Allow: []string{host, "localhost", "169.254.169.254"}}})
	e.mustDeploy("greedy", "notes", worker(t, "notes"), nil)
	for _, u := range []string{srv.URL + "/", "http://localhost:" + strings.Split(host, ":")[1] + "/", "http://169.254.169.254/latest/meta-data/"} {
		if r := e.do("GET", "/dispatch/greedy/notes/fetch?url="+u, nil); r.status != 502 || !contains(string(r.body), "forbidden") {
			t.Errorf("fetch %s = %s; want forbidden inside the module", u, r)
		}
	}
}

// With room for one compiled module, scripts called in turn evict each
// other and are compiled again from the cache; each answers every time.
// A module a request is running is never closed under it: the limit is
// exceeded until the request ends.
func TestCompiledModulesEvicted(t *testing.T) {
	e := newEnv(t, thingsdb.SQLite, Config{CacheDir: t.TempDir(), MaxCompiled: 1})
	for _, n := range []string{"a", "b", "c"} {
		e.mustDeploy("tenant", n, wasmtest.Respond("Content-Type: text/plain\n\nscript "+n), nil)
	}
	if n, _ := e.s.eng.stats(); n != 1 {
		t.Fatalf("compiled modules in memory after three deploys = %d; want 1", n)
	}
	for round := 0; round < 3; round++ {
		for _, n := range []string{"a", "b", "c"} {
			if r := e.do("GET", "/dispatch/tenant/"+n, nil); r.status != 200 || string(r.body) != "script "+n {
				t.Fatalf("round %d, script %s = %s; want 200 script %s", round, n, r, n)
			}
			if in, _ := e.s.eng.stats(); in != 1 {
				t.Fatalf("compiled modules in memory = %d; want 1", in)
			}
		}
	}
	if _, ev := e.s.eng.stats(); ev < 9 {
		t.Errorf("evictions = %d; want at least 9 (one per request after the first deploy)", ev)
	}

	// A long request holds its module: calls to other scripts meanwhile
	// cannot evict it, and it ends by its own limit, not by a closed module.
	e.mustDeploy("tenant", "spin", wasmtest.Loop(), Metadata{Limits: Limits{WallMS: 500}})
	done := make(chan response, 1)
	go func() { done <- e.do("GET", "/dispatch/tenant/spin", nil) }()
	waitUntil(t, "the loop to start", func() bool {
		e.s.eng.mu.Lock()
		defer e.s.eng.mu.Unlock()
		for _, c := range e.s.eng.compiled {
			if c.refs > 0 {
				return true
			}
		}
		return false
	})
	for _, n := range []string{"a", "b"} {
		if r := e.do("GET", "/dispatch/tenant/"+n, nil); r.status != 200 {
			t.Fatalf("script %s beside the loop = %s; want 200", n, r)
		}
	}
	if in, _ := e.s.eng.stats(); in != 2 {
		t.Errorf("compiled modules in memory beside a running one = %d; want 2 (the running one and the newest)", in)
	}
	if r := <-done; r.status != 504 || r.errCode(t) != "timeout" {
		t.Fatalf("loop = %s; want 504 timeout", r)
	}
	if r := e.do("GET", "/dispatch/tenant/c", nil); r.status != 200 {
		t.Fatalf("script c after the loop = %s; want 200", r)
	}
	if in, _ := e.s.eng.stats(); in != 1 {
		t.Errorf("compiled modules in memory once nothing runs = %d; want 1", in)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
