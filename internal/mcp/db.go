package mcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// Thing is a stored thing as the tools return it.
type Thing struct {
	NS        string          `json:"ns" jsonschema:"namespace"`
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data" jsonschema:"the thing's JSON object"`
	Content   string          `json:"content,omitempty" jsonschema:"searchable text"`
	Embedding []float32       `json:"embedding,omitempty"`
	Version   int64           `json:"version" jsonschema:"starts at 1 and grows by 1 on every write"`
	CreatedAt string          `json:"createdAt" jsonschema:"RFC 3339 UTC"`
	UpdatedAt string          `json:"updatedAt" jsonschema:"RFC 3339 UTC"`
	ExpiresAt string          `json:"expiresAt,omitempty" jsonschema:"RFC 3339 UTC; the thing disappears then"`
	URI       string          `json:"uri" jsonschema:"the thing as an MCP resource"`
}

// Relationship is a typed edge between two things of a namespace.
type Relationship struct {
	NS        string          `json:"ns"`
	From      string          `json:"from"`
	Type      string          `json:"type"`
	To        string          `json:"to"`
	Data      json.RawMessage `json:"data"`
	CreatedAt string          `json:"createdAt"`
}

func micros(us int64) string {
	if us == 0 {
		return ""
	}
	return time.UnixMicro(us).UTC().Format(time.RFC3339Nano)
}

