package thingsdb_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// TestSearchRoutes drives the REST routes of search, analytics and stats
// with a permission check like the gateway's: the caller holds the
// permissions listed in X-Test-Grants as ns:permission.
func TestSearchRoutes(t *testing.T) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			svc, err := thingsdb.New(testdb.Open(t, name), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			mux := http.NewServeMux()
			thingsdb.Routes(mux, svc, thingsdb.RouteOptions{Authorize: func(r *http.Request, ns, perm string) error {
				for _, g := range strings.Split(r.Header.Get("X-Test-Grants"), ",") {
					if g == ns+":"+perm {
						return nil
					}
				}
				return apierr.New(apierr.Forbidden, "missing permission %s on namespace %s", perm, ns)
			}})
			do := func(method, path, grants, body string) (int, map[string]any) {
				r := httptest.NewRequest(method, path, strings.NewReader(body))
				r.Header.Set("X-Test-Grants", grants)
				w := httptest.NewRecorder()
				mux.ServeHTTP(w, r)
				var out map[string]any
				json.Unmarshal(w.Body.Bytes(), &out)
				return w.Code, out
			}
			all := "t1:things:write,t1:things:read,t1:search:read,t1:analytics:write,t1:analytics:read"
			for _, id := range []string{"a", "b"} {
				if code, out := do("PUT", "/v1/things/t1/"+id, all, `{"type":"Doc","content":"the brown fox `+id+`","embedding":[1,0.5,0.25]}`); code >= 300 {
					t.Fatalf("put: %d %v", code, out)
				}
			}
			code, out := do("POST", "/v1/search", all, `{"ns":"t1","query":"fox","vector":[1,0.5,0.2],"limit":5,"weights":{"fulltext":2,"vector":1},"k":10}`)
			if code != 200 || out["mode"] != "hybrid" || len(out["items"].([]any)) != 2 {
				t.Fatalf("search: %d %v", code, out)
			}
			item := out["items"].([]any)[0].(map[string]any)
			if !strings.Contains(item["snippet"].(string), "<mark>fox</mark>") || item["thing"].(map[string]any)["embedding"] != nil || item["fulltextRank"] == nil {
				t.Fatalf("item = %v", item)
			}
			code, out = do("POST", "/v1/search", all, `{"ns":"t1","query":"fox","where":{"missing":{"exists":true}}}`)
			if code != 200 || len(out["items"].([]any)) != 0 {
				t.Fatalf("where object: %d %v", code, out)
			}
			// The namespace in the body is checked; system namespaces are closed.
			for _, c := range []struct {
				body, grants string
				status       int
			}{
				{`{"ns":"t2","query":"fox"}`, all, 403},
				{`{"ns":"t1","query":"fox"}`, "t1:things:read", 403},
				{`{"ns":"_auth","query":"fox"}`, all, 403},
				{`{"ns":"","query":"fox"}`, all, 400},
				{`{"ns":"t1","query":"fox","bogus":1}`, all, 400},
				{`{"ns":"t1","query":"-fox"}`, all, 400},
				{`{"ns":"t1","vector":[1,2]}`, all, 400},
				{`{"ns":"t1","query":"fox","mode":"psychic"}`, all, 400},
				{`{"ns":"t1","query":"fox","limit":1000}`, all, 400},
				{`{"ns":"t1","query":"fox","cursor":"garbage"}`, all, 400},
				{`not json`, all, 400},
			} {
				if code, out := do("POST", "/v1/search", c.grants, c.body); code != c.status || out["error"] == nil {
					t.Errorf("search %s: %d %v; want %d in the error envelope", c.body, code, out, c.status)
				}
			}
			// Analytics: ingest checks every event's namespace, all or nothing.
			events := `{"events":[{"ns":"t1","name":"signup","properties":{"plan":"pro"},"timestamp":"2026-03-01T10:05:00Z"},{"ns":"t1","name":"signup","timestamp":"2026-03-01T11:00:00Z"}]}`
			if code, out := do("POST", "/v1/analytics/events", all, events); code != 202 || out["accepted"] != 2.0 {
				t.Fatalf("ingest: %d %v", code, out)
			}
			mixed := `{"events":[{"ns":"t1","name":"signup"},{"ns":"t2","name":"signup"}]}`
			if code, out := do("POST", "/v1/analytics/events", all, mixed); code != 403 {
				t.Fatalf("ingest into t2: %d %v", code, out)
			}
			if code, _ := do("POST", "/v1/analytics/events", all, `{"events":[{"ns":"t1","name":"x","properties":[1]}]}`); code != 400 {
				t.Fatalf("array properties: %d", code)
			}
			q := "/v1/analytics/query?ns=t1&event=signup&from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z&bucket=hour"
			code, out = do("GET", q, all, "")
			if code != 200 || len(out["rows"].([]any)) != 2 {
				t.Fatalf("query: %d %v", code, out)
			}
			if code, _ := do("GET", q, "t1:analytics:write", ""); code != 403 {
				t.Fatalf("query without analytics:read: %d", code)
			}
			if code, _ := do("GET", "/v1/analytics/query?ns=t1&event=signup&from=yesterday&to=2026-03-02T00:00:00Z", all, ""); code != 400 {
				t.Fatalf("bad from: %d", code)
			}
			if code, _ := do("POST", "/v1/analytics/update", all, ""); code != 403 {
				t.Fatalf("update without analytics:write on _analytics: %d", code)
			}
			if code, out := do("POST", "/v1/analytics/update", "_analytics:analytics:write", ""); code != 200 || out["rolled"] != 2.0 {
				t.Fatalf("update: %d %v", code, out)
			}
			if code, _ := do("PUT", "/v1/analytics/rollups/t1", all, `{"event":"signup","property":"plan"}`); code != 204 {
				t.Fatalf("rollup property: %d", code)
			}
			code, out = do("GET", "/v1/stats/t1", all, "")
			if code != 200 || out["things"] != 2.0 || out["embeddings"] != 2.0 || out["events"] != 2.0 {
				t.Fatalf("stats: %d %v", code, out)
			}
			if code, _ := do("GET", "/v1/stats/_auth", all, ""); code != 403 {
				t.Fatalf("stats of a system namespace: %d", code)
			}
			code, out = do("PUT", "/v1/search/config/t1", all, `{"fields":["title"],"embedOnWrite":false}`)
			if code != 200 || out["dims"] != 3.0 {
				t.Fatalf("config: %d %v", code, out)
			}
			if code, _ := do("PUT", "/v1/search/config/t1", all, `{"dims":5}`); code != 400 {
				t.Fatalf("changing dims: %d", code)
			}
			if code, _ := do("POST", "/v1/search/embeddings/t1", all, ""); code != 422 {
				t.Fatalf("generate without an embedder: %d", code)
			}
		})
	}
}
