//go:build unix

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/mcp/mcptest"
	"github.com/dotdo/dotdo/internal/testdb"
)

// The MCP end-to-end tests drive the built binary with the SDK's client:
// over Streamable HTTP through the real gateway, and over stdio as
// `dotdo mcp`, in both of its modes.

const mcpPublicURL = "https://api.example.test"

// bearerTransport adds a bearer credential (and optionally an Origin) to
// every request of the SDK client.
type bearerTransport struct {
	token, origin string
}

func (b bearerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	if b.token != "" {
		r.Header.Set("Authorization", "Bearer "+b.token)
	}
	if b.origin != "" {
		r.Header.Set("Origin", b.origin)
	}
	return httpClient.Transport.RoundTrip(r)
}

// mcpHTTP connects an SDK client to the process's /mcp with token.
func mcpHTTP(t *testing.T, p *proc, token string) *sdk.ClientSession {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	tr := &sdk.StreamableClientTransport{Endpoint: p.url + "/mcp", HTTPClient: &http.Client{Transport: bearerTransport{token: token}}, DisableStandaloneSSE: true}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e", Version: "1"}, nil).Connect(ctx, tr, nil)
	if err != nil {
		t.Fatalf("MCP initialize over HTTP: %v", err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

func mcpCall(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): protocol error %v; want a tool result", tool, args, err)
	}
	return res
}

// mcpKey creates an API key over REST and returns its secret.
func mcpKey(t *testing.T, p *proc, body string) string {
	t.Helper()
	r := do(t, "POST", p.url+"/v1/auth/keys", body)
	if r.status != http.StatusCreated {
		t.Fatalf("create key %s: %d %s", body, r.status, r.body)
	}
	return r.json(t)["secret"].(string)
}

// mcpQueue creates a queue over REST.
func mcpQueue(t *testing.T, p *proc, name string) {
	t.Helper()
	if r := do(t, "PUT", p.url+"/v1/queues/"+name, "{}"); r.status >= 300 {
		t.Fatalf("create queue %s: %d %s", name, r.status, r.body)
	}
}

// mcpFixtures creates what mcptest.Script needs beside the namespace: the
// queue named ns, the task mcp-task of ns, and a verified GitHub webhook.
func mcpFixtures(t *testing.T, p *proc, ns string) {
	t.Helper()
	mcpQueue(t, p, ns)
	task := `{"schedule":"@every 1h","action":{"type":"queue","queue":"` + ns + `","body":"{}"}}`
	if r := do(t, "PUT", p.url+"/v1/schedule/tasks/mcp-task?ns="+ns, task); r.status >= 300 {
		t.Fatalf("create task: %d %s", r.status, r.body)
	}
	h, body := mcptest.GitHubDelivery()
	hdr := []string{"Authorization", ""}
	for k, v := range h {
		hdr = append(hdr, k, v)
	}
	r := do(t, "POST", p.url+"/webhooks/github", string(body), hdr...)
	if r.status >= 300 {
		t.Fatalf("GitHub webhook: %d %s", r.status, r.body)
	}
	// Let its processing finish: webhook_replay answers 409 while the
	// event is being processed, and the scripts replay it.
	id, _ := r.json(t)["id"].(string)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		ev := do(t, "GET", p.url+"/v1/webhooks/events/"+id, nil)
		if ev.status != http.StatusOK {
			t.Fatalf("GET webhook event %s: %d %s", id, ev.status, ev.body)
		}
		if st := ev.json(t)["status"]; st != "received" && st != "processing" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook event %s still %v after 10 s", id, ev.json(t)["status"])
		}
	}
}

