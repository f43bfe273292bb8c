package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"github.com/redis/go-redis/v9"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/ratelimit"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/webhooks"
)

// secretKey returns the 32-byte key that seals signing keys at rest: from
// DOTDO_SECRET_KEY (64 hex characters or base64), or, on SQLite only,
// from <data-dir>/secret.key, created on first start with mode 0600.
func secretKey(cfg *config) ([]byte, error) {
	if v := cfg.SecretKey; v != "" {
		if b, err := hex.DecodeString(v); err == nil && len(b) == 32 {
			return b, nil
		}
		if b, err := base64.StdEncoding.DecodeString(v); err == nil && len(b) == 32 {
			return b, nil
		}
		return nil, errors.New("DOTDO_SECRET_KEY must be 32 bytes as 64 hex characters (generate one with: openssl rand -hex 32)")
	}
	if cfg.DatabaseURL != "" {
		return nil, errors.New("DOTDO_SECRET_KEY is required with PostgreSQL: it encrypts the token signing keys at rest; generate one with: openssl rand -hex 32, and give every auth replica the same")
	}
	if len(cfg.Services) > 0 && !cfg.has("db") {
		return nil, errors.New("DOTDO_SECRET_KEY is required when the auth service runs apart from the db service: every auth process must seal signing keys with the same key; generate one with: openssl rand -hex 32")
	}
	path := filepath.Join(cfg.DataDir, "secret.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) != 32 {
			return nil, fmt.Errorf("%s is not 64 hex characters; restore it from a backup (signing keys sealed with it cannot be read otherwise)", path)
		}
		return k, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, err
	}
	k := make([]byte, 32)
	rand.Read(k)
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write %s: %w", path, err)
	}
	return k, nil
}

// parseRoles reads custom roles: name=perm+perm,name=perm.
func parseRoles(s string) (map[string][]string, error) {
	out := map[string][]string{}
	if strings.TrimSpace(s) == "" {
		return out, nil
	}
	for _, def := range strings.Split(s, ",") {
		name, perms, ok := strings.Cut(strings.TrimSpace(def), "=")
		if !ok || name == "" || perms == "" {
			return nil, fmt.Errorf("role %q: want name=perm+perm, such as mailer=email:send+queue:send", def)
		}
		for _, p := range strings.Split(perms, "+") {
			if !auth.ValidPermission(p) {
				return nil, fmt.Errorf("role %s: %q is not resource:action such as things:read", name, p)
			}
			out[name] = append(out[name], p)
		}
	}
	return out, nil
}

// parsePolicy reads N/period, such as 600/1m, or "off".
func parsePolicy(name, s string) (*ratelimit.Policy, error) {
	if s == "off" {
		return nil, nil
	}
	n, per, ok := strings.Cut(s, "/")
	limit, err := strconv.Atoi(n)
	if !ok || err != nil || limit < 1 {
		return nil, fmt.Errorf("%q: want requests/period such as 600/1m, or off", s)
	}
	d, err := time.ParseDuration(per)
	if err != nil {
		if d, err = time.ParseDuration("1" + per); err != nil {
			return nil, fmt.Errorf("%q: want requests/period such as 600/1m, or off", s)
		}
	}
	p := ratelimit.Policy{Name: name, Limit: limit, Period: d}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// limits are the gateway's rate-limit policies.
type limits struct {
	limiter ratelimit.Limiter
	keyed   *ratelimit.Policy            // per API key or user
	anon    *ratelimit.Policy            // per IP, for callers without credentials
	routes  map[string]*ratelimit.Policy // per route pattern, overriding both
	log     *slog.Logger
	// onLimited, when set, is told of each refusal (check-rate-limits).
	onLimited func(key, policy string)
}

func newLimits(cfg *config, log *slog.Logger) (*limits, error) {
	l := &limits{routes: map[string]*ratelimit.Policy{}, log: log}
	var err error
	if l.keyed, err = parsePolicy("default", cfg.RateLimit); err != nil {
		return nil, fmt.Errorf("--rate-limit (env DOTDO_RATE_LIMIT) %w", err)
	}
	if l.anon, err = parsePolicy("anonymous", cfg.RateLimitAnon); err != nil {
		return nil, fmt.Errorf("--rate-limit-anon (env DOTDO_RATE_LIMIT_ANON) %w", err)
	}
	if s := strings.TrimSpace(cfg.RateLimitRoutes); s != "" {
		for i, def := range strings.Split(s, ",") {
			route, pol, ok := strings.Cut(def, "=")
			p, err := parsePolicy("route"+strconv.Itoa(i), strings.TrimSpace(pol))
			if !ok || err != nil {
				return nil, fmt.Errorf("--rate-limit-routes (env DOTDO_RATE_LIMIT_ROUTES) %q: want \"METHOD /pattern=N/period\" pairs separated by commas, such as \"POST /v1/things/{ns}/batch=60/1m\"", def)
			}
			l.routes[strings.TrimSpace(route)] = p
		}
	}
	// Providers deliver signed webhooks from a few addresses, and GitHub
	// does not retry a refused delivery: unless --rate-limit-routes sets
	// one, the route has a budget of its own, far above the anonymous one.
	if _, ok := l.routes[webhooks.ReceiveRoute]; !ok {
		l.routes[webhooks.ReceiveRoute] = &ratelimit.Policy{Name: "webhooks", Limit: 60000, Period: time.Minute}
	}
	if cfg.RedisURL != "" {
		opt, err := redis.ParseURL(cfg.RedisURL)
		if err != nil {
			return nil, fmt.Errorf("REDIS_URL: want redis://host:6379/0: %w", err)
		}
		l.limiter = ratelimit.NewRedis(redis.NewClient(opt), "dotdo:rl:")
	} else {
		l.limiter = ratelimit.NewMemory(time.Now, 0)
	}
	return l, nil
}

// decide is the gateway's rate-limit hook: per credential, per IP for
// anonymous callers, or per route when the route has its own policy.
func (l *limits) decide(w http.ResponseWriter, r *http.Request, route string, id *authv1.Identity) bool {
	p, key := l.anon, "ip:"+reqid.ClientIP(r)
	if id != nil {
		p, key = l.keyed, id.Kind+":"+id.Subject
	}
	if rp, ok := l.routes[route]; ok {
		p = rp
	}
	if p == nil {
		return true
	}
	d, err := l.limiter.Allow(r.Context(), key, *p)
	if err != nil {
		// Fail open: an unreachable Redis must not take the API down.
		l.log.WarnContext(r.Context(), "rate limit unavailable; allowing", "err", err)
		return true
	}
	ratelimit.WriteHeaders(w.Header(), *p, d)
	if !d.Allowed {
		if l.onLimited != nil {
			l.onLimited(key, p.Name)
		}
		apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.RateLimited, "rate limit %s exceeded; retry after %d seconds", p.Name, int(d.RetryAfter.Seconds()+0.999)))
		return false
	}
	return true
}

