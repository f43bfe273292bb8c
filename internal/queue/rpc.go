package queue

import (
	"context"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	queuev1 "github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/queue/v1/queuev1connect"
)

// RPC serves the Connect contract (dotdo.queue.v1.QueueService) from a
// Service. Connect paths take only internal callers (the gateway checks
// the internal token), so it checks no permissions.
type RPC struct{ S *Service }

var _ queuev1connect.QueueServiceHandler = RPC{}

func settingsPB(st Settings, paused bool) *queuev1.Settings {
	return &queuev1.Settings{
		Name: st.Name, MaxBatchSize: int32(st.MaxBatchSize), MaxBatchTimeoutMs: st.MaxBatchTimeout.Milliseconds(),
		MaxRetries: int32(st.MaxRetries), RetryDelaySeconds: int64(st.RetryDelay / time.Second),
		DeadLetterQueue: st.DeadLetterQueue, DeliveryDelaySeconds: int64(st.DeliveryDelay / time.Second),
		RetentionSeconds: int64(st.Retention / time.Second), Paused: paused,
	}
}

func checkSecs(field string, v, max int64) error {
	if v < 0 || v > max {
		return apierr.New(apierr.Invalid, "%s %d: want 0-%d", field, v, max)
	}
	return nil
}

func (r RPC) PutQueue(ctx context.Context, req *connect.Request[queuev1.PutQueueRequest]) (*connect.Response[queuev1.PutQueueResponse], error) {
	in := req.Msg.GetSettings()
	if in == nil {
		return nil, apierr.ToConnect(apierr.New(apierr.Invalid, "settings are required"))
	}
	for _, c := range []struct {
		f      string
		v, max int64
	}{{"max_batch_timeout_ms", in.MaxBatchTimeoutMs, 60000}, {"retry_delay_seconds", in.RetryDelaySeconds, 43200},
		{"delivery_delay_seconds", in.DeliveryDelaySeconds, 43200}, {"retention_seconds", in.RetentionSeconds, int64(MaxRetention / time.Second)}} {
		if err := checkSecs(c.f, c.v, c.max); err != nil {
			return nil, apierr.ToConnect(err)
		}
	}
	st := Settings{
		Name: in.Name, MaxBatchSize: int(in.MaxBatchSize), MaxBatchTimeout: time.Duration(in.MaxBatchTimeoutMs) * time.Millisecond,
		MaxRetries: int(in.MaxRetries), RetryDelay: time.Duration(in.RetryDelaySeconds) * time.Second,
		DeadLetterQueue: in.DeadLetterQueue, DeliveryDelay: time.Duration(in.DeliveryDelaySeconds) * time.Second,
		Retention: time.Duration(in.RetentionSeconds) * time.Second,
	}
	if req.Msg.UseDefaults {
		d := Defaults(in.Name)
		if st.MaxRetries == 0 {
			st.MaxRetries = d.MaxRetries
		}
		if st.MaxBatchTimeout == 0 {
			st.MaxBatchTimeout = d.MaxBatchTimeout
		}
	}
	if err := r.S.EnsureQueue(ctx, st); err != nil {
		return nil, apierr.ToConnect(err)
	}
	rec, err := r.S.record(ctx, st.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.PutQueueResponse{Settings: settingsPB(rec.Settings, rec.Paused)}), nil
}

func (r RPC) GetQueue(ctx context.Context, req *connect.Request[queuev1.GetQueueRequest]) (*connect.Response[queuev1.GetQueueResponse], error) {
	rec, err := r.S.record(ctx, req.Msg.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.GetQueueResponse{Settings: settingsPB(rec.Settings, rec.Paused)}), nil
}

func (r RPC) DeleteQueue(ctx context.Context, req *connect.Request[queuev1.DeleteQueueRequest]) (*connect.Response[queuev1.DeleteQueueResponse], error) {
	if err := r.S.DeleteQueue(ctx, req.Msg.Name); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.DeleteQueueResponse{}), nil
}

func (r RPC) ListQueues(ctx context.Context, req *connect.Request[queuev1.ListQueuesRequest]) (*connect.Response[queuev1.ListQueuesResponse], error) {
	qs, err := r.S.Queues(ctx)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	out := &queuev1.ListQueuesResponse{}
	for _, st := range qs {
		out.Queues = append(out.Queues, settingsPB(st, r.S.paused(st.Name)))
	}
	return connect.NewResponse(out), nil
}

