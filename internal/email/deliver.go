package email

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

// handle is the send queue's consumer: it delivers a batch, several
// messages at once, deciding each message on its own. Emails for the
// outbox are recorded together in one atomic write.
func (s *Service) handle(ctx context.Context, b *queue.Batch) error {
	type item struct {
		m       *queue.Message
		id      string
		rec     *record
		version int64
	}
	items := make([]*item, 0, len(b.Messages))
	for _, m := range b.Messages {
		var body msgBody
		if err := json.Unmarshal(m.Body, &body); err != nil || body.ID == "" {
			s.log.WarnContext(ctx, "dropping a malformed send-queue message", "queueMessage", m.ID)
			m.Ack()
			continue
		}
		items = append(items, &item{m: m, id: body.ID})
	}
	// Reads are cheap and independent: more of them at once than deliveries.
	reads := make(chan struct{}, 4*s.cfg.Concurrency)
	var wg sync.WaitGroup
	for _, it := range items {
		reads <- struct{}{}
		wg.Go(func() {
			defer func() { <-reads }()
			it.rec, it.version, _ = s.getRecord(ctx, it.id)
		})
	}
	wg.Wait()
	sem := make(chan struct{}, s.cfg.Concurrency)
	// The outbox's emails: recorded as sent in a few batch writes.
	var ops []*dbv1.Op
	var boxed, rest []*item
	now := s.now()
	for _, it := range items {
		r := it.rec
		if r != nil && r.Provider == "outbox" && (r.Status == StatusQueued || r.Status == StatusScheduled && !scheduledLater(r, now)) {
			t := ts(now)
			r.Attempts++
			r.Status, r.ProviderID = StatusSent, "outbox-"+it.id
			r.addEvent(event{Type: StatusSending, At: t})
			r.addEvent(event{Type: StatusSent, At: t, Reason: "kept in the outbox, not delivered"})
			data, err := json.Marshal(r)
			if err == nil {
				ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: it.id, Type: typeMessage, Data: data, IfVersion: it.version}}})
				boxed = append(boxed, it)
				continue
			}
		}
		rest = append(rest, it)
	}
	// In groups written side by side: PostgreSQL runs them in parallel,
	// SQLite one after the other as it would anyway.
	const group = 10
	var restMu sync.Mutex
	for i := 0; i < len(ops); i += group {
		j := min(i+group, len(ops))
		gops, gitems := ops[i:j], boxed[i:j]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: gops})); err != nil {
				// Someone else wrote one of them meanwhile: one by one.
				restMu.Lock()
				rest = append(rest, gitems...)
				restMu.Unlock()
				return
			}
			s.metrics.deliveries.WithLabelValues("outbox", "sent").Add(float64(len(gitems)))
			for _, it := range gitems {
				it.m.Ack()
				s.notifyStatus(StatusChange{Ns: it.rec.Ns, ID: it.id, To: it.rec.To, Status: StatusSent})
			}
		})
	}
	wg.Wait()
	for _, it := range rest {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			retry, again, err := s.deliver(ctx, it.id)
			switch {
			case err != nil:
				// The store failed; try again later.
				s.log.WarnContext(ctx, "email delivery interrupted", "email", it.id, "err", err)
				it.m.Retry(s.cfg.Backoff)
			case again:
				it.m.Retry(retry)
			default:
				it.m.Ack()
			}
		})
	}
	wg.Wait()
	return nil
}

func scheduledLater(r *record, now time.Time) bool {
	if r.ScheduledAt == "" {
		return false
	}
	at, _ := time.Parse(time.RFC3339Nano, r.ScheduledAt)
	return at.Sub(now) > time.Second
}

// backoff is the delay before attempt n+1: Backoff doubled per attempt,
// up to 10 minutes, or the provider's Retry-After when longer.
func (s *Service) backoff(attempts int, retryAfter time.Duration) time.Duration {
	d := s.cfg.Backoff
	for i := 1; i < attempts && d < 10*time.Minute; i++ {
		d *= 2
	}
	d = min(d, 10*time.Minute)
	return max(d, retryAfter)
}

