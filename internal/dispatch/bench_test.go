package dispatch

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/dispatch/wasmtest"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The benchmarks report the median (p50) and p99 of single requests as
// well as the mean (ns/op). Run them with:
//
//	go test -run XXX -bench . -benchtime 2000x ./internal/dispatch/

// quiet returns a service on a fresh SQLite db that logs nothing.
func quiet(b *testing.B, cacheDir string) (*Service, *thingsdb.Service) {
	b.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := thingsdb.New(testdb.Open(b, thingsdb.SQLite), logger)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	return quietOn(b, db, cacheDir), db
}

func quietOn(b *testing.B, db *thingsdb.Service, cacheDir string) *Service {
	b.Helper()
	logger := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	s, err := New(db, Config{CacheDir: cacheDir}, logger)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// latencies records single-request durations and reports percentiles.
type latencies []time.Duration

func (l latencies) report(b *testing.B) {
	if len(l) == 0 {
		return
	}
	slices.Sort(l)
	p := func(q float64) float64 { return float64(l[int(q*float64(len(l)-1))].Microseconds()) }
	b.ReportMetric(p(0.5), "p50-µs")
	b.ReportMetric(p(0.99), "p99-µs")
}

func serveOnce(b *testing.B, s *Service, script string) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/dispatch/tenant/"+script+"/", nil)
	s.Serve(rec, req, Request{Namespace: "tenant", Script: script, ScriptName: "/dispatch/tenant/" + script, PathInfo: "/"})
	if rec.Code != 200 {
		b.Fatalf("%s: %d %s", script, rec.Code, rec.Body)
	}
}

func benchScript(b *testing.B, module []byte) {
	s, _ := quiet(b, "")
	if _, err := s.Deploy(context.Background(), "tenant", "w", module, Metadata{}, ""); err != nil {
		b.Fatal(err)
	}
	serveOnce(b, s, "w")
	l := make(latencies, 0, b.N)
	b.ResetTimer()
	for b.Loop() {
		t := time.Now()
		serveOnce(b, s, "w")
		l = append(l, time.Since(t))
	}
	l.report(b)
}

// BenchmarkMinimalModule is the dispatcher's own cost per request: resolve
// the script, instantiate a fresh instance of a hand-written module that
// writes a fixed response with one fd_write, parse the CGI output.
func BenchmarkMinimalModule(b *testing.B) { benchScript(b, wasmtest.Minimal()) }

// BenchmarkGoHello is the same for the Go hello example (wasip1).
func BenchmarkGoHello(b *testing.B) { benchScript(b, worker(b, "hello")) }

// BenchmarkFirstRequestAfterRestart times the first request a new process
// serves for a deployed script: read the module from the store, load the
// compiled code from the on-disk cache, run. Cold is the same with an
// empty cache, which compiles.
func BenchmarkFirstRequestAfterRestart(b *testing.B) {
	for _, warm := range []bool{true, false} {
		name := "warm-cache"
		if !warm {
			name = "cold-cache"
		}
		b.Run(name, func(b *testing.B) {
			cacheDir := b.TempDir()
			s, db := quiet(b, cacheDir)
			if _, err := s.Deploy(context.Background(), "tenant", "hello", worker(b, "hello"), Metadata{}, ""); err != nil {
				b.Fatal(err)
			}
			s.Close()
			l := make(latencies, 0, b.N)
			b.ResetTimer()
			for b.Loop() {
				b.StopTimer()
				dir := cacheDir
				if !warm {
					dir = b.TempDir()
				}
				s := quietOn(b, db, dir)
				b.StartTimer()
				t := time.Now()
				serveOnce(b, s, "hello")
				l = append(l, time.Since(t))
				b.StopTimer()
				s.Close()
				b.StartTimer()
			}
			l.report(b)
		})
	}
}

// BenchmarkUploadToServing5MB times a 5 MB Go module from the start of its
// upload (multipart PUT over HTTP) to the first answered request.
func BenchmarkUploadToServing5MB(b *testing.B) {
	dir := b.TempDir()
	cmd := exec.Command("go", "build", "-o", filepath.Join(dir, "big.wasm"), "./internal/dispatch/testdata/big")
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	module, err := os.ReadFile(filepath.Join(dir, "big.wasm"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(module))/1e6, "MB")
	l := make(latencies, 0, b.N)
	for b.Loop() {
		b.StopTimer()
		s, _ := quiet(b, b.TempDir())
		mux := http.NewServeMux()
		Routes(mux, s, RouteOptions{})
		srv := httptest.NewServer(mux)
		body, ct := upload(module, Metadata{Tags: []string{"big"}})
		b.StartTimer()
		t := time.Now()
		req, _ := http.NewRequest("PUT", srv.URL+"/v1/dispatch/namespaces/tenant/scripts/big", body)
		req.Header.Set("Content-Type", ct)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != 201 {
			b.Fatalf("deploy: %v %v", res, err)
		}
		res.Body.Close()
		res, err = http.Get(srv.URL + "/dispatch/tenant/big/")
		if err != nil || res.StatusCode != 200 {
			b.Fatalf("first request: %v %v", res, err)
		}
		res.Body.Close()
		l = append(l, time.Since(t))
		b.StopTimer()
		srv.Close()
		b.StartTimer()
	}
	l.report(b)
}
