package thingsdb_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"connectrpc.com/connect"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// badServer is the REST surface of a real db service over one backend.
type badServer struct {
	t   *testing.T
	mux *http.ServeMux
	be  thingsdb.Backend
}

func newBadServer(t *testing.T, backend string) *badServer {
	t.Helper()
	be := testdb.Open(t, backend)
	svc, err := thingsdb.New(be, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("thingsdb.New: %v", err)
	}
	t.Cleanup(func() { svc.Close() })
	mux := http.NewServeMux()
	thingsdb.Routes(mux, svc, thingsdb.RouteOptions{})
	return &badServer{t: t, mux: mux, be: be}
}

func (s *badServer) do(method, target, body string, header map[string]string) *httptest.ResponseRecorder {
	s.t.Helper()
	r := httptest.NewRequest(method, target, strings.NewReader(body))
	if body != "" {
		r.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	s.mux.ServeHTTP(w, r)
	return w
}

// mustDo sends a request that must answer with status.
func (s *badServer) mustDo(method, target, body string, status int) []byte {
	s.t.Helper()
	w := s.do(method, target, body, nil)
	if w.Code != status {
		s.t.Fatalf("%s %s = %d %s; want %d", method, target, w.Code, w.Body, status)
	}
	return w.Body.Bytes()
}

// fingerprint is every row of both tables, so that a test can tell that a
// request wrote nothing at all, in any namespace.
func (s *badServer) fingerprint() string {
	s.t.Helper()
	var b strings.Builder
	for _, q := range []string{
		"SELECT ns, id, type, data, content, version, created_at, updated_at, COALESCE(expires_at, 0) FROM things ORDER BY ns, id",
		"SELECT ns, from_id, type, to_id, data, created_at FROM relationships ORDER BY ns, from_id, type, to_id",
	} {
		rows, err := s.be.Read.Query(q)
		if err != nil {
			s.t.Fatalf("fingerprint: %v", err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.RawBytes, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				s.t.Fatalf("fingerprint: %v", err)
			}
			for _, v := range vals {
				b.Write(v)
				b.WriteByte('|')
			}
			b.WriteByte('\n')
		}
		if err := rows.Err(); err != nil {
			s.t.Fatalf("fingerprint: %v", err)
		}
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// checkEnvelope checks that w is the JSON error envelope with status,
// code and, unless index is "", a batch index.
func checkEnvelope(t *testing.T, what string, w *httptest.ResponseRecorder, status int, code, index string) {
	t.Helper()
	if w.Code != status {
		t.Fatalf("%s = %d %s; want %d %s", what, w.Code, w.Body, status, code)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type = %q; want application/json", what, ct)
	}
	var env map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(w.Body.Bytes()))
	if err := dec.Decode(&env); err != nil || len(env) != 1 || env["error"] == nil {
		t.Fatalf("%s: body %s is not {\"error\":{...}} (%v)", what, w.Body, err)
	}
	var e map[string]any
	if err := json.Unmarshal(env["error"], &e); err != nil {
		t.Fatalf("%s: error %s is not an object: %v", what, env["error"], err)
	}
	for k := range e {
		if !slices.Contains([]string{"code", "message", "requestId", "index"}, k) {
			t.Errorf("%s: error has unexpected field %q: %s", what, k, w.Body)
		}
	}
	if got, _ := e["code"].(string); got != code {
		t.Errorf("%s: error code = %q; want %q (%s)", what, got, code, w.Body)
	}
	if msg, _ := e["message"].(string); msg == "" {
		t.Errorf("%s: error message is empty: %s", what, w.Body)
	}
	gotIndex := ""
	if i, ok := e["index"].(float64); ok {
		gotIndex = fmt.Sprint(i)
	}
	if gotIndex != index {
		t.Errorf("%s: error index = %q; want %q (%s)", what, gotIndex, index, w.Body)
	}
}

// badRequest is one request the db service must refuse.
type badRequest struct {
	name   string
	method string
	path   string
	body   string
	header map[string]string
	status int
	code   string
	index  string // batch index, or "" for none
}

func q(params ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		v.Set(params[i], params[i+1])
	}
	return "?" + v.Encode()
}

func cursorOf(v string) string { return base64.RawURLEncoding.EncodeToString([]byte(v)) }

// TestBadInput sends requests the db service must refuse and checks each
// answer is the error envelope with the right status and code, and that
// nothing at all was written.
func TestBadInput(t *testing.T) {
	for _, backend := range testdb.Backends() {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			s := newBadServer(t, backend)
			s.mustDo("PUT", "/v1/things/acme/existing", `{"type":"note","data":{"a":1},"content":"hello"}`, http.StatusCreated)
			s.mustDo("PUT", "/v1/things/acme/victim", `{"type":"note","data":{"b":2}}`, http.StatusCreated)
			s.mustDo("PUT", "/v1/relationships/acme", `{"from":"victim","type":"linksTo","to":"existing"}`, http.StatusCreated)

			var page struct{ NextCursor string }
			if err := json.Unmarshal(s.mustDo("GET", "/v1/things/acme?limit=1", "", http.StatusOK), &page); err != nil || page.NextCursor == "" {
				t.Fatalf("list limit=1: no nextCursor (%v)", err)
			}
			createdCursor := page.NextCursor

			for _, tc := range badRequests(createdCursor) {
				t.Run(tc.name, func(t *testing.T) {
					before := s.fingerprint()
					w := s.do(tc.method, tc.path, tc.body, tc.header)
					checkEnvelope(t, tc.method+" "+clipString(tc.path)+" "+clipString(tc.body), w, tc.status, tc.code, tc.index)
					if after := s.fingerprint(); after != before {
						t.Fatalf("the refused request wrote to the database:\nbefore:\n%s\nafter:\n%s", before, after)
					}
				})
			}

			// The seeds are as they were: same versions, nothing new.
			var list struct {
				Items []struct {
					ID      string
					Version int64
				}
			}
			if err := json.Unmarshal(s.mustDo("GET", "/v1/things/acme?limit=1000", "", http.StatusOK), &list); err != nil {
				t.Fatal(err)
			}
			if len(list.Items) != 2 || list.Items[0].ID != "existing" || list.Items[0].Version != 1 ||
				list.Items[1].ID != "victim" || list.Items[1].Version != 1 {
				t.Fatalf("after the bad requests, acme holds %+v; want existing and victim at version 1", list.Items)
			}
		})
	}
}

