package email

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Outgoing is an email ready for a provider: rendered, addresses checked.
type Outgoing struct {
	// ID is dotdo's id of the message; providers that take an idempotency
	// key get it, so a retried delivery is sent once.
	ID          string
	From        string
	To, Cc, Bcc []string
	ReplyTo     []string
	Subject     string
	HTML, Text  string
	Headers     map[string]string
	Attachments []Attachment
	Tags        []Tag
}

// Attachment is a file sent with an email.
type Attachment struct {
	Filename    string `json:"filename"`
	Content     []byte `json:"content"`
	ContentType string `json:"contentType,omitempty"`
	ContentID   string `json:"contentId,omitempty"`
}

// Tag is a name/value label on an email.
type Tag struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Provider delivers emails.
type Provider interface {
	// Send delivers m and returns the provider's id for it. Its errors are
	// *ProviderError values saying whether a retry may succeed.
	Send(ctx context.Context, m *Outgoing) (providerID string, err error)
}

// ProviderError is a failed delivery attempt.
type ProviderError struct {
	Provider string
	// Status is the HTTP status or SMTP reply code; 0 for a transport error.
	Status int
	// Reason is the provider's own explanation.
	Reason string
	// Temporary errors (timeouts, 5xx, 429, SMTP 4xx) are retried.
	Temporary bool
	// RetryAfter is the provider's Retry-After, when it gave one.
	RetryAfter time.Duration
}

func (e *ProviderError) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %d %s", e.Provider, e.Status, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Provider, e.Reason)
}

// outbox keeps emails without delivering them: the message stored in
// _email is the copy.
type outbox struct{}

func (outbox) Send(ctx context.Context, m *Outgoing) (string, error) { return "outbox-" + m.ID, nil }

// ResendConfig configures the Resend provider.
type ResendConfig struct {
	APIKey string
	// BaseURL is https://api.resend.com unless set (tests).
	BaseURL string
}

// Resend delivers through Resend's HTTP API (POST /emails).
type Resend struct {
	cfg    ResendConfig
	client *http.Client
}

// NewResend returns a Resend provider.
func NewResend(cfg ResendConfig, client *http.Client) *Resend {
	return &Resend{cfg: cfg, client: client}
}

type resendAttachment struct {
	Filename    string `json:"filename"`
	Content     string `json:"content"`
	ContentType string `json:"content_type,omitempty"`
	ContentID   string `json:"content_id,omitempty"`
}

type resendRequest struct {
	From        string             `json:"from"`
	To          []string           `json:"to"`
	Subject     string             `json:"subject"`
	Cc          []string           `json:"cc,omitempty"`
	Bcc         []string           `json:"bcc,omitempty"`
	ReplyTo     []string           `json:"reply_to,omitempty"`
	HTML        string             `json:"html,omitempty"`
	Text        string             `json:"text,omitempty"`
	Headers     map[string]string  `json:"headers,omitempty"`
	Attachments []resendAttachment `json:"attachments,omitempty"`
	Tags        []Tag              `json:"tags,omitempty"`
}

