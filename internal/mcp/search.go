package mcp

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Search is what db_search, db_stats and analytics_query need from the db
// service.
type Search interface {
	Search(context.Context, *connect.Request[dbv1.SearchRequest]) (*connect.Response[dbv1.SearchResponse], error)
	Stats(context.Context, *connect.Request[dbv1.StatsRequest]) (*connect.Response[dbv1.StatsResponse], error)
	QueryAnalytics(context.Context, *connect.Request[dbv1.QueryAnalyticsRequest]) (*connect.Response[dbv1.QueryAnalyticsResponse], error)
}

// SearchIn are db_search's arguments.
type SearchIn struct {
	NS     string          `json:"ns" jsonschema:"namespace, such as demo"`
	Query  string          `json:"query,omitempty" jsonschema:"full-text query: words, \"phrases\", OR, -exclude"`
	Vector []float32       `json:"vector,omitempty" jsonschema:"query embedding for vector or hybrid search; without it the query text is embedded if the server has an embedder"`
	Mode   string          `json:"mode,omitempty" jsonschema:"fulltext, vector or hybrid; default: hybrid when both legs are possible, else the one that is"`
	Type   string          `json:"type,omitempty" jsonschema:"only things of this type"`
	Where  json.RawMessage `json:"where,omitempty" jsonschema:"filter on data, as in db_query"`
	Limit  int             `json:"limit,omitempty" jsonschema:"hits per page, 1-200 (default 50)"`
	Cursor string          `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page, with the same other arguments"`
}

// Hit is one search result.
type Hit struct {
	Score        float64 `json:"score" jsonschema:"higher is better: bm25 or ts_rank for full text, cosine similarity for vector, the RRF sum for hybrid"`
	Snippet      string  `json:"snippet,omitempty" jsonschema:"part of the content with matched words in <mark></mark>"`
	FulltextRank int     `json:"fulltextRank,omitempty"`
	VectorRank   int     `json:"vectorRank,omitempty"`
	Thing        Thing   `json:"thing" jsonschema:"the thing, without its embedding (db_get has it)"`
}

// SearchOut is a page of search hits.
type SearchOut struct {
	Mode       string `json:"mode" jsonschema:"the mode that ran"`
	Items      []Hit  `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" jsonschema:"present when more hits follow: pass it back as cursor"`
}

// StatsIn are db_stats' arguments.
type StatsIn struct {
	NS string `json:"ns" jsonschema:"namespace, such as demo"`
}

// TypeCount is the number of live things of one type.
type TypeCount struct {
	Type  string `json:"type"`
	Count int64  `json:"count"`
}

// StatsOut are a namespace's counts.
type StatsOut struct {
	NS            string      `json:"ns"`
	Things        int64       `json:"things" jsonschema:"live things"`
	Types         []TypeCount `json:"types"`
	Relationships int64       `json:"relationships"`
	Embeddings    int64       `json:"embeddings"`
	StorageBytes  int64       `json:"storageBytes" jsonschema:"size of data, content and embeddings of live things"`
	Events        int64       `json:"events" jsonschema:"analytics events recorded"`
}

// AnalyticsIn are analytics_query's arguments.
type AnalyticsIn struct {
	NS      string `json:"ns" jsonschema:"namespace, such as demo"`
	Event   string `json:"event" jsonschema:"event name, such as signup"`
	From    string `json:"from" jsonschema:"RFC 3339 start (inclusive), widened to a whole bucket"`
	To      string `json:"to" jsonschema:"RFC 3339 end (exclusive), widened to a whole bucket"`
	Bucket  string `json:"bucket,omitempty" jsonschema:"hour (default) or day"`
	GroupBy string `json:"groupBy,omitempty" jsonschema:"an event property to count by"`
}

// AnalyticsRow is the count of one bucket (and one value of groupBy).
type AnalyticsRow struct {
	Bucket string `json:"bucket" jsonschema:"RFC 3339 start of the bucket"`
	Value  string `json:"value,omitempty" jsonschema:"the groupBy property's value"`
	Count  int64  `json:"count"`
}

// AnalyticsOut are event counts per bucket.
type AnalyticsOut struct {
	NS          string         `json:"ns"`
	Event       string         `json:"event"`
	Bucket      string         `json:"bucket"`
	From        string         `json:"from"`
	To          string         `json:"to"`
	FromRollups bool           `json:"fromRollups" jsonschema:"false when raw events were counted"`
	Rows        []AnalyticsRow `json:"rows"`
}

