package thingsdb_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/gateway"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/rpc"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// binding is the db API plus the operations only services use.
type binding interface {
	thingsdb.API
	PurgeExpired(context.Context, *connect.Request[dbv1.PurgeExpiredRequest]) (*connect.Response[dbv1.PurgeExpiredResponse], error)
}

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Microsecond) // strictly increasing, like a real clock
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type env struct {
	api   binding
	svc   *thingsdb.Service
	clock *clock
}

const testToken = "test-internal-token-0123456789abcdef"

// eachBinding runs fn on every backend, once against the service value
// (all-in-one mode) and once against a Connect client to it over HTTP
// (split mode): the two must behave the same.
func eachBinding(t *testing.T, fn func(t *testing.T, e *env)) {
	for _, name := range testdb.Backends() {
		for _, mode := range []string{"local", "connect"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				t.Parallel()
				be := testdb.Open(t, name)
				svc, err := thingsdb.New(be, slog.New(slog.NewTextHandler(io.Discard, nil)))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { svc.Close() })
				c := &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
				svc.Now = c.Now
				e := &env{api: svc, svc: svc, clock: c}
				if mode == "connect" {
					// the listener of a split-mode db process, as cmd/dotdo builds it
					path, h := dbv1connect.NewDBServiceHandler(svc, rpc.ServerOptions()...)
					listener := gateway.New(gateway.Config{Internal: true, InternalToken: testToken, MaxBodyBytes: 1 << 20},
						slog.New(slog.NewTextHandler(io.Discard, nil)), metrics.New(), []gateway.Upstream{{Name: "db", RPCPath: path, RPC: h}})
					srv := httptest.NewServer(listener)
					t.Cleanup(srv.Close)
					e.api = dbv1connect.NewDBServiceClient(srv.Client(), srv.URL, rpc.ClientOptions(testToken)...)
				}
				fn(t, e)
			})
		}
	}
}

var ctx = context.Background()

func (e *env) put(t *testing.T, w *dbv1.Write) (*dbv1.Thing, bool, error) {
	t.Helper()
	res, err := e.api.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
	if err != nil {
		return nil, false, err
	}
	return res.Msg.Thing, res.Msg.Created, nil
}

func (e *env) mustPut(t *testing.T, w *dbv1.Write) *dbv1.Thing {
	t.Helper()
	th, _, err := e.put(t, w)
	if err != nil {
		t.Fatalf("Put(%s/%s) = %v", w.Ns, w.Id, err)
	}
	return th
}

func (e *env) get(t *testing.T, ns, id string) (*dbv1.Thing, error) {
	t.Helper()
	res, err := e.api.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: ns, Id: id}))
	if err != nil {
		return nil, err
	}
	return res.Msg.Thing, nil
}

func (e *env) list(t *testing.T, req *dbv1.ListRequest) *dbv1.ListResponse {
	t.Helper()
	res, err := e.api.List(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("List(%+v) = %v", req, err)
	}
	return res.Msg
}

// listAll follows cursors to the end and returns the ids in order.
func (e *env) listAll(t *testing.T, req *dbv1.ListRequest) []string {
	t.Helper()
	var ids []string
	for page := 0; ; page++ {
		if page > 10000 {
			t.Fatal("pagination does not end")
		}
		res := e.list(t, req)
		for _, it := range res.Items {
			ids = append(ids, it.Id)
		}
		if res.NextCursor == "" {
			return ids
		}
		req.Cursor = res.NextCursor
	}
}

func wantCode(t *testing.T, what string, err error, code apierr.Code) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: err = nil; want %s", what, code)
	}
	if got := apierr.From(err).Code; got != code {
		t.Fatalf("%s: code = %s (%v); want %s", what, got, err, code)
	}
}

func data(v string) []byte { return []byte(v) }

