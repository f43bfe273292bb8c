package thingsdb

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/reqid"
)

// API is what the REST routes need from the db service: the local
// *Service in all-in-one mode, a Connect client in split mode.
type API interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	Delete(context.Context, *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Batch(context.Context, *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error)
	PutRelationship(context.Context, *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error)
	DeleteRelationship(context.Context, *connect.Request[dbv1.DeleteRelationshipRequest]) (*connect.Response[dbv1.DeleteRelationshipResponse], error)
	Related(context.Context, *connect.Request[dbv1.RelatedRequest]) (*connect.Response[dbv1.RelatedResponse], error)
	SearchAPI
}

// SearchAPI is the search and analytics part of API (search.go,
// analytics.go).
type SearchAPI interface {
	Search(context.Context, *connect.Request[dbv1.SearchRequest]) (*connect.Response[dbv1.SearchResponse], error)
	GetSearchConfig(context.Context, *connect.Request[dbv1.GetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error)
	SetSearchConfig(context.Context, *connect.Request[dbv1.SetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error)
	GenerateMissingEmbeddings(context.Context, *connect.Request[dbv1.GenerateMissingEmbeddingsRequest]) (*connect.Response[dbv1.GenerateMissingEmbeddingsResponse], error)
	IngestEvents(context.Context, *connect.Request[dbv1.IngestEventsRequest]) (*connect.Response[dbv1.IngestEventsResponse], error)
	UpdateAnalytics(context.Context, *connect.Request[dbv1.UpdateAnalyticsRequest]) (*connect.Response[dbv1.UpdateAnalyticsResponse], error)
	QueryAnalytics(context.Context, *connect.Request[dbv1.QueryAnalyticsRequest]) (*connect.Response[dbv1.QueryAnalyticsResponse], error)
	SetRollupProperty(context.Context, *connect.Request[dbv1.SetRollupPropertyRequest]) (*connect.Response[dbv1.SetRollupPropertyResponse], error)
	Stats(context.Context, *connect.Request[dbv1.StatsRequest]) (*connect.Response[dbv1.StatsResponse], error)
}

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the request's caller may use permission
	// on namespace ns, returning the error to answer (401/403) if not. Nil
	// allows tenant namespaces and refuses system ones ('_' prefix): that
	// is for tests of this package; the gateway passes the auth service's
	// decision.
	Authorize func(r *http.Request, ns, permission string) error
}

// Prefixes are the public path prefixes the db service answers; the
// gateway routes them here.
var Prefixes = []string{"/v1/things", "/v1/relationships", "/v1/search", "/v1/analytics", "/v1/stats"}

// Routes registers the db service's REST routes on mux.
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	h := &rest{api: api, opts: opts}
	// Each route names the permission it needs on its {ns}.
	read, write := h.need("things:read"), h.need("things:write")
	mux.HandleFunc("GET /v1/things/{ns}", read(h.list))
	mux.HandleFunc("POST /v1/things/{ns}", write(h.create))
	mux.HandleFunc("GET /v1/things/{ns}/{id}", read(h.get))
	mux.HandleFunc("PUT /v1/things/{ns}/{id}", write(h.put))
	mux.HandleFunc("PATCH /v1/things/{ns}/{id}", write(h.patch))
	mux.HandleFunc("DELETE /v1/things/{ns}/{id}", write(h.delete))
	mux.HandleFunc("POST /v1/things/{ns}/batch", write(h.batch))
	mux.HandleFunc("GET /v1/things/{ns}/{id}/related", read(h.related))
	mux.HandleFunc("PUT /v1/relationships/{ns}", write(h.putRelationship))
	mux.HandleFunc("DELETE /v1/relationships/{ns}", write(h.deleteRelationship))
	searchRoutes(mux, h)
}

// need returns a wrapper that checks the caller may use permission on the
// route's {ns} before the handler runs.
func (h *rest) need(permission string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if ns := r.PathValue("ns"); ns != "" {
				if err := checkNamespace(ns); err != nil {
					h.fail(w, r, err)
					return
				}
				if err := h.authorize(r, ns, permission); err != nil {
					h.fail(w, r, err)
					return
				}
			}
			next(w, r)
		}
	}
}

