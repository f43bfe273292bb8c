package queue

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/dotdo/dotdo/internal/apierr"
)

// decision of a message or a batch.
type decision int

const (
	undecided decision = iota
	ack
	retry
)

// Message is one delivered message.
type Message struct {
	ID          string
	Timestamp   time.Time
	Body        []byte
	ContentType string
	Attempts    int // starts at 1
	// On a message in a dead-letter queue: the queue it failed in, and the
	// error of its last attempt.
	FailedQueue string
	LastError   string

	msg     jetstream.Msg
	mu      sync.Mutex
	dec     decision
	delay   time.Duration
	delayed bool
}

// Ack marks the message done. A per-message call beats a batch-level call.
func (m *Message) Ack() {
	m.mu.Lock()
	m.dec = ack
	m.mu.Unlock()
}

// Retry asks for the message again after delay (0: the queue's retry_delay).
func (m *Message) Retry(delay time.Duration) {
	m.mu.Lock()
	m.dec, m.delay, m.delayed = retry, delay, delay > 0
	m.mu.Unlock()
}

// Batch is what a handler receives.
type Batch struct {
	Queue    string
	Messages []*Message

	mu      sync.Mutex
	dec     decision
	delay   time.Duration
	delayed bool
}

// AckAll marks every message not decided on its own as done.
func (b *Batch) AckAll() {
	b.mu.Lock()
	b.dec = ack
	b.mu.Unlock()
}

// RetryAll asks for every message not decided on its own again after delay.
func (b *Batch) RetryAll(delay time.Duration) {
	b.mu.Lock()
	b.dec, b.delay, b.delayed = retry, delay, delay > 0
	b.mu.Unlock()
}

// Handler receives batches. Returning an error retries every message not
// acked (per message or with AckAll); returning nil acks every message not
// retried.
type Handler func(ctx context.Context, b *Batch) error

// parse turns a JetStream message into a Message.
func parse(m jetstream.Msg) (*Message, error) {
	md, err := m.Metadata()
	if err != nil {
		return nil, err
	}
	h := m.Headers()
	out := &Message{ID: h.Get(hdrID), ContentType: h.Get(hdrType), Body: m.Data(), Attempts: int(md.NumDelivered), msg: m}
	if ms, err := strconv.ParseInt(h.Get(hdrTimestamp), 10, 64); err == nil {
		out.Timestamp = time.UnixMilli(ms)
	} else {
		out.Timestamp = md.Timestamp
	}
	if out.ID == "" {
		out.ID = strconv.FormatUint(md.Sequence.Stream, 10)
	}
	out.FailedQueue, out.LastError = h.Get(hdrFrom), h.Get(hdrError)
	if out.ContentType == "" {
		out.ContentType = "bytes"
	}
	return out, nil
}

// Consume registers h as a push consumer of queue and delivers batches to
// it until ctx is cancelled. Several consumers of one queue, in this process
// or others, share the work. It returns once the consumer is set up.
func (s *Service) Consume(ctx context.Context, queue string, h Handler) error {
	_, err := s.Queue(ctx, queue)
	if err != nil {
		return err
	}
	cons, err := s.js.Consumer(ctx, s.stream(queue), consumerName)
	if err != nil {
		if errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			return apierr.New(apierr.NotFound, "queue %s not found", queue)
		}
		return fmt.Errorf("consume queue %s: %w", queue, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.deliver(ctx, queue, cons, h)
	}()
	return nil
}