// Send posts m to Resend.
func (p *Resend) Send(ctx context.Context, m *Outgoing) (string, error) {
	body := resendRequest{From: m.From, To: m.To, Subject: m.Subject, Cc: m.Cc, Bcc: m.Bcc, ReplyTo: m.ReplyTo,
		HTML: m.HTML, Text: m.Text, Headers: m.Headers, Tags: resendTags(m.Tags)}
	for _, a := range m.Attachments {
		body.Attachments = append(body.Attachments, resendAttachment{Filename: a.Filename,
			Content: base64.StdEncoding.EncodeToString(a.Content), ContentType: a.ContentType, ContentID: a.ContentID})
	}
	base := p.cfg.BaseURL
	if base == "" {
		base = "https://api.resend.com"
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+p.cfg.APIKey)
	hdr.Set("Idempotency-Key", m.ID)
	res, b, err := postJSON(ctx, p.client, "resend", strings.TrimSuffix(base, "/")+"/emails", hdr, body)
	if err != nil {
		return "", err
	}
	if res.StatusCode/100 == 2 {
		var out struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(b, &out); err != nil || out.ID == "" {
			return "", &ProviderError{Provider: "resend", Status: res.StatusCode, Reason: "response without an id", Temporary: true}
		}
		return out.ID, nil
	}
	// Resend's error body: {"statusCode":422,"name":"validation_error","message":"..."}.
	var e struct {
		StatusCode int    `json:"statusCode"`
		Name       string `json:"name"`
		Message    string `json:"message"`
	}
	json.Unmarshal(b, &e)
	reason := strings.TrimSpace(strings.Trim(e.Name+": "+e.Message, ": "))
	if reason == "" {
		reason = http.StatusText(res.StatusCode)
	}
	return "", httpError("resend", res, reason)
}

// resendTags keeps tags to Resend's alphabet (ASCII letters, digits, _ and -).
func resendTags(tags []Tag) []Tag {
	if len(tags) == 0 {
		return nil
	}
	clean := func(s string) string {
		return strings.Map(func(r rune) rune {
			if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
				return r
			}
			return '_'
		}, s)
	}
	out := make([]Tag, len(tags))
	for i, t := range tags {
		out[i] = Tag{Name: clean(t.Name), Value: clean(t.Value)}
	}
	return out
}

// SendGridConfig configures the SendGrid provider.
type SendGridConfig struct {
	APIKey string
	// BaseURL is https://api.sendgrid.com unless set (tests).
	BaseURL string
}

// SendGrid delivers through SendGrid's v3 mail/send API.
type SendGrid struct {
	cfg    SendGridConfig
	client *http.Client
}

// NewSendGrid returns a SendGrid provider.
func NewSendGrid(cfg SendGridConfig, client *http.Client) *SendGrid {
	return &SendGrid{cfg: cfg, client: client}
}

type sgAddress struct {
	Email string `json:"email"`
	Name  string `json:"name,omitempty"`
}

type sgPersonalization struct {
	To  []sgAddress `json:"to"`
	Cc  []sgAddress `json:"cc,omitempty"`
	Bcc []sgAddress `json:"bcc,omitempty"`
}

type sgContent struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

type sgAttachment struct {
	Content     string `json:"content"`
	Filename    string `json:"filename"`
	Type        string `json:"type,omitempty"`
	Disposition string `json:"disposition,omitempty"`
	ContentID   string `json:"content_id,omitempty"`
}

type sgRequest struct {
	Personalizations []sgPersonalization `json:"personalizations"`
	From             sgAddress           `json:"from"`
	ReplyTo          *sgAddress          `json:"reply_to,omitempty"`
	ReplyToList      []sgAddress         `json:"reply_to_list,omitempty"`
	Subject          string              `json:"subject"`
	Content          []sgContent         `json:"content"`
	Attachments      []sgAttachment      `json:"attachments,omitempty"`
	Headers          map[string]string   `json:"headers,omitempty"`
	Categories       []string            `json:"categories,omitempty"`
	CustomArgs       map[string]string   `json:"custom_args,omitempty"`
}

func sgAddr(s string) sgAddress {
	a, err := parseAddress(s)
	if err != nil {
		return sgAddress{Email: s}
	}
	return sgAddress{Email: a.Address, Name: a.Name}
}

func sgAddrs(ss []string) []sgAddress {
	var out []sgAddress
	for _, s := range ss {
		out = append(out, sgAddr(s))
	}
	return out
}

