package thingsdb_test

import (
	"database/sql"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand"
	"slices"
	"sort"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/postgres"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

func (e *env) search(t *testing.T, req *dbv1.SearchRequest) *dbv1.SearchResponse {
	t.Helper()
	res, err := e.api.Search(ctx, connect.NewRequest(req))
	if err != nil {
		t.Fatalf("Search(%+v) = %v", req, err)
	}
	return res.Msg
}

func hitIDs(res *dbv1.SearchResponse) []string {
	ids := []string{}
	for _, it := range res.Items {
		ids = append(ids, it.Thing.Id)
	}
	return ids
}

func sorted(ids []string) []string {
	out := slices.Clone(ids)
	sort.Strings(out)
	return out
}

func code(err error) apierr.Code {
	if err == nil {
		return ""
	}
	return apierr.From(err).Code
}

func postgresOpen(u string, conns int) (*sql.DB, error) {
	db, err := postgres.Open(ctx, u, conns)
	if err != nil {
		return nil, err
	}
	if _, err := postgres.Migrate(ctx, db); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

var corpus = []struct{ id, typ, content, data string }{
	{"d1", "Doc", "The quick brown fox jumps over the lazy dog", `{"lang":"en","n":1}`},
	{"d2", "Doc", "A quick movement of the enemy will jeopardize six gunboats", `{"lang":"en","n":2}`},
	{"d3", "Doc", "The brown dog sleeps all day", `{"lang":"de","n":3}`},
	{"d4", "Note", "Foxes are quick and clever animals", `{"lang":"en","n":4}`},
	{"d5", "Doc", "Lazy afternoons with a brown fox", `{"lang":"fr","n":5}`},
	{"d6", "Doc", "Gunboats sail at dawn", `{"lang":"en","n":6}`},
}

func seed(t *testing.T, e *env, ns string) {
	t.Helper()
	for _, c := range corpus {
		e.mustPut(t, &dbv1.Write{Ns: ns, Id: c.id, Type: c.typ, Content: c.content, Data: []byte(c.data)})
	}
}

func TestFullTextSemantics(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		seed(t, e, "s1")
		// Another namespace with the same words must never leak in.
		e.mustPut(t, &dbv1.Write{Ns: "s2", Id: "x1", Type: "Doc", Content: "quick brown fox"})
		cases := []struct {
			q    string
			typ  string
			want []string
		}{
			{q: "quick", want: []string{"d1", "d2", "d4"}},
			{q: "brown fox", want: []string{"d1", "d5"}},
			{q: `"brown fox"`, want: []string{"d1", "d5"}},
			{q: `"fox brown"`, want: []string{}},
			{q: `"quick brown"`, want: []string{"d1"}},
			{q: "gunboats OR dog", want: []string{"d1", "d2", "d3", "d6"}},
			{q: "gunboats or sleeps", want: []string{"d2", "d3", "d6"}},
			{q: "brown -fox", want: []string{"d3"}},
			{q: `quick -"lazy dog"`, want: []string{"d2", "d4"}},
			{q: "brown fox OR gunboats -dawn", want: []string{"d1", "d2", "d5"}},
			{q: "quick", typ: "Note", want: []string{"d4"}},
			{q: "zebra", want: []string{}},
		}
		for _, c := range cases {
			res := e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: c.q, Type: c.typ, Mode: "fulltext"})
			if got := sorted(hitIDs(res)); !slices.Equal(got, c.want) {
				t.Errorf("query %q type %q = %v; want %v", c.q, c.typ, got, c.want)
			}
		}
		// where filters apply to full text.
		res := e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: "quick OR brown", Where: `{"lang":"en","n":{"gte":2}}`})
		if got := sorted(hitIDs(res)); !slices.Equal(got, []string{"d2", "d4"}) {
			t.Errorf("where-filtered = %v", got)
		}
		// Snippets mark matched words.
		res = e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: "gunboats", Mode: "fulltext"})
		for _, it := range res.Items {
			if !containsMark(it.Snippet, "unboats") {
				t.Errorf("snippet of %s = %q; want the match marked", it.Thing.Id, it.Snippet)
			}
		}
		// A better match ranks first: d6 has "gunboats" in 4 words.
		if ids := hitIDs(res); len(ids) != 2 || ids[0] != "d6" {
			t.Errorf("ranking = %v; want d6 first", ids)
		}
		// Deleted and expired things disappear; updates are reindexed.
		if _, err := e.api.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "s1", Id: "d6"})); err != nil {
			t.Fatal(err)
		}
		e.mustPut(t, &dbv1.Write{Ns: "s1", Id: "d2", Type: "Doc", Content: "nothing of interest"})
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: "gunboats"})); len(got) != 0 {
			t.Errorf("after delete and update: %v", got)
		}
		e.mustPut(t, &dbv1.Write{Ns: "s1", Id: "d7", Type: "Doc", Content: "ephemeral gunboats", ExpiresAt: e.clock.Now().Add(time.Minute).UnixMicro()})
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: "gunboats"})); !slices.Equal(got, []string{"d7"}) {
			t.Errorf("before expiry: %v", got)
		}
		e.clock.Advance(2 * time.Minute)
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "s1", Query: "gunboats"})); len(got) != 0 {
			t.Errorf("after expiry: %v", got)
		}
		// Bad queries are refused with invalid.
		for _, q := range []string{"-fox", "  ", `""`, "quick OR -fox", "!!! ..."} {
			_, err := e.api.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "s1", Query: q, Mode: "fulltext"}))
			if code(err) != apierr.Invalid {
				t.Errorf("query %q: err = %v; want invalid", q, err)
			}
		}
	})
}

