package gateway_test

// Benchmarks of what the gateway adds to every request (request ID,
// routing, metrics, the access log line) over a bare http.ServeMux with
// the same handler. Results and the command are in docs/benchmarks.md.

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/dotdo/dotdo/internal/gateway"
	"github.com/dotdo/dotdo/internal/metrics"
)

var benchBody = []byte(`{"ns":"bench","id":"u00042","type":"User","data":{"active":true,"age":60,"email":"user42@example.com","name":"user 42"},"version":1,"createdAt":"2026-01-02T15:04:05.123456Z","updatedAt":"2026-01-02T15:04:05.123456Z"}`)

func benchRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/things/{ns}/{id}", func(w http.ResponseWriter, r *http.Request) {
		_ = r.PathValue("id")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"1"`)
		w.Write(benchBody)
	})
}

// discardWriter is a reusable ResponseWriter, so that the benchmark
// measures the handler rather than httptest.ResponseRecorder.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }

func benchGateway(b *testing.B, log *slog.Logger) http.Handler {
	b.Helper()
	return gateway.New(gateway.Config{MaxBodyBytes: 1 << 20, Self: "gateway"}, log, metrics.New(), []gateway.Upstream{{
		Name:     "db",
		Prefixes: []string{"/v1/things"},
		Routes:   benchRoutes,
	}})
}

// BenchmarkServeHTTP compares a GET through the gateway with the same
// route on a bare ServeMux, with the access log written as JSON to
// io.Discard (as `dotdo serve --log-format json 2>/dev/null` does).
func BenchmarkServeHTTP(b *testing.B) {
	mux := http.NewServeMux()
	benchRoutes(mux)
	cases := []struct {
		name string
		h    http.Handler
	}{
		{"bare-mux", mux},
		{"gateway", benchGateway(b, slog.New(slog.NewJSONHandler(io.Discard, nil)))},
		{"gateway-nolog", benchGateway(b, slog.New(slog.DiscardHandler))},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			r := httptest.NewRequest("GET", "/v1/things/bench/u00042", nil)
			w := &discardWriter{h: http.Header{}}
			for b.Loop() {
				clear(w.h)
				tc.h.ServeHTTP(w, r)
			}
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				r := httptest.NewRequest("GET", "/v1/things/bench/u00042", nil)
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					clear(w.h)
					tc.h.ServeHTTP(w, r)
				}
			})
		})
	}
}
