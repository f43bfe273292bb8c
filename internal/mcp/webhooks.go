package mcp

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
)

// Webhooks is what the webhook tools need from the webhooks service: the
// service itself, its Connect client, or Remote.
type Webhooks interface {
	ListEvents(context.Context, *connect.Request[webhooksv1.ListEventsRequest]) (*connect.Response[webhooksv1.ListEventsResponse], error)
	ReplayEvent(context.Context, *connect.Request[webhooksv1.ReplayEventRequest]) (*connect.Response[webhooksv1.EventResponse], error)
}

// webhooksNS is the system namespace whose permissions the webhook tools
// check, as the REST routes do.
const webhooksNS = "_webhooks"

// WebhookEvent is one inbound webhook as recorded (without its payload).
type WebhookEvent struct {
	ID          string `json:"id"`
	Provider    string `json:"provider" jsonschema:"stripe, github, workos or resend"`
	Type        string `json:"type" jsonschema:"the provider's event type"`
	EventID     string `json:"eventId,omitempty" jsonschema:"the provider's id of the event"`
	Status      string `json:"status" jsonschema:"received, processing, processed, failed, ignored or rejected"`
	Verified    bool   `json:"verified" jsonschema:"the signature checked out"`
	Reason      string `json:"reason,omitempty" jsonschema:"why a request was rejected"`
	Attempts    int32  `json:"attempts"`
	Error       string `json:"error,omitempty" jsonschema:"the last processing error"`
	ReceivedAt  string `json:"receivedAt"`
	ProcessedAt string `json:"processedAt,omitempty"`
}

func millis(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format(time.RFC3339Nano)
}

func webhookEventOut(e *webhooksv1.Event) WebhookEvent {
	return WebhookEvent{ID: e.Id, Provider: e.Provider, Type: e.Type, EventID: e.EventId, Status: e.Status, Verified: e.Verified, Reason: e.Reason,
		Attempts: e.Attempts, Error: e.Error, ReceivedAt: millis(e.ReceivedAt), ProcessedAt: millis(e.ProcessedAt)}
}

// WebhookEventsIn are webhook_events' arguments.
type WebhookEventsIn struct {
	Provider string `json:"provider,omitempty" jsonschema:"only this provider's events"`
	Type     string `json:"type,omitempty" jsonschema:"only events of this type, such as invoice.paid"`
	Status   string `json:"status,omitempty" jsonschema:"only events in this status"`
	Limit    int    `json:"limit,omitempty" jsonschema:"events per page, 1-200 (default 50)"`
	Cursor   string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page, with the same other arguments"`
}

// WebhookEventsOut is a page of events, newest first.
type WebhookEventsOut struct {
	Items      []WebhookEvent `json:"items"`
	NextCursor string         `json:"nextCursor,omitempty" jsonschema:"present when more events follow: pass it back as cursor"`
}

// WebhookReplayIn are webhook_replay's arguments.
type WebhookReplayIn struct {
	ID string `json:"id" jsonschema:"the event's id (from webhook_events)"`
}

// WebhookEventOut is one event.
type WebhookEventOut struct {
	Event WebhookEvent `json:"event"`
}

