package thingsdb

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// searchRoutes registers the search, analytics and stats routes.
func searchRoutes(mux *http.ServeMux, h *rest) {
	mux.HandleFunc("POST /v1/search", h.search)
	mux.HandleFunc("GET /v1/search/config/{ns}", h.need("things:read")(h.getSearchConfig))
	mux.HandleFunc("PUT /v1/search/config/{ns}", h.need("things:write")(h.setSearchConfig))
	mux.HandleFunc("POST /v1/search/embeddings/{ns}", h.need("things:write")(h.generateEmbeddings))
	mux.HandleFunc("POST /v1/analytics/events", h.ingestEvents)
	mux.HandleFunc("GET /v1/analytics/query", h.queryAnalytics)
	mux.HandleFunc("POST /v1/analytics/update", h.updateAnalytics)
	mux.HandleFunc("PUT /v1/analytics/rollups/{ns}", h.need("analytics:write")(h.setRollupProperty))
	mux.HandleFunc("GET /v1/stats/{ns}", h.need("analytics:read")(h.stats))
}

// AnalyticsNamespace is the system namespace of the gateway's request
// events; refreshing rollups (which spans namespaces) needs
// analytics:write on it.
const AnalyticsNamespace = "_analytics"

// checkNS validates a namespace named in a body or query and checks the
// caller's permission on it.
func (h *rest) checkNS(r *http.Request, ns, permission string) error {
	if ns == "" {
		return apierr.New(apierr.Invalid, "ns is required")
	}
	if err := checkNamespace(ns); err != nil {
		return err
	}
	return h.authorize(r, ns, permission)
}

// searchBody is the body of POST /v1/search.
type searchBody struct {
	Ns      string          `json:"ns"`
	Query   string          `json:"query"`
	Vector  embedding       `json:"vector"`
	Mode    string          `json:"mode"`
	Type    string          `json:"type"`
	Where   json.RawMessage `json:"where"`
	Limit   int32           `json:"limit"`
	Cursor  string          `json:"cursor"`
	K       int32           `json:"k"`
	Weights *struct {
		Fulltext float32 `json:"fulltext"`
		Vector   float32 `json:"vector"`
	} `json:"weights"`
}

func (h *rest) search(w http.ResponseWriter, r *http.Request) {
	var b searchBody
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.checkNS(r, b.Ns, "search:read"); err != nil {
		h.fail(w, r, err)
		return
	}
	req := &dbv1.SearchRequest{Ns: b.Ns, Query: b.Query, Vector: b.Vector, Mode: b.Mode, Type: b.Type, Limit: b.Limit, Cursor: b.Cursor, RrfK: b.K}
	if b.Weights != nil {
		req.FulltextWeight, req.VectorWeight = b.Weights.Fulltext, b.Weights.Vector
	}
	where := strings.TrimSpace(string(b.Where))
	switch {
	case where == "" || where == "null":
	case where[0] == '"':
		if err := json.Unmarshal(b.Where, &req.Where); err != nil {
			h.fail(w, r, apierr.New(apierr.Invalid, "where must be a JSON object"))
			return
		}
	default:
		req.Where = where
	}
	res, err := h.api.Search(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := make([]byte, 0, 4096)
	out = append(out, `{"mode":`...)
	out = appendString(out, res.Msg.Mode)
	out = append(out, `,"items":[`...)
	for i, it := range res.Msg.Items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, `{"score":`...)
		out = strconv.AppendFloat(out, it.Score, 'g', 8, 64)
		if it.Snippet != "" {
			out = append(out, `,"snippet":`...)
			out = appendString(out, it.Snippet)
		}
		if it.FulltextRank > 0 {
			out = append(out, `,"fulltextRank":`...)
			out = strconv.AppendInt(out, int64(it.FulltextRank), 10)
		}
		if it.VectorRank > 0 {
			out = append(out, `,"vectorRank":`...)
			out = strconv.AppendInt(out, int64(it.VectorRank), 10)
		}
		// The thing without its embedding: GET the thing for it.
		emb := it.Thing.Embedding
		it.Thing.Embedding = nil
		out = append(out, `,"thing":`...)
		out = appendThing(out, it.Thing)
		it.Thing.Embedding = emb
		out = append(out, '}')
	}
	out = append(out, ']')
	if res.Msg.NextCursor != "" {
		out = append(out, `,"nextCursor":`...)
		out = appendString(out, res.Msg.NextCursor)
	}
	writeJSON(w, http.StatusOK, append(out, '}'))
}