// restSnapshot is what the MCP tools could change, read over REST as the
// admin.
func restSnapshot(t *testing.T, p *proc, nss ...string) string {
	t.Helper()
	var b strings.Builder
	for _, ns := range nss {
		r := do(t, "GET", p.url+"/v1/things/"+ns+"?limit=1000", nil)
		fmt.Fprintf(&b, "%s: %d %s\n", ns, r.status, r.body)
		r = do(t, "GET", p.url+"/v1/things/"+ns+"/a/related?limit=1000", nil)
		fmt.Fprintf(&b, "%s related: %d %s\n", ns, r.status, r.body)
	}
	r := do(t, "GET", p.url+"/v1/queues/mcp-e2e/stats", nil)
	var qs map[string]any
	json.Unmarshal(r.body, &qs)
	fmt.Fprintf(&b, "queue backlog=%v delayed=%v\n", qs["backlog"], qs["delayed"])
	r = do(t, "GET", p.url+"/v1/schedule/tasks/mcp-task/runs?ns=mcp-e2e", nil)
	var runs struct {
		Items []any `json:"items"`
	}
	json.Unmarshal(r.body, &runs)
	fmt.Fprintf(&b, "runs: %d\n", len(runs.Items))
	r = do(t, "GET", p.url+"/v1/webhooks/events", nil)
	var evs struct {
		Items []map[string]any `json:"items"`
	}
	json.Unmarshal(r.body, &evs)
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "webhook %v\n", e["id"])
	}
	r = do(t, "GET", p.url+"/v1/auth/keys", nil)
	var keys struct {
		Items []map[string]any `json:"items"`
	}
	json.Unmarshal(r.body, &keys)
	for _, k := range keys.Items {
		fmt.Fprintf(&b, "key %v revoked=%v\n", k["id"], k["revokedAt"])
	}
	return b.String()
}

func mcpBackends(t *testing.T) []string {
	return testdb.Backends()
}

// TestMCPStreamableHTTP lists and calls every tool through the gateway of
// the built binary, as the admin, a viewer and a tenant.
func TestMCPStreamableHTTP(t *testing.T) {
	for _, name := range mcpBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := startAllInOne(t, newBackend(t, name), "--public-url", mcpPublicURL, "--mcp-page-size", "4", "--webhooks-github-secrets", mcptest.GitHubSecret)
			ctx := context.Background()
			cs := mcpHTTP(t, p, adminKey)
			tools, pages := mcptest.ListTools(ctx, t, cs)
			if pages < 5 || len(tools) < 24 {
				t.Errorf("%d tools in %d pages of 4; want every tool over several pages", len(tools), pages)
			}
			for _, tool := range tools {
				mcptest.CheckTool(t, tool)
			}
			mcpFixtures(t, p, "mcp-e2e")
			out := mcptest.CallAll(ctx, t, cs, tools, "mcp-e2e")
			if out["whoami"]["kind"] != "api_key" {
				t.Errorf("whoami = %v; want the admin API key", out["whoami"])
			}

			// A thing as a resource, through the template.
			up := mcpCall(t, cs, "db_upsert", map[string]any{"ns": "mcp-e2e", "id": "res:1", "type": "item", "data": map[string]any{"r": true}})
			uri := up.StructuredContent.(map[string]any)["thing"].(map[string]any)["uri"].(string)
			tpls, err := cs.ListResourceTemplates(ctx, nil)
			if err != nil || len(tpls.ResourceTemplates) != 1 || tpls.ResourceTemplates[0].URITemplate != "dotdo://things/{ns}/{id}" {
				t.Errorf("resources/templates/list = %v, %v", tpls, err)
			}
			rr, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri})
			if err != nil || len(rr.Contents) != 1 || !strings.Contains(rr.Contents[0].Text, `"r":true`) {
				t.Errorf("resources/read %s = %v, %v", uri, rr, err)
			}

			// A viewer: every tool that writes answers isError naming the
			// permission, and nothing changes.
			viewer := mcpHTTP(t, p, mcpKey(t, p, `{"name":"viewer","role":"viewer"}`))
			mcpCall(t, cs, "db_upsert", map[string]any{"ns": "mcp-e2e", "id": "a", "type": "item", "data": map[string]any{"v": 1}})
			before := restSnapshot(t, p, "mcp-e2e")
			prev := map[string]map[string]any{"api_key_create": {"key": map[string]any{"id": "some-key"}}}
			writes := 0
			for _, step := range mcptest.Script("mcp-e2e") {
				i := slices.IndexFunc(tools, func(x *sdk.Tool) bool { return x.Name == step.Tool })
				if i < 0 || !mcptest.Writes(tools[i]) {
					continue
				}
				writes++
				args := step.Args(prev)
				if res := mcpCall(t, viewer, step.Tool, args); !res.IsError || !strings.Contains(mcptest.Text(res), "missing permission") {
					t.Errorf("viewer: %s; want isError naming the missing permission", mcptest.Errorf(step.Tool, args, res))
				}
			}
			if writes < 5 {
				t.Errorf("only %d write tools tried", writes)
			}
			if after := restSnapshot(t, p, "mcp-e2e"); after != before {
				t.Errorf("the viewer changed state:\n%s\n%s", before, after)
			}

			// A tenant key cannot reach another namespace.
			tenant := mcpHTTP(t, p, mcpKey(t, p, `{"name":"tenant","role":"user","namespaces":["acme"]}`))
			before = restSnapshot(t, p, "mcp-e2e")
			if res := mcpCall(t, tenant, "db_upsert", map[string]any{"ns": "acme", "id": "x", "type": "item"}); res.IsError {
				t.Errorf("tenant write in acme: %s", mcptest.Text(res))
			}
			for _, tc := range []struct {
				tool string
				args map[string]any
			}{
				{"db_get", map[string]any{"ns": "mcp-e2e", "id": "a"}},
				{"db_list", map[string]any{"ns": "mcp-e2e"}},
				{"db_delete", map[string]any{"ns": "mcp-e2e", "id": "a"}},
				{"db_list", map[string]any{"ns": "_auth"}},
			} {
				if res := mcpCall(t, tenant, tc.tool, tc.args); !res.IsError || !strings.Contains(mcptest.Text(res), "missing permission") {
					t.Errorf("tenant: %s; want missing permission", mcptest.Errorf(tc.tool, tc.args, res))
				}
			}
			if after := restSnapshot(t, p, "mcp-e2e"); after != before {
				t.Errorf("the tenant changed another namespace:\n%s\n%s", before, after)
			}
		})
	}
}

