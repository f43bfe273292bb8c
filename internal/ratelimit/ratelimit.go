// Package ratelimit decides whether a caller may make another request: GCRA in
// memory, or shared by every gateway replica through Redis.
//
// # Algorithm
//
// Both limiters implement the generic cell rate algorithm (GCRA). A Policy of
// Limit requests per Period has an emission interval T = Period/Limit
// (truncated to whole microseconds, so both backends compute the same thing)
// and a tolerance of Burst×T. For each (Policy.Name, key) the limiter keeps one
// number, the theoretical arrival time (TAT). A request at time now is allowed
// when max(TAT, now) + T - Burst×T <= now, and then TAT becomes max(TAT, now) + T.
// A fresh key may therefore make Burst requests at once and then one more
// every T; after Burst×T of silence (one Period when Burst is Limit) the full
// Burst is back. A denied request changes nothing. Once TAT has passed the key carries no state, which is what
// lets both backends forget it.
//
// State is kept per policy name and key: the same key limited by two policies
// (say "default" and "login") has two independent budgets.
//
// # Backends
//
// Memory keeps the TATs in a sharded map in the process: a decision takes well
// under a microsecond and memory is bounded by maxKeys (see NewMemory). Each
// gateway replica then limits on its own.
//
// Redis makes the same decision atomically inside Redis with a Lua script, so
// every replica that shares the Redis server and key prefix enforces one limit
// together. The script reads the time from Redis (TIME), so replicas whose
// clocks disagree still agree on the limit. When Redis cannot be reached the
// Redis limiter returns an error and no Decision; failing open (allow) or
// closed (answer 503) is the caller's choice.
//
// # Headers
//
// WriteHeaders sets the fields of the IETF draft "RateLimit header fields for
// HTTP" (draft-ietf-httpapi-ratelimit-headers-10/-11), in exactly this form:
//
//	RateLimit-Policy: "<name>";q=<Limit>;w=<Period in seconds, rounded up, at least 1>
//	RateLimit: "<name>";r=<Remaining>;t=<seconds until the full quota is back, rounded up>
//	Retry-After: <seconds until a retry can succeed, rounded up, at least 1>   (denied only)
//
// For example, Policy{Name: "default", Limit: 100, Period: time.Minute} after
// one request gives
//
//	RateLimit-Policy: "default";q=100;w=60
//	RateLimit: "default";r=99;t=1
//
// The policy name is a Structured Fields string, which is why it is quoted.
// Remaining counts down from Burst, so with a Burst larger than Limit the r
// parameter can exceed q.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// Limiter decides whether the caller identified by key may make another
// request under policy p.
type Limiter interface {
	// Allow records the request if it is allowed and reports the decision.
	// It returns an error wrapping ErrInvalidPolicy when p is invalid, and
	// any other error when the decision could not be made at all (for Redis:
	// the server is unreachable or the context ended); the Decision is then
	// the zero value and the caller chooses whether to fail open or closed.
	Allow(ctx context.Context, key string, p Policy) (Decision, error)
}

// ErrInvalidPolicy is wrapped by every error from Policy.Validate.
var ErrInvalidPolicy = errors.New("invalid rate-limit policy")

// maxNameLen bounds Policy.Name, which appears in every response header and
// in every Redis key.
const maxNameLen = 64

// maxTolerance bounds Burst×Period/Limit, keeping the Redis script's
// microsecond timestamps exact in Lua's float64 numbers for centuries.
const maxTolerance = 100 * 365 * 24 * time.Hour

// Policy is a limit of Limit requests per Period, with bursts of up to Burst
// requests.
type Policy struct {
	// Name identifies the policy in the RateLimit headers and keeps the state
	// of different policies apart. Letters, digits, '-', '_' and '.' only.
	Name string
	// Limit is the number of requests allowed per Period on average.
	Limit int
	// Period is the window Limit is measured over.
	Period time.Duration
	// Burst is the number of requests a caller that has been quiet long
	// enough (Burst×Period/Limit) may make at once. Zero means Limit.
	Burst int
}

