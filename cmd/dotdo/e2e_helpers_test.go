//go:build unix

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The end-to-end tests build the real binary once and drive it over HTTP,
// as a user would: all-in-one, and split into a db process and a gateway
// process, on SQLite and (with DOTDO_TEST_POSTGRES_URL) on PostgreSQL.

// dotdoBin is the binary TestMain builds.
var dotdoBin string

// internalToken is the service credential the split-mode tests share.
const internalToken = "e2e-internal-token-0123456789abcdef0123456789"

// startTimeout bounds how long a process may take to listen: PostgreSQL
// migrations on a busy CI machine are the slow part. It is a deadline for a
// condition, not a measurement.
const startTimeout = 60 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dotdo-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: temp dir:", err)
		os.Exit(1)
	}
	dotdoBin = filepath.Join(dir, "dotdo")
	goTool, err := exec.LookPath("go")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: the go command is not on PATH:", err)
		os.Exit(1)
	}
	build := exec.Command(goTool, "build", "-o", dotdoBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: go build:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// randHex returns n random bytes as hex, for unique names.
func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// baseEnv is the test's environment without anything that configures
// dotdo, so that a developer's shell cannot change what the tests run.
// adminKey is the admin API key every test process bootstraps with
// (DOTDO_BOOTSTRAP_ADMIN_KEY); do sends it unless told otherwise.
const adminKey = "sk_live_e2eAdminKey0123456789abcdefghijklmnopqrstuv"

func baseEnv() []string {
	env := []string{"DOTDO_BOOTSTRAP_ADMIN_KEY=" + adminKey, "DOTDO_SECRET_KEY=" + strings.Repeat("ab", 32)}
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "DOTDO_") || k == "DATABASE_URL" || k == "REDIS_URL" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// backend is where a process keeps its data: a SQLite data directory, or a
// PostgreSQL schema of its own.
type backend struct {
	name        string // thingsdb.SQLite or thingsdb.Postgres
	dataDir     string
	databaseURL string
}

// newBackend returns a fresh, empty backend. A PostgreSQL one fails the
// test when DOTDO_TEST_POSTGRES_URL is set but the server is unreachable.
func newBackend(t *testing.T, name string) backend {
	t.Helper()
	b := backend{name: name, dataDir: t.TempDir()}
	if name == thingsdb.Postgres {
		b.databaseURL = testdb.SchemaURL(t)
	}
	return b
}

func (b backend) args() []string { return []string{"--data-dir", b.dataDir} }

func (b backend) env() []string {
	if b.databaseURL == "" {
		return nil
	}
	return []string{"DATABASE_URL=" + b.databaseURL}
}

// logBuffer collects a process's output; it is safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// records returns the complete JSON log lines written so far.
func (l *logBuffer) records() []map[string]any {
	s := l.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	} else {
		return nil
	}
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		var rec map[string]any
		if json.Unmarshal(line, &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// tail returns the last n lines, for failure messages.
func (l *logBuffer) tail(n int) string {
	lines := strings.Split(strings.TrimRight(l.String(), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... %d earlier lines", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// proc is a running dotdo process.
type proc struct {
	t      *testing.T
	name   string
	cmd    *exec.Cmd
	url    string
	logs   *logBuffer
	exited chan struct{}
	// checkedExit is set once the test has asserted how the process ended,
	// so that cleanup does not assert it again.
	checkedExit bool
}

// startProc runs `dotdo serve` on a free loopback port with JSON logs and
// the given extra arguments and environment, waits for its "dotdo
// listening" line and then for /health to answer 200. Cleanup stops it
// with SIGTERM and asserts that it exits 0.
func startProc(t *testing.T, name string, args, env []string) *proc {
	t.Helper()
	p := launch(t, name, args, env)
	p.waitHealthy(http.StatusOK)
	return p
}

// launch starts the process and waits for its listening line only.
func launch(t *testing.T, name string, args, env []string) *proc {
	t.Helper()
	all := append([]string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json"}, args...)
	cmd := exec.Command(dotdoBin, all...)
	cmd.Env = append(baseEnv(), env...)
	logs := &logBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &proc{t: t, name: name, cmd: cmd, logs: logs, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(p.cleanup)

	deadline := time.Now().Add(startTimeout)
	for p.url == "" {
		for _, rec := range logs.records() {
			if rec["msg"] == "dotdo listening" {
				p.url, _ = rec["url"].(string)
			}
		}
		if p.url != "" {
			break
		}
		select {
		case <-p.exited:
			p.checkedExit = true
			t.Fatalf("%s exited (%v) before listening; its output:\n%s", name, cmd.ProcessState, logs.tail(40))
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log \"dotdo listening\" within %v; its output:\n%s", name, startTimeout, logs.tail(40))
		}
	}
	if !strings.HasPrefix(p.url, "http://127.0.0.1:") {
		t.Fatalf("%s listens on %q; want a loopback http URL", name, p.url)
	}
	return p
}

// waitHealthy polls /health until it answers want.
func (p *proc) waitHealthy(want int) {
	p.t.Helper()
	deadline := time.Now().Add(startTimeout)
	var last string
	for {
		res, err := httpClient.Get(p.url + "/health")
		if err == nil {
			b, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode == want {
				return
			}
			last = fmt.Sprintf("%d %s", res.StatusCode, b)
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: GET /health never answered %d; last: %s\noutput:\n%s", p.name, want, last, p.logs.tail(40))
		}
		select {
		case <-p.exited:
			p.checkedExit = true
			p.t.Fatalf("%s exited while waiting for /health; output:\n%s", p.name, p.logs.tail(40))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// wait waits for the process to exit and returns how it ended.
func (p *proc) wait() *os.ProcessState {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(60 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("%s did not exit within 60s; killed it. Output:\n%s", p.name, p.logs.tail(40))
	}
	p.checkedExit = true
	return p.cmd.ProcessState
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v to %s: %v", sig, p.name, err)
	}
}

// stop sends SIGTERM and asserts a clean exit (status 0).
func (p *proc) stop() {
	p.t.Helper()
	p.signal(syscall.SIGTERM)
	if st := p.wait(); st.ExitCode() != 0 {
		p.t.Errorf("%s after SIGTERM: %v; want exit status 0. Output:\n%s", p.name, st, p.logs.tail(40))
	}
}

// kill ends the process with SIGKILL, as a crash would.
func (p *proc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait()
}

func (p *proc) cleanup() {
	select {
	case <-p.exited:
		if !p.checkedExit {
			p.t.Errorf("%s exited unexpectedly: %v", p.name, p.cmd.ProcessState)
		}
	default:
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if st := p.cmd.ProcessState; st.ExitCode() != 0 {
				p.t.Errorf("%s after SIGTERM: %v; want exit status 0", p.name, st)
			}
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			p.t.Errorf("%s ignored SIGTERM for 30s; killed it", p.name)
		}
	}
	if p.t.Failed() {
		p.t.Logf("%s output (tail):\n%s", p.name, p.logs.tail(60))
	}
}

// waitLog waits until a JSON log line satisfies match and returns the
// matching lines then.
func (p *proc) waitLog(what string, match func(map[string]any) bool) []map[string]any {
	p.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var found []map[string]any
		for _, rec := range p.logs.records() {
			if match(rec) {
				found = append(found, rec)
			}
		}
		if len(found) > 0 {
			return found
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s never logged %s; output:\n%s", p.name, what, p.logs.tail(30))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startAllInOne runs every service in one process on b.
func startAllInOne(t *testing.T, b backend, extra ...string) *proc {
	t.Helper()
	return startProc(t, "dotdo("+b.name+")", append(b.args(), extra...), b.env())
}

// startDB runs the db service alone, as in split mode.
func startDB(t *testing.T, b backend, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--services", "db"}, b.args()...)
	return startProc(t, "db("+b.name+")", append(args, extra...), append(b.env(), "DOTDO_INTERNAL_TOKEN="+internalToken))
}

// startGateway runs a gateway alone in front of the db process at dbURL.
func startGateway(t *testing.T, dbURL string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"--services", "gateway,auth", "--db-url", dbURL, "--data-dir", t.TempDir()}, extra...)
	return startProc(t, "gateway", args, []string{"DOTDO_INTERNAL_TOKEN=" + internalToken})
}

// runBinary runs the binary to completion and returns its exit code and
// combined output.
func runBinary(t *testing.T, args, env []string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, dotdoBin, args...)
	cmd.Env = append(baseEnv(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("run dotdo %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// httpClient keeps enough idle connections for the concurrent tests, so
// they do not churn through ephemeral ports.
var httpClient = &http.Client{
	Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        256,
		MaxIdleConnsPerHost: 128,
		IdleConnTimeout:     30 * time.Second,
	},
	Timeout: 60 * time.Second,
}

// response is a read HTTP response.
type response struct {
	status int
	header http.Header
	body   []byte
}

// json decodes the body, failing the test if it is not JSON.
func (r *response) json(t *testing.T) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("response body is not a JSON object: %v\n%s", err, r.body)
	}
	return v
}

// do sends one request; body may be nil, a string, or a reader (sent
// chunked, without a Content-Length). header holds name, value pairs.
func do(t *testing.T, method, url string, body any, header ...string) *response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		t.Fatalf("do: body of type %T", body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, url, err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	if req.Header.Get("Authorization") == "" {
		req.Header.Del("Authorization") // do(..., "Authorization", "") sends none
	}
	res, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}
}

// lookup returns the value at a dotted path (items.0.id) in v.
func lookup(v any, path string) (any, bool) {
	if path == "" {
		return v, true
	}
	for _, part := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = x[part]; !ok {
				return nil, false
			}
		case []any:
			var i int
			if _, err := fmt.Sscanf(part, "%d", &i); err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// subset reports the places where got lacks what want holds: objects must
// hold want's keys (and may hold more), arrays must have want's length,
// scalars must be equal.
func subset(path string, got, want any) []string {
	switch w := want.(type) {
	case map[string]any:
		g, ok := got.(map[string]any)
		if !ok {
			return []string{fmt.Sprintf("%s = %s; want an object", orRoot(path), compact(got))}
		}
		var diffs []string
		for k, wv := range w {
			gv, ok := g[k]
			if !ok {
				diffs = append(diffs, fmt.Sprintf("%s is missing; want %s", path+"."+k, compact(wv)))
				continue
			}
			diffs = append(diffs, subset(path+"."+k, gv, wv)...)
		}
		return diffs
	case []any:
		g, ok := got.([]any)
		if !ok || len(g) != len(w) {
			return []string{fmt.Sprintf("%s = %s; want %d items like %s", orRoot(path), compact(got), len(w), compact(want))}
		}
		var diffs []string
		for i := range w {
			diffs = append(diffs, subset(fmt.Sprintf("%s.%d", path, i), g[i], w[i])...)
		}
		return diffs
	}
	if !reflect.DeepEqual(got, want) {
		return []string{fmt.Sprintf("%s = %s; want %s", orRoot(path), compact(got), compact(want))}
	}
	return nil
}

func orRoot(path string) string {
	if path == "" {
		return "body"
	}
	return strings.TrimPrefix(path, ".")
}

func compact(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// mustJSON parses a JSON literal from a test table.
func mustJSON(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatalf("bad JSON in test table: %v\n%s", err, s)
	}
	return v
}