// TestMCPHTTPAuth checks the edge of /mcp: 401 with the RFC 9728
// challenge, the metadata document, and Origin checks.
func TestMCPHTTPAuth(t *testing.T) {
	p := startAllInOne(t, newBackend(t, "sqlite"), "--public-url", mcpPublicURL, "--mcp-allowed-origins", "http://localhost:6274")
	const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`
	hdr := []string{"Accept", "application/json, text/event-stream", "MCP-Protocol-Version", "2025-06-18"}
	wantChallenge := `resource_metadata="` + mcpPublicURL + `/.well-known/oauth-protected-resource"`

	// Both protocol revisions are negotiated as asked.
	for _, v := range []string{"2025-06-18", "2025-11-25"} {
		body := strings.Replace(initBody, "2025-06-18", v, 1)
		r := do(t, "POST", p.url+"/mcp", body, "Accept", "application/json, text/event-stream", "Content-Type", "application/json", "MCP-Protocol-Version", v)
		if r.status != http.StatusOK || !strings.Contains(string(r.body), `"protocolVersion":"`+v+`"`) || !strings.Contains(string(r.body), `"tools"`) {
			t.Errorf("initialize with %s = %d %s; want the same revision and the tools capability", v, r.status, clipBody(r.body))
		}
	}

	r := do(t, "POST", p.url+"/mcp", initBody, append(hdr, "Authorization", "")...)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.header.Get("WWW-Authenticate"), wantChallenge) || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer ") {
		t.Errorf("POST /mcp without credentials = %d, WWW-Authenticate %q; want 401 with %s", r.status, r.header.Get("WWW-Authenticate"), wantChallenge)
	}
	r = do(t, "POST", p.url+"/mcp", initBody, append(hdr, "Authorization", "Bearer sk_live_notARealKey0000000000000000000000000000000")...)
	if w := r.header.Get("WWW-Authenticate"); r.status != http.StatusUnauthorized || !strings.Contains(w, `error="invalid_token"`) || !strings.Contains(w, wantChallenge) {
		t.Errorf("POST /mcp with a bad key = %d, WWW-Authenticate %q; want 401 invalid_token with %s", r.status, w, wantChallenge)
	}
	// Other routes keep the plain challenge.
	if r := do(t, "GET", p.url+"/v1/things/demo", nil, "Authorization", ""); r.header.Get("WWW-Authenticate") != "Bearer" {
		t.Errorf("GET /v1/things/demo without credentials: WWW-Authenticate %q; want Bearer", r.header.Get("WWW-Authenticate"))
	}

	// Every request is authenticated on its own: a key revoked while a
	// client is connected stops working at its next call.
	r = do(t, "POST", p.url+"/v1/auth/keys", `{"name":"short-lived","role":"viewer"}`)
	key := r.json(t)
	cs := mcpHTTP(t, p, key["secret"].(string))
	if res := mcpCall(t, cs, "whoami", map[string]any{}); res.IsError {
		t.Fatalf("whoami: %s", mcptest.Text(res))
	}
	if r := do(t, "DELETE", p.url+"/v1/auth/keys/"+key["key"].(map[string]any)["id"].(string), nil); r.status != http.StatusOK {
		t.Fatalf("revoke: %d %s", r.status, r.body)
	}
	if _, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: "whoami", Arguments: map[string]any{}}); err == nil {
		t.Errorf("whoami with a revoked key succeeded")
	}

	// Stateless: no server-to-client stream.
	if r := do(t, "GET", p.url+"/mcp", nil, "Accept", "text/event-stream"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /mcp = %d; want 405 (stateless server)", r.status)
	}

	for _, path := range []string{"/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"} {
		r := do(t, "GET", p.url+path, nil, "Authorization", "")
		var doc struct {
			Resource             string   `json:"resource"`
			AuthorizationServers []string `json:"authorization_servers"`
			BearerMethods        []string `json:"bearer_methods_supported"`
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &doc) != nil || doc.Resource != mcpPublicURL+"/mcp" ||
			!slices.Equal(doc.AuthorizationServers, []string{mcpPublicURL}) || !slices.Equal(doc.BearerMethods, []string{"header"}) {
			t.Errorf("GET %s = %d %s; want the RFC 9728 document for %s/mcp", path, r.status, r.body, mcpPublicURL)
		}
	}

	for _, tc := range []struct {
		origin string
		want   int
	}{
		{"https://evil.example", http.StatusForbidden},
		{"http://127.0.0.1:1", http.StatusForbidden},
		{mcpPublicURL, http.StatusOK},
		{"http://localhost:6274", http.StatusOK},
		{"", http.StatusOK},
	} {
		h := append(hdr, "Content-Type", "application/json")
		if tc.origin != "" {
			h = append(h, "Origin", tc.origin)
		}
		r := do(t, "POST", p.url+"/mcp", initBody, h...)
		if r.status != tc.want {
			t.Errorf("POST /mcp with Origin %q = %d %s; want %d", tc.origin, r.status, clipBody(r.body), tc.want)
		}
		if tc.want == http.StatusForbidden && errCode(t, r) != "forbidden" {
			t.Errorf("Origin %q: body %s; want the forbidden envelope", tc.origin, r.body)
		}
	}
}

// TestMCPStdio runs the built binary as `dotdo mcp`, driven by the SDK's
// CommandTransport: in process on a data directory, and against a running
// server's API with a key.
func TestMCPStdio(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	connect := func(t *testing.T, args ...string) *sdk.ClientSession {
		t.Helper()
		cmd := exec.Command(dotdoBin, append([]string{"mcp"}, args...)...)
		cmd.Env = baseEnv()
		logs := &logBuffer{}
		cmd.Stderr = logs
		cs, err := sdk.NewClient(&sdk.Implementation{Name: "e2e-stdio", Version: "1"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
		if err != nil {
			t.Fatalf("dotdo mcp %v: %v; stderr:\n%s", args, err, logs.tail(20))
		}
		t.Cleanup(func() {
			if err := cs.Close(); err != nil {
				t.Errorf("closing dotdo mcp: %v; stderr:\n%s", err, logs.tail(20))
			}
			if code := cmd.ProcessState.ExitCode(); code != 0 {
				t.Errorf("dotdo mcp %v exited %d; stderr:\n%s", args, code, logs.tail(20))
			}
		})
		return cs
	}

	t.Run("data-dir", func(t *testing.T) {
		cs := connect(t, "--data-dir", t.TempDir())
		tools, _ := mcptest.ListTools(ctx, t, cs)
		out := mcptest.CallAll(ctx, t, cs, tools, "stdio")
		if out["whoami"]["subject"] != "local-admin" {
			t.Errorf("whoami = %v; want the local admin", out["whoami"])
		}
	})

	t.Run("url", func(t *testing.T) {
		p := startAllInOne(t, newBackend(t, "sqlite"), "--webhooks-github-secrets", mcptest.GitHubSecret)
		mcpFixtures(t, p, "stdio-remote")
		cs := connect(t, "--url", p.url, "--key", adminKey)
		tools, _ := mcptest.ListTools(ctx, t, cs)
		out := mcptest.CallAll(ctx, t, cs, tools, "stdio-remote")
		if out["whoami"]["kind"] != "api_key" {
			t.Errorf("whoami = %v; want the admin key", out["whoami"])
		}
		// The remote calls are real: the server saw the thing deleted
		// and the key revoked.
		if r := do(t, "GET", p.url+"/v1/things/stdio-remote/a", nil); r.status != http.StatusNotFound {
			t.Errorf("GET the thing db_delete removed over stdio: %d %s; want 404", r.status, r.body)
		}
		key := out["api_key_revoke"]["key"].(map[string]any)
		if r := do(t, "GET", p.url+"/v1/auth/keys", nil); !strings.Contains(string(r.body), `"id":"`+key["id"].(string)+`"`) || key["revokedAt"] == nil {
			t.Errorf("key revoked over stdio: %v; keys %s", key, r.body)
		}
		viewer := connect(t, "--url", p.url, "--key", mcpKey(t, p, `{"name":"v","role":"viewer"}`))
		if res := mcpCall(t, viewer, "db_upsert", map[string]any{"ns": "stdio-remote", "id": "v", "type": "item"}); !res.IsError || !strings.Contains(mcptest.Text(res), "missing permission things:write") {
			t.Errorf("viewer over stdio: %s", mcptest.Errorf("db_upsert", nil, res))
		}
	})

	t.Run("help", func(t *testing.T) {
		code, out := runBinary(t, []string{"mcp", "--help"}, nil)
		if code != 0 || !strings.Contains(out, "--url") || !strings.Contains(out, "--data-dir") {
			t.Errorf("dotdo mcp --help: exit %d, %s", code, out)
		}
		code, out = runBinary(t, []string{"mcp", "--url", "http://127.0.0.1:1"}, nil)
		if code == 0 || !strings.Contains(out, "--key") {
			t.Errorf("dotdo mcp --url without a key: exit %d, %s", code, out)
		}
	})

	t.Run("bad key", func(t *testing.T) {
		p := startAllInOne(t, newBackend(t, "sqlite"))
		code, out := runBinary(t, []string{"mcp", "--url", p.url, "--key", "sk_live_wrong"}, nil)
		if code == 0 || !strings.Contains(out, "refused the key") {
			t.Errorf("dotdo mcp with a bad key: exit %d, %s", code, out)
		}
	})
}

// TestMCPSplitMode serves /mcp from a gateway process whose db service
// runs in another process: the tools reach it through the Connect client,
// with the same results.
func TestMCPSplitMode(t *testing.T) {
	db := startDB(t, newBackend(t, "sqlite"))
	gw := startGateway(t, db.url, "--services", "gateway,auth,mcp")
	ctx := context.Background()
	cs := mcpHTTP(t, gw, adminKey)
	tools, _ := mcptest.ListTools(ctx, t, cs)
	names := mcptest.Names(tools)
	for _, want := range []string{"db_get", "db_upsert", "db_search", "api_key_create", "whoami"} {
		if !slices.Contains(names, want) {
			t.Errorf("split gateway tools %v lack %s", names, want)
		}
	}
	if slices.Contains(names, "queue_send") {
		t.Errorf("split gateway without a queue offers queue_send: %v", names)
	}
	mcptest.CallAll(ctx, t, cs, tools, "split")
	if r := do(t, "GET", gw.url+"/v1/things/split/a", nil); r.status != http.StatusNotFound {
		t.Errorf("thing deleted through MCP in split mode: GET = %d %s", r.status, r.body)
	}
}
