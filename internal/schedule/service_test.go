package schedule

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/testdb"
)

func i32(n int32) *int32 { return &n }

// Three replicas on one store and one clock: every tick runs exactly once.
func TestExactlyOnceAcrossReplicas(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			db := openDB(t, be)
			clk := NewFakeClock(t0())
			h := newHook(t, nil)
			var reps []*replica
			for i := 0; i < 3; i++ {
				reps = append(reps, startReplica(t, db, clk, fmt.Sprintf("r%d", i), nil))
			}
			putTask(t, reps[0].Service, httpTask("acme", "tick", "@every 1m", h.URL))
			for _, r := range reps[1:] {
				r.nudge()
			}
			time.Sleep(20 * time.Millisecond)
			const n = 10
			for i := 1; i <= n; i++ {
				clk.Advance(time.Minute)
				waitFor(t, fmt.Sprintf("tick %d", i), func() bool {
					rs := runs(t, reps[0].Service, "acme", "tick")
					return len(rs) >= i && finished(rs)
				})
			}
			time.Sleep(50 * time.Millisecond)
			rs := runs(t, reps[0].Service, "acme", "tick")
			if len(rs) != n {
				t.Fatalf("runs = %d; want %d", len(rs), n)
			}
			calls := h.snapshot()
			perTick := map[string]int{}
			for _, c := range calls {
				perTick[c.Time]++
			}
			for i, r := range rs {
				want := t0().Add(time.Duration(i+1) * time.Minute)
				if got := fromMicros(r.ScheduledAt); !got.Equal(want) {
					t.Errorf("run %d scheduledAt = %v; want %v", i, got, want)
				}
				if r.Status != statusSucceeded || r.Attempts != 1 || r.Trigger != "schedule" {
					t.Errorf("run %d = %s after %d attempts (%s); want succeeded after 1 (schedule)", i, r.Status, r.Attempts, r.Trigger)
				}
				if got := perTick[want.Format(time.RFC3339Nano)]; got != 1 {
					t.Errorf("calls for tick %v = %d; want 1", want, got)
				}
			}
			if len(calls) != n {
				t.Errorf("hook calls = %d; want %d", len(calls), n)
			}
		})
	}
}

// A failing attempt is retried with exponential backoff and jitter, then
// the run fails when the retries are spent.
func TestRetryWithBackoff(t *testing.T) {
	db := openDB(t, "sqlite")
	clk := NewFakeClock(t0())
	fails := 2
	h := newHook(t, func(c call, w http.ResponseWriter) {
		if c.Attempt <= fails {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "try later")
		}
	})
	r := startReplica(t, db, clk, "r0", nil)
	task := httpTask("acme", "flaky", "@hourly", h.URL)
	task.RetryBackoff = "10s"
	putTask(t, r.Service, task)

	clk.Advance(time.Hour)
	var rs []*schedulev1.Run
	waitFor(t, "the first attempt", func() bool {
		rs = runs(t, r.Service, "acme", "flaky")
		return len(rs) == 1 && rs[0].Status == statusRetrying
	})
	// Jitter 0 gives half the exponential delay: 5s, then 10s.
	if got := fromMicros(rs[0].NextAttemptAt).Sub(fromMicros(rs[0].History[0].EndedAt)); got != 5*time.Second {
		t.Errorf("first backoff = %v; want 5s", got)
	}
	clk.Advance(4 * time.Second)
	time.Sleep(30 * time.Millisecond)
	if n := len(h.snapshot()); n != 1 {
		t.Fatalf("calls 4s after the first failure = %d; want 1 (backoff 5s)", n)
	}
	clk.Advance(time.Second)
	waitFor(t, "the second attempt", func() bool {
		rs = runs(t, r.Service, "acme", "flaky")
		return len(h.snapshot()) == 2 && rs[0].Status == statusRetrying && len(rs[0].History) == 2
	})
	if got := fromMicros(rs[0].NextAttemptAt).Sub(fromMicros(rs[0].History[1].EndedAt)); got != 10*time.Second {
		t.Errorf("second backoff = %v; want 10s", got)
	}
	clk.Advance(10 * time.Second)
	waitFor(t, "the run to succeed", func() bool { rs = runs(t, r.Service, "acme", "flaky"); return rs[0].Status == statusSucceeded })
	run := rs[0]
	if run.Attempts != 3 || len(run.History) != 3 {
		t.Fatalf("attempts = %d, history %d; want 3", run.Attempts, len(run.History))
	}
	for i, want := range []string{statusFailed, statusFailed, statusSucceeded} {
		if run.History[i].Status != want {
			t.Errorf("attempt %d = %s (%s); want %s", i+1, run.History[i].Status, run.History[i].Error, want)
		}
	}
	if !strings.Contains(run.History[0].Error, "503") {
		t.Errorf("attempt 1 error = %q; want the status", run.History[0].Error)
	}
	if gap := fromMicros(run.History[2].StartedAt).Sub(fromMicros(run.History[0].StartedAt)); gap != 15*time.Second {
		t.Errorf("attempt 3 started %v after attempt 1; want 15s", gap)
	}

	// Retries spent: 1 + 2 attempts, then failed.
	fails = 100
	task = httpTask("acme", "broken", "@hourly", h.URL)
	task.Retries, task.RetryBackoff = i32(2), "1s"
	putTask(t, r.Service, task)
	clk.Advance(time.Hour)
	for i := 0; i < 20; i++ {
		time.Sleep(5 * time.Millisecond)
		clk.Advance(time.Second)
	}
	waitFor(t, "the broken run to fail", func() bool {
		rs = runs(t, r.Service, "acme", "broken")
		return len(rs) == 1 && rs[0].Status == statusFailed
	})
	if rs[0].Attempts != 3 || !strings.Contains(rs[0].Error, "503") {
		t.Errorf("failed run: attempts %d, error %q; want 3 and the status", rs[0].Attempts, rs[0].Error)
	}
}

