package webhooks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

// handler acts on one verified event's body through the bindings. It must
// be idempotent: an event is replayed on request, and a crash between the
// handler's effect and the status write repeats it.
type handler func(ctx context.Context, in inbound) error

// inbound is a verified event as a handler sees it.
type inbound struct {
	// EventID is the provider's id of the event.
	EventID string
	Type    string
	Body    []byte
}

// permanent marks an error that retrying cannot fix (a malformed payload):
// the event fails at once.
type permanent struct{ err error }

func (p permanent) Error() string { return p.err.Error() }
func (p permanent) Unwrap() error { return p.err }

func permanentf(format string, args ...any) error {
	return permanent{fmt.Errorf(format, args...)}
}

// processingLease is how long a claimed event may stay in processing
// before it is taken back from a worker presumed dead (killed mid-way). A
// handler runs under a shorter deadline, so a live worker never loses its
// claim.
const (
	processingLease = 60 * time.Second
	handlerTimeout  = 45 * time.Second
)

// consumeInbound processes a batch of event ids from the inbound queue.
func (s *Service) consumeInbound(ctx context.Context, b *queue.Batch) error {
	ids := make([]string, len(b.Messages))
	for i, m := range b.Messages {
		ids[i] = string(m.Body)
	}
	results := s.processBatch(ctx, ids)
	for i, m := range b.Messages {
		switch r := results[i]; {
		case r.err != nil:
			s.log.WarnContext(ctx, "process webhook event", "id", ids[i], "err", r.err)
			m.Retry(s.retryDelay(m.Attempts))
		case r.delay > 0:
			m.Retry(r.delay)
		default:
			m.Ack()
		}
	}
	return nil
}

func (s *Service) retryDelay(attempts int) time.Duration {
	d := s.cfg.RetryDelay
	for i := 1; i < attempts && d < 10*time.Minute; i++ {
		d *= 2
	}
	return d
}

// result is what became of one event of a batch: a delay when it should
// be tried again later, an error when the store failed.
type result struct {
	delay time.Duration
	err   error
}

// process runs one event; see processBatch.
func (s *Service) process(ctx context.Context, id string) (time.Duration, error) {
	r := s.processBatch(ctx, []string{id})[0]
	return r.delay, r.err
}

// claim is one event of a batch being processed.
type claim struct {
	i       int // index in the batch
	id      string
	ev      eventJSON
	version int64
}

// processBatch runs each event's handler once. Events are claimed with
// conditional writes (received → processing, attempts+1), so concurrent
// deliveries of one id process it once; the claims of a batch, and then
// its outcomes, are written in one transaction each, which keeps the
// database's one writer free for acknowledging new deliveries.
func (s *Service) processBatch(ctx context.Context, ids []string) []result {
	out := make([]result, len(ids))
	seen := map[string]bool{}
	var claims, ignored []*claim
	for i, id := range ids {
		if seen[id] {
			continue // the same id twice in a batch: once is enough
		}
		seen[id] = true
		c := &claim{i: i, id: id}
		t, err := s.get(ctx, Namespace, id, &c.ev)
		if apierr.Is(err, apierr.NotFound) {
			continue
		}
		if err != nil {
			out[i].err = err
			continue
		}
		switch c.ev.Status {
		case StatusReceived:
		case StatusProcessing:
			if held := s.Now().Sub(time.UnixMicro(t.UpdatedAt)); held < processingLease {
				// Another worker has it, or had it and died: look again
				// once its lease is over rather than drop the message.
				out[i].delay = processingLease - held + time.Second
				continue
			}
		default:
			continue // processed, ignored, failed or rejected: done
		}
		c.version = t.Version
		c.ev.Attempts++
		if s.handlers[c.ev.Provider][c.ev.Type] == nil {
			// Nothing to run: no claim, straight to ignored.
			c.ev.Status, c.ev.Error, c.ev.ProcessedAt = StatusIgnored, "", s.Now().UnixMilli()
			ignored = append(ignored, c)
			continue
		}
		c.ev.Status = StatusProcessing
		claims = append(claims, c)
	}
	if _, err := s.writeEvents(ctx, ignored); err != nil {
		for _, c := range ignored {
			out[c.i].err = err
		}
	}
	claims, err := s.writeEvents(ctx, claims)
	if err != nil {
		for _, c := range claims {
			out[c.i].err = err
		}
		return out
	}
	for _, c := range claims {
		s.yieldToDeliveries(ctx)
		out[c.i].delay = s.runHandler(ctx, c)
	}
	written, err := s.writeEvents(ctx, claims)
	if err != nil {
		for _, c := range claims {
			out[c.i] = result{err: err}
		}
	}
	for _, c := range append(written, ignored...) {
		st := c.ev.Status
		if st == StatusReceived {
			st = "retry"
		}
		s.metrics.processed.WithLabelValues(c.ev.Provider, st).Inc()
	}
	return out
}

