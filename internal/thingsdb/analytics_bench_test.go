package thingsdb_test

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// BenchmarkIngestEvents stores batches of 1,000 events (b.N batches).
func BenchmarkIngestEvents(b *testing.B) {
	for _, name := range testdb.Backends() {
		b.Run(name, func(b *testing.B) {
			svc, err := thingsdb.New(testdb.Open(b, name), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				b.Fatal(err)
			}
			defer svc.Close()
			base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			evs := make([]*dbv1.Event, 1000)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range evs {
					evs[j] = &dbv1.Event{Ns: "bench", Name: "page_view", Timestamp: base.Add(time.Duration((i*1000+j)*7919%2592000) * time.Second).UnixMicro(),
						Properties: []byte(fmt.Sprintf(`{"path":"/p/%d","ms":%d}`, j%50, j%900))}
				}
				if _, err := svc.IngestEvents(ctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: evs})); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