func TestWrites(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		// create
		th, created, err := e.put(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "User", Data: data(`{"name":"Ada","n":1}`), Content: "hello"})
		if err != nil || !created || th.Version != 1 {
			t.Fatalf("create = %v, created %v, err %v; want version 1, created", th, created, err)
		}
		if th.CreatedAt == 0 || th.CreatedAt != th.UpdatedAt {
			t.Errorf("create times = %d/%d; want equal and set", th.CreatedAt, th.UpdatedAt)
		}
		got, err := e.get(t, "app", "u1")
		if err != nil || string(got.Data) != `{"n":1,"name":"Ada"}` || got.Content != "hello" || got.Type != "User" || got.Version != 1 {
			t.Fatalf("Get = %v, %v; want the created thing", got, err)
		}
		// create-only on an existing thing
		_, _, err = e.put(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "User", Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST})
		wantCode(t, "create-only on existing", err, apierr.PreconditionFailed)
		// update-only on a missing thing
		_, _, err = e.put(t, &dbv1.Write{Ns: "app", Id: "nope", Type: "User", Condition: dbv1.Condition_CONDITION_MUST_EXIST})
		wantCode(t, "update-only on missing", err, apierr.PreconditionFailed)
		if _, err := e.get(t, "app", "nope"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("update-only on missing created the thing: %v", err)
		}
		// upsert increments the version and keeps createdAt
		th2 := e.mustPut(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "User", Data: data(`{"name":"Grace"}`)})
		if th2.Version != 2 || th2.CreatedAt != th.CreatedAt || th2.UpdatedAt <= th.UpdatedAt {
			t.Fatalf("upsert = v%d created %d updated %d; want v2, createdAt kept, updatedAt later", th2.Version, th2.CreatedAt, th2.UpdatedAt)
		}
		// conditional on version
		_, _, err = e.put(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "User", IfVersion: 1})
		wantCode(t, "stale version", err, apierr.PreconditionFailed)
		th3 := e.mustPut(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "User", Data: data(`{"name":"Linus"}`), IfVersion: 2})
		if th3.Version != 3 {
			t.Fatalf("conditional update version = %d; want 3", th3.Version)
		}
		got, _ = e.get(t, "app", "u1")
		if string(got.Data) != `{"name":"Linus"}` || got.Content != "" {
			t.Fatalf("after full update data = %s content %q; want replaced", got.Data, got.Content)
		}
		// update-only on existing
		th4 := e.mustPut(t, &dbv1.Write{Ns: "app", Id: "u1", Type: "Admin", Condition: dbv1.Condition_CONDITION_MUST_EXIST})
		if th4.Version != 4 || th4.Type != "Admin" {
			t.Fatalf("update-only = %v; want version 4, type Admin", th4)
		}
		// namespaces are separate
		if _, err := e.get(t, "other", "u1"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("Get in another namespace = %v; want not_found", err)
		}
		// embeddings round-trip
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "v", Type: "Doc", Embedding: []float32{0.5, -1, 3.25}})
		got, _ = e.get(t, "app", "v")
		if !reflect.DeepEqual(got.Embedding, []float32{0.5, -1, 3.25}) {
			t.Fatalf("embedding = %v", got.Embedding)
		}
	})
}

func TestMergePatch(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "p", Type: "Doc", Data: data(`{"a":1,"b":{"c":2,"d":3},"e":[1,2]}`), Content: "text"})
		th := e.mustPut(t, &dbv1.Write{Ns: "app", Id: "p", MergePatch: data(`{"data":{"a":null,"b":{"c":20},"e":[9]},"content":null}`)})
		if th.Version != 2 || string(th.Data) != `{"b":{"c":20,"d":3},"e":[9]}` || th.Content != "" || th.Type != "Doc" {
			t.Fatalf("patch = v%d %s %q %s; want v2 {\"b\":{\"c\":20,\"d\":3},\"e\":[9]}", th.Version, th.Data, th.Content, th.Type)
		}
		got, _ := e.get(t, "app", "p")
		if string(got.Data) != string(th.Data) {
			t.Fatalf("stored %s; want %s", got.Data, th.Data)
		}
		// type change and expiry through a patch
		th = e.mustPut(t, &dbv1.Write{Ns: "app", Id: "p", MergePatch: data(`{"type":"Note","expiresAt":"2030-01-01T00:00:00Z"}`), IfVersion: 2})
		if th.Type != "Note" || th.ExpiresAt != time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro() {
			t.Fatalf("patch type/expiry = %s %d", th.Type, th.ExpiresAt)
		}
		_, _, err := e.put(t, &dbv1.Write{Ns: "app", Id: "p", MergePatch: data(`{"type":"X"}`), IfVersion: 1})
		wantCode(t, "patch with stale version", err, apierr.PreconditionFailed)
		_, _, err = e.put(t, &dbv1.Write{Ns: "app", Id: "missing", MergePatch: data(`{"type":"X"}`)})
		wantCode(t, "patch missing", err, apierr.NotFound)
		for _, bad := range []string{`[]`, `{"version":3}`, `{"data":[1]}`, `{"type":"9bad"}`, `{"type":null}`, `not json`} {
			_, _, err = e.put(t, &dbv1.Write{Ns: "app", Id: "p", MergePatch: data(bad)})
			wantCode(t, "patch "+bad, err, apierr.Invalid)
		}
		got, _ = e.get(t, "app", "p")
		if got.Version != 3 {
			t.Fatalf("rejected patches changed the thing: version %d; want 3", got.Version)
		}
	})
}