func containsMark(s, word string) bool {
	for i := 0; i+len("<mark>") < len(s); i++ {
		if s[i:i+6] == "<mark>" {
			j := i + 6
			for k := j; k+7 <= len(s); k++ {
				if s[k:k+7] == "</mark>" {
					if m := s[j:k]; len(m) >= len(word) && (m[len(m)-len(word):] == word || m[1:] == word) {
						return true
					}
					break
				}
			}
		}
	}
	return false
}

func TestSearchFields(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.mustPut(t, &dbv1.Write{Ns: "f1", Id: "a", Type: "Book", Data: []byte(`{"title":"Moby Dick","author":{"name":"Melville"}}`), Content: "a whale of a tale"})
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "f1", Query: "melville"})); len(got) != 0 {
			t.Fatalf("unindexed field matched: %v", got)
		}
		res, err := e.api.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "f1", Fields: []string{"title", "author.name"}}}))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(res.Msg.Config.Fields, []string{"title", "author.name"}) {
			t.Fatalf("config = %v", res.Msg.Config)
		}
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "f1", Query: "melville whale"})); !slices.Equal(got, []string{"a"}) {
			t.Fatalf("existing thing not reindexed: %v", got)
		}
		e.mustPut(t, &dbv1.Write{Ns: "f1", Id: "b", Type: "Book", Data: []byte(`{"title":"Bleak House"}`)})
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "f1", Query: `"bleak house"`})); !slices.Equal(got, []string{"b"}) {
			t.Fatalf("new thing's field: %v", got)
		}
		_, err = e.api.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "f1", Fields: []string{"bad path!"}}}))
		if code(err) != apierr.Invalid {
			t.Fatalf("bad field: %v", err)
		}
	})
}