func clipString(s string) string {
	if len(s) > 60 {
		return s[:60] + "..."
	}
	return s
}

func badRequests(createdCursor string) []badRequest {
	const (
		bad   = http.StatusBadRequest
		large = http.StatusRequestEntityTooLarge
		inv   = "invalid"
		big   = "too_large"
	)
	huge := strings.Repeat("x", thingsdb.MaxDataBytes+1)
	deep := strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40)
	put := func(name, body string) badRequest {
		return badRequest{name: "put " + name, method: "PUT", path: "/v1/things/acme/new", body: body, status: bad, code: inv}
	}
	tcs := []badRequest{
		// Bodies of PUT.
		put("invalid JSON", `{"type":"note",`),
		put("trailing garbage", `{"type":"note"} x`),
		put("two objects", `{"type":"note"}{"type":"note"}`),
		put("empty body", ``),
		put("array body", `[{"type":"note"}]`),
		put("byte order mark", "\ufeff{\"type\":\"note\"}"),
		put("type as number", `{"type":5}`),
		put("type missing", `{"data":{"a":1}}`),
		put("type empty", `{"type":""}`),
		put("type starts with a digit", `{"type":"1note"}`),
		put("type with a space", `{"type":"no te"}`),
		put("type too long", `{"type":"`+strings.Repeat("t", thingsdb.MaxTypeLen+1)+`"}`),
		put("type with NUL", `{"type":"no\u0000te"}`),
		put("data as array", `{"type":"note","data":[1,2]}`),
		put("data as string", `{"type":"note","data":"{}"}`),
		put("data as number", `{"type":"note","data":1}`),
		put("data as bool", `{"type":"note","data":true}`),
		put("data nested too deep", `{"type":"note","data":`+deep+`}`),
		put("data with NUL in a string", `{"type":"note","data":{"a":"x\u0000y"}}`),
		put("data with NUL in a key", `{"type":"note","data":{"a\u0000":1}}`),
		put("data with invalid UTF-8", "{\"type\":\"note\",\"data\":{\"a\":\"\xff\"}}"),
		put("data number over float64", `{"type":"note","data":{"a":1e400}}`),
		put("data number under -float64", `{"type":"note","data":{"a":[-1e400]}}`),
		put("data number too small", `{"type":"note","data":{"a":1e-400}}`),
		put("embedding as string", `{"type":"note","embedding":"0.1,0.2"}`),
		put("embedding with a string", `{"type":"note","embedding":[0.1,"0.2"]}`),
		put("embedding with null", `{"type":"note","embedding":[0.1,null]}`),
		put("embedding over float32", `{"type":"note","embedding":[1e39]}`),
		put("embedding too long", `{"type":"note","embedding":[`+strings.TrimSuffix(strings.Repeat("0.5,", thingsdb.MaxEmbedding+1), ",")+`]}`),
		put("expiresAt not RFC 3339", `{"type":"note","expiresAt":"tomorrow"}`),
		put("expiresAt a date", `{"type":"note","expiresAt":"2030-01-02"}`),
		put("expiresAt without zone", `{"type":"note","expiresAt":"2030-01-02T03:04:05"}`),
		put("expiresAt as number", `{"type":"note","expiresAt":1893456000}`),
		put("expiresAt before 1970", `{"type":"note","expiresAt":"1960-01-01T00:00:00Z"}`),
		put("expiresAt empty", `{"type":"note","expiresAt":""}`),
		put("expiresAt after 9999 in UTC", `{"type":"note","expiresAt":"9999-12-31T23:59:59-01:00"}`),
		put("content as number", `{"type":"note","content":5}`),
		put("content with NUL", `{"type":"note","content":"a\u0000b"}`),
		put("unknown field", `{"type":"note","colour":"red"}`),
		put("unknown field in wrong case", `{"Type":"note","type":"note","Colour":1}`),
		put("ns differs from path", `{"type":"note","ns":"other"}`),
		put("id differs from path", `{"type":"note","id":"other"}`),
		{name: "put data over 256 KiB", method: "PUT", path: "/v1/things/acme/new", body: `{"type":"note","data":{"s":"` + huge + `"}}`, status: large, code: big},
		{name: "put content over 256 KiB", method: "PUT", path: "/v1/things/acme/new", body: `{"type":"note","content":"` + huge + `"}`, status: large, code: big},
		{name: "post invalid JSON", method: "POST", path: "/v1/things/acme", body: `{"type":`, status: bad, code: inv},
		{name: "post data as array", method: "POST", path: "/v1/things/acme", body: `{"type":"note","data":[]}`, status: bad, code: inv},
		{name: "post data over 256 KiB", method: "POST", path: "/v1/things/acme", body: `{"type":"note","data":{"s":"` + huge + `"}}`, status: large, code: big},

		// Namespaces and ids in the path.
		{name: "ns upper case", method: "PUT", path: "/v1/things/Acme/new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "ns starting with -", method: "PUT", path: "/v1/things/-acme/new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "ns with a dot", method: "PUT", path: "/v1/things/ac.me/new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "ns with a space", method: "PUT", path: "/v1/things/ac%20me/new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "ns too long", method: "PUT", path: "/v1/things/" + strings.Repeat("a", thingsdb.MaxNamespaceLen+1) + "/new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "system ns", method: "PUT", path: "/v1/things/_auth/new", body: `{"type":"note"}`, status: http.StatusForbidden, code: "forbidden"},
		{name: "id starting with a dot", method: "PUT", path: "/v1/things/acme/.new", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "id with a space", method: "PUT", path: "/v1/things/acme/a%20b", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "id with a slash", method: "PUT", path: "/v1/things/acme/a%2Fb", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "id with NUL", method: "PUT", path: "/v1/things/acme/a%00b", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "id not ASCII", method: "PUT", path: "/v1/things/acme/caf%C3%A9", body: `{"type":"note"}`, status: bad, code: inv},
		{name: "id too long", method: "PUT", path: "/v1/things/acme/" + strings.Repeat("i", thingsdb.MaxIDLen+1), body: `{"type":"note"}`, status: bad, code: inv},
		{name: "get bad id", method: "GET", path: "/v1/things/acme/.x", status: bad, code: inv},
		{name: "delete bad id", method: "DELETE", path: "/v1/things/acme/a%20b", status: bad, code: inv},

		// Conditional headers.
		{name: "If-Match not a number", method: "PUT", path: "/v1/things/acme/existing", body: `{"type":"note"}`, header: map[string]string{"If-Match": "abc"}, status: bad, code: inv},
		{name: "If-Match zero", method: "PUT", path: "/v1/things/acme/existing", body: `{"type":"note"}`, header: map[string]string{"If-Match": `"0"`}, status: bad, code: inv},
		{name: "If-Match negative", method: "PUT", path: "/v1/things/acme/existing", body: `{"type":"note"}`, header: map[string]string{"If-Match": "-1"}, status: bad, code: inv},
		{name: "If-Match weak garbage", method: "PUT", path: "/v1/things/acme/existing", body: `{"type":"note"}`, header: map[string]string{"If-Match": `W/"x"`}, status: bad, code: inv},
		{name: "If-Match and If-None-Match", method: "PUT", path: "/v1/things/acme/existing", body: `{"type":"note"}`, header: map[string]string{"If-Match": "1", "If-None-Match": "*"}, status: bad, code: inv},
		{name: "If-None-Match a version", method: "PUT", path: "/v1/things/acme/new", body: `{"type":"note"}`, header: map[string]string{"If-None-Match": `"1"`}, status: bad, code: inv},
		{name: "delete If-Match garbage", method: "DELETE", path: "/v1/things/acme/existing", header: map[string]string{"If-Match": "v1"}, status: bad, code: inv},
		{name: "patch If-Match garbage", method: "PATCH", path: "/v1/things/acme/existing", body: `{"data":{"a":2}}`, header: map[string]string{"If-Match": "1.0"}, status: bad, code: inv},
		{name: "patch If-None-Match", method: "PATCH", path: "/v1/things/acme/existing", body: `{"data":{"a":2}}`, header: map[string]string{"If-None-Match": "*"}, status: bad, code: inv},

		// List parameters.
		{name: "limit 0", method: "GET", path: "/v1/things/acme?limit=0", status: bad, code: inv},
		{name: "limit 1001", method: "GET", path: "/v1/things/acme?limit=1001", status: bad, code: inv},
		{name: "limit abc", method: "GET", path: "/v1/things/acme?limit=abc", status: bad, code: inv},
		{name: "limit negative", method: "GET", path: "/v1/things/acme?limit=-1", status: bad, code: inv},
		{name: "limit fraction", method: "GET", path: "/v1/things/acme?limit=1.5", status: bad, code: inv},
		{name: "bad type filter", method: "GET", path: "/v1/things/acme?type=1x", status: bad, code: inv},
		{name: "bad order", method: "GET", path: "/v1/things/acme?order=name", status: bad, code: inv},
		{name: "bad order path", method: "GET", path: "/v1/things/acme" + q("order", "data.a b"), status: bad, code: inv},
		{name: "empty order path", method: "GET", path: "/v1/things/acme?order=data.", status: bad, code: inv},
		{name: "cursor not base64", method: "GET", path: "/v1/things/acme?cursor=!!!", status: bad, code: inv},
		{name: "cursor not JSON", method: "GET", path: "/v1/things/acme?cursor=" + cursorOf("hello"), status: bad, code: inv},
		{name: "cursor without id", method: "GET", path: "/v1/things/acme?cursor=" + cursorOf(`{"o":"createdAt","t":1}`), status: bad, code: inv},
		{name: "cursor with unknown field", method: "GET", path: "/v1/things/acme?cursor=" + cursorOf(`{"o":"createdAt","i":"x","z":1}`), status: bad, code: inv},
		{name: "cursor with trailing data", method: "GET", path: "/v1/things/acme?cursor=" + cursorOf(`{"o":"createdAt","i":"x"}}`), status: bad, code: inv},
		{name: "cursor with bad rank", method: "GET", path: "/v1/things/acme?order=data.a&cursor=" + cursorOf(`{"o":"data.a","r":9,"i":"x"}`), status: bad, code: inv},
		{name: "cursor too long", method: "GET", path: "/v1/things/acme?cursor=" + strings.Repeat("A", 3000), status: bad, code: inv},
		{name: "cursor from another order", method: "GET", path: "/v1/things/acme" + q("order", "-createdAt", "cursor", createdCursor), status: bad, code: inv},
		{name: "cursor from updatedAt order", method: "GET", path: "/v1/things/acme" + q("order", "updatedAt", "cursor", createdCursor), status: bad, code: inv},
		{name: "cursor from a data order", method: "GET", path: "/v1/things/acme" + q("order", "data.a", "cursor", createdCursor), status: bad, code: inv},
		{name: "list cursor on related", method: "GET", path: "/v1/things/acme/existing/related" + q("cursor", createdCursor), status: bad, code: inv},

		// Relationships.
		{name: "relationship from starting with a dot", method: "PUT", path: "/v1/relationships/acme", body: `{"from":".x","type":"linksTo","to":"existing"}`, status: bad, code: inv},
		{name: "relationship to with a space", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"existing","type":"linksTo","to":"a b"}`, status: bad, code: inv},
		{name: "relationship to too long", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"existing","type":"linksTo","to":"` + strings.Repeat("i", thingsdb.MaxIDLen+1) + `"}`, status: bad, code: inv},
		{name: "relationship from missing", method: "PUT", path: "/v1/relationships/acme", body: `{"type":"linksTo","to":"existing"}`, status: bad, code: inv},
		{name: "relationship bad type", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"links to","to":"existing"}`, status: bad, code: inv},
		{name: "relationship type missing", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","to":"existing"}`, status: bad, code: inv},
		{name: "relationship data as array", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"other","to":"existing","data":[1]}`, status: bad, code: inv},
		{name: "relationship data with NUL", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"other","to":"existing","data":{"a":"\u0000"}}`, status: bad, code: inv},
		{name: "relationship data over 256 KiB", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"other","to":"existing","data":{"s":"` + huge + `"}}`, status: large, code: big},
		{name: "relationship unknown field", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"other","to":"existing","weight":1}`, status: bad, code: inv},
		{name: "relationship invalid JSON", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim",`, status: bad, code: inv},
		{name: "relationship trailing garbage", method: "PUT", path: "/v1/relationships/acme", body: `{"from":"victim","type":"other","to":"existing"}]`, status: bad, code: inv},
		{name: "relationship bad ns", method: "PUT", path: "/v1/relationships/ACME", body: `{"from":"victim","type":"other","to":"existing"}`, status: bad, code: inv},
		{name: "delete relationship bad from", method: "DELETE", path: "/v1/relationships/acme" + q("from", ".victim", "type", "linksTo", "to", "existing"), status: bad, code: inv},
		{name: "delete relationship bad body", method: "DELETE", path: "/v1/relationships/acme", body: `{"from":"victim","type":"linksTo","to":"existing","x":1}`, status: bad, code: inv},
		{name: "delete relationship bad type", method: "DELETE", path: "/v1/relationships/acme", body: `{"from":"victim","type":"1linksTo","to":"existing"}`, status: bad, code: inv},
		{name: "related bad direction", method: "GET", path: "/v1/things/acme/existing/related?direction=sideways", status: bad, code: inv},
		{name: "related bad type", method: "GET", path: "/v1/things/acme/existing/related?type=1x", status: bad, code: inv},
		{name: "related bad id", method: "GET", path: "/v1/things/acme/.x/related", status: bad, code: inv},
		{name: "related limit 0", method: "GET", path: "/v1/things/acme/existing/related?limit=0", status: bad, code: inv},
		{name: "related bad cursor", method: "GET", path: "/v1/things/acme/existing/related?cursor=abc", status: bad, code: inv},
	}

	// Merge patches of the existing thing.
	for _, p := range []struct{ name, body string }{
		{"invalid JSON", `{"data":`},
		{"trailing garbage", `{"data":{}} x`},
		{"empty body", ``},
		{"array", `[{"data":{}}]`},
		{"string", `"x"`},
		{"null", `null`},
		{"unknown field", `{"version":5}`},
		{"type as number", `{"type":5}`},
		{"type null", `{"type":null}`},
		{"bad type", `{"type":"1note"}`},
		{"data as array", `{"data":[1]}`},
		{"data as string", `{"data":"x"}`},
		{"data with NUL", `{"data":{"b":"\u0000"}}`},
		{"data number out of range", `{"data":{"b":-1e999}}`},
		{"content as number", `{"content":5}`},
		{"content with NUL", `{"content":"a\u0000"}`},
		{"expiresAt not RFC 3339", `{"expiresAt":"next week"}`},
		{"expiresAt as number", `{"expiresAt":5}`},
		{"expiresAt before 1970", `{"expiresAt":"1969-12-31T23:59:59Z"}`},
		{"expiresAt after 9999 in UTC", `{"expiresAt":"9999-12-31T23:59:59-01:00"}`},
	} {
		tcs = append(tcs, badRequest{name: "patch " + p.name, method: "PATCH", path: "/v1/things/acme/existing", body: p.body, status: bad, code: inv})
	}
	tcs = append(tcs,
		badRequest{name: "patch bad id", method: "PATCH", path: "/v1/things/acme/.existing", body: `{"data":{}}`, status: bad, code: inv},
		badRequest{name: "patch data over 256 KiB", method: "PATCH", path: "/v1/things/acme/existing", body: `{"data":{"s":"` + huge + `"}}`, status: large, code: big},
		badRequest{name: "patch content over 256 KiB", method: "PATCH", path: "/v1/things/acme/existing", body: `{"content":"` + huge + `"}`, status: large, code: big},
	)

	// Where documents.
	for _, w := range []struct{ name, where string }{
		{"invalid JSON", `{"a":`},
		{"trailing garbage", `{"a":1}x`},
		{"not an object", `[{"a":1}]`},
		{"a string", `"a"`},
		{"null", `null`},
		{"unknown operator", `{"a":{"regex":"x"}}`},
		{"operator in wrong case", `{"a":{"EQ":1}}`},
		{"no operators", `{"a":{}}`},
		{"empty path", `{"":1}`},
		{"path with a space", `{"a b":1}`},
		{"path with a quote", `{"a'b":1}`},
		{"path with an empty segment", `{"a..b":1}`},
		{"path starting with a dot", `{".a":1}`},
		{"path too deep", `{"a.b.c.d.e.f.g.h.i":1}`},
		{"path segment too long", `{"` + strings.Repeat("s", 65) + `":1}`},
		{"in with a non-array", `{"a":{"in":"x"}}`},
		{"in empty", `{"a":{"in":[]}}`},
		{"in with an array value", `{"a":{"in":[[1]]}}`},
		{"in with too many values", `{"a":{"in":[` + strings.TrimSuffix(strings.Repeat("1,", 101), ",") + `]}}`},
		{"lt with bool", `{"a":{"lt":true}}`},
		{"gte with null", `{"a":{"gte":null}}`},
		{"exists with a string", `{"a":{"exists":"yes"}}`},
		{"eq with an object", `{"a":{"eq":{"b":1}}}`},
		{"array value", `{"a":[1]}`},
		{"NUL in a value", `{"a":"\u0000"}`},
		{"number out of range", `{"a":1e400}`},
		{"number too small", `{"a":{"gt":1e-400}}`},
		{"too many conditions", func() string {
			var b strings.Builder
			b.WriteString("{")
			for i := range 33 {
				if i > 0 {
					b.WriteString(",")
				}
				fmt.Fprintf(&b, `"f%d":1`, i)
			}
			return b.String() + "}"
		}()},
		{"too long", `{"a":"` + strings.Repeat("x", 9000) + `"}`},
	} {
		tcs = append(tcs, badRequest{name: "where " + w.name, method: "GET", path: "/v1/things/acme" + q("where", w.where), status: bad, code: inv})
	}

	// Batches.
	batch := func(name string, status int, code, index string, ops ...string) badRequest {
		return badRequest{name: "batch " + name, method: "POST", path: "/v1/things/acme/batch",
			body: `{"ops":[` + strings.Join(ops, ",") + `]}`, status: status, code: code, index: index}
	}
	over := make([]string, thingsdb.MaxBatchOps+1)
	for i := range over {
		over[i] = fmt.Sprintf(`{"op":"upsert","id":"b%d","type":"note"}`, i)
	}
	tcs = append(tcs,
		badRequest{name: "batch invalid JSON", method: "POST", path: "/v1/things/acme/batch", body: `{"ops":[`, status: bad, code: inv},
		badRequest{name: "batch trailing garbage", method: "POST", path: "/v1/things/acme/batch", body: `{"ops":[{"op":"delete","id":"victim"}]} {}`, status: bad, code: inv},
		badRequest{name: "batch unknown field", method: "POST", path: "/v1/things/acme/batch", body: `{"ops":[{"op":"delete","id":"victim"}],"atomic":false}`, status: bad, code: inv},
		badRequest{name: "batch ops not an array", method: "POST", path: "/v1/things/acme/batch", body: `{"ops":{"op":"delete","id":"victim"}}`, status: bad, code: inv},
		badRequest{name: "batch without ops", method: "POST", path: "/v1/things/acme/batch", body: `{}`, status: bad, code: inv},
		badRequest{name: "batch bad ns", method: "POST", path: "/v1/things/Acme/batch", body: `{"ops":[{"op":"delete","id":"victim"}]}`, status: bad, code: inv},
		batch("empty ops", bad, inv, ""),
		batch("over 1000 ops", bad, inv, "", over...),
		batch("unknown op", bad, inv, "0", `{"op":"frobnicate","id":"victim"}`),
		batch("op missing", bad, inv, "0", `{"id":"victim"}`),
		batch("op null", bad, inv, "0", `null`),
		batch("op not an object", bad, inv, "0", `"delete"`),
		batch("delete with data", bad, inv, "0", `{"op":"delete","id":"victim","data":{"a":1}}`),
		batch("patch with type beside it", bad, inv, "0", `{"op":"patch","id":"existing","type":"task","patch":{"data":{"a":2}}}`),
		batch("upsert with a patch", bad, inv, "0", `{"op":"upsert","id":"existing","type":"note","patch":{"data":{"a":2}}}`),
		batch("patch without a patch", bad, inv, "0", `{"op":"patch","id":"existing"}`),
	)
	// A batch whose op 3 fails writes none of ops 0-2: a create, an update
	// and a delete of a thing with a relationship.
	first := []string{
		`{"op":"create","id":"new0","type":"note","data":{"n":0}}`,
		`{"op":"update","id":"existing","type":"note","data":{"a":2}}`,
		`{"op":"delete","id":"victim"}`,
	}
	for _, op3 := range []struct {
		name, op string
		status   int
		code     string
	}{
		{"bad id", `{"op":"upsert","id":".bad","type":"note"}`, bad, inv},
		{"id too long", `{"op":"upsert","id":"` + strings.Repeat("i", 257) + `","type":"note"}`, bad, inv},
		{"bad type", `{"op":"upsert","id":"n3","type":"1note"}`, bad, inv},
		{"type as number", `{"op":"upsert","id":"n3","type":3}`, bad, inv},
		{"data as array", `{"op":"upsert","id":"n3","type":"note","data":[3]}`, bad, inv},
		{"NUL in data", `{"op":"upsert","id":"n3","type":"note","data":{"s":"\u0000"}}`, bad, inv},
		{"NUL in content", `{"op":"upsert","id":"n3","type":"note","content":"\u0000"}`, bad, inv},
		{"data over 256 KiB", `{"op":"upsert","id":"n3","type":"note","data":{"s":"` + huge + `"}}`, large, big},
		{"content over 256 KiB", `{"op":"upsert","id":"n3","type":"note","content":"` + huge + `"}`, large, big},
		{"unknown op", `{"op":"replace","id":"n3","type":"note"}`, bad, inv},
		{"unknown field", `{"op":"upsert","id":"n3","type":"note","extra":1}`, bad, inv},
		{"ifMatch not a number", `{"op":"update","id":"existing","type":"note","ifMatch":"abc"}`, bad, inv},
		{"ns differs", `{"op":"upsert","ns":"other","id":"n3","type":"note"}`, bad, inv},
		{"expiresAt not RFC 3339", `{"op":"upsert","id":"n3","type":"note","expiresAt":"soon"}`, bad, inv},
		{"bad patch", `{"op":"patch","id":"existing","patch":[1]}`, bad, inv},
		{"create of an existing thing", `{"op":"create","id":"existing","type":"note"}`, http.StatusPreconditionFailed, "precondition_failed"},
		{"update of a missing thing", `{"op":"update","id":"ghost","type":"note"}`, http.StatusPreconditionFailed, "precondition_failed"},
		{"stale ifMatch", `{"op":"update","id":"existing","type":"note","ifMatch":1}`, http.StatusPreconditionFailed, "precondition_failed"},
		{"delete of a missing thing", `{"op":"delete","id":"ghost"}`, http.StatusNotFound, "not_found"},
		{"delete of the deleted victim", `{"op":"delete","id":"victim"}`, http.StatusNotFound, "not_found"},
	} {
		tcs = append(tcs, batch("op 3 "+op3.name, op3.status, op3.code, "3", append(slices.Clone(first), op3.op)...))
	}
	return tcs
}