func TestDelete(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "a", Type: "T"})
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "b", Type: "T"})
		e.api.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: "app", From: "a", Type: "knows", To: "b"}}))
		_, err := e.api.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "app", Id: "a", IfVersion: 7}))
		wantCode(t, "delete with wrong version", err, apierr.PreconditionFailed)
		if _, err := e.api.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "app", Id: "a", IfVersion: 1})); err != nil {
			t.Fatalf("Delete = %v", err)
		}
		if _, err := e.get(t, "app", "a"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("Get after delete = %v; want not_found", err)
		}
		_, err = e.api.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "app", Id: "a"}))
		wantCode(t, "delete twice", err, apierr.NotFound)
		// the relationship went with the thing: re-creating a does not revive it
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "a", Type: "T"})
		res, err := e.api.Related(ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: "app", Id: "b", Direction: "in"}))
		if err != nil || len(res.Msg.Items) != 0 {
			t.Fatalf("Related after delete = %v, %v; want none", res, err)
		}
	})
}

func TestBatchAtomic(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "x", Type: "T"})
		ops := []*dbv1.Op{
			{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: "n1", Type: "T", Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST}}},
			{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: "x", Type: "T", Data: data(`{"v":2}`), IfVersion: 1}}},
			{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: "x", Type: "T", IfVersion: 1}}}, // stale after op 1
			{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: "n2", Type: "T"}}},
		}
		_, err := e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "app", Ops: ops}))
		wantCode(t, "batch with a stale op", err, apierr.PreconditionFailed)
		if ae := apierr.From(err); ae.Index != 2 {
			t.Fatalf("batch error index = %d; want 2", ae.Index)
		}
		if _, err := e.get(t, "app", "n1"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("failed batch wrote op 0: %v", err)
		}
		if x, _ := e.get(t, "app", "x"); x.Version != 1 {
			t.Fatalf("failed batch changed x to version %d", x.Version)
		}
		ops[2] = &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Id: "x", IfVersion: 2}}}
		res, err := e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "app", Ops: ops}))
		if err != nil {
			t.Fatalf("Batch = %v", err)
		}
		r := res.Msg.Results
		if len(r) != 4 || !r[0].Created || r[1].Thing.Version != 2 || !r[2].Deleted || !r[3].Created {
			t.Fatalf("batch results = %v", r)
		}
		if _, err := e.get(t, "app", "x"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("x after batch delete = %v", err)
		}
		_, err = e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "app"}))
		wantCode(t, "empty batch", err, apierr.Invalid)
		big := make([]*dbv1.Op, thingsdb.MaxBatchOps+1)
		for i := range big {
			big[i] = &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: fmt.Sprintf("b%d", i), Type: "T"}}}
		}
		_, err = e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "app", Ops: big}))
		wantCode(t, "batch over the limit", err, apierr.Invalid)
		res, err = e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "app", Ops: big[:thingsdb.MaxBatchOps]}))
		if err != nil || len(res.Msg.Results) != thingsdb.MaxBatchOps {
			t.Fatalf("batch of %d = %v", thingsdb.MaxBatchOps, err)
		}
	})
}

