package webhooks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1/webhooksv1connect"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// Namespace is the system namespace of the webhooks service's state.
const Namespace = "_webhooks"

// Queues the service uses.
const (
	InboundQueue  = "_webhooks-inbound"
	OutboundQueue = "_webhooks-outbound"
)

// Thing types in Namespace.
const (
	typeEvent    = "WebhookEvent"
	typePayload  = "WebhookPayload"
	typeEndpoint = "WebhookEndpoint"
	typeDelivery = "WebhookDelivery"
	typeDup      = "WebhookDuplicate"
)

// Event statuses.
const (
	StatusReceived   = "received"
	StatusProcessing = "processing"
	StatusProcessed  = "processed"
	StatusFailed     = "failed"
	StatusIgnored    = "ignored"
	StatusRejected   = "rejected"
)

// DB is what the webhooks service needs from the db service.
type DB interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	Delete(context.Context, *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Batch(context.Context, *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error)
	PutRelationship(context.Context, *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error)
	DeleteRelationship(context.Context, *connect.Request[dbv1.DeleteRelationshipRequest]) (*connect.Response[dbv1.DeleteRelationshipResponse], error)
}

// Queue is what the webhooks service needs from the queue service.
type Queue interface {
	EnsureQueue(ctx context.Context, st queue.Settings) error
	Send(ctx context.Context, name string, msgs ...queue.Outgoing) ([]string, error)
	Consume(ctx context.Context, name string, h queue.Handler) error
}

// Config configures the webhooks service.
type Config struct {
	// Secrets are each provider's signing secrets, current first; any
	// one verifies (rotation). A provider without secrets refuses all.
	Secrets map[string][]string
	// Namespace is where Stripe, GitHub and directory-group things are
	// written ("default").
	Namespace string
	// PayloadRetention is how long verified payloads are kept (30 days).
	PayloadRetention time.Duration
	// RejectedRetention is how long rejected requests are kept (7 days).
	RejectedRetention time.Duration
	// MaxAttempts is how often an event is tried before it is failed (5).
	MaxAttempts int
	// RetryDelay is the first retry's delay, doubled per attempt (1 s).
	RetryDelay time.Duration
	// Outbound configures outbound delivery.
	Outbound OutboundConfig
}

// Service is the webhooks service.
type Service struct {
	cfg   Config
	db    DB
	queue Queue
	users Users
	email Email
	log   *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// handlers by provider and event type.
	handlers map[string]map[string]handler
	// outbound delivery
	out     *outbound
	metrics *metrics
	// ev emits dotdo's own events (emitter.go).
	ev *Events

	// receiving counts deliveries being verified and stored.
	receiving atomic.Int64
	// group commit of inbound deliveries (commit.go)
	startOnce       sync.Once
	commits         chan *commitReq
	groups, grouped atomic.Int64 // group commits and the deliveries in them
}

var _ webhooksv1connect.WebhooksServiceHandler = (*Service)(nil)

// New returns the service. users and email may be nil: WorkOS directory
// events and Resend events then fail with unavailable.
func New(db DB, q Queue, users Users, email Email, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Namespace == "" {
		cfg.Namespace = "default"
	}
	if !thingsdb.ValidNamespace(cfg.Namespace) || thingsdb.IsSystemNamespace(cfg.Namespace) {
		return nil, fmt.Errorf("webhooks namespace %q: want a tenant namespace such as default", cfg.Namespace)
	}
	if cfg.PayloadRetention <= 0 {
		cfg.PayloadRetention = 30 * 24 * time.Hour
	}
	if cfg.RejectedRetention <= 0 {
		cfg.RejectedRetention = 7 * 24 * time.Hour
	}
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 5
	}
	if cfg.RetryDelay <= 0 {
		cfg.RetryDelay = time.Second
	}
	for p, ss := range cfg.Secrets {
		if !knownProvider(p) {
			return nil, fmt.Errorf("webhook secrets for unknown provider %q (want stripe, github, workos or resend)", p)
		}
		if p == Resend {
			for _, s := range ss {
				if _, err := SvixKey(s); err != nil {
					return nil, fmt.Errorf("resend webhook secret: %w", err)
				}
			}
		}
	}
	s := &Service{cfg: cfg, db: db, queue: q, users: users, email: email, log: log.With("service", "webhooks"), Now: time.Now, metrics: newMetrics()}
	s.handlers = s.routes()
	s.out = newOutbound(s, cfg.Outbound)
	s.ev = newEvents(s, EventsBuffer)
	return s, nil
}

func knownProvider(p string) bool {
	for _, q := range Providers {
		if p == q {
			return true
		}
	}
	return false
}