// TestBadBatchNothingVisible checks through the REST reads, not just the
// tables, that a failed batch left no trace: the created thing is absent,
// the updated one unchanged and the deleted one still there.
func TestBadBatchNothingVisible(t *testing.T) {
	for _, backend := range testdb.Backends() {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			s := newBadServer(t, backend)
			s.mustDo("PUT", "/v1/things/acme/existing", `{"type":"note","data":{"a":1}}`, http.StatusCreated)
			s.mustDo("PUT", "/v1/things/acme/victim", `{"type":"note"}`, http.StatusCreated)
			w := s.do("POST", "/v1/things/acme/batch", `{"ops":[
				{"op":"create","id":"new0","type":"note"},
				{"op":"patch","id":"existing","patch":{"data":{"a":2}}},
				{"op":"delete","id":"victim"},
				{"op":"upsert","id":"new3","type":"note","data":{"x":1e400}},
				{"op":"create","id":"new4","type":"note"}]}`, nil)
			checkEnvelope(t, "batch failing at op 3", w, http.StatusBadRequest, "invalid", "3")
			s.mustDo("GET", "/v1/things/acme/new0", "", http.StatusNotFound)
			s.mustDo("GET", "/v1/things/acme/new4", "", http.StatusNotFound)
			s.mustDo("GET", "/v1/things/acme/victim", "", http.StatusOK)
			var got struct {
				Version int64
				Data    map[string]any
			}
			if err := json.Unmarshal(s.mustDo("GET", "/v1/things/acme/existing", "", http.StatusOK), &got); err != nil {
				t.Fatal(err)
			}
			if got.Version != 1 || got.Data["a"] != 1.0 {
				t.Fatalf("existing after the failed batch = %+v; want version 1 with a=1", got)
			}
		})
	}
}

