package schedule

import (
	"fmt"
	"hash/fnv"
	"strings"
	"time"
	_ "time/tzdata" // CRON_TZ= zones work on hosts without a zoneinfo database

	"github.com/robfig/cron/v3"
)

// parser reads five-field expressions, descriptors (@hourly, @daily, ...)
// and @every <duration>, with an optional CRON_TZ= or TZ= prefix.
var parser = cron.NewParser(cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Schedule gives a task's scheduled times.
type Schedule interface {
	// Next returns the first scheduled time strictly after t.
	Next(t time.Time) time.Time
}

// ParseSchedule parses a task's schedule. Times are in UTC unless the spec
// starts with CRON_TZ=<zone>. An @every schedule is anchored to the Unix
// epoch (every 2s fires at even seconds), so that every replica computes
// the same scheduled times: robfig's own @every counts from whenever it is
// asked, which would give each replica its own ticks.
func ParseSchedule(spec string) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return nil, fmt.Errorf("schedule is empty; use a cron expression such as */5 * * * *, a descriptor such as @hourly, or @every 30s")
	}
	if len(spec) > 200 {
		return nil, fmt.Errorf("schedule is longer than 200 characters")
	}
	full := spec
	if !strings.HasPrefix(spec, "CRON_TZ=") && !strings.HasPrefix(spec, "TZ=") {
		full = "CRON_TZ=UTC " + spec
	}
	if rest, ok := strings.CutPrefix(strings.TrimSpace(full[strings.IndexByte(full, ' ')+1:]), "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("schedule %q: @every needs a whole number of seconds, at least 1s, such as @every 30s or @every 1h", spec)
		}
	}
	s, err := parser.Parse(full)
	if err != nil {
		return nil, fmt.Errorf("schedule %q: %v", spec, err)
	}
	switch s := s.(type) {
	case cron.ConstantDelaySchedule:
		if s.Delay < time.Second {
			return nil, fmt.Errorf("schedule %q: @every needs at least 1s", spec)
		}
		return every{s.Delay}, nil
	case *cron.SpecSchedule:
		// robfig returns the zero time when no time within five years
		// matches, such as 0 0 30 2 *.
		if s.Next(time.Unix(0, 0).UTC()).IsZero() && s.Next(time.Now()).IsZero() {
			return nil, fmt.Errorf("schedule %q never fires", spec)
		}
		if s.Location != time.UTC && s.Hour&(1<<24-1) != 1<<24-1 {
			utc := *s
			utc.Location = time.UTC
			return wall{utc: &utc, loc: s.Location}, nil
		}
		return s, nil
	}
	return s, nil
}

// wall is a schedule with fixed hours in a zone with daylight saving time:
// it counts in wall-clock time, as Vixie cron does, so a daily job runs
// once on each local day. A time skipped when clocks go forward (02:30 on
// the spring change in New York) runs at the same offset after the change
// (03:30); a time that happens twice when clocks go back (01:30 in
// autumn) runs only at its first occurrence. Schedules that fire every
// hour keep counting in real time, so they neither skip nor double an
// hour's runs beyond the hour that does not exist.
type wall struct {
	utc *cron.SpecSchedule // the same fields, read as UTC wall times
	loc *time.Location
}

func (w wall) Next(t time.Time) time.Time {
	lt := t.In(w.loc)
	cur := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), lt.Second(), lt.Nanosecond(), time.UTC)
	for i := 0; i < 1000; i++ {
		cur = w.utc.Next(cur)
		if cur.IsZero() {
			return cur
		}
		real := time.Date(cur.Year(), cur.Month(), cur.Day(), cur.Hour(), cur.Minute(), cur.Second(), 0, w.loc)
		if lr := real.In(w.loc); lr.Hour() != cur.Hour() || lr.Minute() != cur.Minute() {
			// The wall time falls in the gap of a spring change: run at
			// the same distance past the change, at the instant the wall
			// time has under the offset from before it.
			_, before := real.Add(-12 * time.Hour).Zone()
			_, after := real.Add(12 * time.Hour).Zone()
			a, b := cur.Add(-time.Duration(before)*time.Second), cur.Add(-time.Duration(after)*time.Second)
			real = a
			if b.After(a) {
				real = b
			}
		}
		if real.After(t) {
			return real.UTC()
		}
	}
	return time.Time{}
}

// every is an @every schedule anchored to the Unix epoch.
type every struct{ d time.Duration }

func (e every) Next(t time.Time) time.Time {
	n := t.UnixNano()
	d := int64(e.d)
	next := (n/d + 1) * d
	if n < 0 && n%d != 0 {
		next = (n / d) * d
	}
	return time.Unix(0, next).UTC()
}

// jitterFor returns the delay within [0, max) at which tick of task fires:
// a hash of both, so that every replica fires the tick at the same moment
// and the claim race stays short.
func jitterFor(key string, tick time.Time, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte(tick.UTC().Format(time.RFC3339Nano)))
	return time.Duration(h.Sum64() % uint64(max))
}
