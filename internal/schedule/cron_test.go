package schedule

import (
	"strings"
	"testing"
	"time"
)

func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// ticks returns the first n scheduled times after from, in UTC RFC 3339.
func ticks(t *testing.T, spec, from string, n int) []string {
	t.Helper()
	s, err := ParseSchedule(spec)
	if err != nil {
		t.Fatalf("ParseSchedule(%q) = %v", spec, err)
	}
	tm := mustTime(t, from)
	var out []string
	for i := 0; i < n; i++ {
		tm = s.Next(tm)
		out = append(out, tm.UTC().Format(time.RFC3339))
	}
	return out
}

func TestScheduleNext(t *testing.T) {
	for _, tc := range []struct {
		spec, from string
		want       []string
	}{
		{"*/15 * * * *", "2026-11-27T10:07:00Z", []string{"2026-11-27T10:15:00Z", "2026-11-27T10:30:00Z", "2026-11-27T10:45:00Z"}},
		{"0 3 * * 1", "2026-11-27T10:07:00Z", []string{"2026-11-30T03:00:00Z", "2026-12-07T03:00:00Z", "2026-12-14T03:00:00Z"}},
		{"@hourly", "2026-11-27T10:07:00Z", []string{"2026-11-27T11:00:00Z", "2026-11-27T12:00:00Z", "2026-11-27T13:00:00Z"}},
		{"@daily", "2026-11-27T10:07:00Z", []string{"2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z", "2026-11-30T00:00:00Z"}},
		{"@weekly", "2026-11-27T10:07:00Z", []string{"2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z", "2026-12-13T00:00:00Z"}},
		// @every is anchored to the epoch: every replica gets the same ticks.
		{"@every 2s", "2026-11-27T10:07:01Z", []string{"2026-11-27T10:07:02Z", "2026-11-27T10:07:04Z", "2026-11-27T10:07:06Z"}},
		{"@every 30s", "2026-11-27T10:07:01Z", []string{"2026-11-27T10:07:30Z", "2026-11-27T10:08:00Z", "2026-11-27T10:08:30Z"}},
		{"@every 5m", "2026-11-27T10:07:01Z", []string{"2026-11-27T10:10:00Z", "2026-11-27T10:15:00Z", "2026-11-27T10:20:00Z"}},
		// UTC by default, whatever the host's zone; CRON_TZ per task.
		{"0 9 * * *", "2026-11-27T00:00:00Z", []string{"2026-11-27T09:00:00Z", "2026-11-28T09:00:00Z"}},
		{"CRON_TZ=Asia/Tokyo 0 9 * * *", "2026-11-27T00:00:00Z", []string{"2026-11-28T00:00:00Z", "2026-11-29T00:00:00Z"}},
		{"CRON_TZ=Europe/Paris @daily", "2026-11-27T00:00:00Z", []string{"2026-11-27T23:00:00Z", "2026-11-28T23:00:00Z"}},
	} {
		t.Run(tc.spec, func(t *testing.T) {
			got := ticks(t, tc.spec, tc.from, len(tc.want))
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("ticks of %q after %s = %v; want %v", tc.spec, tc.from, got, tc.want)
			}
		})
	}
}

