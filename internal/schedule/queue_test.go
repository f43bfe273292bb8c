package schedule

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/thingsdb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A queue action sends its message through the real queue engine: on the
// embedded NATS, and on DOTDO_TEST_NATS_URL when it is set.
func TestQueueAction(t *testing.T) {
	engines := map[string]queue.Config{"embedded": {Dir: t.TempDir()}}
	if u := os.Getenv("DOTDO_TEST_NATS_URL"); u != "" {
		engines["external"] = queue.Config{URL: u, Prefix: "SCHEDTEST" + strings.ToUpper(thingsdb.NewID()[24:])}
	}
	for name, qc := range engines {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			q, err := queue.Open(ctx, qc, quietLog())
			if err != nil {
				t.Fatalf("queue.Open = %v", err)
			}
			t.Cleanup(func() {
				q.Close()
				if qc.URL != "" {
					dropStreams(t, qc.URL, qc.Prefix)
				}
			})
			st := queue.Defaults("reports")
			st.MaxBatchTimeout = 0
			if err := q.EnsureQueue(ctx, st); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { q.DeleteQueue(context.Background(), "reports") })
			got := make(chan *queue.Message, 10)
			cctx, cancel := context.WithCancel(ctx)
			t.Cleanup(cancel)
			if err := q.Consume(cctx, "reports", func(ctx context.Context, b *queue.Batch) error {
				for _, m := range b.Messages {
					got <- m
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			db := openDB(t, "sqlite")
			clk := NewFakeClock(t0())
			r := startReplica(t, db, clk, "r0", func(c *Config) { c.Queue = Queue{Q: q} })
			task := putTask(t, r.Service, &schedulev1.Task{Ns: "acme", Name: "report", Schedule: "@hourly",
				Action: &schedulev1.Action{Type: "queue", Queue: "reports", Body: `{"kind":"hourly"}`}})
			if task.Action.ContentType != "json" {
				t.Errorf("contentType = %q; want json by default", task.Action.ContentType)
			}
			clk.Advance(time.Hour)
			select {
			case m := <-got:
				if string(m.Body) != `{"kind":"hourly"}` || m.ContentType != "json" {
					t.Errorf("message = %s (%s); want the task's body as json", m.Body, m.ContentType)
				}
				var rs = runs(t, r.Service, "acme", "report")
				waitFor(t, "the run to end", func() bool { rs = runs(t, r.Service, "acme", "report"); return len(rs) == 1 && finished(rs) })
				if rs[0].Status != statusSucceeded || rs[0].Output != "sent message "+m.ID+" to queue reports" {
					t.Errorf("run = %s %q; want succeeded naming message %s", rs[0].Status, rs[0].Output, m.ID)
				}
			case <-time.After(15 * time.Second):
				t.Fatal("no message arrived")
			}
			// An unknown queue fails the attempt with the queue's error.
			putTask(t, r.Service, &schedulev1.Task{Ns: "acme", Name: "lost", Schedule: "@hourly", Retries: i32(0),
				Action: &schedulev1.Action{Type: "queue", Queue: "nowhere"}})
			clk.Advance(time.Hour)
			waitFor(t, "the run to fail", func() bool {
				rs := runs(t, r.Service, "acme", "lost")
				return len(rs) == 1 && rs[0].Status == statusFailed
			})
		})
	}
}

// dropStreams deletes the streams and the settings bucket a test's queue
// prefix made on a shared NATS.
func dropStreams(t *testing.T, url, prefix string) {
	nc, err := nats.Connect(url)
	if err != nil {
		t.Errorf("clean up NATS: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return
	}
	ctx := context.Background()
	for name := range js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, prefix+"_") || name == "KV_"+prefix+"_queues" {
			js.DeleteStream(ctx, name)
		}
	}
}