func TestListOrderAndPages(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		docs := []string{`{"p":3}`, `{"p":"b"}`, `{"p":1.5}`, `{}`, `{"p":true}`, `{"p":"a"}`, `{"p":null}`, `{"p":-2}`, `{"p":"B"}`, `{"p":false}`, `{"p":3}`, `{"p":[1]}`}
		var ids []string
		for i, d := range docs {
			id := fmt.Sprintf("t%02d", i)
			ids = append(ids, id)
			e.mustPut(t, &dbv1.Write{Ns: "app", Id: id, Type: "T", Data: data(d)})
		}
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "other", Type: "U"})
		e.mustPut(t, &dbv1.Write{Ns: "app2", Id: "t99", Type: "T"})

		for _, limit := range []int32{1, 2, 5, 50} {
			got := e.listAll(t, &dbv1.ListRequest{Ns: "app", Type: "T", Limit: limit})
			if !reflect.DeepEqual(got, ids) {
				t.Fatalf("createdAt order, limit %d = %v; want %v", limit, got, ids)
			}
			rev := e.listAll(t, &dbv1.ListRequest{Ns: "app", Type: "T", Order: "-createdAt", Limit: limit})
			want := append([]string(nil), ids...)
			sort.Sort(sort.Reverse(sort.StringSlice(want)))
			if !reflect.DeepEqual(rev, want) {
				t.Fatalf("-createdAt, limit %d = %v; want %v", limit, rev, want)
			}
			// numbers, then strings (byte order), then booleans, then the rest; ties by id
			byP := e.listAll(t, &dbv1.ListRequest{Ns: "app", Type: "T", Order: "data.p", Limit: limit})
			wantP := []string{"t07", "t02", "t00", "t10", "t08", "t05", "t01", "t09", "t04", "t03", "t06", "t11"}
			if !reflect.DeepEqual(byP, wantP) {
				t.Fatalf("data.p order, limit %d = %v; want %v", limit, byP, wantP)
			}
			byPDesc := e.listAll(t, &dbv1.ListRequest{Ns: "app", Type: "T", Order: "-data.p", Limit: limit})
			for i := range wantP {
				if byPDesc[i] != wantP[len(wantP)-1-i] {
					t.Fatalf("-data.p order, limit %d = %v; want the reverse of %v", limit, byPDesc, wantP)
				}
			}
		}
		all := e.listAll(t, &dbv1.ListRequest{Ns: "app"})
		if len(all) != len(ids)+1 {
			t.Fatalf("list without type = %d items; want %d", len(all), len(ids)+1)
		}
		// updatedAt order follows writes
		e.mustPut(t, &dbv1.Write{Ns: "app", Id: "t00", Type: "T", Data: data(`{"p":3}`)})
		upd := e.listAll(t, &dbv1.ListRequest{Ns: "app", Type: "T", Order: "-updatedAt", Limit: 3})
		if upd[0] != "t00" {
			t.Fatalf("-updatedAt first = %s; want t00", upd[0])
		}
		// a cursor is tied to its order
		res := e.list(t, &dbv1.ListRequest{Ns: "app", Type: "T", Limit: 2})
		_, err := e.api.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: "app", Type: "T", Limit: 2, Order: "-createdAt", Cursor: res.NextCursor}))
		wantCode(t, "cursor of another order", err, apierr.Invalid)
		for _, lim := range []int32{-1, 1001} {
			_, err = e.api.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: "app", Limit: lim}))
			wantCode(t, fmt.Sprintf("limit %d", lim), err, apierr.Invalid)
		}
	})
}

