package webhooks

import (
	"context"
	"encoding/json"
)

// Stripe events become Customer, Subscription, Invoice and Payment things
// in the configured namespace, under Stripe's own ids (cus_, sub_, in_,
// pi_), with relationships:
//
//	Customer -hasSubscription-> Subscription
//	Customer -hasInvoice-> Invoice -forSubscription-> Subscription
//	Customer -hasPayment-> Payment -pays-> Invoice
//
// The object an event is about is written in event order (event created
// time); the things it only refers to are filled in where still empty.

type stripeEvent struct {
	ID      string `json:"id"`
	Type    string `json:"type"`
	Created int64  `json:"created"`
	Data    struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

// stripeID reads an expandable field: an id string or an object with an id.
type stripeID string

func (id *stripeID) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '{' {
		var o struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &o); err != nil {
			return err
		}
		*id = stripeID(o.ID)
		return nil
	}
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*id = stripeID(s)
	return nil
}

func (s *Service) stripeHandlers() map[string]handler {
	return map[string]handler{
		"checkout.session.completed":    s.stripeCheckout,
		"customer.subscription.created": s.stripeSubscription,
		"customer.subscription.updated": s.stripeSubscription,
		"customer.subscription.deleted": s.stripeSubscription,
		"invoice.paid":                  s.stripeInvoice,
		"invoice.payment_failed":        s.stripeInvoice,
		"payment_intent.succeeded":      s.stripePayment,
	}
}

func stripeDecode(body []byte, obj any) (*stripeEvent, error) {
	var ev stripeEvent
	if err := decode(body, &ev); err != nil {
		return nil, err
	}
	if len(ev.Data.Object) == 0 {
		return nil, permanentf("data.object missing")
	}
	if err := decode(ev.Data.Object, obj); err != nil {
		return nil, err
	}
	return &ev, nil
}

// customerStub makes sure the Customer thing exists, filling in what the
// event knows of it.
func (s *Service) customerStub(ctx context.Context, id, email, name string) error {
	if id == "" {
		return nil
	}
	f := map[string]any{"stripeId": id}
	if email != "" {
		f["email"] = email
	}
	if name != "" {
		f["name"] = name
	}
	_, err := s.upsert(ctx, s.cfg.Namespace, id, "Customer", f, 0, true)
	return err
}

func (s *Service) stripeCheckout(ctx context.Context, in inbound) error {
	body := in.Body
	var cs struct {
		ID              string   `json:"id"`
		Customer        stripeID `json:"customer"`
		CustomerDetails struct {
			Email string `json:"email"`
			Name  string `json:"name"`
		} `json:"customer_details"`
		CustomerEmail string   `json:"customer_email"`
		Subscription  stripeID `json:"subscription"`
		PaymentIntent stripeID `json:"payment_intent"`
		Invoice       stripeID `json:"invoice"`
		Mode          string   `json:"mode"`
		AmountTotal   int64    `json:"amount_total"`
		Currency      string   `json:"currency"`
		PaymentStatus string   `json:"payment_status"`
	}
	if _, err := stripeDecode(body, &cs); err != nil {
		return err
	}
	ns, cus := s.cfg.Namespace, string(cs.Customer)
	email := cs.CustomerDetails.Email
	if email == "" {
		email = cs.CustomerEmail
	}
	if cus != "" {
		// The checkout is the freshest word on who the customer is.
		f := map[string]any{"stripeId": cus, "checkoutSession": cs.ID}
		if email != "" {
			f["email"] = email
		}
		if cs.CustomerDetails.Name != "" {
			f["name"] = cs.CustomerDetails.Name
		}
		if _, err := s.upsert(ctx, ns, cus, "Customer", f, 0, false); err != nil {
			return err
		}
	}
	if sub := string(cs.Subscription); sub != "" {
		if _, err := s.upsert(ctx, ns, sub, "Subscription", map[string]any{"stripeId": sub, "customer": cus, "status": "active"}, 0, true); err != nil {
			return err
		}
		if err := s.relate(ctx, ns, cus, "hasSubscription", sub); err != nil {
			return err
		}
	}
	if pi := string(cs.PaymentIntent); pi != "" && cs.PaymentStatus == "paid" {
		if _, err := s.upsert(ctx, ns, pi, "Payment", map[string]any{"stripeId": pi, "customer": cus, "amount": cs.AmountTotal, "currency": cs.Currency, "status": "succeeded"}, 0, true); err != nil {
			return err
		}
		if err := s.relate(ctx, ns, cus, "hasPayment", pi); err != nil {
			return err
		}
	}
	return nil
}

