package mcp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/email"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/mcp"
	"github.com/dotdo/dotdo/internal/mcp/mcptest"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/schedule"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
	"github.com/dotdo/dotdo/internal/webhooks"
)

// services are the real db, auth and queue services on one backend.
type services struct {
	db    *thingsdb.Service
	auth  *auth.Service
	queue *queue.Service
	email *email.Service
	sched *schedule.Service
	hooks *webhooks.Service
	// hits counts the calls of the mcp-task task's HTTP action.
	hits *atomic.Int64
}

// startSchedule runs the schedule service with the task mcp-task in the
// namespaces demo and other: an hourly HTTP POST to a local server.
func startSchedule(t testing.TB, ctx context.Context, db *thingsdb.Service) (*schedule.Service, *atomic.Int64) {
	t.Helper()
	hits := &atomic.Int64{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	t.Cleanup(srv.Close)
	s, err := schedule.New(db, schedule.Config{AllowPrivate: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.Run(ctx); s.Close(); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, ns := range []string{"demo", "other"} {
		task := &schedulev1.Task{Ns: ns, Name: "mcp-task", Schedule: "@every 1h", Action: &schedulev1.Action{Type: "http", Method: "POST", Url: srv.URL}}
		if _, err := s.PutTask(ctx, connect.NewRequest(&schedulev1.PutTaskRequest{Task: task})); err != nil {
			t.Fatal(err)
		}
	}
	return s, hits
}

// templatesOf is the email_templates binding of an in-process email
// service, as cmd/dotdo builds it.
func templatesOf(e *email.Service) mcp.EmailTemplates {
	return func(context.Context) ([]mcp.EmailTemplate, error) {
		var out []mcp.EmailTemplate
		for _, t := range e.Templates().List() {
			out = append(out, mcp.EmailTemplate{Name: t.Name, Variables: t.Variables, Source: t.Source})
		}
		return out, nil
	}
}

// openQueue opens the queue service on the external NATS of
// DOTDO_TEST_NATS_URL (failing if it is unreachable) with a prefix of its
// own, removed afterwards, or on an embedded NATS.
func openQueue(t testing.TB) *queue.Service {
	t.Helper()
	ctx := context.Background()
	url := os.Getenv("DOTDO_TEST_NATS_URL")
	cfg := queue.Config{Dir: t.TempDir()}
	if url != "" {
		var b [4]byte
		rand.Read(b[:])
		cfg = queue.Config{URL: url, Prefix: "MCPTEST" + strings.ToUpper(hex.EncodeToString(b[:]))}
	}
	q, err := queue.Open(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("queue (NATS %q): %v", url, err)
	}
	t.Cleanup(func() {
		q.Close()
		if url == "" {
			return
		}
		nc, err := nats.Connect(url)
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		for name := range js.StreamNames(ctx).Name() {
			if strings.HasPrefix(name, cfg.Prefix+"_") || name == "KV_"+cfg.Prefix+"_queues" {
				js.DeleteStream(ctx, name)
			}
		}
	})
	for _, name := range []string{"demo", "other"} {
		if err := q.EnsureQueue(ctx, queue.Defaults(name)); err != nil {
			t.Fatal(err)
		}
	}
	return q
}

func eachBackend(t *testing.T, fn func(t *testing.T, svc services)) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			fn(t, setup(t, name))
		})
	}
}

