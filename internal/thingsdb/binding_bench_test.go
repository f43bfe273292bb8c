package thingsdb_test

// Benchmarks of the in-process service binding: what the gateway's REST
// routes pay, per call, for reaching the db service through thingsdb.API
// (an interface value wrapped by thingsdb.Instrument, with a
// connect.Request built per call) instead of calling (*thingsdb.Service)
// methods directly. Results and the command are in docs/benchmarks.md.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"testing"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/sqlite"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

const benchThings = 1000

// benchService returns a db service over a temporary SQLite file holding
// benchThings things of type User in namespace bench, ids u00000...
func benchService(b *testing.B) *thingsdb.Service {
	b.Helper()
	ctx := context.Background()
	db, err := sqlite.Open(filepath.Join(b.TempDir(), "bench.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	svc, err := thingsdb.New(thingsdb.Backend{Name: thingsdb.SQLite, Read: db.Read, Write: db.Write}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { svc.Close() })
	ops := make([]*dbv1.Op, 0, benchThings)
	for i := range benchThings {
		ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{
			Ns: "bench", Id: fmt.Sprintf("u%05d", i), Type: "User",
			Data: fmt.Appendf(nil, `{"name":"user %d","email":"user%d@example.com","age":%d,"active":true}`, i, i, 18+i%60),
		}}})
	}
	if _, err := svc.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "bench", Ops: ops})); err != nil {
		b.Fatal(err)
	}
	return svc
}

func benchIDs() []string {
	ids := make([]string, benchThings)
	for i := range ids {
		ids[i] = fmt.Sprintf("u%05d", (i*7919)%benchThings)
	}
	return ids
}

// BenchmarkGet compares a direct method call on *thingsdb.Service with the
// same call through the binding the gateway uses (thingsdb.API from
// thingsdb.Instrument, a new connect.Request per call). Both read SQLite,
// so the difference is the binding's cost; BenchmarkBinding measures that
// cost alone.
func BenchmarkGet(b *testing.B) {
	svc := benchService(b)
	ids := benchIDs()
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		req := connect.NewRequest(&dbv1.GetRequest{Ns: "bench"})
		for i := 0; b.Loop(); i++ {
			req.Msg.Id = ids[i%len(ids)]
			if _, err := svc.Get(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binding", func(b *testing.B) {
		b.ReportAllocs()
		api := thingsdb.Instrument(svc, metrics.New(), "db")
		for i := 0; b.Loop(); i++ {
			if _, err := api.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "bench", Id: ids[i%len(ids)]})); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkGetParallel is BenchmarkGet from GOMAXPROCS goroutines, as the
// server calls it.
func BenchmarkGetParallel(b *testing.B) {
	svc := benchService(b)
	ids := benchIDs()
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			req := connect.NewRequest(&dbv1.GetRequest{Ns: "bench"})
			for i := 0; pb.Next(); i++ {
				req.Msg.Id = ids[i%len(ids)]
				if _, err := svc.Get(ctx, req); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("binding", func(b *testing.B) {
		b.ReportAllocs()
		api := thingsdb.Instrument(svc, metrics.New(), "db")
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				if _, err := api.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "bench", Id: ids[i%len(ids)]})); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// stubDB answers Get without work, so that BenchmarkBinding measures the
// binding alone, free of SQLite's variance.
type stubDB struct {
	thingsdb.API // only Get is called
	res          *connect.Response[dbv1.GetResponse]
}

func (s *stubDB) Get(ctx context.Context, req *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error) {
	return s.res, nil
}

// BenchmarkBinding measures what the binding layer adds to one call:
// "direct" calls the concrete value with a prepared request; "binding"
// goes through thingsdb.Instrument (interface dispatch, two clock reads,
// the call metrics) with a connect.Request built per call, as the REST
// routes do. The difference is the binding's overhead per call.
func BenchmarkBinding(b *testing.B) {
	stub := &stubDB{res: connect.NewResponse(&dbv1.GetResponse{Thing: &dbv1.Thing{Ns: "bench", Id: "u00001"}})}
	ctx := context.Background()
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		req := connect.NewRequest(&dbv1.GetRequest{Ns: "bench", Id: "u00001"})
		for b.Loop() {
			if _, err := stub.Get(ctx, req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binding", func(b *testing.B) {
		b.ReportAllocs()
		api := thingsdb.Instrument(stub, metrics.New(), "db")
		for b.Loop() {
			if _, err := api.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "bench", Id: "u00001"})); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("binding-parallel", func(b *testing.B) {
		b.ReportAllocs()
		api := thingsdb.Instrument(stub, metrics.New(), "db")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := api.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "bench", Id: "u00001"})); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}
