package webhooks

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"github.com/prometheus/client_golang/prometheus"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	webhooksv1 "github.com/dotdo/dotdo/internal/gen/dotdo/webhooks/v1"
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
// through the Emit RPC. When the buffer is full the event is dropped and
// counted; when no enabled endpoint exists Emit returns at once.
type Events struct {
	emit    Emitter
	db      Lister
	log     *slog.Logger
	onDrop  func()
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

// Lister is the part of the db binding the emitter reads endpoints with.
type Lister interface {
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
}

// Emitter is the webhooks service's Emit RPC: the service itself or a
// Connect client to it.
type Emitter interface {
	Emit(context.Context, *connect.Request[webhooksv1.EmitRequest]) (*connect.Response[webhooksv1.EmitResponse], error)
}

func newEvents(s *Service, size int) *Events {
	return newEventsVia(s, s.db, s.log, s.metrics.eventsDropped, size)
}

// NewRemoteEvents returns an emitter for a process without the webhooks
// service (a split-mode gateway): events go to the webhooks service in
// another process through its Emit RPC, on the same terms as the
// service's own emitter (never blocking, EventsBuffer events at most,
// nothing sent while no enabled endpoint exists, which it reads through
// db). dropped (NewEventsDropped) counts the events dropped. Start runs
// it.
func NewRemoteEvents(db Lister, emit Emitter, log *slog.Logger, dropped prometheus.Counter) *Events {
	return newEventsVia(emit, db, log, dropped, EventsBuffer)
}

func newEventsVia(emit Emitter, db Lister, log *slog.Logger, dropped prometheus.Counter, size int) *Events {
	return &Events{emit: emit, db: db, log: log, onDrop: dropped.Inc, ch: make(chan emitted, size)}
}

// Start publishes the emitted events until ctx ends.
func (e *Events) Start(ctx context.Context) { go e.run(ctx) }

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
		e.onDrop()
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
			if err := e.publish(c, ev); err != nil && ctx.Err() == nil {
				e.log.Warn("webhooks: emit event failed", "ns", ev.ns, "type", ev.typ, "err", err)
			}
			cancel()
		}
	}
}

// publish hands one event to Emit, which stores and queues its
// deliveries.
func (e *Events) publish(ctx context.Context, ev emitted) error {
	b, err := json.Marshal(ev.data)
	if err != nil {
		return err
	}
	_, err = e.emit.Emit(ctx, connect.NewRequest(&webhooksv1.EmitRequest{Namespace: ev.ns, Type: ev.typ, Data: b}))
	return err
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
	res, err := e.db.List(c, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEndpoint, Limit: 1,
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
