package thingsdb_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/gateway"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// TestRequestEvents sends requests through a gateway whose Events hook is
// the request-event pipeline and finds them in the analytics, grouped by
// route.
func TestRequestEvents(t *testing.T) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			svc, err := thingsdb.New(testdb.Open(t, name), log)
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			pctx, stop := context.WithCancel(context.Background())
			events := thingsdb.NewRequestEvents(pctx, svc, log)
			gw := gateway.New(gateway.Config{MaxBodyBytes: 1 << 20, Events: events.Record}, log, metrics.New(), []gateway.Upstream{{
				Name: "db", Prefixes: thingsdb.Prefixes,
				Routes: func(mux *http.ServeMux) { thingsdb.Routes(mux, svc, thingsdb.RouteOptions{}) },
			}})
			srv := httptest.NewServer(gw)
			defer srv.Close()
			for i := 0; i < 5; i++ {
				res, err := http.Get(srv.URL + "/v1/things/ev/missing")
				if err != nil {
					t.Fatal(err)
				}
				res.Body.Close()
			}
			res, _ := http.Get(srv.URL + "/v1/things/ev")
			res.Body.Close()
			stop()
			<-events.Done()
			if events.Stored() != 6 || events.Dropped() != 0 {
				t.Fatalf("stored %d, dropped %d; want 6, 0", events.Stored(), events.Dropped())
			}
			now := time.Now()
			q, err := svc.QueryAnalytics(ctx, connect.NewRequest(&dbv1.QueryAnalyticsRequest{Ns: thingsdb.AnalyticsNamespace, Event: thingsdb.RequestEvent,
				From: now.Add(-time.Hour).UnixMicro(), To: now.Add(time.Hour).UnixMicro(), Bucket: "day", GroupBy: "route"}))
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int64{}
			for _, r := range q.Msg.Rows {
				got[r.Value] += r.Count
			}
			if got["GET /v1/things/{ns}/{id}"] != 5 || got["GET /v1/things/{ns}"] != 1 || !q.Msg.FromRollups {
				t.Fatalf("request events by route = %v (from rollups %v)", got, q.Msg.FromRollups)
			}
		})
	}
}

// stuckDB stores nothing until released: the db service under overload.
type stuckDB struct {
	thingsdb.SearchAPI
	release chan struct{}
}

func (s *stuckDB) IngestEvents(ctx context.Context, req *connect.Request[dbv1.IngestEventsRequest]) (*connect.Response[dbv1.IngestEventsResponse], error) {
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return s.SearchAPI.IngestEvents(ctx, req)
}

// TestRequestEventsOverload shows that Record never waits for the db
// service: with the store stuck, events beyond the buffer are dropped and
// counted, and the rest are stored once it recovers.
func TestRequestEventsOverload(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := thingsdb.New(testdb.Open(t, thingsdb.SQLite), log)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	stuck := &stuckDB{SearchAPI: svc, release: make(chan struct{})}
	pctx, stop := context.WithCancel(context.Background())
	events := thingsdb.NewRequestEvents(pctx, stuck, log)
	const n = 40000
	for i := 0; i < n; i++ {
		events.Record("GET /v1/things/{ns}", 200, time.Millisecond, "key1")
	}
	if events.Dropped() == 0 {
		t.Fatal("nothing dropped with the store stuck and the buffer full")
	}
	close(stuck.release)
	stop()
	<-events.Done()
	if events.Stored()+events.Dropped() != n {
		t.Fatalf("stored %d + dropped %d != %d recorded", events.Stored(), events.Dropped(), n)
	}
	st, _ := svc.Stats(ctx, connect.NewRequest(&dbv1.StatsRequest{Ns: thingsdb.AnalyticsNamespace}))
	if st.Msg.Events != events.Stored() {
		t.Fatalf("stored %d but the database holds %d", events.Stored(), st.Msg.Events)
	}
}
