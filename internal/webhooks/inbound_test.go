package webhooks

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"
	dto "github.com/prometheus/client_model/go"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
)

// TestConcurrentDuplicates: 100 concurrent deliveries of one event are
// all answered 2xx, stored once and processed once.
func TestConcurrentDuplicates(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		body := stripeEventBody("evt_dup_1", "payment_intent.succeeded", time.Now().Unix(),
			map[string]any{"id": "pi_dup", "object": "payment_intent", "customer": "cus_dup", "amount": 500, "currency": "usd", "status": "succeeded"})
		h := stripeDelivery(body)
		var wg sync.WaitGroup
		var mu sync.Mutex
		codes := map[int]int{}
		fresh := 0
		for range 100 {
			wg.Go(func() {
				code, out := e.post(Stripe, h, body)
				mu.Lock()
				defer mu.Unlock()
				codes[code]++
				if code == 200 && out["duplicate"] == false {
					fresh++
				}
			})
		}
		wg.Wait()
		if codes[200] != 100 || fresh != 1 {
			t.Fatalf("codes %v, %d not duplicate; want 100 × 200 and exactly 1 not duplicate", codes, fresh)
		}
		ev := e.waitDone("stripe:evt_dup_1")
		// Give redeliveries, if any, time to show up.
		time.Sleep(300 * time.Millisecond)
		ev = e.event("stripe:evt_dup_1")
		if ev.Status != StatusProcessed || ev.Attempts != 1 {
			t.Fatalf("event status %s attempts %d; want processed after 1 attempt", ev.Status, ev.Attempts)
		}
		res, err := e.db.List(e.ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEvent, Where: `{"eventId":"evt_dup_1"}`}))
		if err != nil || len(res.Msg.Items) != 1 {
			t.Fatalf("stored events for evt_dup_1 = %d (%v); want 1", len(res.Msg.Items), err)
		}
		p, _ := e.thing("pi_dup")
		if p.Version != 1 {
			t.Fatalf("Payment pi_dup version %d; want 1 (written once)", p.Version)
		}
		// A later duplicate is still 2xx and changes nothing.
		code, out := e.post(Stripe, h, body)
		if code != 200 || out["duplicate"] != true || out["status"] != StatusProcessed {
			t.Fatalf("late duplicate = %d %v; want 200 duplicate processed", code, out)
		}
		// Every delivery left a trace: the event counts 100 redeliveries.
		if code, out := e.api("GET", "/v1/webhooks/events/stripe:evt_dup_1", nil); code != 200 || out["duplicates"] != 100.0 {
			t.Fatalf("GET event = %d duplicates %v; want 100", code, out["duplicates"])
		}
	})
}

// TestRejectionsRecorded: every refused request is recorded with its
// reason, gets the right status, and stores no payload.
func TestRejectionsRecorded(t *testing.T) {
	e := newEnv(t, "sqlite")
	body := stripeEventBody("evt_rej", "invoice.paid", time.Now().Unix(), map[string]any{"id": "in_rej"})
	bad := stripeDelivery(body)
	cases := []struct {
		name, provider string
		h              http.Header
		body           []byte
		code           int
		reason         string
	}{
		{"bad stripe signature", Stripe, bad, append([]byte(" "), body...), 401, "no signature matches"},
		{"missing stripe header", Stripe, hdr(), body, 400, "signature header missing"},
		{"github sha1 only", GitHub, hdr("X-Hub-Signature", "sha1="+sha1Hex(githubSecret, body), "X-GitHub-Delivery", "d1", "X-GitHub-Event", "push"), body, 400, "legacy SHA-1"},
		{"stale workos", WorkOS, hdr("WorkOS-Signature", workosSig(workosSecret, time.Now().Add(-time.Hour).UnixMilli(), body)), body, 401, "too old"},
		{"verified but not JSON", GitHub, githubDelivery("push", "d2", []byte("not json")), []byte("not json"), 400, "not a JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out := e.post(tc.provider, tc.h, tc.body)
			if code != tc.code {
				t.Fatalf("POST = %d %v; want %d", code, out, tc.code)
			}
			msg := out["error"].(map[string]any)["message"].(string)
			if !strings.Contains(msg, tc.reason) {
				t.Fatalf("message %q; want it to contain %q", msg, tc.reason)
			}
		})
	}
	code, out := e.api("GET", "/v1/webhooks/events?status=rejected", nil)
	items, _ := out["items"].([]any)
	if code != 200 || len(items) != len(cases) {
		t.Fatalf("GET rejected = %d, %d items; want %d", code, len(items), len(cases))
	}
	for _, it := range items {
		m := it.(map[string]any)
		if m["reason"] == "" || m["verified"] != false || m["payload"] != nil {
			t.Fatalf("rejected record %v; want a reason, verified false, no payload", m)
		}
	}
	// Nothing was stored under the event's id.
	if _, err := e.svc.get(e.ctx, Namespace, "stripe:evt_rej", nil); err == nil {
		t.Fatal("a rejected event was stored under its id")
	}
	var m dto.Metric
	e.svc.metrics.inbound.WithLabelValues(Stripe, "rejected").Write(&m)
	if n := m.GetCounter().GetValue(); n != 2 {
		t.Fatalf("dotdo_webhooks_inbound_total{stripe,rejected} = %v; want 2", n)
	}
	// Unknown provider: 404.
	if code, _ := e.post("paypal", hdr(), body); code != 404 {
		t.Fatalf("POST /webhooks/paypal = %d; want 404", code)
	}
}