func (h *rest) authorize(r *http.Request, ns, permission string) error {
	if h.opts.Authorize != nil {
		return h.opts.Authorize(r, ns, permission)
	}
	if IsSystemNamespace(ns) {
		return apierr.New(apierr.Forbidden, "namespace %s is a system namespace", ns)
	}
	return nil
}

type rest struct {
	api  API
	opts RouteOptions
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

// namespace returns the {ns} path value; need has checked it.
func (h *rest) namespace(r *http.Request) (string, error) {
	return r.PathValue("ns"), nil
}

// writeJSON writes b, JSON these routes build by hand to spare
// encoding/json the things' data, as apierr.WriteJSON writes a value:
// with a newline after it.
func writeJSON(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }

// parseVersion reads an If-Match or If-None-Match value: *, "7", W/"7" or 7.
func parseVersion(header, v string) (star bool, version int64, err error) {
	v = strings.TrimSpace(v)
	if v == "*" {
		return true, 0, nil
	}
	v = strings.TrimPrefix(v, "W/")
	v = strings.Trim(v, `"`)
	n, perr := strconv.ParseInt(v, 10, 64)
	if perr != nil || n <= 0 {
		return false, 0, apierr.New(apierr.Invalid, `%s must be * or a version such as "3"`, header)
	}
	return false, n, nil
}

// thingBody is the body of PUT and POST on a thing. The read-only fields
// are accepted so that a thing read with GET can be written back.
type thingBody struct {
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Content   string          `json:"content"`
	Embedding embedding       `json:"embedding"`
	ExpiresAt *string         `json:"expiresAt"`

	Ns        string          `json:"ns"`
	ID        string          `json:"id"`
	Version   json.RawMessage `json:"version"`
	CreatedAt json.RawMessage `json:"createdAt"`
	UpdatedAt json.RawMessage `json:"updatedAt"`
}

// embedding is a JSON array of numbers. Unlike []float32 it refuses null
// elements, which encoding/json would silently read as 0.
type embedding []float32

func (e *embedding) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*e = nil
		return nil
	}
	var raw []*float32
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("embedding must be an array of numbers")
	}
	out := make([]float32, len(raw))
	for i, f := range raw {
		if f == nil {
			return fmt.Errorf("embedding[%d] is null; want a number", i)
		}
		out[i] = *f
	}
	*e = out
	return nil
}

func parseTime(field, s string) (int64, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, apierr.New(apierr.Invalid, "%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", field, clip(s))
	}
	if t.UnixMicro() <= 0 {
		return 0, apierr.New(apierr.Invalid, "%s must be after 1970", field)
	}
	// A time past 9999 in UTC cannot be written back as RFC 3339.
	if t.UTC().Year() > 9999 {
		return 0, apierr.New(apierr.Invalid, "%s must be before the year 10000 in UTC", field)
	}
	return t.UnixMicro(), nil
}

func (b *thingBody) write(ns, id string) (*dbv1.Write, error) {
	if b.Ns != "" && b.Ns != ns {
		return nil, apierr.New(apierr.Invalid, "body ns %q differs from the path's %q", clip(b.Ns), ns)
	}
	if b.ID != "" && b.ID != id {
		return nil, apierr.New(apierr.Invalid, "body id %q differs from the path's %q", clip(b.ID), id)
	}
	if string(b.Data) == "null" {
		b.Data = nil
	}
	w := &dbv1.Write{Ns: ns, Id: id, Type: b.Type, Data: b.Data, Content: b.Content, Embedding: []float32(b.Embedding)}
	if b.ExpiresAt != nil {
		t, err := parseTime("expiresAt", *b.ExpiresAt)
		if err != nil {
			return nil, err
		}
		w.ExpiresAt = t
	}
	return w, nil
}

func (h *rest) get(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.Get(r.Context(), connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	t := res.Msg.Thing
	tag := etag(t.Version)
	w.Header().Set("ETag", tag)
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		if _, v, err := parseVersion("If-None-Match", inm); err == nil && v == t.Version || inm == "*" {
			w.WriteHeader(http.StatusNotModified)
			return
		}
	}
	writeJSON(w, http.StatusOK, appendThing(make([]byte, 0, 256+len(t.Data)+len(t.Content)), t))
}

