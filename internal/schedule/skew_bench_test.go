package schedule

import (
	"fmt"
	"sort"
	"testing"
	"time"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/testdb"
)

// BenchmarkFireSkew measures, on the real clock, how late runs start:
// the start of attempt 1 (after the claim write and the overlap lock)
// minus the scheduled time, over 200 runs of 10 @every 1s tasks whose
// HTTP actions call a local server, with 3 replicas racing to claim
// every tick on one store. It ignores b.N: run it with -benchtime 1x.
func BenchmarkFireSkew(b *testing.B) {
	for _, be := range testdb.Backends() {
		b.Run(be, func(b *testing.B) {
			db := openDBb(b, be)
			h := newHookB(b)
			var reps []*replica
			for i := 0; i < 3; i++ {
				reps = append(reps, startReplicaB(b, db, fmt.Sprintf("r%d", i)))
			}
			const tasks, want = 10, 200
			for i := 0; i < tasks; i++ {
				putTaskB(b, reps[0].Service, httpTask("bench", fmt.Sprintf("t%d", i), "@every 1s", h.URL))
			}
			for _, r := range reps {
				r.nudge()
			}
			b.ResetTimer()
			deadline := time.Now().Add(2 * time.Minute)
			var all []*schedulev1.Run
			for {
				all = all[:0]
				for i := 0; i < tasks; i++ {
					all = append(all, runsB(b, reps[0].Service, "bench", fmt.Sprintf("t%d", i))...)
				}
				done := 0
				for _, r := range all {
					if r.Status == statusSucceeded {
						done++
					}
				}
				if done >= want+2*tasks {
					break
				}
				if time.Now().After(deadline) {
					b.Fatalf("only %d runs after 2 minutes", done)
				}
				time.Sleep(500 * time.Millisecond)
			}
			b.StopTimer()
			sort.Slice(all, func(i, j int) bool { return all[i].ScheduledAt < all[j].ScheduledAt })
			var skews []time.Duration
			skipped := 0
			for _, r := range all {
				if r.Status != statusSucceeded {
					skipped++
					continue
				}
				if len(skews) < want && len(r.History) > 0 {
					skews = append(skews, fromMicros(r.History[0].StartedAt).Sub(fromMicros(r.ScheduledAt)))
				}
			}
			sort.Slice(skews, func(i, j int) bool { return skews[i] < skews[j] })
			p := func(q float64) time.Duration { return skews[int(q*float64(len(skews)-1))] }
			b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
			b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
			b.ReportMetric(float64(skews[len(skews)-1].Microseconds())/1000, "max-ms")
			b.Logf("%s: %d runs, fire skew p50 %v p99 %v max %v; %d runs not succeeded (of %d)", be, len(skews), p(0.5), p(0.99), skews[len(skews)-1], skipped, len(all))
		})
	}
}
