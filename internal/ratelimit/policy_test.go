package ratelimit

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestPolicyValidate(t *testing.T) {
	valid := []Policy{
		{Name: "default", Limit: 100, Period: time.Minute},
		{Name: "login.per-ip_v2", Limit: 5, Period: time.Minute, Burst: 10},
		{Name: "x", Limit: 1, Period: time.Microsecond},
		{Name: "yearly", Limit: 1000, Period: 365 * 24 * time.Hour},
		{Name: strings.Repeat("a", 64), Limit: 1, Period: time.Second},
	}
	for _, p := range valid {
		if err := p.Validate(); err != nil {
			t.Errorf("%+v.Validate() = %v; want nil", p, err)
		}
	}

	tests := []struct {
		name string
		p    Policy
		want string // part of the message
	}{
		{"no name", Policy{Limit: 1, Period: time.Second}, "has no name"},
		{"long name", Policy{Name: strings.Repeat("a", 65), Limit: 1, Period: time.Second}, "at most 64"},
		{"quote in name", Policy{Name: `a"b`, Limit: 1, Period: time.Second}, "only letters, digits"},
		{"colon in name", Policy{Name: "a:b", Limit: 1, Period: time.Second}, "only letters, digits"},
		{"space in name", Policy{Name: "a b", Limit: 1, Period: time.Second}, "only letters, digits"},
		{"zero limit", Policy{Name: "a", Period: time.Second}, "limit must be at least 1"},
		{"negative limit", Policy{Name: "a", Limit: -1, Period: time.Second}, "limit must be at least 1"},
		{"zero period", Policy{Name: "a", Limit: 1}, "period must be positive"},
		{"negative period", Policy{Name: "a", Limit: 1, Period: -time.Second}, "period must be positive"},
		{"negative burst", Policy{Name: "a", Limit: 1, Period: time.Second, Burst: -1}, "burst must not be negative"},
		{"too fast", Policy{Name: "a", Limit: 1001, Period: time.Millisecond}, "more than one per microsecond"},
		{"huge burst", Policy{Name: "a", Limit: 1, Period: 24 * time.Hour, Burst: 1 << 20}, "100 years"},
		{"overflowing burst", Policy{Name: "a", Limit: 1, Period: 200 * 365 * 24 * time.Hour, Burst: 1 << 40}, "100 years"},
		{"century period", Policy{Name: "a", Limit: 1, Period: 101 * 365 * 24 * time.Hour}, "100 years"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Validate()
			if err == nil {
				t.Fatalf("%+v.Validate() = nil; want an error containing %q", tc.p, tc.want)
			}
			if !errors.Is(err, ErrInvalidPolicy) {
				t.Errorf("errors.Is(%v, ErrInvalidPolicy) = false; want true", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%+v.Validate() = %q; want it to contain %q", tc.p, err, tc.want)
			}
		})
	}
}

// Both limiters refuse an invalid policy instead of guessing.
func TestAllowInvalidPolicy(t *testing.T) {
	m := NewMemory(nil, 10)
	_, err := m.Allow(t.Context(), "k", Policy{Name: "a"})
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("Memory.Allow(invalid policy) error = %v; want ErrInvalidPolicy", err)
	}
	if m.Len() != 0 {
		t.Errorf("Memory.Len() after an invalid policy = %d; want 0", m.Len())
	}
	r := NewRedis(nil, "unused:") // never reaches the client
	_, err = r.Allow(t.Context(), "k", Policy{Name: "a"})
	if !errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("Redis.Allow(invalid policy) error = %v; want ErrInvalidPolicy", err)
	}
}