// setup starts every service on backend name.
func setup(t testing.TB, name string) services {
	t.Helper()
	{
		{
			log := slog.New(slog.DiscardHandler)
			db, err := thingsdb.New(testdb.Open(t, name), log)
			if err != nil {
				t.Fatal(err)
			}
			a, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{7}, 32), Signup: "invite-only",
				Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}}, log)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(context.Background()); err != nil {
				t.Fatal(err)
			}
			q := openQueue(t)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			e, err := email.New(db, q, email.Config{Provider: "outbox", From: "dotdo <noreply@example.com>"}, log)
			if err != nil {
				t.Fatal(err)
			}
			if err := e.Start(ctx); err != nil {
				t.Fatal(err)
			}
			sched, hits := startSchedule(t, ctx, db)
			hooks, err := webhooks.New(db, q, a, e, webhooks.Config{Secrets: map[string][]string{"github": {mcptest.GitHubSecret}}}, log)
			if err != nil {
				t.Fatal(err)
			}
			if err := hooks.Start(ctx); err != nil {
				t.Fatal(err)
			}
			h, body := mcptest.GitHubDelivery()
			rec, err := hooks.Receive(ctx, connect.NewRequest(&webhooksv1.ReceiveRequest{Provider: "github", Headers: h, Body: body, RemoteIp: "127.0.0.1"}))
			if err != nil {
				t.Fatal(err)
			}
			// Let its processing finish: webhook_replay answers 409 while
			// the event is being processed, and the scripts replay it.
			for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
				ev, err := hooks.GetEvent(ctx, connect.NewRequest(&webhooksv1.GetEventRequest{Id: rec.Msg.Id}))
				if err != nil {
					t.Fatal(err)
				}
				if st := ev.Msg.Event.Status; st != webhooks.StatusReceived && st != webhooks.StatusProcessing {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("webhook event %s still %s after 10 s", rec.Msg.Id, ev.Msg.Event.Status)
				}
			}
			return services{db: db, auth: a, queue: q, email: e, sched: sched, hits: hits, hooks: hooks}
		}
	}
}

func ident(subject string, grants map[string][]string) *authv1.Identity {
	id := &authv1.Identity{Subject: subject, Kind: "api_key", KeyId: subject, Grants: map[string]*authv1.Grants{}}
	for ns, roles := range grants {
		id.Grants[ns] = &authv1.Grants{Roles: roles}
	}
	return id
}

var (
	admin  = ident("admin", map[string][]string{"*": {"admin"}})
	viewer = ident("viewer", map[string][]string{"*": {"viewer"}})
	tenant = ident("tenant", map[string][]string{"acme": {"user"}})
)

func can(_ context.Context, id *authv1.Identity, ns, perm string) (bool, error) {
	return auth.Can(id, ns, perm, nil), nil
}

// connect starts a server acting as id and returns a client session to it
// over the SDK's in-memory transports.
func connectAs(t testing.TB, svc services, id *authv1.Identity, tweak ...func(*mcp.Options)) *sdk.ClientSession {
	t.Helper()
	opts := mcp.Options{DB: svc.db, Auth: svc.auth, Search: svc.db, Queue: queue.RPC{S: svc.queue}, Email: svc.email, EmailTemplates: templatesOf(svc.email), Schedule: svc.sched, Webhooks: svc.hooks, Can: can, Identity: id, Version: "test", PageSize: 5}
	for _, f := range tweak {
		f(&opts)
	}
	s, err := mcp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, ct := sdk.NewInMemoryTransports()
	ss, err := s.MCP().Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close(); ss.Wait(); cancel() })
	return cs
}

var wantTools = []string{"analytics_query", "api_key_create", "api_key_revoke", "api_keys_list", "db_delete", "db_get", "db_list", "db_query", "db_relate", "db_related", "db_search", "db_stats", "db_upsert", "email_send", "email_status", "email_templates", "queue_send", "queue_stats", "task_run", "task_runs", "tasks_list", "webhook_events", "webhook_replay", "whoami"}

