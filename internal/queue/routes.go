package queue

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/http"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/reqid"
)

// Prefixes are the public path prefixes of the queue service.
var Prefixes = []string{"/v1/queues"}

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the caller may use permission (queue:send,
	// queue:consume, queue:manage) on the namespace named like the queue,
	// returning the error to answer if not. Nil allows tenant queues and
	// refuses system ones ('_' prefix): that is for tests of this package.
	Authorize func(r *http.Request, ns, permission string) error
}

// Permissions of the queue routes.
const (
	PermSend    = "queue:send"
	PermConsume = "queue:consume"
	PermManage  = "queue:manage"
)

// Routes registers the queue service's REST routes on mux.
func Routes(mux *http.ServeMux, s *Service, opts RouteOptions) {
	h := &rest{s: s, opts: opts}
	manage, send, consume := h.need(PermManage), h.need(PermSend), h.need(PermConsume)
	mux.HandleFunc("GET /v1/queues", h.list)
	mux.HandleFunc("PUT /v1/queues/{name}", manage(h.put))
	mux.HandleFunc("GET /v1/queues/{name}", manage(h.get))
	mux.HandleFunc("DELETE /v1/queues/{name}", manage(h.delete))
	mux.HandleFunc("GET /v1/queues/{name}/stats", manage(h.stats))
	mux.HandleFunc("POST /v1/queues/{name}/pause", manage(h.pause))
	mux.HandleFunc("POST /v1/queues/{name}/resume", manage(h.resume))
	mux.HandleFunc("POST /v1/queues/{name}/purge", manage(h.purge))
	mux.HandleFunc("POST /v1/queues/{name}/messages", send(h.send))
	mux.HandleFunc("POST /v1/queues/{name}/messages/batch", send(h.sendBatch))
	mux.HandleFunc("POST /v1/queues/{name}/messages/pull", consume(h.pull))
	mux.HandleFunc("POST /v1/queues/{name}/messages/ack", consume(h.ack))
}

type rest struct {
	s    *Service
	opts RouteOptions
}

func (h *rest) authorize(r *http.Request, ns, permission string) error {
	if h.opts.Authorize != nil {
		return h.opts.Authorize(r, ns, permission)
	}
	if IsSystem(ns) {
		return apierr.New(apierr.Forbidden, "queue %s is a system queue", ns)
	}
	return nil
}

func (h *rest) need(permission string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			name := r.PathValue("name")
			if err := ValidName(name); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := h.authorize(r, name, permission); err != nil {
				h.fail(w, r, err)
				return
			}
			next(w, r)
		}
	}
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	if e := apierr.From(err); e.Code == apierr.Internal || e.Code == apierr.Unavailable {
		h.s.log.Error("queue request failed", "path", r.URL.Path, "err", err, "requestId", reqid.From(r.Context()))
	}
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

// settingsJSON is a queue's settings on the wire. Durations are seconds;
// max_batch_timeout may have a fraction.
type settingsJSON struct {
	Name            string   `json:"name,omitempty"`
	MaxBatchSize    *int     `json:"max_batch_size,omitempty"`
	MaxBatchTimeout *float64 `json:"max_batch_timeout,omitempty"`
	MaxRetries      *int     `json:"max_retries,omitempty"`
	RetryDelay      *int64   `json:"retry_delay,omitempty"`
	DeadLetterQueue *string  `json:"dead_letter_queue,omitempty"`
	DeliveryDelay   *int64   `json:"delivery_delay,omitempty"`
	Retention       *int64   `json:"message_retention_period,omitempty"`
	Paused          *bool    `json:"paused,omitempty"`
}

func toJSON(st Settings, paused bool) map[string]any {
	return map[string]any{
		"name":                     st.Name,
		"max_batch_size":           st.MaxBatchSize,
		"max_batch_timeout":        st.MaxBatchTimeout.Seconds(),
		"max_retries":              st.MaxRetries,
		"retry_delay":              int64(st.RetryDelay / time.Second),
		"dead_letter_queue":        st.DeadLetterQueue,
		"delivery_delay":           int64(st.DeliveryDelay / time.Second),
		"message_retention_period": int64(st.Retention / time.Second),
		"paused":                   paused,
	}
}

