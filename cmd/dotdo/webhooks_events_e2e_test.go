package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	svix "github.com/svix/svix-webhooks/go"

	"github.com/dotdo/dotdo/internal/testdb"
)

// eventReceiver is a user's endpoint that keeps each request.
type eventReceiver struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies [][]byte
	srv    *httptest.Server
}

func newEventReceiver(t *testing.T) *eventReceiver {
	r := &eventReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs, r.bodies = append(r.reqs, req), append(r.bodies, b)
		r.mu.Unlock()
	}))
	t.Cleanup(r.srv.Close)
	return r
}

type dotdoEvent struct {
	Type      string         `json:"type"`
	Timestamp string         `json:"timestamp"`
	Data      map[string]any `json:"data"`
}

// wait returns the first delivery of event type typ, verified with the
// endpoint's secret by the svix library.
func (r *eventReceiver) wait(t *testing.T, secret, typ string) dotdoEvent {
	t.Helper()
	return r.waitID(t, secret, typ, "")
}

// waitID waits for a delivery of type typ about the thing id (any, when
// id is empty), checks its signature and returns it.
func (r *eventReceiver) waitID(t *testing.T, secret, typ, id string) dotdoEvent {
	t.Helper()
	wh, err := svix.NewWebhook(secret)
	if err != nil {
		t.Fatal(err)
	}
	var found dotdoEvent
	waitFor(t, "a "+typ+" delivery", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i, b := range r.bodies {
			var ev dotdoEvent
			if json.Unmarshal(b, &ev) != nil || ev.Type != typ || (id != "" && ev.Data["id"] != id) {
				continue
			}
			if err := wh.Verify(b, r.reqs[i].Header); err != nil {
				t.Fatalf("svix Verify of the %s delivery: %v", typ, err)
			}
			found = ev
			return true
		}
		return false
	})
	return found
}

// TestWebhookEventsE2E drives the built binary: writes through the REST
// routes reach an endpoint subscribed to them as signed thing.created,
// thing.updated and thing.deleted events ({type, timestamp, data}); an
// email sent in the outbox reaches another as email.sent; writes to
// system namespaces and types nobody subscribed to send nothing.
func TestWebhookEventsE2E(t *testing.T) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) { webhookEvents(t, name) })
	}
}

func webhookEvents(t *testing.T, backend string) {
	b := newBackend(t, backend)
	p := startAllInOne(t, b, "--webhooks-allow-private", "--rate-limit-anon", "off")
	things := newEventReceiver(t)
	mails := newEventReceiver(t)
	r := do(t, "POST", p.url+"/v1/webhooks/endpoints", fmt.Sprintf(`{"url":%q,"namespace":"acme","eventTypes":["thing.created","thing.updated","thing.deleted"]}`, things.srv.URL))
	if r.status != 201 {
		t.Fatalf("create endpoint = %d %s", r.status, r.body)
	}
	thingSecret := r.json(t)["secret"].(string)
	r = do(t, "POST", p.url+"/v1/webhooks/endpoints", fmt.Sprintf(`{"url":%q,"namespace":"default","eventTypes":["email.sent"]}`, mails.srv.URL))
	if r.status != 201 {
		t.Fatalf("create endpoint = %d %s", r.status, r.body)
	}
	mailSecret := r.json(t)["secret"].(string)

	if r := do(t, "PUT", p.url+"/v1/things/acme/order-1", `{"type":"Order","data":{"total":5}}`); r.status != 200 && r.status != 201 {
		t.Fatalf("PUT thing = %d %s", r.status, r.body)
	}
	ev := things.wait(t, thingSecret, "thing.created")
	if ev.Timestamp == "" || ev.Data["ns"] != "acme" || ev.Data["id"] != "order-1" || ev.Data["type"] != "Order" || ev.Data["version"] != float64(1) {
		t.Fatalf("thing.created = %+v", ev)
	}
	if r := do(t, "PUT", p.url+"/v1/things/acme/order-1", `{"type":"Order","data":{"total":6}}`); r.status != 200 {
		t.Fatalf("PUT thing again = %d %s", r.status, r.body)
	}
	ev = things.wait(t, thingSecret, "thing.updated")
	if ev.Data["id"] != "order-1" || ev.Data["version"] != float64(2) {
		t.Fatalf("thing.updated = %+v", ev)
	}
	if r := do(t, "DELETE", p.url+"/v1/things/acme/order-1", nil); r.status != 200 && r.status != 204 {
		t.Fatalf("DELETE thing = %d %s", r.status, r.body)
	}
	ev = things.wait(t, thingSecret, "thing.deleted")
	if ev.Data["ns"] != "acme" || ev.Data["id"] != "order-1" {
		t.Fatalf("thing.deleted = %+v", ev)
	}

	// Writes by an MCP tool and by a dispatch script are thing events too.
	cs := mcpHTTP(t, p, adminKey)
	if res := mcpCall(t, cs, "db_upsert", map[string]any{"ns": "acme", "id": "by-mcp", "type": "Order", "data": map[string]any{"total": 7}}); res.IsError {
		t.Fatalf("db_upsert = %+v", res.Content)
	}
	if ev = things.waitID(t, thingSecret, "thing.created", "by-mcp"); ev.Data["ns"] != "acme" || ev.Data["type"] != "Order" {
		t.Fatalf("thing.created of the MCP write = %+v", ev)
	}
	dir := t.TempDir()
	buildWorkers(t, dir, "notes")
	notes, _ := os.ReadFile(filepath.Join(dir, "notes.wasm"))
	if r := do(t, "PUT", p.url+"/v1/dispatch/namespaces/acme", `{}`); r.status/100 != 2 {
		t.Fatalf("create dispatch namespace = %d %s", r.status, r.body)
	}
	if r := deployHTTP(t, p, "acme", "notes", notes, "", adminKey); r.status != 201 {
		t.Fatalf("deploy notes = %d %s", r.status, r.body)
	}
	if r := do(t, "PUT", p.url+"/dispatch/acme/notes/notes/by-script", "hello"); r.status != 200 {
		t.Fatalf("PUT a note through the script = %d %s", r.status, r.body)
	}
	if ev = things.waitID(t, thingSecret, "thing.created", "by-script"); ev.Data["ns"] != "acme" || ev.Data["type"] != "Note" {
		t.Fatalf("thing.created of the script's write = %+v", ev)
	}

	r = do(t, "POST", p.url+"/v1/emails", `{"to":"ann@x.test","from":"Acme <noreply@acme.test>","subject":"Hi","text":"Hello"}`)
	if r.status != 202 {
		t.Fatalf("POST /v1/emails = %d %s", r.status, r.body)
	}
	id := r.json(t)["id"]
	ev = mails.wait(t, mailSecret, "email.sent")
	if ev.Data["id"] != id || ev.Data["status"] != "sent" {
		t.Fatalf("email.sent = %+v; want email %v", ev, id)
	}
	things.mu.Lock()
	n := len(things.bodies)
	things.mu.Unlock()
	if n != 5 {
		t.Fatalf("the thing endpoint got %d deliveries; want 5 (created, updated, deleted over REST; created by MCP and by a script)", n)
	}
	p.stop()
}