func TestWhere(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		docs := map[string]string{
			"a": `{"status":"active","price":10,"tags":["x","y"],"addr":{"city":"Paris"},"name":"Alpha"}`,
			"b": `{"status":"inactive","price":25.5,"tags":["y"],"addr":{"city":"Berlin"},"name":"beta"}`,
			"c": `{"status":"active","price":"30","tags":[],"flag":true,"name":"Gamma ray"}`,
			"d": `{"price":null,"flag":false,"tags":[1,2]}`,
		}
		for _, id := range []string{"a", "b", "c", "d"} {
			e.mustPut(t, &dbv1.Write{Ns: "w", Id: id, Type: "T", Data: data(docs[id])})
		}
		cases := []struct{ where, want string }{
			{`{"status":"active"}`, "a,c"},
			{`{"status":{"eq":"active"}}`, "a,c"},
			{`{"status":{"ne":"active"}}`, "b,d"},
			{`{"price":{"gt":10}}`, "b"},
			{`{"price":{"gte":10}}`, "a,b"},
			{`{"price":{"lt":25.5}}`, "a"},
			{`{"price":{"lte":"30"}}`, "c"},
			{`{"price":{"gte":10,"lt":20}}`, "a"},
			{`{"price":null}`, "d"},
			{`{"price":{"exists":true}}`, "a,b,c,d"},
			{`{"flag":{"exists":false}}`, "a,b"},
			{`{"flag":true}`, "c"},
			{`{"flag":{"ne":true}}`, "a,b,d"},
			{`{"tags":{"contains":"y"}}`, "a,b"},
			{`{"tags":{"contains":2}}`, "d"},
			{`{"name":{"contains":"mma"}}`, "c"},
			{`{"addr.city":"Paris"}`, "a"},
			{`{"addr.city":{"in":["Paris","Berlin","Rome"]}}`, "a,b"},
			{`{"status":{"in":["inactive",10]}}`, "b"},
			{`{"name":{"gt":"Z"}}`, "b"},
			{`{"name":{"lt":"B"}}`, "a"},
			{`{"price":{"eq":"10"}}`, ""},
			{`{"missing.deep":{"exists":false},"status":"active"}`, "a,c"},
		}
		for _, tc := range cases {
			ids := e.listAll(t, &dbv1.ListRequest{Ns: "w", Where: tc.where})
			got := fmt.Sprint(ids)
			want := "[" + replaceComma(tc.want) + "]"
			if got != want {
				t.Errorf("where %s = %s; want %s", tc.where, got, want)
			}
		}
		for _, bad := range []string{`[]`, `{"a":{"like":1}}`, `{"a..b":1}`, `{"a":{"in":3}}`, `{"a":{"lt":true}}`, `{"a":{}}`, `{"a":[1]}`, `nope`} {
			_, err := e.api.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: "w", Where: bad}))
			wantCode(t, "where "+bad, err, apierr.Invalid)
		}
	})
}

func replaceComma(s string) string {
	out := []byte(s)
	for i := range out {
		if out[i] == ',' {
			out[i] = ' '
		}
	}
	return string(out)
}

func TestRelationships(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		for _, id := range []string{"alice", "bob", "carol", "acme"} {
			e.mustPut(t, &dbv1.Write{Ns: "g", Id: id, Type: "Node"})
		}
		put := func(from, typ, to, d string) *dbv1.PutRelationshipResponse {
			res, err := e.api.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: "g", From: from, Type: typ, To: to, Data: data(d)}}))
			if err != nil {
				t.Fatalf("PutRelationship(%s %s %s) = %v", from, typ, to, err)
			}
			return res.Msg
		}
		if r := put("alice", "knows", "bob", `{"since":2020}`); !r.Created {
			t.Fatal("first put not created")
		}
		if r := put("alice", "knows", "bob", `{"since":2021}`); r.Created || string(r.Relationship.Data) != `{"since":2021}` {
			t.Fatalf("second put = %v; want updated data, not created", r)
		}
		put("alice", "knows", "carol", "")
		put("alice", "memberOf", "acme", "")
		put("bob", "memberOf", "acme", "")
		put("alice", "knows", "ghost", "") // dangling ends are allowed and invisible

		related := func(id, typ, dir string, limit int32) []string {
			var out []string
			cur := ""
			for {
				res, err := e.api.Related(ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: "g", Id: id, Type: typ, Direction: dir, Limit: limit, Cursor: cur}))
				if err != nil {
					t.Fatalf("Related(%s,%s,%s) = %v", id, typ, dir, err)
				}
				for _, it := range res.Msg.Items {
					out = append(out, it.Relationship.Type+":"+it.Thing.Id)
				}
				if cur = res.Msg.NextCursor; cur == "" {
					return out
				}
			}
		}
		if got := fmt.Sprint(related("alice", "", "out", 1)); got != "[knows:bob knows:carol memberOf:acme]" {
			t.Errorf("alice out = %s", got)
		}
		if got := fmt.Sprint(related("alice", "knows", "", 0)); got != "[knows:bob knows:carol]" {
			t.Errorf("alice knows = %s", got)
		}
		if got := fmt.Sprint(related("acme", "memberOf", "in", 1)); got != "[memberOf:alice memberOf:bob]" {
			t.Errorf("acme in = %s", got)
		}
		_, err := e.api.DeleteRelationship(ctx, connect.NewRequest(&dbv1.DeleteRelationshipRequest{Ns: "g", From: "alice", Type: "knows", To: "bob"}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.api.DeleteRelationship(ctx, connect.NewRequest(&dbv1.DeleteRelationshipRequest{Ns: "g", From: "alice", Type: "knows", To: "bob"}))
		wantCode(t, "delete relationship twice", err, apierr.NotFound)
		if got := fmt.Sprint(related("alice", "knows", "out", 0)); got != "[knows:carol]" {
			t.Errorf("alice knows after delete = %s", got)
		}
		_, err = e.api.Related(ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: "g", Id: "alice", Direction: "sideways"}))
		wantCode(t, "bad direction", err, apierr.Invalid)
	})
}