// whereThings are the things TestWhereSemantics filters.
var whereThings = map[string]string{
	"a": `{"n":1,"s":"apple","b":true,"tags":["x","y"],"nested":{"k":"v","n":5}}`,
	"b": `{"n":2.5,"s":"Banana","b":false,"tags":["y"],"nested":{"k":"w"}}`,
	"c": `{"n":10,"s":"cherry","tags":"x-ray","nil":null}`,
	"d": `{"n":"10","s":5,"nested":"k"}`,
	"e": `{}`,
	"f": `{"n":-3,"s":"é","tags":[1,2,true,null],"nested":{"n":"5"}}`,
}

// TestWhereSemantics pins down what each where operator matches, the same
// on every backend: a field of another type never matches, except for ne
// and exists:false, which also match a missing field.
func TestWhereSemantics(t *testing.T) {
	cases := []struct {
		where string
		want  string // ids, comma-separated
	}{
		{``, "a,b,c,d,e,f"},
		{`{}`, "a,b,c,d,e,f"},
		{`{"s":"apple"}`, "a"},
		{`{"s":{"eq":"apple"}}`, "a"},
		{`{"s":"Apple"}`, ""},
		{`{"n":10}`, "c"},
		{`{"n":10.0}`, "c"},
		{`{"n":1e1}`, "c"},
		{`{"n":"10"}`, "d"},
		{`{"n":{"ne":10}}`, "a,b,d,e,f"},
		{`{"s":{"ne":"apple"}}`, "b,c,d,e,f"},
		{`{"b":true}`, "a"},
		{`{"b":false}`, "b"},
		{`{"b":{"ne":true}}`, "b,c,d,e,f"},
		{`{"nil":null}`, "c"},
		{`{"nil":{"ne":null}}`, "a,b,d,e,f"},
		{`{"n":{"gt":2}}`, "b,c"},
		{`{"n":{"gte":2.5,"lt":10}}`, "b"},
		{`{"n":{"lte":1}}`, "a,f"},
		{`{"n":{"lt":0}}`, "f"},
		{`{"s":{"lt":"a"}}`, "b"},
		{`{"s":{"gt":"b"}}`, "c,f"},
		{`{"s":{"gte":"apple","lte":"cherry"}}`, "a,c"},
		{`{"s":{"gt":"cherry"}}`, "f"},
		{`{"n":{"gt":"0"}}`, "d"},
		{`{"n":{"in":[1,10,"10"]}}`, "a,c,d"},
		{`{"s":{"in":["apple",5]}}`, "a,d"},
		{`{"b":{"in":[true,null]}}`, "a"},
		{`{"nil":{"in":[null]}}`, "c"},
		{`{"tags":{"contains":"x"}}`, "a,c"},
		{`{"tags":{"contains":"y"}}`, "a,b,c"},
		{`{"tags":{"contains":"ray"}}`, "c"},
		{`{"tags":{"contains":1}}`, "f"},
		{`{"tags":{"contains":true}}`, "f"},
		{`{"tags":{"contains":null}}`, "f"},
		{`{"s":{"contains":"an"}}`, "b"},
		{`{"n":{"contains":1}}`, ""},
		{`{"s":{"contains":"é"}}`, "f"},
		{`{"nested.k":"v"}`, "a"},
		{`{"nested.n":{"gt":1}}`, "a"},
		{`{"nested.n":"5"}`, "f"},
		{`{"nested.k.deeper":"v"}`, ""},
		{`{"nested":{"exists":true}}`, "a,b,d,f"},
		{`{"nested.k":{"exists":false}}`, "c,d,e,f"},
		{`{"tags":{"exists":false}}`, "d,e"},
		{`{"nil":{"exists":true}}`, "c"},
		{`{"missing":{"exists":false}}`, "a,b,c,d,e,f"},
		{`{"missing":{"ne":1}}`, "a,b,c,d,e,f"},
		{`{"b":{"lt":"z"}}`, ""},
		{`{"nested":{"eq":"v"}}`, ""},
		{`{"nested":{"lt":100}}`, ""},
		{`{"tags":{"gt":"a"}}`, "c"},
		{`{"tags":"x"}`, ""},
		{`{"n":{"gt":0},"s":{"contains":"a"}}`, "a,b"},
		{`{"n":{"gt":0,"lt":5}}`, "a,b"},
	}
	for _, backend := range testdb.Backends() {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			svc, err := thingsdb.New(testdb.Open(t, backend), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			ctx := context.Background()
			for id, data := range whereThings {
				_, err := svc.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "w", Id: id, Type: "thing", Data: []byte(data)}}))
				if err != nil {
					t.Fatalf("put %s: %v", id, err)
				}
			}
			for _, tc := range cases {
				res, err := svc.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: "w", Where: tc.where, Order: "createdAt", Limit: 100}))
				if err != nil {
					t.Errorf("List(where %s) = %v", tc.where, err)
					continue
				}
				var ids []string
				for _, it := range res.Msg.Items {
					ids = append(ids, it.Id)
				}
				slices.Sort(ids)
				if got := strings.Join(ids, ","); got != tc.want {
					t.Errorf("List(where %s) = [%s]; want [%s]", tc.where, got, tc.want)
				}
			}
		})
	}
}
