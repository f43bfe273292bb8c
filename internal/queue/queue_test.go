package queue

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
)

// engines runs f on the embedded NATS and, when DOTDO_TEST_NATS_URL is
// set, on that external server (failing if it cannot be reached).
func engines(t *testing.T, f func(t *testing.T, s *Service)) {
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		f(t, openEmbedded(t))
	})
	if url := os.Getenv("DOTDO_TEST_NATS_URL"); url != "" {
		t.Run("external", func(t *testing.T) {
			t.Parallel()
			f(t, openExternal(t, url))
		})
	}
}

func openEmbedded(t testing.TB) *Service {
	t.Helper()
	s, err := Open(context.Background(), Config{Dir: t.TempDir(), AckWait: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// openExternal opens the shared NATS with a prefix of its own and deletes
// every stream and the bucket it made afterwards.
func openExternal(t testing.TB, url string) *Service {
	t.Helper()
	var b [4]byte
	rand.Read(b[:])
	prefix := "DOTDOTEST" + strings.ToUpper(hex.EncodeToString(b[:]))
	s, err := Open(context.Background(), Config{URL: url, Prefix: prefix, AckWait: 3 * time.Second}, nil)
	if err != nil {
		t.Fatalf("external NATS at %s: %v", url, err)
	}
	t.Cleanup(func() {
		if err := s.Drop(context.Background()); err != nil {
			t.Errorf("drop %s: %v", prefix, err)
		}
		s.Close()
	})
	return s
}

func ensure(t testing.TB, s *Service, st Settings) {
	t.Helper()
	if err := s.EnsureQueue(context.Background(), st); err != nil {
		t.Fatal(err)
	}
}

func send(t testing.TB, s *Service, q string, msgs ...Outgoing) []string {
	t.Helper()
	ids, err := s.Send(context.Background(), q, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func js(v string) Outgoing { return Outgoing{Body: []byte(v)} }

func TestSendConsume(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("jobs")
		st.MaxBatchTimeout = 200 * time.Millisecond
		ensure(t, s, st)
		ensure(t, s, st) // idempotent
		ids := send(t, s, "jobs", js(`{"n":1}`), Outgoing{Body: []byte("hi"), ContentType: "text"}, Outgoing{Body: []byte{0, 1, 2}, ContentType: "bytes"})
		if len(ids) != 3 || ids[0] == ids[1] {
			t.Fatalf("ids %v", ids)
		}
		got := make(chan *Message, 10)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := s.Consume(ctx, "jobs", func(ctx context.Context, b *Batch) error {
			if b.Queue != "jobs" {
				t.Errorf("batch queue %q", b.Queue)
			}
			for _, m := range b.Messages {
				got <- m
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{ids[0]: `json {"n":1}`, ids[1]: "text hi", ids[2]: "bytes \x00\x01\x02"}
		for range 3 {
			select {
			case m := <-got:
				if w := want[m.ID]; w != m.ContentType+" "+string(m.Body) {
					t.Errorf("message %s: %s %q, want %q", m.ID, m.ContentType, m.Body, w)
				}
				if m.Attempts != 1 {
					t.Errorf("attempts %d", m.Attempts)
				}
				if time.Since(m.Timestamp) > time.Minute || m.Timestamp.After(time.Now()) {
					t.Errorf("timestamp %v", m.Timestamp)
				}
				delete(want, m.ID)
			case <-time.After(10 * time.Second):
				t.Fatal("messages not delivered")
			}
		}
		waitFor(t, func() bool {
			st, err := s.Stats(context.Background(), "jobs")
			return err == nil && st.Backlog == 0 && st.Acked == 3
		})
	})
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 15 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBadInput(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		ensure(t, s, Defaults("q"))
		for _, c := range []struct {
			name string
			st   Settings
		}{
			{"bad name", Settings{Name: "Bad"}},
			{"long name", Settings{Name: strings.Repeat("a", 64)}},
			{"batch size", Settings{Name: "x", MaxBatchSize: 101}},
			{"batch timeout", Settings{Name: "x", MaxBatchTimeout: 61 * time.Second}},
			{"retries", Settings{Name: "x", MaxRetries: 101}},
			{"retry delay", Settings{Name: "x", RetryDelay: 43201 * time.Second}},
			{"delivery delay", Settings{Name: "x", DeliveryDelay: -time.Second}},
			{"retention", Settings{Name: "x", Retention: 15 * 24 * time.Hour}},
			{"dlq self", Settings{Name: "x", DeadLetterQueue: "x"}},
			{"dlq name", Settings{Name: "x", DeadLetterQueue: "X!"}},
		} {
			if err := s.EnsureQueue(ctx, c.st); !apierr.Is(err, apierr.Invalid) {
				t.Errorf("%s: %v, want invalid", c.name, err)
			}
		}
		if _, err := s.Queue(ctx, "x"); !apierr.Is(err, apierr.NotFound) {
			t.Errorf("queue x exists after bad settings: %v", err)
		}
		many := make([]Outgoing, 101)
		for i := range many {
			many[i] = js("1")
		}
		big := Outgoing{Body: []byte(`"` + strings.Repeat("a", 128<<10) + `"`)}
		three := []Outgoing{{Body: []byte(`"` + strings.Repeat("a", 100<<10) + `"`)}, {Body: []byte(`"` + strings.Repeat("a", 100<<10) + `"`)}, {Body: []byte(`"` + strings.Repeat("a", 100<<10) + `"`)}}
		for _, c := range []struct {
			name  string
			queue string
			msgs  []Outgoing
			code  apierr.Code
		}{
			{"unknown queue", "nope", []Outgoing{js("1")}, apierr.NotFound},
			{"empty", "q", nil, apierr.Invalid},
			{"101 messages", "q", many, apierr.Invalid},
			{"message > 128 KB", "q", []Outgoing{js("1"), big}, apierr.TooLarge},
			{"batch > 256 KB", "q", three, apierr.TooLarge},
			{"bad json", "q", []Outgoing{js("1"), js("{")}, apierr.Invalid},
			{"bad content type", "q", []Outgoing{{Body: []byte("x"), ContentType: "xml"}}, apierr.Invalid},
			{"delay too long", "q", []Outgoing{js("1"), {Body: []byte("1"), Delay: 43201 * time.Second}}, apierr.Invalid},
			{"negative delay", "q", []Outgoing{{Body: []byte("1"), Delay: -time.Second}}, apierr.Invalid},
		} {
			if _, err := s.Send(ctx, c.queue, c.msgs...); !apierr.Is(err, c.code) {
				t.Errorf("%s: %v, want %s", c.name, err, c.code)
			}
		}
		st, err := s.Stats(ctx, "q")
		if err != nil {
			t.Fatal(err)
		}
		if st.Backlog != 0 || st.Delayed != 0 {
			t.Errorf("rejected batches enqueued something: %+v", st)
		}
		// The largest allowed message and batch go through.
		send(t, s, "q", Outgoing{Body: make([]byte, 128<<10), ContentType: "bytes"}, Outgoing{Body: make([]byte, 128<<10), ContentType: "bytes"})
	})
}

// Must show: 10,000 messages sent and consumed, every message delivered,
// none lost, each acked exactly once.
func TestTenThousand(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		const n = 10000
		st := Defaults("bulk")
		st.MaxBatchSize = 100
		st.MaxBatchTimeout = 50 * time.Millisecond
		ensure(t, s, st)
		var mu sync.Mutex
		seen := map[string]int{}
		done := make(chan struct{})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		// Two consumers share the work.
		for range 2 {
			if err := s.Consume(ctx, "bulk", func(ctx context.Context, b *Batch) error {
				mu.Lock()
				defer mu.Unlock()
				for _, m := range b.Messages {
					seen[m.ID]++
					m.Ack()
				}
				if len(seen) == n {
					select {
					case <-done:
					default:
						close(done)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		sent := map[string]bool{}
		for i := 0; i < n; i += 100 {
			batch := make([]Outgoing, 100)
			for j := range batch {
				batch[j] = js(fmt.Sprint(i + j))
			}
			for _, id := range send(t, s, "bulk", batch...) {
				sent[id] = true
			}
		}
		if len(sent) != n {
			t.Fatalf("%d distinct ids for %d messages", len(sent), n)
		}
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			t.Fatalf("only %d of %d delivered", len(seen), n)
		}
		waitFor(t, func() bool {
			st, err := s.Stats(context.Background(), "bulk")
			return err == nil && st.Backlog == 0 && st.Acked == n
		})
		time.Sleep(4 * time.Second) // past AckWait: nothing comes back
		mu.Lock()
		defer mu.Unlock()
		for id := range sent {
			if seen[id] != 1 {
				t.Fatalf("message %s delivered %d times", id, seen[id])
			}
		}
		if len(seen) != n {
			t.Fatalf("%d delivered, %d sent", len(seen), n)
		}
		stats, _ := s.Stats(context.Background(), "bulk")
		if stats.Acked != n || stats.Retried != 0 || stats.Backlog != 0 {
			t.Fatalf("stats %+v", stats)
		}
	})
}

// Must show: a message that always fails lands in the dead-letter queue
// after exactly max_retries+1 attempts, with the last error.
func TestDeadLetter(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("flaky")
		st.MaxRetries = 2
		st.MaxBatchTimeout = 0
		st.DeadLetterQueue = "flaky-dlq"
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		var attempts []int
		if err := s.Consume(ctx, "flaky", func(ctx context.Context, b *Batch) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range b.Messages {
				attempts = append(attempts, m.Attempts)
			}
			return fmt.Errorf("boom %d", len(attempts))
		}); err != nil {
			t.Fatal(err)
		}
		ids := send(t, s, "flaky", js(`"x"`))
		dlq := make(chan *Message, 1)
		// The dead-letter queue is created on first use.
		waitFor(t, func() bool { _, err := s.Queue(ctx, "flaky-dlq"); return err == nil })
		if err := s.Consume(ctx, "flaky-dlq", func(ctx context.Context, b *Batch) error {
			for _, m := range b.Messages {
				dlq <- m
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		select {
		case m := <-dlq:
			if m.ID != ids[0] || string(m.Body) != `"x"` || m.LastError != "boom 3" || m.FailedQueue != "flaky" {
				t.Errorf("dead letter %+v", m)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("nothing in the dead-letter queue")
		}
		time.Sleep(500 * time.Millisecond)
		mu.Lock()
		if fmt.Sprint(attempts) != "[1 2 3]" {
			t.Errorf("attempts %v, want [1 2 3]", attempts)
		}
		mu.Unlock()
		stt, _ := s.Stats(ctx, "flaky")
		if stt.DeadLettered != 1 || stt.Retried != 2 || stt.Backlog != 0 {
			t.Errorf("stats %+v", stt)
		}
	})
}

// Without a dead-letter queue, the message is dropped and counted.
func TestDropAfterRetries(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("drop")
		st.MaxRetries = 0
		st.MaxBatchTimeout = 0
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		calls := make(chan int, 10)
		s.Consume(ctx, "drop", func(ctx context.Context, b *Batch) error {
			for _, m := range b.Messages {
				calls <- m.Attempts
				m.Retry(0)
			}
			return nil
		})
		send(t, s, "drop", js("1"))
		if a := <-calls; a != 1 {
			t.Fatalf("attempts %d", a)
		}
		waitFor(t, func() bool { st, _ := s.Stats(ctx, "drop"); return st.Dropped == 1 && st.Backlog == 0 })
		select {
		case a := <-calls:
			t.Fatalf("delivered again (attempt %d) after max_retries 0", a)
		case <-time.After(time.Second):
		}
	})
}

// Per-message decisions beat batch-level ones; a handler error retries
// only the messages not acked.
func TestDecisions(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("dec")
		st.MaxBatchSize = 4
		st.MaxBatchTimeout = 2 * time.Second
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		deliveries := map[string][]int{}
		first := true
		s.Consume(ctx, "dec", func(ctx context.Context, b *Batch) error {
			mu.Lock()
			defer mu.Unlock()
			for _, m := range b.Messages {
				deliveries[string(m.Body)] = append(deliveries[string(m.Body)], m.Attempts)
			}
			if !first {
				return nil
			}
			first = false
			if len(b.Messages) != 4 {
				t.Errorf("first batch of %d, want 4", len(b.Messages))
			}
			for _, m := range b.Messages {
				switch string(m.Body) {
				case "1":
					m.Ack() // per message: done, despite the error below
				case "2":
					m.Retry(0)
				}
			}
			b.AckAll() // applies to 3 and 4 only... but the error below
			return fmt.Errorf("fail")
		})
		send(t, s, "dec", js("1"), js("2"), js("3"), js("4"))
		waitFor(t, func() bool { st, _ := s.Stats(ctx, "dec"); return st.Backlog == 0 && st.Acked == 4 })
		mu.Lock()
		defer mu.Unlock()
		// 1 acked per message, 3 and 4 acked by AckAll (a batch-level call
		// beats the handler result), 2 retried per message.
		want := map[string]string{"1": "[1]", "2": "[1 2]", "3": "[1]", "4": "[1]"}
		for k, w := range want {
			if g := fmt.Sprint(deliveries[k]); g != w {
				t.Errorf("message %s attempts %s, want %s", k, g, w)
			}
		}
	})
}

// Must show: retry delays, delaySeconds and visibility timeouts are
// honoured within 1 second.
func TestDelays(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("later")
		st.MaxBatchTimeout = 0
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		type seen struct {
			body    string
			at      time.Time
			attempt int
		}
		got := make(chan seen, 10)
		s.Consume(ctx, "later", func(ctx context.Context, b *Batch) error {
			for _, m := range b.Messages {
				got <- seen{string(m.Body), time.Now(), m.Attempts}
				if string(m.Body) == `"retry"` && m.Attempts == 1 {
					m.Retry(2 * time.Second)
				}
			}
			return nil
		})
		start := time.Now()
		send(t, s, "later", Outgoing{Body: []byte(`"delayed"`), Delay: 2 * time.Second}, js(`"retry"`))
		var retryFirst time.Time
		results := map[string]time.Duration{}
		for len(results) < 2 {
			select {
			case g := <-got:
				switch {
				case g.body == `"retry"` && g.attempt == 1:
					retryFirst = g.at
				case g.body == `"retry"`:
					results["retry"] = g.at.Sub(retryFirst)
				default:
					results["delay"] = g.at.Sub(start)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("only %v", results)
			}
		}
		for k, d := range results {
			t.Logf("%s of 2 s honoured after %s", k, d)
			if d < 2*time.Second || d > 3*time.Second {
				t.Errorf("%s of 2 s took %s, want 2-3 s", k, d)
			}
		}
		// A queue-level delivery_delay applies to messages without their own.
		st.Name, st.DeliveryDelay = "later2", 1*time.Second
		ensure(t, s, st)
		at := make(chan time.Time, 1)
		s.Consume(ctx, "later2", func(ctx context.Context, b *Batch) error { at <- time.Now(); return nil })
		start = time.Now()
		send(t, s, "later2", js("1"))
		select {
		case a := <-at:
			if d := a.Sub(start); d < time.Second || d > 2*time.Second {
				t.Errorf("delivery_delay 1 s took %s", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not delivered")
		}
	})
}

func TestPullVisibility(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		ensure(t, s, Defaults("pull"))
		ids := send(t, s, "pull", js("1"), js("2"), js("3"))
		got, err := s.Pull(ctx, "pull", 2, time.Second)
		if err != nil || len(got) != 2 {
			t.Fatalf("pull: %v %v", got, err)
		}
		leased := time.Now()
		if got[0].ID != ids[0] || got[0].Attempts != 1 || got[0].LeaseID == "" {
			t.Fatalf("pulled %+v", got[0])
		}
		rest, err := s.Pull(ctx, "pull", 10, 5*time.Second)
		if err != nil || len(rest) != 1 || rest[0].ID != ids[2] {
			t.Fatalf("second pull %+v %v", rest, err)
		}
		// Ack one of the first two, leave the other; it comes back after 1 s.
		res, err := s.Ack(ctx, "pull", []string{got[0].LeaseID, rest[0].LeaseID}, nil)
		if err != nil || res.Acked != 2 {
			t.Fatalf("ack %+v %v", res, err)
		}
		var again []Pulled
		for time.Since(leased) < 5*time.Second {
			again, err = s.Pull(ctx, "pull", 10, 30*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if len(again) > 0 {
				break
			}
		}
		d := time.Since(leased)
		t.Logf("visibility timeout of 1 s: delivered again after %s", d)
		if len(again) != 1 || again[0].ID != ids[1] || again[0].Attempts != 2 {
			t.Fatalf("after the visibility timeout: %+v", again)
		}
		if d < time.Second || d > 2*time.Second {
			t.Errorf("visibility timeout of 1 s: back after %s", d)
		}
		// Retry with a delay, then ack.
		res, err = s.Ack(ctx, "pull", nil, []LeaseRetry{{LeaseID: again[0].LeaseID, Delay: time.Second}})
		if err != nil || res.Retried != 1 {
			t.Fatalf("retry %+v %v", res, err)
		}
		retried := time.Now()
		var last []Pulled
		for time.Since(retried) < 5*time.Second && len(last) == 0 {
			last, _ = s.Pull(ctx, "pull", 10, 30*time.Second)
		}
		if len(last) != 1 || last[0].Attempts != 3 || time.Since(retried) < time.Second {
			t.Fatalf("after retry: %+v after %s", last, time.Since(retried))
		}
		if _, err := s.Ack(ctx, "pull", []string{last[0].LeaseID}, nil); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool { st, _ := s.Stats(ctx, "pull"); return st.Backlog == 0 })
		// Leases of another queue, or garbage, are refused before anything is settled.
		ensure(t, s, Defaults("other"))
		send(t, s, "other", js("1"))
		o, _ := s.Pull(ctx, "other", 1, 0)
		for _, bad := range []string{o[0].LeaseID, "garbage", ""} {
			if _, err := s.Ack(ctx, "pull", []string{bad}, nil); !apierr.Is(err, apierr.Invalid) {
				t.Errorf("lease %q: %v", bad, err)
			}
		}
		for _, c := range []struct {
			n int
			v time.Duration
		}{{101, 0}, {-1, 0}, {1, 43201 * time.Second}} {
			if _, err := s.Pull(ctx, "pull", c.n, c.v); !apierr.Is(err, apierr.Invalid) {
				t.Errorf("pull %d %s: %v", c.n, c.v, err)
			}
		}
	})
}

func TestPullDeadLetter(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		st := Defaults("pdl")
		st.MaxRetries = 1
		st.DeadLetterQueue = "pdl-dead"
		ensure(t, s, st)
		ensure(t, s, Defaults("pdl-dead"))
		send(t, s, "pdl", js("1"))
		for attempt := 1; attempt <= 2; attempt++ {
			var got []Pulled
			waitFor(t, func() bool { got, _ = s.Pull(ctx, "pdl", 1, 0); return len(got) == 1 })
			if got[0].Attempts != attempt {
				t.Fatalf("attempt %d", got[0].Attempts)
			}
			if _, err := s.Ack(ctx, "pdl", nil, []LeaseRetry{{LeaseID: got[0].LeaseID}}); err != nil {
				t.Fatal(err)
			}
		}
		var dead []Pulled
		waitFor(t, func() bool { dead, _ = s.Pull(ctx, "pdl-dead", 1, 0); return len(dead) == 1 })
		waitFor(t, func() bool { st, _ := s.Stats(ctx, "pdl"); return st.Backlog == 0 })
	})
}

func TestOperations(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		st := Defaults("ops")
		st.MaxBatchTimeout = 0
		ensure(t, s, st)
		if err := s.Pause(ctx, "ops"); err != nil {
			t.Fatal(err)
		}
		got := make(chan string, 10)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		s.Consume(cctx, "ops", func(ctx context.Context, b *Batch) error {
			for _, m := range b.Messages {
				got <- string(m.Body)
			}
			return nil
		})
		send(t, s, "ops", js("1"), js("2"))
		send(t, s, "ops", Outgoing{Body: []byte("3"), Delay: time.Hour})
		select {
		case b := <-got:
			t.Fatalf("delivered %s while paused", b)
		case <-time.After(time.Second):
		}
		stats, err := s.Stats(ctx, "ops")
		if err != nil {
			t.Fatal(err)
		}
		if !stats.Paused || stats.Backlog != 2 || stats.Delayed != 1 || stats.OldestAge <= 0 || stats.OldestAge > time.Minute {
			t.Errorf("stats while paused: %+v", stats)
		}
		if err := s.Resume(ctx, "ops"); err != nil {
			t.Fatal(err)
		}
		for range 2 {
			select {
			case <-got:
			case <-time.After(10 * time.Second):
				t.Fatal("not delivered after resume")
			}
		}
		if err := s.Purge(ctx, "ops"); err != nil {
			t.Fatal(err)
		}
		waitFor(t, func() bool {
			st, _ := s.Stats(ctx, "ops")
			return st.Backlog == 0 && st.Delayed == 0 && !st.Paused
		})
		qs, err := s.Queues(ctx)
		if err != nil || len(qs) != 1 || qs[0].Name != "ops" {
			t.Fatalf("queues %v %v", qs, err)
		}
		if err := s.DeleteQueue(ctx, "ops"); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Send(ctx, "ops", js("1")); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("send to deleted queue: %v", err)
		}
		for _, f := range []func() error{
			func() error { return s.Pause(ctx, "ops") },
			func() error { return s.Purge(ctx, "ops") },
			func() error { return s.DeleteQueue(ctx, "ops") },
			func() error { _, err := s.Stats(ctx, "ops"); return err },
			func() error { return s.Consume(ctx, "ops", nil) },
		} {
			if err := f(); !apierr.Is(err, apierr.NotFound) {
				t.Errorf("on a deleted queue: %v", err)
			}
		}
	})
}

