package ratelimit

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand; safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// allowT calls l.Allow and fails the test on an error.
func allowT(t testing.TB, l Limiter, key string, p Policy) Decision {
	t.Helper()
	d, err := l.Allow(t.Context(), key, p)
	if err != nil {
		t.Fatalf("Allow(%q, %s) error: %v", key, p.Name, err)
	}
	return d
}

func TestMemoryExactAllowance(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 100)
	p := Policy{Name: "default", Limit: 5, Period: time.Minute, Burst: 5}

	for i := range 5 {
		d := allowT(t, m, "alice", p)
		want := Decision{Allowed: true, Limit: 5, Remaining: 4 - i, Reset: time.Duration(i+1) * 12 * time.Second}
		if d != want {
			t.Fatalf("request %d: Allow = %+v; want %+v", i+1, d, want)
		}
	}
	denied := Decision{Limit: 5, Reset: time.Minute, RetryAfter: 12 * time.Second}
	for i := range 3 { // denied requests consume nothing
		if d := allowT(t, m, "alice", p); d != denied {
			t.Fatalf("request %d: Allow = %+v; want %+v", 6+i, d, denied)
		}
	}

	clock.Advance(12*time.Second - time.Millisecond)
	if d := allowT(t, m, "alice", p); d.Allowed || d.RetryAfter != time.Millisecond {
		t.Fatalf("1ms before the next slot: Allow = %+v; want denied with RetryAfter 1ms", d)
	}

	clock.Advance(time.Millisecond) // exactly Period/Limit after the burst
	want := Decision{Allowed: true, Limit: 5, Remaining: 0, Reset: time.Minute}
	if d := allowT(t, m, "alice", p); d != want {
		t.Fatalf("Period/Limit later: Allow = %+v; want %+v", d, want)
	}
	if d := allowT(t, m, "alice", p); d != denied {
		t.Fatalf("right after the refilled slot: Allow = %+v; want %+v", d, denied)
	}

	clock.Advance(time.Hour) // a quiet caller gets exactly its burst back
	allowed := 0
	for range 20 {
		if allowT(t, m, "alice", p).Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Errorf("after an hour of silence, %d of 20 requests allowed; want 5", allowed)
	}
}

// Burst defaults to Limit; a larger Burst allows more at once but not a
// higher sustained rate.
func TestMemoryBurst(t *testing.T) {
	tests := []struct {
		name      string
		p         Policy
		wantBurst int
	}{
		{"default burst", Policy{Name: "a", Limit: 3, Period: 3 * time.Second}, 3},
		{"larger burst", Policy{Name: "a", Limit: 3, Period: 3 * time.Second, Burst: 10}, 10},
		{"smaller burst", Policy{Name: "a", Limit: 3, Period: 3 * time.Second, Burst: 1}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			m := NewMemory(clock.Now, 10)
			n := 0
			for allowT(t, m, "k", tc.p).Allowed {
				n++
			}
			if n != tc.wantBurst {
				t.Fatalf("burst allowed %d; want %d", n, tc.wantBurst)
			}
			// Then one per second (Period/Limit), whatever the burst.
			for sec := range 5 {
				clock.Advance(time.Second)
				if d := allowT(t, m, "k", tc.p); !d.Allowed {
					t.Fatalf("second %d after the burst: Allow = %+v; want allowed", sec+1, d)
				}
				if d := allowT(t, m, "k", tc.p); d.Allowed || d.RetryAfter != time.Second {
					t.Fatalf("second %d, again: Allow = %+v; want denied with RetryAfter 1s", sec+1, d)
				}
			}
		})
	}
}

func TestMemoryKeysAndPoliciesAreIndependent(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 100)
	p := Policy{Name: "default", Limit: 2, Period: time.Minute}
	login := Policy{Name: "login", Limit: 2, Period: time.Minute}

	for range 2 {
		allowT(t, m, "alice", p)
	}
	if d := allowT(t, m, "alice", p); d.Allowed {
		t.Fatalf("alice's third request: Allow = %+v; want denied", d)
	}
	if d := allowT(t, m, "bob", p); !d.Allowed || d.Remaining != 1 {
		t.Errorf("bob after alice used her quota: Allow = %+v; want allowed with Remaining 1", d)
	}
	if d := allowT(t, m, "alice", login); !d.Allowed || d.Remaining != 1 {
		t.Errorf("alice under another policy: Allow = %+v; want allowed with Remaining 1", d)
	}
}

