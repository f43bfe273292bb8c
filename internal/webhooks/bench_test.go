package webhooks

import (
	"bytes"
	"fmt"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"
)

// BenchmarkReceive measures POST /webhooks/stripe through the routes and
// the real db and queue (processing runs beside it, as in production):
//
//	go test ./internal/webhooks -run '^$' -bench Receive -benchtime 5000x
func BenchmarkReceive(b *testing.B) {
	e := newEnv(b, "sqlite")
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
			req, _ := http.NewRequest("POST", e.srv.URL+"/webhooks/stripe", bytes.NewReader(bodies[i]))
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