// The overlap policies when a run outlasts the interval.
func TestOverlapPolicies(t *testing.T) {
	for _, policy := range []string{"skip", "allow", "buffer_one"} {
		t.Run(policy, func(t *testing.T) {
			db := openDB(t, "sqlite")
			clk := NewFakeClock(t0())
			release := make(chan struct{})
			h := newHook(t, func(c call, w http.ResponseWriter) {
				if strings.HasSuffix(c.Time, ":01:00Z") {
					<-release // the first tick's run is long
				}
			})
			t.Cleanup(func() {
				select {
				case <-release:
				default:
					close(release)
				}
			})
			r := startReplica(t, db, clk, "r0", nil)
			task := httpTask("acme", "long", "@every 1m", h.URL)
			task.Overlap, task.Timeout = policy, "10m"
			start := t0()
			clk.Set(start.Truncate(time.Hour))
			putTask(t, r.Service, task)
			r.nudge()
			time.Sleep(20 * time.Millisecond)
			clk.Set(start.Truncate(time.Hour).Add(time.Minute)) // tick 1: blocks
			waitFor(t, "run 1 to start", func() bool { return len(h.snapshot()) == 1 })
			clk.Advance(time.Minute) // tick 2
			waitFor(t, "tick 2", func() bool { return len(runs(t, r.Service, "acme", "long")) == 2 })
			clk.Advance(time.Minute) // tick 3
			var rs []*schedulev1.Run
			switch policy {
			case "skip":
				waitFor(t, "ticks 2 and 3 skipped", func() bool {
					rs = runs(t, r.Service, "acme", "long")
					return len(rs) == 3 && rs[1].Status == statusSkipped && rs[2].Status == statusSkipped
				})
				if !strings.Contains(rs[1].Error, rs[0].Id) {
					t.Errorf("skipped run error = %q; want it to name run %s", rs[1].Error, rs[0].Id)
				}
			case "allow":
				waitFor(t, "ticks 2 and 3 to run beside run 1", func() bool {
					rs = runs(t, r.Service, "acme", "long")
					return len(h.snapshot()) == 3 && len(rs) == 3 && rs[1].Status == statusSucceeded && rs[2].Status == statusSucceeded
				})
				if rs[0].Status != statusRunning {
					t.Errorf("run 1 = %s; want still running", rs[0].Status)
				}
			case "buffer_one":
				waitFor(t, "tick 2 buffered and tick 3 skipped", func() bool {
					rs = runs(t, r.Service, "acme", "long")
					return len(rs) == 3 && rs[1].Status == statusBuffered && rs[2].Status == statusSkipped
				})
				if n := len(h.snapshot()); n != 1 {
					t.Errorf("calls while run 1 runs = %d; want 1", n)
				}
			}
			close(release)
			waitFor(t, "run 1 to end", func() bool { rs = runs(t, r.Service, "acme", "long"); return rs[0].Status == statusSucceeded })
			if policy == "buffer_one" {
				for i := 0; i < 5 && rs[1].Status == statusBuffered; i++ {
					clk.Advance(time.Second) // the buffered run polls each second
					time.Sleep(20 * time.Millisecond)
					rs = runs(t, r.Service, "acme", "long")
				}
				waitFor(t, "the buffered run", func() bool { rs = runs(t, r.Service, "acme", "long"); return rs[1].Status == statusSucceeded })
				if !fromMicros(rs[1].StartedAt).After(fromMicros(rs[0].EndedAt).Add(-time.Nanosecond)) {
					t.Errorf("buffered run started %v, before run 1 ended %v", fromMicros(rs[1].StartedAt), fromMicros(rs[0].EndedAt))
				}
				if len(h.snapshot()) != 2 {
					t.Errorf("calls = %d; want 2 (run 1 and the buffered run)", len(h.snapshot()))
				}
			}
			// Once free, the next tick runs normally under every policy.
			clk.Advance(time.Minute)
			waitFor(t, "tick 4", func() bool {
				rs = runs(t, r.Service, "acme", "long")
				return len(rs) == 4 && rs[3].Status == statusSucceeded
			})
		})
	}
}