func (h *rest) put(w http.ResponseWriter, r *http.Request) {
	h.writeThing(w, r, r.PathValue("id"))
}

func (h *rest) create(w http.ResponseWriter, r *http.Request) {
	r.Header.Set("If-None-Match", "*")
	h.writeThing(w, r, "")
}

// writeThing handles PUT (id from the path) and POST (id "" : generated).
func (h *rest) writeThing(w http.ResponseWriter, r *http.Request, id string) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var body thingBody
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if id == "" {
		if body.ID != "" {
			h.fail(w, r, apierr.New(apierr.Invalid, "POST creates a thing with a generated id; to choose the id, PUT /v1/things/%s/{id}", ns))
			return
		}
		id = NewID()
	}
	wr, err := body.write(ns, id)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := conditions(r, wr); err != nil {
		h.fail(w, r, err)
		return
	}
	h.doPut(w, r, wr)
}

// conditions applies If-Match and If-None-Match to a write.
func conditions(r *http.Request, wr *dbv1.Write) error {
	im, inm := r.Header.Get("If-Match"), r.Header.Get("If-None-Match")
	if im != "" && inm != "" {
		return apierr.New(apierr.Invalid, "send If-Match or If-None-Match, not both")
	}
	if inm != "" {
		if strings.TrimSpace(inm) != "*" {
			return apierr.New(apierr.Invalid, "If-None-Match on a write must be *")
		}
		wr.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
	}
	if im != "" {
		star, v, err := parseVersion("If-Match", im)
		if err != nil {
			return err
		}
		wr.Condition = dbv1.Condition_CONDITION_MUST_EXIST
		wr.IfVersion = v
		if star {
			wr.IfVersion = 0
		}
	}
	return nil
}