func (r RPC) Send(ctx context.Context, req *connect.Request[queuev1.SendRequest]) (*connect.Response[queuev1.SendResponse], error) {
	if err := checkSecs("delay_seconds", req.Msg.DelaySeconds, 43200); err != nil {
		return nil, apierr.ToConnect(err)
	}
	if len(req.Msg.Messages) > MaxBatchMessages {
		return nil, apierr.ToConnect(apierr.New(apierr.Invalid, "%d messages in a batch: at most %d", len(req.Msg.Messages), MaxBatchMessages))
	}
	msgs := make([]Outgoing, len(req.Msg.Messages))
	for i, m := range req.Msg.Messages {
		if err := checkSecs("delay_seconds", m.DelaySeconds, 43200); err != nil {
			return nil, apierr.ToConnect(apierr.AtIndex(err, i))
		}
		d := m.DelaySeconds
		if d == 0 {
			d = req.Msg.DelaySeconds
		}
		msgs[i] = Outgoing{Body: m.Body, ContentType: m.ContentType, Delay: time.Duration(d) * time.Second}
	}
	ids, err := r.S.Send(ctx, req.Msg.Queue, msgs...)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.SendResponse{Ids: ids}), nil
}

func (r RPC) Pull(ctx context.Context, req *connect.Request[queuev1.PullRequest]) (*connect.Response[queuev1.PullResponse], error) {
	if v := req.Msg.VisibilityTimeoutMs; v < 0 || v > MaxVisibility.Milliseconds() {
		return nil, apierr.ToConnect(apierr.New(apierr.Invalid, "visibility_timeout_ms %d: want 1 to 43200000", v))
	}
	msgs, err := r.S.Pull(ctx, req.Msg.Queue, int(req.Msg.BatchSize), time.Duration(req.Msg.VisibilityTimeoutMs)*time.Millisecond)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	out := &queuev1.PullResponse{}
	for _, m := range msgs {
		out.Messages = append(out.Messages, &queuev1.PulledMessage{
			Id: m.ID, LeaseId: m.LeaseID, TimestampMs: m.Timestamp.UnixMilli(), Attempts: int32(m.Attempts),
			Body: m.Body, ContentType: m.ContentType,
		})
	}
	return connect.NewResponse(out), nil
}

func (r RPC) Ack(ctx context.Context, req *connect.Request[queuev1.AckRequest]) (*connect.Response[queuev1.AckResponse], error) {
	var retries []LeaseRetry
	for _, rt := range req.Msg.Retries {
		if err := checkSecs("delay_seconds", rt.DelaySeconds, 43200); err != nil {
			return nil, apierr.ToConnect(err)
		}
		retries = append(retries, LeaseRetry{LeaseID: rt.LeaseId, Delay: time.Duration(rt.DelaySeconds) * time.Second})
	}
	res, err := r.S.Ack(ctx, req.Msg.Queue, req.Msg.Acks, retries)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.AckResponse{AckCount: int32(res.Acked), RetryCount: int32(res.Retried), Warnings: res.Warnings}), nil
}

func (r RPC) Stats(ctx context.Context, req *connect.Request[queuev1.StatsRequest]) (*connect.Response[queuev1.StatsResponse], error) {
	st, err := r.S.Stats(ctx, req.Msg.Queue)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.StatsResponse{
		Backlog: st.Backlog, InFlight: st.InFlight, Delayed: st.Delayed, DeadLetterDepth: st.DeadLetterDepth,
		OldestMessageAgeMs: st.OldestAge.Milliseconds(), Delivered: st.Delivered, Redelivered: st.Redelivered,
		Paused: st.Paused, Sent: st.Sent, Acked: st.Acked, Retried: st.Retried, DeadLettered: st.DeadLettered,
		Dropped: st.Dropped, HandlerErrors: st.HandlerErrors,
	}), nil
}

func (r RPC) Pause(ctx context.Context, req *connect.Request[queuev1.PauseRequest]) (*connect.Response[queuev1.PauseResponse], error) {
	if err := r.S.Pause(ctx, req.Msg.Queue); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.PauseResponse{}), nil
}

func (r RPC) Resume(ctx context.Context, req *connect.Request[queuev1.ResumeRequest]) (*connect.Response[queuev1.ResumeResponse], error) {
	if err := r.S.Resume(ctx, req.Msg.Queue); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.ResumeResponse{}), nil
}

func (r RPC) Purge(ctx context.Context, req *connect.Request[queuev1.PurgeRequest]) (*connect.Response[queuev1.PurgeResponse], error) {
	if err := r.S.Purge(ctx, req.Msg.Queue); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.PurgeResponse{}), nil
}

func (r RPC) Health(ctx context.Context, req *connect.Request[queuev1.HealthRequest]) (*connect.Response[queuev1.HealthResponse], error) {
	if err := r.S.Health(ctx); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&queuev1.HealthResponse{Status: "ok"}), nil
}
