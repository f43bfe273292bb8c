package email

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Statuses of a message.
const (
	StatusScheduled       = "scheduled"
	StatusQueued          = "queued"
	StatusSending         = "sending"
	StatusSent            = "sent"
	StatusDelivered       = "delivered"
	StatusDeliveryDelayed = "delivery_delayed"
	StatusBounced         = "bounced"
	StatusComplained      = "complained"
	StatusFailed          = "failed"
	StatusSuppressed      = "suppressed"
)

// rank orders statuses: an event moves a message only to a status of
// higher rank, so events that arrive late never move it back.
var rank = map[string]int{
	StatusScheduled:       0,
	StatusQueued:          1,
	StatusSending:         2,
	StatusSent:            3,
	StatusDeliveryDelayed: 4,
	StatusDelivered:       5,
	StatusFailed:          6,
	StatusBounced:         6,
	StatusComplained:      7,
	StatusSuppressed:      8,
}

// maxEvents bounds the timeline kept in a message; later opens and
// clicks are counted but not listed.
const maxEvents = 200

// inlinePayload is the largest payload kept in the message thing itself;
// larger ones go to EmailPart things in chunks.
const (
	inlinePayload = 64 << 10
	partSize      = 192 << 10
)

// event is one entry of a message's timeline.
type event struct {
	Type      string `json:"type"`
	At        string `json:"at"`
	ID        string `json:"id,omitempty"` // provider event id, for dedupe
	Reason    string `json:"reason,omitempty"`
	Link      string `json:"link,omitempty"`
	Recipient string `json:"recipient,omitempty"`
}

// payload is what a provider needs beyond the envelope.
type payload struct {
	HTML        string            `json:"html,omitempty"`
	Text        string            `json:"text,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
}

// record is a message as stored in _email.
type record struct {
	Ns          string   `json:"ns"`
	From        string   `json:"from"`
	To          []string `json:"to"`
	Cc          []string `json:"cc,omitempty"`
	Bcc         []string `json:"bcc,omitempty"`
	ReplyTo     []string `json:"replyTo,omitempty"`
	Subject     string   `json:"subject"`
	Template    string   `json:"template,omitempty"`
	Tags        []Tag    `json:"tags,omitempty"`
	Status      string   `json:"status"`
	Provider    string   `json:"provider"`
	ProviderID  string   `json:"providerId,omitempty"`
	Test        bool     `json:"test,omitempty"`
	ScheduledAt string   `json:"scheduledAt,omitempty"`
	CreatedAt   string   `json:"createdAt"`
	Attempts    int      `json:"attempts"`
	// NextAttempt (Unix seconds) is when the queue should bring the
	// message back; the sweeper re-queues a queued message long past it.
	NextAttempt int64   `json:"nextAttemptAt,omitempty"`
	Error       string  `json:"error,omitempty"`
	Opens       int     `json:"opens,omitempty"`
	Clicks      int     `json:"clicks,omitempty"`
	Events      []event `json:"events"`
	// Rcpt and TagKeys are lower-cased addresses and name, name=value
	// strings, for the list filters.
	Rcpt    []string `json:"rcpt"`
	TagKeys []string `json:"tagKeys,omitempty"`
	// Payload is inline when small; otherwise Parts EmailPart things
	// hold its JSON.
	Payload *payload `json:"payload,omitempty"`
	Parts   int      `json:"parts,omitempty"`
	Size    int      `json:"size"`
}

func partID(id string, i int) string { return fmt.Sprintf("%s.p%d", id, i) }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

// addEvent appends e to the timeline, counting opens and clicks.
func (r *record) addEvent(e event) {
	switch e.Type {
	case "opened":
		r.Opens++
	case "clicked":
		r.Clicks++
	}
	if len(r.Events) >= maxEvents {
		return
	}
	r.Events = append(r.Events, e)
}

func (s *Service) getRecord(ctx context.Context, id string) (*record, int64, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: id}))
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, 0, apierr.New(apierr.NotFound, "email %s not found", id)
		}
		return nil, 0, err
	}
	t := res.Msg.Thing
	if t.Type != typeMessage {
		return nil, 0, apierr.New(apierr.NotFound, "email %s not found", id)
	}
	var r record
	if err := json.Unmarshal(t.Data, &r); err != nil {
		return nil, 0, fmt.Errorf("decode email %s: %w", id, err)
	}
	return &r, t.Version, nil
}

// loadPayload returns the message's payload, from its parts if need be.
func (s *Service) loadPayload(ctx context.Context, id string, r *record) (*payload, error) {
	if r.Payload != nil || r.Parts == 0 {
		if r.Payload == nil {
			return &payload{}, nil
		}
		return r.Payload, nil
	}
	var buf []byte
	for i := 0; i < r.Parts; i++ {
		res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: partID(id, i)}))
		if err != nil {
			return nil, fmt.Errorf("load part %d of email %s: %w", i, id, err)
		}
		var part struct {
			Chunk string `json:"chunk"`
		}
		if err := json.Unmarshal(res.Msg.Thing.Data, &part); err != nil {
			return nil, fmt.Errorf("decode part %d of email %s: %w", i, id, err)
		}
		buf = append(buf, part.Chunk...)
	}
	var p payload
	if err := json.Unmarshal(buf, &p); err != nil {
		return nil, fmt.Errorf("decode payload of email %s: %w", id, err)
	}
	return &p, nil
}

// update applies change to the stored message under optimistic
// concurrency, retrying when another writer got there first. change
// returns false to leave the message as it is. extra ops go in the same
// atomic batch.
func (s *Service) update(ctx context.Context, id string, change func(r *record) (bool, []*dbv1.Op, error)) (*record, error) {
	for attempt := 0; ; attempt++ {
		r, version, err := s.getRecord(ctx, id)
		if err != nil {
			return nil, err
		}
		before := r.Status
		ok, extra, err := change(r)
		if err != nil || !ok {
			return r, err
		}
		data, err := json.Marshal(r)
		if err != nil {
			return nil, err
		}
		ops := append([]*dbv1.Op{{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: id, Type: typeMessage, Data: data, IfVersion: version}}}}, extra...)
		if len(ops) == 1 {
			_, err = s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: ops[0].GetWrite()}))
		} else {
			_, err = s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops}))
		}
		if err == nil {
			if r.Status != before {
				s.notifyStatus(StatusChange{Ns: r.Ns, ID: id, To: r.To, Status: r.Status})
			}
			return r, nil
		}
		if !apierr.Is(err, apierr.PreconditionFailed) || attempt >= 20 {
			return nil, err
		}
	}
}

// StatusChange is an email whose status changed (sent, delivered,
// bounced, ...).
type StatusChange struct {
	Ns, ID string
	To     []string
	Status string
}

// OnStatus sets f to be called (it must not block) after each change of
// an email's status is stored. nil removes it.
func (s *Service) OnStatus(f func(StatusChange)) {
	if f == nil {
		s.onStatus.Store(nil)
		return
	}
	s.onStatus.Store(&f)
}

func (s *Service) notifyStatus(c StatusChange) {
	if f := s.onStatus.Load(); f != nil {
		(*f)(c)
	}
}