// yieldToDeliveries pauses briefly while deliveries are arriving: the
// acknowledgement comes first, and processing, which the queue buffers,
// catches up when the burst is over. The pause is bounded so processing
// never stops under sustained load.
func (s *Service) yieldToDeliveries(ctx context.Context) {
	if s.receiving.Load() < 4 {
		return
	}
	t := time.NewTimer(2 * time.Millisecond)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// runHandler runs a claimed event's handler and sets its outcome; it
// returns the delay before a retry, or 0.
func (s *Service) runHandler(ctx context.Context, c *claim) time.Duration {
	ev := &c.ev
	status, herr := StatusProcessed, error(nil)
	h := s.handlers[ev.Provider][ev.Type]
	if h == nil {
		status = StatusIgnored
	} else {
		body, err := s.payload(ctx, c.id, ev)
		if err != nil {
			herr = permanentf("payload no longer stored: %v", err)
		} else {
			hctx, cancel := context.WithTimeout(ctx, handlerTimeout)
			herr = h(hctx, inbound{EventID: ev.EventID, Type: ev.Type, Body: body})
			cancel()
		}
	}
	var delay time.Duration
	ev.Error = ""
	if herr != nil {
		ev.Error = trimReason(herr.Error())
		var p permanent
		if errors.As(herr, &p) || ev.Attempts >= s.cfg.MaxAttempts {
			status = StatusFailed
		} else {
			status = StatusReceived
			delay = s.retryDelay(ev.Attempts)
		}
		s.log.WarnContext(ctx, "webhook handler failed", "id", c.id, "provider", ev.Provider, "type", ev.Type, "attempt", ev.Attempts, "err", herr)
	}
	ev.Status = status
	if status != StatusReceived {
		ev.ProcessedAt = s.Now().UnixMilli()
	}
	return delay
}

// writeEvents writes the claims' events, each conditional on its version,
// in one transaction, and returns the claims it wrote with their new
// versions. A claim whose event changed meanwhile (another worker, a
// replay) is dropped and the rest written again.
func (s *Service) writeEvents(ctx context.Context, claims []*claim) ([]*claim, error) {
	for len(claims) > 0 {
		ops := make([]*dbv1.Op, len(claims))
		for i, c := range claims {
			ops[i] = writeOp(c.id, typeEvent, &c.ev, dbv1.Condition_CONDITION_NONE, c.version, 0)
		}
		res, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops}))
		if err == nil {
			for i, c := range claims {
				c.version = res.Msg.Results[i].Thing.Version
			}
			return claims, nil
		}
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == apierr.PreconditionFailed && ae.Index >= 0 && ae.Index < len(claims) {
			claims = append(claims[:ae.Index:ae.Index], claims[ae.Index+1:]...)
			continue
		}
		return claims, err
	}
	return nil, nil
}

