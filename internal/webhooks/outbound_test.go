package webhooks

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	svix "github.com/svix/svix-webhooks/go"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// receiver is a user's endpoint: it records requests and answers with the
// status the test sets.
type receiver struct {
	mu      sync.Mutex
	reqs    []*http.Request
	bodies  [][]byte
	status  int
	headers map[string]string
	srv     *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{status: 200}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs, r.bodies = append(r.reqs, req), append(r.bodies, b)
		st, hs := r.status, r.headers
		r.mu.Unlock()
		for k, v := range hs {
			w.Header().Set(k, v)
		}
		w.WriteHeader(st)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

func (r *receiver) set(status int, headers map[string]string) {
	r.mu.Lock()
	r.status, r.headers = status, headers
	r.mu.Unlock()
}

func (e *env) createEndpoint(url string, types ...string) (string, string) {
	e.t.Helper()
	res, err := e.svc.CreateEndpoint(e.ctx, connect.NewRequest(&webhooksv1.CreateEndpointRequest{Url: url, Namespace: "acme", EventTypes: types}))
	if err != nil {
		e.t.Fatal(err)
	}
	return res.Msg.Endpoint.Id, res.Msg.Secret
}

// pendingDelivery stores a delivery without queueing it, so the test
// drives its attempts itself.
func (e *env) pendingDelivery(endpointID string) string {
	e.t.Helper()
	id := thingsdb.NewPrefixedID("msg_")
	d := deliveryJSON{EndpointID: endpointID, Namespace: "acme", EventType: "thing.created", Status: DeliveryPending,
		NextAttemptAt: e.svc.Now().UnixMilli(), Payload: []byte(`{"type":"thing.created","timestamp":"2026-11-28T12:00:00Z","data":{"id":"x"}}`), Log: []attemptLog{}}
	if err := e.svc.batch(e.ctx, Namespace, writeOp(id, typeDelivery, &d, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0)); err != nil {
		e.t.Fatal(err)
	}
	return id
}

func (e *env) deliveryState(id string) *deliveryJSON {
	e.t.Helper()
	_, d, err := e.svc.delivery(e.ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

func waitCount(t *testing.T, r *receiver, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for r.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("receiver got %d requests; want %d", r.count(), n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOutboundSignedDelivery: an emitted event reaches the endpoint as
// {type, timestamp, data} with Standard Webhooks headers that the svix
// library verifies, also across a secret rotation; endpoints whose types
// do not match get nothing.
func TestOutboundSignedDelivery(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	other := newReceiver(t)
	epID, secret := e.createEndpoint(r.srv.URL, "thing.created")
	e.createEndpoint(other.srv.URL, "email.bounced")
	ids, err := e.svc.Publish(e.ctx, "acme", "thing.created", map[string]any{"ns": "acme", "id": "t1"})
	if err != nil || len(ids) != 1 {
		t.Fatalf("Publish = %v, %v; want one delivery", ids, err)
	}
	waitCount(t, r, 1)
	r.mu.Lock()
	req, body := r.reqs[0], r.bodies[0]
	r.mu.Unlock()
	wh, _ := svix.NewWebhook(secret)
	if err := wh.Verify(body, req.Header); err != nil {
		t.Fatalf("svix Verify: %v", err)
	}
	if req.Header.Get("webhook-id") != ids[0] || !strings.Contains(string(body), `"type":"thing.created"`) || !strings.Contains(string(body), `"data":{"id":"t1","ns":"acme"}`) {
		t.Fatalf("delivery %s %s", req.Header, body)
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.deliveryState(ids[0]).Status != DeliverySucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("delivery %+v; want succeeded", e.deliveryState(ids[0]))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if other.count() != 0 {
		t.Fatalf("an endpoint for other types got %d requests", other.count())
	}
	// Rotation: both secrets verify while the old one is kept.
	rot, err := e.svc.RotateSecret(e.ctx, connect.NewRequest(&webhooksv1.RotateSecretRequest{Id: epID}))
	if err != nil || rot.Msg.Secret == secret {
		t.Fatalf("RotateSecret: %v", err)
	}
	e.svc.Publish(e.ctx, "acme", "thing.created", map[string]any{"id": "t2"})
	waitCount(t, r, 2)
	r.mu.Lock()
	req, body = r.reqs[1], r.bodies[1]
	r.mu.Unlock()
	if n := len(strings.Fields(req.Header.Get("webhook-signature"))); n != 2 {
		t.Fatalf("%d signatures during rotation; want 2", n)
	}
	for _, s := range []string{secret, rot.Msg.Secret} {
		wh, _ := svix.NewWebhook(s)
		if err := wh.Verify(body, req.Header); err != nil {
			t.Fatalf("svix Verify with a rotated secret: %v", err)
		}
	}
	// The stored secret is sealed, never in clear.
	th, _ := e.svc.get(e.ctx, Namespace, epID, nil)
	if strings.Contains(string(th.Data), strings.TrimPrefix(secret, "whsec_")) {
		t.Fatal("endpoint secret stored in clear")
	}
}

// TestOutboundSchedule: a failing endpoint is retried on the Standard
// Webhooks schedule (on a fake clock), then the delivery fails; a manual
// retry sends it again.
func TestOutboundSchedule(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	r.set(500, nil)
	epID, _ := e.createEndpoint(r.srv.URL)
	// Ahead of the real time: the sweeper's first pass may read the real
	// clock, and must not find this delivery overdue and deliver it too.
	clock := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Hour)
	e.clock.set(clock)
	id := e.pendingDelivery(epID)
	for i := range Schedule {
		// Not due yet: no attempt, and the wait until it is.
		if i > 0 {
			clock = clock.Add(Schedule[i] - time.Millisecond)
			e.clock.set(clock)
			wait, err := e.svc.out.Deliver(e.ctx, id)
			if err != nil || wait != time.Millisecond || r.count() != i {
				t.Fatalf("attempt %d early: wait %v err %v requests %d; want 1ms, none sent", i+1, wait, err, r.count())
			}
			clock = clock.Add(time.Millisecond)
			e.clock.set(clock)
		}
		next, err := e.svc.out.Deliver(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.count() != i+1 {
			t.Fatalf("after attempt %d the endpoint got %d requests", i+1, r.count())
		}
		d := e.deliveryState(id)
		if i+1 < len(Schedule) {
			if next != Schedule[i+1] || d.Status != DeliveryPending || d.NextAttemptAt != clock.Add(Schedule[i+1]).UnixMilli() {
				t.Fatalf("after attempt %d: next %v, %+v; want %v later", i+1, next, d, Schedule[i+1])
			}
		} else if d.Status != DeliveryFailed || next != 0 || d.Attempts != len(Schedule) || d.LastStatusCode != 500 {
			t.Fatalf("after the last attempt: %+v; want failed after %d", d, len(Schedule))
		}
	}
	// A manual retry starts over and succeeds now.
	r.set(200, nil)
	e.clock.real()
	if _, err := e.svc.RetryDelivery(e.ctx, connect.NewRequest(&webhooksv1.RetryDeliveryRequest{Id: id})); err != nil {
		t.Fatal(err)
	}
	waitCount(t, r, len(Schedule)+1)
	deadline := time.Now().Add(10 * time.Second)
	for e.deliveryState(id).Status != DeliverySucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("after a manual retry: %+v", e.deliveryState(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := len(e.deliveryState(id).Log); n != len(Schedule)+1 {
		t.Fatalf("delivery log has %d attempts; want %d", n, len(Schedule)+1)
	}
}

// TestOutboundGoneAndRetryAfter: 410 disables the endpoint; Retry-After
// pushes the next attempt later than the schedule would.
func TestOutboundGoneAndRetryAfter(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	epID, _ := e.createEndpoint(r.srv.URL)
	// Ahead of the real time: the sweeper's first pass may read the real
	// clock, and must not find this delivery overdue and deliver it too.
	clock := time.Now().UTC().Add(48 * time.Hour).Truncate(time.Hour)
	e.clock.set(clock)

	r.set(503, map[string]string{"Retry-After": "3600"})
	id := e.pendingDelivery(epID)
	if next, err := e.svc.out.Deliver(e.ctx, id); err != nil || next != time.Hour {
		t.Fatalf("after 503 Retry-After: 3600: next %v %v; want 1h (not the schedule's 5s)", next, err)
	}
	r.set(429, map[string]string{"Retry-After": "1"})
	clock = clock.Add(time.Hour)
	e.clock.set(clock)
	if next, _ := e.svc.out.Deliver(e.ctx, id); next != Schedule[2] {
		t.Fatalf("a Retry-After shorter than the schedule: next %v; want %v", next, Schedule[2])
	}

	r.set(410, nil)
	clock = clock.Add(Schedule[2])
	e.clock.set(clock)
	if next, err := e.svc.out.Deliver(e.ctx, id); err != nil || next != 0 {
		t.Fatalf("after 410: %v %v", next, err)
	}
	ep, err := e.svc.GetEndpoint(e.ctx, connect.NewRequest(&webhooksv1.GetEndpointRequest{Id: epID}))
	if err != nil || !ep.Msg.Endpoint.Disabled || !strings.Contains(ep.Msg.Endpoint.DisabledReason, "410") {
		t.Fatalf("endpoint after 410: %+v %v; want disabled", ep.Msg.Endpoint, err)
	}
	if d := e.deliveryState(id); d.Status != DeliveryFailed || d.LastStatusCode != 410 {
		t.Fatalf("delivery after 410: %+v", d)
	}
	// A disabled endpoint gets nothing more.
	ids, _ := e.svc.Publish(e.ctx, "acme", "thing.created", map[string]any{})
	before := r.count()
	if len(ids) != 0 {
		t.Fatalf("Publish to a disabled endpoint made deliveries %v", ids)
	}
	if r.count() != before {
		t.Fatal("a disabled endpoint was called")
	}
}

// TestOutboundPrivateRefused: without allow-private, loopback and private
// URLs are refused when created, and a connection to a non-public address
// is refused when dialling (a public name can resolve inward).
func TestOutboundPrivateRefused(t *testing.T) {
	e := newEnv(t, "sqlite", func(c *Config) { c.Outbound.AllowPrivate = false })
	for _, u := range []string{"http://127.0.0.1:9/x", "http://localhost/x", "http://10.1.2.3/", "http://[::1]/", "http://169.254.169.254/latest", "http://192.168.1.1/", "ftp://example.com/", "http://user:pw@example.com/"} {
		_, err := e.svc.CreateEndpoint(e.ctx, connect.NewRequest(&webhooksv1.CreateEndpointRequest{Url: u, Namespace: "acme"}))
		if err == nil {
			t.Fatalf("CreateEndpoint(%s) accepted; want refused", u)
		}
	}
	r := newReceiver(t)
	// An endpoint stored pointing at loopback (as a DNS name resolving to
	// it would): the dial is refused.
	e.svc.out.cfg.AllowPrivate = true
	epID, _ := e.createEndpoint(r.srv.URL)
	e.svc.out.cfg.AllowPrivate = false
	id := e.pendingDelivery(epID)
	if _, err := e.svc.out.Deliver(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	d := e.deliveryState(id)
	if r.count() != 0 || !strings.Contains(d.LastError, "not public") || d.Status != DeliveryPending {
		t.Fatalf("delivery to loopback: %d requests, %+v; want refused at dial and retried later", r.count(), d)
	}
}

// TestOutboundTimeout: an endpoint slower than the timeout fails the
// attempt (15 s by default; shortened here).
func TestOutboundTimeout(t *testing.T) {
	e := newEnv(t, "sqlite", func(c *Config) { c.Outbound.Timeout = 200 * time.Millisecond })
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(2 * time.Second):
		}
	}))
	defer slow.Close()
	epID, _ := e.createEndpoint(slow.URL)
	id := e.pendingDelivery(epID)
	if _, err := e.svc.out.Deliver(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := e.deliveryState(id); d.Status != DeliveryPending || d.Attempts != 1 || !strings.Contains(strings.ToLower(d.LastError), "timeout") && !strings.Contains(d.LastError, "deadline") {
		t.Fatalf("after a slow endpoint: %+v; want a timed-out attempt", d)
	}
	if newOutbound(e.svc, OutboundConfig{}).cfg.Timeout != 15*time.Second {
		t.Fatal("default timeout is not 15 s")
	}
}

// TestEndpointRoutes: CRUD over REST, with the secret shown only on
// create, and deliveries listed per endpoint.
func TestEndpointRoutes(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	code, out := e.api("POST", "/v1/webhooks/endpoints", map[string]any{"url": r.srv.URL, "namespace": "acme", "eventTypes": []string{"a.b"}})
	if code != 201 || !strings.HasPrefix(out["secret"].(string), "whsec_") {
		t.Fatalf("create = %d %v", code, out)
	}
	id := out["id"].(string)
	if code, out := e.api("GET", "/v1/webhooks/endpoints/"+id, nil); code != 200 || out["secret"] != nil || out["url"] != r.srv.URL {
		t.Fatalf("get = %d %v; want no secret", code, out)
	}
	if code, out := e.api("GET", "/v1/webhooks/endpoints?namespace=acme", nil); code != 200 || len(out["items"].([]any)) != 1 {
		t.Fatalf("list = %d %v", code, out)
	}
	if code, out := e.api("PATCH", "/v1/webhooks/endpoints/"+id, map[string]any{"eventTypes": []string{}}); code != 200 || len(out["eventTypes"].([]any)) != 0 {
		t.Fatalf("patch = %d %v", code, out)
	}
	if code, out := e.api("POST", "/v1/webhooks/endpoints", map[string]any{"url": "nope", "namespace": "acme"}); code != 400 {
		t.Fatalf("bad url = %d %v; want 400", code, out)
	}
	if code, out := e.api("POST", "/v1/webhooks/endpoints", map[string]any{"url": r.srv.URL, "namespace": "_auth"}); code != 400 {
		t.Fatalf("system namespace = %d %v; want 400", code, out)
	}
	if code, out := e.api("POST", "/v1/webhooks/emit", map[string]any{"namespace": "acme", "type": "x.y", "data": map[string]any{"k": 1}}); code != 202 || len(out["deliveryIds"].([]any)) != 1 {
		t.Fatalf("emit = %d %v", code, out)
	}
	waitCount(t, r, 1)
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out := e.api("GET", "/v1/webhooks/endpoints/"+id+"/deliveries", nil)
		items := out["items"].([]any)
		if code == 200 && len(items) == 1 && items[0].(map[string]any)["status"] == DeliverySucceeded {
			did := items[0].(map[string]any)["id"].(string)
			if code, out := e.api("POST", "/v1/webhooks/deliveries/"+did+"/retry", nil); code != 202 || out["status"] != DeliveryPending {
				t.Fatalf("retry = %d %v", code, out)
			}
			waitCount(t, r, 2)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries = %d %v", code, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, _ := e.api("DELETE", "/v1/webhooks/endpoints/"+id, nil); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	if code, _ := e.api("GET", "/v1/webhooks/endpoints/"+id, nil); code != 404 {
		t.Fatalf("get after delete = %d; want 404", code)
	}
}

// TestEndpointBodies: the operations routes take one JSON object of at
// most 1 MiB, though the provider route takes larger bodies.
func TestEndpointBodies(t *testing.T) {
	e := newEnv(t, "sqlite")
	for _, tc := range []struct {
		name, body string
		status     int
		want       string
	}{
		{"trailing data", `{"url":"https://hooks.example.test/","namespace":"acme"} {}`, 400, "invalid JSON body: trailing data after the JSON value"},
		{"wrong type", `{"url":5,"namespace":"acme"}`, 400, "invalid JSON body: field url must be a string, not number"},
		{"empty", ``, 400, "request body is empty; send a JSON object"},
		{"over 1 MiB", `{"url":"https://hooks.example.test/","description":"` + strings.Repeat("x", 1<<20) + `"}`, 413, "request body is larger than 1048576 bytes"},
	} {
		req, _ := http.NewRequest("POST", e.srv.URL+"/v1/webhooks/endpoints", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer ok")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Errorf("POST /v1/webhooks/endpoints with %s = %d %s; want %d saying %s", tc.name, res.StatusCode, b, tc.status, tc.want)
		}
	}
	if code, out := e.api("GET", "/v1/webhooks/endpoints?namespace=acme", nil); code != 200 || len(out["items"].([]any)) != 0 {
		t.Errorf("endpoints after refused bodies = %d %v; want none", code, out)
	}
}

// TestSweepOutbound: a pending delivery whose queue message was lost is
// queued again by the sweeper and delivered.
func TestSweepOutbound(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	epID, _ := e.createEndpoint(r.srv.URL)
	id := e.pendingDelivery(epID) // stored, never queued
	e.clock.shift(2 * time.Minute)
	if err := e.svc.Sweep(e.ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	waitCount(t, r, 1)
	e.clock.real()
	deadline := time.Now().Add(10 * time.Second)
	for e.deliveryState(id).Status != DeliverySucceeded {
		if time.Now().After(deadline) {
			t.Fatalf("swept delivery: %+v", e.deliveryState(id))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestOutboundSealingKeyChanged: after the sealing key changes, an
// endpoint's old secret cannot sign; the attempt says to rotate, and after
// a rotation the new secret alone signs.
func TestOutboundSealingKeyChanged(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	epID, _ := e.createEndpoint(r.srv.URL)
	e.svc.out = newOutbound(e.svc, OutboundConfig{SecretKey: bytes.Repeat([]byte{1}, 32), AllowPrivate: true})
	id := e.pendingDelivery(epID)
	if _, err := e.svc.out.Deliver(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if d := e.deliveryState(id); r.count() != 0 || !strings.Contains(d.LastError, "rotate") {
		t.Fatalf("with an unreadable secret: %d requests, %+v; want none and a hint to rotate", r.count(), d)
	}
	rot, err := e.svc.RotateSecret(e.ctx, connect.NewRequest(&webhooksv1.RotateSecretRequest{Id: epID}))
	if err != nil {
		t.Fatal(err)
	}
	id2 := e.pendingDelivery(epID)
	if _, err := e.svc.out.Deliver(e.ctx, id2); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.reqs) != 1 {
		t.Fatalf("after rotation: %d requests; want 1", len(r.reqs))
	}
	wh, _ := svix.NewWebhook(rot.Msg.Secret)
	if err := wh.Verify(r.bodies[0], r.reqs[0].Header); err != nil || len(strings.Fields(r.reqs[0].Header.Get("webhook-signature"))) != 1 {
		t.Fatalf("after rotation: verify %v, signatures %q", err, r.reqs[0].Header.Get("webhook-signature"))
	}
}