// After downtime, run_once runs the latest missed tick once if it is
// within the window; skip runs nothing.
func TestCatchUpPolicies(t *testing.T) {
	for _, tc := range []struct {
		policy, window string
		want           int
	}{
		{"run_once", "3h", 1},
		{"run_once", "20m", 0}, // the latest missed tick is 30m old
		{"skip", "3h", 0},
	} {
		t.Run(tc.policy+"-"+tc.window, func(t *testing.T) {
			db := openDB(t, "sqlite")
			clk := NewFakeClock(t0())
			h := newHook(t, nil)
			a := startReplica(t, db, clk, "a", nil)
			task := httpTask("acme", "hourly", "@hourly", h.URL)
			task.CatchUp, task.CatchUpWindow = tc.policy, tc.window
			putTask(t, a.Service, task)
			a.stop() // every replica down...
			clk.Advance(2*time.Hour + 30*time.Minute)
			b := startReplica(t, db, clk, "b", nil) // ... then one comes back
			time.Sleep(50 * time.Millisecond)
			var rs []*schedulev1.Run
			if tc.want > 0 {
				waitFor(t, "the catch-up run", func() bool { rs = runs(t, b.Service, "acme", "hourly"); return len(rs) == 1 && finished(rs) })
				if rs[0].Trigger != "catch_up" || !fromMicros(rs[0].ScheduledAt).Equal(t0().Add(2*time.Hour)) {
					t.Errorf("run = %s for %v; want catch_up for the latest missed tick %v", rs[0].Trigger, fromMicros(rs[0].ScheduledAt), t0().Add(2*time.Hour))
				}
			}
			time.Sleep(50 * time.Millisecond)
			if rs = runs(t, b.Service, "acme", "hourly"); len(rs) != tc.want {
				t.Fatalf("runs after downtime = %d; want %d", len(rs), tc.want)
			}
			// Normal ticks resume.
			clk.Advance(30 * time.Minute)
			waitFor(t, "the next tick", func() bool {
				rs = runs(t, b.Service, "acme", "hourly")
				return len(rs) == tc.want+1 && finished(rs)
			})
			if rs[len(rs)-1].Trigger != "schedule" {
				t.Errorf("next run trigger = %s; want schedule", rs[len(rs)-1].Trigger)
			}
		})
	}
}

