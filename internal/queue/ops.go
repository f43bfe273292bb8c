package queue

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Stats of one queue. Backlog, InFlight, Delayed, DeadLetterDepth,
// OldestAge, Delivered, Redelivered and Paused come from JetStream and so
// cover every process; the counts under "this process" are since this
// process started.
type Stats struct {
	Backlog         int64         // messages ready or in flight (not yet acked)
	InFlight        int64         // delivered, awaiting ack or a retry delay
	Delayed         int64         // scheduled messages not yet due
	DeadLetterDepth int64         // backlog of the dead-letter queue
	OldestAge       time.Duration // age of the oldest message ready or in flight
	Delivered       int64         // deliveries, including redeliveries
	Redelivered     int64         // messages delivered more than once, now pending
	Paused          bool

	// This process.
	Sent, Acked, Retried, DeadLettered, Dropped, HandlerErrors int64
}

// Stats returns a queue's statistics.
func (s *Service) Stats(ctx context.Context, queue string) (Stats, error) {
	st, err := s.Queue(ctx, queue)
	if err != nil {
		return Stats{}, err
	}
	var out Stats
	str, err := s.js.Stream(ctx, s.stream(queue))
	if err != nil {
		return Stats{}, fmt.Errorf("stats of queue %s: %w", queue, err)
	}
	cons, err := str.Consumer(ctx, consumerName)
	if err != nil {
		return Stats{}, fmt.Errorf("stats of queue %s: %w", queue, err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return Stats{}, fmt.Errorf("stats of queue %s: %w", queue, err)
	}
	out.InFlight = int64(ci.NumAckPending)
	out.Backlog = int64(ci.NumPending) + out.InFlight
	out.Delayed = s.delayed(ctx, queue)
	out.Delivered = int64(ci.Delivered.Consumer)
	out.Redelivered = int64(ci.NumRedelivered)
	if rec, err := s.record(ctx, queue); err == nil {
		out.Paused = rec.Paused
	}
	if raw, err := str.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(s.subject(queue))); err == nil {
		ts := raw.Time
		if ms, err := strconv.ParseInt(raw.Header.Get(hdrTimestamp), 10, 64); err == nil {
			ts = time.UnixMilli(ms)
		}
		out.OldestAge = max(0, time.Since(ts))
	}
	if st.DeadLetterQueue != "" {
		if d, err := s.js.Stream(ctx, s.stream(st.DeadLetterQueue)); err == nil {
			if di, err := d.Info(ctx); err == nil {
				out.DeadLetterDepth = int64(di.State.Msgs)
			}
		}
	}
	c := s.count(queue)
	out.Sent, out.Acked, out.Retried = c.sent.Load(), c.acked.Load(), c.retried.Load()
	out.DeadLettered, out.Dropped, out.HandlerErrors = c.deadLettered.Load(), c.dropped.Load(), c.handlerErrors.Load()
	return out, nil
}

// Pause stops delivery from a queue, to push handlers and HTTP pulls in
// every process, until Resume; sends still enqueue. A batch a handler is
// running finishes; a message a push consumer's pending pull receives
// after the pause is held, leased, until Resume.
func (s *Service) Pause(ctx context.Context, queue string) error {
	return s.setPaused(ctx, queue, true)
}

// Resume restarts delivery from a paused queue.
func (s *Service) Resume(ctx context.Context, queue string) error {
	return s.setPaused(ctx, queue, false)
}

func (s *Service) setPaused(ctx context.Context, queue string, paused bool) error {
	if _, err := s.Queue(ctx, queue); err != nil {
		return err
	}
	return s.update(ctx, queue, func(rec *record, found bool) error {
		if !found {
			return apierr.New(apierr.NotFound, "queue %s not found", queue)
		}
		rec.Paused = paused
		return nil
	})
}

// paused reports whether delivery from queue is paused (or it is gone).
func (s *Service) paused(queue string) bool {
	rec, err := s.record(s.ctx, queue)
	return rec.Paused || apierr.Is(err, apierr.NotFound)
}

// Purge deletes every message of a queue, delayed ones included.
func (s *Service) Purge(ctx context.Context, queue string) error {
	if _, err := s.Queue(ctx, queue); err != nil {
		return err
	}
	s.purgeDelayed(ctx, queue)
	str, err := s.js.Stream(ctx, s.stream(queue))
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil
		}
		return err
	}
	return str.Purge(ctx)
}

func sortSettings(l []Settings) { sort.Slice(l, func(i, j int) bool { return l[i].Name < l[j].Name }) }

// observe records a handler's duration (metrics hook).
func (s *Service) observe(queue string, d time.Duration) {
	if s.metrics != nil {
		s.metrics.handler.WithLabelValues(queue).Observe(d.Seconds())
	}
}

// Health reports whether NATS JetStream answers.
func (s *Service) Health(ctx context.Context) error {
	if s.nc.Status() != nats.CONNECTED {
		return apierr.New(apierr.Unavailable, "queue: not connected to NATS (%s)", s.nc.Status())
	}
	if _, err := s.js.AccountInfo(ctx); err != nil {
		return apierr.New(apierr.Unavailable, "queue: JetStream does not answer")
	}
	return nil
}

// Drop deletes every stream and the settings bucket under this service's
// prefix: all its queues, delayed messages and settings. It is for tests
// and benchmarks on a shared NATS, each with a prefix of its own; the
// service is unusable afterwards.
func (s *Service) Drop(ctx context.Context) error {
	var errs []error
	for name := range s.js.StreamNames(ctx).Name() {
		if strings.HasPrefix(name, s.cfg.Prefix+"_Q_") || name == s.delayedStream() || name == "KV_"+s.cfg.Prefix+"_queues" {
			if err := s.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