func TestMemoryEvictionBound(t *testing.T) {
	clock := newFakeClock()
	const maxKeys = 100
	m := NewMemory(clock.Now, maxKeys)
	p := Policy{Name: "default", Limit: 10, Period: time.Minute}

	const keys = 10_000
	for i := range keys {
		allowT(t, m, fmt.Sprintf("caller-%d", i), p)
		if n := m.Len(); n > maxKeys {
			t.Fatalf("after %d keys Len() = %d; want at most %d", i+1, n, maxKeys)
		}
	}
	// Every entry was live (its TAT in the future), so each key beyond the
	// bound cost one eviction.
	if got, want := m.Evictions(), uint64(keys-m.Len()); got != want {
		t.Errorf("Evictions() = %d; want %d (keys %d - Len %d)", got, want, keys, m.Len())
	}
}

// A key whose TAT has passed carries no state: dropping it is invisible and
// is not counted as an eviction, while dropping a live key is.
func TestMemoryEvictsExpiredFirst(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 1)
	p := Policy{Name: "default", Limit: 2, Period: time.Minute}

	allowT(t, m, "a", p)
	allowT(t, m, "a", p)                       // a has used its quota
	if d := allowT(t, m, "b", p); !d.Allowed { // evicts a, which is live
		t.Fatalf("b: Allow = %+v; want allowed", d)
	}
	if m.Evictions() != 1 || m.Len() != 1 {
		t.Fatalf("after evicting a live key: Evictions() = %d, Len() = %d; want 1, 1", m.Evictions(), m.Len())
	}

	clock.Advance(30 * time.Second) // b's TAT has passed
	allowT(t, m, "c", p)
	if m.Evictions() != 1 || m.Len() != 1 {
		t.Errorf("after replacing an expired key: Evictions() = %d, Len() = %d; want 1, 1", m.Evictions(), m.Len())
	}
}

func TestMemorySweep(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 1000)
	short := Policy{Name: "short", Limit: 1, Period: time.Second}
	long := Policy{Name: "long", Limit: 1, Period: time.Hour}
	for i := range 100 {
		allowT(t, m, fmt.Sprint(i), short)
		allowT(t, m, fmt.Sprint(i), long)
	}
	clock.Advance(time.Second)
	if n := m.Sweep(); n != 100 {
		t.Errorf("Sweep() = %d; want 100 (the expired short-policy keys)", n)
	}
	if n := m.Len(); n != 100 {
		t.Errorf("Len() after Sweep = %d; want 100", n)
	}
	// The long-policy keys kept their state.
	if d := allowT(t, m, "7", long); d.Allowed {
		t.Errorf("long-policy key after Sweep: Allow = %+v; want denied", d)
	}
}

// Concurrent callers of one key get exactly the burst between them; run
// with -race.
func TestMemoryConcurrent(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 100_000)
	p := Policy{Name: "default", Limit: 10, Period: time.Minute}

	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 50 {
				d, err := m.Allow(t.Context(), "shared", p)
				if err != nil {
					t.Errorf("Allow: %v", err)
					return
				}
				if d.Allowed {
					allowed.Add(1)
				}
				// Other keys at the same time, to exercise every shard.
				if _, err := m.Allow(t.Context(), fmt.Sprintf("g%d-%d", g, i), p); err != nil {
					t.Errorf("Allow: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := allowed.Load(); got != 10 {
		t.Errorf("16 goroutines × 50 requests on one key: %d allowed; want 10", got)
	}
	if n := m.Len(); n != 16*50+1 {
		t.Errorf("Len() = %d; want %d", n, 16*50+1)
	}
}

// With no clock given, the limiter uses time.Now.
func TestMemoryRealClock(t *testing.T) {
	m := NewMemory(nil, 10)
	p := Policy{Name: "default", Limit: 2, Period: time.Hour}
	allowT(t, m, "k", p)
	allowT(t, m, "k", p)
	if d := allowT(t, m, "k", p); d.Allowed {
		t.Errorf("third request within an hour: Allow = %+v; want denied", d)
	}
}
