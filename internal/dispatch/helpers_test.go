package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The example workers are built once per test run, with the Go toolchain,
// into a temporary directory.
var (
	buildOnce sync.Once
	builtDir  string
	buildErr  error
)

// worker returns the bytes of examples/workers/<name> built for wasip1.
func worker(t testing.TB, name string) []byte {
	t.Helper()
	buildOnce.Do(func() {
		builtDir, buildErr = os.MkdirTemp("", "dotdo-workers-")
		if buildErr != nil {
			return
		}
		for _, w := range []string{"hello", "echo", "notes"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(builtDir, w+".wasm"), "./examples/workers/"+w)
			cmd.Dir = "../.."
			cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("build %s: %v\n%s", w, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	b, err := os.ReadFile(filepath.Join(builtDir, name+".wasm"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// env is a dispatch service on a real db service, with its routes on an
// httptest server.
type env struct {
	t   testing.TB
	db  *thingsdb.Service
	s   *Service
	srv *httptest.Server
	log *bytes.Buffer
	mu  *sync.Mutex
}

type syncWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func newEnv(t testing.TB, backend string, cfg Config) *env {
	t.Helper()
	mu := &sync.Mutex{}
	buf := &bytes.Buffer{}
	logger := slog.New(reqid.LogHandler(slog.NewJSONHandler(syncWriter{mu, buf}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	db, err := thingsdb.New(testdb.Open(t, backend), logger)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return newEnvOn(t, db, cfg, logger, buf, mu)
}

func newEnvOn(t testing.TB, db *thingsdb.Service, cfg Config, logger *slog.Logger, buf *bytes.Buffer, mu *sync.Mutex) *env {
	t.Helper()
	s, err := New(db, cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	Routes(mux, s, RouteOptions{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(reqid.With(r.Context(), reqid.New()))
		if s.MatchHost(r.Host) {
			s.HostHandler().ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { s.Close() })
	return &env{t: t, db: db, s: s, srv: srv, log: buf, mu: mu}
}

func (e *env) logs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.log.String()
}

// response is a response read whole.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %s is not a JSON object: %v", r, err)
	}
	return m
}

// errCode is the code of an error envelope.
func (r response) errCode(t testing.TB) string {
	t.Helper()
	e, _ := r.json(t)["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func (e *env) do(method, path string, body io.Reader, headers ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		if headers[i] == "Host" {
			req.Host = headers[i+1]
			continue
		}
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return response{status: res.StatusCode, header: res.Header, body: b}
}

// upload builds a deploy request body.
func upload(module []byte, md any) (io.Reader, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if md != nil {
		w, _ := mw.CreateFormField("metadata")
		json.NewEncoder(w).Encode(md)
	}
	fw, _ := mw.CreateFormFile("module", "worker.wasm")
	fw.Write(module)
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func (e *env) deploy(ns, name string, module []byte, md any) response {
	e.t.Helper()
	body, ct := upload(module, md)
	return e.do("PUT", "/v1/dispatch/namespaces/"+ns+"/scripts/"+name, body, "Content-Type", ct)
}

func (e *env) mustDeploy(ns, name string, module []byte, md any) {
	e.t.Helper()
	if r := e.deploy(ns, name, module, md); r.status != 200 && r.status != 201 {
		e.t.Fatalf("deploy %s/%s = %s; want 200 or 201", ns, name, r)
	}
}

func (e *env) putNamespace(name string, in any) {
	e.t.Helper()
	b, _ := json.Marshal(in)
	if r := e.do("PUT", "/v1/dispatch/namespaces/"+name, bytes.NewReader(b)); r.status != 200 && r.status != 201 {
		e.t.Fatalf("PUT namespace %s = %s", name, r)
	}
}

func eachBackend(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range testdb.Backends() {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