func (s *Service) stripeSubscription(ctx context.Context, in inbound) error {
	body := in.Body
	var sub struct {
		ID                string   `json:"id"`
		Customer          stripeID `json:"customer"`
		Status            string   `json:"status"`
		CancelAtPeriodEnd bool     `json:"cancel_at_period_end"`
		CanceledAt        int64    `json:"canceled_at"`
		CurrentPeriodEnd  int64    `json:"current_period_end"`
		Items             struct {
			Data []struct {
				CurrentPeriodEnd int64 `json:"current_period_end"`
				Quantity         int64 `json:"quantity"`
				Price            struct {
					ID string `json:"id"`
				} `json:"price"`
			} `json:"data"`
		} `json:"items"`
	}
	ev, err := stripeDecode(body, &sub)
	if err != nil {
		return err
	}
	if sub.ID == "" {
		return permanentf("subscription id missing")
	}
	ns, cus := s.cfg.Namespace, string(sub.Customer)
	prices := []string{}
	periodEnd := sub.CurrentPeriodEnd
	for _, it := range sub.Items.Data {
		prices = append(prices, it.Price.ID)
		periodEnd = max(periodEnd, it.CurrentPeriodEnd)
	}
	status := sub.Status
	if ev.Type == "customer.subscription.deleted" && status == "" {
		status = "canceled"
	}
	f := map[string]any{"stripeId": sub.ID, "customer": cus, "status": status, "prices": prices,
		"cancelAtPeriodEnd": sub.CancelAtPeriodEnd, "currentPeriodEnd": periodEnd, "lastEvent": ev.Type}
	if sub.CanceledAt > 0 {
		f["canceledAt"] = sub.CanceledAt
	}
	if _, err := s.upsert(ctx, ns, sub.ID, "Subscription", f, ev.Created, false); err != nil {
		return err
	}
	if err := s.customerStub(ctx, cus, "", ""); err != nil {
		return err
	}
	return s.relate(ctx, ns, cus, "hasSubscription", sub.ID)
}

func (s *Service) stripeInvoice(ctx context.Context, in inbound) error {
	body := in.Body
	var inv struct {
		ID               string   `json:"id"`
		Customer         stripeID `json:"customer"`
		CustomerEmail    string   `json:"customer_email"`
		CustomerName     string   `json:"customer_name"`
		Subscription     stripeID `json:"subscription"`
		Status           string   `json:"status"`
		AmountDue        int64    `json:"amount_due"`
		AmountPaid       int64    `json:"amount_paid"`
		Currency         string   `json:"currency"`
		AttemptCount     int64    `json:"attempt_count"`
		HostedInvoiceURL string   `json:"hosted_invoice_url"`
		Parent           struct {
			SubscriptionDetails struct {
				Subscription stripeID `json:"subscription"`
			} `json:"subscription_details"`
		} `json:"parent"`
	}
	ev, err := stripeDecode(body, &inv)
	if err != nil {
		return err
	}
	if inv.ID == "" {
		return permanentf("invoice id missing")
	}
	ns, cus := s.cfg.Namespace, string(inv.Customer)
	sub := string(inv.Subscription)
	if sub == "" {
		sub = string(inv.Parent.SubscriptionDetails.Subscription)
	}
	f := map[string]any{"stripeId": inv.ID, "customer": cus, "status": inv.Status, "amountDue": inv.AmountDue,
		"amountPaid": inv.AmountPaid, "currency": inv.Currency, "attemptCount": inv.AttemptCount,
		"paymentFailed": ev.Type == "invoice.payment_failed", "lastEvent": ev.Type}
	if sub != "" {
		f["subscription"] = sub
	}
	if inv.HostedInvoiceURL != "" {
		f["url"] = inv.HostedInvoiceURL
	}
	if _, err := s.upsert(ctx, ns, inv.ID, "Invoice", f, ev.Created, false); err != nil {
		return err
	}
	if err := s.customerStub(ctx, cus, inv.CustomerEmail, inv.CustomerName); err != nil {
		return err
	}
	if err := s.relate(ctx, ns, cus, "hasInvoice", inv.ID); err != nil {
		return err
	}
	if sub != "" {
		if _, err := s.upsert(ctx, ns, sub, "Subscription", map[string]any{"stripeId": sub, "customer": cus}, 0, true); err != nil {
			return err
		}
		if ev.Type == "invoice.payment_failed" {
			// Dunning: the subscription's own events carry its status; mark
			// that its latest invoice failed meanwhile.
			if _, err := s.upsert(ctx, ns, sub, "Subscription", map[string]any{"latestInvoiceFailed": true}, 0, false); err != nil {
				return err
			}
		} else if _, err := s.upsert(ctx, ns, sub, "Subscription", map[string]any{"latestInvoiceFailed": false}, 0, false); err != nil {
			return err
		}
		if err := s.relate(ctx, ns, inv.ID, "forSubscription", sub); err != nil {
			return err
		}
		return s.relate(ctx, ns, cus, "hasSubscription", sub)
	}
	return nil
}

func (s *Service) stripePayment(ctx context.Context, in inbound) error {
	body := in.Body
	var pi struct {
		ID           string   `json:"id"`
		Customer     stripeID `json:"customer"`
		Amount       int64    `json:"amount"`
		Received     int64    `json:"amount_received"`
		Currency     string   `json:"currency"`
		Status       string   `json:"status"`
		Invoice      stripeID `json:"invoice"`
		ReceiptEmail string   `json:"receipt_email"`
	}
	ev, err := stripeDecode(body, &pi)
	if err != nil {
		return err
	}
	if pi.ID == "" {
		return permanentf("payment intent id missing")
	}
	ns, cus := s.cfg.Namespace, string(pi.Customer)
	f := map[string]any{"stripeId": pi.ID, "customer": cus, "amount": pi.Amount, "amountReceived": pi.Received,
		"currency": pi.Currency, "status": pi.Status}
	if inv := string(pi.Invoice); inv != "" {
		f["invoice"] = inv
	}
	if _, err := s.upsert(ctx, ns, pi.ID, "Payment", f, ev.Created, false); err != nil {
		return err
	}
	if err := s.customerStub(ctx, cus, pi.ReceiptEmail, ""); err != nil {
		return err
	}
	if err := s.relate(ctx, ns, cus, "hasPayment", pi.ID); err != nil {
		return err
	}
	if inv := string(pi.Invoice); inv != "" {
		return s.relate(ctx, ns, pi.ID, "pays", inv)
	}
	return nil
}
