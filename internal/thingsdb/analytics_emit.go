package thingsdb

import (
	"context"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// RequestEvent is the event name of the gateway's per-request events, in
// AnalyticsNamespace; their rollups group by route.
const RequestEvent = "request"

// Request-event pipeline sizes.
const (
	requestEventBuffer = 16384
	requestEventBatch  = 1000
	requestEventFlush  = time.Second
)

// RequestEvents takes the gateway's per-request events (route, status,
// latency bucket, key id) into the analytics pipeline without slowing
// requests: Record only puts the event in a bounded buffer, a background
// goroutine sends batches through the db binding, and when the buffer is
// full or a batch cannot be stored the events are dropped and counted.
type RequestEvents struct {
	db      SearchAPI
	log     *slog.Logger
	ch      chan *dbv1.Event
	dropped atomic.Int64
	stored  atomic.Int64
	done    chan struct{}
	now     func() time.Time
}

// NewRequestEvents starts the pipeline; it stops, after a last flush, when
// ctx ends. Pass its Record as gateway.Config.Events.
func NewRequestEvents(ctx context.Context, db SearchAPI, logger *slog.Logger) *RequestEvents {
	e := &RequestEvents{db: db, log: logger, ch: make(chan *dbv1.Event, requestEventBuffer), done: make(chan struct{}), now: time.Now}
	go e.run(ctx)
	return e
}

// latencyBucket names the latency class of a request.
func latencyBucket(d time.Duration) string {
	switch {
	case d < 5*time.Millisecond:
		return "<5ms"
	case d < 25*time.Millisecond:
		return "<25ms"
	case d < 100*time.Millisecond:
		return "<100ms"
	case d < 500*time.Millisecond:
		return "<500ms"
	case d < 2*time.Second:
		return "<2s"
	}
	return ">=2s"
}

// Record queues one request's event; it never blocks.
func (e *RequestEvents) Record(route string, status int, d time.Duration, keyID string) {
	if route == "GET /health" {
		return
	}
	b := make([]byte, 0, 96+len(route)+len(keyID))
	b = append(b, `{"route":`...)
	b = appendString(b, route)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"latency":`...)
	b = appendString(b, latencyBucket(d))
	if keyID != "" {
		b = append(b, `,"key":`...)
		b = appendString(b, keyID)
	}
	b = append(b, '}')
	ev := &dbv1.Event{Ns: AnalyticsNamespace, Name: RequestEvent, Properties: b, Timestamp: e.now().UnixMicro()}
	select {
	case e.ch <- ev:
	default:
		e.dropped.Add(1)
	}
}

// Dropped is how many events were dropped (buffer full or store failed).
func (e *RequestEvents) Dropped() int64 { return e.dropped.Load() }

// Stored is how many events were stored.
func (e *RequestEvents) Stored() int64 { return e.stored.Load() }

// Done is closed when the pipeline has stopped.
func (e *RequestEvents) Done() <-chan struct{} { return e.done }

func (e *RequestEvents) run(ctx context.Context) {
	defer close(e.done)
	tick := time.NewTicker(requestEventFlush)
	defer tick.Stop()
	batch := make([]*dbv1.Event, 0, requestEventBatch)
	var lastWarn time.Time
	flush := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := e.db.IngestEvents(cctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: batch}))
		cancel()
		if err != nil {
			e.dropped.Add(int64(len(batch)))
			if time.Since(lastWarn) > time.Minute {
				lastWarn = time.Now()
				e.log.Warn("request events dropped: the db service did not store them", "events", len(batch), "droppedTotal", e.dropped.Load(), "err", err)
			}
		} else {
			e.stored.Add(int64(len(batch)))
		}
		batch = batch[:0]
	}
	for {
		select {
		case ev := <-e.ch:
			batch = append(batch, ev)
			if len(batch) == requestEventBatch {
				flush(ctx)
			}
		case <-tick.C:
			flush(ctx)
		case <-ctx.Done():
			for {
				select {
				case ev := <-e.ch:
					batch = append(batch, ev)
					if len(batch) == requestEventBatch {
						flush(context.Background())
					}
					continue
				default:
				}
				break
			}
			flush(context.Background())
			return
		}
	}
}
