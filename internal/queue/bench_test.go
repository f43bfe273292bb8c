package queue

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// benchEngines runs f on the embedded NATS and, with DOTDO_TEST_NATS_URL,
// on the external one.
func benchEngines(b *testing.B, f func(b *testing.B, s *Service)) {
	b.Run("embedded", func(b *testing.B) { f(b, openEmbedded(b)) })
	if url := os.Getenv("DOTDO_TEST_NATS_URL"); url != "" {
		b.Run("external", func(b *testing.B) { f(b, openExternal(b, url)) })
	}
}

// BenchmarkSendBatch: durable sends of batches of 100 messages of 128
// bytes from 4 goroutines per CPU; reports messages per second.
func BenchmarkSendBatch(b *testing.B) {
	benchEngines(b, func(b *testing.B, s *Service) {
		ensure(b, s, Defaults("bench"))
		batch := make([]Outgoing, 100)
		body := []byte(fmt.Sprintf(`"%0126d"`, 0))
		for i := range batch {
			batch[i] = Outgoing{Body: body}
		}
		var n atomic.Int64
		b.SetParallelism(4)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := s.Send(context.Background(), "bench", batch...); err != nil {
					b.Error(err)
					return
				}
				n.Add(int64(len(batch)))
			}
		})
		b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "msgs/s")
		b.StopTimer()
		s.Purge(context.Background(), "bench")
	})
}

// BenchmarkIdleLatency: one message at a time on an idle queue with
// max_batch_timeout 0, from Send's call to the handler's start; reports
// p50 and p99.
func BenchmarkIdleLatency(b *testing.B) {
	benchEngines(b, func(b *testing.B, s *Service) {
		st := Defaults("lat")
		st.MaxBatchTimeout = 0
		ensure(b, s, st)
		got := make(chan time.Time, 1)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := s.Consume(ctx, "lat", func(ctx context.Context, bt *Batch) error {
			got <- time.Now()
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		var lat []time.Duration
		b.ResetTimer()
		for range b.N {
			start := time.Now()
			if _, err := s.Send(ctx, "lat", Outgoing{Body: []byte(`{"n":1}`)}); err != nil {
				b.Fatal(err)
			}
			select {
			case at := <-got:
				lat = append(lat, at.Sub(start))
			case <-time.After(10 * time.Second):
				b.Fatal("not delivered")
			}
			time.Sleep(5 * time.Millisecond) // idle between messages
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	})
}

// BenchmarkRESTSendBatch: POST .../messages/batch (100 x 128 B) through the
// routes on an httptest server, 4 clients per CPU; messages per second.
func BenchmarkRESTSendBatch(b *testing.B) {
	s := openEmbedded(b)
	ensure(b, s, Defaults("bench"))
	mux := http.NewServeMux()
	Routes(mux, s, RouteOptions{})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	msgs := make([]string, 100)
	for i := range msgs {
		msgs[i] = `{"body":"` + strings.Repeat("x", 126) + `"}`
	}
	body := `{"messages":[` + strings.Join(msgs, ",") + `]}`
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	var n atomic.Int64
	b.SetParallelism(4)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			res, err := client.Post(srv.URL+"/v1/queues/bench/messages/batch", "application/json", strings.NewReader(body))
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != 201 {
				b.Errorf("status %d", res.StatusCode)
				return
			}
			n.Add(100)
		}
	})
	b.ReportMetric(float64(n.Load())/time.Since(start).Seconds(), "msgs/s")
}