// TestBodyLimits: GitHub accepts bodies up to its limit and others 1 MiB;
// a larger body is 413 and recorded as rejected.
func TestBodyLimits(t *testing.T) {
	e := newEnv(t, "sqlite")
	pad := strings.Repeat("x", 2<<20)
	big := jsonBody(map[string]any{"zen": pad, "hook_id": 1})
	d := e.deliver(GitHub, githubDelivery("ping", "big-1", big), big)
	if d.Status != StatusIgnored || d.Size != len(big) || d.Parts < 2 {
		t.Fatalf("2 MiB GitHub ping: %+v; want ignored, stored in parts", d)
	}
	got, err := e.svc.GetEvent(e.ctx, connect.NewRequest(&webhooksv1.GetEventRequest{Id: "github:big-1"}))
	if err != nil || !bytes.Equal(got.Msg.Event.Payload, big) {
		t.Fatalf("GetEvent payload: %d bytes (%v); want the %d bytes sent", len(got.Msg.Event.Payload), err, len(big))
	}
	tooBig := jsonBody(map[string]any{"zen": strings.Repeat("x", 5<<20)})
	if code, _ := e.post(GitHub, githubDelivery("ping", "big-2", tooBig), tooBig); code != 413 {
		t.Fatalf("5 MiB GitHub = %d; want 413 over the 4 MiB test limit", code)
	}
	stripeBig := stripeEventBody("evt_big", "invoice.paid", time.Now().Unix(), map[string]any{"pad": strings.Repeat("y", 1<<20)})
	if code, _ := e.post(Stripe, stripeDelivery(stripeBig), stripeBig); code != 413 {
		t.Fatalf("1 MiB+ Stripe = %d; want 413", code)
	}
	_, out := e.api("GET", "/v1/webhooks/events?status=rejected", nil)
	if n := len(out["items"].([]any)); n != 2 {
		t.Fatalf("%d rejected records; want 2", n)
	}
}

// TestUnknownTypeIgnored: an event type without a handler is stored,
// answered 200 and marked ignored.
func TestUnknownTypeIgnored(t *testing.T) {
	e := newEnv(t, "sqlite")
	body := stripeEventBody("evt_unknown", "charge.refund.updated", time.Now().Unix(), map[string]any{"id": "re_1"})
	ev := e.deliver(Stripe, stripeDelivery(body), body)
	if ev.Status != StatusIgnored || ev.Attempts != 1 {
		t.Fatalf("unknown type: %+v; want ignored", ev)
	}
}