func TestToolsInMemory(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		ctx := context.Background()
		cs := connectAs(t, svc, admin)
		init := cs.InitializeResult()
		if init.ServerInfo.Name != "dotdo" || init.Capabilities.Tools == nil || init.Capabilities.Resources == nil {
			t.Fatalf("initialize = %+v; want dotdo with tools and resources", init)
		}
		tools, pages := mcptest.ListTools(ctx, t, cs)
		if got := mcptest.Names(tools); !slices.Equal(got, wantTools) {
			t.Fatalf("tools = %v; want %v", got, wantTools)
		}
		if pages < 2 {
			t.Errorf("tools/list took %d page(s) with page size 5; want nextCursor followed", pages)
		}
		for _, tool := range tools {
			mcptest.CheckTool(t, tool)
		}
		out := mcptest.CallAll(ctx, t, cs, tools, "demo")
		if out["db_upsert"]["created"] != true || out["db_get"]["thing"].(map[string]any)["uri"] != "dotdo://things/demo/a" {
			t.Errorf("db_upsert/db_get results: %v / %v", out["db_upsert"], out["db_get"])
		}
		if hits := out["db_search"]["items"].([]any); len(hits) != 1 {
			t.Errorf("db_search for the upserted content = %v; want one hit", out["db_search"])
		}
		if out["db_stats"]["things"] != 1.0 {
			t.Errorf("db_stats = %v; want 1 thing", out["db_stats"])
		}
		if ids := out["queue_send"]["ids"].([]any); len(ids) != 2 {
			t.Errorf("queue_send = %v; want 2 ids", out["queue_send"])
		}
		if st := out["queue_stats"]; st["backlog"] != 1.0 || st["delayed"] != 1.0 {
			t.Errorf("queue_stats = %v; want 1 ready and 1 delayed", st)
		}
		if out["email_status"]["id"] != out["email_send"]["id"] || out["email_status"]["provider"] != "outbox" {
			t.Errorf("email_status = %v; want the email email_send queued (%v), in the outbox", out["email_status"], out["email_send"])
		}
		if len(out["email_templates"]["items"].([]any)) < 5 {
			t.Errorf("email_templates = %v; want the built-in templates", out["email_templates"])
		}
		if tasks := out["tasks_list"]["items"].([]any); len(tasks) != 1 || tasks[0].(map[string]any)["name"] != "mcp-task" {
			t.Errorf("tasks_list = %v; want mcp-task", out["tasks_list"])
		}
		if run := out["task_run"]["run"].(map[string]any); run["trigger"] != "manual" {
			t.Errorf("task_run = %v; want a manual run", run)
		}
		if ev := out["webhook_replay"]["event"].(map[string]any); ev["provider"] != "github" || ev["verified"] != true {
			t.Errorf("webhook_replay = %v; want the GitHub ping", ev)
		}
		if out["whoami"]["subject"] != "admin" {
			t.Errorf("whoami = %v; want subject admin", out["whoami"])
		}
		if key := out["api_key_revoke"]["key"].(map[string]any); key["revokedAt"] == nil {
			t.Errorf("api_key_revoke = %v; want revokedAt", key)
		}
		if _, err := svc.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "demo", Id: "a"})); err == nil {
			t.Errorf("thing demo/a still there after db_delete")
		}
	})
}

func call(t *testing.T, cs *sdk.ClientSession, tool string, args map[string]any) *sdk.CallToolResult {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &sdk.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		t.Fatalf("%s(%v): protocol error %v; want a tool result", tool, args, err)
	}
	return res
}

