package webhooks

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// EventsBuffer is how many events wait for Publish before new ones are
// dropped (and counted).
const EventsBuffer = 4096

// endpointsTTL is how long the emitter trusts its "any enabled endpoint?"
// answer; creating or updating an endpoint here resets it at once.
const endpointsTTL = 3 * time.Second

// Events emits dotdo's own events (thing.created, email.delivered, ...) to
// outbound endpoints without ever blocking the caller: Emit queues the
// event in a bounded buffer that one goroutine (started by Start) drains
// through Publish. When the buffer is full the event is dropped and
// counted; when no enabled endpoint exists Emit returns at once.
type Events struct {
	s       *Service
	ch      chan emitted
	dropped atomic.Int64
	// noneUntil and someUntil (Unix ns) cache the answer to "is there any
	// enabled endpoint?"; both 0 when unknown.
	noneUntil, someUntil atomic.Int64
}

type emitted struct {
	ns, typ string
	data    any
}

func newEvents(s *Service, size int) *Events {
	return &Events{s: s, ch: make(chan emitted, size)}
}

// Events returns the service's event emitter.
func (s *Service) Events() *Events { return s.ev }

// Emit queues an event of type typ in namespace ns with data (a value
// that marshals to a JSON object). It never blocks. Events of system
// namespaces (starting with _) are not emitted.
func (e *Events) Emit(ns, typ string, data any) {
	if e == nil || ns == "" || strings.HasPrefix(ns, "_") {
		return
	}
	if time.Now().UnixNano() < e.noneUntil.Load() {
		return
	}
	select {
	case e.ch <- emitted{ns, typ, data}:
	default:
		e.dropped.Add(1)
		e.s.metrics.eventsDropped.Inc()
	}
}

// Dropped is how many events were dropped because the buffer was full.
func (e *Events) Dropped() int64 { return e.dropped.Load() }

// invalidate forgets the cached endpoint answer (an endpoint changed).
func (e *Events) invalidate() {
	e.noneUntil.Store(0)
	e.someUntil.Store(0)
}

// run publishes queued events until ctx ends.
func (e *Events) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-e.ch:
			if !e.anyEndpoint(ctx) {
				continue
			}
			c, cancel := context.WithTimeout(ctx, 10*time.Second)
			if _, err := e.s.Publish(c, ev.ns, ev.typ, ev.data); err != nil && ctx.Err() == nil {
				e.s.log.Warn("webhooks: emit event failed", "ns", ev.ns, "type", ev.typ, "err", err)
			}
			cancel()
		}
	}
}

// anyEndpoint reports whether an enabled endpoint exists, from the cache
// or the db.
func (e *Events) anyEndpoint(ctx context.Context) bool {
	now := time.Now().UnixNano()
	if now < e.someUntil.Load() {
		return true
	}
	if now < e.noneUntil.Load() {
		return false
	}
	c, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	res, err := e.s.db.List(c, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEndpoint, Limit: 1,
		Where: string(mustJSON(map[string]any{"disabled": false}))}))
	if err != nil {
		return true // let Publish try and report
	}
	until := time.Now().Add(endpointsTTL).UnixNano()
	if len(res.Msg.Items) == 0 {
		e.noneUntil.Store(until)
		return false
	}
	e.someUntil.Store(until)
	return true
}