// deliver pulls batches from the queue's consumer and hands them to h until
// ctx is cancelled or the service closes, standing still while the queue is
// paused. It fetches only what the batch takes, when it takes it (a pull
// for the first message, then one for the rest within max_batch_timeout),
// so no message waits in a client buffer with its lease running out while
// a handler works; the messages of the batch are kept leased.
func (s *Service) deliver(ctx context.Context, queue string, cons jetstream.Consumer, h Handler) {
	// Handlers see a ctx cancelled by the caller's ctx or by Close.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)()
	idle := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(250 * time.Millisecond):
			return true
		}
	}
	for ctx.Err() == nil {
		if s.paused(queue) {
			idle()
			continue
		}
		st, err := s.Queue(ctx, queue)
		if err != nil {
			idle()
			continue
		}
		// Wait for the first message in short long-polls, so that a pause
		// or a stop takes effect within one.
		fctx, fcancel := context.WithTimeout(ctx, 2*time.Second)
		first, err := fetchOne(cons, fctx)
		fcancel()
		if err != nil {
			if ctx.Err() == nil {
				s.log.Debug("queue consumer fetch", "queue", queue, "err", err)
				idle()
			}
			continue
		}
		if first == nil {
			continue
		}
		// Paused while the pull was waiting: hold the message, leased,
		// until the queue is resumed.
		for held := time.Now(); s.paused(queue) && ctx.Err() == nil; {
			if time.Since(held) > s.cfg.AckWait/3 {
				first.InProgress()
				held = time.Now()
			}
			idle()
		}
		if ctx.Err() != nil {
			first.Nak()
			return
		}
		msgs := []jetstream.Msg{first}
		if rest := st.MaxBatchSize - 1; rest > 0 {
			var mb jetstream.MessageBatch
			if st.MaxBatchTimeout > 0 {
				mb, err = cons.Fetch(rest, jetstream.FetchMaxWait(st.MaxBatchTimeout))
			} else {
				mb, err = cons.FetchNoWait(rest)
			}
			if err == nil {
				// The timeout may be longer than AckWait: keep the leases of
				// the messages collected so far alive.
				alive := time.NewTicker(s.cfg.AckWait / 3)
			collect:
				for {
					select {
					case m, ok := <-mb.Messages():
						if !ok {
							break collect
						}
						msgs = append(msgs, m)
					case <-alive.C:
						for _, m := range msgs {
							m.InProgress()
						}
					}
				}
				alive.Stop()
			}
		}
		s.handle(ctx, st, msgs, h)
	}
}

// fetchOne waits for one message until ctx ends; nil when none came.
func fetchOne(cons jetstream.Consumer, ctx context.Context) (jetstream.Msg, error) {
	mb, err := cons.Fetch(1, jetstream.FetchContext(ctx))
	if err != nil {
		return nil, err
	}
	var first jetstream.Msg
	for m := range mb.Messages() {
		first = m
	}
	return first, nil
}

// handle runs h on one batch and settles every message.
func (s *Service) handle(ctx context.Context, st Settings, raw []jetstream.Msg, h Handler) {
	b := &Batch{Queue: st.Name, Messages: make([]*Message, 0, len(raw))}
	for _, m := range raw {
		pm, err := parse(m)
		if err != nil {
			m.Term()
			continue
		}
		b.Messages = append(b.Messages, pm)
	}
	if len(b.Messages) == 0 {
		return
	}
	c := s.count(st.Name)
	c.delivered.Add(int64(len(b.Messages)))
	// Keep the leases alive while the handler runs.
	alive := make(chan struct{})
	go func() {
		t := time.NewTicker(s.cfg.AckWait / 3)
		defer t.Stop()
		for {
			select {
			case <-alive:
				return
			case <-t.C:
				for _, m := range b.Messages {
					m.msg.InProgress()
				}
			}
		}
	}()
	start := time.Now()
	herr := safeCall(ctx, h, b)
	close(alive)
	s.observe(st.Name, time.Since(start))
	errText := "retried by the consumer"
	if herr != nil {
		errText = herr.Error()
		c.handlerErrors.Add(1)
	}
	for _, m := range b.Messages {
		dec, delay, delayed := m.dec, m.delay, m.delayed
		if dec == undecided {
			dec, delay, delayed = b.dec, b.delay, b.delayed
		}
		if dec == undecided {
			dec = ack
			if herr != nil {
				dec = retry
			}
		}
		if !delayed {
			delay = st.RetryDelay
		}
		if dec == ack {
			m.msg.Ack()
			c.acked.Add(1)
			continue
		}
		s.retry(ctx, st, m, delay, errText)
	}
	s.nc.FlushTimeout(5 * time.Second)
}

func safeCall(ctx context.Context, h Handler, b *Batch) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	return h(ctx, b)
}

// retry delivers m again after delay, or, after max_retries+1 attempts,
// moves it to the dead-letter queue (or drops it and counts it).
func (s *Service) retry(ctx context.Context, st Settings, m *Message, delay time.Duration, lastErr string) {
	c := s.count(st.Name)
	if m.Attempts <= st.MaxRetries {
		c.retried.Add(1)
		if delay > 0 {
			m.msg.NakWithDelay(delay)
		} else {
			m.msg.Nak()
		}
		return
	}
	s.deadLetter(ctx, st, m.msg, m.ID, m.Attempts, lastErr)
}

