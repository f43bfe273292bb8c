package email

import (
	"context"
	"encoding/base64"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

func TestOutboxSend(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		ctx := context.Background()
		res, err := e.s.SendEmail(ctx, simple("Ann <ann@example.com>"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Status != StatusQueued || res.ID == "" {
			t.Fatalf("SendEmail = %+v; want an id, queued", res)
		}
		v := e.waitStatus(t, res.ID, StatusSent)
		if v.Provider != "outbox" || v.Attempts != 1 || v.Text != "Hi there" || v.HTML != "<p>Hi there</p>" {
			t.Errorf("view = %+v; want outbox, 1 attempt, the bodies", v)
		}
		if got := eventTypes_(v); !slices.Equal(got, []string{"queued", "sending", "sent"}) {
			t.Errorf("timeline = %v; want queued, sending, sent", got)
		}
		items, _, err := e.s.ListEmails(ctx, DefaultNamespace, Filter{To: "ANN@example.com", Status: StatusSent}, 10, "")
		if err != nil || len(items) != 1 || items[0].ID != res.ID {
			t.Errorf("List(to, status) = %v, %v; want the email", items, err)
		}
		items, _, _ = e.s.ListEmails(ctx, "other", Filter{}, 10, "")
		if len(items) != 0 {
			t.Errorf("List(other ns) = %d items; want 0", len(items))
		}
	})
}

func TestBadInputStoresNothing(t *testing.T) {
	e := newEnv(t, "sqlite", Config{})
	ctx := context.Background()
	big := base64.StdEncoding.EncodeToString(make([]byte, 6<<20))
	cases := []struct {
		name string
		in   *Input
		code apierr.Code
		msg  string
	}{
		{"no recipient", &Input{From: "a@acme.test", Subject: "s", Text: "t"}, apierr.Unprocessable, "to is required"},
		{"invalid address", &Input{From: "a@acme.test", To: Addresses{"not an address"}, Subject: "s", Text: "t"}, apierr.Unprocessable, "not a valid email address"},
		{"invalid from", &Input{From: "nobody", To: Addresses{"b@x.test"}, Subject: "s", Text: "t"}, apierr.Unprocessable, "from"},
		{"header injection", &Input{From: "a@acme.test", To: Addresses{"b@x.test\r\nBcc: c@x.test"}, Subject: "s", Text: "t"}, apierr.Unprocessable, "not a valid"},
		{"template and html", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Template: "welcome", HTML: "<p>x</p>", Data: map[string]any{}}, apierr.Unprocessable, "not both"},
		{"no body", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s"}, apierr.Unprocessable, "html or text"},
		{"no subject", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Text: "t"}, apierr.Unprocessable, "subject"},
		{"too many to", &Input{From: "a@acme.test", To: manyAddrs(51), Subject: "s", Text: "t"}, apierr.Unprocessable, "at most 50"},
		{"oversize attachments", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s", Text: "t",
			Attachments: []InAttachment{{Filename: "a.bin", Content: big}, {Filename: "b.bin", Content: big}}}, apierr.TooLarge, "10 MB"},
		{"bad base64", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s", Text: "t", Attachments: []InAttachment{{Filename: "a", Content: "!!"}}}, apierr.Unprocessable, "base64"},
		{"reserved header", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s", Text: "t", Headers: map[string]string{"Bcc": "x@x.test"}}, apierr.Unprocessable, "Bcc"},
		{"bad tag", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s", Text: "t", Tags: []Tag{{Name: "a b", Value: "c"}}}, apierr.Unprocessable, "tag"},
		{"bad schedule", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Subject: "s", Text: "t", ScheduledAt: "tomorrow"}, apierr.Unprocessable, "scheduledAt"},
		{"missing variable", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Template: "welcome", Data: map[string]any{"appName": "Acme", "loginUrl": "https://x"}}, apierr.Unprocessable, `"name"`},
		{"unknown template", &Input{From: "a@acme.test", To: Addresses{"b@x.test"}, Template: "nope"}, apierr.Unprocessable, "unknown template"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.s.SendEmail(ctx, tc.in, Options{})
			if !apierr.Is(err, tc.code) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("SendEmail = %v; want %s mentioning %q", err, tc.code, tc.msg)
			}
		})
	}
	items, _, err := e.s.ListEmails(ctx, DefaultNamespace, Filter{}, 100, "")
	if err != nil || len(items) != 0 {
		t.Fatalf("List after bad input = %d items, %v; want none", len(items), err)
	}
}

