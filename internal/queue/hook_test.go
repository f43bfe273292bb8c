package queue

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestOnDeadLetter: the hook is told of a message moved to the dead-letter
// queue after its last attempt (webhooks emits queue.dead_lettered from it).
func TestOnDeadLetter(t *testing.T) {
	engines(t, func(t *testing.T, s *Service) {
		got := make(chan DeadLetter, 4)
		s.OnDeadLetter(func(d DeadLetter) { got <- d })
		st := Defaults("hooked")
		st.MaxRetries = 1
		st.MaxBatchTimeout = 0
		st.DeadLetterQueue = "hooked-dlq"
		ensure(t, s, st)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := s.Consume(ctx, "hooked", func(ctx context.Context, b *Batch) error { return errors.New("boom") }); err != nil {
			t.Fatal(err)
		}
		ids := send(t, s, "hooked", js(`"x"`))
		select {
		case d := <-got:
			if d.Queue != "hooked" || d.MessageID != ids[0] || d.Attempts != 2 || d.Error != "boom" || d.DeadLetterQueue != "hooked-dlq" {
				t.Fatalf("dead letter %+v", d)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("the hook was not called")
		}
		s.OnDeadLetter(nil)
	})
}
