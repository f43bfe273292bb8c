package email

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkOutboxEndToEnd measures emails accepted over HTTP (POST
// /v1/emails, rendered from the welcome template), stored, queued,
// consumed and recorded as sent by the outbox provider: b.N emails from 32
// concurrent clients, timed until the last one is sent.
//
//	go test ./internal/email/ -run '^$' -bench OutboxEndToEnd -benchtime 5000x
func BenchmarkOutboxEndToEnd(b *testing.B) {
	for _, backend := range []string{"sqlite"} {
		b.Run(backend, func(b *testing.B) {
			e := newEnv(b, backend, Config{BatchSize: 100, Concurrency: 16})
			mux := http.NewServeMux()
			Routes(mux, e.s, RouteOptions{})
			srv := httptest.NewServer(mux)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			var next atomic.Int64
			ids := make([]string, b.N)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for range 32 {
				wg.Go(func() {
					for {
						i := int(next.Add(1)) - 1
						if i >= b.N {
							return
						}
						body, _ := json.Marshal(map[string]any{"from": "Acme <noreply@acme.test>", "to": fmt.Sprintf("user%d@x.test", i),
							"template": "welcome", "data": map[string]any{"name": "Ann", "appName": "Acme", "loginUrl": "https://acme.test/login"},
							"tags": []Tag{{Name: "bench", Value: "yes"}}})
						res, err := client.Post(srv.URL+"/v1/emails", "application/json", bytes.NewReader(body))
						if err != nil {
							b.Error(err)
							return
						}
						var out struct{ ID string }
						json.NewDecoder(res.Body).Decode(&out)
						io.Copy(io.Discard, res.Body)
						res.Body.Close()
						if res.StatusCode != http.StatusAccepted {
							b.Errorf("POST /v1/emails = %d", res.StatusCode)
							return
						}
						ids[i] = out.ID
					}
				})
			}
			wg.Wait()
			accepted := time.Since(start)
			// Wait for the consumer: the emails are sent in order, roughly;
			// check each until it is sent.
			ctx := context.Background()
			for _, id := range ids {
				for {
					r, _, err := e.s.getRecord(ctx, id)
					if err != nil {
						b.Fatal(err)
					}
					if r.Status == StatusSent {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
			}
			total := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/accepted.Seconds(), "accepted/s")
			b.ReportMetric(float64(b.N)/total.Seconds(), "sent/s")
		})
	}
}
