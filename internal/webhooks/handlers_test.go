package webhooks

import (
	"slices"
	"testing"
	"time"
)

// Each Stripe handler's effect on the db service's things and
// relationships in the configured namespace.
func TestStripeHandlers(t *testing.T) {
	forBackends(t, func(t *testing.T, backend string) {
		e := newEnv(t, backend)
		now := time.Now().Unix()
		send := func(id, typ string, created int64, obj map[string]any) {
			t.Helper()
			body := stripeEventBody(id, typ, created, obj)
			if ev := e.deliver(Stripe, stripeDelivery(body), body); ev.Status != StatusProcessed {
				t.Fatalf("%s: %s (%s); want processed", typ, ev.Status, ev.Error)
			}
		}
		t.Run("checkout.session.completed", func(t *testing.T) {
			send("evt_s1", "checkout.session.completed", now, map[string]any{"id": "cs_1", "object": "checkout.session", "customer": "cus_1",
				"customer_details": map[string]any{"email": "ada@example.com", "name": "Ada"}, "subscription": "sub_1",
				"payment_intent": "pi_c1", "mode": "subscription", "amount_total": 2000, "currency": "usd", "payment_status": "paid"})
			if _, c := e.thing("cus_1"); c["email"] != "ada@example.com" || c["name"] != "Ada" {
				t.Fatalf("Customer cus_1 = %v", c)
			}
			if th, s := e.thing("sub_1"); th.Type != "Subscription" || s["customer"] != "cus_1" {
				t.Fatalf("Subscription sub_1 = %s %v", th.Type, s)
			}
			if got := e.related("cus_1", "hasSubscription"); !slices.Contains(got, "sub_1") {
				t.Fatalf("cus_1 hasSubscription = %v", got)
			}
			if got := e.related("cus_1", "hasPayment"); !slices.Contains(got, "pi_c1") {
				t.Fatalf("cus_1 hasPayment = %v", got)
			}
		})
		sub := func(status string) map[string]any {
			return map[string]any{"id": "sub_2", "object": "subscription", "customer": "cus_2", "status": status, "cancel_at_period_end": false,
				"items": map[string]any{"data": []any{map[string]any{"price": map[string]any{"id": "price_pro"}, "current_period_end": now + 86400}}}}
		}
		t.Run("customer.subscription.created", func(t *testing.T) {
			send("evt_s2", "customer.subscription.created", now, sub("trialing"))
			if th, s := e.thing("sub_2"); th.Type != "Subscription" || s["status"] != "trialing" || s["prices"].([]any)[0] != "price_pro" {
				t.Fatalf("Subscription sub_2 = %v", s)
			}
			if th, _ := e.thing("cus_2"); th.Type != "Customer" {
				t.Fatalf("cus_2 type %s", th.Type)
			}
			if got := e.related("cus_2", "hasSubscription"); !slices.Contains(got, "sub_2") {
				t.Fatalf("cus_2 hasSubscription = %v", got)
			}
		})
		t.Run("customer.subscription.updated", func(t *testing.T) {
			send("evt_s3", "customer.subscription.updated", now+10, sub("active"))
			if _, s := e.thing("sub_2"); s["status"] != "active" {
				t.Fatalf("after updated: %v", s)
			}
			// An older update arriving late changes nothing.
			send("evt_s3_late", "customer.subscription.updated", now+5, sub("past_due"))
			if _, s := e.thing("sub_2"); s["status"] != "active" {
				t.Fatalf("after a late older update: %v; want still active", s)
			}
		})
		t.Run("customer.subscription.deleted", func(t *testing.T) {
			send("evt_s4", "customer.subscription.deleted", now+20, sub("canceled"))
			if _, s := e.thing("sub_2"); s["status"] != "canceled" || s["lastEvent"] != "customer.subscription.deleted" {
				t.Fatalf("after deleted: %v", s)
			}
		})
		t.Run("invoice.paid", func(t *testing.T) {
			send("evt_s5", "invoice.paid", now+30, map[string]any{"id": "in_1", "object": "invoice", "customer": "cus_2", "customer_email": "bob@example.com",
				"subscription": "sub_2", "status": "paid", "amount_due": 900, "amount_paid": 900, "currency": "usd"})
			if th, in := e.thing("in_1"); th.Type != "Invoice" || in["status"] != "paid" || in["amountPaid"] != 900.0 || in["paymentFailed"] != false {
				t.Fatalf("Invoice in_1 = %v", in)
			}
			if got := e.related("cus_2", "hasInvoice"); !slices.Contains(got, "in_1") {
				t.Fatalf("cus_2 hasInvoice = %v", got)
			}
			if got := e.related("in_1", "forSubscription"); !slices.Contains(got, "sub_2") {
				t.Fatalf("in_1 forSubscription = %v", got)
			}
			if _, c := e.thing("cus_2"); c["email"] != "bob@example.com" {
				t.Fatalf("Customer cus_2 = %v; want the invoice's email filled in", c)
			}
		})
		t.Run("invoice.payment_failed", func(t *testing.T) {
			send("evt_s6", "invoice.payment_failed", now+40, map[string]any{"id": "in_2", "object": "invoice", "customer": "cus_2",
				"parent": map[string]any{"subscription_details": map[string]any{"subscription": "sub_2"}}, "status": "open", "amount_due": 900,
				"amount_paid": 0, "attempt_count": 1, "currency": "usd"})
			if _, in := e.thing("in_2"); in["paymentFailed"] != true || in["status"] != "open" || in["subscription"] != "sub_2" {
				t.Fatalf("Invoice in_2 = %v", in)
			}
			if _, s := e.thing("sub_2"); s["latestInvoiceFailed"] != true {
				t.Fatalf("Subscription after a failed invoice = %v", s)
			}
		})
		t.Run("payment_intent.succeeded", func(t *testing.T) {
			send("evt_s7", "payment_intent.succeeded", now+50, map[string]any{"id": "pi_1", "object": "payment_intent", "customer": "cus_2",
				"amount": 900, "amount_received": 900, "currency": "usd", "status": "succeeded", "invoice": "in_1"})
			if th, p := e.thing("pi_1"); th.Type != "Payment" || p["status"] != "succeeded" || p["amount"] != 900.0 {
				t.Fatalf("Payment pi_1 = %v", p)
			}
			if got := e.related("cus_2", "hasPayment"); !slices.Contains(got, "pi_1") {
				t.Fatalf("cus_2 hasPayment = %v", got)
			}
			if got := e.related("pi_1", "pays"); !slices.Contains(got, "in_1") {
				t.Fatalf("pi_1 pays = %v", got)
			}
		})
		t.Run("malformed object fails without retry", func(t *testing.T) {
			body := stripeEventBody("evt_bad", "invoice.paid", now, map[string]any{"id": 5})
			ev := e.deliver(Stripe, stripeDelivery(body), body)
			if ev.Status != StatusFailed || ev.Attempts != 1 || ev.Error == "" {
				t.Fatalf("malformed invoice: %+v; want failed after 1 attempt with an error", ev)
			}
		})
	})
}

