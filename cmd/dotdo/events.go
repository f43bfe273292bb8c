package main

import (
	"context"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/email"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/schedule"
	"github.com/dotdo/dotdo/internal/thingsdb"
	"github.com/dotdo/dotdo/internal/webhooks"
)

// This file turns writes through the gateway's REST routes, MCP tools and
// dispatch scripts into outbound webhook events (thing.created,
// thing.updated, thing.deleted) when the webhooks service runs in this
// process, or runs in another one this gateway reaches (--webhooks-url).

// thingEvents decorates the db binding of the REST routes, the MCP tools
// and the dispatch scripts: after a
// successful Put, Delete or Batch it emits the events; Emit never blocks
// and drops events of system namespaces itself.
type thingEvents struct {
	thingsdb.API
	ev *webhooks.Events
}

// withThingEvents returns db decorated to emit thing events, or db itself
// when this process has no emitter (no webhooks service here or at
// --webhooks-url).
func withThingEvents(db thingsdb.API, w *wiring) thingsdb.API {
	if w.webhooks.events == nil {
		return db
	}
	return &thingEvents{API: db, ev: w.webhooks.events}
}

type thingEvent struct {
	Ns      string `json:"ns"`
	ID      string `json:"id"`
	Type    string `json:"type,omitempty"`
	Version int64  `json:"version,omitempty"`
}

func (e *thingEvents) thing(t *dbv1.Thing, created bool) {
	if t == nil {
		return
	}
	typ := "thing.updated"
	if created {
		typ = "thing.created"
	}
	e.ev.Emit(t.Ns, typ, thingEvent{Ns: t.Ns, ID: t.Id, Type: t.Type, Version: t.Version})
}

func (e *thingEvents) deleted(ns, id string) {
	e.ev.Emit(ns, "thing.deleted", thingEvent{Ns: ns, ID: id})
}

func (e *thingEvents) Put(ctx context.Context, req *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error) {
	res, err := e.API.Put(ctx, req)
	if err == nil {
		e.thing(res.Msg.Thing, res.Msg.Created)
	}
	return res, err
}

func (e *thingEvents) Delete(ctx context.Context, req *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error) {
	res, err := e.API.Delete(ctx, req)
	if err == nil {
		e.deleted(req.Msg.Ns, req.Msg.Id)
	}
	return res, err
}

func (e *thingEvents) Batch(ctx context.Context, req *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error) {
	res, err := e.API.Batch(ctx, req)
	if err != nil {
		return res, err
	}
	for i, r := range res.Msg.Results {
		switch {
		case r.Thing != nil:
			e.thing(r.Thing, r.Created)
		case r.Deleted && i < len(req.Msg.Ops):
			if d := req.Msg.Ops[i].GetDelete(); d != nil {
				ns := d.Ns
				if ns == "" {
					ns = req.Msg.Ns
				}
				e.deleted(ns, d.Id)
			}
		}
	}
	return res, err
}

// wireEvents points the other services' hooks at the webhooks emitter:
// email status changes, queue dead letters and failed scheduled runs.
func wireEvents(w *wiring, svc *webhooks.Service) {
	ev := svc.Events()
	if w.queue.svc != nil {
		w.queue.svc.OnDeadLetter(func(d queue.DeadLetter) {
			ev.Emit(d.Queue, "queue.dead_lettered", map[string]any{"queue": d.Queue, "messageId": d.MessageID,
				"attempts": d.Attempts, "error": d.Error, "deadLetterQueue": d.DeadLetterQueue})
		})
	}
	if w.email.svc != nil {
		w.email.svc.OnStatus(func(c email.StatusChange) {
			ev.Emit(c.Ns, "email."+c.Status, map[string]any{"id": c.ID, "to": c.To, "status": c.Status})
		})
	}
	if w.schedule.svc != nil {
		w.schedule.svc.OnRunFailed(func(f schedule.RunFailure) {
			ev.Emit(f.Ns, "task.failed", map[string]any{"ns": f.Ns, "task": f.Task, "runId": f.RunID, "status": f.Status, "error": f.Error})
		})
	}
}
