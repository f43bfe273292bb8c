package webhooks

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/auth"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The secrets the test service verifies with.
var (
	stripeSecret = "whsec_stripe_test_secret"
	githubSecret = "github-test-secret"
	workosSecret = "workos-test-secret"
	resendSecret = "whsec_" + base64.StdEncoding.EncodeToString([]byte("resend-test-secret-0123456789ab"))
)

// env is a webhooks service over real dependencies: thingsdb on a fresh
// database, an embedded (or the configured external) NATS queue, and the
// real auth service.
type env struct {
	t    testing.TB
	db   *thingsdb.Service
	q    *queue.Service
	auth *auth.Service
	svc  *Service
	srv  *httptest.Server
	ctx  context.Context
	// clock is the service's clock: real time unless a test fixes or
	// shifts it (safe while the service's goroutines read it).
	clock *testClock
}

type testClock struct{ fixed, offset atomic.Int64 }

func (c *testClock) now() time.Time {
	if f := c.fixed.Load(); f != 0 {
		return time.Unix(0, f)
	}
	return time.Now().Add(time.Duration(c.offset.Load()))
}

// set fixes the clock at t; shift moves real time by d; real undoes both.
func (c *testClock) set(t time.Time)       { c.fixed.Store(t.UnixNano()) }
func (c *testClock) shift(d time.Duration) { c.fixed.Store(0); c.offset.Store(int64(d)) }
func (c *testClock) real()                 { c.fixed.Store(0); c.offset.Store(0) }

type envOption func(*Config)

func quietLog() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func openQueue(t testing.TB) *queue.Service {
	t.Helper()
	cfg := queue.Config{Dir: t.TempDir(), AckWait: 5 * time.Second}
	if url := os.Getenv("DOTDO_TEST_NATS_URL"); url != "" {
		var b [4]byte
		rand.Read(b[:])
		cfg = queue.Config{URL: url, Prefix: "DOTDOWH" + strings.ToUpper(hex.EncodeToString(b[:])), AckWait: 5 * time.Second}
	}
	q, err := queue.Open(context.Background(), cfg, quietLog())
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	t.Cleanup(func() {
		if cfg.URL != "" {
			// Everything under the test's prefix: queues, the delay
			// stream and the settings bucket.
			if err := q.Drop(context.Background()); err != nil {
				t.Errorf("drop the test's streams: %v", err)
			}
		}
		q.Close()
	})
	return q
}

func forBackends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range testdb.Backends() {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func newEnv(t testing.TB, backend string, opts ...envOption) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := quietLog()
	db, err := thingsdb.New(testdb.Open(t, backend), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	q := openQueue(t)
	a, err := auth.New(db, auth.Config{Issuer: "https://dotdo.test", SecretKey: bytes.Repeat([]byte{7}, 32), Signup: "invite-only",
		Password: auth.PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Secrets:    map[string][]string{Stripe: {stripeSecret}, GitHub: {githubSecret}, WorkOS: {workosSecret}, Resend: {resendSecret}},
		Namespace:  "acme",
		RetryDelay: 100 * time.Millisecond,
		Outbound:   OutboundConfig{SecretKey: bytes.Repeat([]byte{9}, 32), AllowPrivate: true},
	}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := New(db, q, a, nil, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	clock := &testClock{}
	svc.Now = clock.now
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	Routes(mux, svc, RouteOptions{Authorize: func(r *http.Request, ns, perm string) error {
		if r.Header.Get("Authorization") != "Bearer ok" {
			return apierr.New(apierr.Forbidden, "missing permission %s on namespace %s", perm, ns)
		}
		return nil
	}, MaxBody: map[string]int64{GitHub: 4 << 20}})
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		srv.Close()
		cancel()
	})
	return &env{t: t, db: db, q: q, auth: a, svc: svc, srv: srv, ctx: ctx, clock: clock}
}

// post sends a delivery to /webhooks/{provider} and returns the status and
// decoded body.
func (e *env) post(provider string, h http.Header, body []byte) (int, map[string]any) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.srv.URL+"/webhooks/"+provider, bytes.NewReader(body))
	for k, v := range h {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// api calls an operations route with the allowed credential.
func (e *env) api(method, path string, body any) (int, map[string]any) {
	e.t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, r)
	req.Header.Set("Authorization", "Bearer ok")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func stripeDelivery(body []byte) http.Header {
	p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeSecret})
	return hdr("Stripe-Signature", p.Header)
}

func githubDelivery(event, delivery string, body []byte) http.Header {
	return hdr("X-Hub-Signature-256", githubSig(githubSecret, body), "X-GitHub-Event", event, "X-GitHub-Delivery", delivery)
}

func workosDelivery(body []byte) http.Header {
	return hdr("WorkOS-Signature", workosSig(workosSecret, time.Now().UnixMilli(), body))
}

func resendDelivery(t *testing.T, id string, body []byte) http.Header {
	return svixSigned(t, resendSecret, id, time.Now(), body)
}

// event reads a recorded event.
func (e *env) event(id string) *eventJSON {
	e.t.Helper()
	var ev eventJSON
	if _, err := e.svc.get(e.ctx, Namespace, id, &ev); err != nil {
		e.t.Fatalf("get event %s: %v", id, err)
	}
	return &ev
}

// waitStatus waits until event id has left received/processing and
// returns it.
func (e *env) waitDone(id string) *eventJSON {
	e.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ev := e.event(id)
		if ev.Status != StatusReceived && ev.Status != StatusProcessing {
			return ev
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("event %s still %s (attempts %d, error %q)", id, ev.Status, ev.Attempts, ev.Error)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// thing reads a thing of the handlers' namespace into a map.
func (e *env) thing(id string) (*dbv1.Thing, map[string]any) {
	e.t.Helper()
	res, err := e.db.Get(e.ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "acme", Id: id}))
	if err != nil {
		e.t.Fatalf("get acme/%s: %v", id, err)
	}
	var m map[string]any
	json.Unmarshal(res.Msg.Thing.Data, &m)
	return res.Msg.Thing, m
}

// related lists the ids related from id by typ.
func (e *env) related(id, typ string) []string {
	e.t.Helper()
	res, err := e.db.Related(e.ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: "acme", Id: id, Type: typ}))
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, r := range res.Msg.Items {
		out = append(out, r.Relationship.To)
	}
	return out
}

// deliver posts a delivery, expects 200 and waits for its processing.
func (e *env) deliver(provider string, h http.Header, body []byte) *eventJSON {
	e.t.Helper()
	code, out := e.post(provider, h, body)
	if code != 200 {
		e.t.Fatalf("POST /webhooks/%s = %d %v; want 200", provider, code, out)
	}
	return e.waitDone(out["id"].(string))
}

func jsonBody(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func stripeEventBody(id, typ string, created int64, obj map[string]any) []byte {
	return jsonBody(map[string]any{"id": id, "object": "event", "type": typ, "created": created, "api_version": "2025-08-27.basil",
		"data": map[string]any{"object": obj}})
}

var idSeq struct {
	sync.Mutex
	n int
}

func uniq(prefix string) string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return prefix + strconv.Itoa(idSeq.n) + fmt.Sprintf("_%d", time.Now().UnixNano()%1e6)
}

var _ = webhooksv1.Event{}
