//go:build unix

package main

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// waitRun polls a run until it has ended and returns it.
func waitRun(t *testing.T, base, ns, task, id string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r := do(t, "GET", base+"/v1/schedule/tasks/"+task+"/runs/"+url.PathEscape(id)+"?ns="+ns, nil)
		if r.status != 200 {
			t.Fatalf("GET run %s = %d %s", id, r.status, r.body)
		}
		v := r.json(t)
		if s := v["status"]; s != "running" && s != "retrying" && s != "buffered" {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("run %s of %s did not end: %s", id, task, r.body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runNow starts a task now through the gateway and waits for its run.
func runNow(t *testing.T, base, ns, task string) map[string]any {
	t.Helper()
	r := do(t, "POST", base+"/v1/schedule/tasks/"+task+"/run?ns="+ns, nil)
	if r.status != 202 {
		t.Fatalf("POST run %s = %d %s", task, r.status, r.body)
	}
	return waitRun(t, base, ns, task, r.json(t)["id"].(string))
}

// The schedule API through the gateway of the real binary: permissions on
// the tenant's namespace, bad input, the built-in tasks in _schedule, the
// rate-limit report and a backup restored with dotdo restore into a fresh
// store that serves the same things.
func TestScheduleAPIE2E(t *testing.T) {
	for _, name := range testdb.Backends() {
		t.Run(name, func(t *testing.T) {
			b := newBackend(t, name)
			p := startAllInOne(t, b, "--rate-limit-anon", "3/1m", "--roles", "scheduler=schedule:read+schedule:write+schedule:run")
			base := p.url
			key := func(body string) string {
				r := do(t, "POST", base+"/v1/auth/keys", body)
				if r.status != 201 {
					t.Fatalf("create key = %d %s", r.status, r.body)
				}
				return r.json(t)["secret"].(string)
			}
			viewer := key(`{"name":"viewer","grants":{"acme":{"roles":["user"]}}}`)
			scheduler := key(`{"name":"scheduler","grants":{"acme":{"roles":["scheduler"]}}}`)
			as := func(k string) []string { return []string{"Authorization", "Bearer " + k} }
			task := `{"schedule":"@daily","retries":0,"action":{"type":"http","url":"https://hooks.example.com/nightly"}}`

			for _, tc := range []struct {
				who, method, path, body string
				want                    int
				msg                     string
			}{
				{viewer, "PUT", "/v1/schedule/tasks/nightly?ns=acme", task, 403, "schedule:write"},
				{viewer, "POST", "/v1/schedule/tasks/nightly/run?ns=acme", "", 403, "schedule:run"},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=other", task, 403, "schedule:write"},
				{scheduler, "GET", "/v1/schedule/tasks?ns=_schedule", "", 403, ""},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=acme", `{"schedule":"61 * * * *","action":{"type":"http","url":"https://hooks.example.com/"}}`, 400, "schedule"},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=acme", `{"schedule":"@daily","action":{"type":"sms","url":"https://hooks.example.com/"}}`, 400, "is unknown; use queue or http"},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=acme", `{"schedule":"@daily","action":{"type":"http","url":"http://127.0.0.1:8787/v1/auth/keys"}}`, 400, "refused"},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=acme", `{"schedule":"@daily","action":{"type":"http","url":"http://169.254.169.254/"}}`, 400, "refused"},
				{viewer, "GET", "/v1/schedule/tasks/nightly?ns=acme", "", 404, "not found"},
				{scheduler, "PUT", "/v1/schedule/tasks/nightly?ns=acme", task, 201, ""},
				{viewer, "GET", "/v1/schedule/tasks/nightly?ns=acme", "", 200, ""},
				{viewer, "GET", "/v1/schedule/tasks/nightly/runs?ns=acme", "", 200, ""},
				{viewer, "POST", "/v1/schedule/tasks/nightly/disable?ns=acme", "", 403, "schedule:write"},
				{scheduler, "POST", "/v1/schedule/tasks/nightly/disable?ns=acme", "", 200, ""},
				{"", "GET", "/v1/schedule/tasks?ns=acme", "", 401, ""},
			} {
				var body any
				if tc.body != "" {
					body = tc.body
				}
				r := do(t, tc.method, base+tc.path, body, as(tc.who)...)
				if r.status != tc.want || !strings.Contains(string(r.body), tc.msg) {
					t.Errorf("%s %s = %d %s; want %d mentioning %q", tc.method, tc.path, r.status, r.body, tc.want, tc.msg)
				}
			}
			r := do(t, "POST", base+"/v1/schedule/tasks/nightly/run?ns=acme", nil, as(scheduler)...)
			if r.status != 202 || !strings.HasPrefix(r.json(t)["id"].(string), "acme:nightly:") {
				t.Errorf("run now = %d %s; want 202 with the run id", r.status, r.body)
			}

			// The built-in tasks, each on its default schedule.
			r = do(t, "GET", base+"/v1/schedule/tasks?ns=_schedule", nil)
			var list struct {
				Items []struct {
					Name, Schedule string
					Enabled        bool
				} `json:"items"`
			}
			json.Unmarshal(r.body, &list)
			got := map[string]string{}
			for _, it := range list.Items {
				got[it.Name] = it.Schedule
			}
			for n, spec := range map[string]string{"cleanup-expired-sessions": "@hourly", "cleanup-expired-api-keys": "@daily", "cleanup-old-generations": "@weekly",
				"generate-missing-embeddings": "@daily", "update-analytics": "@hourly", "backup-database": "@daily", "health-check-services": "@every 5m", "check-rate-limits": "@hourly"} {
				if got[n] != spec {
					t.Errorf("built-in %s schedule = %q; want %q", n, got[n], spec)
				}
			}
			if r := do(t, "PUT", base+"/v1/schedule/tasks/backup-database?ns=_schedule", task); r.status != 400 {
				t.Errorf("PUT a built-in = %d %s; want 400", r.status, r.body)
			}

			// An anonymous caller over its limit shows up in the report.
			for i := 0; i < 5; i++ {
				do(t, "GET", base+"/.well-known/jwks.json", nil, "Authorization", "")
			}
			run := runNow(t, base, "_schedule", "check-rate-limits")
			if run["status"] != "succeeded" || !strings.Contains(run["output"].(string), "ip:127.0.0.1 anonymous x2") {
				t.Errorf("check-rate-limits = %v; want ip:127.0.0.1 refused twice", run)
			}
			r = do(t, "GET", base+"/v1/things/_schedule?type=RateLimitReport", nil)
			if !strings.Contains(string(r.body), `"key":"ip:127.0.0.1","lastAt"`) {
				t.Errorf("rate-limit reports = %s", r.body)
			}

			// Backup, then restore into a fresh store.
			for i := 0; i < 5; i++ {
				body := `{"type":"Note","data":{"n":` + string(rune('0'+i)) + `,"s":"ünïcode"},"content":"note"}`
				if r := do(t, "PUT", base+"/v1/things/acme/note-"+string(rune('a'+i)), body); r.status != 201 {
					t.Fatalf("PUT thing = %d %s", r.status, r.body)
				}
			}
			before := do(t, "GET", base+"/v1/things/acme?limit=100", nil).body
			run = runNow(t, base, "_schedule", "backup-database")
			if run["status"] != "succeeded" {
				t.Fatalf("backup-database = %v", run)
			}
			m := string(do(t, "GET", base+"/metrics", nil).body)
			for _, series := range []string{`dotdo_schedule_runs_total{status="succeeded"}`, `dotdo_schedule_claims_total{result="won"}`} {
				if !strings.Contains(m, series) {
					t.Errorf("/metrics lacks %s", series)
				}
			}
			out := run["output"].(string)
			file := strings.Fields(strings.TrimPrefix(out, "wrote "))[0]
			p.stop()

			fresh := newBackend(t, name)
			if code, o := runBinary(t, []string{"restore", file, "--data-dir", fresh.dataDir}, fresh.env()); code != 0 {
				t.Fatalf("dotdo restore = %d\n%s", code, o)
			}
			if code, o := runBinary(t, []string{"restore", file, "--data-dir", fresh.dataDir}, fresh.env()); code == 0 || !strings.Contains(o, "not empty") {
				t.Errorf("second restore = %d %s; want a refusal: the store is not empty", code, o)
			}
			if name == thingsdb.SQLite {
				if code, o := runBinary(t, []string{"restore", file, "--data-dir", t.TempDir()}, []string{"DATABASE_URL=" + testdbURL(t)}); code == 0 || !strings.Contains(o, "SQLite backup") {
					t.Errorf("restore of a SQLite backup into PostgreSQL = %d %s; want a refusal", code, o)
				}
			}
			q := startAllInOne(t, fresh)
			after := do(t, "GET", q.url+"/v1/things/acme?limit=100", nil).body
			if string(before) != string(after) || !strings.Contains(string(after), "note-e") {
				t.Errorf("things after restore differ:\nbefore %s\nafter  %s", before, after)
			}
			if r := do(t, "GET", q.url+"/v1/schedule/tasks/nightly?ns=acme", nil); r.status != 200 || r.json(t)["enabled"] != false {
				t.Errorf("restored task = %d %s; want it, disabled", r.status, r.body)
			}
		})
	}
}

// testdbURL is a PostgreSQL schema URL when the tests have one, or a URL
// that cannot be reached otherwise (the refusal comes before connecting).
func testdbURL(t *testing.T) string {
	if len(testdb.Backends()) > 1 {
		return testdb.SchemaURL(t)
	}
	return "postgres://nobody@127.0.0.1:1/none?sslmode=disable"
}