// ParseSettings reads the body of PUT /v1/queues/{name}: absent fields take
// Cloudflare's defaults, and so does an empty body.
func ParseSettings(name string, b []byte) (Settings, error) {
	var in settingsJSON
	if len(bytes.TrimSpace(b)) > 0 {
		if err := apierr.DecodeJSON(b, &in); err != nil {
			return Settings{}, err
		}
	}
	if in.Name != "" && in.Name != name {
		return Settings{}, apierr.New(apierr.Invalid, "name %q in the body differs from the path's %q", in.Name, name)
	}
	if in.Paused != nil {
		return Settings{}, apierr.New(apierr.Invalid, "paused is read-only: use POST /v1/queues/%s/pause or /resume", name)
	}
	st := Defaults(name)
	secs := func(field string, v *int64, dst *time.Duration, maxSecs int64) error {
		if v == nil {
			return nil
		}
		if *v < 0 || *v > maxSecs {
			return apierr.New(apierr.Invalid, "%s %d: want 0-%d seconds", field, *v, maxSecs)
		}
		*dst = time.Duration(*v) * time.Second
		return nil
	}
	if in.MaxBatchSize != nil {
		st.MaxBatchSize = *in.MaxBatchSize
		if st.MaxBatchSize == 0 {
			return Settings{}, apierr.New(apierr.Invalid, "max_batch_size 0: want 1-100")
		}
	}
	if in.MaxBatchTimeout != nil {
		v := *in.MaxBatchTimeout
		if math.IsNaN(v) || v < 0 || v > 60 {
			return Settings{}, apierr.New(apierr.Invalid, "max_batch_timeout %v: want 0-60 seconds", v)
		}
		st.MaxBatchTimeout = time.Duration(v * float64(time.Second))
	}
	if in.MaxRetries != nil {
		st.MaxRetries = *in.MaxRetries
	}
	if err := secs("retry_delay", in.RetryDelay, &st.RetryDelay, 43200); err != nil {
		return Settings{}, err
	}
	if err := secs("delivery_delay", in.DeliveryDelay, &st.DeliveryDelay, 43200); err != nil {
		return Settings{}, err
	}
	if err := secs("message_retention_period", in.Retention, &st.Retention, int64(MaxRetention/time.Second)); err != nil {
		return Settings{}, err
	}
	if in.Retention != nil && *in.Retention < 60 {
		return Settings{}, apierr.New(apierr.Invalid, "message_retention_period %d: want 60 to 1209600 seconds", *in.Retention)
	}
	if in.DeadLetterQueue != nil {
		st.DeadLetterQueue = *in.DeadLetterQueue
	}
	if err := st.normalize(); err != nil {
		return Settings{}, err
	}
	return st, nil
}

