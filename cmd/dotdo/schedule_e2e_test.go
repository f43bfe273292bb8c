//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
)

// scheduleRun is a run as GET /v1/schedule/tasks/{name}/runs returns it.
type scheduleRun struct {
	ID          string    `json:"id"`
	ScheduledAt time.Time `json:"scheduledAt"`
	StartedAt   time.Time `json:"startedAt"`
	Status      string    `json:"status"`
	Attempts    int       `json:"attempts"`
	Replica     string    `json:"replica"`
	Error       string    `json:"error"`
	History     []struct {
		Number  int    `json:"number"`
		Status  string `json:"status"`
		Replica string `json:"replica"`
	} `json:"history"`
}

// scheduleRuns pages through every run of a task through the gateway.
func scheduleRuns(t *testing.T, gw, ns, name string) []scheduleRun {
	t.Helper()
	var out []scheduleRun
	cursor := ""
	for {
		r := do(t, "GET", gw+"/v1/schedule/tasks/"+name+"/runs?ns="+ns+"&limit=100&cursor="+url.QueryEscape(cursor), nil)
		if r.status != 200 {
			t.Fatalf("GET runs = %d %s", r.status, r.body)
		}
		var page struct {
			Items      []scheduleRun `json:"items"`
			NextCursor string        `json:"nextCursor"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		out = append(out, page.Items...)
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ScheduledAt.Before(out[j].ScheduledAt) })
	return out
}

// hookCalls records the HTTP calls a task makes, by scheduled time.
type hookCalls struct {
	mu    sync.Mutex
	calls map[string][]int // scheduled time -> attempt numbers
}

func (h *hookCalls) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.Header.Get("Dotdo-Schedule-Attempt"))
	h.mu.Lock()
	h.calls[r.Header.Get("Dotdo-Schedule-Time")] = append(h.calls[r.Header.Get("Dotdo-Schedule-Time")], n)
	h.mu.Unlock()
}

// Three schedule processes in split mode run an @every 2s task for more
// than a minute while one of them is killed and restarted: every tick in
// the span runs exactly once, and the stopped process shows as down in
// the health history the others keep.
func TestScheduleReplicasE2E(t *testing.T) {
	backends := testdb.Backends()
	b := newBackend(t, backends[len(backends)-1]) // PostgreSQL when it is there
	db := startDB(t, b)
	hook := &hookCalls{calls: map[string][]int{}}
	hs := httptest.NewServer(hook)
	defer hs.Close()

	env := []string{"DOTDO_INTERNAL_TOKEN=" + internalToken}
	schedArgs := func(extra ...string) []string {
		return append([]string{"--services", "schedule,queue", "--db-url", db.url, "--data-dir", t.TempDir(),
			"--schedule-allow-private", "--schedule-sync", "1s", "--schedule-tasks", "health-check-services=@every 2s"}, extra...)
	}
	s3 := startProc(t, "schedule-3", schedArgs(), env)
	targets := "--schedule-health-targets=db=" + db.url + ",sched3=" + s3.url
	s1 := startProc(t, "schedule-1", schedArgs(targets), env)
	s2 := startProc(t, "schedule-2", schedArgs(targets), env)
	gw := startGateway(t, db.url, "--schedule-url", s1.url)

	body := fmt.Sprintf(`{"schedule":"@every 2s","timeout":"5s","retries":3,"retryBackoff":"1s","action":{"type":"http","method":"GET","url":%q}}`, hs.URL+"/tick")
	if r := do(t, "PUT", gw.url+"/v1/schedule/tasks/tick?ns=e2e", body); r.status != 201 {
		t.Fatalf("PUT task = %d %s", r.status, r.body)
	}
	start := time.Now()
	time.Sleep(20 * time.Second)
	s3.kill()
	killedAt := time.Now()
	time.Sleep(15 * time.Second)
	s3b := startProc(t, "schedule-3 restarted", schedArgs(), env)
	for time.Since(start) < 64*time.Second {
		time.Sleep(500 * time.Millisecond)
	}
	if r := do(t, "POST", gw.url+"/v1/schedule/tasks/tick/disable?ns=e2e", nil); r.status != 200 {
		t.Fatalf("disable = %d %s", r.status, r.body)
	}
	// A run the killed process held is retried once its lease (timeout
	// 5s + 10s) passes; wait for every run to end.
	var runs []scheduleRun
	deadline := time.Now().Add(60 * time.Second)
	for {
		runs = scheduleRuns(t, gw.url, "e2e", "tick")
		done := true
		for _, r := range runs {
			if r.Status == "running" || r.Status == "retrying" {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("runs still unfinished after 60s: %+v", runs)
		}
		time.Sleep(500 * time.Millisecond)
	}

	if len(runs) < 30 {
		t.Fatalf("runs = %d; want at least 30 (60 s of @every 2s)", len(runs))
	}
	span := runs[len(runs)-1].ScheduledAt.Sub(runs[0].ScheduledAt)
	replicas := map[string]int{}
	var skews []time.Duration
	hook.mu.Lock()
	defer hook.mu.Unlock()
	for i, r := range runs {
		if i > 0 {
			if gap := r.ScheduledAt.Sub(runs[i-1].ScheduledAt); gap != 2*time.Second {
				t.Errorf("ticks %v and %v are %v apart; want every 2s exactly once", runs[i-1].ScheduledAt, r.ScheduledAt, gap)
			}
		}
		if r.Status != "succeeded" {
			t.Errorf("run %s = %s (%s); want succeeded", r.ID, r.Status, r.Error)
		}
		replicas[r.Replica]++
		skews = append(skews, r.StartedAt.Sub(r.ScheduledAt))
		// The hook saw the tick's succeeding attempt exactly once, and any
		// earlier attempt at most once (one cut short by the kill).
		seen := map[int]int{}
		for _, a := range hook.calls[r.ScheduledAt.UTC().Format(time.RFC3339Nano)] {
			seen[a]++
		}
		if seen[r.Attempts] != 1 {
			t.Errorf("tick %v: hook saw attempt %d %d times (calls %v); want once", r.ScheduledAt, r.Attempts, seen[r.Attempts], seen)
		}
		for a, n := range seen {
			if n > 1 || a > r.Attempts {
				t.Errorf("tick %v: hook saw attempt %d %d times; the run made %d attempts", r.ScheduledAt, a, n, r.Attempts)
			}
		}
		if r.Attempts > 1 {
			t.Logf("tick %v took %d attempts: %+v", r.ScheduledAt, r.Attempts, r.History)
		}
	}
	if len(hook.calls) != len(runs) {
		t.Errorf("hook saw %d ticks; runs = %d", len(hook.calls), len(runs))
	}
	if len(replicas) < 2 {
		t.Errorf("runs by replica = %v; want the ticks shared", replicas)
	}
	sort.Slice(skews, func(i, j int) bool { return skews[i] < skews[j] })
	t.Logf("%d ticks over %v, exactly once each; runs by replica %v; fire skew p50 %v, p99 %v, max %v",
		len(runs), span, replicas, skews[len(skews)/2], skews[len(skews)*99/100], skews[len(skews)-1])

	// The processes that kept going recorded schedule-3 as down while it
	// was stopped, with an event for the change.
	r := do(t, "GET", gw.url+"/v1/things/_schedule?type=HealthEvent&limit=100&where="+url.QueryEscape(`{"service":"sched3"}`), nil)
	if r.status != 200 {
		t.Fatalf("GET health events = %d %s", r.status, r.body)
	}
	var events struct {
		Items []struct {
			Data struct{ From, To, At string } `json:"data"`
		} `json:"items"`
	}
	json.Unmarshal(r.body, &events)
	var sawDown bool
	for _, e := range events.Items {
		at, _ := time.Parse(time.RFC3339Nano, e.Data.At)
		if e.Data.From == "up" && e.Data.To == "down" && at.After(killedAt) {
			sawDown = true
		}
	}
	if !sawDown {
		t.Errorf("health events for sched3 = %s; want up -> down after the kill", r.body)
	}
	_, _, _ = s1, s2, s3b
}