func TestBadArguments(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		cs := connectAs(t, svc, admin)
		for _, tc := range []struct {
			tool string
			args map[string]any
			want string
		}{
			{"db_get", map[string]any{"ns": "demo"}, `missing properties: ["id"]`},
			{"db_get", map[string]any{"ns": "demo", "id": "x", "bogus": 1}, "bogus"},
			{"db_get", map[string]any{"ns": "Bad NS", "id": "x"}, "invalid"},
			{"db_get", map[string]any{"ns": "demo", "id": "nope"}, "not_found"},
			{"db_list", map[string]any{"ns": "demo", "limit": 1000}, "maximum"},
			{"db_list", map[string]any{"ns": "demo", "cursor": "garbage!"}, "cursor"},
			{"db_query", map[string]any{"ns": "demo", "where": map[string]any{"n": map[string]any{"bogus": 1}}}, "unknown operator"},
			{"db_query", map[string]any{"ns": "demo", "where": "n=1"}, "object"},
			{"db_upsert", map[string]any{"ns": "demo", "type": "item", "mode": "sometimes"}, "mode"},
			{"db_upsert", map[string]any{"ns": "demo", "type": "item", "expiresAt": "tomorrow"}, "RFC 3339"},
			{"db_upsert", map[string]any{"ns": "demo", "type": "item", "data": []int{1}}, "data"},
			{"db_related", map[string]any{"ns": "demo", "id": "a", "direction": "sideways"}, "direction"},
			{"db_search", map[string]any{"ns": "demo"}, "query"},
			{"db_search", map[string]any{"ns": "demo", "query": "x", "mode": "psychic"}, "mode"},
			{"analytics_query", map[string]any{"ns": "demo", "event": "e", "from": "yesterday", "to": "2026-01-02T00:00:00Z"}, "RFC 3339"},
			{"analytics_query", map[string]any{"ns": "demo", "event": "e", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z", "bucket": "minute"}, "bucket"},
			{"queue_send", map[string]any{"queue": "demo", "messages": []any{}}, "1-100"},
			{"queue_send", map[string]any{"queue": "demo", "messages": []any{map[string]any{"body": 1, "contentType": "text"}}}, "string"},
			{"queue_send", map[string]any{"queue": "nope", "messages": []any{map[string]any{"body": 1}}}, "not_found"},
			{"queue_send", map[string]any{"queue": "demo", "messages": []any{map[string]any{"body": 1, "delaySeconds": 99999}}}, "delay"},
			{"queue_stats", map[string]any{"queue": "Bad Name"}, "queue name"},
			{"email_send", map[string]any{"ns": "demo", "to": []string{}, "subject": "s", "text": "t"}, "recipient"},
			{"email_send", map[string]any{"ns": "demo", "to": []string{"not an address"}, "subject": "s", "text": "t"}, "not a valid email address"},
			{"email_send", map[string]any{"ns": "demo", "to": []string{"a@example.com"}, "template": "no-such-template"}, "template"},
			{"email_status", map[string]any{"ns": "demo", "id": "nope"}, "not_found"},
			{"task_run", map[string]any{"ns": "demo", "name": "no-such-task"}, "not_found"},
			{"task_runs", map[string]any{"ns": "demo", "name": "mcp-task", "limit": 0.5}, "integer"},
			{"webhook_events", map[string]any{"provider": "paypal"}, "provider"},
			{"webhook_replay", map[string]any{"id": "nope"}, "not_found"},
			{"api_key_create", map[string]any{"name": "x"}, "role"},
			{"api_key_create", map[string]any{"name": "x", "permissions": []string{"nonsense"}}, "resource:action"},
			{"api_key_revoke", map[string]any{"id": "nope"}, "not_found"},
		} {
			res := call(t, cs, tc.tool, tc.args)
			if !res.IsError || !strings.Contains(mcptest.Text(res), tc.want) {
				t.Errorf("%s; want isError mentioning %q", mcptest.Errorf(tc.tool, tc.args, res), tc.want)
			}
		}
	})
}

// snapshot is everything the tools can change, read straight from the
// services.
func snapshot(t *testing.T, svc services, nss ...string) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	for _, ns := range nss {
		res, err := svc.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: ns, Limit: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		for _, th := range res.Msg.Items {
			fmt.Fprintf(&b, "%s/%s v%d %s\n", th.Ns, th.Id, th.Version, th.Data)
		}
		rel, err := svc.db.Related(ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: ns, Id: "a", Limit: 1000}))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rel.Msg.Items {
			fmt.Fprintf(&b, "rel %s %s %s %s\n", r.Relationship.From, r.Relationship.Type, r.Relationship.To, r.Relationship.Data)
		}
	}
	for _, q := range []string{"demo", "other"} {
		st, err := svc.queue.Stats(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "queue %s backlog=%d delayed=%d\n", q, st.Backlog, st.Delayed)
	}
	for _, ns := range nss {
		runs, err := svc.sched.ListRuns(ctx, connect.NewRequest(&schedulev1.ListRunsRequest{Ns: ns, Name: "mcp-task", Limit: 100}))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "runs of %s/mcp-task: %d\n", ns, len(runs.Msg.Runs))
	}
	evs, err := svc.hooks.ListEvents(ctx, connect.NewRequest(&webhooksv1.ListEventsRequest{Limit: 100}))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Msg.Events {
		fmt.Fprintf(&b, "webhook %s\n", e.Id)
	}
	keys, err := svc.auth.ListAPIKeys(ctx, connect.NewRequest(&authv1.ListAPIKeysRequest{}))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys.Msg.Keys {
		fmt.Fprintf(&b, "key %s revoked=%d\n", k.Id, k.RevokedAt)
	}
	return b.String()
}

func TestViewerCannotWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		ctx := context.Background()
		adm := connectAs(t, svc, admin)
		prev := mcptest.CallAll(ctx, t, adm, mustTools(t, adm), "demo")
		// Leave things behind for the viewer to try to change.
		for _, id := range []string{"a", "b"} {
			if res := call(t, adm, "db_upsert", map[string]any{"ns": "demo", "id": id, "type": "item", "data": map[string]any{"v": 1}}); res.IsError {
				t.Fatal(mcptest.Text(res))
			}
		}
		created := call(t, adm, "api_key_create", map[string]any{"name": "victim", "role": "viewer"})
		keyID := created.StructuredContent.(map[string]any)["key"].(map[string]any)["id"]
		prev["api_key_create"] = map[string]any{"key": map[string]any{"id": keyID}}
		before := snapshot(t, svc, "demo")

		cs := connectAs(t, svc, viewer)
		tools, _ := mcptest.ListTools(ctx, t, cs)
		writes := 0
		for _, step := range mcptest.Script("demo") {
			i := slices.IndexFunc(tools, func(x *sdk.Tool) bool { return x.Name == step.Tool })
			if i < 0 || !mcptest.Writes(tools[i]) {
				continue
			}
			writes++
			args := step.Args(prev)
			res := call(t, cs, step.Tool, args)
			if !res.IsError || !strings.Contains(mcptest.Text(res), "missing permission") {
				t.Errorf("viewer: %s; want isError naming the missing permission", mcptest.Errorf(step.Tool, args, res))
			}
		}
		if writes < 5 {
			t.Errorf("only %d write tools tried", writes)
		}
		if after := snapshot(t, svc, "demo"); after != before {
			t.Errorf("the viewer's calls changed state:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		// Reads still work for the viewer.
		if res := call(t, cs, "db_get", map[string]any{"ns": "demo", "id": "a"}); res.IsError {
			t.Errorf("viewer db_get: %s", mcptest.Text(res))
		}
		// The listing of keys needs keys:manage, which a viewer lacks.
		if res := call(t, cs, "api_keys_list", map[string]any{}); !res.IsError || !strings.Contains(mcptest.Text(res), "keys:manage") {
			t.Errorf("viewer api_keys_list: %s", mcptest.Errorf("api_keys_list", nil, res))
		}
	})
}

func mustTools(t *testing.T, cs *sdk.ClientSession) []*sdk.Tool {
	tools, _ := mcptest.ListTools(context.Background(), t, cs)
	return tools
}