// deliver sends the stored email id through its provider and records the
// outcome. It reports again (with the delay) when the queue should bring
// the message back, and err when the store could not be reached.
func (s *Service) deliver(ctx context.Context, id string) (delay time.Duration, again bool, err error) {
	r, _, err := s.getRecord(ctx, id)
	if err != nil {
		if isNotFound(err) {
			return 0, false, nil // deleted meanwhile
		}
		return 0, false, err
	}
	switch r.Status {
	case StatusQueued, StatusScheduled, StatusSending:
	default:
		return 0, false, nil // delivered before: the queue delivers at least once
	}
	now := s.now()
	if r.ScheduledAt != "" {
		at, _ := time.Parse(time.RFC3339Nano, r.ScheduledAt)
		if d := at.Sub(now); d > time.Second {
			return min(d, queue.MaxDelay), true, nil
		}
	}
	p, ok := s.providers[r.Provider]
	if !ok {
		_, err := s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
			r.Status, r.Error = StatusFailed, "provider "+r.Provider+" is not configured in this process"
			r.addEvent(event{Type: StatusFailed, At: ts(s.now()), Reason: r.Error})
			return true, nil, nil
		})
		return 0, false, err
	}
	if _, isOutbox := p.(outbox); isOutbox {
		// The outbox keeps the stored message: sending is storing.
		_, err := s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
			if rank[r.Status] >= rank[StatusSent] {
				return false, nil, nil
			}
			t := ts(s.now())
			r.Attempts++
			r.Status, r.ProviderID = StatusSent, "outbox-"+id
			r.addEvent(event{Type: StatusSending, At: t})
			r.addEvent(event{Type: StatusSent, At: t, Reason: "kept in the outbox, not delivered"})
			return true, nil, nil
		})
		if err == nil {
			s.metrics.deliveries.WithLabelValues("outbox", "sent").Inc()
		}
		return 0, false, err
	}
	busy := false
	r, err = s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
		busy = false
		if rank[r.Status] >= rank[StatusSent] {
			return false, nil, nil
		}
		if r.Status == StatusSending && sendingSince(r, now) < inFlight {
			// Another consumer is delivering it (the queue redelivers a
			// message whose delivery outlasts its lease): wait for it.
			busy = true
			return false, nil, nil
		}
		r.Attempts++
		r.Status = StatusSending
		r.addEvent(event{Type: StatusSending, At: ts(s.now())})
		return true, nil, nil
	})
	if err != nil {
		return 0, false, err
	}
	if busy {
		return inFlight / 4, true, nil
	}
	if r.Status != StatusSending {
		return 0, false, nil
	}
	pl, err := s.loadPayload(ctx, id, r)
	if err != nil {
		return 0, false, err
	}
	out := &Outgoing{ID: id, From: r.From, To: r.To, Cc: r.Cc, Bcc: r.Bcc, ReplyTo: r.ReplyTo, Subject: r.Subject,
		HTML: pl.HTML, Text: pl.Text, Headers: pl.Headers, Attachments: pl.Attachments, Tags: r.Tags}
	start := time.Now()
	pid, sendErr := p.Send(ctx, out)
	s.metrics.latency.WithLabelValues(r.Provider).Observe(time.Since(start).Seconds())
	if sendErr == nil {
		s.metrics.deliveries.WithLabelValues(r.Provider, "sent").Inc()
		ref, _ := json.Marshal(map[string]string{"emailId": id})
		refOp := &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: providerRefID(r.Provider, pid), Type: typeProviderRef, Data: ref}}}
		_, err := s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
			r.ProviderID = pid
			r.Error = ""
			if rank[r.Status] < rank[StatusSent] {
				r.Status = StatusSent
			}
			r.addEvent(event{Type: StatusSent, At: ts(s.now())})
			return true, []*dbv1.Op{refOp}, nil
		})
		return 0, false, err
	}
	var pe *ProviderError
	if !errors.As(sendErr, &pe) {
		pe = &ProviderError{Provider: r.Provider, Reason: sendErr.Error(), Temporary: true}
	}
	retry := pe.Temporary && r.Attempts < s.cfg.MaxAttempts
	wait := s.backoff(r.Attempts, pe.RetryAfter)
	outcome := "failed"
	if retry {
		outcome = "retry"
	}
	s.metrics.deliveries.WithLabelValues(r.Provider, outcome).Inc()
	_, err = s.update(ctx, id, func(r *record) (bool, []*dbv1.Op, error) {
		if r.Status != StatusSending {
			return false, nil, nil
		}
		r.Error = pe.Error()
		if retry {
			r.Status = StatusQueued
			r.NextAttempt = s.now().Add(wait).Unix()
			r.addEvent(event{Type: "retrying", At: ts(s.now()), Reason: pe.Error() + "; next attempt in " + wait.Round(time.Second).String()})
		} else {
			r.Status = StatusFailed
			r.addEvent(event{Type: StatusFailed, At: ts(s.now()), Reason: pe.Error()})
		}
		return true, nil, nil
	})
	if err != nil {
		return 0, false, err
	}
	return wait, retry, nil
}