// TestOperations: list with filters, get with payload, replay, and the
// permission checks.
func TestOperations(t *testing.T) {
	e := newEnv(t, "sqlite")
	body := stripeEventBody("evt_ops", "payment_intent.succeeded", time.Now().Unix(),
		map[string]any{"id": "pi_ops", "customer": "cus_ops", "amount": 100, "currency": "eur", "status": "succeeded"})
	e.deliver(Stripe, stripeDelivery(body), body)
	gh := jsonBody(map[string]any{"zen": "hi"})
	e.deliver(GitHub, githubDelivery("ping", "ops-ping", gh), gh)

	code, out := e.api("GET", "/v1/webhooks/events?provider=stripe&type=payment_intent.succeeded&status=processed", nil)
	items := out["items"].([]any)
	if code != 200 || len(items) != 1 || items[0].(map[string]any)["id"] != "stripe:evt_ops" {
		t.Fatalf("filtered list = %d %v", code, out)
	}
	if code, out := e.api("GET", "/v1/webhooks/events?status=bogus", nil); code != 400 {
		t.Fatalf("bad status filter = %d %v; want 400", code, out)
	}
	code, out = e.api("GET", "/v1/webhooks/events/stripe:evt_ops", nil)
	if code != 200 || out["payload"].(map[string]any)["id"] != "evt_ops" || out["attempts"].(float64) != 1 {
		t.Fatalf("GET event = %d %v", code, out)
	}
	if code, _ := e.api("GET", "/v1/webhooks/events/stripe:nope", nil); code != 404 {
		t.Fatalf("GET missing event = %d; want 404", code)
	}
	// Replay processes it again.
	p1, _ := e.thing("pi_ops")
	code, out = e.api("POST", "/v1/webhooks/events/stripe:evt_ops/replay", nil)
	if code != 202 || out["status"] != StatusReceived {
		t.Fatalf("replay = %d %v; want 202 received", code, out)
	}
	ev := e.waitDone("stripe:evt_ops")
	if ev.Status != StatusProcessed || ev.Replays != 1 {
		t.Fatalf("after replay: %+v", ev)
	}
	p2, _ := e.thing("pi_ops")
	if p2.Version != p1.Version+1 && p2.Version != p1.Version {
		t.Fatalf("payment version %d -> %d", p1.Version, p2.Version)
	}
	// Rejected events cannot be replayed.
	e.post(Stripe, hdr("Stripe-Signature", "t=1,v1=00"), body)
	_, out = e.api("GET", "/v1/webhooks/events?status=rejected", nil)
	rid := out["items"].([]any)[0].(map[string]any)["id"].(string)
	if code, _ := e.api("POST", "/v1/webhooks/events/"+rid+"/replay", nil); code != 412 {
		t.Fatalf("replay of rejected = %d; want 412", code)
	}
	// Without the permission: 403, and nothing listed.
	res, _ := http.Get(e.srv.URL + "/v1/webhooks/events")
	if res.StatusCode != 403 {
		t.Fatalf("unauthorized list = %d; want 403", res.StatusCode)
	}
}

// TestSweepEnqueuesStranded: an event stored but never enqueued (the
// process died between the two) is processed by the sweeper.
func TestSweepEnqueuesStranded(t *testing.T) {
	e := newEnv(t, "sqlite")
	body := stripeEventBody("evt_stranded", "payment_intent.succeeded", time.Now().Unix(),
		map[string]any{"id": "pi_stranded", "amount": 1, "currency": "usd", "status": "succeeded"})
	ev := eventJSON{Provider: Stripe, Type: "payment_intent.succeeded", EventID: "evt_stranded", Status: StatusReceived, Verified: true,
		ReceivedAt: time.Now().Add(-time.Minute).UnixMilli(), Parts: 1, Size: len(body)}
	if err := e.svc.batch(e.ctx, Namespace,
		writeOp("stripe:evt_stranded", typeEvent, &ev, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0),
		writeOp(payloadID("stripe:evt_stranded", 0), typePayload, payloadPart{B64: body}, 0, 0, 0)); err != nil {
		t.Fatal(err)
	}
	e.clock.shift(time.Minute)
	if err := e.svc.Sweep(context.Background(), 10*time.Second); err != nil {
		t.Fatal(err)
	}
	e.clock.real()
	if got := e.waitDone("stripe:evt_stranded"); got.Status != StatusProcessed {
		t.Fatalf("stranded event: %+v; want processed", got)
	}
	if _, m := e.thing("pi_stranded"); m["status"] != "succeeded" {
		t.Fatalf("payment %v", m)
	}
}

// TestPayloadRetention: a payload is dropped after the retention; the
// event record stays (and keeps deduplicating), and cannot be replayed.
func TestPayloadRetention(t *testing.T) {
	e := newEnv(t, "sqlite", func(c *Config) { c.PayloadRetention = time.Hour })
	body := stripeEventBody("evt_ret", "charge.updated", time.Now().Unix(), map[string]any{"id": "ch_1"})
	e.deliver(Stripe, stripeDelivery(body), body)
	if err := e.svc.expirePayloads(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.svc.GetEvent(e.ctx, connect.NewRequest(&webhooksv1.GetEventRequest{Id: "stripe:evt_ret"})); len(got.Msg.Event.Payload) == 0 {
		t.Fatal("payload dropped before its retention")
	}
	e.clock.shift(time.Hour + time.Minute)
	if err := e.svc.expirePayloads(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.clock.real()
	got, err := e.svc.GetEvent(e.ctx, connect.NewRequest(&webhooksv1.GetEventRequest{Id: "stripe:evt_ret"}))
	if err != nil || len(got.Msg.Event.Payload) != 0 || got.Msg.Event.Status != StatusIgnored {
		t.Fatalf("after retention: %v %v; want the record without its payload", got, err)
	}
	if code, _ := e.api("POST", "/v1/webhooks/events/stripe:evt_ret/replay", nil); code != 412 {
		t.Fatalf("replay without payload = %d; want 412", code)
	}
	if code, out := e.post(Stripe, stripeDelivery(body), body); code != 200 || out["duplicate"] != true {
		t.Fatalf("redelivery after retention = %d %v; want a 200 duplicate", code, out)
	}
}