// A replica that dies mid-run leaves its run to another, which marks the
// attempt abandoned once the lease passes and retries it.
func TestAbandonedRunIsRetried(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			db := openDB(t, be)
			clk := NewFakeClock(t0())
			h := newHook(t, func(c call, w http.ResponseWriter) {
				if c.Attempt == 1 {
					time.Sleep(200 * time.Millisecond) // the replica dies meanwhile
				}
			})
			adb := &cutDB{DB: db}
			a := startReplica(t, adb, clk, "a", nil)
			task := httpTask("acme", "job", "@hourly", h.URL)
			task.Timeout, task.RetryBackoff = "20s", "2s"
			putTask(t, a.Service, task)
			clk.Advance(time.Hour)
			waitFor(t, "attempt 1 to reach the hook", func() bool { return len(h.snapshot()) == 1 })
			adb.cut.Store(true) // a crash: nothing more is written for the run
			a.stop()

			b := startReplica(t, db, clk, "b", nil)
			rs := runs(t, b.Service, "acme", "job")
			if rs[0].Status != statusRunning || rs[0].Replica != "a" {
				t.Fatalf("run after the crash = %s by %s; want running by a", rs[0].Status, rs[0].Replica)
			}
			// Lease: timeout 20s + grace 10s. Before it passes, nothing.
			for i := 0; i < 5; i++ {
				clk.Advance(5 * time.Second)
				time.Sleep(10 * time.Millisecond)
			}
			if rs = runs(t, b.Service, "acme", "job"); rs[0].Status != statusRunning {
				t.Fatalf("run 25s after start = %s; want still running (lease 30s)", rs[0].Status)
			}
			waitAdvancing(t, clk, time.Second, "b to retry the run", func() bool { rs = runs(t, b.Service, "acme", "job"); return rs[0].Status == statusSucceeded })
			run := rs[0]
			if run.Attempts != 2 || len(run.History) != 2 || run.History[0].Status != statusAbandoned || run.History[0].Replica != "a" ||
				run.History[1].Status != statusSucceeded || run.History[1].Replica != "b" {
				t.Errorf("run = %+v; want attempt 1 abandoned by a, attempt 2 succeeded by b", run)
			}
			if c := h.snapshot(); len(c) != 2 || c[1].Attempt != 2 {
				t.Errorf("hook calls = %+v; want attempt 1 then 2", c)
			}
		})
	}
}

