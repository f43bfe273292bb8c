package email

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"github.com/dotdo/dotdo/internal/apierr"
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

// Routes registers the email service's REST routes on mux. Every route
// takes ?ns= (the tenant namespace, "default" when absent) and checks
// email:send, email:read or email:manage on it.
func Routes(mux *http.ServeMux, s *Service, opts RouteOptions) {
	h := &rest{s: s, opts: opts}
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
	s    *Service
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

func (h *rest) ok(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// decode reads a JSON body strictly: unknown fields and trailing data are
// refused, the body limit is 413.
func decode(r *http.Request, v any) error {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return apierr.New(apierr.TooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		return apierr.New(apierr.Invalid, "reading request body: %v", err)
	}
	return decodeJSON(b, v)
}

func decodeJSON(b []byte, v any) error {
	if len(strings.TrimSpace(string(b))) == 0 {
		return apierr.New(apierr.Invalid, "request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.New(apierr.Invalid, "invalid JSON body: %s", jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return apierr.New(apierr.Invalid, "invalid JSON body: trailing data after the value")
	}
	return nil
}

func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		want := "a " + te.Type.Kind().String()
		switch te.Type.Kind() {
		case reflect.Slice, reflect.Array:
			want = "an array"
		case reflect.Map, reflect.Struct:
			want = "an object"
		}
		if te.Field != "" {
			return fmt.Sprintf("field %s must be %s, not %s", te.Field, want, te.Value)
		}
		return fmt.Sprintf("the body must be %s, not %s", want, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

func options(r *http.Request) Options {
	o := Options{IdempotencyKey: r.Header.Get("Idempotency-Key")}
	if _, set := r.Header["Idempotency-Key"]; set && o.IdempotencyKey == "" {
		o.IdempotencyKey = "\x00" // refused by checkKey: an empty key is a mistake
	}
	if id := identity.From(r.Context()); id != nil && id.Test {
		o.Test = true
	}
	return o
}

func (h *rest) send(w http.ResponseWriter, r *http.Request) {
	var in Input
	if err := decode(r, &in); err != nil {
		h.fail(w, r, err)
		return
	}
	in.Ns = ns(r)
	res, err := h.s.SendEmail(r.Context(), &in, options(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusAccepted, map[string]string{"id": res.ID, "status": res.Status})
}

type batchError struct {
	Index   int    `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (h *rest) batch(w http.ResponseWriter, r *http.Request) {
	var ins []*Input
	if err := decode(r, &ins); err != nil {
		h.fail(w, r, err)
		return
	}
	o := options(r)
	switch v := strings.ToLower(r.Header.Get("X-Batch-Validation")); v {
	case "", "strict":
		o.Strict = true
	case "permissive":
	default:
		h.fail(w, r, apierr.New(apierr.Invalid, "x-batch-validation %q: use strict or permissive", v))
		return
	}
	for _, in := range ins {
		if in == nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "the batch holds a null email"))
			return
		}
		in.Ns = ns(r)
	}
	rs, err := h.s.SendBatch(r.Context(), ins, o)
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
	for i, res := range rs {
		if res.Err != nil {
			out.Errors = append(out.Errors, batchError{Index: i, Code: string(res.Err.Code), Message: res.Err.Message})
			if res.ID == "" {
				continue
			}
		}
		out.Data = append(out.Data, item{ID: res.ID, Status: res.Status})
	}
	h.ok(w, http.StatusAccepted, out)
}

func limitCursor(r *http.Request) (int, string, error) {
	q := r.URL.Query()
	limit := 50
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			return 0, "", apierr.New(apierr.Invalid, "limit %q: use 1-100", v)
		}
		limit = n
	}
	return limit, q.Get("cursor"), nil
}

func (h *rest) list(w http.ResponseWriter, r *http.Request) {
	limit, cursor, err := limitCursor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	f := Filter{To: q.Get("to"), Status: q.Get("status"), Tag: q.Get("tag")}
	items, next, err := h.s.List(r.Context(), ns(r), f, limit, cursor)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := map[string]any{"items": items}
	if next != "" {
		out["nextCursor"] = next
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) get(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	v, err := h.s.View(r.Context(), id)
	if err == nil && v.Ns != ns(r) {
		// An email of another namespace is not found from this one.
		err = apierr.New(apierr.NotFound, "email %s not found in namespace %s", id, ns(r))
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, v)
}

type templateInfo struct {
	Name      string   `json:"name"`
	Variables []string `json:"variables"`
	Source    string   `json:"source"`
}

func info(t *Template) templateInfo {
	vars := t.Variables
	if vars == nil {
		vars = []string{}
	}
	return templateInfo{Name: t.Name, Variables: vars, Source: t.Source}
}

func (h *rest) templates(w http.ResponseWriter, r *http.Request) {
	out := []templateInfo{}
	for _, t := range h.s.tpl.List() {
		out = append(out, info(t))
	}
	h.ok(w, http.StatusOK, map[string]any{"items": out})
}

func (h *rest) template(w http.ResponseWriter, r *http.Request) {
	t, ok := h.s.tpl.Lookup(r.PathValue("name"))
	if !ok {
		h.fail(w, r, apierr.New(apierr.NotFound, "template %q not found", r.PathValue("name")))
		return
	}
	h.ok(w, http.StatusOK, info(t))
}

func (h *rest) preview(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if _, ok := h.s.tpl.Lookup(name); !ok {
		h.fail(w, r, apierr.New(apierr.NotFound, "template %q not found", name))
		return
	}
	var body struct {
		Data map[string]any `json:"data"`
	}
	if err := decode(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	out, err := h.s.tpl.Render(name, body.Data)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) suppressions(w http.ResponseWriter, r *http.Request) {
	limit, cursor, err := limitCursor(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items, next, err := h.s.Suppressions(r.Context(), ns(r), limit, cursor)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := map[string]any{"items": items}
	if next != "" {
		out["nextCursor"] = next
	}
	h.ok(w, http.StatusOK, out)
}

func (h *rest) suppress(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Email  string `json:"email"`
		Reason string `json:"reason"`
	}
	if err := decode(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	sup, err := h.s.Suppress(r.Context(), ns(r), body.Email, body.Reason)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusCreated, sup)
}

func (h *rest) unsuppress(w http.ResponseWriter, r *http.Request) {
	if err := h.s.Unsuppress(r.Context(), ns(r), r.PathValue("email")); err != nil {
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
	if err := decode(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	ev := Event{EmailID: b.EmailID, Provider: b.Provider, ProviderMessageID: b.ProviderMessageID, Type: b.Type, EventID: b.EventID,
		BounceType: b.BounceType, Reason: b.Reason, Link: b.Link, Recipient: b.Recipient}
	if b.OccurredAt != "" {
		t, err := parseTime(b.OccurredAt)
		if err != nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "occurredAt %q: want an RFC 3339 time", b.OccurredAt))
			return
		}
		ev.OccurredAt = t
	}
	if ev.EmailID != "" {
		// The event's email must belong to the namespace checked.
		v, _, err := h.s.getRecord(r.Context(), ev.EmailID)
		if err == nil && v.Ns != ns(r) {
			err = apierr.New(apierr.NotFound, "email %s not found in namespace %s", ev.EmailID, ns(r))
		}
		if err != nil {
			h.fail(w, r, err)
			return
		}
	}
	res, err := h.s.Record(r.Context(), ev)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.ok(w, http.StatusOK, map[string]any{"emailId": res.EmailID, "status": res.Status, "duplicate": res.Duplicate})
}