func (h *rest) doPut(w http.ResponseWriter, r *http.Request, wr *dbv1.Write) {
	res, err := h.api.Put(r.Context(), connect.NewRequest(&dbv1.PutRequest{Write: wr}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	t := res.Msg.Thing
	w.Header().Set("ETag", etag(t.Version))
	status := http.StatusOK
	if res.Msg.Created {
		status = http.StatusCreated
		w.Header().Set("Location", "/v1/things/"+t.Ns+"/"+t.Id)
	}
	writeJSON(w, status, appendThing(make([]byte, 0, 256+len(t.Data)+len(t.Content)), t))
}

func (h *rest) patch(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	raw, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(strings.TrimSpace(string(raw))) == 0 {
		h.fail(w, r, apierr.New(apierr.Invalid, "request body is empty; send a JSON merge patch"))
		return
	}
	wr := &dbv1.Write{Ns: ns, Id: r.PathValue("id"), MergePatch: raw}
	if err := conditions(r, wr); err != nil {
		h.fail(w, r, err)
		return
	}
	h.doPut(w, r, wr)
}

func (h *rest) delete(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	req := &dbv1.DeleteRequest{Ns: ns, Id: r.PathValue("id")}
	if im := r.Header.Get("If-Match"); im != "" {
		star, v, err := parseVersion("If-Match", im)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		if star {
			req.MustExist = true
		} else {
			req.IfVersion = v
		}
	}
	if _, err := h.api.Delete(r.Context(), connect.NewRequest(req)); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func queryLimit(r *http.Request) (int32, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > MaxListLimit {
		return 0, apierr.New(apierr.Invalid, "limit must be a number between 1 and %d", MaxListLimit)
	}
	return int32(n), nil
}

func (h *rest) list(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	limit, err := queryLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	res, err := h.api.List(r.Context(), connect.NewRequest(&dbv1.ListRequest{
		Ns: ns, Type: q.Get("type"), Where: q.Get("where"), Order: q.Get("order"), Limit: limit, Cursor: q.Get("cursor"),
	}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := make([]byte, 0, 4096)
	b = append(b, `{"items":[`...)
	for i, t := range res.Msg.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendThing(b, t)
	}
	b = append(b, ']')
	if res.Msg.NextCursor != "" {
		b = append(b, `,"nextCursor":"`...)
		b = append(b, res.Msg.NextCursor...)
		b = append(b, '"')
	}
	writeJSON(w, http.StatusOK, append(b, '}'))
}

// batchOp is one op of POST /v1/things/{ns}/batch.
type batchOp struct {
	Op string `json:"op"`
	thingBody
	IfMatch json.RawMessage `json:"ifMatch"`
	Patch   json.RawMessage `json:"patch"`
}

var batchOps = "create, update, upsert, patch or delete"

func (o *batchOp) toOp(ns string) (*dbv1.Op, error) {
	var ifVersion int64
	if len(o.IfMatch) > 0 && string(o.IfMatch) != "null" {
		if err := json.Unmarshal(o.IfMatch, &ifVersion); err != nil || ifVersion <= 0 {
			return nil, apierr.New(apierr.Invalid, "ifMatch must be a positive version number")
		}
	}
	if o.ID == "" && o.Op != "create" {
		return nil, apierr.New(apierr.Invalid, "id is required")
	}
	if err := o.checkFields(); err != nil {
		return nil, err
	}
	switch o.Op {
	case "delete":
		return &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: ns, Id: o.ID, IfVersion: ifVersion}}}, nil
	case "patch":
		if len(o.Patch) == 0 {
			return nil, apierr.New(apierr.Invalid, "patch op needs a patch object")
		}
		return &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: ns, Id: o.ID, MergePatch: o.Patch, IfVersion: ifVersion}}}, nil
	case "create", "update", "upsert":
		id := o.ID
		if id == "" {
			id = NewID()
		}
		wr, err := o.write(ns, id)
		if err != nil {
			return nil, err
		}
		wr.IfVersion = ifVersion
		switch o.Op {
		case "create":
			wr.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
		case "update":
			wr.Condition = dbv1.Condition_CONDITION_MUST_EXIST
		}
		return &dbv1.Op{Op: &dbv1.Op_Write{Write: wr}}, nil
	case "":
		return nil, apierr.New(apierr.Invalid, "op is required: use %s", batchOps)
	}
	return nil, apierr.New(apierr.Invalid, "unknown op %q: use %s", clip(o.Op), batchOps)
}

// checkFields refuses fields the op would ignore, such as data on a
// delete or type beside a patch, so that a mistaken batch fails instead of
// half-applying what the client meant.
func (o *batchOp) checkFields() error {
	var set []string
	if o.Type != "" {
		set = append(set, "type")
	}
	if len(o.Data) > 0 && string(o.Data) != "null" {
		set = append(set, "data")
	}
	if o.Content != "" {
		set = append(set, "content")
	}
	if o.Embedding != nil {
		set = append(set, "embedding")
	}
	if o.ExpiresAt != nil {
		set = append(set, "expiresAt")
	}
	switch o.Op {
	case "delete":
		if len(o.Patch) > 0 {
			set = append(set, "patch")
		}
	case "patch":
		// type, data, content and expiresAt go inside the patch.
	case "create", "update", "upsert":
		if len(o.Patch) > 0 {
			return apierr.New(apierr.Invalid, "%s op takes no patch field; use op patch", o.Op)
		}
		return nil
	default:
		return nil // toOp explains
	}
	if len(set) > 0 {
		return apierr.New(apierr.Invalid, "%s op takes no %s field", o.Op, strings.Join(set, ", "))
	}
	return nil
}