type configBody struct {
	Dims         int32    `json:"dims"`
	EmbedOnWrite bool     `json:"embedOnWrite"`
	Fields       []string `json:"fields"`
	Ns           string   `json:"ns"`
}

func writeConfig(w http.ResponseWriter, c *dbv1.SearchConfig) {
	apierr.WriteJSON(w, http.StatusOK, configBody{Ns: c.Ns, Dims: c.Dims, EmbedOnWrite: c.EmbedOnWrite, Fields: append([]string{}, c.Fields...)})
}

func (h *rest) getSearchConfig(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.GetSearchConfig(r.Context(), connect.NewRequest(&dbv1.GetSearchConfigRequest{Ns: r.PathValue("ns")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeConfig(w, res.Msg.Config)
}

func (h *rest) setSearchConfig(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	var b configBody
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if b.Ns != "" && b.Ns != ns {
		h.fail(w, r, apierr.New(apierr.Invalid, "body ns %q differs from the path's %q", clip(b.Ns), ns))
		return
	}
	res, err := h.api.SetSearchConfig(r.Context(), connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: ns, Dims: b.Dims, EmbedOnWrite: b.EmbedOnWrite, Fields: b.Fields}}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeConfig(w, res.Msg.Config)
}

func (h *rest) generateEmbeddings(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	req := &dbv1.GenerateMissingEmbeddingsRequest{Ns: r.PathValue("ns")}
	for name, dst := range map[string]*int32{"batchSize": &req.BatchSize, "max": &req.Max} {
		if v := q.Get(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > 1_000_000 {
				h.fail(w, r, apierr.New(apierr.Invalid, "%s must be a positive number", name))
				return
			}
			*dst = int32(n)
		}
	}
	res, err := h.api.GenerateMissingEmbeddings(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"embedded": res.Msg.Embedded, "failed": res.Msg.Failed, "done": res.Msg.Done})
}

type eventBody struct {
	Ns         string          `json:"ns"`
	Name       string          `json:"name"`
	Properties json.RawMessage `json:"properties"`
	Timestamp  string          `json:"timestamp"`
}

func (h *rest) ingestEvents(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Events []eventBody `json:"events"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if len(b.Events) == 0 {
		h.fail(w, r, apierr.New(apierr.Invalid, "events is empty"))
		return
	}
	if len(b.Events) > MaxEventBatch {
		h.fail(w, r, apierr.New(apierr.Invalid, "a batch holds at most %d events; this one has %d", MaxEventBatch, len(b.Events)))
		return
	}
	req := &dbv1.IngestEventsRequest{Events: make([]*dbv1.Event, len(b.Events))}
	allowed := map[string]bool{}
	for i, e := range b.Events {
		if !allowed[e.Ns] {
			if err := h.checkNS(r, e.Ns, "analytics:write"); err != nil {
				h.fail(w, r, apierr.AtIndex(err, i))
				return
			}
			allowed[e.Ns] = true
		}
		ev := &dbv1.Event{Ns: e.Ns, Name: e.Name}
		if p := strings.TrimSpace(string(e.Properties)); p != "" && p != "null" {
			if p[0] != '{' {
				h.fail(w, r, apierr.AtIndex(apierr.New(apierr.Invalid, "properties must be a JSON object"), i))
				return
			}
			ev.Properties = e.Properties
		}
		if e.Timestamp != "" {
			ts, err := parseTime("timestamp", e.Timestamp)
			if err != nil {
				h.fail(w, r, apierr.AtIndex(err, i))
				return
			}
			ev.Timestamp = ts
		}
		req.Events[i] = ev
	}
	res, err := h.api.IngestEvents(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusAccepted, []byte(`{"accepted":`+strconv.FormatInt(res.Msg.Accepted, 10)+`}`))
}

func (h *rest) queryAnalytics(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	ns := q.Get("ns")
	if err := h.checkNS(r, ns, "analytics:read"); err != nil {
		h.fail(w, r, err)
		return
	}
	req := &dbv1.QueryAnalyticsRequest{Ns: ns, Event: q.Get("event"), Bucket: q.Get("bucket"), GroupBy: q.Get("groupBy")}
	if req.Event == "" {
		h.fail(w, r, apierr.New(apierr.Invalid, "event is required"))
		return
	}
	for name, dst := range map[string]*int64{"from": &req.From, "to": &req.To} {
		v := q.Get(name)
		if v == "" {
			h.fail(w, r, apierr.New(apierr.Invalid, "%s is required (an RFC 3339 time)", name))
			return
		}
		t, err := parseTime(name, v)
		if err != nil {
			h.fail(w, r, err)
			return
		}
		*dst = t
	}
	res, err := h.api.QueryAnalytics(r.Context(), connect.NewRequest(req))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	bucket := req.Bucket
	if bucket == "" {
		bucket = "hour"
	}
	b := make([]byte, 0, 1024)
	b = append(b, `{"ns":`...)
	b = appendString(b, ns)
	b = append(b, `,"event":`...)
	b = appendString(b, req.Event)
	b = append(b, `,"bucket":`...)
	b = appendString(b, bucket)
	b = append(b, `,"from":`...)
	b = appendTime(b, res.Msg.From)
	b = append(b, `,"to":`...)
	b = appendTime(b, res.Msg.To)
	b = append(b, `,"fromRollups":`...)
	b = strconv.AppendBool(b, res.Msg.FromRollups)
	b = append(b, `,"rows":[`...)
	for i, row := range res.Msg.Rows {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"bucket":`...)
		b = appendTime(b, row.Bucket)
		if req.GroupBy != "" {
			b = append(b, `,"value":`...)
			b = appendString(b, row.Value)
		}
		b = append(b, `,"count":`...)
		b = strconv.AppendInt(b, row.Count, 10)
		b = append(b, '}')
	}
	writeJSON(w, http.StatusOK, append(b, "]}"...))
}

func (h *rest) updateAnalytics(w http.ResponseWriter, r *http.Request) {
	if err := h.authorize(r, AnalyticsNamespace, "analytics:write"); err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.UpdateAnalytics(r.Context(), connect.NewRequest(&dbv1.UpdateAnalyticsRequest{}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"rolled": res.Msg.Rolled, "done": res.Msg.Done})
}

func (h *rest) setRollupProperty(w http.ResponseWriter, r *http.Request) {
	var b struct {
		Event    string `json:"event"`
		Property string `json:"property"`
	}
	if err := apierr.DecodeBody(r, &b); err != nil {
		h.fail(w, r, err)
		return
	}
	if _, err := h.api.SetRollupProperty(r.Context(), connect.NewRequest(&dbv1.SetRollupPropertyRequest{Ns: r.PathValue("ns"), Event: b.Event, Property: b.Property})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) stats(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.Stats(r.Context(), connect.NewRequest(&dbv1.StatsRequest{Ns: r.PathValue("ns")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	m := res.Msg
	types := map[string]int64{}
	for _, t := range m.Types {
		types[t.Type] = t.Count
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"ns": m.Ns, "things": m.Things, "types": types, "relationships": m.Relationships,
		"embeddings": m.Embeddings, "storageBytes": m.StorageBytes, "events": m.Events})
}