func (h *rest) put(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	st, err := ParseSettings(name, b)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if st.DeadLetterQueue != "" {
		// Failed messages are sent there: the caller must be allowed to.
		if err := h.authorize(r, st.DeadLetterQueue, PermManage); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	_, err = h.s.Queue(r.Context(), name)
	created := apierr.Is(err, apierr.NotFound)
	if err != nil && !created {
		h.fail(w, r, err)
		return
	}
	if err := h.s.EnsureQueue(r.Context(), st); err != nil {
		h.fail(w, r, err)
		return
	}
	rec, err := h.s.record(r.Context(), name)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	apierr.WriteJSON(w, status, toJSON(rec.Settings, rec.Paused))
}

func (h *rest) get(w http.ResponseWriter, r *http.Request) {
	rec, err := h.s.record(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, toJSON(rec.Settings, rec.Paused))
}

// list returns the queues on which the caller holds any queue permission.
func (h *rest) list(w http.ResponseWriter, r *http.Request) {
	qs, err := h.s.Queues(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := []map[string]any{}
	for _, st := range qs {
		visible := false
		for _, p := range []string{PermManage, PermSend, PermConsume} {
			err := h.authorize(r, st.Name, p)
			if apierr.Is(err, apierr.Unauthenticated) {
				h.fail(w, r, err)
				return
			}
			if err == nil {
				visible = true
				break
			}
		}
		if visible {
			rec, err := h.s.record(r.Context(), st.Name)
			if err == nil {
				out = append(out, toJSON(rec.Settings, rec.Paused))
			}
		}
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"queues": out})
}

func (h *rest) delete(w http.ResponseWriter, r *http.Request) {
	if err := h.s.DeleteQueue(r.Context(), r.PathValue("name")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) stats(w http.ResponseWriter, r *http.Request) {
	st, err := h.s.Stats(r.Context(), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{
		"backlog": st.Backlog, "in_flight": st.InFlight, "delayed": st.Delayed,
		"dead_letter_depth": st.DeadLetterDepth, "oldest_message_age_ms": st.OldestAge.Milliseconds(),
		"delivered": st.Delivered, "redelivered": st.Redelivered, "paused": st.Paused,
		"process": map[string]int64{
			"sent": st.Sent, "acked": st.Acked, "retried": st.Retried,
			"dead_lettered": st.DeadLettered, "dropped": st.Dropped, "handler_errors": st.HandlerErrors,
		},
	})
}

func (h *rest) op(f func(*Service, *http.Request, string) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := f(h.s, r, r.PathValue("name")); err != nil {
			h.fail(w, r, err)
			return
		}
		rec, err := h.s.record(r.Context(), r.PathValue("name"))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		apierr.WriteJSON(w, http.StatusOK, toJSON(rec.Settings, rec.Paused))
	}
}

func (h *rest) pause(w http.ResponseWriter, r *http.Request) {
	h.op(func(s *Service, r *http.Request, q string) error { return s.Pause(r.Context(), q) })(w, r)
}

func (h *rest) resume(w http.ResponseWriter, r *http.Request) {
	h.op(func(s *Service, r *http.Request, q string) error { return s.Resume(r.Context(), q) })(w, r)
}

func (h *rest) purge(w http.ResponseWriter, r *http.Request) {
	h.op(func(s *Service, r *http.Request, q string) error { return s.Purge(r.Context(), q) })(w, r)
}

// messageJSON is one message on the wire: body is any JSON value for json,
// a string for text, a base64 string for bytes.
type messageJSON struct {
	Body         json.RawMessage `json:"body"`
	ContentType  string          `json:"content_type,omitempty"`
	DelaySeconds *int64          `json:"delay_seconds,omitempty"`
}

type batchJSON struct {
	Messages     []messageJSON `json:"messages"`
	DelaySeconds *int64        `json:"delay_seconds,omitempty"`
}

func delaySeconds(v *int64) (time.Duration, error) {
	if v == nil {
		return 0, nil
	}
	if *v < 0 || *v > 43200 {
		return 0, apierr.New(apierr.Invalid, "delay_seconds %d: want 0-43200", *v)
	}
	return time.Duration(*v) * time.Second, nil
}

func (m messageJSON) outgoing(batchDelay time.Duration) (Outgoing, error) {
	o := Outgoing{ContentType: m.ContentType}
	if o.ContentType == "" {
		o.ContentType = "json"
	}
	if len(bytes.TrimSpace(m.Body)) == 0 {
		return o, apierr.New(apierr.Invalid, "body is required")
	}
	switch o.ContentType {
	case "json":
		// The decoder has parsed the whole document: m.Body is valid JSON.
		o.Body = m.Body
	case "text", "bytes":
		var s string
		if err := json.Unmarshal(m.Body, &s); err != nil {
			return o, apierr.New(apierr.Invalid, "body must be a JSON string for content_type %s", o.ContentType)
		}
		o.Body = []byte(s)
		if o.ContentType == "bytes" {
			b, err := base64.StdEncoding.DecodeString(s)
			if err != nil {
				return o, apierr.New(apierr.Invalid, "body must be base64 for content_type bytes")
			}
			o.Body = b
		}
	default:
		return o, apierr.New(apierr.Invalid, "content_type %q: use json, text or bytes", m.ContentType)
	}
	d, err := delaySeconds(m.DelaySeconds)
	if err != nil {
		return o, err
	}
	if m.DelaySeconds == nil {
		d = batchDelay
	}
	o.Delay = d
	return o, nil
}

// ParseMessages reads the body of POST .../messages (batch false) or
// .../messages/batch (batch true) into messages to send.
func ParseMessages(b []byte, batch bool) ([]Outgoing, error) {
	if !batch {
		var m messageJSON
		if err := apierr.DecodeJSON(b, &m); err != nil {
			return nil, err
		}
		o, err := m.outgoing(0)
		if err != nil {
			return nil, err
		}
		return []Outgoing{o}, nil
	}
	var in batchJSON
	if err := apierr.DecodeJSON(b, &in); err != nil {
		return nil, err
	}
	if len(in.Messages) == 0 {
		return nil, apierr.New(apierr.Invalid, "messages is empty")
	}
	if len(in.Messages) > MaxBatchMessages {
		return nil, apierr.New(apierr.Invalid, "%d messages in a batch: at most %d", len(in.Messages), MaxBatchMessages)
	}
	d, err := delaySeconds(in.DelaySeconds)
	if err != nil {
		return nil, err
	}
	out := make([]Outgoing, len(in.Messages))
	for i, m := range in.Messages {
		if out[i], err = m.outgoing(d); err != nil {
			return nil, apierr.AtIndex(err, i)
		}
	}
	return out, nil
}

func (h *rest) send(w http.ResponseWriter, r *http.Request) { h.doSend(w, r, false) }

func (h *rest) sendBatch(w http.ResponseWriter, r *http.Request) { h.doSend(w, r, true) }

func (h *rest) doSend(w http.ResponseWriter, r *http.Request, batch bool) {
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	msgs, err := ParseMessages(b, batch)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ids, err := h.s.send(r.Context(), r.PathValue("name"), msgs, false)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if !batch {
		apierr.WriteJSON(w, http.StatusCreated, map[string]any{"id": ids[0]})
		return
	}
	apierr.WriteJSON(w, http.StatusCreated, map[string]any{"ids": ids})
}

type pullJSON struct {
	BatchSize         *int   `json:"batch_size,omitempty"`
	VisibilityTimeout *int64 `json:"visibility_timeout_ms,omitempty"`
}

func (h *rest) pull(w http.ResponseWriter, r *http.Request) {
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// An empty body pulls with the defaults.
	var in pullJSON
	if len(bytes.TrimSpace(b)) > 0 {
		if err := apierr.DecodeJSON(b, &in); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	n, vis := 5, DefaultVisibility
	if in.BatchSize != nil {
		if n = *in.BatchSize; n < 1 || n > 100 {
			h.fail(w, r, apierr.New(apierr.Invalid, "batch_size %d: want 1-100", n))
			return
		}
	}
	if in.VisibilityTimeout != nil {
		v := *in.VisibilityTimeout
		if v < 1 || v > MaxVisibility.Milliseconds() {
			h.fail(w, r, apierr.New(apierr.Invalid, "visibility_timeout_ms %d: want 1 to 43200000", v))
			return
		}
		vis = time.Duration(v) * time.Millisecond
	}
	msgs, err := h.s.Pull(r.Context(), r.PathValue("name"), n, vis)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]map[string]any, len(msgs))
	for i, m := range msgs {
		out[i] = map[string]any{
			"id": m.ID, "lease_id": m.LeaseID, "timestamp_ms": m.Timestamp.UnixMilli(),
			"attempts": m.Attempts, "content_type": m.ContentType, "body": wireBody(m.ContentType, m.Body),
		}
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"messages": out})
}