// sweepEvery is how often the sweeper looks for stranded work. It scans
// the waiting events (a filter on data), so it runs seldom; it is only a
// backstop for a crash between storing and queueing.
const sweepEvery = 2 * time.Minute

// sweep re-enqueues events left in received (stored, but the process died
// before enqueueing, or the queue gave up) or stuck in processing past the
// lease, at start and then every interval.
func (s *Service) sweep(ctx context.Context) {
	tick := time.NewTicker(sweepEvery)
	defer tick.Stop()
	// At start every waiting event is fair game: a process that stored one
	// and died will not enqueue it. Enqueueing one twice is harmless (the
	// claim makes it run once).
	age := time.Duration(0)
	for n := 0; ; n++ {
		err := s.Sweep(ctx, age)
		age = sweepEvery
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "webhook sweep", "err", err)
		}
		if n%15 == 0 {
			if err := s.expirePayloads(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "expire webhook payloads", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// expirePayloads removes the inline payloads past their retention.
func (s *Service) expirePayloads(ctx context.Context) error {
	where := fmt.Sprintf(`{"payloadExpiresAt":{"lt":%d}}`, s.Now().UnixMilli())
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEvent, Where: where, Limit: 500}))
		if err != nil {
			return err
		}
		for _, t := range res.Msg.Items {
			_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: t.Id,
				MergePatch: []byte(`{"data":{"body":null,"payloadExpiresAt":null}}`), Condition: dbv1.Condition_CONDITION_MUST_EXIST}}))
			if err != nil && !apierr.Is(err, apierr.PreconditionFailed) && !apierr.Is(err, apierr.NotFound) {
				return err
			}
		}
		if len(res.Msg.Items) < 500 {
			return nil
		}
	}
}

// Sweep enqueues again every event received more than age ago that is
// still waiting, or processing past its lease, and every outbound
// delivery that is overdue by more than age (its queue message was lost:
// a failed send, or the queue's retries ran out).
func (s *Service) Sweep(ctx context.Context, age time.Duration) error {
	now := s.Now()
	where := fmt.Sprintf(`{"status":{"in":["received","processing"]},"receivedAt":{"lt":%d}}`, now.Add(-age).UnixMilli())
	err := s.sweepList(ctx, typeEvent, where, InboundQueue, func(t *dbv1.Thing) bool {
		var ev eventJSON
		if json.Unmarshal(t.Data, &ev) != nil {
			return false
		}
		if ev.Status == StatusProcessing && now.Sub(time.UnixMicro(t.UpdatedAt)) < processingLease {
			return false
		}
		// A received event updated lately waits for a retry the queue holds.
		return ev.Status != StatusReceived || now.Sub(time.UnixMicro(t.UpdatedAt)) >= age
	})
	if err != nil {
		return err
	}
	overdue := max(age, time.Minute)
	where = fmt.Sprintf(`{"status":"pending","nextAttemptAt":{"lt":%d}}`, now.Add(-overdue).UnixMilli())
	return s.sweepList(ctx, typeDelivery, where, OutboundQueue, func(*dbv1.Thing) bool { return true })
}

// sweepList sends the ids of the things of typ matching where and keep to
// queue q.
func (s *Service) sweepList(ctx context.Context, typ, where, q string, keep func(*dbv1.Thing) bool) error {
	cursor := ""
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typ, Where: where, Limit: 500, Cursor: cursor}))
		if err != nil {
			return err
		}
		var msgs []queue.Outgoing
		for _, t := range res.Msg.Items {
			if keep(t) {
				msgs = append(msgs, queue.Outgoing{Body: []byte(t.Id), ContentType: "text"})
			}
		}
		for len(msgs) > 0 {
			n := min(len(msgs), 100)
			if _, err := s.queue.Send(ctx, q, msgs[:n]...); err != nil {
				return err
			}
			msgs = msgs[n:]
		}
		if res.Msg.NextCursor == "" {
			return nil
		}
		cursor = res.Msg.NextCursor
	}
}
