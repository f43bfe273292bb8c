package email

import (
	"context"
	"encoding/json"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/email/v1/emailv1connect"
	"github.com/dotdo/dotdo/internal/identity"
)

var _ emailv1connect.EmailServiceHandler = (*Service)(nil)

// API is the email service as other services bind to it: the *Service
// itself in one process, the generated Connect client across processes.
type API interface {
	Send(context.Context, *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error)
	RecordEvent(context.Context, *connect.Request[emailv1.EventRequest]) (*connect.Response[emailv1.EventResponse], error)
	Get(context.Context, *connect.Request[emailv1.GetRequest]) (*connect.Response[emailv1.GetResponse], error)
	Health(context.Context, *connect.Request[emailv1.HealthRequest]) (*connect.Response[emailv1.HealthResponse], error)
}

// Send is the Connect form of SendEmail. The email goes to the outbox when
// the request says test or the caller's identity is a test key.
func (s *Service) Send(ctx context.Context, req *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error) {
	m := req.Msg
	in := &Input{Ns: m.Ns, From: m.From, To: m.To, Cc: m.Cc, Bcc: m.Bcc, ReplyTo: m.ReplyTo, Subject: m.Subject,
		HTML: m.Html, Text: m.Text, Template: m.Template, Headers: m.Headers}
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &in.Data); err != nil {
			return nil, invalid("data must be a JSON object")
		}
	}
	for _, t := range m.Tags {
		in.Tags = append(in.Tags, Tag{Name: t.Name, Value: t.Value})
	}
	for _, a := range m.Attachments {
		in.Attachments = append(in.Attachments, InAttachment{Filename: a.Filename, Content: encodeB64(a.Content), ContentType: a.ContentType, ContentID: a.ContentId})
	}
	if m.ScheduledAt > 0 {
		in.ScheduledAt = time.Unix(m.ScheduledAt, 0).UTC().Format(time.RFC3339)
	}
	test := m.Test
	if id := identity.From(ctx); id != nil && id.Test {
		test = true
	}
	r, err := s.SendEmail(ctx, in, Options{IdempotencyKey: m.IdempotencyKey, Test: test})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.SendResponse{Id: r.ID, Status: r.Status}), nil
}

// RecordEvent is the Connect form of Record, for the webhooks service.
func (s *Service) RecordEvent(ctx context.Context, req *connect.Request[emailv1.EventRequest]) (*connect.Response[emailv1.EventResponse], error) {
	m := req.Msg
	ev := Event{EmailID: m.EmailId, Provider: m.Provider, ProviderMessageID: m.ProviderMessageId, Type: m.Type,
		EventID: m.EventId, BounceType: m.BounceType, Reason: m.Reason, Link: m.Link, Recipient: m.Recipient}
	if m.OccurredAt > 0 {
		ev.OccurredAt = time.UnixMicro(m.OccurredAt)
	}
	r, err := s.Record(ctx, ev)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.EventResponse{EmailId: r.EmailID, Status: r.Status, Duplicate: r.Duplicate}), nil
}

// Get returns a message as GET /v1/emails/{id} shows it.
func (s *Service) Get(ctx context.Context, req *connect.Request[emailv1.GetRequest]) (*connect.Response[emailv1.GetResponse], error) {
	v, err := s.View(ctx, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, s.internal(ctx, "encode email", err)
	}
	return connect.NewResponse(&emailv1.GetResponse{Email: b}), nil
}

// Health reports whether the service can reach its store.
func (s *Service) Health(ctx context.Context, req *connect.Request[emailv1.HealthRequest]) (*connect.Response[emailv1.HealthResponse], error) {
	if _, _, err := s.Suppressions(ctx, DefaultNamespace, 1, ""); err != nil {
		return nil, apierr.New(apierr.Unavailable, "email store unavailable")
	}
	return connect.NewResponse(&emailv1.HealthResponse{Status: "ok"}), nil
}
