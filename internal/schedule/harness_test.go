package schedule

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// t0 is the fake clock's start: near the real time, because the db
// service hides things by expiresAt against its own, real clock.
func t0() time.Time { return time.Now().UTC().Truncate(time.Hour).Add(time.Hour) }

func quietLog() *slog.Logger {
	if os.Getenv("SCHEDULE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// openDB returns a db service on a fresh backend.
func openDB(t *testing.T, backend string) *thingsdb.Service {
	t.Helper()
	db, err := thingsdb.New(testdb.Open(t, backend), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// replica is a running schedule service.
type replica struct {
	*Service
	cancel context.CancelFunc
	done   chan struct{}
}

// startReplica starts a schedule replica over db on clk; stop (or the
// test's end) cancels it as a crash would, leaving its runs behind.
func startReplica(t *testing.T, db DB, clk Clock, name string, mod func(*Config)) *replica {
	t.Helper()
	cfg := Config{Replica: name, Clock: clk, AllowPrivate: true, Jitter: func() float64 { return 0 }}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(db, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	r := &replica{Service: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		s.Run(ctx)
		s.Close()
		close(r.done)
	}()
	t.Cleanup(r.stop)
	return r
}

func (r *replica) stop() {
	r.cancel()
	<-r.done
}

// hook is a fake of a user's HTTP endpoint that records each call.
type hook struct {
	*httptest.Server
	mu      sync.Mutex
	calls   []call
	handler func(c call, w http.ResponseWriter)
}

type call struct {
	Run     string
	Time    string
	Attempt int
	Method  string
}

func newHook(t *testing.T, handler func(c call, w http.ResponseWriter)) *hook {
	h := &hook{handler: handler}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.Header.Get("Dotdo-Schedule-Attempt"))
		c := call{Run: r.Header.Get("Dotdo-Schedule-Run"), Time: r.Header.Get("Dotdo-Schedule-Time"), Attempt: n, Method: r.Method}
		h.mu.Lock()
		h.calls = append(h.calls, c)
		h.mu.Unlock()
		if h.handler != nil {
			h.handler(c, w)
		}
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) snapshot() []call {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]call(nil), h.calls...)
}

// waitFor polls cond (real time) until it holds; a deadline for a
// condition, not a measurement.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func putTask(t *testing.T, s *Service, pb *schedulev1.Task) *schedulev1.Task {
	t.Helper()
	res, err := s.PutTask(context.Background(), connect.NewRequest(&schedulev1.PutTaskRequest{Task: pb}))
	if err != nil {
		t.Fatalf("PutTask(%s) = %v", pb.Name, err)
	}
	return res.Msg.Task
}

func httpTask(ns, name, spec, url string) *schedulev1.Task {
	return &schedulev1.Task{Ns: ns, Name: name, Schedule: spec, Action: &schedulev1.Action{Type: "http", Url: url}}
}

// runs lists every run of a task, oldest first.
func runs(t *testing.T, s *Service, ns, name string) []*schedulev1.Run {
	t.Helper()
	var out []*schedulev1.Run
	cursor := ""
	for {
		res, err := s.ListRuns(context.Background(), connect.NewRequest(&schedulev1.ListRunsRequest{Ns: ns, Name: name, Limit: 1000, Cursor: cursor}))
		if err != nil {
			t.Fatalf("ListRuns = %v", err)
		}
		out = append(out, res.Msg.Runs...)
		if res.Msg.NextCursor == "" {
			break
		}
		cursor = res.Msg.NextCursor
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// settled reports whether every run is in a final state.
func finished(rs []*schedulev1.Run) bool {
	for _, r := range rs {
		switch r.Status {
		case statusRunning, statusRetrying, statusBuffered:
			return false
		}
	}
	return true
}

// countThings counts the raw rows of a type in a namespace, expired or not.
func listThings(t *testing.T, db DB, ns, typ string) []*dbv1.Thing {
	t.Helper()
	res, err := db.List(context.Background(), connect.NewRequest(&dbv1.ListRequest{Ns: ns, Type: typ, Limit: 1000}))
	if err != nil {
		t.Fatal(err)
	}
	return res.Msg.Items
}

// advance moves the fake clock in steps, letting the replicas react to
// each: a step waits until the clock has a pending timer again.
func advance(t *testing.T, clk *FakeClock, d, step time.Duration) {
	t.Helper()
	for moved := time.Duration(0); moved < d; moved += step {
		clk.Advance(step)
		time.Sleep(3 * time.Millisecond)
	}
}

// waitAdvancing moves the fake clock by step every few milliseconds until
// cond holds.
func waitAdvancing(t *testing.T, clk *FakeClock, step time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		clk.Advance(step)
		time.Sleep(5 * time.Millisecond)
	}
}

// The benchmark's versions of the helpers above take a testing.TB.

func openDBb(tb testing.TB, backend string) *thingsdb.Service {
	tb.Helper()
	db, err := thingsdb.New(testdb.Open(tb, backend), quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func newHookB(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	tb.Cleanup(srv.Close)
	return srv
}

func startReplicaB(tb testing.TB, db DB, name string) *replica {
	s, err := New(db, Config{Replica: name, AllowPrivate: true, SyncInterval: time.Second}, quietLog())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := s.Start(ctx); err != nil {
		tb.Fatal(err)
	}
	r := &replica{Service: s, cancel: cancel, done: make(chan struct{})}
	go func() {
		s.Run(ctx)
		s.Close()
		close(r.done)
	}()
	tb.Cleanup(r.stop)
	return r
}

func putTaskB(tb testing.TB, s *Service, pb *schedulev1.Task) {
	if _, err := s.PutTask(context.Background(), connect.NewRequest(&schedulev1.PutTaskRequest{Task: pb})); err != nil {
		tb.Fatal(err)
	}
}

func runsB(tb testing.TB, s *Service, ns, name string) []*schedulev1.Run {
	res, err := s.ListRuns(context.Background(), connect.NewRequest(&schedulev1.ListRunsRequest{Ns: ns, Name: name, Limit: 1000}))
	if err != nil {
		tb.Fatal(err)
	}
	return res.Msg.Runs
}

// cutDB is a db binding whose connection can be cut, as when a replica's
// machine dies: every call fails from then on, so the replica writes
// nothing more about its runs.
type cutDB struct {
	DB
	cut atomic.Bool
}

var errCut = apierr.New(apierr.Unavailable, "connection cut")

func (c *cutDB) Get(ctx context.Context, r *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.DB.Get(ctx, r)
}

func (c *cutDB) Put(ctx context.Context, r *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.DB.Put(ctx, r)
}

func (c *cutDB) Delete(ctx context.Context, r *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.DB.Delete(ctx, r)
}

func (c *cutDB) List(ctx context.Context, r *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.DB.List(ctx, r)
}

func (c *cutDB) Batch(ctx context.Context, r *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error) {
	if c.cut.Load() {
		return nil, errCut
	}
	return c.DB.Batch(ctx, r)
}
