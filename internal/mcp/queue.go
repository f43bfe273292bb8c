package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	queuev1 "github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1"
)

// Queue is what the queue tools need from the queue service: queue.RPC in
// process, its Connect client, or Remote. The permission of a queue is
// checked on the namespace named like the queue, as the REST routes do.
type Queue interface {
	Send(context.Context, *connect.Request[queuev1.SendRequest]) (*connect.Response[queuev1.SendResponse], error)
	Stats(context.Context, *connect.Request[queuev1.StatsRequest]) (*connect.Response[queuev1.StatsResponse], error)
}

// QueueMessage is one message to send.
type QueueMessage struct {
	Body         any    `json:"body" jsonschema:"the message: any JSON value for contentType json, a string for text"`
	ContentType  string `json:"contentType,omitempty" jsonschema:"json (default) or text"`
	DelaySeconds int64  `json:"delaySeconds,omitempty" jsonschema:"deliver after this many seconds (0-43200); 0 takes the queue's delivery delay"`
}

// QueueSendIn are queue_send's arguments.
type QueueSendIn struct {
	Queue    string         `json:"queue" jsonschema:"the queue's name"`
	Messages []QueueMessage `json:"messages" jsonschema:"1-100 messages, at most 128 KB each and 256 KB in all; sent as one batch: all or none"`
}

// QueueSendOut are the ids of the messages sent.
type QueueSendOut struct {
	Queue string   `json:"queue"`
	IDs   []string `json:"ids" jsonschema:"one per message, in order; every message is durable when they return"`
}

// QueueStatsIn are queue_stats' arguments.
type QueueStatsIn struct {
	Queue string `json:"queue" jsonschema:"the queue's name"`
}

// QueueStatsOut are a queue's statistics.
type QueueStatsOut struct {
	Queue              string `json:"queue"`
	Backlog            int64  `json:"backlog" jsonschema:"messages ready or in flight (not yet acknowledged)"`
	InFlight           int64  `json:"inFlight" jsonschema:"delivered, awaiting an ack or a retry delay"`
	Delayed            int64  `json:"delayed" jsonschema:"scheduled messages not yet due"`
	DeadLetterDepth    int64  `json:"deadLetterDepth" jsonschema:"backlog of the dead-letter queue"`
	OldestMessageAgeMs int64  `json:"oldestMessageAgeMs" jsonschema:"age of the oldest message ready or in flight"`
	Delivered          int64  `json:"delivered" jsonschema:"deliveries, redeliveries included"`
	Redelivered        int64  `json:"redelivered" jsonschema:"messages delivered more than once, now pending"`
	Paused             bool   `json:"paused"`
}

func (s *Server) addQueueTools() {
	q := s.opts.Queue
	addTool(s, &sdk.Tool{Name: "queue_send", Annotations: writes("Send to a queue", false, false),
		Description: "Send messages to a queue as one batch (all or none); consumers receive each at least once. Returns the message ids once they are durable. Needs queue:send on the queue."},
		func(c call, in QueueSendIn) (QueueSendOut, error) {
			if err := s.need(c.ctx, c.id, in.Queue, "queue:send"); err != nil {
				return QueueSendOut{}, err
			}
			if len(in.Messages) == 0 || len(in.Messages) > 100 {
				return QueueSendOut{}, invalid("send 1-100 messages")
			}
			req := &queuev1.SendRequest{Queue: in.Queue}
			for i, m := range in.Messages {
				om := &queuev1.OutgoingMessage{ContentType: m.ContentType, DelaySeconds: m.DelaySeconds}
				switch m.ContentType {
				case "", "json":
					b, err := json.Marshal(m.Body)
					if err != nil || m.Body == nil {
						return QueueSendOut{}, invalid("messages[%d].body is required", i)
					}
					om.Body = b
				case "text":
					str, ok := m.Body.(string)
					if !ok {
						return QueueSendOut{}, invalid("messages[%d].body must be a string for contentType text", i)
					}
					om.Body = []byte(str)
				default:
					return QueueSendOut{}, invalid("messages[%d].contentType must be json or text", i)
				}
				req.Messages = append(req.Messages, om)
			}
			res, err := q.Send(c.ctx, connect.NewRequest(req))
			if err != nil {
				return QueueSendOut{}, err
			}
			return QueueSendOut{Queue: in.Queue, IDs: res.Msg.Ids}, nil
		})

	addTool(s, &sdk.Tool{Name: "queue_stats", Annotations: readOnly("Queue statistics"),
		Description: "Show a queue's backlog, messages in flight and delayed, dead-letter depth, age of the oldest message, deliveries and whether it is paused. Needs queue:manage on the queue."},
		func(c call, in QueueStatsIn) (QueueStatsOut, error) {
			if err := s.need(c.ctx, c.id, in.Queue, "queue:manage"); err != nil {
				return QueueStatsOut{}, err
			}
			res, err := q.Stats(c.ctx, connect.NewRequest(&queuev1.StatsRequest{Queue: in.Queue}))
			if err != nil {
				return QueueStatsOut{}, err
			}
			m := res.Msg
			return QueueStatsOut{Queue: in.Queue, Backlog: m.Backlog, InFlight: m.InFlight, Delayed: m.Delayed, DeadLetterDepth: m.DeadLetterDepth,
				OldestMessageAgeMs: m.OldestMessageAgeMs, Delivered: m.Delivered, Redelivered: m.Redelivered, Paused: m.Paused}, nil
		})
}