func TestTTL(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		now := e.clock.Now()
		exp := now.Add(time.Hour).UnixMicro()
		e.mustPut(t, &dbv1.Write{Ns: "ttl", Id: "soon", Type: "T", ExpiresAt: exp})
		e.mustPut(t, &dbv1.Write{Ns: "ttl", Id: "keep", Type: "T"})
		e.api.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: "ttl", From: "keep", Type: "r", To: "soon"}}))
		if got, err := e.get(t, "ttl", "soon"); err != nil || got.ExpiresAt != exp {
			t.Fatalf("before expiry Get = %v, %v", got, err)
		}
		e.clock.Advance(time.Hour)
		if _, err := e.get(t, "ttl", "soon"); !apierr.Is(err, apierr.NotFound) {
			t.Fatalf("expired Get = %v; want not_found", err)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "ttl"}); fmt.Sprint(ids) != "[keep]" {
			t.Fatalf("list with an expired thing = %v; want [keep]", ids)
		}
		rel, _ := e.api.Related(ctx, connect.NewRequest(&dbv1.RelatedRequest{Ns: "ttl", Id: "keep"}))
		if len(rel.Msg.Items) != 0 {
			t.Fatalf("related shows an expired thing")
		}
		// an expired thing counts as absent for conditional writes
		_, _, err := e.put(t, &dbv1.Write{Ns: "ttl", Id: "soon", Type: "T", Condition: dbv1.Condition_CONDITION_MUST_EXIST})
		wantCode(t, "update-only of expired", err, apierr.PreconditionFailed)
		res, err := e.api.PurgeExpired(ctx, connect.NewRequest(&dbv1.PurgeExpiredRequest{}))
		if err != nil || res.Msg.Purged != 1 {
			t.Fatalf("PurgeExpired = %v, %v; want 1", res, err)
		}
		res, _ = e.api.PurgeExpired(ctx, connect.NewRequest(&dbv1.PurgeExpiredRequest{}))
		if res.Msg.Purged != 0 {
			t.Fatalf("second PurgeExpired = %d; want 0", res.Msg.Purged)
		}
		th, created, err := e.put(t, &dbv1.Write{Ns: "ttl", Id: "soon", Type: "T", Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST})
		if err != nil || !created || th.Version != 1 {
			t.Fatalf("create after purge = %v %v %v", th, created, err)
		}
		// an expired but unpurged thing is replaced by a create-only write
		e.mustPut(t, &dbv1.Write{Ns: "ttl", Id: "again", Type: "T", ExpiresAt: e.clock.Now().Add(time.Minute).UnixMicro()})
		e.mustPut(t, &dbv1.Write{Ns: "ttl", Id: "again", Type: "T", ExpiresAt: e.clock.Now().Add(time.Minute).UnixMicro()})
		e.clock.Advance(2 * time.Minute)
		th, created, err = e.put(t, &dbv1.Write{Ns: "ttl", Id: "again", Type: "T", Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST})
		if err != nil || !created || th.Version != 1 {
			t.Fatalf("create over expired = %v %v %v; want version 1", th, created, err)
		}
	})
}