// Start creates the service's queues and starts its consumers and the
// sweeper that re-enqueues events a crash left behind. Workers stop when
// ctx is cancelled.
func (s *Service) Start(ctx context.Context) error {
	in := queue.Defaults(InboundQueue)
	in.MaxBatchSize = 20
	in.MaxBatchTimeout = 20 * time.Millisecond
	in.MaxRetries = s.cfg.MaxAttempts + 2
	in.RetryDelay = s.cfg.RetryDelay
	if err := s.queue.EnsureQueue(ctx, in); err != nil {
		return fmt.Errorf("ensure queue %s: %w", InboundQueue, err)
	}
	outq := queue.Defaults(OutboundQueue)
	outq.MaxBatchSize = 10
	outq.MaxBatchTimeout = 20 * time.Millisecond
	outq.MaxRetries = 100
	outq.Retention = 14 * 24 * time.Hour
	if err := s.queue.EnsureQueue(ctx, outq); err != nil {
		return fmt.Errorf("ensure queue %s: %w", OutboundQueue, err)
	}
	if err := s.queue.Consume(ctx, InboundQueue, s.consumeInbound); err != nil {
		return fmt.Errorf("consume %s: %w", InboundQueue, err)
	}
	if err := s.queue.Consume(ctx, OutboundQueue, s.out.consume); err != nil {
		return fmt.Errorf("consume %s: %w", OutboundQueue, err)
	}
	go s.sweep(ctx)
	s.ev.Start(ctx)
	return nil
}

// Health reports whether the service's store answers.
func (s *Service) Health(ctx context.Context, _ *connect.Request[webhooksv1.HealthRequest]) (*connect.Response[webhooksv1.HealthResponse], error) {
	_, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEvent, Limit: 1}))
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "store unavailable")
	}
	return connect.NewResponse(&webhooksv1.HealthResponse{Status: "ok"}), nil
}

// eventJSON is a WebhookEvent thing's data.
type eventJSON struct {
	Provider    string `json:"provider"`
	Type        string `json:"type"`
	EventID     string `json:"eventId,omitempty"`
	Status      string `json:"status"`
	Verified    bool   `json:"verified"`
	Reason      string `json:"reason,omitempty"`
	Attempts    int    `json:"attempts"`
	Error       string `json:"error,omitempty"`
	ReceivedAt  int64  `json:"receivedAt"`
	ProcessedAt int64  `json:"processedAt,omitempty"`
	RemoteIP    string `json:"remoteIp,omitempty"`
	// Body is the payload of a small event, kept in the record itself
	// until PayloadExpiresAt (Unix ms), when the sweeper removes it.
	Body             []byte `json:"body,omitempty"`
	PayloadExpiresAt int64  `json:"payloadExpiresAt,omitempty"`
	// Parts is how many WebhookPayload things hold a large body; they
	// expire by themselves.
	Parts int `json:"parts,omitempty"`
	// Size is the body's length in bytes.
	Size int `json:"size,omitempty"`
	// Replays counts operator replays.
	Replays int `json:"replays,omitempty"`
}

// payloadPart is a WebhookPayload thing's data: a slice of the body.
type payloadPart struct {
	B64 []byte `json:"b64"`
}

// partBytes is the raw size of one payload part: base64 keeps it under the
// db's 256 KiB data limit. Bodies up to inlineBytes live in the event
// record (one row per delivery, the common case).
const (
	partBytes   = 180 << 10
	inlineBytes = 64 << 10
)

// eventID returns the record id of a provider's event: deterministic, so
// a create-only write makes delivery idempotent.
func eventID(provider, id string) string {
	if len(id) <= 200 && thingsdb.ValidID(id) {
		return provider + ":" + id
	}
	sum := sha256.Sum256([]byte(id))
	return provider + ":h:" + hex.EncodeToString(sum[:])
}

func payloadID(id string, part int) string { return fmt.Sprintf("payload:%d:%s", part, id) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func writeOp(id, typ string, data any, cond dbv1.Condition, ifVersion, expiresAt int64) *dbv1.Op {
	return &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: id, Type: typ, Data: mustJSON(data), Condition: cond, IfVersion: ifVersion, ExpiresAt: expiresAt}}}
}

func (s *Service) batch(ctx context.Context, ns string, ops ...*dbv1.Op) error {
	_, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: ns, Ops: ops}))
	return err
}

// get reads a thing of Namespace into v.
func (s *Service) get(ctx context.Context, ns, id string, v any) (*dbv1.Thing, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: id}))
	if err != nil {
		return nil, err
	}
	if v != nil {
		if err := json.Unmarshal(res.Msg.Thing.Data, v); err != nil {
			return nil, fmt.Errorf("decode %s/%s: %w", ns, id, err)
		}
	}
	return res.Msg.Thing, nil
}

func (s *Service) micros() int64 { return s.Now().UnixMicro() }

// internal hides an unexpected error from the caller and logs it.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Code != apierr.Internal {
		return err
	}
	s.log.ErrorContext(ctx, op+" failed", "err", err)
	return apierr.New(apierr.Internal, "internal error")
}

// headerOf turns a header map back into an http.Header.
func headerOf(m map[string]string) http.Header {
	h := make(http.Header, len(m))
	for k, v := range m {
		h[http.CanonicalHeaderKey(k)] = []string{v}
	}
	return h
}
