//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
	"github.com/dotdo/dotdo/internal/rpc"
	"github.com/dotdo/dotdo/internal/testdb"
)

// maxBody is the --max-body every gateway in these tests runs with.
const maxBody = "16KiB"

// target is a running deployment the REST scenarios drive.
type target struct {
	url string // where clients send requests: the gateway
	gw  *proc  // the process that writes the access log lines
	db  *proc  // the db process in split mode; nil all-in-one
}

// deployment is one way to run dotdo for the REST scenarios.
type deployment struct {
	name  string
	start func(t *testing.T) *target
}

// deployments are the ways the REST scenarios run: all-in-one and split,
// on every backend under test.
func deployments() []deployment {
	var out []deployment
	for _, be := range testdb.Backends() {
		out = append(out,
			deployment{"all-in-one/" + be, func(t *testing.T) *target {
				p := startAllInOne(t, newBackend(t, be), "--max-body", maxBody)
				return &target{url: p.url, gw: p}
			}},
			deployment{"split/" + be, func(t *testing.T) *target {
				db := startDB(t, newBackend(t, be))
				gw := startGateway(t, db.url, "--max-body", maxBody)
				return &target{url: gw.url, gw: gw, db: db}
			}})
	}
	return out
}

// step is one request of a scenario and what its response must be. Path,
// header values, body and json may name variables as {name}: {ns} is the
// scenario's own namespace; save adds more.
type step struct {
	method, path string
	header       []string // request header name, value pairs
	body         string
	chunked      bool // send the body without a Content-Length

	status    int
	headers   []string // response header name, value pairs that must match
	json      string   // the body must hold this JSON (objects may hold more keys)
	data      string   // the body's "data" must equal this JSON exactly
	ids       []string // the ids of the body's items, in order
	absent    []string // dotted paths the body must not have
	contains  []string // raw substrings of the body (no variables)
	accessLog bool     // the gateway logs exactly one access line for it
	save      map[string]string
	check     func(t *testing.T, s *session, r *response)
}

// session is the state of one scenario on one target.
type session struct {
	tg   *target
	vars map[string]string
}

func (s *session) expand(v string) string {
	for k, val := range s.vars {
		v = strings.ReplaceAll(v, "{"+k+"}", val)
	}
	return v
}

// q query-escapes a where document for a path in the table.
func q(s string) string { return url.QueryEscape(s) }

var (
	bigBody   = `{"type":"blob","data":{"s":"` + strings.Repeat("x", 20<<10) + `"}}`
	smallBlob = `{"type":"blob","data":{"s":"` + strings.Repeat("x", 8<<10) + `"}}`
	seedItems = `{"ops":[
		{"op":"create","id":"i1","type":"item","data":{"n":1,"color":"red"}},
		{"op":"create","id":"i2","type":"item","data":{"n":2,"color":"blue"}},
		{"op":"create","id":"i3","type":"item","data":{"n":3,"color":"red"}},
		{"op":"create","id":"i4","type":"item","data":{"n":4,"color":"blue"}},
		{"op":"create","id":"i5","type":"item","data":{"n":5,"color":"red"}},
		{"op":"create","id":"i6","type":"item","data":{"n":6,"color":"blue"}},
		{"op":"create","id":"i7","type":"item","data":{"n":7,"color":"red"}},
		{"op":"create","id":"o1","type":"other","data":{"color":"red"}}]}`
)

