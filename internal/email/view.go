package email

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

func encodeB64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// View is a message as the API shows it.
type View struct {
	Object      string            `json:"object"`
	ID          string            `json:"id"`
	Ns          string            `json:"ns"`
	From        string            `json:"from"`
	To          []string          `json:"to"`
	Cc          []string          `json:"cc,omitempty"`
	Bcc         []string          `json:"bcc,omitempty"`
	ReplyTo     []string          `json:"replyTo,omitempty"`
	Subject     string            `json:"subject"`
	Template    string            `json:"template,omitempty"`
	Tags        []Tag             `json:"tags,omitempty"`
	Status      string            `json:"status"`
	LastEvent   string            `json:"lastEvent"`
	Provider    string            `json:"provider"`
	ProviderID  string            `json:"providerId,omitempty"`
	Test        bool              `json:"test"`
	ScheduledAt string            `json:"scheduledAt,omitempty"`
	CreatedAt   string            `json:"createdAt"`
	Attempts    int               `json:"attempts"`
	Error       string            `json:"error,omitempty"`
	Opens       int               `json:"opens"`
	Clicks      int               `json:"clicks"`
	HTML        string            `json:"html,omitempty"`
	Text        string            `json:"text,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Attachments []AttachmentInfo  `json:"attachments,omitempty"`
	Events      []event           `json:"events,omitempty"`
}

// AttachmentInfo describes an attachment without its content.
type AttachmentInfo struct {
	Filename    string `json:"filename"`
	ContentType string `json:"contentType,omitempty"`
	ContentID   string `json:"contentId,omitempty"`
	Size        int    `json:"size"`
}

func view(id string, r *record) *View {
	v := &View{Object: "email", ID: id, Ns: r.Ns, From: r.From, To: r.To, Cc: r.Cc, Bcc: r.Bcc, ReplyTo: r.ReplyTo,
		Subject: r.Subject, Template: r.Template, Tags: r.Tags, Status: r.Status, Provider: r.Provider, ProviderID: r.ProviderID,
		Test: r.Test, ScheduledAt: r.ScheduledAt, CreatedAt: r.CreatedAt, Attempts: r.Attempts, Error: r.Error, Opens: r.Opens, Clicks: r.Clicks}
	if n := len(r.Events); n > 0 {
		v.LastEvent = r.Events[n-1].Type
	}
	return v
}

// View returns the message id with its content and event timeline.
func (s *Service) View(ctx context.Context, id string) (*View, error) {
	r, _, err := s.getRecord(ctx, id)
	if err != nil {
		if isNotFound(err) {
			return nil, err
		}
		return nil, s.internal(ctx, "get email", err)
	}
	v := view(id, r)
	pl, err := s.loadPayload(ctx, id, r)
	if err != nil {
		return nil, s.internal(ctx, "load email", err)
	}
	v.HTML, v.Text, v.Headers = pl.HTML, pl.Text, pl.Headers
	for _, a := range pl.Attachments {
		v.Attachments = append(v.Attachments, AttachmentInfo{Filename: a.Filename, ContentType: a.ContentType, ContentID: a.ContentID, Size: len(a.Content)})
	}
	v.Events = r.Events
	return v, nil
}

// Filter selects messages in List.
type Filter struct {
	To     string // a recipient address (to, cc or bcc)
	Status string
	Tag    string // name or name=value
	// Provider selects one provider's messages (outbox: kept, not delivered).
	Provider string
	// Test selects outbox messages of test keys only (true) or any (false).
	Test bool
}

// ListEmails returns the messages of ns that match f, newest first, a page at a
// time.
func (s *Service) ListEmails(ctx context.Context, ns string, f Filter, limit int, cursor string) ([]*View, string, error) {
	where := map[string]any{"ns": ns}
	if f.To != "" {
		where["rcpt"] = map[string]any{"contains": strings.ToLower(strings.TrimSpace(f.To))}
	}
	if f.Status != "" {
		if _, ok := rank[f.Status]; !ok {
			return nil, "", apierr.New(apierr.Invalid, "status %q: use scheduled, queued, sending, sent, delivered, delivery_delayed, bounced, complained, failed or suppressed", f.Status)
		}
		where["status"] = f.Status
	}
	if f.Tag != "" {
		where["tagKeys"] = map[string]any{"contains": f.Tag}
	}
	if f.Test {
		where["test"] = true
	}
	if f.Provider != "" {
		if !slices.Contains([]string{"outbox", "resend", "sendgrid", "smtp"}, f.Provider) {
			return nil, "", apierr.New(apierr.Invalid, "provider %q: use outbox, resend, sendgrid or smtp", f.Provider)
		}
		where["provider"] = f.Provider
	}
	if limit <= 0 {
		limit = 50
	}
	if limit > 100 {
		return nil, "", apierr.New(apierr.Invalid, "limit %d: use 1-100", limit)
	}
	w, _ := json.Marshal(where)
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeMessage, Where: string(w), Order: "-createdAt", Limit: int32(limit), Cursor: cursor}))
	if err != nil {
		if apierr.Is(err, apierr.Invalid) {
			return nil, "", apierr.New(apierr.Invalid, "cursor is not valid here; use the nextCursor of the previous page with the same filters")
		}
		return nil, "", s.internal(ctx, "list emails", err)
	}
	out := []*View{}
	for _, t := range res.Msg.Items {
		var r record
		if err := json.Unmarshal(t.Data, &r); err != nil {
			continue
		}
		out = append(out, view(t.Id, &r))
	}
	return out, res.Msg.NextCursor, nil
}

func parseTime(s string) (time.Time, error) { return time.Parse(time.RFC3339Nano, s) }
