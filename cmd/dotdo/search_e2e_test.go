package main

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
)

// Search, analytics and stats through the real binary's gateway: full
// text, vector and hybrid search with the offline embedder embedding on
// write, events in and counts out, and the gateway's own request events
// reaching the same pipeline.
func TestSearchAnalyticsE2E(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			b := newBackend(t, be)
			p := startAllInOne(t, b, "--embedder", "lexical-hash", "--embedder-dims", "64")
			base := p.url

			if r := do(t, "PUT", base+"/v1/search/config/acme", `{"embedOnWrite":true}`); r.status != http.StatusOK {
				t.Fatalf("PUT search config = %d %s", r.status, r.body)
			}
			docs := map[string]string{
				"fox":   "the quick brown fox jumps over the lazy dog",
				"cat":   "a sleepy cat lies in the sun all afternoon",
				"mixed": "the brown dog chases a cat around the garden",
			}
			for id, text := range docs {
				body := fmt.Sprintf(`{"type":"Doc","data":{"n":1},"content":%q}`, text)
				if r := do(t, "PUT", base+"/v1/things/acme/"+id, body); r.status != http.StatusOK && r.status != http.StatusCreated {
					t.Fatalf("PUT %s = %d %s", id, r.status, r.body)
				}
			}

			ids := func(r *response) []string {
				t.Helper()
				if r.status != http.StatusOK {
					t.Fatalf("search = %d %s", r.status, r.body)
				}
				var out []string
				items, _ := lookup(r.json(t), "items")
				for _, it := range items.([]any) {
					id, _ := lookup(it, "thing.id")
					out = append(out, id.(string))
				}
				return out
			}
			// Phrase, OR and exclusion.
			if got := ids(do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"\"brown fox\"","mode":"fulltext"}`)); len(got) != 1 || got[0] != "fox" {
				t.Errorf(`search "brown fox" = %v; want [fox]`, got)
			}
			if got := ids(do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"brown -cat","mode":"fulltext"}`)); len(got) != 1 || got[0] != "fox" {
				t.Errorf("search brown -cat = %v; want [fox]", got)
			}
			if got := ids(do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"sleepy OR fox","mode":"fulltext"}`)); len(got) != 2 {
				t.Errorf("search sleepy OR fox = %v; want cat and fox", got)
			}
			// Vector and hybrid from text, embedded by the db service.
			if got := ids(do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"sleepy cat sun","mode":"vector","limit":1}`)); len(got) != 1 || got[0] != "cat" {
				t.Errorf("vector search = %v; want [cat]", got)
			}
			if got := ids(do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"brown dog garden","mode":"hybrid","limit":3}`)); len(got) == 0 || got[0] != "mixed" {
				t.Errorf("hybrid search = %v; want mixed first", got)
			}
			// A tenant key of another namespace cannot search this one.
			other := createKey(t, base, `{"name":"other","role":"user","namespaces":["other"]}`)
			if r := do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"fox"}`, "Authorization", "Bearer "+other); r.status != http.StatusForbidden {
				t.Errorf("search of another namespace = %d %s; want 403", r.status, r.body)
			}
			if r := do(t, "POST", base+"/v1/search", `{"ns":"acme","query":"-fox"}`); r.status != http.StatusBadRequest {
				t.Errorf("search -fox = %d %s; want 400", r.status, r.body)
			}

			// Analytics: events in, rolled up, counted out.
			hour := time.Now().UTC().Truncate(time.Hour)
			events := fmt.Sprintf(`{"events":[
				{"ns":"acme","name":"page_view","properties":{"path":"/a"},"timestamp":%q},
				{"ns":"acme","name":"page_view","properties":{"path":"/a"},"timestamp":%q},
				{"ns":"acme","name":"page_view","properties":{"path":"/b"},"timestamp":%q}]}`,
				hour.Add(time.Minute).Format(time.RFC3339), hour.Add(2*time.Minute).Format(time.RFC3339), hour.Add(3*time.Minute).Format(time.RFC3339))
			if r := do(t, "POST", base+"/v1/analytics/events", events); r.status != http.StatusAccepted {
				t.Fatalf("POST events = %d %s", r.status, r.body)
			}
			if r := do(t, "PUT", base+"/v1/analytics/rollups/acme", `{"event":"page_view","property":"path"}`); r.status/100 != 2 {
				t.Fatalf("PUT rollup = %d %s", r.status, r.body)
			}
			if r := do(t, "POST", base+"/v1/analytics/update", ""); r.status/100 != 2 {
				t.Fatalf("POST update = %d %s", r.status, r.body)
			}
			q := url.Values{"ns": {"acme"}, "event": {"page_view"}, "from": {hour.Format(time.RFC3339)}, "to": {hour.Add(time.Hour).Format(time.RFC3339)}, "groupBy": {"path"}}
			r := do(t, "GET", base+"/v1/analytics/query?"+q.Encode(), nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET query = %d %s", r.status, r.body)
			}
			counts := map[string]float64{}
			rows, _ := lookup(r.json(t), "rows")
			for _, row := range rows.([]any) {
				v, _ := lookup(row, "value")
				n, _ := lookup(row, "count")
				counts[fmt.Sprint(v)] += n.(float64)
			}
			if counts["/a"] != 2 || counts["/b"] != 1 {
				t.Errorf("page_view by path = %v; want /a 2, /b 1 (%s)", counts, r.body)
			}

			// The gateway's request events arrive in _analytics.
			deadline := time.Now().Add(10 * time.Second)
			for {
				q := url.Values{"ns": {"_analytics"}, "event": {"request"}, "from": {hour.Format(time.RFC3339)}, "to": {hour.Add(2 * time.Hour).Format(time.RFC3339)}, "groupBy": {"route"}}
				r := do(t, "GET", base+"/v1/analytics/query?"+q.Encode(), nil)
				if r.status != http.StatusOK {
					t.Fatalf("GET request events = %d %s", r.status, r.body)
				}
				found := false
				rows, _ := lookup(r.json(t), "rows")
				for _, row := range rows.([]any) {
					if v, _ := lookup(row, "value"); v == "POST /v1/search" {
						found = true
					}
				}
				if found {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("no request event for POST /v1/search within 10 s: %s", r.body)
				}
				time.Sleep(200 * time.Millisecond)
			}

			// Stats count the namespace's things.
			r = do(t, "GET", base+"/v1/stats/acme", nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET stats = %d %s", r.status, r.body)
			}
			if n, ok := lookup(r.json(t), "things"); !ok || fmt.Sprint(n) != "3" {
				t.Errorf("stats = %s; want 3 things", r.body)
			}
		})
	}
}
