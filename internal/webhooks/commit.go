package webhooks

import (
	"context"
	"errors"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/queue"
)

// Group commit: concurrent deliveries are stored in one db transaction and
// enqueued in one send, instead of one each. The database has one writer,
// so under load the transactions, not the signatures, bound how many
// deliveries a second are acknowledged. A delivery still gets its answer
// only after its own event is durable in both.

// commitReq is one delivery waiting to be stored and enqueued.
type commitReq struct {
	id   string
	ops  []*dbv1.Op
	done chan error // nil, a PreconditionFailed (duplicate), or a failure
	// storedOnly is set when the store succeeded but the send failed.
	storedOnly bool
}

const (
	maxGroup    = 100 // deliveries per transaction (and per queue send)
	maxGroupOps = 900 // the db allows 1000 ops per batch
	// maxGather bounds how long a group waits for deliveries still being
	// verified.
	maxGather = 500 * time.Microsecond
)

// store stores the event's ops and enqueues its id, grouped with others
// arriving at the same time. It returns PreconditionFailed when the event
// exists; storedOnly with an error means it was stored but not enqueued.
func (s *Service) store(id string, ops []*dbv1.Op) (storedOnly bool, err error) {
	s.startOnce.Do(func() {
		s.commits = make(chan *commitReq, 4*maxGroup)
		go s.committer()
	})
	r := &commitReq{id: id, ops: ops, done: make(chan error, 1)}
	s.commits <- r
	err = <-r.done
	return r.storedOnly, err
}

func (s *Service) committer() {
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		r, ok := <-s.commits
		if !ok {
			return
		}
		group, n := []*commitReq{r}, len(r.ops)
		// Take what is waiting; while more deliveries are on their way
		// (being read and verified), wait for them a little: one
		// transaction for many is cheaper than many.
		deadline := time.Now().Add(maxGather)
	gather:
		for len(group) < maxGroup && n < maxGroupOps {
			select {
			case r, ok := <-s.commits:
				if !ok {
					break gather
				}
				group, n = append(group, r), n+len(r.ops)
				continue
			default:
			}
			wait := time.Until(deadline)
			if s.receiving.Load() <= int64(len(group)) || wait <= 0 {
				break
			}
			timer.Reset(min(wait, 50*time.Microsecond))
			select {
			case r, ok := <-s.commits:
				timer.Stop() // Go 1.23 timers: no stale tick to drain
				if !ok {
					break gather
				}
				group, n = append(group, r), n+len(r.ops)
			case <-timer.C:
			}
		}
		s.groups.Add(1)
		s.grouped.Add(int64(len(group)))
		s.commitGroup(group)
	}
}

// commitGroup stores a group in one transaction; a duplicate in it is
// answered and taken out, and the rest tried again.
func (s *Service) commitGroup(group []*commitReq) {
	// The requests' own contexts may end; the store goes on regardless
	// (a delivery stored after its caller left is answered as a duplicate
	// when the provider retries).
	ctx := context.Background()
	for len(group) > 0 {
		var ops []*dbv1.Op
		owner := make([]int, 0, len(group))
		for i, r := range group {
			ops = append(ops, r.ops...)
			for range r.ops {
				owner = append(owner, i)
			}
		}
		err := s.batch(ctx, Namespace, ops...)
		if err == nil {
			break
		}
		var ae *apierr.Error
		if errors.As(err, &ae) && ae.Code == apierr.PreconditionFailed && ae.Index >= 0 && ae.Index < len(owner) {
			k := owner[ae.Index]
			group[k].done <- apierr.New(apierr.PreconditionFailed, "event exists")
			group = append(group[:k], group[k+1:]...)
			continue
		}
		if len(group) > 1 {
			// Something else went wrong: each alone, so one bad write does
			// not fail the others.
			for _, r := range group {
				s.commitGroup([]*commitReq{r})
			}
			return
		}
		group[0].done <- err
		return
	}
	if len(group) == 0 {
		return
	}
	msgs := make([]queue.Outgoing, len(group))
	for i, r := range group {
		msgs[i] = queue.Outgoing{Body: []byte(r.id), ContentType: "text"}
	}
	_, err := s.queue.Send(ctx, InboundQueue, msgs...)
	for _, r := range group {
		if err != nil {
			r.storedOnly = true
		}
		r.done <- err
	}
}