func (s *Server) addSearchTools() {
	sr := s.opts.Search
	addTool(s, &sdk.Tool{Name: "db_search", Annotations: readOnly("Search things"),
		Description: "Search a namespace's things by full text (content and configured data fields), by vector similarity, or both (hybrid, fused by reciprocal rank). " +
			"Returns ranked hits with snippets. Paginated: follow nextCursor. Needs search:read on the namespace."},
		func(c call, in SearchIn) (SearchOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "search:read"); err != nil {
				return SearchOut{}, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return SearchOut{}, err
			}
			if in.Query == "" && len(in.Vector) == 0 {
				return SearchOut{}, invalid("give a query, a vector, or both")
			}
			where := strings.TrimSpace(string(in.Where))
			if where == "null" {
				where = ""
			}
			return fit(s, n, func(n int) (SearchOut, int, error) {
				res, err := sr.Search(c.ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: in.NS, Query: in.Query, Vector: in.Vector, Mode: in.Mode, Type: in.Type, Where: where, Limit: int32(n), Cursor: in.Cursor}))
				if err != nil {
					return SearchOut{}, 0, err
				}
				out := SearchOut{Mode: res.Msg.Mode, Items: make([]Hit, len(res.Msg.Items)), NextCursor: res.Msg.NextCursor}
				for i, h := range res.Msg.Items {
					th := thingOut(h.Thing)
					th.Embedding = nil
					out.Items[i] = Hit{Score: h.Score, Snippet: h.Snippet, FulltextRank: int(h.FulltextRank), VectorRank: int(h.VectorRank), Thing: th}
				}
				return out, len(out.Items), nil
			})
		}, limitProp, enumProp("mode", "fulltext", "vector", "hybrid"))

	addTool(s, &sdk.Tool{Name: "db_stats", Annotations: readOnly("Namespace statistics"),
		Description: "Count a namespace's live things (in all and per type), relationships, embeddings, stored bytes and analytics events. Needs analytics:read on the namespace."},
		func(c call, in StatsIn) (StatsOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "analytics:read"); err != nil {
				return StatsOut{}, err
			}
			res, err := sr.Stats(c.ctx, connect.NewRequest(&dbv1.StatsRequest{Ns: in.NS}))
			if err != nil {
				return StatsOut{}, err
			}
			m := res.Msg
			out := StatsOut{NS: m.Ns, Things: m.Things, Types: []TypeCount{}, Relationships: m.Relationships, Embeddings: m.Embeddings, StorageBytes: m.StorageBytes, Events: m.Events}
			for _, t := range m.Types {
				out.Types = append(out.Types, TypeCount{Type: t.Type, Count: t.Count})
			}
			return out, nil
		})

	addTool(s, &sdk.Tool{Name: "analytics_query", Annotations: readOnly("Count events"),
		Description: "Count one analytics event per hour or day over a time range, optionally grouped by a property. " +
			"A result over the size cap is refused with a message to narrow the range or use bigger buckets. Needs analytics:read on the namespace."},
		func(c call, in AnalyticsIn) (AnalyticsOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "analytics:read"); err != nil {
				return AnalyticsOut{}, err
			}
			from, err := time.Parse(time.RFC3339, in.From)
			if err != nil {
				return AnalyticsOut{}, invalid("from must be an RFC 3339 time such as 2026-01-02T00:00:00Z")
			}
			to, err := time.Parse(time.RFC3339, in.To)
			if err != nil {
				return AnalyticsOut{}, invalid("to must be an RFC 3339 time such as 2026-01-03T00:00:00Z")
			}
			res, err := sr.QueryAnalytics(c.ctx, connect.NewRequest(&dbv1.QueryAnalyticsRequest{Ns: in.NS, Event: in.Event, From: from.UnixMicro(), To: to.UnixMicro(), Bucket: in.Bucket, GroupBy: in.GroupBy}))
			if err != nil {
				return AnalyticsOut{}, err
			}
			bucket := in.Bucket
			if bucket == "" {
				bucket = "hour"
			}
			out := AnalyticsOut{NS: in.NS, Event: in.Event, Bucket: bucket, From: micros(res.Msg.From), To: micros(res.Msg.To), FromRollups: res.Msg.FromRollups, Rows: make([]AnalyticsRow, len(res.Msg.Rows))}
			for i, r := range res.Msg.Rows {
				out.Rows[i] = AnalyticsRow{Bucket: micros(r.Bucket), Value: r.Value, Count: r.Count}
			}
			if b, _ := json.Marshal(out); len(b) > s.opts.MaxResultBytes {
				return AnalyticsOut{}, apierr.New(apierr.TooLarge, "%d rows (%d bytes) are over the %d-byte result cap; narrow from/to or use bucket day", len(out.Rows), len(b), s.opts.MaxResultBytes)
			}
			return out, nil
		}, enumProp("bucket", "hour", "day"))
}

