package webhooks

import (
	"context"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
)

// Email is what the webhooks service needs from the email service: it
// records a provider's delivery event on the message, moves its status
// and suppresses addresses that bounced hard or complained.
type Email interface {
	RecordEvent(context.Context, *connect.Request[emailv1.EventRequest]) (*connect.Response[emailv1.EventResponse], error)
}

func (s *Service) resendHandlers() map[string]handler {
	h := map[string]handler{}
	for _, t := range []string{"email.sent", "email.delivered", "email.delivery_delayed", "email.complained", "email.bounced", "email.opened", "email.clicked"} {
		h[t] = s.resendEvent
	}
	return h
}

// resendEvent hands a Resend event to the email service, which finds the
// message by the id Resend returned at send (data.email_id).
func (s *Service) resendEvent(ctx context.Context, in inbound) error {
	var ev struct {
		Type      string `json:"type"`
		CreatedAt string `json:"created_at"`
		Data      struct {
			EmailID string   `json:"email_id"`
			To      []string `json:"to"`
			Bounce  struct {
				Type    string `json:"type"`
				SubType string `json:"subType"`
				Message string `json:"message"`
			} `json:"bounce"`
			Click struct {
				Link string `json:"link"`
			} `json:"click"`
		} `json:"data"`
	}
	if err := decode(in.Body, &ev); err != nil {
		return err
	}
	if ev.Data.EmailID == "" {
		return permanentf("data.email_id missing")
	}
	if s.email == nil {
		return apierr.New(apierr.Unavailable, "the email service is not reachable from the webhooks service")
	}
	req := &emailv1.EventRequest{Provider: "resend", ProviderMessageId: ev.Data.EmailID, Type: ev.Type, EventId: in.EventID}
	if t, err := time.Parse(time.RFC3339Nano, ev.CreatedAt); err == nil {
		req.OccurredAt = t.UnixMicro()
	}
	if ev.Type == "email.bounced" {
		// Resend: Permanent is a hard bounce; Transient and Undetermined
		// are soft and do not suppress the address.
		req.BounceType = "soft"
		if strings.EqualFold(ev.Data.Bounce.Type, "Permanent") {
			req.BounceType = "hard"
		}
		req.Reason = trimReason(strings.TrimSpace(ev.Data.Bounce.SubType + " " + ev.Data.Bounce.Message))
	}
	if ev.Type == "email.clicked" && len(ev.Data.Click.Link) <= 2048 {
		req.Link = ev.Data.Click.Link
	}
	_, err := s.email.RecordEvent(ctx, connect.NewRequest(req))
	if apierr.Is(err, apierr.Invalid) {
		return permanent{err}
	}
	return err
}