// TestConcurrentConditionalUpdates: 50 writers race on one thing with
// If-Match; each version is won by exactly one of them.
func TestConcurrentConditionalUpdates(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.mustPut(t, &dbv1.Write{Ns: "c", Id: "hot", Type: "T", Data: data(`{"n":0}`)})
		const writers = 50
		var mu sync.Mutex
		winners := map[int64]int{}
		failed := 0
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				th, err := e.get(t, "c", "hot")
				if err != nil {
					t.Error(err)
					return
				}
				_, _, err = e.put(t, &dbv1.Write{Ns: "c", Id: "hot", Type: "T", Data: data(fmt.Sprintf(`{"n":%d}`, i)), IfVersion: th.Version})
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					winners[th.Version]++
				case apierr.Is(err, apierr.PreconditionFailed):
					failed++
				default:
					t.Errorf("conditional put: %v", err)
				}
			})
		}
		wg.Wait()
		successes := 0
		for v, n := range winners {
			if n != 1 {
				t.Errorf("version %d was updated %d times; want once", v, n)
			}
			successes += n
		}
		final, _ := e.get(t, "c", "hot")
		if final.Version != int64(successes)+1 || successes+failed != writers || successes == 0 {
			t.Fatalf("final version %d, %d successes, %d 412s; want version = successes + 1 and %d answers", final.Version, successes, failed, writers)
		}
	})
}

// TestPaginationUnderInserts: listing while another goroutine inserts
// never repeats or skips a thing that existed before the listing began.
func TestPaginationUnderInserts(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		const n = 300
		ops := make([]*dbv1.Op, n)
		for i := range ops {
			ops[i] = &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: fmt.Sprintf("pre-%03d", i), Type: "T", Data: data(fmt.Sprintf(`{"k":%d}`, i%7))}}}
		}
		if _, err := e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "p", Ops: ops})); err != nil {
			t.Fatal(err)
		}
		for _, order := range []string{"createdAt", "-createdAt", "data.k", "-data.k"} {
			stop := make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := 0; i < 200; i++ { // bounded: an ascending listing would chase it forever
					select {
					case <-stop:
						return
					default:
					}
					// new things land everywhere in the key space
					e.put(t, &dbv1.Write{Ns: "p", Id: fmt.Sprintf("new-%s-%04d", order, i), Type: "T", Data: data(fmt.Sprintf(`{"k":%d}`, i%9-1))})
				}
			}()
			seen := map[string]int{}
			req := &dbv1.ListRequest{Ns: "p", Type: "T", Order: order, Limit: 7}
			for page := 0; page < 1000; page++ {
				res := e.list(t, req)
				for _, it := range res.Items {
					seen[it.Id]++
				}
				if res.NextCursor == "" {
					break
				}
				req.Cursor = res.NextCursor
			}
			close(stop)
			<-done
			for i := range n {
				id := fmt.Sprintf("pre-%03d", i)
				if seen[id] != 1 {
					t.Fatalf("order %s: %s seen %d times; want once", order, id, seen[id])
				}
			}
			for id, c := range seen {
				if c != 1 {
					t.Fatalf("order %s: %s seen %d times", order, id, c)
				}
			}
		}
	})
}

func TestValidation(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		bad := []*dbv1.Write{
			{Ns: "", Id: "a", Type: "T"},
			{Ns: "Upper", Id: "a", Type: "T"},
			{Ns: "app", Id: "", Type: "T"},
			{Ns: "app", Id: "a/b", Type: "T"},
			{Ns: "app", Id: "a", Type: ""},
			{Ns: "app", Id: "a", Type: "1T"},
			{Ns: "app", Id: "a", Type: "T", Data: data(`[1]`)},
			{Ns: "app", Id: "a", Type: "T", Data: data(`{"a":"\u0000"}`)},
			{Ns: "app", Id: "a", Type: "T", Data: data(`{"a":1e400}`)},
			{Ns: "app", Id: "a", Type: "T", Data: data(`{"a":1} x`)},
			{Ns: "app", Id: "a", Type: "T", Data: data("{\"a\":\"\xff\"}")},
			{Ns: "app", Id: "a", Type: "T", Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST, IfVersion: 3},
		}
		for _, w := range bad {
			_, _, err := e.put(t, w)
			wantCode(t, fmt.Sprintf("Put(%+v)", w), err, apierr.Invalid)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "app"}); len(ids) != 0 {
			t.Fatalf("rejected writes stored %v", ids)
		}
		// duplicate keys: the last wins, on both backends
		th := e.mustPut(t, &dbv1.Write{Ns: "app", Id: "dup", Type: "T", Data: data(`{"a":1,"a":2}`)})
		if got, _ := e.get(t, "app", "dup"); string(got.Data) != `{"a":2}` || string(th.Data) != `{"a":2}` {
			t.Fatalf("duplicate keys stored as %s", got.Data)
		}
		var m map[string]any
		big := make([]byte, 0, thingsdb.MaxDataBytes+100)
		big = append(big, `{"s":"`...)
		for len(big) < thingsdb.MaxDataBytes+10 {
			big = append(big, 'x')
		}
		big = append(big, `"}`...)
		if json.Unmarshal(big, &m) != nil {
			t.Fatal("test data is not JSON")
		}
		_, _, err := e.put(t, &dbv1.Write{Ns: "app", Id: "big", Type: "T", Data: big})
		wantCode(t, "oversize data", err, apierr.TooLarge)
	})
}

