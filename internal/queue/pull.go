package queue

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Pulled is a message leased to an HTTP pull consumer.
type Pulled struct {
	ID          string
	LeaseID     string
	Timestamp   time.Time
	Attempts    int
	Body        []byte
	ContentType string
}

// lease is an HTTP pull lease this process holds a visibility timer for.
type lease struct {
	reply string
	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

// Pull leases up to batchSize (1-100, 0 means 5) available messages for
// visibility (0 means 30 s, at most 12 h); it does not wait for messages.
// A message neither acked nor retried within its visibility timeout is
// delivered again. The lease is JetStream's ack subject, so an ack may
// reach any process connected to the same NATS.
func (s *Service) Pull(ctx context.Context, queue string, batchSize int, visibility time.Duration) ([]Pulled, error) {
	if batchSize == 0 {
		batchSize = 5
	}
	if visibility == 0 {
		visibility = DefaultVisibility
	}
	if batchSize < 1 || batchSize > MaxBatchMessages {
		return nil, apierr.New(apierr.Invalid, "batch_size %d: want 1-100", batchSize)
	}
	if visibility < time.Millisecond || visibility > MaxVisibility {
		return nil, apierr.New(apierr.Invalid, "visibility_timeout_ms %d: want 1 to 43200000", visibility.Milliseconds())
	}
	if rec, err := s.record(ctx, queue); err != nil {
		return nil, err
	} else if rec.Paused {
		return nil, nil
	}
	cons, err := s.js.Consumer(ctx, s.stream(queue), consumerName)
	if err != nil {
		return nil, fmt.Errorf("pull from queue %s: %w", queue, err)
	}
	// FetchNoWait answers at once with what is ready; a short wait lets a
	// pull that arrives just after a send see it.
	b, err := cons.Fetch(batchSize, jetstream.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		return nil, fmt.Errorf("pull from queue %s: %w", queue, err)
	}
	var out []Pulled
	for m := range b.Messages() {
		pm, err := parse(m)
		if err != nil {
			m.Term()
			continue
		}
		reply := m.Reply()
		id := base64.RawURLEncoding.EncodeToString([]byte(reply))
		out = append(out, Pulled{ID: pm.ID, LeaseID: id, Timestamp: pm.Timestamp, Attempts: pm.Attempts, Body: pm.Body, ContentType: pm.ContentType})
		s.lease(id, reply, visibility)
	}
	if err := b.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, context.DeadlineExceeded) {
		s.log.Debug("queue pull", "queue", queue, "err", err)
	}
	s.count(queue).delivered.Add(int64(len(out)))
	return out, nil
}

// lease keeps the visibility timeout of one pulled message: it sends
// keep-alives while the timeout is longer than the consumer's AckWait and
// gives the message back (NAK) when the timeout passes.
func (s *Service) lease(id, reply string, visibility time.Duration) {
	l := &lease{reply: reply}
	deadline := time.Now().Add(visibility)
	var tick func()
	tick = func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.done {
			return
		}
		left := time.Until(deadline)
		if left <= 0 {
			l.done = true
			s.nc.Publish(reply, []byte("-NAK"))
			s.mu.Lock()
			delete(s.leases, id)
			s.mu.Unlock()
			return
		}
		s.nc.Publish(reply, []byte("+WPI"))
		l.timer = time.AfterFunc(min(left, s.cfg.AckWait/2), tick)
	}
	l.mu.Lock()
	l.timer = time.AfterFunc(min(visibility, s.cfg.AckWait/2), tick)
	if visibility <= s.cfg.AckWait/2 {
		l.timer.Reset(visibility)
	}
	l.mu.Unlock()
	s.mu.Lock()
	s.leases[id] = l
	s.mu.Unlock()
}

// settleLease stops the visibility timer of a lease settled here, in this
// process and, through a core NATS notice, in the process that holds it.
func (s *Service) settleLease(id string) {
	s.mu.RLock()
	_, here := s.leases[id]
	s.mu.RUnlock()
	if here {
		s.endLease(id)
		return
	}
	s.nc.Publish(s.leaseSubject(), []byte(id))
}

func (s *Service) leaseSubject() string { return s.cfg.Prefix + ".leases.settled" }