func TestRunNowAndEnable(t *testing.T) {
	db := openDB(t, "sqlite")
	clk := NewFakeClock(t0())
	h := newHook(t, nil)
	r := startReplica(t, db, clk, "r0", nil)
	putTask(t, r.Service, httpTask("acme", "manual", "@daily", h.URL))
	ctx := context.Background()
	if _, err := r.SetEnabled(ctx, connect.NewRequest(&schedulev1.SetEnabledRequest{Ns: "acme", Name: "manual", Enabled: false})); err != nil {
		t.Fatal(err)
	}
	// Disabled: the day passes without a run.
	clk.Advance(25 * time.Hour)
	time.Sleep(50 * time.Millisecond)
	if rs := runs(t, r.Service, "acme", "manual"); len(rs) != 0 {
		t.Fatalf("runs of a disabled task = %d; want 0", len(rs))
	}
	// Run now works on a disabled task and returns the run's id.
	res, err := r.RunTask(ctx, connect.NewRequest(&schedulev1.RunTaskRequest{Ns: "acme", Name: "manual"}))
	if err != nil {
		t.Fatal(err)
	}
	id := res.Msg.Run.Id
	waitFor(t, "the manual run", func() bool {
		g, err := r.GetRun(ctx, connect.NewRequest(&schedulev1.GetRunRequest{Ns: "acme", Name: "manual", Id: id}))
		return err == nil && g.Msg.Run.Status == statusSucceeded && g.Msg.Run.Trigger == "manual"
	})
	// Enabled again: the next day's tick runs.
	if _, err := r.SetEnabled(ctx, connect.NewRequest(&schedulev1.SetEnabledRequest{Ns: "acme", Name: "manual", Enabled: true})); err != nil {
		t.Fatal(err)
	}
	// Move the clock an hour at a time; at each midnight give the engine
	// time to claim the tick. Sleeping and advancing in one step raced
	// the engine re-arming its timer after SetEnabled under -race: the
	// clock passed midnight first and the engine armed the next one.
	deadline := time.Now().Add(15 * time.Second)
	for len(runs(t, r.Service, "acme", "manual")) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the scheduled run")
		}
		clk.Advance(time.Hour)
		if clk.Now().Hour() == 0 {
			for end := time.Now().Add(2 * time.Second); time.Now().Before(end) && len(runs(t, r.Service, "acme", "manual")) < 2; {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	waitFor(t, "the scheduled run", func() bool { rs := runs(t, r.Service, "acme", "manual"); return len(rs) == 2 && finished(rs) })
	// Deleted: gone from GET, no more runs.
	if _, err := r.DeleteTask(ctx, connect.NewRequest(&schedulev1.DeleteTaskRequest{Ns: "acme", Name: "manual"})); err != nil {
		t.Fatal(err)
	}
	if _, err := r.GetTask(ctx, connect.NewRequest(&schedulev1.GetTaskRequest{Ns: "acme", Name: "manual"})); err == nil {
		t.Error("GetTask after delete = nil error; want not_found")
	}
	clk.Advance(24 * time.Hour)
	time.Sleep(50 * time.Millisecond)
	if n := len(h.snapshot()); n != 2 {
		t.Errorf("calls after delete = %d; want 2", n)
	}
}

// The engine fires a zoned task across both daylight-saving changes of
// New York on the fake clock: once per local day, the skipped 02:30 an
// hour late in spring, the repeated 01:30 once in autumn.
func TestDSTOnFakeClock(t *testing.T) {
	for _, tc := range []struct {
		spec, from string
		want       []string
	}{
		{"CRON_TZ=America/New_York 30 2 * * *", "2026-03-07T12:00:00Z", []string{"2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"}},
		{"CRON_TZ=America/New_York 30 1 * * *", "2026-10-31T12:00:00Z", []string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"}},
	} {
		t.Run(tc.from[:7], func(t *testing.T) {
			db := openDB(t, "sqlite")
			clk := NewFakeClock(mustTime(t, tc.from))
			h := newHook(t, nil)
			// The fake date is months from the db's real clock: keep runs
			// long enough not to expire, and let a tick run up to an hour
			// late since the clock moves an hour at a time.
			r := startReplica(t, db, clk, "r0", func(c *Config) { c.RunRetention = 20 * 365 * 24 * time.Hour; c.MisfireGrace = 2 * time.Hour })
			putTask(t, r.Service, httpTask("acme", "nightly", tc.spec, h.URL))
			sched, _ := ParseSchedule(tc.spec)
			next, want := sched.Next(clk.Now()), 0
			for i := 0; i < 72; i++ {
				clk.Advance(time.Hour)
				if !next.After(clk.Now()) {
					// This step passed a tick: let the replica claim it
					// before the next step.
					want++
					waitFor(t, "tick "+next.String(), func() bool {
						rs := runs(t, r.Service, "acme", "nightly")
						return len(rs) >= want && finished(rs)
					})
					next = sched.Next(next)
				}
			}
			waitFor(t, "the runs to end", func() bool { rs := runs(t, r.Service, "acme", "nightly"); return len(rs) >= 3 && finished(rs) })
			var got []string
			for _, run := range runs(t, r.Service, "acme", "nightly") {
				got = append(got, fromMicros(run.ScheduledAt).Format(time.RFC3339))
			}
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("runs at %v; want %v", got, tc.want)
			}
			if n := len(h.snapshot()); n != len(tc.want) {
				t.Errorf("calls = %d; want %d", n, len(tc.want))
			}
		})
	}
}

// A replica shut down mid-attempt hands its run over: another replica
// retries it at its next sweep rather than after the lease.
func TestShutdownHandsRunOver(t *testing.T) {
	db := openDB(t, "sqlite")
	clk := NewFakeClock(t0())
	h := newHook(t, func(c call, w http.ResponseWriter) {
		if c.Attempt == 1 {
			time.Sleep(300 * time.Millisecond)
		}
	})
	a := startReplica(t, db, clk, "a", nil)
	task := httpTask("acme", "job", "@hourly", h.URL)
	task.Timeout = "10m" // a lease far longer than a sweep
	putTask(t, a.Service, task)
	clk.Advance(time.Hour)
	waitFor(t, "attempt 1 to reach the hook", func() bool { return len(h.snapshot()) == 1 })
	a.stop() // SIGTERM: cancels the attempt and hands the run over
	rs := runs(t, a.Service, "acme", "job")
	if rs[0].Status != statusRetrying || len(rs[0].History) != 1 || !strings.Contains(rs[0].History[0].Error, "shut down") {
		t.Fatalf("run after shutdown = %s %+v; want retrying, attempt 1 abandoned by the shutdown", rs[0].Status, rs[0].History)
	}
	b := startReplica(t, db, clk, "b", nil)
	waitAdvancing(t, clk, time.Second, "b to run attempt 2", func() bool {
		rs = runs(t, b.Service, "acme", "job")
		return rs[0].Status == statusSucceeded
	})
	if elapsed := fromMicros(rs[0].History[1].StartedAt).Sub(fromMicros(rs[0].History[0].EndedAt)); elapsed > 10*time.Second {
		t.Errorf("attempt 2 started %v after the shutdown; want within a sweep or two (the lease was 10m)", elapsed)
	}
	if rs[0].Attempts != 2 || rs[0].History[1].Replica != "b" {
		t.Errorf("run = %+v; want attempt 2 by b", rs[0])
	}
}