// deadLetter moves a message that used up its attempts to the queue's
// dead-letter queue, or drops it when there is none.
func (s *Service) deadLetter(ctx context.Context, st Settings, jm settleable, id string, attempts int, lastErr string) {
	c := s.count(st.Name)
	if st.DeadLetterQueue == "" {
		jm.Term()
		c.dropped.Add(1)
		s.log.Warn("queue message dropped after its last attempt", "queue", st.Name, "id", id, "attempts", attempts, "lastError", lastErr)
		s.notifyDeadLetter(DeadLetter{Queue: st.Name, MessageID: id, Attempts: attempts, Error: lastErr})
		return
	}
	if err := s.toDLQ(ctx, st, jm, attempts, lastErr); err != nil {
		// Keep it; it comes back and tries the dead-letter queue again.
		s.log.Error("queue dead-letter failed", "queue", st.Name, "dlq", st.DeadLetterQueue, "id", id, "err", err)
		jm.NakWithDelay(time.Second)
		return
	}
	jm.Ack()
	c.deadLettered.Add(1)
	s.notifyDeadLetter(DeadLetter{Queue: st.Name, MessageID: id, Attempts: attempts, Error: lastErr, DeadLetterQueue: st.DeadLetterQueue})
}

// DeadLetter describes a message that used up its attempts: moved to
// DeadLetterQueue, or dropped when that is empty.
type DeadLetter struct {
	Queue, MessageID string
	Attempts         int
	Error            string
	DeadLetterQueue  string
}

// OnDeadLetter sets f to be called (on the consumer's goroutine; it must
// not block) after each message that used up its attempts is moved to its
// dead-letter queue or dropped. nil removes it.
func (s *Service) OnDeadLetter(f func(DeadLetter)) {
	if f == nil {
		s.onDeadLetter.Store(nil)
		return
	}
	s.onDeadLetter.Store(&f)
}

func (s *Service) notifyDeadLetter(d DeadLetter) {
	if f := s.onDeadLetter.Load(); f != nil {
		(*f)(d)
	}
}

func (s *Service) toDLQ(ctx context.Context, st Settings, jm settleable, attempts int, lastErr string) error {
	if _, err := s.Queue(ctx, st.DeadLetterQueue); apierr.Is(err, apierr.NotFound) {
		// Cloudflare creates the dead-letter queue on first use.
		if err := s.EnsureQueue(ctx, Defaults(st.DeadLetterQueue)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	h := jm.Headers()
	nm := &nats.Msg{Subject: s.subject(st.DeadLetterQueue), Data: jm.Data(), Header: nats.Header{}}
	for _, k := range []string{hdrID, hdrTimestamp, hdrType} {
		if v := h.Get(k); v != "" {
			nm.Header.Set(k, v)
		}
	}
	if len(lastErr) > 1024 {
		lastErr = lastErr[:1024]
	}
	nm.Header.Set(hdrError, lastErr)
	nm.Header.Set(hdrFrom, st.Name)
	nm.Header.Set(hdrAttempts, strconv.Itoa(attempts))
	if id := h.Get(hdrID); id != "" {
		nm.Header.Set(jetstream.MsgIDHeader, "dlq-"+id)
	}
	_, err := s.js.PublishMsg(ctx, nm)
	return err
}

// counters of one queue in this process.
type counters struct {
	sent, delivered, acked, retried, deadLettered, dropped, handlerErrors atomic.Int64
}

func (s *Service) count(queue string) *counters {
	s.mu.RLock()
	c := s.counters[queue]
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.counters[queue]; c == nil {
		c = &counters{}
		s.counters[queue] = c
	}
	return c
}

// settleable is what dead-lettering needs of a message: a delivered
// jetstream.Msg, or a stored one settled through its ack subject.
type settleable interface {
	Data() []byte
	Headers() nats.Header
	Ack() error
	Term() error
	NakWithDelay(time.Duration) error
}

// storedMsg is a message read back from the stream, settled through the ack
// subject of its delivery.
type storedMsg struct {
	raw   *jetstream.RawStreamMsg
	reply string
	s     *Service
}

func (m *storedMsg) Data() []byte         { return m.raw.Data }
func (m *storedMsg) Headers() nats.Header { return m.raw.Header }
func (m *storedMsg) Ack() error           { return m.s.nc.Publish(m.reply, []byte("+ACK")) }
func (m *storedMsg) Term() error          { return m.s.nc.Publish(m.reply, []byte("+TERM")) }
func (m *storedMsg) NakWithDelay(d time.Duration) error {
	return m.s.nc.Publish(m.reply, fmt.Appendf(nil, `-NAK {"delay":%d}`, d.Nanoseconds()))
}
