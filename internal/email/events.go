package email

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Event is a delivery event a provider reported, usually through the
// webhooks service.
type Event struct {
	// EmailID is dotdo's id of the message; or give Provider and
	// ProviderMessageID.
	EmailID           string
	Provider          string
	ProviderMessageID string
	// Type is sent, delivered, delivery_delayed, bounced, complained,
	// opened, clicked or failed ("email." prefixes are accepted).
	Type string
	// OccurredAt is when the provider saw it; now when zero.
	OccurredAt time.Time
	// EventID is the provider's id of the event: recording it twice
	// changes nothing.
	EventID string
	// BounceType is "hard" (the default: suppresses the address) or "soft".
	BounceType string
	Reason     string
	Link       string
	Recipient  string
}

// EventResult is the message's state after an event.
type EventResult struct {
	EmailID   string
	Status    string
	Duplicate bool
}

var eventTypes = map[string]bool{
	StatusSent: true, StatusDelivered: true, StatusDeliveryDelayed: true, StatusBounced: true,
	StatusComplained: true, StatusFailed: true, "opened": true, "clicked": true,
}

func isNotFound(err error) bool { return apierr.Is(err, apierr.NotFound) }

// Record records a provider's event in the message's timeline and
// moves its status forward, never back: events may arrive late, twice, or
// out of order. A hard bounce or a complaint puts the recipient on the
// suppression list.
func (s *Service) Record(ctx context.Context, ev Event) (*EventResult, error) {
	typ := strings.TrimPrefix(strings.ToLower(strings.TrimSpace(ev.Type)), "email.")
	typ = strings.ReplaceAll(typ, ".", "_")
	if !eventTypes[typ] {
		return nil, apierr.New(apierr.Invalid, "event type %q: use sent, delivered, delivery_delayed, bounced, complained, opened, clicked or failed", ev.Type)
	}
	if len(ev.EventID) > 256 || len(ev.Reason) > 2000 || len(ev.Link) > 2048 || len(ev.Recipient) > 320 {
		return nil, apierr.New(apierr.Invalid, "event fields too long")
	}
	id := ev.EmailID
	if id == "" {
		if ev.Provider == "" || ev.ProviderMessageID == "" {
			return nil, apierr.New(apierr.Invalid, "give email_id, or provider and provider_message_id")
		}
		var err error
		id, err = s.emailForProviderID(ctx, ev.Provider, ev.ProviderMessageID)
		if isNotFound(err) {
			return nil, apierr.New(apierr.NotFound, "no email was sent through %s as %s", ev.Provider, ev.ProviderMessageID)
		}
		if err != nil {
			return nil, s.internal(ctx, "find email by provider id", err)
		}
	}
	at := ev.OccurredAt
	if at.IsZero() {
		at = s.now()
	}
	hard := ev.BounceType == "" || strings.EqualFold(ev.BounceType, "hard") || strings.EqualFold(ev.BounceType, "permanent")
	res := &EventResult{EmailID: id}
	r, err := s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
		res.Duplicate = false
		if ev.EventID != "" {
			for _, e := range r.Events {
				if e.ID == ev.EventID && e.Type == typ {
					res.Duplicate = true
					return false, nil, nil
				}
			}
		}
		e := event{Type: typ, At: ts(at), ID: ev.EventID, Reason: ev.Reason, Link: ev.Link, Recipient: strings.ToLower(ev.Recipient)}
		r.addEvent(e)
		// The timeline reads in the order things happened.
		sort.SliceStable(r.Events, func(i, j int) bool { return r.Events[i].At < r.Events[j].At })
		status := typ
		if typ == StatusBounced && !hard {
			status = StatusDeliveryDelayed
		}
		if _, isStatus := rank[status]; isStatus && rank[status] > rank[r.Status] {
			r.Status = status
			if status == StatusFailed || status == StatusBounced {
				r.Error = ev.Reason
			}
		}
		var ops []*dbv1.Op
		if typ == StatusComplained || typ == StatusBounced && hard {
			rcpts := r.Rcpt
			if ev.Recipient != "" {
				rcpts = []string{strings.ToLower(ev.Recipient)}
			}
			reason := typ
			if ev.Reason != "" {
				reason += ": " + ev.Reason
			}
			for _, addr := range rcpts {
				ops = append(ops, suppressOp(&Suppression{Ns: r.Ns, Email: addr, Reason: reason, EmailID: id, CreatedAt: ts(s.now())}))
			}
		}
		return true, ops, nil
	})
	if err != nil {
		if isNotFound(err) {
			return nil, err
		}
		return nil, s.internal(ctx, "record email event", err)
	}
	res.Status = r.Status
	if !res.Duplicate {
		s.metrics.events.WithLabelValues(typ).Inc()
	}
	return res, nil
}
