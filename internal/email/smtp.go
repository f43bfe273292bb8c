package email

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/textproto"
	"time"

	mail "github.com/wneessen/go-mail"
)

// SMTPConfig configures the SMTP provider.
type SMTPConfig struct {
	Host     string
	Port     int // 587 by default (465 with Security "tls")
	Username string
	Password string
	// Security is "starttls" (the default: STARTTLS required), "tls"
	// (implicit TLS, usually port 465) or "none" (plain, for a relay on
	// the same host).
	Security string
	// HELO is the name given in HELO/EHLO; the library's default if empty.
	HELO string
	// TLSConfig overrides the TLS settings (tests trust their own CA).
	TLSConfig *tls.Config
	// Timeout bounds one delivery; 30 s by default.
	Timeout time.Duration
}

// SMTP delivers through an SMTP server with github.com/wneessen/go-mail.
type SMTP struct {
	cfg SMTPConfig
}

// NewSMTP returns an SMTP provider.
func NewSMTP(cfg SMTPConfig) *SMTP { return &SMTP{cfg: cfg} }

// Send delivers m over one SMTP connection.
func (p *SMTP) Send(ctx context.Context, m *Outgoing) (string, error) {
	msg, err := p.message(m)
	if err != nil {
		return "", &ProviderError{Provider: "smtp", Reason: err.Error()}
	}
	c, err := p.client()
	if err != nil {
		return "", &ProviderError{Provider: "smtp", Reason: err.Error()}
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return "", smtpError(err)
	}
	return m.ID + "@dotdo", nil
}

func (p *SMTP) client() (*mail.Client, error) {
	timeout := p.cfg.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	opts := []mail.Option{mail.WithTimeout(timeout)}
	port := p.cfg.Port
	switch p.cfg.Security {
	case "tls":
		if port == 0 {
			port = 465
		}
		opts = append(opts, mail.WithSSL())
	case "none":
		if port == 0 {
			port = 25
		}
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	default:
		if port == 0 {
			port = 587
		}
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
	}
	opts = append(opts, mail.WithPort(port))
	if p.cfg.TLSConfig != nil {
		opts = append(opts, mail.WithTLSConfig(p.cfg.TLSConfig))
	}
	if p.cfg.HELO != "" {
		opts = append(opts, mail.WithHELO(p.cfg.HELO))
	}
	if p.cfg.Username != "" {
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthPlain), mail.WithUsername(p.cfg.Username), mail.WithPassword(p.cfg.Password))
	}
	return mail.NewClient(p.cfg.Host, opts...)
}

// message builds the MIME message: multipart/alternative for text and
// HTML, multipart/mixed around it for attachments, UTF-8 headers encoded.
func (p *SMTP) message(m *Outgoing) (*mail.Msg, error) {
	msg := mail.NewMsg(mail.WithCharset(mail.CharsetUTF8), mail.WithEncoding(mail.EncodingQP))
	if err := msg.From(m.From); err != nil {
		return nil, fmt.Errorf("from %q: %w", m.From, err)
	}
	if len(m.To) > 0 {
		if err := msg.To(m.To...); err != nil {
			return nil, fmt.Errorf("to: %w", err)
		}
	}
	if len(m.Cc) > 0 {
		if err := msg.Cc(m.Cc...); err != nil {
			return nil, fmt.Errorf("cc: %w", err)
		}
	}
	if len(m.Bcc) > 0 {
		if err := msg.Bcc(m.Bcc...); err != nil {
			return nil, fmt.Errorf("bcc: %w", err)
		}
	}
	if len(m.ReplyTo) > 0 {
		if err := msg.SetAddrHeader(mail.HeaderReplyTo, m.ReplyTo...); err != nil {
			return nil, fmt.Errorf("reply-to: %w", err)
		}
	}
	msg.Subject(m.Subject)
	msg.SetMessageIDWithValue(m.ID + "@dotdo")
	msg.SetDate()
	for k, v := range m.Headers {
		msg.SetGenHeader(mail.Header(textproto.CanonicalMIMEHeaderKey(k)), v)
	}
	switch {
	case m.Text != "" && m.HTML != "":
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
		msg.AddAlternativeString(mail.TypeTextHTML, m.HTML)
	case m.HTML != "":
		msg.SetBodyString(mail.TypeTextHTML, m.HTML)
	default:
		msg.SetBodyString(mail.TypeTextPlain, m.Text)
	}
	for _, a := range m.Attachments {
		var opts []mail.FileOption
		if a.ContentType != "" {
			opts = append(opts, mail.WithFileContentType(mail.ContentType(a.ContentType)))
		}
		var err error
		if a.ContentID != "" {
			opts = append(opts, mail.WithFileContentID(a.ContentID))
			err = msg.EmbedReader(a.Filename, bytes.NewReader(a.Content), opts...)
		} else {
			err = msg.AttachReader(a.Filename, bytes.NewReader(a.Content), opts...)
		}
		if err != nil {
			return nil, fmt.Errorf("attachment %s: %w", a.Filename, err)
		}
	}
	return msg, nil
}

// smtpError classifies an SMTP failure: 4xx replies and connection
// problems are temporary, 5xx replies permanent.
func smtpError(err error) *ProviderError {
	e := &ProviderError{Provider: "smtp", Reason: err.Error(), Temporary: true}
	var se *mail.SendError
	if errors.As(err, &se) {
		e.Status = se.ErrorCode()
		e.Temporary = se.IsTemp() || e.Status == 0 || e.Status/100 == 4
		if e.Status/100 == 5 {
			e.Temporary = false
		}
	}
	return e
}