func TestScheduleDST(t *testing.T) {
	for _, tc := range []struct {
		name, spec, from string
		want             []string
	}{
		// Spring forward in New York, 2026-03-08 02:00 EST -> 03:00 EDT:
		// 02:30 does not exist that day; the job runs once, at 03:30 EDT.
		{"skipped time runs after the change", "CRON_TZ=America/New_York 30 2 * * *", "2026-03-07T12:00:00Z",
			[]string{"2026-03-08T07:30:00Z", "2026-03-09T06:30:00Z", "2026-03-10T06:30:00Z"}},
		// Fall back, 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens
		// twice; the job runs once, at the first.
		{"repeated time runs once", "CRON_TZ=America/New_York 30 1 * * *", "2026-10-31T12:00:00Z",
			[]string{"2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z", "2026-11-03T06:30:00Z"}},
		{"times away from the change keep their wall time", "CRON_TZ=America/New_York 0 9 * * *", "2026-10-31T00:00:00Z",
			[]string{"2026-10-31T13:00:00Z", "2026-11-01T14:00:00Z", "2026-11-02T14:00:00Z"}},
		// Hourly jobs count real hours: both 01:00s run in autumn...
		{"hourly in autumn", "CRON_TZ=America/New_York 0 * * * *", "2026-11-01T04:30:00Z",
			[]string{"2026-11-01T05:00:00Z", "2026-11-01T06:00:00Z", "2026-11-01T07:00:00Z"}},
		// ... and the hour that does not exist is not invented in spring.
		{"hourly in spring", "CRON_TZ=America/New_York 0 * * * *", "2026-03-08T05:30:00Z",
			[]string{"2026-03-08T06:00:00Z", "2026-03-08T07:00:00Z", "2026-03-08T08:00:00Z"}},
		// Europe changes at 01:00 UTC: 2026-03-29 02:30 CET does not exist.
		{"Europe spring", "CRON_TZ=Europe/Berlin 30 2 * * *", "2026-03-28T12:00:00Z",
			[]string{"2026-03-29T01:30:00Z", "2026-03-30T00:30:00Z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ticks(t, tc.spec, tc.from, len(tc.want))
			if strings.Join(got, " ") != strings.Join(tc.want, " ") {
				t.Errorf("ticks of %q after %s = %v; want %v", tc.spec, tc.from, got, tc.want)
			}
		})
	}
	// A daily job runs exactly once on each local day of a whole year.
	s, err := ParseSchedule("CRON_TZ=America/New_York 30 2 * * *")
	if err != nil {
		t.Fatal(err)
	}
	ny, _ := time.LoadLocation("America/New_York")
	seen := map[string]int{}
	tm := mustTime(t, "2026-01-01T12:00:00Z")
	for tm.Year() < 2027 {
		tm = s.Next(tm)
		seen[tm.In(ny).Format("2006-01-02")]++
	}
	for d := time.Date(2026, 1, 2, 0, 0, 0, 0, ny); d.Year() == 2026; d = d.AddDate(0, 0, 1) {
		if n := seen[d.Format("2006-01-02")]; n != 1 {
			t.Errorf("runs on %s = %d; want 1", d.Format("2006-01-02"), n)
		}
	}
}

func TestParseScheduleErrors(t *testing.T) {
	for _, spec := range []string{"", "* * * *", "61 * * * *", "@sometimes", "@every 500ms", "@every -1s", "CRON_TZ=Mars/Olympus 0 * * * *", "0 0 30 2 *", "* * * * * *", strings.Repeat("1", 300)} {
		if _, err := ParseSchedule(spec); err == nil {
			t.Errorf("ParseSchedule(%q) = nil error; want one", spec)
		}
	}
}

func TestJitterIsSharedAndBounded(t *testing.T) {
	tick := mustTime(t, "2026-11-27T10:00:00Z")
	a := jitterFor("acme/nightly", tick, time.Minute)
	if b := jitterFor("acme/nightly", tick, time.Minute); a != b {
		t.Errorf("jitter differs between two calls (replicas): %v, %v", a, b)
	}
	spread := map[time.Duration]bool{}
	for i := 0; i < 50; i++ {
		j := jitterFor("acme/nightly", tick.Add(time.Duration(i)*time.Hour), time.Minute)
		if j < 0 || j >= time.Minute {
			t.Fatalf("jitter %v outside [0, 1m)", j)
		}
		spread[j] = true
	}
	if len(spread) < 40 {
		t.Errorf("jitter took %d distinct values over 50 ticks; want it spread", len(spread))
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"*/5 * * * *", "@hourly", "@every 2s", "CRON_TZ=Europe/Paris 0 9 * * 1-5", "0 0 30 2 *", "TZ=UTC @daily", "1-5/2 */3 1,15 * MON-FRI", "@every 1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := ParseSchedule(spec)
		if err != nil {
			return
		}
		from := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
		n := s.Next(from)
		if !n.IsZero() && !n.After(from) {
			t.Fatalf("Next(%v) of %q = %v; not after", from, spec, n)
		}
	})
}
