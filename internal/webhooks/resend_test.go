package webhooks

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/email"
)

// Each Resend event's effect on the email service: the message's status
// and timeline, opens and clicks, and the suppression list.
func TestResendHandlers(t *testing.T) {
	e := newEnv(t, "sqlite")
	var n atomic.Int64
	// A fake Resend API at the edge: it checks the request shape and
	// returns a new id per email.
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != "POST" || r.URL.Path != "/emails" || r.Header.Get("Authorization") != "Bearer re_test_key" {
			t.Errorf("Resend got %s %s auth %q", r.Method, r.URL.Path, r.Header.Get("Authorization"))
			w.WriteHeader(400)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"re-msg-%d"}`, n.Add(1))
	}))
	defer api.Close()
	es, err := email.New(e.db, e.q, email.Config{Provider: "resend", From: "noreply@acme.test",
		Resend: email.ResendConfig{APIKey: "re_test_key", BaseURL: api.URL}}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	if err := es.Start(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.svc.email = es

	// sendEmail sends one email through Resend and returns dotdo's id and
	// Resend's.
	sendEmail := func(to string) (string, string) {
		t.Helper()
		res, err := es.SendEmail(e.ctx, &email.Input{To: email.Addresses{to}, Subject: "Hi", Text: "Hello"}, email.Options{})
		if err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(20 * time.Second)
		for {
			v, err := es.View(e.ctx, res.ID)
			if err == nil && v.ProviderID != "" {
				return res.ID, v.ProviderID
			}
			if time.Now().After(deadline) {
				t.Fatalf("email %s never reached Resend: %+v %v", res.ID, v, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	at := time.Now().UTC()
	event := func(typ, resendID string, dt time.Duration, extra map[string]any) {
		t.Helper()
		data := map[string]any{"email_id": resendID, "from": "noreply@acme.test", "to": []string{"x@acme.test"}, "subject": "Hi"}
		for k, v := range extra {
			data[k] = v
		}
		body := jsonBody(map[string]any{"type": typ, "created_at": at.Add(dt).Format(time.RFC3339Nano), "data": data})
		if ev := e.deliver(Resend, resendDelivery(t, "msg_"+uniq("r"), body), body); ev.Status != StatusProcessed {
			t.Fatalf("%s: %s (%s); want processed", typ, ev.Status, ev.Error)
		}
	}
	view := func(id string) *email.View {
		t.Helper()
		v, err := es.View(e.ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	suppressed := func(addr string) bool {
		t.Helper()
		sups, _, err := es.Suppressions(e.ctx, "default", 100, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sups {
			if strings.EqualFold(s.Email, addr) {
				return true
			}
		}
		return false
	}

	id, rid := sendEmail("ann@acme.test")
	steps := []struct {
		typ    string
		dt     time.Duration
		extra  map[string]any
		status string
	}{
		{"email.sent", 1 * time.Second, nil, "sent"},
		{"email.delivery_delayed", 2 * time.Second, nil, "delivery_delayed"},
		{"email.delivered", 3 * time.Second, nil, "delivered"},
		{"email.opened", 4 * time.Second, nil, "delivered"},
		{"email.clicked", 5 * time.Second, map[string]any{"click": map[string]any{"link": "https://acme.test/x"}}, "delivered"},
	}
	for _, st := range steps {
		t.Run(st.typ, func(t *testing.T) {
			event(st.typ, rid, st.dt, st.extra)
			v := view(id)
			if v.Status != st.status || v.LastEvent == "" {
				t.Fatalf("after %s: status %s last event %q; want %s", st.typ, v.Status, v.LastEvent, st.status)
			}
			if st.typ == "email.opened" && v.Opens != 1 {
				t.Fatalf("opens = %d; want 1", v.Opens)
			}
			if st.typ == "email.clicked" && v.Clicks != 1 {
				t.Fatalf("clicks = %d; want 1", v.Clicks)
			}
		})
	}
	t.Run("email.bounced", func(t *testing.T) {
		id, rid := sendEmail("gone@acme.test")
		event("email.bounced", rid, time.Second, map[string]any{"bounce": map[string]any{"type": "Permanent", "subType": "General", "message": "mailbox does not exist"}})
		if v := view(id); v.Status != "bounced" {
			t.Fatalf("status %s; want bounced", v.Status)
		}
		if !suppressed("gone@acme.test") {
			t.Fatal("a hard bounce did not suppress the address")
		}
		// A soft bounce does not; the email service counts it as a delay.
		id2, rid2 := sendEmail("full@acme.test")
		event("email.bounced", rid2, time.Second, map[string]any{"bounce": map[string]any{"type": "Transient", "subType": "MailboxFull"}})
		if v := view(id2); v.Status != "delivery_delayed" || suppressed("full@acme.test") {
			t.Fatalf("soft bounce: status %s, suppressed %v; want delivery_delayed, not suppressed", v.Status, suppressed("full@acme.test"))
		}
	})
	t.Run("email.complained", func(t *testing.T) {
		id, rid := sendEmail("angry@acme.test")
		event("email.complained", rid, time.Second, nil)
		if v := view(id); v.Status != "complained" || !suppressed("angry@acme.test") {
			t.Fatalf("complaint: status %s, suppressed %v", v.Status, suppressed("angry@acme.test"))
		}
	})
}