var _ Queue = (*RemoteQueue)(nil)

// RemoteQueue is the queue binding of Remote, over /v1/queues. It is a
// type of its own because the db binding has a Stats method too.
type RemoteQueue struct{ r *Remote }

// Queue returns the queue binding of r.
func (r *Remote) Queue() *RemoteQueue { return &RemoteQueue{r: r} }

// Send implements Queue over POST /v1/queues/{name}/messages/batch.
func (q *RemoteQueue) Send(ctx context.Context, req *connect.Request[queuev1.SendRequest]) (*connect.Response[queuev1.SendResponse], error) {
	type msg struct {
		Body         json.RawMessage `json:"body"`
		ContentType  string          `json:"content_type,omitempty"`
		DelaySeconds *int64          `json:"delay_seconds,omitempty"`
	}
	body := struct {
		Messages []msg `json:"messages"`
	}{}
	for _, m := range req.Msg.Messages {
		out := msg{ContentType: m.ContentType}
		if m.ContentType == "text" {
			out.Body, _ = json.Marshal(string(m.Body))
		} else {
			out.Body = m.Body
		}
		if m.DelaySeconds != 0 {
			d := m.DelaySeconds
			out.DelaySeconds = &d
		}
		body.Messages = append(body.Messages, out)
	}
	var out struct {
		IDs []string `json:"ids"`
	}
	if _, err := q.r.do(ctx, http.MethodPost, "/v1/queues/"+url.PathEscape(req.Msg.Queue)+"/messages/batch", nil, body, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&queuev1.SendResponse{Ids: out.IDs}), nil
}

// Stats implements Queue over GET /v1/queues/{name}/stats.
func (q *RemoteQueue) Stats(ctx context.Context, req *connect.Request[queuev1.StatsRequest]) (*connect.Response[queuev1.StatsResponse], error) {
	var out struct {
		Backlog         int64 `json:"backlog"`
		InFlight        int64 `json:"in_flight"`
		Delayed         int64 `json:"delayed"`
		DeadLetterDepth int64 `json:"dead_letter_depth"`
		OldestAgeMs     int64 `json:"oldest_message_age_ms"`
		Delivered       int64 `json:"delivered"`
		Redelivered     int64 `json:"redelivered"`
		Paused          bool  `json:"paused"`
	}
	if _, err := q.r.do(ctx, http.MethodGet, "/v1/queues/"+url.PathEscape(req.Msg.Queue)+"/stats", nil, nil, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&queuev1.StatsResponse{Backlog: out.Backlog, InFlight: out.InFlight, Delayed: out.Delayed, DeadLetterDepth: out.DeadLetterDepth,
		OldestMessageAgeMs: out.OldestAgeMs, Delivered: out.Delivered, Redelivered: out.Redelivered, Paused: out.Paused}), nil
}
