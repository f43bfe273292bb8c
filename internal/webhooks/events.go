package webhooks

import (
	"context"
	"encoding/json"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

var statuses = map[string]bool{StatusReceived: true, StatusProcessing: true, StatusProcessed: true, StatusFailed: true, StatusIgnored: true, StatusRejected: true}

func eventOut(t *dbv1.Thing, ev *eventJSON) *webhooksv1.Event {
	return &webhooksv1.Event{
		Id: t.Id, Provider: ev.Provider, Type: ev.Type, EventId: ev.EventID, Status: ev.Status, Verified: ev.Verified,
		Reason: ev.Reason, Attempts: int32(ev.Attempts), Error: ev.Error, ReceivedAt: ev.ReceivedAt, ProcessedAt: ev.ProcessedAt,
		RemoteIp: ev.RemoteIP, UpdatedAt: t.UpdatedAt / 1000,
	}
}

// ListEvents lists recorded requests, newest first, filtered by provider,
// type and status.
func (s *Service) ListEvents(ctx context.Context, req *connect.Request[webhooksv1.ListEventsRequest]) (*connect.Response[webhooksv1.ListEventsResponse], error) {
	m := req.Msg
	where := map[string]string{}
	if m.Provider != "" {
		if !knownProvider(m.Provider) {
			return nil, apierr.New(apierr.Invalid, "provider must be stripe, github, workos or resend")
		}
		where["provider"] = m.Provider
	}
	if m.Type != "" {
		if len(m.Type) > 128 {
			return nil, apierr.New(apierr.Invalid, "type is at most 128 characters")
		}
		where["type"] = m.Type
	}
	if m.Status != "" {
		if !statuses[m.Status] {
			return nil, apierr.New(apierr.Invalid, "status must be received, processing, processed, failed, ignored or rejected")
		}
		where["status"] = m.Status
	}
	if m.Limit < 0 || m.Limit > 1000 {
		return nil, apierr.New(apierr.Invalid, "limit must be 1 to 1000")
	}
	lr := &dbv1.ListRequest{Ns: Namespace, Type: typeEvent, Order: "-createdAt", Limit: m.Limit, Cursor: m.Cursor}
	if len(where) > 0 {
		lr.Where = string(mustJSON(where))
	}
	res, err := s.db.List(ctx, connect.NewRequest(lr))
	if err != nil {
		return nil, s.internal(ctx, "list webhook events", err)
	}
	out := &webhooksv1.ListEventsResponse{Events: []*webhooksv1.Event{}, NextCursor: res.Msg.NextCursor}
	for _, t := range res.Msg.Items {
		var ev eventJSON
		if err := json.Unmarshal(t.Data, &ev); err != nil {
			return nil, s.internal(ctx, "list webhook events", err)
		}
		out.Events = append(out.Events, eventOut(t, &ev))
	}
	return connect.NewResponse(out), nil
}

func (s *Service) event(ctx context.Context, id string) (*dbv1.Thing, *eventJSON, error) {
	var ev eventJSON
	t, err := s.get(ctx, Namespace, id, &ev)
	if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) || (err == nil && t.Type != typeEvent) {
		return nil, nil, apierr.New(apierr.NotFound, "webhook event %s not found", id)
	}
	if err != nil {
		return nil, nil, err
	}
	return t, &ev, nil
}

// GetEvent returns one recorded request with its payload while retained.
func (s *Service) GetEvent(ctx context.Context, req *connect.Request[webhooksv1.GetEventRequest]) (*connect.Response[webhooksv1.EventResponse], error) {
	t, ev, err := s.event(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "get webhook event", err)
	}
	out := eventOut(t, ev)
	if body, err := s.payload(ctx, t.Id, ev); err == nil {
		out.Payload = body
	}
	dups, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeDup, Limit: 1000,
		Where: string(mustJSON(map[string]string{"event": t.Id}))}))
	if err != nil {
		return nil, s.internal(ctx, "get webhook event", err)
	}
	out.Duplicates = int32(len(dups.Msg.Items))
	return connect.NewResponse(&webhooksv1.EventResponse{Event: out}), nil
}

// ReplayEvent processes a verified event again: it goes back to received
// and into the queue. Rejected events cannot be replayed (they were never
// proven genuine), nor events whose payload has expired.
func (s *Service) ReplayEvent(ctx context.Context, req *connect.Request[webhooksv1.ReplayEventRequest]) (*connect.Response[webhooksv1.EventResponse], error) {
	t, ev, err := s.event(ctx, req.Msg.Id)
	if err != nil {
		return nil, s.internal(ctx, "replay webhook event", err)
	}
	if !ev.Verified {
		return nil, apierr.New(apierr.PreconditionFailed, "webhook event %s was rejected (%s) and cannot be replayed", t.Id, ev.Reason)
	}
	if ev.Status == StatusProcessing {
		return nil, apierr.New(apierr.Conflict, "webhook event %s is being processed; replay it after", t.Id)
	}
	if _, err := s.payload(ctx, t.Id, ev); err != nil {
		return nil, apierr.New(apierr.PreconditionFailed, "the payload of webhook event %s is no longer retained", t.Id)
	}
	ev.Status, ev.Error, ev.Attempts, ev.ProcessedAt = StatusReceived, "", 0, 0
	ev.Replays++
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: t.Id, Type: typeEvent, Data: mustJSON(ev), IfVersion: t.Version,
	}}))
	if apierr.Is(err, apierr.PreconditionFailed) {
		return nil, apierr.New(apierr.Conflict, "webhook event %s changed meanwhile; retry", t.Id)
	}
	if err != nil {
		return nil, s.internal(ctx, "replay webhook event", err)
	}
	if _, err := s.queue.Send(ctx, InboundQueue, queue.Outgoing{Body: []byte(t.Id), ContentType: "text"}); err != nil {
		return nil, s.internal(ctx, "replay webhook event", err)
	}
	return connect.NewResponse(&webhooksv1.EventResponse{Event: eventOut(res.Msg.Thing, ev)}), nil
}