func providerRefID(provider, pid string) string {
	return "pid_" + hashHex(provider, pid)[:48]
}

// emailForProviderID finds dotdo's id of the message a provider knows as pid.
func (s *Service) emailForProviderID(ctx context.Context, provider, pid string) (string, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: providerRefID(provider, pid)}))
	if err != nil {
		return "", err
	}
	var ref struct {
		EmailID string `json:"emailId"`
	}
	json.Unmarshal(res.Msg.Thing.Data, &ref)
	return ref.EmailID, nil
}

// inFlight is how long a message in status sending is taken to be in the
// hands of one consumer; after it another may take over (a crash mid-send).
const inFlight = 5 * time.Minute

// sendingSince is how long ago the message's last sending event was.
func sendingSince(r *record, now time.Time) time.Duration {
	for i := len(r.Events) - 1; i >= 0; i-- {
		if r.Events[i].Type == StatusSending {
			at, err := time.Parse(time.RFC3339Nano, r.Events[i].At)
			if err != nil {
				return inFlight
			}
			return now.Sub(at)
		}
	}
	return inFlight
}

// stuckAfter is how long past its next attempt a queued message may wait
// before the sweeper queues it again.
const stuckAfter = 2 * time.Minute

// sweep queues again the messages stored as queued (or scheduled) whose
// queue message was lost: the process stopped between storing and
// queueing, or the queue gave up on it. A message taken by the sweep gets
// a new next attempt in the same conditional write, so of several
// replicas sweeping at once one queues it.
func (s *Service) sweep(ctx context.Context) (int, error) {
	now := s.now()
	where, _ := json.Marshal(map[string]any{
		"status":        map[string]any{"in": []string{StatusQueued, StatusScheduled}},
		"nextAttemptAt": map[string]any{"lt": now.Add(-stuckAfter).Unix()},
	})
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeMessage, Where: string(where), Order: "createdAt", Limit: 100}))
	if err != nil {
		return 0, err
	}
	n := 0
	for _, t := range res.Msg.Items {
		var r record
		if err := json.Unmarshal(t.Data, &r); err != nil {
			continue
		}
		r.NextAttempt = now.Add(time.Minute).Unix()
		r.addEvent(event{Type: "requeued", At: ts(now), Reason: "no delivery attempt since " + time.Unix(t.UpdatedAt/1e6, 0).UTC().Format(time.RFC3339)})
		data, _ := json.Marshal(&r)
		if _, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: t.Id, Type: typeMessage, Data: data, IfVersion: t.Version}})); err != nil {
			continue // changed meanwhile: someone else has it
		}
		b, _ := json.Marshal(msgBody{ID: t.Id})
		if _, err := s.q.Send(ctx, SendQueue, queue.Outgoing{Body: b}); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// sweeper runs sweep every interval until ctx ends.
func (s *Service) sweeper(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n, err := s.sweep(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "email sweep failed", "err", err)
			} else if n > 0 {
				s.log.InfoContext(ctx, "queued stuck emails again", "count", n)
			}
		}
	}
}