// restScenarios is the REST contract of DESIGN.md §4 as a user sees it.
var restScenarios = []struct {
	name  string
	steps []step
}{
	{"create and get with ETag", []step{
		{method: "PUT", path: "/v1/things/{ns}/u1", body: `{"type":"user","data":{"name":"Ada","age":36}}`,
			status: 201, headers: []string{"ETag", `"1"`, "Location", "/v1/things/{ns}/u1"},
			json: `{"ns":"{ns}","id":"u1","type":"user","version":1}`, data: `{"name":"Ada","age":36}`},
		{method: "GET", path: "/v1/things/{ns}/u1", status: 200, headers: []string{"ETag", `"1"`},
			json: `{"ns":"{ns}","id":"u1","type":"user","version":1}`, data: `{"name":"Ada","age":36}`,
			check: func(t *testing.T, s *session, r *response) {
				v := r.json(t)
				if v["createdAt"] != v["updatedAt"] || v["createdAt"] == nil {
					t.Errorf("createdAt = %v, updatedAt = %v; want the same time on a new thing", v["createdAt"], v["updatedAt"])
				}
			}},
		{method: "GET", path: "/v1/things/{ns}/u1", header: []string{"If-None-Match", `"1"`}, status: 304},
		{method: "PUT", path: "/v1/things/{ns}/u1", body: `{"type":"user","data":{"name":"Ada Lovelace"}}`,
			status: 200, headers: []string{"ETag", `"2"`}, json: `{"version":2}`, data: `{"name":"Ada Lovelace"}`},
		{method: "GET", path: "/v1/things/{ns}/u1", header: []string{"If-None-Match", `"1"`}, status: 200,
			headers: []string{"ETag", `"2"`}, data: `{"name":"Ada Lovelace"}`},
		{method: "POST", path: "/v1/things/{ns}", body: `{"type":"user","data":{"name":"Grace"}}`,
			status: 201, headers: []string{"ETag", `"1"`}, json: `{"ns":"{ns}","type":"user","version":1}`,
			save: map[string]string{"gen": "id"},
			check: func(t *testing.T, s *session, r *response) {
				if want := "/v1/things/" + s.vars["ns"] + "/" + s.vars["gen"]; r.header.Get("Location") != want {
					t.Errorf("Location = %q; want %q", r.header.Get("Location"), want)
				}
			}},
		{method: "GET", path: "/v1/things/{ns}/{gen}", status: 200, json: `{"id":"{gen}"}`, data: `{"name":"Grace"}`},
	}},

	{"conditional update", []step{
		{method: "PUT", path: "/v1/things/{ns}/c1", body: `{"type":"doc","data":{"v":"a"}}`, status: 201},
		{method: "PUT", path: "/v1/things/{ns}/c1", header: []string{"If-Match", `"1"`}, body: `{"type":"doc","data":{"v":"b"}}`,
			status: 200, headers: []string{"ETag", `"2"`}, data: `{"v":"b"}`},
		{method: "PUT", path: "/v1/things/{ns}/c1", header: []string{"If-Match", `"1"`}, body: `{"type":"doc","data":{"v":"lost update"}}`,
			status: 412, json: `{"error":{"code":"precondition_failed"}}`},
		{method: "PATCH", path: "/v1/things/{ns}/c1", header: []string{"If-Match", `"1"`}, body: `{"data":{"v":"lost patch"}}`,
			status: 412, json: `{"error":{"code":"precondition_failed"}}`},
		{method: "DELETE", path: "/v1/things/{ns}/c1", header: []string{"If-Match", `"1"`}, status: 412,
			json: `{"error":{"code":"precondition_failed"}}`},
		{method: "GET", path: "/v1/things/{ns}/c1", status: 200, headers: []string{"ETag", `"2"`}, data: `{"v":"b"}`},
		{method: "PUT", path: "/v1/things/{ns}/missing", header: []string{"If-Match", `"1"`}, body: `{"type":"doc"}`,
			status: 412, json: `{"error":{"code":"precondition_failed"}}`},
		{method: "GET", path: "/v1/things/{ns}/missing", status: 404},
		{method: "PUT", path: "/v1/things/{ns}/c1", header: []string{"If-Match", "not-a-version"}, body: `{"type":"doc"}`,
			status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "DELETE", path: "/v1/things/{ns}/c1", header: []string{"If-Match", `"2"`}, status: 204},
		{method: "GET", path: "/v1/things/{ns}/c1", status: 404},
	}},

	{"If-None-Match creates only", []step{
		{method: "PUT", path: "/v1/things/{ns}/once", header: []string{"If-None-Match", "*"}, body: `{"type":"doc","data":{"first":true}}`,
			status: 201, headers: []string{"ETag", `"1"`}},
		{method: "PUT", path: "/v1/things/{ns}/once", header: []string{"If-None-Match", "*"}, body: `{"type":"doc","data":{"second":true}}`,
			status: 412, json: `{"error":{"code":"precondition_failed"}}`},
		{method: "GET", path: "/v1/things/{ns}/once", status: 200, headers: []string{"ETag", `"1"`}, data: `{"first":true}`},
		{method: "POST", path: "/v1/things/{ns}", header: []string{"If-Match", `"1"`}, body: `{"type":"doc"}`,
			status: 400, json: `{"error":{"code":"invalid"}}`},
	}},

	{"PATCH merges", []step{
		{method: "PUT", path: "/v1/things/{ns}/p1", body: `{"type":"user","data":{"name":"Ada","tags":["a"],"address":{"city":"London","zip":"N1"}}}`, status: 201},
		{method: "PATCH", path: "/v1/things/{ns}/p1", body: `{"data":{"address":{"zip":null,"country":"UK"},"age":37}}`,
			status: 200, headers: []string{"ETag", `"2"`}, json: `{"type":"user","version":2}`,
			data: `{"name":"Ada","tags":["a"],"address":{"city":"London","country":"UK"},"age":37}`},
		{method: "PATCH", path: "/v1/things/{ns}/p1", header: []string{"If-Match", `"2"`}, body: `{"type":"admin"}`,
			status: 200, json: `{"type":"admin","version":3}`,
			data: `{"name":"Ada","tags":["a"],"address":{"city":"London","country":"UK"},"age":37}`},
		{method: "GET", path: "/v1/things/{ns}/p1", status: 200, headers: []string{"ETag", `"3"`}, json: `{"type":"admin"}`,
			data: `{"name":"Ada","tags":["a"],"address":{"city":"London","country":"UK"},"age":37}`},
		{method: "PATCH", path: "/v1/things/{ns}/p1", body: `{"version":9}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PATCH", path: "/v1/things/{ns}/p1", body: `{"data":`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PATCH", path: "/v1/things/{ns}/nobody", body: `{"data":{"a":1}}`, status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "GET", path: "/v1/things/{ns}/p1", status: 200, headers: []string{"ETag", `"3"`}},
	}},

	{"delete", []step{
		{method: "PUT", path: "/v1/things/{ns}/d1", body: `{"type":"doc","data":{"n":1}}`, status: 201},
		{method: "DELETE", path: "/v1/things/{ns}/d1", status: 204},
		{method: "GET", path: "/v1/things/{ns}/d1", status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "DELETE", path: "/v1/things/{ns}/d1", status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "PUT", path: "/v1/things/{ns}/d1", body: `{"type":"doc","data":{"n":2}}`, status: 201,
			json: `{"version":1}`, data: `{"n":2}`},
	}},

	{"list with where filter and cursor pagination", []step{
		{method: "POST", path: "/v1/things/{ns}/batch", body: seedItems, status: 200},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=3", status: 200,
			ids: []string{"i1", "i2", "i3"}, save: map[string]string{"cursor": "nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=3&cursor={cursor}", status: 200,
			ids: []string{"i4", "i5", "i6"}, save: map[string]string{"cursor": "nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=3&cursor={cursor}", status: 200,
			ids: []string{"i7"}, absent: []string{"nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=2&where=" + q(`{"color":"red"}`), status: 200,
			ids: []string{"i1", "i3"}, json: `{"items":[{"type":"item","data":{"color":"red"}},{"data":{"color":"red"}}]}`,
			save: map[string]string{"cursor": "nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=2&where=" + q(`{"color":"red"}`) + "&cursor={cursor}", status: 200,
			ids: []string{"i5", "i7"}, absent: []string{"nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?where=" + q(`{"color":"red"}`), status: 200,
			ids: []string{"i1", "i3", "i5", "i7", "o1"}, absent: []string{"nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&order=-data.n&where=" + q(`{"n":{"gte":3,"lt":6}}`), status: 200,
			ids: []string{"i5", "i4", "i3"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&where=" + q(`{"n":{"in":[2,7]}}`), status: 200,
			ids: []string{"i2", "i7"}},
		{method: "GET", path: "/v1/things/{ns}?type=nothing", status: 200, ids: []string{}, absent: []string{"nextCursor"}},
		{method: "GET", path: "/v1/things/{ns}?type=item&where=" + q(`{"n":`), status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "GET", path: "/v1/things/{ns}?type=item&where=" + q(`{"n":{"between":[1,2]}}`), status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "GET", path: "/v1/things/{ns}?type=item&limit=0", status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "GET", path: "/v1/things/{ns}?type=item&cursor=garbage", status: 400, json: `{"error":{"code":"invalid"}}`},
	}},

	{"batch is all or nothing", []step{
		{method: "PUT", path: "/v1/things/{ns}/b0", body: `{"type":"t","data":{"x":1}}`, status: 201},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[
			{"op":"create","id":"b1","type":"t","data":{"k":1}},
			{"op":"upsert","id":"b2","type":"t","data":{"k":2}},
			{"op":"update","id":"b0","type":"t","data":{"x":2},"ifMatch":1},
			{"op":"create","id":"b0","type":"t","data":{"x":3}}]}`,
			status: 412, json: `{"error":{"code":"precondition_failed","index":3}}`},
		{method: "GET", path: "/v1/things/{ns}/b1", status: 404},
		{method: "GET", path: "/v1/things/{ns}/b2", status: 404},
		{method: "GET", path: "/v1/things/{ns}/b0", status: 200, headers: []string{"ETag", `"1"`}, data: `{"x":1}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[
			{"op":"create","id":"b1","type":"t","data":{"k":1}},
			{"op":"upsert","id":"b2","type":"t","data":{"k":2}},
			{"op":"patch","id":"b0","patch":{"data":{"y":2}},"ifMatch":1}]}`,
			status: 200, json: `{"results":[
				{"op":"create","created":true,"thing":{"id":"b1","version":1,"data":{"k":1}}},
				{"op":"upsert","created":true,"thing":{"id":"b2","version":1}},
				{"op":"patch","created":false,"thing":{"id":"b0","version":2,"data":{"x":1,"y":2}}}]}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[
			{"op":"delete","id":"b2"},
			{"op":"update","id":"b1","type":"t","data":{"k":10},"ifMatch":1}]}`,
			status: 200, json: `{"results":[{"op":"delete","id":"b2","deleted":true},{"op":"update","created":false,"thing":{"version":2}}]}`},
		{method: "GET", path: "/v1/things/{ns}/b2", status: 404},
		{method: "GET", path: "/v1/things/{ns}/b1", status: 200, headers: []string{"ETag", `"2"`}, data: `{"k":10}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[{"op":"create","id":"b9","type":"t"},{"op":"frobnicate","id":"b1"}]}`,
			status: 400, json: `{"error":{"code":"invalid","index":1}}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[{"op":"delete","id":"b0"},{"op":"delete","id":"gone"}]}`,
			status: 404, json: `{"error":{"code":"not_found","index":1}}`},
		{method: "GET", path: "/v1/things/{ns}/b0", status: 200, headers: []string{"ETag", `"2"`}},
		{method: "GET", path: "/v1/things/{ns}/b9", status: 404},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[]}`, status: 400, json: `{"error":{"code":"invalid"}}`},
	}},

	{"relationships and related things", []step{
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[
			{"op":"create","id":"alice","type":"user"},
			{"op":"create","id":"bob","type":"user"},
			{"op":"create","id":"acme","type":"org","data":{"name":"Acme"}}]}`, status: 200},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `{"from":"alice","type":"memberOf","to":"acme","data":{"role":"member"}}`,
			status: 201, json: `{"ns":"{ns}","from":"alice","type":"memberOf","to":"acme","data":{"role":"member"}}`},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `{"from":"alice","type":"memberOf","to":"acme","data":{"role":"owner"}}`,
			status: 200, json: `{"data":{"role":"owner"}}`},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `{"from":"bob","type":"memberOf","to":"acme"}`, status: 201},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `{"from":"alice","type":"knows","to":"bob"}`, status: 201},
		{method: "GET", path: "/v1/things/{ns}/alice/related?direction=out", status: 200, ids: []string{"bob", "acme"},
			json: `{"items":[
				{"type":"user","relationship":{"from":"alice","type":"knows","to":"bob"}},
				{"type":"org","data":{"name":"Acme"},"relationship":{"from":"alice","type":"memberOf","to":"acme","data":{"role":"owner"}}}]}`},
		{method: "GET", path: "/v1/things/{ns}/alice/related?type=memberOf", status: 200, ids: []string{"acme"}},
		{method: "GET", path: "/v1/things/{ns}/acme/related?direction=in&type=memberOf", status: 200, ids: []string{"alice", "bob"},
			json: `{"items":[{"relationship":{"from":"alice","to":"acme"}},{"relationship":{"from":"bob","to":"acme"}}]}`},
		{method: "GET", path: "/v1/things/{ns}/acme/related?direction=out", status: 200, ids: []string{}},
		{method: "GET", path: "/v1/things/{ns}/acme/related?direction=sideways", status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "DELETE", path: "/v1/relationships/{ns}", body: `{"from":"alice","type":"memberOf","to":"acme"}`, status: 204},
		{method: "DELETE", path: "/v1/relationships/{ns}", body: `{"from":"alice","type":"memberOf","to":"acme"}`, status: 404,
			json: `{"error":{"code":"not_found"}}`},
		{method: "GET", path: "/v1/things/{ns}/acme/related?direction=in", status: 200, ids: []string{"bob"}},
		{method: "DELETE", path: "/v1/things/{ns}/bob", status: 204},
		{method: "GET", path: "/v1/things/{ns}/acme/related?direction=in", status: 200, ids: []string{}},
		{method: "GET", path: "/v1/things/{ns}/alice/related", status: 200, ids: []string{}},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `{"from":"alice","to":"acme"}`, status: 400, json: `{"error":{"code":"invalid"}}`},
	}},

	{"not found", []step{
		{method: "GET", path: "/v1/things/{ns}/nope", status: 404, json: `{"error":{"code":"not_found"}}`, contains: []string{"nope"}},
		{method: "DELETE", path: "/v1/things/{ns}/nope", status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "GET", path: "/v1/nothing/here", status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "GET", path: "/v1/things/{ns}/a/b/c", status: 404, json: `{"error":{"code":"not_found"}}`},
		{method: "POST", path: "/v1/things/{ns}/nope", body: `{}`, status: 405, json: `{"error":{"code":"method_not_allowed"}}`,
			check: func(t *testing.T, s *session, r *response) {
				if !strings.Contains(r.header.Get("Allow"), "GET") {
					t.Errorf("Allow = %q; want the methods of the route, GET among them", r.header.Get("Allow"))
				}
			}},
	}},

	{"bad requests are 400", []step{
		{method: "PUT", path: "/v1/things/{ns}/x", body: `{"type":`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: `not json`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: ``, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: `{"type":"t","bogus":1}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: `{"type":"t","data":[1,2]}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: `{"data":{}}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/x", body: `{"type":"t"} {"type":"t"}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/Bad%20NS/x", body: `{"type":"t"}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/things/{ns}/.hidden", body: `{"type":"t"}`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "PUT", path: "/v1/relationships/{ns}", body: `[]`, status: 400, json: `{"error":{"code":"invalid"}}`},
		{method: "GET", path: "/v1/things/{ns}/x", status: 404},
	}},

	{"body over --max-body is 413", []step{
		{method: "PUT", path: "/v1/things/{ns}/big", body: bigBody, status: 413, json: `{"error":{"code":"too_large"}}`},
		{method: "PUT", path: "/v1/things/{ns}/big", body: bigBody, chunked: true, status: 413, json: `{"error":{"code":"too_large"}}`},
		{method: "POST", path: "/v1/things/{ns}/batch", body: `{"ops":[` + strings.TrimSuffix(strings.Repeat(`{"op":"delete","id":"`+strings.Repeat("z", 200)+`"},`, 100), ",") + `]}`,
			chunked: true, status: 413, json: `{"error":{"code":"too_large"}}`},
		{method: "GET", path: "/v1/things/{ns}/big", status: 404},
		{method: "PUT", path: "/v1/things/{ns}/big", body: smallBlob, chunked: true, status: 201},
	}},

	{"system namespaces are 403 to tenant keys", []step{
		// A key with the user role on the scenario's namespace only.
		{method: "POST", path: "/v1/auth/keys", body: `{"name":"tenant","role":"user","namespaces":["{ns}"]}`, status: 201,
			save: map[string]string{"tk": "secret"}},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "PUT", path: "/v1/things/{ns}/mine", body: `{"type":"t"}`, status: 201},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "GET", path: "/v1/things/other-ns/x", status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "GET", path: "/v1/auth/keys", status: 403, json: `{"error":{"code":"forbidden"}}`},
		// The admin key reaches system namespaces.
		{method: "GET", path: "/v1/things/_auth/k1", status: 404},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "GET", path: "/v1/things/_auth/k1", status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "PUT", path: "/v1/things/_auth/k1", body: `{"type":"key"}`, status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "PATCH", path: "/v1/things/_auth/k1", body: `{"type":"key"}`, status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "DELETE", path: "/v1/things/_auth/k1", status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "POST", path: "/v1/things/_auth", body: `{"type":"key"}`, status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "GET", path: "/v1/things/_auth", status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "POST", path: "/v1/things/_auth/batch", body: `{"ops":[{"op":"delete","id":"k1"}]}`, status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "PUT", path: "/v1/relationships/_auth", body: `{"from":"a","type":"t","to":"b"}`, status: 403, json: `{"error":{"code":"forbidden"}}`},
		{header: []string{"Authorization", "Bearer {tk}"}, method: "GET", path: "/v1/things/_auth/k1/related", status: 403, json: `{"error":{"code":"forbidden"}}`},
		// Nor does the Connect path, which only services may call.
		{method: "POST", path: "/dotdo.db.v1.DBService/Get", body: `{"ns":"_auth","id":"k1"}`, status: 401,
			json: `{"error":{"code":"unauthenticated"}}`},
	}},

	{"request ids and access log", []step{
		{method: "GET", path: "/health", header: []string{"X-Request-Id", "e2e-{ns}-health"}, status: 200,
			headers: []string{"X-Request-Id", "e2e-{ns}-health"}, accessLog: true},
		{method: "GET", path: "/v1/things/{ns}/missing", header: []string{"X-Request-Id", "e2e-{ns}-missing"}, status: 404,
			headers: []string{"X-Request-Id", "e2e-{ns}-missing"}, json: `{"error":{"requestId":"e2e-{ns}-missing"}}`, accessLog: true},
		{method: "PUT", path: "/v1/things/{ns}/r1", header: []string{"X-Request-Id", "e2e-{ns}-put"}, body: `{"type":"t"}`, status: 201,
			headers: []string{"X-Request-Id", "e2e-{ns}-put"}, accessLog: true},
		{method: "GET", path: "/v1/things/{ns}/r1", status: 200, accessLog: true,
			check: func(t *testing.T, s *session, r *response) { s.vars["rid"] = r.header.Get("X-Request-Id") }},
		{method: "GET", path: "/v1/things/{ns}/r1", status: 200, accessLog: true,
			check: func(t *testing.T, s *session, r *response) {
				if id := r.header.Get("X-Request-Id"); id == s.vars["rid"] {
					t.Errorf("two requests without X-Request-Id both got %q; want a new ID for each", id)
				}
			}},
		{method: "GET", path: "/v1/things/{ns}/r1", header: []string{"X-Request-Id", "has spaces in it"}, status: 200, accessLog: true,
			check: func(t *testing.T, s *session, r *response) {
				if id := r.header.Get("X-Request-Id"); id == "has spaces in it" {
					t.Errorf("X-Request-Id = %q; want an unsafe ID replaced by a generated one", id)
				}
			}},
	}},

	{"metrics", []step{
		{method: "PUT", path: "/v1/things/{ns}/m1", body: `{"type":"t"}`, status: 201},
		{method: "GET", path: "/metrics", status: 200, contains: []string{
			"# TYPE dotdo_http_requests_total counter",
			`dotdo_http_requests_total{code="201",route="PUT /v1/things/{ns}/{id}"}`,
		}},
	}},

	{"health", []step{
		{method: "GET", path: "/health", status: 200, headers: []string{"Content-Type", "application/json"},
			json: `{"status":"ok","services":{"db":{"status":"ok"},"gateway":{"status":"ok"}}}`},
	}},
}