// watchLeases ends the timers of leases settled through other processes.
func (s *Service) watchLeases() error {
	sub, err := s.nc.Subscribe(s.leaseSubject(), func(m *nats.Msg) { s.endLease(string(m.Data)) })
	if err != nil {
		return fmt.Errorf("subscribe to lease notices: %w", err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		<-s.ctx.Done()
		sub.Unsubscribe()
	}()
	return nil
}

// endLease stops this process's visibility timer for a lease, if it has one.
func (s *Service) endLease(id string) {
	s.mu.Lock()
	l := s.leases[id]
	delete(s.leases, id)
	s.mu.Unlock()
	if l != nil {
		l.mu.Lock()
		l.done = true
		l.timer.Stop()
		l.mu.Unlock()
	}
}

// LeaseRetry asks for a pulled message again after Delay.
type LeaseRetry struct {
	LeaseID string
	Delay   time.Duration
}

// AckResult counts what an Ack call did.
type AckResult struct {
	Acked, Retried int
	Warnings       []string
}

// ackToken is a parsed JetStream ack subject.
type ackToken struct {
	reply           string
	stream          string
	delivered, sseq uint64
}

func (s *Service) parseLease(queue, id string) (ackToken, error) {
	bad := apierr.New(apierr.Invalid, "lease_id %q is not a lease of queue %s", truncate(id, 80), queue)
	b, err := base64.RawURLEncoding.DecodeString(id)
	if err != nil {
		return ackToken{}, bad
	}
	reply := string(b)
	t := strings.Split(reply, ".")
	// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or
	// the v2 form with <domain>.<account hash> before the stream and a token after.
	switch len(t) {
	case 9:
		t = t[2:]
	case 11, 12:
		t = t[4:]
	default:
		return ackToken{}, bad
	}
	if !strings.HasPrefix(reply, "$JS.ACK.") || t[0] != s.stream(queue) || t[1] != consumerName {
		return ackToken{}, bad
	}
	d, err1 := strconv.ParseUint(t[2], 10, 64)
	sseq, err2 := strconv.ParseUint(t[3], 10, 64)
	if err1 != nil || err2 != nil {
		return ackToken{}, bad
	}
	return ackToken{reply: reply, stream: t[0], delivered: d, sseq: sseq}, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Ack settles pulled messages: acks are done, retries come back after their
// delay (or go to the dead-letter queue after max_retries+1 attempts). Every
// lease is checked before any is settled.
func (s *Service) Ack(ctx context.Context, queue string, acks []string, retries []LeaseRetry) (AckResult, error) {
	st, err := s.Queue(ctx, queue)
	if err != nil {
		return AckResult{}, err
	}
	if len(acks)+len(retries) > 1000 {
		return AckResult{}, apierr.New(apierr.Invalid, "at most 1000 acks and retries in one call")
	}
	at := make([]ackToken, len(acks))
	for i, id := range acks {
		if at[i], err = s.parseLease(queue, id); err != nil {
			return AckResult{}, err
		}
	}
	rt := make([]ackToken, len(retries))
	for i, r := range retries {
		if rt[i], err = s.parseLease(queue, r.LeaseID); err != nil {
			return AckResult{}, err
		}
		if r.Delay < 0 || r.Delay > MaxDelay {
			return AckResult{}, apierr.New(apierr.Invalid, "delay_seconds %d: want 0-43200", int(r.Delay.Seconds()))
		}
	}
	var res AckResult
	c := s.count(queue)
	for i, t := range at {
		s.settleLease(acks[i])
		if _, err := s.nc.RequestWithContext(ctx, t.reply, []byte("+ACK")); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("lease %d: not acknowledged (expired or already settled)", i))
			continue
		}
		c.acked.Add(1)
		res.Acked++
	}
	for i, t := range rt {
		s.settleLease(retries[i].LeaseID)
		if int(t.delivered) > st.MaxRetries {
			if err := s.deadLetterSeq(ctx, st, t, "retried by the pull consumer"); err != nil {
				res.Warnings = append(res.Warnings, fmt.Sprintf("retry %d: %s", i, err))
				continue
			}
			res.Retried++
			continue
		}
		delay := retries[i].Delay
		if delay == 0 {
			delay = st.RetryDelay
		}
		body := []byte("-NAK")
		if delay > 0 {
			body = fmt.Appendf(nil, `-NAK {"delay":%d}`, delay.Nanoseconds())
		}
		if _, err := s.nc.RequestWithContext(ctx, t.reply, body); err != nil {
			res.Warnings = append(res.Warnings, fmt.Sprintf("retry %d: not settled (expired or already settled)", i))
			continue
		}
		c.retried.Add(1)
		res.Retried++
	}
	return res, nil
}

// deadLetterSeq moves a pulled message out of the queue after its last attempt.
func (s *Service) deadLetterSeq(ctx context.Context, st Settings, t ackToken, lastErr string) error {
	str, err := s.js.Stream(ctx, t.stream)
	if err != nil {
		return err
	}
	raw, err := str.GetMsg(ctx, t.sseq)
	if err != nil {
		return errors.New("message no longer in the queue")
	}
	jm := &storedMsg{raw: raw, reply: t.reply, s: s}
	s.deadLetter(ctx, st, jm, raw.Header.Get(hdrID), int(t.delivered), lastErr)
	return nil
}
