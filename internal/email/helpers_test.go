package email

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// env is a running email service over a real db (SQLite, or PostgreSQL
// with DOTDO_TEST_POSTGRES_URL) and a real queue (embedded NATS, or the
// server at DOTDO_TEST_NATS_URL).
type env struct {
	s  *Service
	db *thingsdb.Service
	q  *queue.Service
}

func openQueue(t testing.TB) *queue.Service {
	t.Helper()
	ctx := context.Background()
	if url := os.Getenv("DOTDO_TEST_NATS_URL"); url != "" {
		var b [4]byte
		rand.Read(b[:])
		q, err := queue.Open(ctx, queue.Config{URL: url, Prefix: "DOTDOEMAIL" + strings.ToUpper(hex.EncodeToString(b[:])), AckWait: 5 * time.Second}, nil)
		if err != nil {
			t.Fatalf("external NATS at %s: %v", url, err)
		}
		t.Cleanup(func() {
			// Everything under the test's prefix: queues, the delay
			// stream and the settings bucket.
			if err := q.Drop(context.Background()); err != nil {
				t.Errorf("drop the test's streams: %v", err)
			}
			q.Close()
		})
		return q
	}
	q, err := queue.Open(ctx, queue.Config{Dir: t.TempDir(), AckWait: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// newEnv starts the service on backend with cfg (fast retries unless set).
func newEnv(t testing.TB, backend string, cfg Config) *env {
	t.Helper()
	db, err := thingsdb.New(testdb.Open(t, backend), quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	q := openQueue(t)
	if cfg.Backoff == 0 {
		cfg.Backoff = 20 * time.Millisecond
	}
	s, err := New(db, q, cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &env{s: s, db: db, q: q}
}

// backends runs f on every test backend.
func backends(t *testing.T, f func(t *testing.T, backend string)) {
	for _, b := range testdb.Backends() {
		t.Run(b, func(t *testing.T) { f(t, b) })
	}
}

// waitStatus waits until email id reaches one of the statuses and returns
// its view; a deadline for a condition, not a measurement.
func (e *env) waitStatus(t testing.TB, id string, want ...string) *View {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var v *View
	for time.Now().Before(deadline) {
		var err error
		v, err = e.s.View(context.Background(), id)
		if err != nil {
			t.Fatalf("View(%s): %v", id, err)
		}
		for _, w := range want {
			if v.Status == w {
				return v
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("email %s stayed %s (error %q, events %+v); want %v", id, v.Status, v.Error, v.Events, want)
	return nil
}

func simple(to ...string) *Input {
	return &Input{From: "Acme <noreply@acme.test>", To: to, Subject: "Hello", Text: "Hi there", HTML: "<p>Hi there</p>"}
}

func eventTypes_(v *View) []string {
	var out []string
	for _, e := range v.Events {
		out = append(out, e.Type)
	}
	return out
}
