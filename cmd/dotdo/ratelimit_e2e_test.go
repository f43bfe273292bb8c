//go:build unix

package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/dotdo/dotdo/internal/testdb"
)

// The rate-limit tests count requests against the running binary: the exact
// allowance of a policy, the IETF RateLimit headers, per-key, per-IP and
// per-route budgets, login throttling, and one limit shared by two gateway
// replicas through Redis. Periods are an hour, so no budget refills while a
// test runs and every count is exact.
//
// Anonymous callers are limited per IP, and the harness's own /health polls
// come from 127.0.0.1; the tests that count anonymous requests send them
// from other loopback addresses (127.0.0.0/8 all reaches lo on Linux), each
// a fresh IP with a full budget.

// redisTestEnv names the Redis server of the shared-limit test.
const redisTestEnv = "DOTDO_TEST_REDIS_URL"

// rlClient is an HTTP client whose connections come from the local address
// ip, so the server sees that address as the caller's IP.
type rlClient struct {
	ip string
	c  *http.Client
}

func clientFrom(t *testing.T, ip string) *rlClient {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Skipf("cannot use loopback address %s on this system (%v); on macOS: sudo ifconfig lo0 alias %s", ip, err, ip)
	}
	ln.Close()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	tr := &http.Transport{Proxy: nil, DialContext: d.DialContext, MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &rlClient{ip: ip, c: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// do sends one request with token as the bearer (none when empty).
func (c *rlClient) do(t *testing.T, method, url, body, token string) *response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("new request %s %s: %v", method, url, err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := c.c.Do(req)
	if err != nil {
		t.Fatalf("%s %s from %s: %v", method, url, c.ip, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return &response{status: res.StatusCode, header: res.Header, body: b}
}

var (
	policyHeader = regexp.MustCompile(`^"([A-Za-z0-9._-]+)";q=(\d+);w=(\d+)$`)
	limitHeader  = regexp.MustCompile(`^"([A-Za-z0-9._-]+)";r=(\d+);t=(\d+)$`)
)

// rlWant is what the rate-limit headers of one response must say. The t
// parameter and Retry-After count down as time passes, so they are given as
// their value at the start of the burst (tFull, retryFull) and checked
// against the time measured since: each must lie between its value at the
// start, rounded up, and its value now, rounded up.
type rlWant struct {
	name      string // "" accepts any name but "default" or "anonymous"
	q, w, r   int
	tFull     float64 // seconds
	retryFull float64 // seconds; 0 when the request must be allowed
	status    int
	elapsed   time.Duration // since the burst began
}

// checkRateHeaders checks r against want and returns the policy name.
func checkRateHeaders(t *testing.T, where string, r *response, want rlWant) string {
	t.Helper()
	if r.status != want.status {
		t.Fatalf("%s = %d; want %d\n%s", where, r.status, want.status, r.body)
	}
	pol, lim := r.header.Get("RateLimit-Policy"), r.header.Get("RateLimit")
	pm, lm := policyHeader.FindStringSubmatch(pol), limitHeader.FindStringSubmatch(lim)
	if pm == nil || lm == nil {
		t.Fatalf("%s: RateLimit-Policy %q, RateLimit %q; want \"name\";q=N;w=S and \"name\";r=N;t=S", where, pol, lim)
	}
	name := pm[1]
	if lm[1] != name {
		t.Errorf("%s: RateLimit names policy %q, RateLimit-Policy %q; want the same", where, lm[1], name)
	}
	switch {
	case want.name != "" && name != want.name:
		t.Errorf("%s: policy %q; want %q", where, name, want.name)
	case want.name == "" && (name == "default" || name == "anonymous"):
		t.Errorf("%s: policy %q; want the route's own policy", where, name)
	}
	num := func(s string) int { n, _ := strconv.Atoi(s); return n }
	if q, w := num(pm[2]), num(pm[3]); q != want.q || w != want.w {
		t.Errorf("%s: RateLimit-Policy %q; want q=%d;w=%d", where, pol, want.q, want.w)
	}
	if got := num(lm[2]); got != want.r {
		t.Errorf("%s: RateLimit %q; want r=%d", where, lim, want.r)
	}
	elapsed := want.elapsed.Seconds()
	inRange := func(got int, full float64) bool {
		return got <= int(math.Ceil(full)) && got >= int(math.Ceil(full-elapsed))
	}
	if got := num(lm[3]); !inRange(got, want.tFull) {
		t.Errorf("%s: RateLimit %q; want t between %.0f and %.0f (%.0f s less the %v since the burst began, rounded up)",
			where, lim, math.Ceil(want.tFull-elapsed), math.Ceil(want.tFull), want.tFull, want.elapsed)
	}
	ra := r.header.Get("Retry-After")
	if want.retryFull == 0 {
		if ra != "" {
			t.Errorf("%s: Retry-After %q on an allowed request; want none", where, ra)
		}
		return name
	}
	if got, err := strconv.Atoi(ra); err != nil || !inRange(got, want.retryFull) {
		t.Errorf("%s: Retry-After %q; want whole seconds between %.0f and %.0f", where, ra, math.Ceil(want.retryFull-elapsed), math.Ceil(want.retryFull))
	}
	if c := errCode(t, r); c != "rate_limited" {
		t.Errorf("%s: error code %q; want rate_limited\n%s", where, c, r.body)
	}
	return name
}

// rateBurst sends limit+2 requests with one credential and checks that exactly
// limit succeed, each with the right headers, then two are refused.
func rateBurst(t *testing.T, c *rlClient, method, url, token, name string, limit, periodSec int) string {
	t.Helper()
	interval := float64(periodSec) / float64(limit)
	start := time.Now()
	var got string
	for i := 1; i <= limit+2; i++ {
		r := c.do(t, method, url, "", token)
		want := rlWant{name: name, q: limit, w: periodSec, status: 200, elapsed: time.Since(start)}
		if i <= limit {
			want.r, want.tFull = limit-i, interval*float64(i)
		} else {
			want.status, want.tFull, want.retryFull = 429, float64(periodSec), interval
		}
		got = checkRateHeaders(t, fmt.Sprintf("%s %s request %d of a %d/%ds policy", method, url, i, limit, periodSec), r, want)
	}
	return got
}

// TestRateLimit checks the allowance and headers of the per-key, per-IP
// and per-route policies, and login throttling, on every backend (the
// limiter does not touch the database, but the keys it limits live there).
func TestRateLimit(t *testing.T) {
	t.Parallel()
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			p := startAllInOne(t, newBackend(t, be), "--rate-limit", "5/1h", "--rate-limit-anon", "3/1h",
				"--rate-limit-routes", "GET /v1/auth/me=2/1h")
			a := &authEnv{url: p.url, secrets: newSecretSet()}
			// The admin key has five requests an hour too: four keys and
			// one user use them all.
			_, keyA := a.createKey(t, `{"name":"a","role":"user","namespaces":["rl"]}`)
			_, keyB := a.createKey(t, `{"name":"b","role":"user","namespaces":["rl"]}`)
			_, keyC := a.createKey(t, `{"name":"c","role":"user","namespaces":["rl"]}`)
			const email, password = "throttled@example.com", "the right password"
			a.createUser(t, email, password, `{"rl":{"roles":["user"]}}`)
			local := clientFrom(t, "127.0.0.1")
			list := p.url + "/v1/things/rl?limit=1"

			t.Run("per key", func(t *testing.T) {
				rateBurst(t, local, "GET", list, keyA, "default", 5, 3600)
				// Another key has its own budget.
				rateBurst(t, local, "GET", list, keyB, "default", 5, 3600)
			})

			t.Run("per route", func(t *testing.T) {
				// keyA spent its default budget above; the route's policy
				// is a budget of its own.
				me := p.url + "/v1/auth/me"
				route := rateBurst(t, local, "GET", me, keyA, "", 2, 3600)
				// keyC spends its whole route budget, and still has the
				// whole default one: the override applies to its route only.
				rateBurst(t, local, "GET", me, keyC, route, 2, 3600)
				r := local.do(t, "GET", list, "", keyC)
				checkRateHeaders(t, "GET "+list+" after the route's budget is spent", r, rlWant{name: "default", q: 5, w: 3600, r: 4, tFull: 720, status: 200})
			})

			t.Run("anonymous per IP", func(t *testing.T) {
				jwks := p.url + "/.well-known/jwks.json"
				rateBurst(t, clientFrom(t, "127.0.0.2"), "GET", jwks, "", "anonymous", 3, 3600)
				// Another address has a budget of its own...
				c3 := clientFrom(t, "127.0.0.3")
				r := c3.do(t, "GET", jwks, "", "")
				checkRateHeaders(t, "GET "+jwks+" from another IP", r, rlWant{name: "anonymous", q: 3, w: 3600, r: 2, tFull: 1200, status: 200})
				// ...and a key used from the spent address is not anonymous.
				_, keyD := a.createKey(t, `{"name":"d","role":"user","namespaces":["rl"]}`)
				r = clientFrom(t, "127.0.0.2").do(t, "GET", list, "", keyD)
				checkRateHeaders(t, "GET "+list+" with a key from a spent IP", r, rlWant{name: "default", q: 5, w: 3600, r: 4, tFull: 720, status: 200})
			})

			t.Run("signed webhooks have their own budget", func(t *testing.T) {
				// Providers deliver from a few addresses and GitHub does not
				// retry a refused delivery: past the anonymous budget of an
				// address, its webhook deliveries still reach verification.
				c := clientFrom(t, "127.0.0.5")
				jwks := p.url + "/.well-known/jwks.json"
				rateBurst(t, c, "GET", jwks, "", "anonymous", 3, 3600)
				for i := 0; i < 5; i++ {
					r := c.do(t, "POST", p.url+"/webhooks/github", `{"zen":"hi"}`, "")
					// No GitHub secret is configured: verification refuses
					// every delivery with 503.
					if r.status != 503 {
						t.Fatalf("unsigned delivery %d from a spent address = %d %s; want 503 from verification (no secret), not 429 from the rate limit", i, r.status, r.body)
					}
					if pol := r.header.Get("RateLimit-Policy"); pol != `"webhooks";q=60000;w=60` {
						t.Fatalf("RateLimit-Policy of a webhook delivery = %q; want the webhooks policy, 60000 a minute", pol)
					}
				}
			})

			t.Run("login throttled per account", func(t *testing.T) {
				// Each attempt from an address of its own: rotating IPs
				// does not lift the per-account limit of 10 in 15 minutes.
				login := p.url + "/v1/auth/login"
				bad := fmt.Sprintf(`{"email":%q,"password":"a wrong guess"}`, email)
				for i := 1; i <= 10; i++ {
					r := clientFrom(t, fmt.Sprintf("127.0.1.%d", i)).do(t, "POST", login, bad, "")
					if r.status != 401 || errCode(t, r) != "unauthenticated" {
						t.Fatalf("bad login %d = %d %s; want 401 unauthenticated", i, r.status, r.body)
					}
				}
				for i, body := range []string{bad, fmt.Sprintf(`{"email":%q,"password":%q}`, strings.ToUpper(email), password)} {
					r := clientFrom(t, fmt.Sprintf("127.0.1.%d", 11+i)).do(t, "POST", login, body, "")
					ra, err := strconv.Atoi(r.header.Get("Retry-After"))
					if r.status != 429 || errCode(t, r) != "rate_limited" || err != nil || ra < 1 || ra > 15*60 {
						t.Errorf("login %d for the account = %d, Retry-After %q, %s; want 429 rate_limited with Retry-After of 1 to 900 s",
							11+i, r.status, r.header.Get("Retry-After"), r.body)
					}
					if strings.Contains(string(r.body), "accessToken") {
						t.Errorf("a throttled login issued tokens: %s", r.body)
					}
				}
				// Another account is not throttled by the first one's.
				r := clientFrom(t, "127.0.1.13").do(t, "POST", login, `{"email":"someone-else@example.com","password":"a wrong guess"}`, "")
				if r.status != 401 {
					t.Errorf("bad login for another account = %d %s; want 401", r.status, r.body)
				}
			})
		})
	}
}

// TestRateLimitRedis runs two gateway replicas sharing one Redis and sends
// requests to them in turn with one key: together they allow exactly the
// limit. It needs DOTDO_TEST_REDIS_URL; set with an unreachable server, it
// fails.
func TestRateLimitRedis(t *testing.T) {
	t.Parallel()
	url := os.Getenv(redisTestEnv)
	if url == "" {
		t.Skip(redisTestEnv + " is not set; the shared rate-limit test needs a real Redis")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatalf("%s=%q: %v", redisTestEnv, url, err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { rdb.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s is set but Redis is unreachable: %v", redisTestEnv, err)
	}

	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			const limit = 7
			db := startDB(t, newBackend(t, be))
			flags := []string{"--redis-url", url, "--rate-limit", fmt.Sprintf("%d/1h", limit)}
			gws := []*proc{startGateway(t, db.url, flags...), startGateway(t, db.url, flags...)}
			a := &authEnv{url: gws[0].url, secrets: newSecretSet()}
			// The limiter keys buckets by API key id, which is new in
			// every run, so runs and backends never share a bucket.
			id, secret := a.createKey(t, `{"name":"shared","role":"user","namespaces":["rl"]}`)
			bucket := "dotdo:rl:default:api_key:" + id
			r := do(t, "GET", a.url+"/v1/auth/me", nil)
			adminBucket := "dotdo:rl:default:api_key:" + strAt(r.json(t), "identity.subject")
			t.Cleanup(func() { rdb.Del(context.Background(), bucket, adminBucket) })

			local := clientFrom(t, "127.0.0.1")
			allowed := []int{0, 0}
			start := time.Now()
			for i := 1; i <= 2*limit; i++ {
				g := i % 2
				path := gws[g].url + "/v1/things/rl?limit=1"
				r := local.do(t, "GET", path, "", secret)
				want := rlWant{name: "default", q: limit, w: 3600, status: 200, elapsed: time.Since(start)}
				if i <= limit {
					want.r, want.tFull = limit-i, 3600.0/limit*float64(i)
					allowed[g]++
				} else {
					want.status, want.tFull, want.retryFull = 429, 3600, 3600.0/limit
				}
				checkRateHeaders(t, fmt.Sprintf("request %d, to gateway %d", i, g), r, want)
			}
			if allowed[0] == 0 || allowed[1] == 0 {
				t.Errorf("allowed per gateway = %v; want both to have served some", allowed)
			}
			ttl, err := rdb.PTTL(context.Background(), bucket).Result()
			if err != nil || ttl <= 0 {
				t.Errorf("Redis key %s: PTTL %v, %v; want the shared bucket to exist with an expiry", bucket, ttl, err)
			}
		})
	}
}