// TestREST runs every REST scenario on every deployment.
func TestREST(t *testing.T) {
	t.Parallel()
	for _, d := range deployments() {
		t.Run(d.name, func(t *testing.T) {
			t.Parallel()
			tg := d.start(t)
			for i, sc := range restScenarios {
				t.Run(sc.name, func(t *testing.T) {
					s := &session{tg: tg, vars: map[string]string{"ns": fmt.Sprintf("s%d-%s", i, randHex(3))}}
					for j, st := range sc.steps {
						if !s.step(t, j, st) {
							return
						}
					}
				})
			}
		})
	}
}

// step runs one step and reports whether the scenario may go on.
func (s *session) step(t *testing.T, n int, st step) bool {
	t.Helper()
	path := s.expand(st.path)
	var body any
	if st.body != "" || st.method == "PUT" || st.method == "POST" || st.method == "PATCH" {
		b := s.expand(st.body)
		body = b
		if st.chunked {
			body = io.MultiReader(strings.NewReader(b)) // hides the length
		}
	}
	header := make([]string, len(st.header))
	for i, h := range st.header {
		header[i] = s.expand(h)
	}
	r := do(t, st.method, s.tg.url+path, body, header...)
	where := fmt.Sprintf("step %d: %s %s", n, st.method, path)
	if r.status != st.status {
		t.Errorf("%s: status %d; want %d\n%s", where, r.status, st.status, clipBody(r.body))
		return false
	}
	failed := false
	errorf := func(format string, args ...any) {
		t.Errorf("%s: %s", where, fmt.Sprintf(format, args...))
		failed = true
	}
	rid := r.header.Get("X-Request-Id")
	if rid == "" {
		errorf("no X-Request-Id in the response")
	}
	for i := 0; i+1 < len(st.headers); i += 2 {
		if got, want := r.header.Get(st.headers[i]), s.expand(st.headers[i+1]); got != want {
			errorf("%s = %q; want %q", st.headers[i], got, want)
		}
	}
	var v any
	isJSON := len(r.body) > 0 && path != "/metrics"
	if isJSON {
		if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			errorf("Content-Type = %q; want application/json", ct)
		}
		v = mustJSONBody(t, where, r.body)
	}
	if r.status >= 400 {
		// Every error has the one envelope, naming the request.
		e, _ := lookup(v, "error")
		em, ok := e.(map[string]any)
		switch {
		case !ok:
			errorf("error body %s; want {\"error\":{...}}", clipBody(r.body))
		case em["code"] == "" || em["code"] == nil || em["message"] == "" || em["message"] == nil:
			errorf("error %v; want a code and a message", em)
		case em["requestId"] != rid:
			errorf("error requestId = %v; want the X-Request-Id %q", em["requestId"], rid)
		}
	}
	if r.status == http.StatusNoContent || r.status == http.StatusNotModified {
		if len(r.body) != 0 {
			errorf("%d with body %q; want none", r.status, clipBody(r.body))
		}
	}
	if st.json != "" {
		for _, d := range subset("", v, mustJSON(t, s.expand(st.json))) {
			errorf("%s", d)
		}
	}
	if st.data != "" {
		got, _ := lookup(v, "data")
		if want := mustJSON(t, st.data); !reflect.DeepEqual(got, want) {
			errorf("data = %s; want %s", compact(got), compact(want))
		}
	}
	if st.ids != nil {
		items, _ := lookup(v, "items")
		list, ok := items.([]any)
		got := []string{}
		for _, it := range list {
			id, _ := lookup(it, "id")
			got = append(got, fmt.Sprint(id))
		}
		if !ok || !reflect.DeepEqual(got, st.ids) {
			errorf("item ids = %v; want %v\n%s", got, st.ids, clipBody(r.body))
		}
	}
	for _, p := range st.absent {
		if x, ok := lookup(v, p); ok {
			errorf("%s = %s; want it absent", p, compact(x))
		}
	}
	for _, c := range st.contains {
		if !strings.Contains(string(r.body), c) {
			errorf("body lacks %q\n%s", c, clipBody(r.body))
		}
	}
	for name, p := range st.save {
		x, ok := lookup(v, p)
		str, _ := x.(string)
		if !ok || str == "" {
			errorf("%s = %v; want a string to carry on", p, x)
			return false
		}
		s.vars[name] = url.QueryEscape(str)
	}
	if st.accessLog {
		s.checkAccessLog(t, where, st.method, path, r)
	}
	if st.check != nil {
		st.check(t, s, r)
	}
	return !failed && !t.Failed()
}

