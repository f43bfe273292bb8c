package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// redisEnv names the Redis server the tests use. When it is set the tests
// must reach the server: an unreachable one fails them, never skips them.
const redisEnv = "DOTDO_TEST_REDIS_URL"

// newRedisClient connects to the server named by redisEnv, as one gateway
// replica would: every call returns a separate client with its own pool.
func newRedisClient(tb testing.TB) *redis.Client {
	tb.Helper()
	url := os.Getenv(redisEnv)
	if url == "" {
		tb.Skip(redisEnv + " is not set; the Redis limiter tests need a real Redis")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		tb.Fatalf("%s=%q: %v", redisEnv, url, err)
	}
	c := redis.NewClient(opt)
	tb.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		tb.Fatalf("%s is set but Redis is unreachable: %v", redisEnv, err)
	}
	return c
}

// testPrefix returns a key prefix of the test's own and deletes every key
// under it when the test ends.
func testPrefix(tb testing.TB, c *redis.Client) string {
	tb.Helper()
	b := make([]byte, 8)
	rand.Read(b)
	prefix := "dotdo-test:ratelimit:" + hex.EncodeToString(b) + ":"
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys := redisKeys(tb, ctx, c, prefix)
		if len(keys) > 0 {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				tb.Errorf("delete test keys: %v", err)
			}
		}
	})
	return prefix
}

func redisKeys(tb testing.TB, ctx context.Context, c *redis.Client, prefix string) []string {
	tb.Helper()
	var keys []string
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		tb.Errorf("scan %s*: %v", prefix, err)
	}
	return keys
}

// Redis has its own clock, so these tests use real time and assert counts,
// never how long anything took. Periods are long enough that no refill can
// happen between requests the test expects to be refused.
func TestRedisExactAllowance(t *testing.T) {
	c := newRedisClient(t)
	r := NewRedis(c, testPrefix(t, c))
	p := Policy{Name: "default", Limit: 5, Period: time.Minute, Burst: 5}

	for i := range 5 {
		d := allowT(t, r, "alice", p)
		if !d.Allowed || d.Limit != 5 || d.Remaining != 4-i || d.RetryAfter != 0 {
			t.Fatalf("request %d: Allow = %+v; want allowed, Limit 5, Remaining %d, RetryAfter 0", i+1, d, 4-i)
		}
		// Reset is the time until the bucket is full again: i+1 slots of 12s.
		if max := time.Duration(i+1) * 12 * time.Second; d.Reset <= max-12*time.Second || d.Reset > max {
			t.Errorf("request %d: Reset = %s; want in (%s, %s]", i+1, d.Reset, max-12*time.Second, max)
		}
	}
	for i := range 3 {
		d := allowT(t, r, "alice", p)
		if d.Allowed || d.Remaining != 0 {
			t.Fatalf("request %d: Allow = %+v; want denied with Remaining 0", 6+i, d)
		}
		if d.RetryAfter <= 0 || d.RetryAfter > 12*time.Second {
			t.Errorf("request %d: RetryAfter = %s; want in (0, 12s]", 6+i, d.RetryAfter)
		}
	}
}

// After waiting RetryAfter (at most Period/Limit), exactly one more request
// is allowed.
func TestRedisRefill(t *testing.T) {
	c := newRedisClient(t)
	r := NewRedis(c, testPrefix(t, c))
	p := Policy{Name: "default", Limit: 5, Period: 5 * time.Second} // one per second

	allowed := 0
	for range 8 {
		if allowT(t, r, "alice", p).Allowed {
			allowed++
		}
	}
	if allowed != 5 {
		t.Fatalf("%d of 8 requests allowed; want 5", allowed)
	}
	d := allowT(t, r, "alice", p)
	if d.Allowed || d.RetryAfter <= 0 || d.RetryAfter > time.Second {
		t.Fatalf("after the burst: Allow = %+v; want denied with RetryAfter in (0, 1s]", d)
	}
	time.Sleep(d.RetryAfter + 50*time.Millisecond)
	if d := allowT(t, r, "alice", p); !d.Allowed || d.Remaining != 0 {
		t.Fatalf("after waiting RetryAfter: Allow = %+v; want allowed with Remaining 0", d)
	}
	if d := allowT(t, r, "alice", p); d.Allowed {
		t.Fatalf("right after the refilled request: Allow = %+v; want denied", d)
	}
}

