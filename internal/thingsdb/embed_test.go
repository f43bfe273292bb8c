package thingsdb_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"testing"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// TestOpenAIEmbedder checks the exact request an OpenAI-compatible
// provider receives and the handling of its answers.
func TestOpenAIEmbedder(t *testing.T) {
	var calls int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if r.Method != http.MethodPost || r.URL.Path != "/v1/embeddings" {
			t.Errorf("request %s %s; want POST /v1/embeddings", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer sk-test-123" {
			t.Errorf("Authorization = %q", got)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
		var body map[string]any
		dec := json.NewDecoder(r.Body)
		if err := dec.Decode(&body); err != nil {
			t.Errorf("body: %v", err)
		}
		want := map[string]any{"model": "text-embedding-3-small", "input": []any{"first text", "second"}, "encoding_format": "float", "dimensions": float64(3)}
		if fmt.Sprint(body) != fmt.Sprint(want) {
			t.Errorf("body = %v; want %v", body, want)
		}
		if calls == 2 {
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"error":{"message":"slow down","type":"rate_limit"}}`)
			return
		}
		// Out of order, as the API allows: the index says which is which.
		io.WriteString(w, `{"object":"list","data":[{"object":"embedding","index":1,"embedding":[0,1,0]},{"object":"embedding","index":0,"embedding":[1,0,0]}],"model":"text-embedding-3-small","usage":{"prompt_tokens":3,"total_tokens":3}}`)
	}))
	defer srv.Close()
	e := &thingsdb.OpenAIEmbedder{BaseURL: srv.URL + "/v1", Model: "text-embedding-3-small", Dimensions: 3, SendDimensions: true, APIKey: "sk-test-123"}
	vs, err := e.Embed(ctx, []string{"first text", "second"})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(vs) != "[[1 0 0] [0 1 0]]" {
		t.Fatalf("embeddings = %v", vs)
	}
	_, err = e.Embed(ctx, []string{"first text", "second"})
	if err == nil || !strings.Contains(err.Error(), "429") || !strings.Contains(err.Error(), "slow down") {
		t.Fatalf("provider error = %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "sk-test-123") {
		t.Fatal("error leaks the key")
	}
	wrong := &thingsdb.OpenAIEmbedder{BaseURL: srv.URL + "/v1", Model: "text-embedding-3-small", Dimensions: 4, SendDimensions: false, APIKey: "sk-test-123"}
	calls = 10
	srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"data":[{"index":0,"embedding":[1,0,0]}]}`)
	})
	if _, err := wrong.Embed(ctx, []string{"x"}); err == nil || !strings.Contains(err.Error(), "dimensions") {
		t.Fatalf("wrong dimension = %v", err)
	}
}

func TestLexicalHashEmbedder(t *testing.T) {
	e := thingsdb.LexicalHashEmbedder{Dimensions: 64}
	vs, _ := e.Embed(ctx, []string{"the brown fox", "The Brown fox!", "quantum chromodynamics", ""})
	if fmt.Sprint(vs[0]) != fmt.Sprint(vs[1]) {
		t.Fatal("case and punctuation change the embedding")
	}
	cos := func(a, b []float32) float64 {
		var d float64
		for i := range a {
			d += float64(a[i] * b[i])
		}
		return d
	}
	if c := cos(vs[0], vs[2]); math.Abs(c) > 0.5 {
		t.Fatalf("unrelated texts too similar: %v", c)
	}
	if len(vs[3]) != 64 {
		t.Fatal("empty text has no vector")
	}
}

func TestEmbedOnWriteAndGenerateMissing(t *testing.T) {
	eachBinding(t, func(t *testing.T, e *env) {
		e.svc.SetEmbedder(thingsdb.LexicalHashEmbedder{Dimensions: 32})
		// Written before embed-on-write: no embedding yet.
		for i := 0; i < 7; i++ {
			e.mustPut(t, &dbv1.Write{Ns: "em", Id: fmt.Sprintf("old%d", i), Type: "T", Content: fmt.Sprintf("old thing number %d", i)})
		}
		e.mustPut(t, &dbv1.Write{Ns: "em", Id: "empty", Type: "T"})
		if _, err := e.api.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "em", EmbedOnWrite: true}})); err != nil {
			t.Fatal(err)
		}
		th := e.mustPut(t, &dbv1.Write{Ns: "em", Id: "new", Type: "T", Content: "fresh words here"})
		if len(th.Embedding) != 32 {
			t.Fatalf("embed on write: embedding has %d dimensions", len(th.Embedding))
		}
		got, _ := e.get(t, "em", "new")
		if len(got.Embedding) != 32 || got.Version != 1 {
			t.Fatalf("stored: %d dims, version %d", len(got.Embedding), got.Version)
		}
		// A patch of the content re-embeds.
		before := fmt.Sprint(got.Embedding)
		if _, err := e.api.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "em", Id: "new", MergePatch: []byte(`{"content":"entirely different text"}`)}})); err != nil {
			t.Fatal(err)
		}
		got, _ = e.get(t, "em", "new")
		if len(got.Embedding) != 32 || fmt.Sprint(got.Embedding) == before {
			t.Fatal("patched content kept its old embedding")
		}
		// Backfill in batches of 3, at most 4 per call: resumable.
		total := int64(0)
		for round := 0; ; round++ {
			res, err := e.api.GenerateMissingEmbeddings(ctx, connect.NewRequest(&dbv1.GenerateMissingEmbeddingsRequest{Ns: "em", BatchSize: 3, Max: 4}))
			if err != nil {
				t.Fatal(err)
			}
			total += res.Msg.Embedded
			if res.Msg.Done {
				break
			}
			if round > 5 {
				t.Fatal("GenerateMissingEmbeddings never done")
			}
		}
		if total != 7 {
			t.Fatalf("embedded %d; want 7", total)
		}
		res := e.search(t, &dbv1.SearchRequest{Ns: "em", Query: "old thing number 3", Mode: "vector", Limit: 1})
		if ids := hitIDs(res); len(ids) != 1 || ids[0] != "old3" {
			t.Fatalf("vector search by text = %v", ids)
		}
		again, _ := e.api.GenerateMissingEmbeddings(ctx, connect.NewRequest(&dbv1.GenerateMissingEmbeddingsRequest{}))
		if again.Msg.Embedded != 0 || !again.Msg.Done {
			t.Fatalf("second run = %+v", again.Msg)
		}
	})
}