// Send posts m to SendGrid.
func (p *SendGrid) Send(ctx context.Context, m *Outgoing) (string, error) {
	body := sgRequest{
		Personalizations: []sgPersonalization{{To: sgAddrs(m.To), Cc: sgAddrs(m.Cc), Bcc: sgAddrs(m.Bcc)}},
		From:             sgAddr(m.From),
		Subject:          m.Subject,
		Headers:          m.Headers,
		CustomArgs:       map[string]string{"dotdo_email_id": m.ID},
	}
	switch len(m.ReplyTo) {
	case 0:
	case 1:
		a := sgAddr(m.ReplyTo[0])
		body.ReplyTo = &a
	default:
		body.ReplyToList = sgAddrs(m.ReplyTo)
	}
	// SendGrid wants text/plain before text/html.
	if m.Text != "" {
		body.Content = append(body.Content, sgContent{Type: "text/plain", Value: m.Text})
	}
	if m.HTML != "" {
		body.Content = append(body.Content, sgContent{Type: "text/html", Value: m.HTML})
	}
	for _, a := range m.Attachments {
		at := sgAttachment{Content: base64.StdEncoding.EncodeToString(a.Content), Filename: a.Filename, Type: a.ContentType, Disposition: "attachment"}
		if a.ContentID != "" {
			at.Disposition, at.ContentID = "inline", a.ContentID
		}
		body.Attachments = append(body.Attachments, at)
	}
	for _, t := range m.Tags {
		body.Categories = append(body.Categories, t.Name+":"+t.Value)
	}
	base := p.cfg.BaseURL
	if base == "" {
		base = "https://api.sendgrid.com"
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Bearer "+p.cfg.APIKey)
	res, b, err := postJSON(ctx, p.client, "sendgrid", strings.TrimSuffix(base, "/")+"/v3/mail/send", hdr, body)
	if err != nil {
		return "", err
	}
	if res.StatusCode/100 == 2 {
		id := res.Header.Get("X-Message-Id")
		if id == "" {
			id = "sendgrid-" + m.ID
		}
		return id, nil
	}
	// SendGrid's error body: {"errors":[{"message":"...","field":"...","help":"..."}]}.
	var e struct {
		Errors []struct {
			Message string  `json:"message"`
			Field   *string `json:"field"`
		} `json:"errors"`
	}
	json.Unmarshal(b, &e)
	var parts []string
	for _, x := range e.Errors {
		if x.Field != nil && *x.Field != "" {
			parts = append(parts, *x.Field+": "+x.Message)
		} else {
			parts = append(parts, x.Message)
		}
	}
	reason := strings.Join(parts, "; ")
	if reason == "" {
		reason = http.StatusText(res.StatusCode)
	}
	return "", httpError("sendgrid", res, reason)
}

// postJSON posts body as JSON and reads the answer (up to 64 KiB). A
// transport failure or timeout is a temporary ProviderError.
func postJSON(ctx context.Context, c *http.Client, provider, url string, hdr http.Header, body any) (*http.Response, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, nil, &ProviderError{Provider: provider, Reason: "encode request: " + err.Error()}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, nil, &ProviderError{Provider: provider, Reason: "bad provider URL"}
	}
	req.Header = hdr
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "dotdo-email")
	res, err := c.Do(req)
	if err != nil {
		reason := "request failed"
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			reason = "request timed out"
		}
		return nil, nil, &ProviderError{Provider: provider, Reason: reason, Temporary: true}
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	return res, out, nil
}

// httpError classifies a failed HTTP answer: 429 and 5xx are temporary,
// other 4xx permanent.
func httpError(provider string, res *http.Response, reason string) *ProviderError {
	e := &ProviderError{Provider: provider, Status: res.StatusCode, Reason: reason}
	if res.StatusCode == http.StatusTooManyRequests || res.StatusCode >= 500 || res.StatusCode == http.StatusRequestTimeout {
		e.Temporary = true
		e.RetryAfter = retryAfter(res.Header.Get("Retry-After"), time.Now())
	}
	return e
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return min(time.Duration(n)*time.Second, time.Hour)
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, time.Hour)
		}
	}
	return 0
}
