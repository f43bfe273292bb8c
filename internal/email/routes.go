package email

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	emailv1 "github.com/dotdo/dotdo/internal/gen/dotdo/email/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/reqid"
)

// Prefixes are the public path prefixes of the email service.
var Prefixes = []string{"/v1/emails", "/v1/email"}

// MaxRequestBytes is the body limit the send routes need: 10 MB of
// attachments in base64 plus the rest of the email.
const MaxRequestBytes = 16 << 20

// BodyLimits are the routes whose bodies may exceed the gateway's default
// limit, with their own.
var BodyLimits = map[string]int64{"POST /v1/emails": MaxRequestBytes, "POST /v1/emails/batch": MaxRequestBytes}

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the caller may use permission on the
	// tenant namespace ns, returning the 401/403 error if not.
	Authorize func(r *http.Request, ns, permission string) error
}

// Routes registers the email service's REST routes on mux; they call the
// service through api (the *Service, or a Connect client to it in another
// process). Every route takes ?ns= (the tenant namespace, "default" when
// absent) and checks email:send, email:read or email:manage on it.
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	h := &rest{api: api, opts: opts}
	send, read, manage := h.need("email:send"), h.need("email:read"), h.need("email:manage")
	mux.HandleFunc("POST /v1/emails", send(h.send))
	mux.HandleFunc("POST /v1/emails/batch", send(h.batch))
	mux.HandleFunc("GET /v1/emails", read(h.list))
	mux.HandleFunc("GET /v1/emails/{id}", read(h.get))
	mux.HandleFunc("GET /v1/email/templates", read(h.templates))
	mux.HandleFunc("GET /v1/email/templates/{name}", read(h.template))
	mux.HandleFunc("POST /v1/email/templates/{name}/preview", read(h.preview))
	mux.HandleFunc("GET /v1/email/suppressions", read(h.suppressions))
	mux.HandleFunc("POST /v1/email/suppressions", manage(h.suppress))
	mux.HandleFunc("DELETE /v1/email/suppressions/{email}", manage(h.unsuppress))
	mux.HandleFunc("POST /v1/email/events", manage(h.event))
}

type rest struct {
	api  API
	opts RouteOptions
}

var nsRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,63}$`)

// need checks the caller's permission on the request's namespace.
func (h *rest) need(perm string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ns := r.URL.Query().Get("ns")
			if ns == "" {
				ns = DefaultNamespace
			}
			if !nsRE.MatchString(ns) {
				h.fail(w, r, apierr.New(apierr.Invalid, "ns %q is not a namespace: use 1-64 of a-z, 0-9, _ and -", ns))
				return
			}
			if err := h.authorize(r, ns, perm); err != nil {
				h.fail(w, r, err)
				return
			}
			next(w, r)
		}
	}
}

func (h *rest) authorize(r *http.Request, ns, perm string) error {
	if h.opts.Authorize != nil {
		return h.opts.Authorize(r, ns, perm)
	}
	if strings.HasPrefix(ns, "_") {
		return apierr.New(apierr.Forbidden, "namespace %s is a system namespace", ns)
	}
	return nil
}

func ns(r *http.Request) string {
	if v := r.URL.Query().Get("ns"); v != "" {
		return v
	}
	return DefaultNamespace
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

// ok writes v; email answers may hold addresses and message content, so
// they are not cached.
func (h *rest) ok(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Cache-Control", "no-store")
	apierr.WriteJSON(w, status, v)
}

// request converts a REST email to the RPC form, refusing what cannot be
// converted with the errors the service gives for the same faults.
func request(in *Input) (*emailv1.SendRequest, error) {
	if err := in.normalize(); err != nil {
		return nil, err
	}
	m := &emailv1.SendRequest{From: in.From, To: in.To, Cc: in.Cc, Bcc: in.Bcc, ReplyTo: in.ReplyTo, Subject: in.Subject,
		Html: in.HTML, Text: in.Text, Template: in.Template, Headers: in.Headers}
	if in.Data != nil {
		m.Data, _ = json.Marshal(in.Data)
	}
	for _, t := range in.Tags {
		m.Tags = append(m.Tags, &emailv1.Tag{Name: t.Name, Value: t.Value})
	}
	for j, a := range in.Attachments {
		b, err := base64.StdEncoding.DecodeString(a.Content)
		if err != nil {
			return nil, invalid("attachments[%d] (%s): content must be base64", j, a.Filename)
		}
		m.Attachments = append(m.Attachments, &emailv1.Attachment{Filename: a.Filename, Content: b, ContentType: a.ContentType, ContentId: a.ContentID})
	}
	if in.ScheduledAt != "" {
		at, err := time.Parse(time.RFC3339, in.ScheduledAt)
		if err != nil {
			return nil, invalid("scheduledAt %q: want an RFC 3339 time such as 2030-01-02T15:04:05Z", in.ScheduledAt)
		}
		m.ScheduledAt = at.Unix()
		if m.ScheduledAt <= 0 {
			m.ScheduledAt = 0
		}
	}
	return m, nil
}

func idempotencyKey(r *http.Request) string {
	k := r.Header.Get("Idempotency-Key")
	if _, set := r.Header["Idempotency-Key"]; set && k == "" {
		return "\x00" // refused by the service: an empty key is a mistake
	}
	return k
}

func testCaller(r *http.Request) bool {
	id := identity.From(r.Context())
	return id != nil && id.Test
}

func (h *rest) send(w http.ResponseWriter, r *http.Request) {
	var in Input
	if err := apierr.DecodeBody(r, &in); err != nil {
		h.fail(w, r, err)
		return
	}
	m, err := request(&in)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	m.Ns, m.IdempotencyKey, m.Test = ns(r), idempotencyKey(r), testCaller(r)
	res, err := h.api.Send(r.Context(), connect.NewRequest(m))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusAccepted, map[string]string{"id": res.Msg.Id, "status": res.Msg.Status})
}

type batchError struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (h *rest) batch(w http.ResponseWriter, r *http.Request) {
	var ins []*Input
	if err := apierr.DecodeBody(r, &ins); err != nil {
		h.fail(w, r, err)
		return
	}
	m := &emailv1.SendBatchRequest{Ns: ns(r), IdempotencyKey: idempotencyKey(r), Test: testCaller(r)}
	switch v := strings.ToLower(r.Header.Get("X-Batch-Validation")); v {
	case "", "strict":
		m.Strict = true
	case "permissive":
	default:
		h.fail(w, r, apierr.New(apierr.Invalid, "x-batch-validation %q: use strict or permissive", v))
		return
	}
	for i, in := range ins {
		if in == nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "the batch holds a null email"))
			return
		}
		e, err := request(in)
		if err != nil {
			h.fail(w, r, apierr.AtIndex(err, i))
			return
		}
		m.Emails = append(m.Emails, e)
	}
	res, err := h.api.SendBatch(r.Context(), connect.NewRequest(m))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	type item struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	out := struct {
		Data   []item       `json:"data"`
		Errors []batchError `json:"errors,omitempty"`
	}{Data: []item{}}
	for i, br := range res.Msg.Results {
		if br.Code != "" {
			out.Errors = append(out.Errors, batchError{Index: i, Code: br.Code, Message: br.Message})
			if br.Id == "" {
				continue
			}
		}
		out.Data = append(out.Data, item{ID: br.Id, Status: br.Status})
	}
	h.ok(w, http.StatusAccepted, out)
}

func limitCursor(r *http.Request) (int32, string, error) {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return 0, "", apierr.New(apierr.Invalid, "limit %q: use 1-100", v)
		}
		limit = n
	}
	return int32(limit), q.Get("cursor"), nil
}

// page writes a list answer from JSON items and a cursor.
func (h *rest) page(w http.ResponseWriter, items []byte, next string) {
	out := map[string]any{"items": json.RawMessage(items)}
	if next != "" {
		out["nextCursor"] = next
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) list(w http.ResponseWriter, r *http.Request) {
	limit, cursor, err := limitCursor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	res, err := h.api.List(r.Context(), connect.NewRequest(&emailv1.ListRequest{Ns: ns(r), To: q.Get("to"), Status: q.Get("status"), Tag: q.Get("tag"), Provider: q.Get("provider"), Limit: limit, Cursor: cursor}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.page(w, res.Msg.Items, res.Msg.NextCursor)
}

// view returns email id as JSON with its namespace, or not found when it
// belongs to another namespace than the request's.
func (h *rest) view(r *http.Request, id string) ([]byte, error) {
	res, err := h.api.Get(r.Context(), connect.NewRequest(&emailv1.GetRequest{Id: id}))
	if err != nil {
		return nil, err
	}
	var v struct {
		Ns string `json:"ns"`
	}
	json.Unmarshal(res.Msg.Email, &v)
	if v.Ns != ns(r) {
		return nil, apierr.New(apierr.NotFound, "email %s not found in namespace %s", id, ns(r))
	}
	return res.Msg.Email, nil
}

func (h *rest) get(w http.ResponseWriter, r *http.Request) {
	b, err := h.view(r, r.PathValue("id"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, json.RawMessage(b))
}

func (h *rest) templates(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.ListTemplates(r.Context(), connect.NewRequest(&emailv1.ListTemplatesRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.page(w, res.Msg.Items, "")
}

func (h *rest) template(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.ListTemplates(r.Context(), connect.NewRequest(&emailv1.ListTemplatesRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var items []TemplateInfo
	json.Unmarshal(res.Msg.Items, &items)
	for _, t := range items {
		if t.Name == r.PathValue("name") {
			h.ok(w, http.StatusOK, t)
			return
		}
	}
	h.fail(w, r, apierr.New(apierr.NotFound, "template %q not found", r.PathValue("name")))
}

func (h *rest) preview(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	data, _ := json.Marshal(body.Data)
	res, err := h.api.Preview(r.Context(), connect.NewRequest(&emailv1.PreviewRequest{Name: r.PathValue("name"), Data: data}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, Rendered{Subject: res.Msg.Subject, HTML: res.Msg.Html, Text: res.Msg.Text})
}

func (h *rest) suppressions(w http.ResponseWriter, r *http.Request) {
	limit, cursor, err := limitCursor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListSuppressions(r.Context(), connect.NewRequest(&emailv1.ListSuppressionsRequest{Ns: ns(r), Limit: limit, Cursor: cursor}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.page(w, res.Msg.Items, res.Msg.NextCursor)
}

func (h *rest) suppress(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email  string `json:"email"`
		Reason string `json:"reason"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Suppress(r.Context(), connect.NewRequest(&emailv1.SuppressRequest{Ns: ns(r), Email: body.Email, Reason: body.Reason}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, json.RawMessage(res.Msg.Suppression))
}

