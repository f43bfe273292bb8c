// Package email is dotdo's transactional email service. It accepts emails
// (composed by the caller or rendered from a template), stores them as
// things in the _email namespace, queues them, and hands them to the
// configured provider (Resend, SendGrid, SMTP, or the outbox, which keeps
// them without delivering). It records what became of every message from
// the provider's events, and keeps a suppression list of addresses that
// bounced hard or complained.
package email

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

// Namespace is the system namespace that holds the email service's state.
const Namespace = "_email"

// SendQueue is the queue accepted emails wait in for delivery.
const SendQueue = "_email-send"

// Thing types in Namespace.
const (
	typeMessage     = "EmailMessage"
	typePart        = "EmailPart"
	typeIdempotency = "EmailIdempotency"
	typeSuppression = "EmailSuppression"
	typeProviderRef = "EmailProviderRef"
)

// DB is what the email service needs from the db service.
type DB interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	Delete(context.Context, *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Batch(context.Context, *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error)
}

// Queue is what the email service needs from the queue service.
type Queue interface {
	EnsureQueue(ctx context.Context, st queue.Settings) error
	Send(ctx context.Context, name string, msgs ...queue.Outgoing) ([]string, error)
	Consume(ctx context.Context, name string, h queue.Handler) error
}

// Config configures the email service.
type Config struct {
	// Provider is the default provider: outbox, resend, sendgrid or smtp.
	Provider string
	// From is the sender used when an email names none.
	From     string
	Resend   ResendConfig
	SendGrid SendGridConfig
	SMTP     SMTPConfig
	// TemplateDir, when set, holds templates that override or add to the
	// embedded ones (<name>.subject.txt, <name>.html, <name>.txt).
	TemplateDir string
	// MaxAttempts bounds delivery attempts before a message fails; 8 by
	// default.
	MaxAttempts int
	// Backoff is the first retry delay, doubled per attempt up to 10
	// minutes; 2 s by default.
	Backoff time.Duration
	// Concurrency is how many messages of a queue batch are delivered at
	// once; 8 by default.
	Concurrency int
	// BatchSize is the queue consumer's batch size (1-100); 50 by default.
	BatchSize int
	// HTTPClient is used by the HTTP providers; a client with a 30 s
	// timeout by default.
	HTTPClient *http.Client
	// Now is the clock; time.Now by default.
	Now func() time.Time
	// Metrics, when set, takes the service's Prometheus series.
	Metrics Registerer
}

// Service is the email service.
type Service struct {
	db        DB
	q         Queue
	cfg       Config
	log       *slog.Logger
	tpl       *Templates
	providers map[string]Provider
	now       func() time.Time
	// commits feeds the committers (group commit of sends); nil until
	// Start.
	commits chan *commit
	stopped chan struct{} // closed when the Start context ends
	metrics *emailMetrics
	// onStatus is the OnStatus hook.
	onStatus atomic.Pointer[func(StatusChange)]
}

// New returns the email service over its db and queue bindings. Start it
// with Start, which sets up the send queue and its consumer.
func New(db DB, q Queue, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 8
	}
	if cfg.Backoff <= 0 {
		cfg.Backoff = 2 * time.Second
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.BatchSize <= 0 || cfg.BatchSize > 100 {
		cfg.BatchSize = 50
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.Provider == "" {
		cfg.Provider = "outbox"
	}
	tpl, err := LoadTemplates(cfg.TemplateDir)
	if err != nil {
		return nil, err
	}
	s := &Service{db: db, q: q, cfg: cfg, log: log, tpl: tpl, now: cfg.Now,
		providers: map[string]Provider{"outbox": outbox{}}, metrics: newMetrics(cfg.Metrics)}
	switch cfg.Provider {
	case "outbox":
	case "resend":
		if cfg.Resend.APIKey == "" {
			return nil, errors.New("the resend provider needs an API key (DOTDO_EMAIL_RESEND_API_KEY)")
		}
		s.providers["resend"] = &Resend{cfg: cfg.Resend, client: cfg.HTTPClient}
	case "sendgrid":
		if cfg.SendGrid.APIKey == "" {
			return nil, errors.New("the sendgrid provider needs an API key (DOTDO_EMAIL_SENDGRID_API_KEY)")
		}
		s.providers["sendgrid"] = &SendGrid{cfg: cfg.SendGrid, client: cfg.HTTPClient}
	case "smtp":
		if cfg.SMTP.Host == "" {
			return nil, errors.New("the smtp provider needs a host (--email-smtp-host)")
		}
		s.providers["smtp"] = &SMTP{cfg: cfg.SMTP}
	default:
		return nil, fmt.Errorf("unknown email provider %q: use outbox, resend, sendgrid or smtp", cfg.Provider)
	}
	return s, nil
}

// Start creates the send queue and starts its consumer, which delivers
// until ctx is cancelled.
func (s *Service) Start(ctx context.Context) error {
	if err := s.q.EnsureQueue(ctx, queue.Settings{
		Name:            SendQueue,
		MaxBatchSize:    s.cfg.BatchSize,
		MaxBatchTimeout: 50 * time.Millisecond,
		// The service decides when a message has failed (MaxAttempts) and
		// records it; the queue's own limit is a backstop.
		MaxRetries: 100,
		RetryDelay: s.cfg.Backoff,
		Retention:  7 * 24 * time.Hour,
	}); err != nil {
		return fmt.Errorf("email: ensure queue %s: %w", SendQueue, err)
	}
	if err := s.q.Consume(ctx, SendQueue, s.handle); err != nil {
		return fmt.Errorf("email: consume %s: %w", SendQueue, err)
	}
	s.commits, s.stopped = make(chan *commit, 256), make(chan struct{})
	for range 2 {
		go s.committer(ctx)
	}
	go func() {
		<-ctx.Done()
		close(s.stopped)
	}()
	go s.sweeper(ctx, time.Minute)
	return nil
}

// Templates returns the loaded templates.
func (s *Service) Templates() *Templates { return s.tpl }

// hashHex is the hex SHA-256 of the parts joined by NUL bytes.
func hashHex(parts ...string) string {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// internal logs err and returns the generic error the client sees.
func (s *Service) internal(ctx context.Context, what string, err error) error {
	if e := (*apierr.Error)(nil); errors.As(err, &e) {
		return err
	}
	s.log.ErrorContext(ctx, what, "err", err)
	return apierr.New(apierr.Internal, "internal error")
}