func manyAddrs(n int) Addresses {
	var out Addresses
	for i := range n {
		out = append(out, fmt.Sprintf("u%d@x.test", i))
	}
	return out
}

func TestIdempotency(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		ctx := context.Background()
		o := Options{IdempotencyKey: "order-42"}
		a, err := e.s.SendEmail(ctx, simple("b@x.test"), o)
		if err != nil {
			t.Fatal(err)
		}
		b, err := e.s.SendEmail(ctx, simple("b@x.test"), o)
		if err != nil || b.ID != a.ID {
			t.Fatalf("same key, same body = %+v, %v; want id %s", b, err, a.ID)
		}
		other := simple("b@x.test")
		other.Subject = "Changed"
		if _, err := e.s.SendEmail(ctx, other, o); !apierr.Is(err, apierr.Conflict) || !strings.Contains(err.Error(), "invalid_idempotent_request") {
			t.Fatalf("same key, other body = %v; want 409 invalid_idempotent_request", err)
		}
		// Concurrent requests with one key: one email.
		var wg sync.WaitGroup
		ids := make([]string, 16)
		errs := make([]error, 16)
		for i := range ids {
			wg.Go(func() {
				r, err := e.s.SendEmail(ctx, simple("c@x.test"), Options{IdempotencyKey: "concurrent"})
				ids[i], errs[i] = r.ID, err
			})
		}
		wg.Wait()
		for i := range ids {
			if errs[i] != nil || ids[i] != ids[0] {
				t.Fatalf("concurrent send %d = %q, %v; want %q", i, ids[i], errs[i], ids[0])
			}
		}
		e.waitStatus(t, ids[0], StatusSent)
		items, _, _ := e.s.ListEmails(ctx, DefaultNamespace, Filter{To: "c@x.test"}, 100, "")
		if len(items) != 1 {
			t.Fatalf("emails to c@x.test = %d; want 1", len(items))
		}
		if _, err := e.s.SendEmail(ctx, simple("b@x.test"), Options{IdempotencyKey: strings.Repeat("k", 257)}); !apierr.Is(err, apierr.Invalid) {
			t.Fatalf("257-char key = %v; want invalid", err)
		}
	})
}

func TestBatch(t *testing.T) {
	e := newEnv(t, "sqlite", Config{})
	ctx := context.Background()
	good, bad := simple("a@x.test"), &Input{From: "a@acme.test", To: Addresses{"nope"}, Subject: "s", Text: "t"}
	if _, err := e.s.SendEmails(ctx, []*Input{good, bad}, Options{Strict: true}); !apierr.Is(err, apierr.Unprocessable) || apierr.From(err).Index != 1 {
		t.Fatalf("strict batch with a bad email = %v; want 422 at index 1", err)
	}
	if items, _, _ := e.s.ListEmails(ctx, DefaultNamespace, Filter{}, 100, ""); len(items) != 0 {
		t.Fatalf("strict failure stored %d emails; want 0", len(items))
	}
	rs, err := e.s.SendEmails(ctx, []*Input{good, bad, simple("b@x.test")}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].ID == "" || rs[1].Err == nil || rs[1].Err.Index != 1 || rs[2].ID == "" {
		t.Fatalf("permissive batch = %+v; want ok, error at 1, ok", rs)
	}
	e.waitStatus(t, rs[2].ID, StatusSent)
	many := make([]*Input, 101)
	for i := range many {
		many[i] = simple("a@x.test")
	}
	if _, err := e.s.SendEmails(ctx, many, Options{}); !apierr.Is(err, apierr.Unprocessable) {
		t.Fatalf("101 emails = %v; want 422", err)
	}
}

