package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"
	svix "github.com/svix/svix-webhooks/go"

	"github.com/dotdo/dotdo/internal/testdb"
)

const e2eStripeSecret = "whsec_e2e_stripe_secret_0123456789"

// webhooksArgs are the flags of a process that verifies Stripe and lets
// outbound endpoints be on loopback (the test's receiver).
func webhooksArgs() []string {
	return []string{"--webhooks-stripe-secrets", "whsec_retired_one," + e2eStripeSecret, "--webhooks-namespace", "billing",
		"--webhooks-allow-private", "--rate-limit-anon", "off"}
}

// stripeEvent returns a signed Stripe payment_intent.succeeded delivery.
func stripeEvent(id, pi string) ([]byte, string) {
	body := []byte(fmt.Sprintf(`{"id":%q,"object":"event","type":"payment_intent.succeeded","created":%d,"data":{"object":{"id":%q,"object":"payment_intent","customer":"cus_e2e","amount":1234,"currency":"usd","status":"succeeded"}}}`,
		id, time.Now().Unix(), pi))
	p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: e2eStripeSecret})
	return body, p.Header
}

func postWebhook(url string, body []byte, sig string) (int, error) {
	req, _ := http.NewRequest("POST", url+"/webhooks/stripe", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Stripe-Signature", sig)
	res, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode, nil
}

// TestWebhooksE2E drives the built binary: a verified Stripe delivery is
// answered 200 without an API key, processed into the configured
// namespace, listed and replayed by an admin; a forged one is 401 and
// recorded; an outbound endpoint receives a signed event that the svix
// library verifies.
func TestWebhooksE2E(t *testing.T) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, name)
			p := startAllInOne(t, b, webhooksArgs()...)

			body, sig := stripeEvent("evt_e2e_1", "pi_e2e_1")
			if code, err := postWebhook(p.url, body, sig); err != nil || code != 200 {
				t.Fatalf("POST /webhooks/stripe = %d %v; want 200", code, err)
			}
			if code, _ := postWebhook(p.url, body, sig); code != 200 {
				t.Fatalf("duplicate = %d; want 200", code)
			}
			waitFor(t, "event processed", func() bool {
				r := do(t, "GET", p.url+"/v1/webhooks/events/stripe:evt_e2e_1", nil)
				return r.status == 200 && r.json(t)["status"] == "processed"
			})
			r := do(t, "GET", p.url+"/v1/things/billing/pi_e2e_1", nil)
			if r.status != 200 || !strings.Contains(string(r.body), `"amount":1234`) {
				t.Fatalf("GET /v1/things/billing/pi_e2e_1 = %d %s", r.status, r.body)
			}
			// A forged delivery: 401, recorded with its reason.
			if code, _ := postWebhook(p.url, body, "t=1,v1="+strings.Repeat("ab", 32)); code != 401 {
				t.Fatalf("forged = %d; want 401", code)
			}
			r = do(t, "GET", p.url+"/v1/webhooks/events?status=rejected", nil)
			if r.status != 200 || !strings.Contains(string(r.body), "no signature matches") {
				t.Fatalf("rejected list = %d %s", r.status, r.body)
			}
			// The operations need a key.
			if r := do(t, "GET", p.url+"/v1/webhooks/events", nil, "Authorization", ""); r.status != 401 {
				t.Fatalf("events without a key = %d; want 401", r.status)
			}
			if r := do(t, "POST", p.url+"/v1/webhooks/events/stripe:evt_e2e_1/replay", nil); r.status != 202 {
				t.Fatalf("replay = %d %s", r.status, r.body)
			}

			// Outbound: an endpoint on loopback gets a signed event.
			var mu sync.Mutex
			var got []*http.Request
			var gotBody [][]byte
			recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				got, gotBody = append(got, r), append(gotBody, b)
				mu.Unlock()
			}))
			defer recv.Close()
			r = do(t, "POST", p.url+"/v1/webhooks/endpoints", fmt.Sprintf(`{"url":%q,"namespace":"billing","eventTypes":["invoice.ready"]}`, recv.URL))
			if r.status != 201 {
				t.Fatalf("create endpoint = %d %s", r.status, r.body)
			}
			secret := r.json(t)["secret"].(string)
			r = do(t, "POST", p.url+"/v1/webhooks/emit", `{"namespace":"billing","type":"invoice.ready","data":{"invoice":"in_1"}}`)
			if r.status != 202 {
				t.Fatalf("emit = %d %s", r.status, r.body)
			}
			waitFor(t, "outbound delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) > 0 })
			wh, err := svix.NewWebhook(secret)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			if err := wh.Verify(gotBody[0], got[0].Header); err != nil {
				t.Fatalf("svix Verify of the outbound delivery: %v", err)
			}
			mu.Unlock()
			p.stop()
		})
	}
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 60s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestWebhooksKill9 sends 2,000 verified deliveries and kills the process
// with SIGKILL partway: after a restart on the same data, every delivery
// that was answered 2xx is stored and processed.
func TestWebhooksKill9(t *testing.T) {
	b := newBackend(t, "sqlite")
	p := startAllInOne(t, b, webhooksArgs()...)
	const total, workers = 2000, 16
	type delivery struct {
		id        string
		body      []byte
		sig       string
		delivered bool
	}
	ds := make([]*delivery, total)
	run := fmt.Sprintf("%d", time.Now().UnixNano())
	for i := range ds {
		id := fmt.Sprintf("evt_k9_%s_%d", run, i)
		body, sig := stripeEvent(id, fmt.Sprintf("pi_k9_%d", i))
		ds[i] = &delivery{id: id, body: body, sig: sig}
	}
	var next, ok2xx atomic.Int64
	var wg sync.WaitGroup
	killed := make(chan struct{})
	var once sync.Once
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= total {
					return
				}
				d := ds[i]
				code, err := postWebhook(p.url, d.body, d.sig)
				if err == nil && code == 200 {
					d.delivered = true
					if ok2xx.Add(1) == 700 {
						once.Do(func() { p.kill(); close(killed) })
					}
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-killed:
	default:
		t.Fatalf("only %d deliveries succeeded before the kill point", ok2xx.Load())
	}
	var acked []string
	for _, d := range ds {
		if d.delivered {
			acked = append(acked, d.id)
		}
	}
	t.Logf("%d of %d deliveries answered 2xx before SIGKILL", len(acked), total)
	if len(acked) < 700 || len(acked) >= total {
		t.Fatalf("%d acknowledged; want the kill to land mid-load", len(acked))
	}

	p2 := startAllInOne(t, b, webhooksArgs()...)
	// Every acknowledged delivery is stored, and reaches processed.
	pending := map[string]bool{}
	for _, id := range acked {
		pending["stripe:"+id] = true
	}
	// An event the killed process had claimed is taken back when its 60 s
	// lease ends.
	deadline := time.Now().Add(180 * time.Second)
	for len(pending) > 0 {
		cursor := ""
		for {
			u := p2.url + "/v1/webhooks/events?provider=stripe&status=processed&limit=1000"
			if cursor != "" {
				u += "&cursor=" + cursor
			}
			r := do(t, "GET", u, nil)
			if r.status != 200 {
				t.Fatalf("list = %d %s", r.status, r.body)
			}
			var page struct {
				Items []struct {
					ID string `json:"id"`
				} `json:"items"`
				NextCursor string `json:"nextCursor"`
			}
			json.Unmarshal(r.body, &page)
			for _, it := range page.Items {
				delete(pending, it.ID)
			}
			if page.NextCursor == "" {
				break
			}
			cursor = page.NextCursor
		}
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var some []string
			for id := range pending {
				some = append(some, id)
			}
			sort.Strings(some)
			r := do(t, "GET", p2.url+"/v1/webhooks/events/"+some[0], nil)
			t.Fatalf("%d acknowledged deliveries not processed after restart, e.g. %s: %d %s", len(pending), some[0], r.status, r.body)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Their effects are there too.
	r := do(t, "GET", p2.url+"/v1/things/billing/pi_k9_0", nil)
	if ds[0].delivered && r.status != 200 {
		t.Fatalf("Payment of the first acknowledged delivery: %d %s", r.status, r.body)
	}
	p2.stop()
}

var _ = base64.StdEncoding

// TestWebhooksSplit runs db, auth, queue+webhooks and the gateway as four
// processes: a verified Stripe delivery through the gateway is processed
// into the db, and a WorkOS directory user is provisioned through the
// remote auth binding.
func TestWebhooksSplit(t *testing.T) {
	const workosSecret = "wos_e2e_secret"
	tok := "DOTDO_INTERNAL_TOKEN=" + internalToken
	db := startDB(t, newBackend(t, "sqlite"))
	authProc := startProc(t, "auth", []string{"--services", "auth", "--db-url", db.url, "--data-dir", t.TempDir()}, []string{tok})
	wh := startProc(t, "webhooks", append([]string{"--services", "queue,webhooks", "--db-url", db.url, "--auth-url", authProc.url,
		"--data-dir", t.TempDir(), "--webhooks-workos-secrets", workosSecret}, webhooksArgs()...), []string{tok})
	gw := startProc(t, "gateway", []string{"--services", "gateway", "--db-url", db.url, "--auth-url", authProc.url, "--webhooks-url", wh.url,
		"--rate-limit-anon", "off"}, []string{tok})

	r := do(t, "GET", gw.url+"/health", nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"webhooks":{"status":"ok"}`) {
		t.Fatalf("gateway /health = %d %s", r.status, r.body)
	}
	body, sig := stripeEvent("evt_split_1", "pi_split_1")
	if code, err := postWebhook(gw.url, body, sig); err != nil || code != 200 {
		t.Fatalf("POST /webhooks/stripe through the gateway = %d %v", code, err)
	}
	waitFor(t, "stripe event processed", func() bool {
		r := do(t, "GET", gw.url+"/v1/webhooks/events/stripe:evt_split_1", nil)
		return r.status == 200 && r.json(t)["status"] == "processed"
	})
	if r := do(t, "GET", gw.url+"/v1/things/billing/pi_split_1", nil); r.status != 200 {
		t.Fatalf("Payment = %d %s", r.status, r.body)
	}

	wbody := []byte(fmt.Sprintf(`{"id":"event_split_1","event":"dsync.user.created","created_at":%q,"data":{"id":"directory_user_s1","directory_id":"d1","first_name":"Grace","last_name":"Hopper","emails":[{"primary":true,"value":"grace@acme.test"}],"state":"active"}}`,
		time.Now().UTC().Format(time.RFC3339)))
	ms := time.Now().UnixMilli()
	m := hmacHex(workosSecret, fmt.Sprintf("%d.%s", ms, wbody))
	req, _ := http.NewRequest("POST", gw.url+"/webhooks/workos", bytes.NewReader(wbody))
	req.Header.Set("WorkOS-Signature", fmt.Sprintf("t=%d, v1=%s", ms, m))
	res, err := httpClient.Do(req)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("POST /webhooks/workos = %v %v", res, err)
	}
	res.Body.Close()
	waitFor(t, "directory user provisioned", func() bool {
		r := do(t, "GET", gw.url+"/v1/webhooks/events/workos:event_split_1", nil)
		return r.status == 200 && r.json(t)["status"] == "processed"
	})
	r = do(t, "GET", gw.url+"/v1/auth/users?limit=100", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "grace@acme.test") {
		t.Fatalf("users = %d %s; want grace provisioned", r.status, r.body)
	}

	// A thing written through the gateway is an event in the webhooks
	// process, delivered signed to the endpoint subscribed to it.
	things := newEventReceiver(t)
	r = do(t, "POST", gw.url+"/v1/webhooks/endpoints", fmt.Sprintf(`{"url":%q,"namespace":"acme","eventTypes":["thing.created"]}`, things.srv.URL))
	if r.status != 201 {
		t.Fatalf("create endpoint = %d %s", r.status, r.body)
	}
	secret := r.json(t)["secret"].(string)
	// The gateway's emitter rereads "is there an endpoint?" within 3 s;
	// a write before then is not an event, so write until one arrives.
	for i := 0; ; i++ {
		id := fmt.Sprintf("order-%d", i)
		if r := do(t, "PUT", gw.url+"/v1/things/acme/"+id, `{"type":"Order","data":{"total":5}}`); r.status != 201 {
			t.Fatalf("PUT thing = %d %s", r.status, r.body)
		}
		things.mu.Lock()
		n := len(things.bodies)
		things.mu.Unlock()
		if n > 0 || i == 40 {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	ev := things.wait(t, secret, "thing.created")
	if ev.Data["ns"] != "acme" || ev.Data["type"] != "Order" {
		t.Fatalf("thing.created through the split gateway = %+v", ev)
	}
}

func hmacHex(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}