type evalSet struct {
	Documents []struct{ ID, Content string }
	Queries   []struct {
		Q        string
		Relevant map[string]int
	}
}

func ndcg10(ranked []string, rel map[string]int) float64 {
	dcg := 0.0
	for i, id := range ranked {
		if i == 10 {
			break
		}
		dcg += (math.Pow(2, float64(rel[id])) - 1) / math.Log2(float64(i+2))
	}
	var gains []int
	for _, g := range rel {
		gains = append(gains, g)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(gains)))
	idcg := 0.0
	for i, g := range gains {
		if i == 10 {
			break
		}
		idcg += (math.Pow(2, float64(g)) - 1) / math.Log2(float64(i+2))
	}
	return dcg / idcg
}

// TestHybridQuality measures nDCG@10 of each mode over the labelled set in
// testdata/search_eval.json: hybrid must be at least the better single leg.
func TestHybridQuality(t *testing.T) {
	raw, err := os.ReadFile("testdata/search_eval.json")
	if err != nil {
		t.Fatal(err)
	}
	var set evalSet
	if err := json.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			svc, err := thingsdb.New(testdb.Open(t, name), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			svc.SetEmbedder(thingsdb.LexicalHashEmbedder{Dimensions: 256})
			svc.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "eval", EmbedOnWrite: true}}))
			for _, d := range set.Documents {
				if _, err := svc.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "eval", Id: d.ID, Type: "Doc", Content: d.Content}})); err != nil {
					t.Fatal(err)
				}
			}
			score := map[string]float64{}
			for _, mode := range []string{"fulltext", "vector", "hybrid"} {
				sum := 0.0
				for _, q := range set.Queries {
					res, err := svc.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "eval", Query: q.Q, Mode: mode, Limit: 10}))
					if err != nil {
						t.Fatalf("%s %q: %v", mode, q.Q, err)
					}
					sum += ndcg10(hitIDs(res.Msg), q.Relevant)
				}
				score[mode] = sum / float64(len(set.Queries))
			}
			t.Logf("nDCG@10 over %d queries: fulltext %.3f, vector %.3f, hybrid %.3f", len(set.Queries), score["fulltext"], score["vector"], score["hybrid"])
			if best := math.Max(score["fulltext"], score["vector"]); score["hybrid"] < best {
				t.Fatalf("hybrid nDCG@10 %.3f is below the better single leg %.3f", score["hybrid"], best)
			}
		})
	}
}

// TestEmbedderDown: with the provider failing, writes still succeed
// without an embedding and GenerateMissingEmbeddings reports the failure
// and is not done.
func TestEmbedderDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"model not loaded"}}`)
	}))
	defer srv.Close()
	eachBinding(t, func(t *testing.T, e *env) {
		e.svc.SetEmbedder(&thingsdb.OpenAIEmbedder{BaseURL: srv.URL + "/v1", Model: "m", Dimensions: 4})
		e.api.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "down", EmbedOnWrite: true}}))
		th := e.mustPut(t, &dbv1.Write{Ns: "down", Id: "a", Type: "T", Content: "some text"})
		if len(th.Embedding) != 0 {
			t.Fatal("embedding from a failing provider")
		}
		res, err := e.api.GenerateMissingEmbeddings(ctx, connect.NewRequest(&dbv1.GenerateMissingEmbeddingsRequest{Ns: "down"}))
		if err != nil {
			t.Fatal(err)
		}
		if res.Msg.Failed != 1 || res.Msg.Done || res.Msg.Embedded != 0 {
			t.Fatalf("generate with the provider down = %+v", res.Msg)
		}
		// A query text cannot be embedded: 503, while full text still works.
		_, err = e.api.Search(ctx, connect.NewRequest(&dbv1.SearchRequest{Ns: "down", Query: "text", Mode: "vector"}))
		if code(err) != "unavailable" {
			t.Fatalf("vector search by text with the provider down: %v", err)
		}
		if got := hitIDs(e.search(t, &dbv1.SearchRequest{Ns: "down", Query: "text", Mode: "fulltext"})); len(got) != 1 {
			t.Fatalf("full text = %v", got)
		}
	})
}