// Two services on one store (external NATS) see the same queues; an
// embedded store keeps messages across a restart.
func TestRestartKeepsMessages(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ensure(t, s, Defaults("keep"))
	ids := map[string]bool{}
	for range 10 {
		for _, id := range send(t, s, "keep", js("1"), js("2")) {
			ids[id] = true
		}
	}
	send(t, s, "keep", Outgoing{Body: []byte("3"), Delay: 2 * time.Second})
	s.Close()
	s, err = Open(context.Background(), Config{Dir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Queue(context.Background(), "keep"); err != nil {
		t.Fatal(err)
	}
	var got int
	deadline := time.Now().Add(10 * time.Second)
	for got < 21 && time.Now().Before(deadline) {
		ps, err := s.Pull(context.Background(), "keep", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range ps {
			got++
			delete(ids, p.ID)
		}
	}
	if got != 21 || len(ids) != 0 {
		t.Fatalf("after restart: %d messages, %d missing", got, len(ids))
	}
}

func TestSharedExternal(t *testing.T) {
	url := os.Getenv("DOTDO_TEST_NATS_URL")
	if url == "" {
		t.Skip("DOTDO_TEST_NATS_URL not set: the shared-NATS case needs an external server")
	}
	a := openExternal(t, url)
	b, err := Open(context.Background(), Config{URL: url, Prefix: a.cfg.Prefix}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ensure(t, a, Defaults("shared"))
	ensure(t, a, Defaults("shared2"))
	ids, err := b.Send(context.Background(), "shared", js("1"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := a.Pull(context.Background(), "shared", 1, 0)
	if err != nil || len(got) != 1 || got[0].ID != ids[0] {
		t.Fatalf("pull %+v %v", got, err)
	}
	// The ack reaches the message through the other process.
	if r, err := b.Ack(context.Background(), "shared", []string{got[0].LeaseID}, nil); err != nil || r.Acked != 1 {
		t.Fatalf("ack %+v %v", r, err)
	}
}

// A batch timeout longer than the consumer's AckWait (3 s in these tests)
// keeps the collected messages leased: one batch, each message once.
func TestBatchTimeoutBeyondAckWait(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("slow")
		st.MaxBatchTimeout = 5 * time.Second
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		batches := make(chan []int, 10)
		s.Consume(ctx, "slow", func(ctx context.Context, b *Batch) error {
			var a []int
			for _, m := range b.Messages {
				a = append(a, m.Attempts)
			}
			batches <- a
			return nil
		})
		send(t, s, "slow", js("1"), js("2"))
		select {
		case a := <-batches:
			if fmt.Sprint(a) != "[1 1]" {
				t.Fatalf("batch attempts %v, want [1 1]", a)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("no batch")
		}
		select {
		case a := <-batches:
			t.Fatalf("another batch %v", a)
		case <-time.After(4 * time.Second):
		}
	})
}

// A batch that NATS refuses part-way is taken back: nothing stays enqueued.
func TestFailedBatchTakenBack(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		ctx := context.Background()
		ensure(t, s, Defaults("half"))
		// Make the stream refuse large messages, as a full or misconfigured
		// stream would refuse some of a batch.
		str, err := s.js.Stream(ctx, s.stream("half"))
		if err != nil {
			t.Fatal(err)
		}
		cfg := str.CachedInfo().Config
		cfg.MaxMsgSize = 2000
		if _, err := s.js.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
		big := Outgoing{Body: []byte(`"` + strings.Repeat("a", 4000) + `"`)}
		if _, err := s.Send(ctx, "half", js("1"), big, js("3"), Outgoing{Body: []byte("4"), Delay: time.Hour}); !apierr.Is(err, apierr.Unavailable) {
			t.Fatalf("send: %v, want unavailable", err)
		}
		st, err := s.Stats(ctx, "half")
		if err != nil {
			t.Fatal(err)
		}
		if st.Backlog != 0 || st.Delayed != 0 {
			t.Fatalf("after a refused batch: %+v", st)
		}
	})
}

// A handler slower than AckWait (3 s here) neither loses its batch's
// leases nor lets the messages of the next batch be delivered again.
func TestSlowHandler(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("slowh")
		st.MaxBatchSize = 2
		st.MaxBatchTimeout = 0
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		seen := map[string][]int{}
		s.Consume(ctx, "slowh", func(ctx context.Context, b *Batch) error {
			mu.Lock()
			for _, m := range b.Messages {
				seen[string(m.Body)] = append(seen[string(m.Body)], m.Attempts)
			}
			mu.Unlock()
			time.Sleep(4 * time.Second)
			return nil
		})
		send(t, s, "slowh", js("1"), js("2"), js("3"), js("4"))
		waitFor(t, func() bool { st, _ := s.Stats(ctx, "slowh"); return st.Backlog == 0 })
		mu.Lock()
		defer mu.Unlock()
		for _, k := range []string{"1", "2", "3", "4"} {
			if fmt.Sprint(seen[k]) != "[1]" {
				t.Errorf("message %s attempts %v, want [1]", k, seen[k])
			}
		}
	})
}

// Pausing a queue whose consumer is already waiting for messages holds
// what arrives until Resume.
func TestPauseWhileWaiting(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		st := Defaults("pw")
		st.MaxBatchTimeout = 0
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got := make(chan int, 10)
		s.Consume(ctx, "pw", func(ctx context.Context, b *Batch) error {
			for _, m := range b.Messages {
				got <- m.Attempts
			}
			return nil
		})
		time.Sleep(300 * time.Millisecond) // the consumer is in its long poll
		if err := s.Pause(ctx, "pw"); err != nil {
			t.Fatal(err)
		}
		send(t, s, "pw", js("1"))
		select {
		case <-got:
			t.Fatal("delivered while paused")
		case <-time.After(4 * time.Second): // past the 3 s AckWait: the hold keeps the lease
		}
		if err := s.Resume(ctx, "pw"); err != nil {
			t.Fatal(err)
		}
		select {
		case a := <-got:
			if a != 1 {
				t.Errorf("attempts %d after the hold, want 1", a)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not delivered after resume")
		}
	})
}