func (h *rest) batch(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var body struct {
		Ops []json.RawMessage `json:"ops"`
	}
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(body.Ops) == 0 {
		h.fail(w, r, apierr.New(apierr.Invalid, "ops is empty"))
		return
	}
	if len(body.Ops) > MaxBatchOps {
		h.fail(w, r, apierr.New(apierr.Invalid, "a batch holds at most %d ops; this one has %d", MaxBatchOps, len(body.Ops)))
		return
	}
	req := &dbv1.BatchRequest{Ns: ns, Ops: make([]*dbv1.Op, len(body.Ops))}
	for i, rawOp := range body.Ops {
		var o batchOp
		if err := apierr.DecodeJSON(rawOp, &o); err != nil {
			h.fail(w, r, apierr.AtIndex(err, i))
			return
		}
		op, err := o.toOp(ns)
		if err != nil {
			h.fail(w, r, apierr.AtIndex(err, i))
			return
		}
		req.Ops[i] = op
	}
	res, err := h.api.Batch(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := make([]byte, 0, 4096)
	b = append(b, `{"results":[`...)
	for i, rr := range res.Msg.Results {
		if i > 0 {
			b = append(b, ',')
		}
		if rr.Deleted {
			b = append(b, `{"op":"delete","id":`...)
			b = appendString(b, rr.Thing.GetId())
			b = append(b, `,"deleted":true}`...)
			continue
		}
		b = append(b, `{"op":`...)
		b = strconv.AppendQuote(b, body2op(req.Ops[i]))
		b = append(b, `,"created":`...)
		b = strconv.AppendBool(b, rr.Created)
		b = append(b, `,"thing":`...)
		b = appendThing(b, rr.Thing)
		b = append(b, '}')
	}
	writeJSON(w, http.StatusOK, append(b, "]}"...))
}

func body2op(op *dbv1.Op) string {
	w := op.GetWrite()
	switch {
	case w == nil:
		return "delete"
	case len(w.MergePatch) > 0:
		return "patch"
	case w.Condition == dbv1.Condition_CONDITION_MUST_NOT_EXIST:
		return "create"
	case w.Condition == dbv1.Condition_CONDITION_MUST_EXIST:
		return "update"
	}
	return "upsert"
}

func (h *rest) related(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	limit, err := queryLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	res, err := h.api.Related(r.Context(), connect.NewRequest(&dbv1.RelatedRequest{
		Ns: ns, Id: r.PathValue("id"), Type: q.Get("type"), Direction: q.Get("direction"), Limit: limit, Cursor: q.Get("cursor"),
	}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	b := make([]byte, 0, 4096)
	b = append(b, `{"items":[`...)
	for i, it := range res.Msg.Items {
		if i > 0 {
			b = append(b, ',')
		}
		t := appendThing(nil, it.Thing)
		b = append(b, t[:len(t)-1]...)
		b = append(b, `,"relationship":`...)
		b = appendRelationship(b, it.Relationship)
		b = append(b, '}')
	}
	b = append(b, ']')
	if res.Msg.NextCursor != "" {
		b = append(b, `,"nextCursor":"`...)
		b = append(b, res.Msg.NextCursor...)
		b = append(b, '"')
	}
	writeJSON(w, http.StatusOK, append(b, '}'))
}

type relBody struct {
	From string          `json:"from"`
	Type string          `json:"type"`
	To   string          `json:"to"`
	Data json.RawMessage `json:"data"`
}

func (h *rest) putRelationship(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var body relBody
	if err := apierr.DecodeBody(r, &body); err != nil {
		h.fail(w, r, err)
		return
	}
	if string(body.Data) == "null" {
		body.Data = nil
	}
	res, err := h.api.PutRelationship(r.Context(), connect.NewRequest(&dbv1.PutRelationshipRequest{
		Relationship: &dbv1.Relationship{Ns: ns, From: body.From, Type: body.Type, To: body.To, Data: body.Data},
	}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Msg.Created {
		status = http.StatusCreated
	}
	writeJSON(w, status, appendRelationship(nil, res.Msg.Relationship))
}

// deleteRelationship takes from, type and to as query parameters or as a
// JSON body.
func (h *rest) deleteRelationship(w http.ResponseWriter, r *http.Request) {
	ns, err := h.namespace(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	body := relBody{From: q.Get("from"), Type: q.Get("type"), To: q.Get("to")}
	if body.From == "" && body.Type == "" && body.To == "" {
		if err := apierr.DecodeBody(r, &body); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if _, err := h.api.DeleteRelationship(r.Context(), connect.NewRequest(&dbv1.DeleteRelationshipRequest{
		Ns: ns, From: body.From, Type: body.Type, To: body.To,
	})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
