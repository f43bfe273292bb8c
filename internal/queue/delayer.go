package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/apierr"
)

const delayerName = "delayer"

// startDelayer creates the delayed stream and its consumer and starts this
// process's delayer. Every process runs one; they share the consumer.
func (s *Service) startDelayer(ctx context.Context) error {
	scfg := jetstream.StreamConfig{
		Name:        s.delayedStream(),
		Description: "dotdo delayed queue messages, moved to their queue when due",
		Subjects:    []string{s.delayedSubject("*")},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    s.cfg.Replicas,
		MaxAge:      MaxRetention,
		Duplicates:  2 * time.Minute,
	}
	if _, err := s.js.CreateOrUpdateStream(ctx, scfg); err != nil {
		return fmt.Errorf("create the delayed-message stream: %w", err)
	}
	cons, err := s.js.CreateOrUpdateConsumer(ctx, s.delayedStream(), jetstream.ConsumerConfig{
		Durable:     delayerName,
		Description: "dotdo delayer: holds each message until due, then moves it to its queue",
		AckPolicy:   jetstream.AckExplicitPolicy,
		// Short: each message is decided at once (held back or moved), and
		// after a restart of the NATS server a held-back message comes back
		// within AckWait rather than its remaining delay, so keep it small.
		AckWait:       time.Second,
		MaxDeliver:    -1,
		MaxAckPending: 1 << 20, // every delayed message waits as pending
	})
	if err != nil {
		return fmt.Errorf("create the delayer consumer: %w", err)
	}
	cc, err := cons.Consume(s.delay, jetstream.PullMaxMessages(64), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			s.log.Debug("queue delayer", "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("start the delayer: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		cc.Stop()
	}()
	return nil
}

// delay handles one delayed message: back to the stream until due, then
// published to its queue (deduplicated by id, so a crash between publish
// and ack does not enqueue it twice) and acked.
func (s *Service) delay(m jetstream.Msg) {
	h := m.Headers()
	nb, err := strconv.ParseInt(h.Get(hdrNotBefore), 10, 64)
	if err != nil {
		m.Term()
		return
	}
	if left := time.Until(time.UnixMilli(nb)); left > 0 {
		m.NakWithDelay(left)
		return
	}
	queue := strings.TrimPrefix(m.Subject(), s.cfg.Prefix+".d.")
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	if _, err := s.Queue(ctx, queue); apierr.Is(err, apierr.NotFound) {
		m.Term() // the queue was deleted
		return
	}
	nm := &nats.Msg{Subject: s.subject(queue), Data: m.Data(), Header: nats.Header{}}
	for k, v := range h {
		if k != hdrNotBefore {
			nm.Header[k] = v
		}
	}
	if _, err := s.js.PublishMsg(ctx, nm); err != nil {
		s.log.Warn("queue delayer: move to queue failed; will retry", "queue", queue, "err", err)
		m.NakWithDelay(time.Second)
		return
	}
	m.Ack()
}

// purgeDelayed drops a queue's delayed messages.
func (s *Service) purgeDelayed(ctx context.Context, queue string) error {
	str, err := s.js.Stream(ctx, s.delayedStream())
	if err != nil {
		return err
	}
	return str.Purge(ctx, jetstream.WithPurgeSubject(s.delayedSubject(queue)))
}

// delayed counts a queue's delayed messages.
func (s *Service) delayed(ctx context.Context, queue string) int64 {
	str, err := s.js.Stream(ctx, s.delayedStream())
	if err != nil {
		return 0
	}
	info, err := str.Info(ctx, jetstream.WithSubjectFilter(s.delayedSubject(queue)))
	if err != nil {
		return 0
	}
	return int64(info.State.Subjects[s.delayedSubject(queue)])
}