func TestTenantIsolation(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		adm := connectAs(t, svc, admin)
		call(t, adm, "db_upsert", map[string]any{"ns": "other", "id": "secret", "type": "item", "data": map[string]any{"s": 1}})
		cs := connectAs(t, svc, tenant)
		if res := call(t, cs, "db_upsert", map[string]any{"ns": "acme", "id": "mine", "type": "item"}); res.IsError {
			t.Fatalf("tenant write in its namespace: %s", mcptest.Text(res))
		}
		before := snapshot(t, svc, "other")
		for _, tc := range []struct {
			tool string
			args map[string]any
		}{
			{"db_get", map[string]any{"ns": "other", "id": "secret"}},
			{"db_list", map[string]any{"ns": "other"}},
			{"db_query", map[string]any{"ns": "other", "where": map[string]any{"s": 1}}},
			{"db_related", map[string]any{"ns": "other", "id": "secret"}},
			{"db_upsert", map[string]any{"ns": "other", "id": "secret", "type": "item"}},
			{"db_delete", map[string]any{"ns": "other", "id": "secret"}},
			{"db_relate", map[string]any{"ns": "other", "from": "secret", "type": "x", "to": "secret"}},
			{"db_search", map[string]any{"ns": "other", "query": "secret"}},
			{"db_stats", map[string]any{"ns": "other"}},
			{"analytics_query", map[string]any{"ns": "other", "event": "e", "from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"}},
			{"queue_send", map[string]any{"queue": "other", "messages": []any{map[string]any{"body": 1}}}},
			{"queue_stats", map[string]any{"queue": "other"}},
			{"email_send", map[string]any{"ns": "other", "to": []string{"a@example.com"}, "subject": "s", "text": "t"}},
			{"email_status", map[string]any{"ns": "other", "id": "x"}},
			{"email_templates", map[string]any{"ns": "other"}},
			{"tasks_list", map[string]any{"ns": "other"}},
			{"task_run", map[string]any{"ns": "other", "name": "mcp-task"}},
			{"task_runs", map[string]any{"ns": "other", "name": "mcp-task"}},
			{"webhook_events", map[string]any{}},
			{"webhook_replay", map[string]any{"id": "x"}},
			{"db_get", map[string]any{"ns": "_auth", "id": "x"}},
			{"db_list", map[string]any{"ns": "_auth"}},
			{"api_keys_list", map[string]any{}},
		} {
			res := call(t, cs, tc.tool, tc.args)
			if !res.IsError || !strings.Contains(mcptest.Text(res), "missing permission") {
				t.Errorf("tenant: %s; want isError naming the missing permission", mcptest.Errorf(tc.tool, tc.args, res))
			}
		}
		if after := snapshot(t, svc, "other"); after != before {
			t.Errorf("the tenant changed another namespace:\n%s\n%s", before, after)
		}
		// Nor through the resource.
		if _, err := cs.ReadResource(context.Background(), &sdk.ReadResourceParams{URI: "dotdo://things/other/secret"}); err == nil || !strings.Contains(err.Error(), "missing permission things:read on namespace other") {
			t.Errorf("tenant read of dotdo://things/other/secret: %v; want missing permission", err)
		}
	})
}

func TestKeyManagerCannotEscalate(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		mgr := ident("mgr", map[string][]string{"_auth": {"admin"}, "acme": {"viewer"}})
		cs := connectAs(t, svc, mgr)
		for _, args := range []map[string]any{
			{"name": "x", "role": "admin"},
			{"name": "x", "role": "user", "namespaces": []string{"acme"}},
			{"name": "x", "role": "viewer"}, // on *: the manager holds viewer on acme only
		} {
			res := call(t, cs, "api_key_create", args)
			if !res.IsError || !strings.Contains(mcptest.Text(res), "cannot grant") {
				t.Errorf("%s; want cannot grant", mcptest.Errorf("api_key_create", args, res))
			}
		}
		if res := call(t, cs, "api_key_create", map[string]any{"name": "ok", "role": "viewer", "namespaces": []string{"acme"}}); res.IsError {
			t.Errorf("grant the manager holds: %s", mcptest.Text(res))
		}
		adm := connectAs(t, svc, admin)
		res := call(t, adm, "api_key_create", map[string]any{"name": "root", "role": "admin"})
		id := res.StructuredContent.(map[string]any)["key"].(map[string]any)["id"]
		if res := call(t, cs, "api_key_revoke", map[string]any{"id": id}); !res.IsError || !strings.Contains(mcptest.Text(res), "holds grants you do not") {
			t.Errorf("%s; want refusal", mcptest.Errorf("api_key_revoke", nil, res))
		}
	})
}

func TestThingResource(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		ctx := context.Background()
		cs := connectAs(t, svc, admin)
		up := call(t, cs, "db_upsert", map[string]any{"ns": "demo", "id": "x:1", "type": "item", "data": map[string]any{"n": 7}})
		uri := up.StructuredContent.(map[string]any)["thing"].(map[string]any)["uri"].(string)
		if uri != "dotdo://things/demo/x%3A1" {
			t.Errorf("uri = %q; want dotdo://things/demo/x%%3A1", uri)
		}
		var templates []string
		for rt, err := range cs.ResourceTemplates(ctx, nil) {
			if err != nil {
				t.Fatal(err)
			}
			templates = append(templates, rt.URITemplate)
		}
		if !slices.Equal(templates, []string{"dotdo://things/{ns}/{id}"}) {
			t.Fatalf("resource templates = %v", templates)
		}
		res, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: uri})
		if err != nil {
			t.Fatal(err)
		}
		var th mcp.Thing
		if len(res.Contents) != 1 || res.Contents[0].MIMEType != "application/json" || json.Unmarshal([]byte(res.Contents[0].Text), &th) != nil || th.ID != "x:1" || string(th.Data) != `{"n":7}` {
			t.Fatalf("read = %+v", res.Contents)
		}
		if _, err := cs.ReadResource(ctx, &sdk.ReadResourceParams{URI: "dotdo://things/demo/missing"}); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Errorf("read of a missing thing: %v; want resource not found", err)
		}
	})
}

