package webhooks

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// BenchmarkReceive measures POST /webhooks/stripe through the routes and
// the real db and queue (processing runs beside it, as in production):
//
//	go test ./internal/webhooks -run '^$' -bench Receive -benchtime 5000x
func BenchmarkReceive(b *testing.B) {
	e := newEnv(b, "sqlite")
	runReceive(b, e.srv.URL)
}

func runReceive(b *testing.B, url string) {
	now := time.Now()
	bodies := make([][]byte, b.N)
	sigs := make([]string, b.N)
	run := now.UnixNano()
	for i := range bodies {
		bodies[i] = fmt.Appendf(nil, `{"id":"evt_b%d_%d","object":"event","type":"payment_intent.succeeded","created":%d,"data":{"object":{"id":"pi_b%d_%d","customer":"cus_b","amount":100,"currency":"usd","status":"succeeded"}}}`, run, i, now.Unix(), run, i)
		sigs[i] = webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: bodies[i], Secret: stripeSecret, Timestamp: now}).Header
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var next atomic.Int64
	b.SetParallelism(8)
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := next.Add(1) - 1
			req, _ := http.NewRequest("POST", url+"/webhooks/stripe", bytes.NewReader(bodies[i]))
			req.Header.Set("Stripe-Signature", sigs[i])
			res, err := client.Do(req)
			if err != nil || res.StatusCode != 200 {
				b.Errorf("POST = %v %v", res, err)
				return
			}
			res.Body.Close()
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "accepted/s")
	// CPU per delivery (this process: client, service, db, NATS) is
	// steadier than the rate on a shared machine.
	b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkReceiveOnly is BenchmarkReceive without the consumers: the
// acknowledgement path alone (verify, group commit, queue send, HTTP).
func BenchmarkReceiveOnly(b *testing.B) {
	log := quietLog()
	db, err := thingsdb.New(testdb.Open(b, "sqlite"), log)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	q := openQueue(b)
	svc, err := New(db, q, nil, nil, Config{Secrets: map[string][]string{Stripe: {stripeSecret}}}, log)
	if err != nil {
		b.Fatal(err)
	}
	if err := q.EnsureQueue(context.Background(), queue.Defaults(InboundQueue)); err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	Routes(mux, svc, RouteOptions{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	runReceive(b, srv.URL)
	if g := svc.groups.Load(); g > 0 {
		b.ReportMetric(float64(svc.grouped.Load())/float64(g), "deliveries/commit")
	}
}
