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
	SendBatch(context.Context, *connect.Request[emailv1.SendBatchRequest]) (*connect.Response[emailv1.SendBatchResponse], error)
	RecordEvent(context.Context, *connect.Request[emailv1.EventRequest]) (*connect.Response[emailv1.EventResponse], error)
	Get(context.Context, *connect.Request[emailv1.GetRequest]) (*connect.Response[emailv1.GetResponse], error)
	List(context.Context, *connect.Request[emailv1.ListRequest]) (*connect.Response[emailv1.ListResponse], error)
	ListSuppressions(context.Context, *connect.Request[emailv1.ListSuppressionsRequest]) (*connect.Response[emailv1.ListSuppressionsResponse], error)
	Suppress(context.Context, *connect.Request[emailv1.SuppressRequest]) (*connect.Response[emailv1.SuppressResponse], error)
	Unsuppress(context.Context, *connect.Request[emailv1.UnsuppressRequest]) (*connect.Response[emailv1.UnsuppressResponse], error)
	ListTemplates(context.Context, *connect.Request[emailv1.ListTemplatesRequest]) (*connect.Response[emailv1.ListTemplatesResponse], error)
	Preview(context.Context, *connect.Request[emailv1.PreviewRequest]) (*connect.Response[emailv1.PreviewResponse], error)
	Health(context.Context, *connect.Request[emailv1.HealthRequest]) (*connect.Response[emailv1.HealthResponse], error)
}

// toInput converts an RPC email to the service's input.
func toInput(m *emailv1.SendRequest) (*Input, error) {
	in := &Input{Ns: m.Ns, From: m.From, To: m.To, Cc: m.Cc, Bcc: m.Bcc, ReplyTo: m.ReplyTo, Subject: m.Subject,
		HTML: m.Html, Text: m.Text, Template: m.Template, Headers: m.Headers}
	if len(m.Data) > 0 {
		if err := json.Unmarshal(m.Data, &in.Data); err != nil || in.Data == nil {
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
	return in, nil
}

// isTest reports whether the call is for the outbox: asked for, or made
// with a test key's identity.
func isTest(ctx context.Context, asked bool) bool {
	if id := identity.From(ctx); id != nil && id.Test {
		return true
	}
	return asked
}

// Send is the Connect form of SendEmail. The email goes to the outbox when
// the request says test or the caller's identity is a test key.
func (s *Service) Send(ctx context.Context, req *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error) {
	in, err := toInput(req.Msg)
	if err != nil {
		return nil, err
	}
	r, err := s.SendEmail(ctx, in, Options{IdempotencyKey: req.Msg.IdempotencyKey, Test: isTest(ctx, req.Msg.Test)})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.SendResponse{Id: r.ID, Status: r.Status}), nil
}

// SendBatch is the Connect form of SendEmails.
func (s *Service) SendBatch(ctx context.Context, req *connect.Request[emailv1.SendBatchRequest]) (*connect.Response[emailv1.SendBatchResponse], error) {
	m := req.Msg
	ins := make([]*Input, len(m.Emails))
	for i, e := range m.Emails {
		in, err := toInput(e)
		if err != nil {
			return nil, apierr.AtIndex(err, i)
		}
		in.Ns = m.Ns
		ins[i] = in
	}
	rs, err := s.SendEmails(ctx, ins, Options{IdempotencyKey: m.IdempotencyKey, Test: isTest(ctx, m.Test), Strict: m.Strict})
	if err != nil {
		return nil, err
	}
	out := &emailv1.SendBatchResponse{}
	for _, r := range rs {
		br := &emailv1.BatchResult{Id: r.ID, Status: r.Status}
		if r.Err != nil {
			br.Code, br.Message = string(r.Err.Code), r.Err.Message
		}
		out.Results = append(out.Results, br)
	}
	return connect.NewResponse(out), nil
}

// List is the Connect form of ListEmails.
func (s *Service) List(ctx context.Context, req *connect.Request[emailv1.ListRequest]) (*connect.Response[emailv1.ListResponse], error) {
	m := req.Msg
	items, next, err := s.ListEmails(ctx, m.Ns, Filter{To: m.To, Status: m.Status, Tag: m.Tag, Provider: m.Provider}, int(m.Limit), m.Cursor)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(items)
	return connect.NewResponse(&emailv1.ListResponse{Items: b, NextCursor: next}), nil
}

// ListSuppressions is the Connect form of Suppressions.
func (s *Service) ListSuppressions(ctx context.Context, req *connect.Request[emailv1.ListSuppressionsRequest]) (*connect.Response[emailv1.ListSuppressionsResponse], error) {
	items, next, err := s.Suppressions(ctx, req.Msg.Ns, int(req.Msg.Limit), req.Msg.Cursor)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(items)
	return connect.NewResponse(&emailv1.ListSuppressionsResponse{Items: b, NextCursor: next}), nil
}

// Suppress is the Connect form of AddSuppression.
func (s *Service) Suppress(ctx context.Context, req *connect.Request[emailv1.SuppressRequest]) (*connect.Response[emailv1.SuppressResponse], error) {
	sup, err := s.AddSuppression(ctx, req.Msg.Ns, req.Msg.Email, req.Msg.Reason)
	if err != nil {
		return nil, err
	}
	b, _ := json.Marshal(sup)
	return connect.NewResponse(&emailv1.SuppressResponse{Suppression: b}), nil
}

// Unsuppress is the Connect form of RemoveSuppression.
func (s *Service) Unsuppress(ctx context.Context, req *connect.Request[emailv1.UnsuppressRequest]) (*connect.Response[emailv1.UnsuppressResponse], error) {
	if err := s.RemoveSuppression(ctx, req.Msg.Ns, req.Msg.Email); err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.UnsuppressResponse{}), nil
}

// TemplateInfo describes a template.
type TemplateInfo struct {
	Name      string   `json:"name"`
	Variables []string `json:"variables"`
	Source    string   `json:"source"`
}

// ListTemplates returns the templates by name.
func (s *Service) ListTemplates(ctx context.Context, req *connect.Request[emailv1.ListTemplatesRequest]) (*connect.Response[emailv1.ListTemplatesResponse], error) {
	out := []TemplateInfo{}
	for _, t := range s.tpl.List() {
		vars := t.Variables
		if vars == nil {
			vars = []string{}
		}
		out = append(out, TemplateInfo{Name: t.Name, Variables: vars, Source: t.Source})
	}
	b, _ := json.Marshal(out)
	return connect.NewResponse(&emailv1.ListTemplatesResponse{Items: b}), nil
}

// Preview renders a template with data: not found for an unknown
// template, unprocessable for a missing variable.
func (s *Service) Preview(ctx context.Context, req *connect.Request[emailv1.PreviewRequest]) (*connect.Response[emailv1.PreviewResponse], error) {
	if _, ok := s.tpl.Lookup(req.Msg.Name); !ok {
		return nil, apierr.New(apierr.NotFound, "template %q not found", req.Msg.Name)
	}
	var data map[string]any
	if len(req.Msg.Data) > 0 {
		if err := json.Unmarshal(req.Msg.Data, &data); err != nil {
			return nil, apierr.New(apierr.Invalid, "data must be a JSON object")
		}
	}
	out, err := s.tpl.Render(req.Msg.Name, data)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.PreviewResponse{Subject: out.Subject, Html: out.HTML, Text: out.Text}), nil
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