// Two gateway replicas (two clients, two limiters) sharing a prefix enforce
// one limit between them.
func TestRedisReplicasShareOneLimit(t *testing.T) {
	c1, c2 := newRedisClient(t), newRedisClient(t)
	prefix := testPrefix(t, c1)
	replicas := []*Redis{NewRedis(c1, prefix), NewRedis(c2, prefix)}

	t.Run("alternating", func(t *testing.T) {
		p := Policy{Name: "alternating", Limit: 5, Period: time.Minute}
		allowed := [2]int{}
		for i := range 20 {
			if allowT(t, replicas[i%2], "alice", p).Allowed {
				allowed[i%2]++
			}
		}
		if allowed != [2]int{3, 2} {
			t.Errorf("allowed per replica = %v; want [3 2] (5 in all, in turn)", allowed)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		p := Policy{Name: "concurrent", Limit: 10, Period: time.Minute, Burst: 10}
		var allowed atomic.Int64
		var wg sync.WaitGroup
		for _, r := range replicas {
			for range 20 {
				wg.Go(func() {
					for range 3 {
						d, err := r.Allow(t.Context(), "alice", p)
						if err != nil {
							t.Errorf("Allow: %v", err)
							return
						}
						if d.Allowed {
							allowed.Add(1)
						}
					}
				})
			}
		}
		wg.Wait()
		if got := allowed.Load(); got != 10 {
			t.Errorf("2 replicas × 20 goroutines × 3 requests: %d allowed; want the burst, 10", got)
		}
	})
}

func TestRedisKeysAndPoliciesAreIndependent(t *testing.T) {
	c := newRedisClient(t)
	prefix := testPrefix(t, c)
	r := NewRedis(c, prefix)
	p := Policy{Name: "default", Limit: 2, Period: time.Minute}
	login := Policy{Name: "login", Limit: 2, Period: time.Minute}

	for range 2 {
		allowT(t, r, "alice", p)
	}
	if d := allowT(t, r, "alice", p); d.Allowed {
		t.Fatalf("alice's third request: Allow = %+v; want denied", d)
	}
	if d := allowT(t, r, "bob", p); !d.Allowed || d.Remaining != 1 {
		t.Errorf("bob after alice used her quota: Allow = %+v; want allowed with Remaining 1", d)
	}
	if d := allowT(t, r, "alice", login); !d.Allowed || d.Remaining != 1 {
		t.Errorf("alice under another policy: Allow = %+v; want allowed with Remaining 1", d)
	}
	// A limiter with another prefix (another deployment) shares nothing.
	other := NewRedis(c, testPrefix(t, c))
	if d := allowT(t, other, "alice", p); !d.Allowed || d.Remaining != 1 {
		t.Errorf("alice under another prefix: Allow = %+v; want allowed with Remaining 1", d)
	}
}

// Each bucket is one key under the prefix, expiring when the bucket is full
// again, so idle callers leave nothing behind.
func TestRedisKeyLayoutAndTTL(t *testing.T) {
	c := newRedisClient(t)
	prefix := testPrefix(t, c)
	r := NewRedis(c, prefix)
	p := Policy{Name: "default", Limit: 5, Period: time.Minute}

	allowT(t, r, "key_123", p)
	keys := redisKeys(t, t.Context(), c, prefix)
	want := prefix + "default:key_123"
	if len(keys) != 1 || keys[0] != want {
		t.Fatalf("keys under the prefix = %q; want [%q]", keys, want)
	}
	ttl, err := c.PTTL(t.Context(), want).Result()
	if err != nil {
		t.Fatalf("PTTL %s: %v", want, err)
	}
	// One request's worth of refill: Period/Limit = 12s.
	if ttl <= 0 || ttl > 12*time.Second {
		t.Errorf("PTTL %s = %s; want in (0, 12s]", want, ttl)
	}
}

// EVALSHA falls back to EVAL when Redis has lost the script (a restart, a
// failover, SCRIPT FLUSH), and the bucket's state survives.
func TestRedisScriptFlushed(t *testing.T) {
	c := newRedisClient(t)
	r := NewRedis(c, testPrefix(t, c))
	p := Policy{Name: "default", Limit: 2, Period: time.Minute}

	allowT(t, r, "alice", p)
	if err := c.ScriptFlush(t.Context()).Err(); err != nil {
		t.Fatalf("SCRIPT FLUSH: %v", err)
	}
	if d := allowT(t, r, "alice", p); !d.Allowed || d.Remaining != 0 {
		t.Errorf("after SCRIPT FLUSH: Allow = %+v; want allowed with Remaining 0", d)
	}
	if d := allowT(t, r, "alice", p); d.Allowed {
		t.Errorf("third request: Allow = %+v; want denied", d)
	}
}

// With Redis unreachable, Allow reports an error, not a decision, so the
// caller can choose to fail open or closed. Needs no Redis server.
func TestRedisUnreachable(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	r := NewRedis(c, "unreachable:")
	d, err := r.Allow(t.Context(), "alice", Policy{Name: "default", Limit: 5, Period: time.Minute})
	if err == nil {
		t.Fatalf("Allow with Redis down = %+v, nil; want an error", d)
	}
	if errors.Is(err, ErrInvalidPolicy) {
		t.Errorf("Allow with Redis down error = %v; want a connection error, not ErrInvalidPolicy", err)
	}
	if d != (Decision{}) {
		t.Errorf("Allow with Redis down = %+v; want the zero Decision", d)
	}
}