func (h *rest) unsuppress(w http.ResponseWriter, r *http.Request) {
	if _, err := h.api.Unsuppress(r.Context(), connect.NewRequest(&emailv1.UnsuppressRequest{Ns: ns(r), Email: r.PathValue("email")})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// eventBody is POST /v1/email/events: a provider event recorded by hand
// or by a relay; the webhooks service uses the RPC.
type eventBody struct {
	EmailID           string `json:"emailId"`
	Provider          string `json:"provider"`
	ProviderMessageID string `json:"providerMessageId"`
	Type              string `json:"type"`
	OccurredAt        string `json:"occurredAt"`
	EventID           string `json:"eventId"`
	BounceType        string `json:"bounceType"`
	Reason            string `json:"reason"`
	Link              string `json:"link"`
	Recipient         string `json:"recipient"`
}

func (h *rest) event(w http.ResponseWriter, r *http.Request) {
	var b eventBody
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	m := &emailv1.EventRequest{EmailId: b.EmailID, Provider: b.Provider, ProviderMessageId: b.ProviderMessageID, Type: b.Type, EventId: b.EventID,
		BounceType: b.BounceType, Reason: b.Reason, Link: b.Link, Recipient: b.Recipient}
	if b.OccurredAt != "" {
		t, err := parseTime(b.OccurredAt)
		if err != nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "occurredAt %q: want an RFC 3339 time", b.OccurredAt))
			return
		}
		m.OccurredAt = t.UnixMicro()
	}
	if m.EmailId != "" {
		// The event's email must belong to the namespace checked.
		if _, err := h.view(r, m.EmailId); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	res, err := h.api.RecordEvent(r.Context(), connect.NewRequest(m))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, map[string]any{"emailId": res.Msg.EmailId, "status": res.Msg.Status, "duplicate": res.Msg.Duplicate})
}