// Validate reports what is wrong with p, in a message that says how to fix
// it. The error wraps ErrInvalidPolicy.
func (p Policy) Validate() error {
	_, _, err := p.gcra()
	return err
}

// gcra validates p and returns its GCRA emission interval and tolerance. The
// interval is truncated to whole microseconds, the unit the Redis script
// works in, so both backends decide alike. It runs on every decision, so the
// common case costs one division.
func (p Policy) gcra() (interval, tolerance time.Duration, err error) {
	if p.Name == "" {
		return 0, 0, policyErrorf(`rate-limit policy has no name; give it one such as "default" or "login" (it is shown in the RateLimit headers)`)
	}
	if len(p.Name) > maxNameLen {
		return 0, 0, policyErrorf("rate-limit policy %q: name is %d characters long; use at most %d", p.Name, len(p.Name), maxNameLen)
	}
	for i := 0; i < len(p.Name); i++ {
		if !nameChar(p.Name[i]) {
			return 0, 0, policyErrorf("rate-limit policy %q: name may contain only letters, digits, '-', '_' and '.' (it is shown in the RateLimit headers and used in Redis keys)", p.Name)
		}
	}
	if p.Limit < 1 {
		return 0, 0, policyErrorf("rate-limit policy %q: limit must be at least 1 request per period, got %d", p.Name, p.Limit)
	}
	if p.Period <= 0 {
		return 0, 0, policyErrorf("rate-limit policy %q: period must be positive, got %s", p.Name, p.Period)
	}
	if p.Burst < 0 {
		return 0, 0, policyErrorf("rate-limit policy %q: burst must not be negative, got %d (0 means the same as the limit)", p.Name, p.Burst)
	}
	interval = p.Period / time.Duration(p.Limit)
	interval -= interval % time.Microsecond
	if interval < time.Microsecond {
		return 0, 0, policyErrorf("rate-limit policy %q: %d requests per %s is more than one per microsecond; use a longer period or a smaller limit", p.Name, p.Limit, p.Period)
	}
	burst := p.Burst
	if burst == 0 {
		burst = p.Limit
	}
	if hi, lo := bits.Mul64(uint64(interval), uint64(burst)); hi != 0 || lo > uint64(maxTolerance) {
		return 0, 0, policyErrorf("rate-limit policy %q: a burst of %d requests, one every %s, takes more than 100 years to refill; use a smaller burst or period", p.Name, burst, interval)
	}
	tolerance = interval * time.Duration(burst)
	return interval, tolerance, nil
}

func nameChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.'
}

// policyError is an invalid-policy message that matches ErrInvalidPolicy
// without repeating its text.
type policyError struct{ msg string }

func (e *policyError) Error() string        { return e.msg }
func (e *policyError) Is(target error) bool { return target == ErrInvalidPolicy }

func policyErrorf(format string, args ...any) error {
	return &policyError{msg: fmt.Sprintf(format, args...)}
}

// Decision is the outcome of one Allow call.
type Decision struct {
	// Allowed reports whether the request may proceed.
	Allowed bool
	// Limit is the policy's Limit, the quota advertised in the headers.
	Limit int
	// Remaining is how many more requests would be allowed right now.
	Remaining int
	// Reset is the time until the full burst is available again.
	Reset time.Duration
	// RetryAfter is the time until the next request can be allowed; 0 when
	// this one was allowed.
	RetryAfter time.Duration
}

// decide runs one GCRA step for a policy of limit requests with the given
// emission interval and tolerance. now and tat are on the same arbitrary time
// axis; known reports whether tat was stored for this key. It returns the decision
// and the TAT to store when the request is allowed.
func decide(limit int, interval, tolerance, now, tat time.Duration, known bool) (Decision, time.Duration) {
	if !known || tat < now {
		tat = now
	}
	newTAT := tat + interval
	allowAt := newTAT - tolerance
	if now < allowAt {
		return Decision{
			Limit:      limit,
			Reset:      tat - now,
			RetryAfter: allowAt - now,
		}, tat
	}
	return Decision{
		Allowed:   true,
		Limit:     limit,
		Remaining: int((now - allowAt) / interval),
		Reset:     newTAT - now,
	}, newTAT
}
