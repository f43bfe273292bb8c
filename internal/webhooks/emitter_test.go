package webhooks

import (
	"encoding/json"
	"testing"

	dto "github.com/prometheus/client_model/go"
	svix "github.com/svix/svix-webhooks/go"
)

// TestEventsEmit: an event given to the emitter reaches the endpoint
// subscribed to its type as a signed {type, timestamp, data} delivery.
func TestEventsEmit(t *testing.T) {
	e := newEnv(t, "sqlite")
	r := newReceiver(t)
	_, secret := e.createEndpoint(r.srv.URL, "queue.dead_lettered")
	e.svc.Events().Emit("acme", "queue.dead_lettered", map[string]any{"queue": "acme", "messageId": "m1", "attempts": 4})
	waitCount(t, r, 1)
	r.mu.Lock()
	req, body := r.reqs[0], r.bodies[0]
	r.mu.Unlock()
	wh, _ := svix.NewWebhook(secret)
	if err := wh.Verify(body, req.Header); err != nil {
		t.Fatalf("svix Verify: %v", err)
	}
	var ev struct {
		Type, Timestamp string
		Data            map[string]any
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.Type != "queue.dead_lettered" || ev.Timestamp == "" || ev.Data["messageId"] != "m1" {
		t.Fatalf("delivery %s", body)
	}
}

// TestEventsDropWhenFull: Emit never blocks; with the buffer full the
// event is dropped and counted.
func TestEventsDropWhenFull(t *testing.T) {
	e := newEnv(t, "sqlite")
	ev := newEvents(e.svc, 2) // not running: nothing drains it
	before := droppedTotal(e.svc)
	for i := 0; i < 5; i++ {
		ev.Emit("acme", "thing.created", map[string]any{"id": i})
	}
	if len(ev.ch) != 2 || ev.Dropped() != 3 {
		t.Fatalf("buffered %d, dropped %d; want 2 and 3", len(ev.ch), ev.Dropped())
	}
	if got := droppedTotal(e.svc) - before; got != 3 {
		t.Fatalf("dotdo_webhooks_events_dropped_total rose by %v; want 3", got)
	}
}

// TestEventsSkip: without an enabled endpoint, and for system namespaces,
// Emit queues nothing; creating an endpoint here is seen at once.
func TestEventsSkip(t *testing.T) {
	e := newEnv(t, "sqlite")
	ev := newEvents(e.svc, 10)
	e.svc.ev = ev // CreateEndpoint resets this emitter's cache
	if ev.anyEndpoint(e.ctx) {
		t.Fatal("anyEndpoint with none")
	}
	ev.Emit("acme", "thing.created", map[string]any{"id": "a"})
	if len(ev.ch) != 0 {
		t.Fatal("an event was queued with no endpoint")
	}
	r := newReceiver(t)
	e.createEndpoint(r.srv.URL)
	if !ev.anyEndpoint(e.ctx) {
		t.Fatal("the new endpoint is not seen")
	}
	ev.Emit("_queue", "thing.created", map[string]any{"id": "b"})
	if len(ev.ch) != 0 {
		t.Fatal("an event of a system namespace was queued")
	}
	ev.Emit("acme", "thing.created", map[string]any{"id": "c"})
	if len(ev.ch) != 1 {
		t.Fatalf("%d events queued; want 1", len(ev.ch))
	}
}

func droppedTotal(s *Service) float64 {
	var m dto.Metric
	s.metrics.eventsDropped.Write(&m)
	return m.GetCounter().GetValue()
}