// loginThrottle limits password guessing per account and per IP.
type loginThrottle struct {
	limiter        ratelimit.Limiter
	account, perIP ratelimit.Policy
}

func (t *loginThrottle) Allow(ctx context.Context, key string) (bool, time.Duration, error) {
	p := t.perIP
	if strings.HasPrefix(key, "login:acct:") {
		p = t.account
	}
	d, err := t.limiter.Allow(ctx, key, p)
	return d.Allowed, d.RetryAfter, err
}

// authorizer returns the db routes' permission check over the caller's
// identity.
func authorizer(custom map[string][]string) func(r *http.Request, ns, permission string) error {
	return func(r *http.Request, ns, permission string) error {
		id := identity.From(r.Context())
		if id == nil {
			return apierr.New(apierr.Unauthenticated, "authentication required")
		}
		if !auth.Can(id, ns, permission, custom) {
			return apierr.New(apierr.Forbidden, "missing permission %s on namespace %s", permission, ns)
		}
		return nil
	}
}

// bootstrap creates the first admin key when the store has no key and no
// user: the given one (DOTDO_BOOTSTRAP_ADMIN_KEY) or a new one, printed
// once on out, never to the log.
func bootstrap(ctx context.Context, svc *auth.Service, db dbBinding, given string, out io.Writer) error {
	for _, typ := range []string{"APIKey", "User"} {
		res, err := db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: auth.Namespace, Type: typ, Limit: 1}))
		if err != nil {
			return fmt.Errorf("bootstrap: %w", err)
		}
		if len(res.Msg.Items) > 0 {
			return nil
		}
	}
	if given != "" && !auth.LooksLikeAPIKey(given) {
		return errors.New("DOTDO_BOOTSTRAP_ADMIN_KEY must be an sk_live_ or sk_test_ key followed by 43 letters and digits")
	}
	res, err := svc.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{
		Name: "bootstrap admin", Grants: map[string]*authv1.Grants{"*": {Roles: []string{"admin"}}}, CreatedBy: "bootstrap", Secret: given,
		Test: strings.HasPrefix(given, auth.TestPrefix),
	}))
	if given != "" && apierr.Is(err, apierr.PreconditionFailed) {
		return nil // another auth replica starting beside this one made it
	}
	if err != nil {
		return fmt.Errorf("bootstrap: %w", err)
	}
	if given != "" {
		return nil
	}
	fmt.Fprintf(out, "dotdo: created the first admin API key; it is shown only this once:\n\n    %s\n\nKeep it safe. Create more with: dotdo keys create --role admin\n", res.Msg.Secret)
	return nil
}

// authBinding is what the gateway needs from the auth service.
type authBinding interface {
	auth.API
	auth.Validator
	Health(context.Context, *connect.Request[authv1.HealthRequest]) (*connect.Response[authv1.HealthResponse], error)
	ListAudit(context.Context, *connect.Request[authv1.ListAuditRequest]) (*connect.Response[authv1.ListAuditResponse], error)
}