// TestSameTextOnBothBackends: data comes back byte for byte as the
// canonical form the write returned, whatever the backend, and a path
// segment of digits is an object key everywhere, never an array index.
func TestSameTextOnBothBackends(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		th := e.mustPut(t, &dbv1.Write{Ns: "j", Id: "a", Type: "T", Data: data(`{"b":1,"aa":2,"n":1e2,"z":-0,"u":"é<>&","m":{"0":"zero"},"arr":["zero"]}`)})
		want := `{"aa":2,"arr":["zero"],"b":1,"m":{"0":"zero"},"n":1e2,"u":"é<>&","z":-0}`
		if string(th.Data) != want {
			t.Fatalf("Put returned %s; want %s", th.Data, want)
		}
		got, _ := e.get(t, "j", "a")
		if string(got.Data) != want {
			t.Fatalf("Get returned %s; want %s", got.Data, want)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "j", Where: `{"m.0":"zero"}`}); len(ids) != 1 {
			t.Errorf("m.0 as an object key matched %v; want [a]", ids)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "j", Where: `{"arr.0":"zero"}`}); len(ids) != 0 {
			t.Errorf("arr.0 matched %v; want nothing: digits are keys, not indexes", ids)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "j", Where: `{"n":100}`}); len(ids) != 1 {
			t.Errorf("1e2 = 100 matched %v; want [a]", ids)
		}
		// numbers compare as float64 on both backends, also above 2^53
		e.mustPut(t, &dbv1.Write{Ns: "j", Id: "big1", Type: "B", Data: data(`{"big":9007199254740993}`)})
		e.mustPut(t, &dbv1.Write{Ns: "j", Id: "big2", Type: "B", Data: data(`{"big":9007199254740992}`)})
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "j", Type: "B", Where: `{"big":9007199254740993}`}); len(ids) != 2 {
			t.Errorf("big eq matched %v; want both (float64 comparison)", ids)
		}
		if ids := e.listAll(t, &dbv1.ListRequest{Ns: "j", Type: "B", Where: `{"big":{"gt":9007199254740992}}`}); len(ids) != 0 {
			t.Errorf("big gt matched %v; want none (float64 comparison)", ids)
		}
		// nulls inside arrays of a merge patch are kept (RFC 7396)
		th = e.mustPut(t, &dbv1.Write{Ns: "j", Id: "a", MergePatch: data(`{"data":{"arr":[{"x":null}],"m":null}}`)})
		if !strings.Contains(string(th.Data), `"arr":[{"x":null}]`) || strings.Contains(string(th.Data), `"m"`) {
			t.Errorf("patched data = %s; want arr [{\"x\":null}] and m removed", th.Data)
		}
	})
}

// NewPrefixedID names what it identifies, and IDs made later sort later,
// so that lists ordered by ID are in creation order.
func TestNewPrefixedID(t *testing.T) {
	prev := ""
	for range 100 {
		id := thingsdb.NewPrefixedID("usr_")
		hex := strings.TrimPrefix(id, "usr_")
		if len(hex) != 32 || strings.Trim(hex, "0123456789abcdef") != "" || !strings.HasPrefix(id, "usr_") {
			t.Fatalf("NewPrefixedID(%q) = %q; want usr_ and 32 hex digits", "usr_", id)
		}
		if id <= prev {
			t.Fatalf("NewPrefixedID = %q after %q; want a later ID to sort later", id, prev)
		}
		prev = id
	}
}