func TestSuppression(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		ctx := context.Background()
		res, err := e.s.SendEmail(ctx, simple("bouncy@x.test"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		e.waitStatus(t, res.ID, StatusSent)
		// A hard bounce suppresses the address.
		if _, err := e.s.Record(ctx, Event{EmailID: res.ID, Type: "email.bounced", EventID: "evt_1", Reason: "550 mailbox unavailable"}); err != nil {
			t.Fatal(err)
		}
		v, _ := e.s.View(ctx, res.ID)
		if v.Status != StatusBounced {
			t.Fatalf("status after bounce = %s; want bounced", v.Status)
		}
		sups, _, _ := e.s.Suppressions(ctx, DefaultNamespace, 10, "")
		if len(sups) != 1 || sups[0].Email != "bouncy@x.test" || !strings.Contains(sups[0].Reason, "bounced") {
			t.Fatalf("suppressions = %+v; want bouncy@x.test for a bounce", sups)
		}
		// A send to it is refused with status suppressed, and recorded.
		r2, err := e.s.SendEmail(ctx, simple("Bouncy <BOUNCY@x.test>"), Options{})
		if !apierr.Is(err, apierr.Unprocessable) || r2.Status != StatusSuppressed || !strings.Contains(err.Error(), "suppress") {
			t.Fatalf("send to a suppressed address = %+v, %v; want 422 and status suppressed", r2, err)
		}
		v, _ = e.s.View(ctx, r2.ID)
		if v.Status != StatusSuppressed {
			t.Fatalf("stored status = %s; want suppressed", v.Status)
		}
		// Other namespaces are not affected; removing it allows sends again.
		in := simple("bouncy@x.test")
		in.Ns = "other"
		if _, err := e.s.SendEmail(ctx, in, Options{}); err != nil {
			t.Fatalf("send in another namespace = %v", err)
		}
		if err := e.s.RemoveSuppression(ctx, DefaultNamespace, "bouncy@x.test"); err != nil {
			t.Fatal(err)
		}
		if err := e.s.RemoveSuppression(ctx, DefaultNamespace, "bouncy@x.test"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("second Unsuppress = %v; want not found", err)
		}
		r3, err := e.s.SendEmail(ctx, simple("bouncy@x.test"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		e.waitStatus(t, r3.ID, StatusSent)
		// A complaint suppresses too; a soft bounce does not.
		if _, err := e.s.Record(ctx, Event{EmailID: r3.ID, Type: "bounced", BounceType: "soft"}); err != nil {
			t.Fatal(err)
		}
		if sups, _, _ := e.s.Suppressions(ctx, DefaultNamespace, 10, ""); len(sups) != 0 {
			t.Fatalf("soft bounce suppressed %v", sups)
		}
		if _, err := e.s.Record(ctx, Event{EmailID: r3.ID, Type: "complained"}); err != nil {
			t.Fatal(err)
		}
		if sups, _, _ := e.s.Suppressions(ctx, DefaultNamespace, 10, ""); len(sups) != 1 {
			t.Fatalf("after complaint suppressions = %v; want 1", sups)
		}
		if _, err := e.s.AddSuppression(ctx, DefaultNamespace, "manual@x.test", "asked to stop"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.s.SendEmail(ctx, &Input{From: "a@acme.test", To: Addresses{"ok@x.test"}, Bcc: Addresses{"manual@x.test"}, Subject: "s", Text: "t"}, Options{}); !apierr.Is(err, apierr.Unprocessable) {
			t.Fatalf("bcc to a suppressed address = %v; want refused", err)
		}
	})
}

func TestOutOfOrderEvents(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		ctx := context.Background()
		res, err := e.s.SendEmail(ctx, simple("d@x.test"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		e.waitStatus(t, res.ID, StatusSent)
		v0, _ := e.s.View(ctx, res.ID)
		sentAt, _ := parseTime(v0.Events[len(v0.Events)-1].At)
		steps := []struct {
			ev        Event
			status    string
			duplicate bool
		}{
			{Event{Type: "email.delivered", EventID: "e2", OccurredAt: sentAt.Add(2e9)}, StatusDelivered, false},
			{Event{Type: "email.sent", EventID: "e1", OccurredAt: sentAt.Add(1e9)}, StatusDelivered, false}, // late: recorded, status kept
			{Event{Type: "email.delivery_delayed", EventID: "e0", OccurredAt: sentAt.Add(5e8)}, StatusDelivered, false},
			{Event{Type: "email.delivered", EventID: "e2", OccurredAt: sentAt.Add(2e9)}, StatusDelivered, true}, // replayed
			{Event{Type: "email.opened", EventID: "e3", OccurredAt: sentAt.Add(3e9)}, StatusDelivered, false},
			{Event{Type: "email.clicked", EventID: "e4", Link: "https://acme.test/x", OccurredAt: sentAt.Add(4e9)}, StatusDelivered, false},
			{Event{Type: "email.complained", EventID: "e5", OccurredAt: sentAt.Add(5e9)}, StatusComplained, false},
			{Event{Type: "email.delivered", EventID: "e6", OccurredAt: sentAt.Add(6e9)}, StatusComplained, false},
		}
		for i, st := range steps {
			st.ev.EmailID = res.ID
			r, err := e.s.Record(ctx, st.ev)
			if err != nil || r.Status != st.status || r.Duplicate != st.duplicate {
				t.Fatalf("step %d Record(%s) = %+v, %v; want status %s duplicate %v", i, st.ev.Type, r, err, st.status, st.duplicate)
			}
		}
		v, _ := e.s.View(ctx, res.ID)
		want := []string{"queued", "sending", "sent", "delivery_delayed", "sent", "delivered", "opened", "clicked", "complained", "delivered"}
		if got := eventTypes_(v); !slices.Equal(got, want) {
			t.Fatalf("timeline = %v; want %v (time order)", got, want)
		}
		if v.Opens != 1 || v.Clicks != 1 {
			t.Fatalf("opens, clicks = %d, %d; want 1, 1", v.Opens, v.Clicks)
		}
		if _, err := e.s.Record(ctx, Event{EmailID: res.ID, Type: "exploded"}); !apierr.Is(err, apierr.Invalid) {
			t.Fatalf("unknown event type = %v; want invalid", err)
		}
		if _, err := e.s.Record(ctx, Event{EmailID: "nope", Type: "sent"}); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("unknown email = %v; want not found", err)
		}
	})
}

func TestTestKeyGoesToOutbox(t *testing.T) {
	// Even with a real provider configured, a test send reaches no provider.
	e := newEnv(t, "sqlite", Config{Provider: "resend", Resend: ResendConfig{APIKey: "re_x", BaseURL: "http://127.0.0.1:1"}})
	res, err := e.s.SendEmail(context.Background(), simple("t@x.test"), Options{Test: true})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitStatus(t, res.ID, StatusSent)
	if v.Provider != "outbox" || !v.Test {
		t.Fatalf("test send = provider %s test %v; want outbox, true", v.Provider, v.Test)
	}
}

func TestScheduled(t *testing.T) {
	e := newEnv(t, "sqlite", Config{})
	in := simple("s@x.test")
	in.ScheduledAt = e.s.now().Add(2e9).UTC().Format("2006-01-02T15:04:05Z")
	res, err := e.s.SendEmail(context.Background(), in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusScheduled {
		t.Fatalf("status = %s; want scheduled", res.Status)
	}
	e.waitStatus(t, res.ID, StatusSent)
}

func TestLargeAttachmentStoredInParts(t *testing.T) {
	e := newEnv(t, "sqlite", Config{})
	content := make([]byte, 9<<20)
	for i := range content {
		content[i] = byte(i * 7)
	}
	in := simple("big@x.test")
	in.Attachments = []InAttachment{{Filename: "big.bin", Content: base64.StdEncoding.EncodeToString(content), ContentType: "application/octet-stream"}}
	res, err := e.s.SendEmail(context.Background(), in, Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitStatus(t, res.ID, StatusSent)
	if len(v.Attachments) != 1 || v.Attachments[0].Size != len(content) {
		t.Fatalf("attachments = %+v; want one of %d bytes", v.Attachments, len(content))
	}
	r, _, _ := e.s.getRecord(context.Background(), res.ID)
	pl, err := e.s.loadPayload(context.Background(), res.ID, r)
	if err != nil || r.Parts < 2 || string(pl.Attachments[0].Content) != string(content) {
		t.Fatalf("payload in %d parts, err %v; want the content back intact", r.Parts, err)
	}
}

func TestSweepRequeuesLostMessages(t *testing.T) {
	backends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend, Config{})
		ctx := context.Background()
		// A message stored ten minutes ago whose queue message was lost
		// (the process stopped between the two).
		p, err := e.s.prepare(ctx, simple("lost@x.test"), false, e.s.now().Add(-10*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		ops, _ := p.ops()
		if _, err := e.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops})); err != nil {
			t.Fatal(err)
		}
		// A fresh one is left alone.
		fresh, err := e.s.SendEmail(ctx, simple("fresh@x.test"), Options{})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		counts := make([]int, 4)
		for i := range counts {
			wg.Go(func() { counts[i], _ = e.s.sweep(ctx) })
		}
		wg.Wait()
		if total := counts[0] + counts[1] + counts[2] + counts[3]; total != 1 {
			t.Fatalf("4 concurrent sweeps queued %v; want the lost message once", counts)
		}
		v := e.waitStatus(t, p.id, StatusSent)
		if !slices.Contains(eventTypes_(v), "requeued") {
			t.Errorf("timeline %v; want a requeued entry", eventTypes_(v))
		}
		e.waitStatus(t, fresh.ID, StatusSent)
		if n, _ := e.s.sweep(ctx); n != 0 {
			t.Fatalf("sweep after everything was sent = %d; want 0", n)
		}
	})
}
