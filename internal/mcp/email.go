package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
)

// Email is what email_send and email_status need from the email service:
// the service itself, its Connect client, or Remote.
type Email interface {
	Send(context.Context, *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error)
	Get(context.Context, *connect.Request[emailv1.GetRequest]) (*connect.Response[emailv1.GetResponse], error)
}

// EmailTemplates lists the email templates; email_templates needs it.
type EmailTemplates func(ctx context.Context) ([]EmailTemplate, error)

// EmailTemplate is one template the email service renders.
type EmailTemplate struct {
	Name      string   `json:"name"`
	Variables []string `json:"variables" jsonschema:"the data fields the template uses"`
	Source    string   `json:"source" jsonschema:"embedded, or the directory that overrides it"`
}

// defaultEmailNS is the email service's namespace for callers that name none.
const defaultEmailNS = "default"

// EmailTag is a name/value label on an email.
type EmailTag struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// EmailSendIn are email_send's arguments.
type EmailSendIn struct {
	NS             string          `json:"ns,omitempty" jsonschema:"the namespace the email belongs to (default: default)"`
	From           string          `json:"from,omitempty" jsonschema:"sender, such as \"Acme <noreply@acme.com>\"; default: the server's --email-from"`
	To             []string        `json:"to" jsonschema:"recipients (RFC 5322 mailboxes)"`
	Cc             []string        `json:"cc,omitempty"`
	Bcc            []string        `json:"bcc,omitempty"`
	ReplyTo        []string        `json:"replyTo,omitempty"`
	Subject        string          `json:"subject,omitempty" jsonschema:"required unless a template gives it"`
	HTML           string          `json:"html,omitempty"`
	Text           string          `json:"text,omitempty"`
	Template       string          `json:"template,omitempty" jsonschema:"a template name from email_templates, instead of html and text"`
	Data           json.RawMessage `json:"data,omitempty" jsonschema:"the template's variables"`
	Tags           []EmailTag      `json:"tags,omitempty"`
	IdempotencyKey string          `json:"idempotencyKey,omitempty" jsonschema:"the same key within 24 hours sends once and returns the first result"`
	Test           bool            `json:"test,omitempty" jsonschema:"keep the email in the outbox, never deliver it (always so for sk_test_ keys)"`
}

// EmailSendOut is the queued email.
type EmailSendOut struct {
	ID     string `json:"id" jsonschema:"the email's id, for email_status"`
	Status string `json:"status" jsonschema:"queued, scheduled, ..."`
}

// EmailStatusIn are email_status' arguments.
type EmailStatusIn struct {
	NS string `json:"ns,omitempty" jsonschema:"the email's namespace (default: default)"`
	ID string `json:"id" jsonschema:"the id email_send returned"`
}

// EmailStatusOut is an email's delivery state and timeline.
type EmailStatusOut struct {
	ID          string            `json:"id"`
	NS          string            `json:"ns"`
	From        string            `json:"from"`
	To          []string          `json:"to"`
	Subject     string            `json:"subject"`
	Template    string            `json:"template,omitempty"`
	Status      string            `json:"status" jsonschema:"queued, scheduled, sent, delivered, delivery_delayed, bounced, complained, failed, suppressed, ..."`
	LastEvent   string            `json:"lastEvent"`
	Provider    string            `json:"provider"`
	Test        bool              `json:"test"`
	ScheduledAt string            `json:"scheduledAt,omitempty"`
	CreatedAt   string            `json:"createdAt"`
	Attempts    int               `json:"attempts"`
	Error       string            `json:"error,omitempty"`
	Opens       int               `json:"opens"`
	Clicks      int               `json:"clicks"`
	Events      []json.RawMessage `json:"events" jsonschema:"the timeline: each event with its type and time"`
}

// EmailTemplatesIn are email_templates' arguments.
type EmailTemplatesIn struct {
	NS string `json:"ns,omitempty" jsonschema:"namespace whose email:read permission is checked (default: default)"`
}

// EmailTemplatesOut lists the templates.
type EmailTemplatesOut struct {
	Items []EmailTemplate `json:"items"`
}

func emailNS(ns string) string {
	if ns == "" {
		return defaultEmailNS
	}
	return ns
}

