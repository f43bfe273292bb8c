package email

import (
	"context"
	"testing"
	"time"
)

// TestOnStatus: the hook is told of each stored status change of an email
// (webhooks emits email.<status> from it): sent in the outbox, then
// delivered and bounced from provider events; a replayed event is not a
// change.
func TestOnStatus(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		got := make(chan StatusChange, 16)
		e.s.OnStatus(func(c StatusChange) { got <- c })
		ctx := context.Background()
		res, err := e.s.SendEmail(ctx, simple("d@x.test"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		next := func(want string) {
			t.Helper()
			select {
			case c := <-got:
				if c.ID != res.ID || c.Status != want || len(c.To) != 1 || c.To[0] != "d@x.test" || c.Ns == "" {
					t.Fatalf("status change %+v; want %s of %s", c, want, res.ID)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s status change", want)
			}
		}
		next(StatusSent)
		for _, ev := range []Event{{Type: "email.delivered", EventID: "e1"}, {Type: "email.delivered", EventID: "e1"}, {Type: "email.bounced", EventID: "e2", BounceType: "hard"}} {
			ev.EmailID = res.ID
			if _, err := e.s.Record(ctx, ev); err != nil {
				t.Fatal(err)
			}
		}
		next(StatusDelivered)
		next(StatusBounced)
		select {
		case c := <-got:
			t.Fatalf("extra status change %+v", c)
		default:
		}
	})
}