func TestSearchPagination(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		rng := rand.New(rand.NewSource(1))
		const n = 57
		ops := []*dbv1.Op{}
		for i := 0; i < n; i++ {
			words := "common"
			for j := 0; j < rng.Intn(5); j++ {
				words += " common"
			}
			v := make([]float32, 8)
			for j := range v {
				v[j] = rng.Float32() - 0.5
			}
			ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: fmt.Sprintf("p%02d", i), Type: "P", Content: words + " filler text", Embedding: v}}})
		}
		if _, err := e.api.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "pg", Ops: ops})); err != nil {
			t.Fatal(err)
		}
		q := make([]float32, 8)
		q[0] = 1
		for _, mode := range []string{"fulltext", "vector", "hybrid"} {
			seen := map[string]bool{}
			cursor := ""
			pages := 0
			for {
				req := &dbv1.SearchRequest{Ns: "pg", Query: "common", Vector: q, Mode: mode, Limit: 10, Cursor: cursor}
				if mode == "fulltext" {
					req.Vector = nil
				}
				if mode == "vector" {
					req.Query = ""
				}
				res := e.search(t, req)
				pages++
				var last float64 = math.Inf(1)
				for _, it := range res.Items {
					if seen[it.Thing.Id] {
						t.Fatalf("%s: %s repeated on page %d", mode, it.Thing.Id, pages)
					}
					seen[it.Thing.Id] = true
					if it.Score > last {
						t.Fatalf("%s: scores not descending", mode)
					}
					last = it.Score
				}
				if res.NextCursor == "" {
					break
				}
				cursor = res.NextCursor
				if pages > 20 {
					t.Fatal("too many pages")
				}
			}
			if mode == "hybrid" {
				// Hybrid pages walk the fusion of each leg's top 2 x limit.
				ft := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "pg", Query: "common", Mode: "fulltext", Limit: 20}))
				vr := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "pg", Vector: q, Mode: "vector", Limit: 20}))
				union := map[string]bool{}
				for _, id := range append(ft, vr...) {
					union[id] = true
				}
				if len(seen) != len(union) {
					t.Errorf("hybrid: %d distinct results over %d pages; want the %d of both legs' top 20", len(seen), pages, len(union))
				}
				continue
			}
			if len(seen) != n {
				t.Errorf("%s: %d distinct results over %d pages; want %d", mode, len(seen), pages, n)
			}
		}
		// A cursor is tied to its query.
		res := e.search(t, &dbv1.SearchRequest{Ns: "pg", Query: "common", Mode: "fulltext", Limit: 5})
		_, err := e.api.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "pg", Query: "filler", Mode: "fulltext", Limit: 5, Cursor: res.NextCursor}))
		if code(err) != apierr.Invalid {
			t.Fatalf("cursor of another query: %v", err)
		}
	})
}

func exactTop(vecs map[string][]float32, q []float32, k int) []string {
	type sc struct {
		id string
		s  float64
	}
	var all []sc
	qn := norm(q)
	for id, v := range vecs {
		var d float64
		vn := norm(v)
		for i := range v {
			d += float64(v[i]) * float64(q[i])
		}
		all = append(all, sc{id, d / (vn * qn)})
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].s != all[j].s {
			return all[i].s > all[j].s
		}
		return all[i].id < all[j].id
	})
	var out []string
	for i := 0; i < k && i < len(all); i++ {
		out = append(out, all[i].id)
	}
	return out
}

func norm(v []float32) float64 {
	var s float64
	for _, f := range v {
		s += float64(f) * float64(f)
	}
	return math.Sqrt(s)
}

func TestVectorSearchExact(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		rng := rand.New(rand.NewSource(7))
		vecs := map[string][]float32{}
		even := map[string][]float32{}
		for i := 0; i < 300; i++ {
			v := make([]float32, 16)
			for j := range v {
				v[j] = float32(rng.NormFloat64())
			}
			id := fmt.Sprintf("v%03d", i)
			typ := "Odd"
			if i%2 == 0 {
				typ = "Even"
				even[id] = v
			}
			vecs[id] = v
			e.mustPut(t, &dbv1.Write{Ns: "vx", Id: id, Type: typ, Embedding: v, Data: []byte(fmt.Sprintf(`{"i":%d}`, i))})
		}
		for trial := 0; trial < 5; trial++ {
			q := make([]float32, 16)
			for j := range q {
				q[j] = float32(rng.NormFloat64())
			}
			res := e.search(t, &dbv1.SearchRequest{Ns: "vx", Vector: q, Limit: 10})
			if got, want := hitIDs(res), exactTop(vecs, q, 10); !slices.Equal(got, want) {
				t.Fatalf("vector top 10 = %v; exact %v", got, want)
			}
			res = e.search(t, &dbv1.SearchRequest{Ns: "vx", Vector: q, Limit: 10, Type: "Even"})
			if got, want := hitIDs(res), exactTop(even, q, 10); !slices.Equal(got, want) {
				t.Fatalf("typed vector top 10 = %v; exact %v", got, want)
			}
			// A where filter that keeps few things still fills the page.
			res = e.search(t, &dbv1.SearchRequest{Ns: "vx", Vector: q, Limit: 5, Where: `{"i":{"gte":290}}`})
			few := map[string][]float32{}
			for i := 290; i < 300; i++ {
				id := fmt.Sprintf("v%03d", i)
				few[id] = vecs[id]
			}
			if got, want := hitIDs(res), exactTop(few, q, 5); !slices.Equal(got, want) {
				t.Fatalf("filtered vector top 5 = %v; exact %v", got, want)
			}
		}
		// Deletes and embedding removal leave the index.
		top := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "vx", Vector: vecs["v000"], Limit: 1}))
		if !slices.Equal(top, []string{"v000"}) {
			t.Fatalf("self search = %v", top)
		}
		e.api.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "vx", Id: "v000"}))
		if top := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "vx", Vector: vecs["v000"], Limit: 1})); slices.Contains(top, "v000") {
			t.Fatal("deleted thing found")
		}
		// One dimension per namespace.
		_, _, err := e.put(t, &dbv1.Write{Ns: "vx", Id: "bad", Type: "Odd", Embedding: []float32{1, 2, 3}})
		if code(err) != apierr.Invalid {
			t.Fatalf("wrong dimension write: %v", err)
		}
		_, err = e.api.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "vx", Vector: []float32{1, 2, 3}}))
		if code(err) != apierr.Invalid {
			t.Fatalf("wrong dimension query: %v", err)
		}
		// Another namespace has its own dimension.
		e.mustPut(t, &dbv1.Write{Ns: "vy", Id: "ok", Type: "Odd", Embedding: []float32{1, 2, 3}})
	})
}