// wireBody is a body as it goes out in JSON: json bodies as themselves,
// text as a string, bytes in base64.
func wireBody(ct string, b []byte) any {
	switch ct {
	case "json":
		if json.Valid(b) {
			return json.RawMessage(b)
		}
		return string(b)
	case "text":
		return string(b)
	}
	return base64.StdEncoding.EncodeToString(b)
}

type ackJSON struct {
	Acks []struct {
		LeaseID string `json:"lease_id"`
	} `json:"acks"`
	Retries []struct {
		LeaseID      string `json:"lease_id"`
		DelaySeconds *int64 `json:"delay_seconds,omitempty"`
	} `json:"retries"`
}

// ParseAck reads the body of POST .../messages/ack.
func ParseAck(b []byte) (acks []string, retries []LeaseRetry, err error) {
	var in ackJSON
	if err := apierr.DecodeJSON(b, &in); err != nil {
		return nil, nil, err
	}
	if len(in.Acks)+len(in.Retries) == 0 {
		return nil, nil, apierr.New(apierr.Invalid, "nothing to acknowledge: give acks or retries")
	}
	for i, a := range in.Acks {
		if a.LeaseID == "" {
			return nil, nil, apierr.New(apierr.Invalid, "acks[%d].lease_id is required", i)
		}
		acks = append(acks, a.LeaseID)
	}
	for i, rt := range in.Retries {
		if rt.LeaseID == "" {
			return nil, nil, apierr.New(apierr.Invalid, "retries[%d].lease_id is required", i)
		}
		d, err := delaySeconds(rt.DelaySeconds)
		if err != nil {
			return nil, nil, err
		}
		retries = append(retries, LeaseRetry{LeaseID: rt.LeaseID, Delay: d})
	}
	return acks, retries, nil
}

func (h *rest) ack(w http.ResponseWriter, r *http.Request) {
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	acks, retries, err := ParseAck(b)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.s.Ack(r.Context(), r.PathValue("name"), acks, retries)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if res.Warnings == nil {
		res.Warnings = []string{}
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"ackCount": res.Acked, "retryCount": res.Retried, "warnings": res.Warnings})
}