// Two processes on one NATS (here the embedded server opened on a loopback
// port, and the external one when set): a lease pulled through one and
// retried through the other keeps the retry delay; the first process's
// visibility timer does not hand the message back early.
func TestLeaseAcrossProcesses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	a, err := Open(context.Background(), Config{Dir: t.TempDir(), Listen: addr, AckWait: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(context.Background(), Config{URL: "nats://" + addr, AckWait: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	ensure(t, a, Defaults("shared"))
	send(t, b, "shared", js("1"))
	got, err := a.Pull(ctx, "shared", 1, time.Second)
	if err != nil || len(got) != 1 {
		t.Fatalf("pull %v %v", got, err)
	}
	if r, err := b.Ack(ctx, "shared", nil, []LeaseRetry{{LeaseID: got[0].LeaseID, Delay: 3 * time.Second}}); err != nil || r.Retried != 1 {
		t.Fatalf("retry through the other process: %+v %v", r, err)
	}
	retried := time.Now()
	var again []Pulled
	for len(again) == 0 && time.Since(retried) < 10*time.Second {
		again, _ = b.Pull(ctx, "shared", 1, 30*time.Second)
	}
	d := time.Since(retried)
	if len(again) != 1 || again[0].Attempts != 2 || d < 3*time.Second {
		t.Fatalf("after a 3 s retry through the other process: %+v after %s", again, d)
	}
}