// TestPagesUnderSizeCap fills a namespace with things whose JSON is far
// over the result cap for a full page: every page stays under the cap,
// and following nextCursor returns every thing exactly once.
func TestPagesUnderSizeCap(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		const capBytes = 8 << 10
		cs := connectAs(t, svc, admin, func(o *mcp.Options) { o.MaxResultBytes = capBytes })
		big := strings.Repeat("x", 1500)
		for i := range 20 {
			if res := call(t, cs, "db_upsert", map[string]any{"ns": "big", "id": fmt.Sprintf("t%02d", i), "type": "item", "data": map[string]any{"pad": big}}); res.IsError {
				t.Fatal(mcptest.Text(res))
			}
		}
		huge := strings.Repeat("y", 3*capBytes)
		call(t, cs, "db_upsert", map[string]any{"ns": "big", "id": "z-huge", "type": "item", "data": map[string]any{"pad": huge}})
		seen := map[string]int{}
		cursor, pages := "", 0
		for {
			args := map[string]any{"ns": "big", "limit": 200}
			if cursor != "" {
				args["cursor"] = cursor
			}
			res := call(t, cs, "db_list", args)
			if res.IsError {
				t.Fatal(mcptest.Text(res))
			}
			pages++
			b, _ := json.Marshal(res.StructuredContent)
			out := res.StructuredContent.(map[string]any)
			items := out["items"].([]any)
			if len(b) > capBytes && len(items) > 1 {
				t.Errorf("page %d is %d bytes with %d items; cap %d", pages, len(b), len(items), capBytes)
			}
			for _, it := range items {
				seen[it.(map[string]any)["id"].(string)]++
			}
			c, _ := out["nextCursor"].(string)
			if c == "" {
				break
			}
			cursor = c
		}
		if len(seen) != 21 || pages < 5 {
			t.Errorf("saw %d distinct things in %d pages; want 21 in several", len(seen), pages)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("thing %s returned %d times", id, n)
			}
		}
	})
}

func TestUnauthenticated(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		cs := connectAs(t, svc, nil)
		res := call(t, cs, "whoami", map[string]any{})
		if !res.IsError || !strings.Contains(mcptest.Text(res), "authentication required") {
			t.Errorf("%s", mcptest.Errorf("whoami", nil, res))
		}
		res = call(t, cs, "db_get", map[string]any{"ns": "demo", "id": "a"})
		if !res.IsError || !strings.Contains(mcptest.Text(res), "unauthenticated") {
			t.Errorf("%s", mcptest.Errorf("db_get", nil, res))
		}
	})
}

// TestTestKeyEmailStaysInOutbox: the caller's identity reaches the email
// service, so an sk_test_ key's email is marked test (kept, never sent).
func TestTestKeyEmailStaysInOutbox(t *testing.T) {
	eachBackend(t, func(t *testing.T, svc services) {
		testKey := ident("testkey", map[string][]string{"*": {"admin"}})
		testKey.Test = true
		cs := connectAs(t, svc, testKey)
		res := call(t, cs, "email_send", map[string]any{"ns": "demo", "to": []string{"a@example.com"}, "subject": "s", "text": "t"})
		if res.IsError {
			t.Fatal(mcptest.Text(res))
		}
		id := res.StructuredContent.(map[string]any)["id"]
		st := call(t, cs, "email_status", map[string]any{"ns": "demo", "id": id})
		if st.IsError || st.StructuredContent.(map[string]any)["test"] != true {
			t.Errorf("email_status of an sk_test_ key's email = %s; want test true", mcptest.Text(st))
		}
	})
}

func getReq(ns, id string) *connect.Request[dbv1.GetRequest] {
	return connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: id})
}