func (s *Server) addWebhookTools() {
	wh := s.opts.Webhooks
	addTool(s, &sdk.Tool{Name: "webhook_events", Annotations: readOnly("List inbound webhooks"),
		Description: "List the inbound webhooks dotdo received (Stripe, GitHub, WorkOS, Resend), newest first, rejected ones included with the reason: the audit trail. " +
			"Paginated: follow nextCursor. Needs webhooks:read on _webhooks."},
		func(c call, in WebhookEventsIn) (WebhookEventsOut, error) {
			if err := s.need(c.ctx, c.id, webhooksNS, "webhooks:read"); err != nil {
				return WebhookEventsOut{}, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return WebhookEventsOut{}, err
			}
			return fit(s, n, func(n int) (WebhookEventsOut, int, error) {
				res, err := wh.ListEvents(c.ctx, connect.NewRequest(&webhooksv1.ListEventsRequest{Provider: in.Provider, Type: in.Type, Status: in.Status, Limit: int32(n), Cursor: in.Cursor}))
				if err != nil {
					return WebhookEventsOut{}, 0, err
				}
				out := WebhookEventsOut{Items: make([]WebhookEvent, len(res.Msg.Events)), NextCursor: res.Msg.NextCursor}
				for i, e := range res.Msg.Events {
					out.Items[i] = webhookEventOut(e)
				}
				return out, len(out.Items), nil
			})
		}, limitProp, enumProp("provider", "stripe", "github", "workos", "resend"),
		enumProp("status", "received", "processing", "processed", "failed", "ignored", "rejected"))

	addTool(s, &sdk.Tool{Name: "webhook_replay", Annotations: writes("Replay a webhook", false, false),
		Description: "Process a verified inbound webhook again (its handlers run once more), for example after fixing what made it fail. " +
			"Rejected events and events whose payload has expired cannot be replayed. Needs webhooks:manage on _webhooks."},
		func(c call, in WebhookReplayIn) (WebhookEventOut, error) {
			if err := s.need(c.ctx, c.id, webhooksNS, "webhooks:manage"); err != nil {
				return WebhookEventOut{}, err
			}
			res, err := wh.ReplayEvent(c.ctx, connect.NewRequest(&webhooksv1.ReplayEventRequest{Id: in.ID}))
			if err != nil {
				return WebhookEventOut{}, err
			}
			return WebhookEventOut{Event: webhookEventOut(res.Msg.Event)}, nil
		})
}

// RemoteWebhooks is the webhooks binding of Remote, over /v1/webhooks.
type RemoteWebhooks struct{ r *Remote }

var _ Webhooks = (*RemoteWebhooks)(nil)

// Webhooks returns the webhooks binding of r.
func (r *Remote) Webhooks() *RemoteWebhooks { return &RemoteWebhooks{r: r} }

type restWebhookEvent struct {
	ID          string `json:"id"`
	Provider    string `json:"provider"`
	Type        string `json:"type"`
	EventID     string `json:"eventId"`
	Status      string `json:"status"`
	Verified    bool   `json:"verified"`
	Reason      string `json:"reason"`
	Attempts    int32  `json:"attempts"`
	Error       string `json:"error"`
	ReceivedAt  string `json:"receivedAt"`
	ProcessedAt string `json:"processedAt"`
}

func parseMillis(s string) int64 {
	if s == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0
	}
	return t.UnixMilli()
}

func (e *restWebhookEvent) proto() *webhooksv1.Event {
	return &webhooksv1.Event{Id: e.ID, Provider: e.Provider, Type: e.Type, EventId: e.EventID, Status: e.Status, Verified: e.Verified, Reason: e.Reason,
		Attempts: e.Attempts, Error: e.Error, ReceivedAt: parseMillis(e.ReceivedAt), ProcessedAt: parseMillis(e.ProcessedAt)}
}

// ListEvents implements Webhooks over GET /v1/webhooks/events.
func (w *RemoteWebhooks) ListEvents(ctx context.Context, req *connect.Request[webhooksv1.ListEventsRequest]) (*connect.Response[webhooksv1.ListEventsResponse], error) {
	m := req.Msg
	q := url.Values{}
	for k, v := range map[string]string{"provider": m.Provider, "type": m.Type, "status": m.Status, "cursor": m.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if m.Limit > 0 {
		q.Set("limit", strconv.Itoa(int(m.Limit)))
	}
	var out struct {
		Items      []restWebhookEvent `json:"items"`
		NextCursor string             `json:"nextCursor"`
	}
	if _, err := w.r.do(ctx, http.MethodGet, "/v1/webhooks/events?"+q.Encode(), nil, nil, &out); err != nil {
		return nil, err
	}
	res := &webhooksv1.ListEventsResponse{NextCursor: out.NextCursor}
	for i := range out.Items {
		res.Events = append(res.Events, out.Items[i].proto())
	}
	return connect.NewResponse(res), nil
}

// ReplayEvent implements Webhooks over POST /v1/webhooks/events/{id}/replay.
func (w *RemoteWebhooks) ReplayEvent(ctx context.Context, req *connect.Request[webhooksv1.ReplayEventRequest]) (*connect.Response[webhooksv1.EventResponse], error) {
	var out restWebhookEvent
	if _, err := w.r.do(ctx, http.MethodPost, "/v1/webhooks/events/"+url.PathEscape(req.Msg.Id)+"/replay", nil, nil, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&webhooksv1.EventResponse{Event: out.proto()}), nil
}
