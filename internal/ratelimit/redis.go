package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// gcraScript is the GCRA step of decide, run atomically in Redis. Times are
// integer microseconds: Redis's Lua numbers are float64, exact up to 2^53,
// and TIME in microseconds stays far below that (Policy.Validate caps the
// tolerance at 100 years for the same reason).
//
// KEYS[1]: the bucket. ARGV[1]: emission interval. ARGV[2]: tolerance
// (Burst × interval). Returns {allowed, remaining, retry after, reset}.
//
// The key expires when its TAT passes, the moment it stops carrying state, so
// idle callers cost Redis nothing.
var gcraScript = redis.NewScript(`
-- TIME before a write needs effects replication, the default since Redis 5.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if now < allow_at then
  return {0, 0, allow_at - now, tat - now}
end
local reset = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(reset / 1000))
return {1, math.floor((now - allow_at) / interval), 0, reset}
`)

// Redis is a Limiter whose state lives in Redis, so that every gateway
// replica using the same server and prefix enforces one limit together. It is
// safe for concurrent use.
type Redis struct {
	client redis.UniversalClient
	prefix string
}

var _ Limiter = (*Redis)(nil)

// NewRedis returns a limiter that keeps each bucket in the Redis key
// prefix + policy name + ":" + key (for example "dotdo:rl:default:key_123"),
// with a TTL of the time until the bucket is full again.
//
// There is no clock parameter: the script reads Redis's clock, the one clock
// every replica shares. Allow sends EVALSHA and falls back to EVAL when the
// server does not have the script cached (after a restart or SCRIPT FLUSH).
func NewRedis(client redis.UniversalClient, prefix string) *Redis {
	return &Redis{client: client, prefix: prefix}
}

// Allow implements Limiter. Besides an invalid policy, it returns an error
// when Redis cannot be reached or ctx ends first: then nothing is known, and
// the caller decides whether to let the request through. Give ctx a short
// deadline so a stalled Redis cannot stall every request.
func (r *Redis) Allow(ctx context.Context, key string, p Policy) (Decision, error) {
	interval, tolerance, err := p.gcra()
	if err != nil {
		return Decision{}, err
	}
	res, err := gcraScript.Run(ctx, r.client, []string{r.prefix + p.Name + ":" + key},
		interval.Microseconds(), tolerance.Microseconds()).Int64Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("rate limit %q in redis: %w", p.Name, err)
	}
	if len(res) != 4 {
		return Decision{}, fmt.Errorf("rate limit %q in redis: script returned %d values, want 4", p.Name, len(res))
	}
	return Decision{
		Allowed:    res[0] == 1,
		Limit:      p.Limit,
		Remaining:  int(res[1]),
		RetryAfter: time.Duration(res[2]) * time.Microsecond,
		Reset:      time.Duration(res[3]) * time.Microsecond,
	}, nil
}