// checkAccessLog asserts the gateway wrote exactly one access line for the
// response's request ID, naming its method, path and status.
func (s *session) checkAccessLog(t *testing.T, where, method, path string, r *response) {
	t.Helper()
	id := r.header.Get("X-Request-Id")
	recs := s.tg.gw.waitLog("an access line for request "+id, func(rec map[string]any) bool {
		return rec["msg"] == "request" && rec["request_id"] == id
	})
	if len(recs) != 1 {
		t.Errorf("%s: %d access lines for request %s; want 1", where, len(recs), id)
	}
	rec := recs[0]
	p, _, _ := strings.Cut(path, "?")
	if rec["method"] != method || rec["path"] != p || rec["status"] != float64(r.status) {
		t.Errorf("%s: access line %v; want method %s, path %s, status %d", where, rec, method, p, r.status)
	}
}

func mustJSONBody(t *testing.T, where string, b []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Errorf("%s: body is not JSON: %v\n%s", where, err, clipBody(b))
	}
	return v
}

func clipBody(b []byte) string {
	if len(b) > 600 {
		return string(b[:600]) + "..."
	}
	return string(b)
}

// TestSplitMode checks what only split mode has: the db process's own
// listener, closed to callers without the internal token; request IDs that
// cross the process boundary; health aggregated across processes.
func TestSplitMode(t *testing.T) {
	t.Parallel()
	t.Run("refuses to start without a token", func(t *testing.T) {
		t.Parallel()
		gateway := []string{"serve", "--addr", "127.0.0.1:0", "--log-format", "json", "--services", "gateway", "--db-url", "http://127.0.0.1:9"}
		for _, tc := range []struct {
			name string
			args []string
			env  []string
			want []string
		}{
			{"gateway without token", gateway, nil, []string{"DOTDO_INTERNAL_TOKEN", "at least 32 characters"}},
			{"gateway with short token", gateway, []string{"DOTDO_INTERNAL_TOKEN=0123456789"}, []string{"DOTDO_INTERNAL_TOKEN", "at least 32 characters"}},
			{"db without token", []string{"serve", "--addr", "127.0.0.1:0", "--services", "db", "--data-dir", t.TempDir()}, nil,
				[]string{"DOTDO_INTERNAL_TOKEN", "at least 32 characters"}},
			{"gateway without db", []string{"serve", "--addr", "127.0.0.1:0", "--services", "gateway"}, []string{"DOTDO_INTERNAL_TOKEN=" + internalToken},
				[]string{"--db-url"}},
		} {
			code, out := runBinary(t, tc.args, tc.env)
			if code != 1 {
				t.Errorf("%s: exit code %d; want 1\n%s", tc.name, code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("%s: output %q; want it to mention %q", tc.name, out, w)
				}
			}
			if strings.Contains(out, "dotdo listening") {
				t.Errorf("%s: the process listened; want it to refuse to start\n%s", tc.name, out)
			}
		}
	})

	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			db := startDB(t, newBackend(t, be))
			gw := startGateway(t, db.url)

			t.Run("db health needs no token", func(t *testing.T) {
				r := do(t, "GET", db.url+"/health", nil)
				if r.status != 200 {
					t.Fatalf("GET db /health = %d; want 200\n%s", r.status, r.body)
				}
				for _, d := range subset("", r.json(t), mustJSON(t, `{"status":"ok","services":{"db":{"status":"ok"}}}`)) {
					t.Error(d)
				}
			})

			t.Run("db RPC needs the token", func(t *testing.T) {
				get := dbv1connect.DBServiceGetProcedure
				for _, tc := range []struct {
					name, method, path string
					header             []string
					status             int
					code               string
				}{
					{"no token", "POST", get, nil, 401, ""},
					{"wrong token", "POST", get, []string{rpc.TokenHeader, strings.Repeat("x", len(internalToken))}, 401, ""},
					{"empty token", "POST", get, []string{rpc.TokenHeader, ""}, 401, ""},
					{"metrics without token", "GET", "/metrics", nil, 401, ""},
					{"REST path without token", "GET", "/v1/things/app/x", nil, 401, ""},
					{"right token", "POST", get, []string{rpc.TokenHeader, internalToken}, 404, "not_found"},
				} {
					r := do(t, tc.method, db.url+tc.path, `{"ns":"app","id":"nobody"}`, tc.header...)
					if r.status != tc.status {
						t.Errorf("%s: %s %s = %d; want %d\n%s", tc.name, tc.method, tc.path, r.status, tc.status, r.body)
						continue
					}
					v := r.json(t)
					switch {
					case tc.status == 401:
						if code, _ := lookup(v, "error.code"); code != "unauthenticated" {
							t.Errorf("%s: error code %v; want unauthenticated\n%s", tc.name, code, r.body)
						}
					case v["code"] != tc.code: // a Connect error
						t.Errorf("%s: Connect code %v; want %s\n%s", tc.name, v["code"], tc.code, r.body)
					}
				}
			})

			t.Run("request id crosses to the db process", func(t *testing.T) {
				id := "split-" + randHex(6)
				r := do(t, "PUT", gw.url+"/v1/things/split/t1", `{"type":"t","data":{"a":1}}`, "X-Request-Id", id)
				if r.status != 201 || r.header.Get("X-Request-Id") != id {
					t.Fatalf("PUT through the gateway = %d, X-Request-Id %q; want 201 and %q\n%s", r.status, r.header.Get("X-Request-Id"), id, r.body)
				}
				db.waitLog("a line for request "+id, func(rec map[string]any) bool { return rec["request_id"] == id })
				gw.waitLog("an access line for request "+id, func(rec map[string]any) bool { return rec["request_id"] == id && rec["msg"] == "request" })
				r = do(t, "GET", gw.url+"/v1/things/split/t1", nil)
				if r.status != 200 || r.header.Get("ETag") != `"1"` {
					t.Errorf("GET through the gateway = %d, ETag %q; want 200 and \"1\"", r.status, r.header.Get("ETag"))
				}
			})

			t.Run("gateway health shows the db", func(t *testing.T) {
				r := do(t, "GET", gw.url+"/health", nil)
				if r.status != 200 {
					t.Fatalf("GET gateway /health = %d; want 200\n%s", r.status, r.body)
				}
				for _, d := range subset("", r.json(t), mustJSON(t, `{"status":"ok","services":{"db":{"status":"ok"},"gateway":{"status":"ok"}}}`)) {
					t.Error(d)
				}
			})

			t.Run("no secrets in logs", func(t *testing.T) {
				for _, p := range []*proc{db, gw} {
					if strings.Contains(p.logs.String(), internalToken) {
						t.Errorf("%s logged the internal token", p.name)
					}
				}
			})

			t.Run("db down makes the gateway degraded", func(t *testing.T) {
				db.kill()
				r := do(t, "GET", gw.url+"/health", nil)
				if r.status != 503 {
					t.Fatalf("GET gateway /health with the db killed = %d; want 503\n%s", r.status, r.body)
				}
				for _, d := range subset("", r.json(t), mustJSON(t, `{"status":"degraded","services":{"db":{"status":"unavailable"},"gateway":{"status":"ok"}}}`)) {
					t.Error(d)
				}
				r = do(t, "GET", gw.url+"/v1/things/split/t1", nil)
				if code, _ := lookup(r.json(t), "error.code"); r.status != 503 || code != "unavailable" {
					t.Errorf("GET a thing with the db killed = %d %s; want 503 unavailable", r.status, r.body)
				}
				if strings.Contains(string(r.body), "127.0.0.1") {
					t.Errorf("error %s names an internal address; want internal details only in the log", r.body)
				}
			})
		})
	}
}
