package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// SignatureHeaders are the request headers Receive reads; the route
// passes only these.
var SignatureHeaders = []string{
	"Stripe-Signature",
	"X-Hub-Signature-256", "X-Hub-Signature", "X-Github-Delivery", "X-Github-Event",
	"Workos-Signature",
	"Svix-Id", "Svix-Timestamp", "Svix-Signature", "Webhook-Id", "Webhook-Timestamp", "Webhook-Signature",
}

// identify reads the provider's event id and type from a verified request.
func identify(provider string, h http.Header, body []byte) (id, typ string, err error) {
	var env struct {
		ID    string `json:"id"`
		Type  string `json:"type"`
		Event string `json:"event"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return "", "", errors.New("body is not a JSON object")
	}
	switch provider {
	case Stripe:
		id, typ = env.ID, env.Type
	case GitHub:
		id, typ = h.Get("X-Github-Delivery"), h.Get("X-Github-Event")
		if id == "" {
			return "", "", errors.New("X-GitHub-Delivery header missing")
		}
		if typ == "" {
			return "", "", errors.New("X-GitHub-Event header missing")
		}
	case WorkOS:
		id, typ = env.ID, env.Event
	case Resend:
		id, _, _ = svixHeaders(h)
		typ = env.Type
	}
	if id == "" {
		return "", "", errors.New("event id missing")
	}
	if typ == "" {
		return "", "", errors.New("event type missing")
	}
	if len(id) > 256 || len(typ) > 128 {
		return "", "", errors.New("event id or type too long")
	}
	return id, typ, nil
}

// Receive verifies, records and enqueues one inbound delivery. The event
// is stored and enqueued before it returns: a nil error means it will be
// processed even if this process dies now. A duplicate of a stored event
// returns its id with Duplicate set and is not processed again.
// Rejections are recorded with their reason and return unauthenticated
// (bad or stale signature) or invalid (malformed request).
func (s *Service) Receive(ctx context.Context, req *connect.Request[webhooksv1.ReceiveRequest]) (*connect.Response[webhooksv1.ReceiveResponse], error) {
	m := req.Msg
	if !knownProvider(m.Provider) {
		return nil, apierr.New(apierr.NotFound, "unknown webhook provider %q; use stripe, github, workos or resend", m.Provider)
	}
	s.receiving.Add(1)
	defer s.receiving.Add(-1)
	if m.BodyTooLarge {
		return nil, s.reject(ctx, m, apierr.TooLarge, "body larger than the provider's limit")
	}
	h := headerOf(m.Headers)
	now := s.Now()
	if _, err := Verify(m.Provider, h, m.Body, s.cfg.Secrets[m.Provider], now); err != nil {
		code := apierr.Unauthenticated
		if errors.Is(err, ErrMissingHeader) || errors.Is(err, ErrMalformedHeader) || errors.Is(err, ErrSHA1Only) {
			code = apierr.Invalid
		}
		if errors.Is(err, ErrNoSecret) {
			code = apierr.Unavailable
		}
		return nil, s.reject(ctx, m, code, err.Error())
	}
	pid, typ, err := identify(m.Provider, h, m.Body)
	if err != nil {
		return nil, s.reject(ctx, m, apierr.Invalid, err.Error())
	}
	id := eventID(m.Provider, pid)
	ev := eventJSON{Provider: m.Provider, Type: typ, EventID: pid, Status: StatusReceived, Verified: true,
		ReceivedAt: now.UnixMilli(), RemoteIP: m.RemoteIp, Size: len(m.Body)}
	exp := now.Add(s.cfg.PayloadRetention)
	ops := []*dbv1.Op{nil}
	if len(m.Body) <= inlineBytes {
		ev.Body, ev.PayloadExpiresAt = m.Body, exp.UnixMilli()
	} else {
		for off := 0; off < len(m.Body); off += partBytes {
			end := min(off+partBytes, len(m.Body))
			ops = append(ops, writeOp(payloadID(id, ev.Parts), typePayload, payloadPart{B64: m.Body[off:end]}, dbv1.Condition_CONDITION_NONE, 0, exp.UnixMicro()))
			ev.Parts++
		}
	}
	// The event is the idempotency key: created only if absent, in the
	// same transaction as its payload.
	ops[0] = writeOp(id, typeEvent, &ev, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0)
	storedOnly, err := s.store(id, ops)
	if apierr.Is(err, apierr.PreconditionFailed) {
		var old eventJSON
		if _, gerr := s.get(ctx, Namespace, id, &old); gerr != nil {
			old.Status = StatusReceived
		}
		s.recordDuplicate(ctx, id, m.RemoteIp, now)
		s.metrics.inbound.WithLabelValues(m.Provider, "duplicate").Inc()
		return connect.NewResponse(&webhooksv1.ReceiveResponse{Id: id, Duplicate: true, Status: old.Status}), nil
	}
	if storedOnly {
		// Stored but not enqueued: the sweeper enqueues it later, and the
		// provider's retry is answered as a duplicate.
		s.log.WarnContext(ctx, "enqueue webhook event; the sweeper will retry", "id", id, "err", err)
		return nil, apierr.New(apierr.Unavailable, "the event was stored but not queued; retry")
	}
	if err != nil {
		s.log.ErrorContext(ctx, "store webhook event", "provider", m.Provider, "id", id, "err", err)
		return nil, apierr.New(apierr.Unavailable, "the event could not be stored; retry")
	}
	s.metrics.inbound.WithLabelValues(m.Provider, "accepted").Inc()
	return connect.NewResponse(&webhooksv1.ReceiveResponse{Id: id, Status: StatusReceived}), nil
}

// dupJSON is a WebhookDuplicate thing's data: a later delivery of a
// stored event.
type dupJSON struct {
	Event      string `json:"event"`
	ReceivedAt int64  `json:"receivedAt"`
	RemoteIP   string `json:"remoteIp,omitempty"`
}

// recordDuplicate records a redelivery of event id, so that every request
// leaves a trace; each is its own thing, so concurrent duplicates do not
// contend.
func (s *Service) recordDuplicate(ctx context.Context, id, remoteIP string, now time.Time) {
	_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: thingsdb.NewPrefixedID("dup_"), Type: typeDup, Data: mustJSON(&dupJSON{Event: id, ReceivedAt: now.UnixMilli(), RemoteIP: remoteIP}),
		Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST, ExpiresAt: now.Add(s.cfg.RejectedRetention).UnixMicro(),
	}}))
	if err != nil {
		s.log.WarnContext(ctx, "record duplicate webhook", "id", id, "err", err)
	}
}

// reject records a refused request with its reason and returns the error
// to answer. The reason is safe to show: it never names a secret.
func (s *Service) reject(ctx context.Context, m *webhooksv1.ReceiveRequest, code apierr.Code, reason string) error {
	s.metrics.inbound.WithLabelValues(m.Provider, "rejected").Inc()
	now := s.Now()
	ev := eventJSON{Provider: m.Provider, Status: StatusRejected, Reason: reason, ReceivedAt: now.UnixMilli(), RemoteIP: m.RemoteIp, Size: len(m.Body)}
	if typ := m.Headers["X-Github-Event"]; m.Provider == GitHub && len(typ) <= 128 {
		ev.Type = typ
	}
	_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: thingsdb.NewPrefixedID("rej_"), Type: typeEvent, Data: mustJSON(&ev),
		Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST, ExpiresAt: now.Add(s.cfg.RejectedRetention).UnixMicro(),
	}}))
	if err != nil {
		s.log.WarnContext(ctx, "record rejected webhook", "provider", m.Provider, "err", err)
	}
	return apierr.New(code, "webhook rejected: %s", reason)
}

// payload reassembles an event's stored body.
func (s *Service) payload(ctx context.Context, id string, ev *eventJSON) ([]byte, error) {
	if ev.Body != nil {
		return ev.Body, nil
	}
	if ev.Parts == 0 {
		return nil, apierr.New(apierr.NotFound, "payload of %s is no longer retained", id)
	}
	out := make([]byte, 0, ev.Size)
	for i := 0; i < ev.Parts; i++ {
		var p payloadPart
		if _, err := s.get(ctx, Namespace, payloadID(id, i), &p); err != nil {
			return nil, err
		}
		out = append(out, p.B64...)
	}
	return out, nil
}

func trimReason(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 500 {
		s = s[:500]
	}
	return s
}