// TestVectorAcrossReplicas shows that a thing written through one db
// replica is found by vector search through another within a second: two
// Services on one PostgreSQL schema are two replicas.
func TestVectorAcrossReplicas(t *testing.T) {
	if !slices.Contains(testdb.Backends(), thingsdb.Postgres) {
		t.Skip("needs DOTDO_TEST_POSTGRES_URL: replicas share a PostgreSQL database")
	}
	u := testdb.SchemaURL(t)
	open := func(conns int) *thingsdb.Service {
		db, err := postgresOpen(u, conns)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		svc, err := thingsdb.New(thingsdb.Backend{Name: thingsdb.Postgres, Read: db, Write: db}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.Close() })
		return svc
	}
	// B has a pool of one connection: following the other replicas must
	// not take it.
	a, b := open(10), open(1)
	v := []float32{0.1, 0.9, 0.3, 0.4}
	for i := 0; i < 3; i++ {
		id := fmt.Sprintf("r%d", i)
		start := time.Now()
		if _, err := a.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "rep", Id: id, Type: "T", Embedding: v}})); err != nil {
			t.Fatal(err)
		}
		for {
			res, err := b.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "rep", Vector: v, Limit: 10}))
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(hitIDs(res.Msg), id) {
				t.Logf("%s visible through replica B after %v", id, time.Since(start))
				break
			}
			if time.Since(start) > time.Second {
				t.Fatalf("%s written through A not found through B within 1s", id)
			}
			time.Sleep(5 * time.Millisecond)
		}
		v = []float32{v[1], v[2], v[3], v[0]}
	}
	// A delete through B leaves A's index too.
	if _, err := b.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: "rep", Id: "r0"})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Second)
	for {
		res, _ := a.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "rep", Vector: v, Limit: 10}))
		if !slices.Contains(hitIDs(res.Msg), "r0") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("delete through B still found through A after 1s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestFullTextCapAcrossNamespaces: when another namespace alone fills the
// cap of ranked candidates, a namespace's own matches are still found.
func TestFullTextCapAcrossNamespaces(t *testing.T) {
	svc, err := thingsdb.New(testdb.Open(t, thingsdb.SQLite), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	for b := 0; b <= thingsdb.MaxRankedCandidates/1000; b++ {
		ops := make([]*dbv1.Op, 1000)
		for i := range ops {
			ops[i] = &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: fmt.Sprintf("a%d-%d", b, i), Type: "T", Content: "common word"}}}
		}
		if _, err := svc.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "big", Ops: ops})); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		svc.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "small", Id: fmt.Sprintf("s%d", i), Type: "T", Content: "common thing"}}))
	}
	res, err := svc.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "small", Query: "common", Limit: 10}))
	if err != nil {
		t.Fatal(err)
	}
	if got := sorted(hitIDs(res.Msg)); !slices.Equal(got, []string{"s0", "s1", "s2"}) {
		t.Fatalf("small namespace = %v", got)
	}
	res, _ = svc.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "big", Query: "common", Limit: 10}))
	if len(res.Msg.Items) != 10 {
		t.Fatalf("big namespace page = %d items", len(res.Msg.Items))
	}
}