// Search implements Search over POST /v1/search.
func (r *Remote) Search(ctx context.Context, req *connect.Request[dbv1.SearchRequest]) (*connect.Response[dbv1.SearchResponse], error) {
	m := req.Msg
	body := map[string]any{"ns": m.Ns, "query": m.Query, "mode": m.Mode, "type": m.Type, "limit": m.Limit, "cursor": m.Cursor}
	if len(m.Vector) > 0 {
		body["vector"] = m.Vector
	}
	if m.Where != "" {
		body["where"] = json.RawMessage(m.Where)
	}
	var out struct {
		Mode  string `json:"mode"`
		Items []struct {
			Score        float64   `json:"score"`
			Snippet      string    `json:"snippet"`
			FulltextRank int32     `json:"fulltextRank"`
			VectorRank   int32     `json:"vectorRank"`
			Thing        restThing `json:"thing"`
		} `json:"items"`
		NextCursor string `json:"nextCursor"`
	}
	if _, err := r.do(ctx, http.MethodPost, "/v1/search", nil, body, &out); err != nil {
		return nil, err
	}
	res := &dbv1.SearchResponse{Mode: out.Mode, NextCursor: out.NextCursor}
	for _, it := range out.Items {
		res.Items = append(res.Items, &dbv1.SearchHit{Thing: it.Thing.proto(), Score: it.Score, Snippet: it.Snippet, FulltextRank: it.FulltextRank, VectorRank: it.VectorRank})
	}
	return connect.NewResponse(res), nil
}

// Stats implements Search over GET /v1/stats/{ns}.
func (r *Remote) Stats(ctx context.Context, req *connect.Request[dbv1.StatsRequest]) (*connect.Response[dbv1.StatsResponse], error) {
	var out struct {
		Ns            string           `json:"ns"`
		Things        int64            `json:"things"`
		Types         map[string]int64 `json:"types"`
		Relationships int64            `json:"relationships"`
		Embeddings    int64            `json:"embeddings"`
		StorageBytes  int64            `json:"storageBytes"`
		Events        int64            `json:"events"`
	}
	if _, err := r.do(ctx, http.MethodGet, "/v1/stats/"+url.PathEscape(req.Msg.Ns), nil, nil, &out); err != nil {
		return nil, err
	}
	res := &dbv1.StatsResponse{Ns: out.Ns, Things: out.Things, Relationships: out.Relationships, Embeddings: out.Embeddings, StorageBytes: out.StorageBytes, Events: out.Events}
	for t, n := range out.Types {
		res.Types = append(res.Types, &dbv1.TypeCount{Type: t, Count: n})
	}
	return connect.NewResponse(res), nil
}

// QueryAnalytics implements Search over GET /v1/analytics/query.
func (r *Remote) QueryAnalytics(ctx context.Context, req *connect.Request[dbv1.QueryAnalyticsRequest]) (*connect.Response[dbv1.QueryAnalyticsResponse], error) {
	m := req.Msg
	q := url.Values{"ns": {m.Ns}, "event": {m.Event}, "from": {micros(m.From)}, "to": {micros(m.To)}}
	if m.Bucket != "" {
		q.Set("bucket", m.Bucket)
	}
	if m.GroupBy != "" {
		q.Set("groupBy", m.GroupBy)
	}
	var out struct {
		From        string `json:"from"`
		To          string `json:"to"`
		FromRollups bool   `json:"fromRollups"`
		Rows        []struct {
			Bucket string `json:"bucket"`
			Value  string `json:"value"`
			Count  int64  `json:"count"`
		} `json:"rows"`
	}
	if _, err := r.do(ctx, http.MethodGet, "/v1/analytics/query?"+q.Encode(), nil, nil, &out); err != nil {
		return nil, err
	}
	res := &dbv1.QueryAnalyticsResponse{FromRollups: out.FromRollups, From: parseMicros(out.From), To: parseMicros(out.To)}
	for _, row := range out.Rows {
		res.Rows = append(res.Rows, &dbv1.AnalyticsRow{Bucket: parseMicros(row.Bucket), Value: row.Value, Count: row.Count})
	}
	return connect.NewResponse(res), nil
}