func (s *Server) addEmailTools() {
	e := s.opts.Email
	send := writes("Send an email", false, false)
	send.OpenWorldHint = &[]bool{true}[0] // it leaves for a real mailbox
	addTool(s, &sdk.Tool{Name: "email_send", Annotations: send,
		Description: "Send a transactional email: html/text, or a template with data. It is queued and delivered by the configured provider (never for test sends or sk_test_ keys, which stay in the outbox); " +
			"follow it with email_status. Needs email:send on the namespace."},
		func(c call, in EmailSendIn) (EmailSendOut, error) {
			ns := emailNS(in.NS)
			if err := s.need(c.ctx, c.id, ns, "email:send"); err != nil {
				return EmailSendOut{}, err
			}
			if len(in.To) == 0 {
				return EmailSendOut{}, invalid("to needs at least one recipient")
			}
			req := &emailv1.SendRequest{Ns: ns, From: in.From, To: in.To, Cc: in.Cc, Bcc: in.Bcc, ReplyTo: in.ReplyTo, Subject: in.Subject,
				Html: in.HTML, Text: in.Text, Template: in.Template, IdempotencyKey: in.IdempotencyKey, Test: in.Test}
			if len(in.Data) > 0 && string(in.Data) != "null" {
				req.Data = in.Data
			}
			for _, t := range in.Tags {
				req.Tags = append(req.Tags, &emailv1.Tag{Name: t.Name, Value: t.Value})
			}
			res, err := e.Send(c.ctx, connect.NewRequest(req))
			if err != nil {
				return EmailSendOut{}, err
			}
			return EmailSendOut{ID: res.Msg.Id, Status: res.Msg.Status}, nil
		})

	addTool(s, &sdk.Tool{Name: "email_status", Annotations: readOnly("Email status"),
		Description: "Show where an email is: its status (queued, sent, delivered, bounced, ...), attempts, opens, clicks and the timeline of provider events. Needs email:read on its namespace."},
		func(c call, in EmailStatusIn) (EmailStatusOut, error) {
			ns := emailNS(in.NS)
			if err := s.need(c.ctx, c.id, ns, "email:read"); err != nil {
				return EmailStatusOut{}, err
			}
			greq := connect.NewRequest(&emailv1.GetRequest{Id: in.ID})
			greq.Header().Set(nsHeader, ns) // for the remote binding's REST call
			res, err := e.Get(c.ctx, greq)
			if err != nil {
				return EmailStatusOut{}, err
			}
			var out EmailStatusOut
			if err := json.Unmarshal(res.Msg.Email, &out); err != nil {
				return EmailStatusOut{}, err
			}
			if out.NS != ns {
				// An email of another namespace is not found from this one.
				return EmailStatusOut{}, apierr.New(apierr.NotFound, "email %s not found in namespace %s", in.ID, ns)
			}
			if out.Events == nil {
				out.Events = []json.RawMessage{}
			}
			return out, nil
		})

	if s.opts.EmailTemplates != nil {
		addTool(s, &sdk.Tool{Name: "email_templates", Annotations: readOnly("Email templates"),
			Description: "List the email templates email_send can use, with the data variables each expects. Needs email:read on the namespace."},
			func(c call, in EmailTemplatesIn) (EmailTemplatesOut, error) {
				if err := s.need(c.ctx, c.id, emailNS(in.NS), "email:read"); err != nil {
					return EmailTemplatesOut{}, err
				}
				list, err := s.opts.EmailTemplates(c.ctx)
				if err != nil {
					return EmailTemplatesOut{}, err
				}
				out := EmailTemplatesOut{Items: []EmailTemplate{}}
				for _, t := range list {
					if t.Variables == nil {
						t.Variables = []string{}
					}
					out.Items = append(out.Items, t)
				}
				return out, nil
			})
	}
}

// RemoteEmail is the email binding of Remote, over /v1/emails.
type RemoteEmail struct{ r *Remote }

var _ Email = (*RemoteEmail)(nil)

// Email returns the email binding of r.
func (r *Remote) Email() *RemoteEmail { return &RemoteEmail{r: r} }

// Send implements Email over POST /v1/emails.
func (e *RemoteEmail) Send(ctx context.Context, req *connect.Request[emailv1.SendRequest]) (*connect.Response[emailv1.SendResponse], error) {
	m := req.Msg
	body := map[string]any{"from": m.From, "to": m.To, "subject": m.Subject}
	for k, v := range map[string][]string{"cc": m.Cc, "bcc": m.Bcc, "replyTo": m.ReplyTo} {
		if len(v) > 0 {
			body[k] = v
		}
	}
	for k, v := range map[string]string{"html": m.Html, "text": m.Text, "template": m.Template} {
		if v != "" {
			body[k] = v
		}
	}
	if len(m.Data) > 0 {
		body["data"] = json.RawMessage(m.Data)
	}
	if len(m.Tags) > 0 {
		tags := []EmailTag{}
		for _, t := range m.Tags {
			tags = append(tags, EmailTag{Name: t.Name, Value: t.Value})
		}
		body["tags"] = tags
	}
	if m.Test && !e.r.test {
		// The REST API keeps an email in the outbox only for sk_test_ keys.
		return nil, apierr.New(apierr.Unsupported, "test sends through a running server need an sk_test_ key (dotdo mcp --key sk_test_...)")
	}
	h := http.Header{}
	if m.IdempotencyKey != "" {
		h.Set("Idempotency-Key", m.IdempotencyKey)
	}
	var out struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if _, err := e.r.do(ctx, http.MethodPost, "/v1/emails?ns="+url.QueryEscape(emailNS(m.Ns)), h, body, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.SendResponse{Id: out.ID, Status: out.Status}), nil
}

// nsHeader carries the namespace of an email_status call to the remote
// binding, whose REST route needs it.
const nsHeader = "Dotdo-Ns"

// Get implements Email over GET /v1/emails/{id}?ns=, with the namespace of
// the nsHeader request header.
func (e *RemoteEmail) Get(ctx context.Context, req *connect.Request[emailv1.GetRequest]) (*connect.Response[emailv1.GetResponse], error) {
	ns := req.Header().Get(nsHeader)
	var raw json.RawMessage
	if _, err := e.r.do(ctx, http.MethodGet, "/v1/emails/"+url.PathEscape(req.Msg.Id)+"?ns="+url.QueryEscape(emailNS(ns)), nil, nil, &raw); err != nil {
		return nil, err
	}
	return connect.NewResponse(&emailv1.GetResponse{Email: raw}), nil
}

// Templates lists the templates over GET /v1/email/templates.
func (e *RemoteEmail) Templates(ctx context.Context) ([]EmailTemplate, error) {
	var out struct {
		Items []EmailTemplate `json:"items"`
	}
	if _, err := e.r.do(ctx, http.MethodGet, "/v1/email/templates", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Items, nil
}