func ghRepoJSON() map[string]any {
	return map[string]any{"id": 42, "name": "dotdo", "full_name": "acme/dotdo", "html_url": "https://github.com/acme/dotdo",
		"private": false, "default_branch": "main", "owner": map[string]any{"login": "acme"}}
}

// Each GitHub handler's effect on the things in the configured namespace.
func TestGitHubHandlers(t *testing.T) {
	e := newEnv(t, "sqlite")
	send := func(event, delivery string, payload map[string]any) {
		t.Helper()
		body := jsonBody(payload)
		if ev := e.deliver(GitHub, githubDelivery(event, delivery, body), body); ev.Status != StatusProcessed {
			t.Fatalf("%s: %s (%s); want processed", event, ev.Status, ev.Error)
		}
	}
	const repo = "github:repo:42"
	t.Run("push", func(t *testing.T) {
		send("push", "gh-1", map[string]any{"ref": "refs/heads/main", "before": "000", "after": "bbb", "repository": ghRepoJSON(),
			"pusher": map[string]any{"name": "ada"}, "commits": []any{
				map[string]any{"id": "aaa111", "message": "first", "timestamp": "2026-11-28T10:00:00Z", "url": "u1", "author": map[string]any{"name": "Ada", "email": "ada@example.com"}},
				map[string]any{"id": "bbb222", "message": "second", "timestamp": "2026-11-28T10:01:00Z", "url": "u2", "author": map[string]any{"name": "Ada"}}}})
		if th, r := e.thing(repo); th.Type != "Repository" || r["fullName"] != "acme/dotdo" || r["lastPushSha"] != "bbb" {
			t.Fatalf("Repository = %v", r)
		}
		if th, c := e.thing("github:commit:aaa111"); th.Type != "Commit" || c["message"] != "first" || c["authorEmail"] != "ada@example.com" {
			t.Fatalf("Commit = %v", c)
		}
		got := e.related(repo, "hasCommit")
		if !slices.Contains(got, "github:commit:aaa111") || !slices.Contains(got, "github:commit:bbb222") {
			t.Fatalf("hasCommit = %v", got)
		}
	})
	pr := func(action, state, updated string, merged bool) map[string]any {
		return map[string]any{"action": action, "number": 7, "repository": ghRepoJSON(), "pull_request": map[string]any{
			"id": 700, "number": 7, "title": "Add webhooks", "state": state, "merged": merged, "html_url": "https://github.com/acme/dotdo/pull/7",
			"user": map[string]any{"login": "ada"}, "updated_at": updated, "head": map[string]any{"ref": "wh", "sha": "ccc"}, "base": map[string]any{"ref": "main"}}}
	}
	t.Run("pull_request", func(t *testing.T) {
		send("pull_request", "gh-2", pr("opened", "open", "2026-11-28T10:00:00Z", false))
		send("pull_request", "gh-3", pr("closed", "closed", "2026-11-28T11:00:00Z", true))
		// The older "synchronize" arrives late.
		send("pull_request", "gh-4", pr("synchronize", "open", "2026-11-28T10:30:00Z", false))
		if th, p := e.thing("github:pr:700"); th.Type != "PullRequest" || p["state"] != "closed" || p["merged"] != true || p["lastAction"] != "closed" {
			t.Fatalf("PullRequest = %v; want closed and merged despite the late event", p)
		}
		if got := e.related(repo, "hasPullRequest"); !slices.Contains(got, "github:pr:700") {
			t.Fatalf("hasPullRequest = %v", got)
		}
	})
	t.Run("issues", func(t *testing.T) {
		send("issues", "gh-5", map[string]any{"action": "labeled", "repository": ghRepoJSON(), "issue": map[string]any{
			"id": 900, "number": 9, "title": "Bug", "state": "open", "html_url": "h", "user": map[string]any{"login": "bob"},
			"updated_at": "2026-11-28T10:00:00Z", "labels": []any{map[string]any{"name": "bug"}}}})
		if th, i := e.thing("github:issue:900"); th.Type != "Issue" || i["title"] != "Bug" || i["labels"].([]any)[0] != "bug" {
			t.Fatalf("Issue = %v", i)
		}
		if got := e.related(repo, "hasIssue"); !slices.Contains(got, "github:issue:900") {
			t.Fatalf("hasIssue = %v", got)
		}
	})
	t.Run("release", func(t *testing.T) {
		send("release", "gh-6", map[string]any{"action": "published", "repository": ghRepoJSON(), "release": map[string]any{
			"id": 300, "tag_name": "v1.0.0", "name": "One", "draft": false, "prerelease": false, "html_url": "h", "published_at": "2026-11-28T12:00:00Z",
			"author": map[string]any{"login": "ada"}}})
		if th, r := e.thing("github:release:300"); th.Type != "Release" || r["tag"] != "v1.0.0" {
			t.Fatalf("Release = %v", r)
		}
		if got := e.related(repo, "hasRelease"); !slices.Contains(got, "github:release:300") {
			t.Fatalf("hasRelease = %v", got)
		}
	})
}
