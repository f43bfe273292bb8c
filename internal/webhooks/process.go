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
	for _, m := range b.Messages {
		retry, err := s.process(ctx, string(m.Body))
		switch {
		case err != nil:
			s.log.WarnContext(ctx, "process webhook event", "id", string(m.Body), "err", err)
			m.Retry(s.retryDelay(m.Attempts))
		case retry > 0:
			m.Retry(retry)
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

// process runs one event's handler once, claiming it with a conditional
// write so that concurrent deliveries of the same id process it once. It
// returns a delay when the event should be tried again later, and an error
// only when the store failed (the message is then retried).
func (s *Service) process(ctx context.Context, id string) (time.Duration, error) {
	var ev eventJSON
	t, err := s.get(ctx, Namespace, id, &ev)
	if apierr.Is(err, apierr.NotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	switch ev.Status {
	case StatusReceived:
	case StatusProcessing:
		if held := s.Now().Sub(time.UnixMicro(t.UpdatedAt)); held < processingLease {
			// Another worker has it, or had it and died: look again once
			// its lease is over rather than drop the message.
			return processingLease - held + time.Second, nil
		}
	default:
		return 0, nil // processed, ignored, failed or rejected: done
	}
	ev.Status = StatusProcessing
	ev.Attempts++
	claimed, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: id, Type: typeEvent, Data: mustJSON(&ev), IfVersion: t.Version,
	}}))
	if apierr.Is(err, apierr.PreconditionFailed) || apierr.Is(err, apierr.Conflict) {
		return 0, nil // someone else claimed it
	}
	if err != nil {
		return 0, err
	}
	version := claimed.Msg.Thing.Version

	status, herr := StatusProcessed, error(nil)
	h := s.handlers[ev.Provider][ev.Type]
	if h == nil {
		status = StatusIgnored
	} else {
		body, err := s.payload(ctx, id, &ev)
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
		s.log.WarnContext(ctx, "webhook handler failed", "id", id, "provider", ev.Provider, "type", ev.Type, "attempt", ev.Attempts, "err", herr)
	}
	ev.Status = status
	if status != StatusReceived {
		ev.ProcessedAt = s.Now().UnixMilli()
	}
	_, err = s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
		Ns: Namespace, Id: id, Type: typeEvent, Data: mustJSON(&ev), IfVersion: version,
	}}))
	if err != nil && !apierr.Is(err, apierr.PreconditionFailed) {
		return 0, err
	}
	return delay, nil
}

// sweep re-enqueues events left in received (stored, but the process died
// before enqueueing, or the queue gave up) or stuck in processing past the
// lease, at start and then every interval.
func (s *Service) sweep(ctx context.Context) {
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	// At start every waiting event is fair game: a process that stored one
	// and died will not enqueue it. Enqueueing one twice is harmless (the
	// claim makes it run once).
	age := time.Duration(0)
	for {
		err := s.Sweep(ctx, age)
		age = 30 * time.Second
		if err != nil && ctx.Err() == nil {
			s.log.WarnContext(ctx, "webhook sweep", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Sweep enqueues again every event received more than age ago that is
// still waiting, or processing past its lease.
func (s *Service) Sweep(ctx context.Context, age time.Duration) error {
	now := s.Now()
	where := fmt.Sprintf(`{"status":{"in":["received","processing"]},"receivedAt":{"lt":%d}}`, now.Add(-age).UnixMilli())
	cursor := ""
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeEvent, Where: where, Limit: 500, Cursor: cursor}))
		if err != nil {
			return err
		}
		var msgs []queue.Outgoing
		for _, t := range res.Msg.Items {
			var ev eventJSON
			if json.Unmarshal(t.Data, &ev) != nil {
				continue
			}
			if ev.Status == StatusProcessing && now.Sub(time.UnixMicro(t.UpdatedAt)) < processingLease {
				continue
			}
			if ev.Status == StatusReceived && now.Sub(time.UnixMicro(t.UpdatedAt)) < age {
				continue // waiting for a retry the queue holds
			}
			msgs = append(msgs, queue.Outgoing{Body: []byte(t.Id), ContentType: "text"})
		}
		for len(msgs) > 0 {
			n := min(len(msgs), 100)
			if _, err := s.queue.Send(ctx, InboundQueue, msgs[:n]...); err != nil {
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