// thingURI is the resource URI of a thing. Characters of ids that are not
// unreserved in RFC 3986 (: @ + =) are percent-encoded, as the URI
// template's simple expansion of {id} requires.
func thingURI(ns, id string) string {
	var b strings.Builder
	b.WriteString("dotdo://things/" + ns + "/")
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// parseThingURI reads dotdo://things/{ns}/{id}, the id percent-decoded.
func parseThingURI(uri string) (ns, id string, ok bool) {
	rest, ok := strings.CutPrefix(uri, "dotdo://things/")
	if !ok {
		return "", "", false
	}
	ns, rawID, ok := strings.Cut(rest, "/")
	if !ok || ns == "" || rawID == "" || strings.Contains(rawID, "/") {
		return "", "", false
	}
	id, err := url.PathUnescape(rawID)
	if err != nil || id == "" {
		return "", "", false
	}
	return ns, id, true
}

func thingOut(t *dbv1.Thing) Thing {
	data := json.RawMessage(t.Data)
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return Thing{NS: t.Ns, ID: t.Id, Type: t.Type, Data: data, Content: t.Content, Embedding: t.Embedding, Version: t.Version,
		CreatedAt: micros(t.CreatedAt), UpdatedAt: micros(t.UpdatedAt), ExpiresAt: micros(t.ExpiresAt), URI: thingURI(t.Ns, t.Id)}
}

func relationshipOut(r *dbv1.Relationship) Relationship {
	data := json.RawMessage(r.Data)
	if len(data) == 0 {
		data = json.RawMessage("{}")
	}
	return Relationship{NS: r.Ns, From: r.From, Type: r.Type, To: r.To, Data: data, CreatedAt: micros(r.CreatedAt)}
}

// GetIn are db_get's arguments.
type GetIn struct {
	NS string `json:"ns" jsonschema:"namespace, such as demo"`
	ID string `json:"id" jsonschema:"the thing's id"`
}

// ThingOut is the result of a tool that returns one thing.
type ThingOut struct {
	Thing Thing `json:"thing"`
}

// ListIn are db_list's arguments.
type ListIn struct {
	NS     string `json:"ns" jsonschema:"namespace, such as demo"`
	Type   string `json:"type,omitempty" jsonschema:"only things of this type"`
	Order  string `json:"order,omitempty" jsonschema:"createdAt (default), updatedAt or data.<path>; prefix - for descending"`
	Limit  int    `json:"limit,omitempty" jsonschema:"items per page, 1-200 (default 50); a page may hold fewer to stay under the result size cap"`
	Cursor string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page, with the same other arguments"`
}

// QueryIn are db_query's arguments.
type QueryIn struct {
	NS     string          `json:"ns" jsonschema:"namespace, such as demo"`
	Type   string          `json:"type,omitempty" jsonschema:"only things of this type"`
	Where  json.RawMessage `json:"where" jsonschema:"filter on data: {\"path.to.field\": value} for equality, or {\"field\": {\"op\": operand}} with op one of eq ne lt lte gt gte in contains exists; all conditions must hold"`
	Order  string          `json:"order,omitempty" jsonschema:"createdAt (default), updatedAt or data.<path>; prefix - for descending"`
	Limit  int             `json:"limit,omitempty" jsonschema:"items per page, 1-200 (default 50)"`
	Cursor string          `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page, with the same other arguments"`
}

// ThingsOut is a page of things.
type ThingsOut struct {
	Items      []Thing `json:"items"`
	NextCursor string  `json:"nextCursor,omitempty" jsonschema:"present when more items follow: pass it back as cursor"`
}

// UpsertIn are db_upsert's arguments.
type UpsertIn struct {
	NS        string          `json:"ns" jsonschema:"namespace, such as demo"`
	ID        string          `json:"id,omitempty" jsonschema:"the thing's id; omitted, a new time-ordered id is generated and the thing is created"`
	Type      string          `json:"type" jsonschema:"the thing's type, such as customer"`
	Data      json.RawMessage `json:"data,omitempty" jsonschema:"the thing's JSON object; it replaces the stored data whole"`
	Content   string          `json:"content,omitempty" jsonschema:"searchable text"`
	Embedding []float32       `json:"embedding,omitempty" jsonschema:"a vector for similarity search"`
	ExpiresAt string          `json:"expiresAt,omitempty" jsonschema:"RFC 3339 time after which the thing disappears"`
	Mode      string          `json:"mode,omitempty" jsonschema:"upsert (default): create or replace; create: fail if it exists; update: fail if it does not"`
	IfVersion int64           `json:"ifVersion,omitempty" jsonschema:"write only if the stored version is this one (optimistic concurrency)"`
}

// UpsertOut is db_upsert's result.
type UpsertOut struct {
	Thing   Thing `json:"thing"`
	Created bool  `json:"created" jsonschema:"true when the write created the thing"`
}

// DeleteIn are db_delete's arguments.
type DeleteIn struct {
	NS        string `json:"ns" jsonschema:"namespace, such as demo"`
	ID        string `json:"id" jsonschema:"the thing's id"`
	IfVersion int64  `json:"ifVersion,omitempty" jsonschema:"delete only if the stored version is this one"`
}

// DeleteOut is db_delete's result.
type DeleteOut struct {
	NS      string `json:"ns"`
	ID      string `json:"id"`
	Deleted bool   `json:"deleted"`
}

// RelatedIn are db_related's arguments.
type RelatedIn struct {
	NS        string `json:"ns" jsonschema:"namespace, such as demo"`
	ID        string `json:"id" jsonschema:"the thing whose relationships to follow"`
	Type      string `json:"type,omitempty" jsonschema:"only relationships of this type, such as memberOf"`
	Direction string `json:"direction,omitempty" jsonschema:"out (default): id is the from end; in: id is the to end"`
	Limit     int    `json:"limit,omitempty" jsonschema:"items per page, 1-200 (default 50)"`
	Cursor    string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page, with the same other arguments"`
}

// RelatedItem is a relationship and the thing at its other end.
type RelatedItem struct {
	Relationship Relationship `json:"relationship"`
	Thing        Thing        `json:"thing"`
}

// RelatedOut is a page of related things.
type RelatedOut struct {
	Items      []RelatedItem `json:"items"`
	NextCursor string        `json:"nextCursor,omitempty" jsonschema:"present when more items follow: pass it back as cursor"`
}

// RelateIn are db_relate's arguments.
type RelateIn struct {
	NS   string          `json:"ns" jsonschema:"namespace, such as demo"`
	From string          `json:"from" jsonschema:"id of the thing at the from end"`
	Type string          `json:"type" jsonschema:"the relationship's type, a predicate such as memberOf"`
	To   string          `json:"to" jsonschema:"id of the thing at the to end"`
	Data json.RawMessage `json:"data,omitempty" jsonschema:"a JSON object kept with the relationship; replaces the stored one"`
}

// RelateOut is db_relate's result.
type RelateOut struct {
	Relationship Relationship `json:"relationship"`
	Created      bool         `json:"created" jsonschema:"false when it existed (its data was replaced)"`
}

func (s *Server) addDBTools() {
	db := s.opts.DB
	addTool(s, &sdk.Tool{Name: "db_get", Annotations: readOnly("Get a thing"),
		Description: "Read one thing by namespace and id: its type, JSON data, content and version. Needs things:read on the namespace."},
		func(c call, in GetIn) (ThingOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "things:read"); err != nil {
				return ThingOut{}, err
			}
			res, err := db.Get(c.ctx, connect.NewRequest(&dbv1.GetRequest{Ns: in.NS, Id: in.ID}))
			if err != nil {
				return ThingOut{}, err
			}
			return ThingOut{Thing: thingOut(res.Msg.Thing)}, nil
		})

	list := func(c call, in QueryIn, where string) (ThingsOut, error) {
		if err := s.need(c.ctx, c.id, in.NS, "things:read"); err != nil {
			return ThingsOut{}, err
		}
		n, err := limit(in.Limit)
		if err != nil {
			return ThingsOut{}, err
		}
		return fit(s, n, func(n int) (ThingsOut, int, error) {
			res, err := db.List(c.ctx, connect.NewRequest(&dbv1.ListRequest{Ns: in.NS, Type: in.Type, Where: where, Order: in.Order, Limit: int32(n), Cursor: in.Cursor}))
			if err != nil {
				return ThingsOut{}, 0, err
			}
			out := ThingsOut{Items: make([]Thing, len(res.Msg.Items)), NextCursor: res.Msg.NextCursor}
			for i, t := range res.Msg.Items {
				out.Items[i] = thingOut(t)
			}
			return out, len(out.Items), nil
		})
	}
	addTool(s, &sdk.Tool{Name: "db_list", Annotations: readOnly("List things"),
		Description: "List the things of a namespace, optionally of one type, in creation order or by a data field. Paginated: follow nextCursor. Needs things:read."},
		func(c call, in ListIn) (ThingsOut, error) {
			return list(c, QueryIn{NS: in.NS, Type: in.Type, Order: in.Order, Limit: in.Limit, Cursor: in.Cursor}, "")
		}, limitProp)
	addTool(s, &sdk.Tool{Name: "db_query", Annotations: readOnly("Query things"),
		Description: "Find things whose data matches a structured filter (the where language: equality, ne, lt, lte, gt, gte, in, contains, exists on dotted data paths; never SQL). " +
			"Example where: {\"status\":\"active\",\"price\":{\"gte\":10}}. Read-only and paginated: follow nextCursor. Needs things:read."},
		func(c call, in QueryIn) (ThingsOut, error) {
			w := strings.TrimSpace(string(in.Where))
			if w == "" || w == "null" || w[0] != '{' {
				return ThingsOut{}, invalid("where must be a JSON object such as {\"status\":\"active\"}")
			}
			return list(c, in, w)
		}, limitProp)

	addTool(s, &sdk.Tool{Name: "db_upsert", Annotations: writes("Write a thing", true, false),
		Description: "Create or replace a thing: its type, data and content are replaced whole and its version grows by 1. " +
			"mode create refuses to overwrite, mode update refuses to create, ifVersion guards against lost updates. Omit id to create a thing with a new id. Needs things:write."},
		func(c call, in UpsertIn) (UpsertOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "things:write"); err != nil {
				return UpsertOut{}, err
			}
			w := &dbv1.Write{Ns: in.NS, Id: in.ID, Type: in.Type, Data: in.Data, Content: in.Content, Embedding: in.Embedding, IfVersion: in.IfVersion}
			switch in.Mode {
			case "", "upsert":
			case "create":
				w.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
			case "update":
				w.Condition = dbv1.Condition_CONDITION_MUST_EXIST
			default:
				return UpsertOut{}, invalid("mode must be upsert, create or update")
			}
			if in.IfVersion < 0 {
				return UpsertOut{}, invalid("ifVersion must be a positive version")
			}
			if w.Id == "" {
				if in.Mode == "update" {
					return UpsertOut{}, invalid("mode update needs the id of the thing to update")
				}
				w.Id, w.Condition = thingsdb.NewID(), dbv1.Condition_CONDITION_MUST_NOT_EXIST
			}
			if d := strings.TrimSpace(string(in.Data)); d == "" || d == "null" {
				w.Data = []byte("{}")
			}
			if in.ExpiresAt != "" {
				t, err := time.Parse(time.RFC3339, in.ExpiresAt)
				if err != nil {
					return UpsertOut{}, invalid("expiresAt must be an RFC 3339 time such as 2030-01-02T15:04:05Z")
				}
				w.ExpiresAt = t.UnixMicro()
			}
			res, err := db.Put(c.ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
			if err != nil {
				return UpsertOut{}, err
			}
			return UpsertOut{Thing: thingOut(res.Msg.Thing), Created: res.Msg.Created}, nil
		}, enumProp("mode", "upsert", "create", "update"))

	addTool(s, &sdk.Tool{Name: "db_delete", Annotations: writes("Delete a thing", true, true),
		Description: "Delete a thing for good (its relationships go with it). ifVersion deletes only that version. Needs things:write."},
		func(c call, in DeleteIn) (DeleteOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "things:write"); err != nil {
				return DeleteOut{}, err
			}
			if in.IfVersion < 0 {
				return DeleteOut{}, invalid("ifVersion must be a positive version")
			}
			if _, err := db.Delete(c.ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: in.NS, Id: in.ID, IfVersion: in.IfVersion})); err != nil {
				return DeleteOut{}, err
			}
			return DeleteOut{NS: in.NS, ID: in.ID, Deleted: true}, nil
		})

	addTool(s, &sdk.Tool{Name: "db_related", Annotations: readOnly("Follow relationships"),
		Description: "List the things related to a thing, with each relationship: outgoing (id is the from end) or incoming. Paginated: follow nextCursor. Needs things:read."},
		func(c call, in RelatedIn) (RelatedOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "things:read"); err != nil {
				return RelatedOut{}, err
			}
			if in.Direction != "" && in.Direction != "out" && in.Direction != "in" {
				return RelatedOut{}, invalid("direction must be out or in")
			}
			n, err := limit(in.Limit)
			if err != nil {
				return RelatedOut{}, err
			}
			return fit(s, n, func(n int) (RelatedOut, int, error) {
				res, err := db.Related(c.ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: in.NS, Id: in.ID, Type: in.Type, Direction: in.Direction, Limit: int32(n), Cursor: in.Cursor}))
				if err != nil {
					return RelatedOut{}, 0, err
				}
				out := RelatedOut{Items: make([]RelatedItem, len(res.Msg.Items)), NextCursor: res.Msg.NextCursor}
				for i, it := range res.Msg.Items {
					out.Items[i] = RelatedItem{Relationship: relationshipOut(it.Relationship), Thing: thingOut(it.Thing)}
				}
				return out, len(out.Items), nil
			})
		}, limitProp, enumProp("direction", "out", "in"))

	addTool(s, &sdk.Tool{Name: "db_relate", Annotations: writes("Relate two things", true, true),
		Description: "Create the relationship from -type-> to between two things of a namespace, or replace its data if it exists. Needs things:write."},
		func(c call, in RelateIn) (RelateOut, error) {
			if err := s.need(c.ctx, c.id, in.NS, "things:write"); err != nil {
				return RelateOut{}, err
			}
			data := in.Data
			if d := strings.TrimSpace(string(data)); d == "" || d == "null" {
				data = []byte("{}")
			}
			res, err := db.PutRelationship(c.ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: in.NS, From: in.From, Type: in.Type, To: in.To, Data: data}}))
			if err != nil {
				return RelateOut{}, err
			}
			return RelateOut{Relationship: relationshipOut(res.Msg.Relationship), Created: res.Msg.Created}, nil
		})
}

// addResources adds things as resources: dotdo://things/{ns}/{id}.
func (s *Server) addResources() {
	s.srv.AddResourceTemplate(&sdk.ResourceTemplate{
		Name:        "thing",
		Title:       "A dotdo thing",
		URITemplate: "dotdo://things/{ns}/{id}",
		Description: "One thing of a namespace as JSON (the same object db_get returns). Needs things:read on the namespace.",
		MIMEType:    "application/json",
	}, s.readThing)
}

func (s *Server) readThing(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	ns, id, ok := parseThingURI(uri)
	if !ok {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	if err := s.need(ctx, s.caller(ctx, req.Extra), ns, "things:read"); err != nil {
		return nil, s.toolError(ctx, "resources/read", err)
	}
	res, err := s.opts.DB.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: id}))
	if err != nil {
		if c := apierr.From(err).Code; c == apierr.NotFound || c == apierr.Invalid {
			return nil, sdk.ResourceNotFoundError(uri)
		}
		return nil, s.toolError(ctx, "resources/read", err)
	}
	b, _ := json.Marshal(thingOut(res.Msg.Thing))
	return &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{{URI: uri, MIMEType: "application/json", Text: string(b)}}}, nil
}
