// Package gateway is dotdo's front door: it routes requests by host and
// path to the services, gives every request an ID, logs one access line
// per request, records metrics, recovers panics, limits request bodies and
// aggregates the services' health.
package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/rpc"
)

// Upstream is one service behind the gateway.
type Upstream struct {
	// Name is the service name: db, auth, ...
	Name string
	// Prefixes are the public REST path prefixes of the service.
	Prefixes []string
	// Routes registers the service's REST routes; they call the service
	// through its binding.
	Routes func(*http.ServeMux)
	// RPCPath is the Connect path prefix (/dotdo.db.v1.DBService/) and RPC
	// its handler: the service's own Connect handler in all-in-one mode, a
	// proxy to the service's process in split mode.
	RPCPath string
	RPC     http.Handler
	// Health reports whether the service is healthy.
	Health func(context.Context) error
	// Open lists the route patterns (as registered by Routes) that answer
	// without credentials: login, token refresh, JWKS, signed webhooks.
	Open []string
	// Challenge, when set, is added as auth-params to the WWW-Authenticate
	// header of the 401s the gateway answers on the upstream's Prefixes,
	// such as resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"
	// (RFC 9728, which MCP clients follow to discover how to sign in).
	Challenge string
	// Host, when set, claims whole host names for this upstream (tenants'
	// scripts at <script>.<ns>.<domain>): a request to a host it matches
	// goes to HostHandler before host and path routing, unauthenticated
	// (its Authorization header belongs to the tenant's application) but
	// under the anonymous rate limit, with the route "host <Name>".
	Host        func(host string) bool
	HostHandler http.Handler
	// MaxBodyBytes, when larger than Config.MaxBodyBytes, is the body
	// limit of requests under Prefixes and RPCPath (uploads of modules).
	MaxBodyBytes int64
}

// Authenticator turns a bearer credential into an identity.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*authv1.Identity, error)
}

// Config is the gateway's configuration.
type Config struct {
	// MaxBodyBytes caps request bodies; larger ones get 413.
	MaxBodyBytes int64
	// Domain enables host routing: <service>.<Domain> reaches only that
	// service.
	Domain string
	// Hosts maps further host names to service names.
	Hosts map[string]string
	// Self is the name this process reports for itself in /health
	// ("gateway"); empty on a split-mode service listener.
	Self string
	// InternalToken is the service credential of internal RPC. Connect
	// paths answer only callers that present it (compared in constant
	// time): they are for services, not for tenants, and bypass the REST
	// routes' namespace checks. With no token, no caller gets through.
	InternalToken string
	// Internal makes every path except /health require InternalToken: the
	// listener of a split-mode service process.
	Internal bool
	// Auth, when set, authenticates every request: routes not listed as
	// open by their upstream answer 401 without a valid credential.
	Auth Authenticator
	// RateLimit, when set, is asked about every authenticated or anonymous
	// request after authentication; it writes the rate-limit headers, and
	// the 429 when it returns false.
	RateLimit func(w http.ResponseWriter, r *http.Request, route string, id *authv1.Identity) bool
	// MetricsAccess decides who may read /metrics when Auth is set.
	MetricsAccess func(id *authv1.Identity) bool
	// Events, when set, is told of every request after it is answered
	// (route pattern, status, duration, the caller's API key id or ""),
	// for the analytics pipeline; it must not block
	// (thingsdb.RequestEvents.Record buffers and drops under overload).
	Events func(route string, status int, d time.Duration, keyID string)
}

// Gateway is the gateway service; it is an http.Handler.
type Gateway struct {
	cfg       Config
	log       *slog.Logger
	metrics   *metrics.Registry
	mux       *http.ServeMux
	upstreams map[string]*Upstream
	hosts     map[string]string
	open      map[string]bool
	hostUps   []*Upstream // upstreams with a Host matcher
	bigBody   []*Upstream // upstreams with a larger body limit
}

// New returns a gateway over the given upstreams.
func New(cfg Config, logger *slog.Logger, m *metrics.Registry, ups []Upstream) *Gateway {
	g := &Gateway{cfg: cfg, log: logger, metrics: m, mux: http.NewServeMux(), upstreams: map[string]*Upstream{}, hosts: map[string]string{}, open: map[string]bool{"GET /health": true}}
	g.mux.HandleFunc("GET /health", g.health)
	g.mux.Handle("GET /metrics", m.Handler())
	for i := range ups {
		u := &ups[i]
		g.upstreams[u.Name] = u
		if u.Routes != nil {
			u.Routes(g.mux)
		}
		if u.RPC != nil {
			g.mux.Handle("POST "+u.RPCPath, u.RPC)
		}
		if cfg.Domain != "" {
			g.hosts[u.Name+"."+cfg.Domain] = u.Name
		}
		for _, p := range u.Open {
			g.open[p] = true
		}
		if u.Host != nil && u.HostHandler != nil {
			g.hostUps = append(g.hostUps, u)
		}
		if u.MaxBodyBytes > cfg.MaxBodyBytes {
			g.bigBody = append(g.bigBody, u)
		}
	}
	for h, svc := range cfg.Hosts {
		g.hosts[strings.ToLower(h)] = svc
	}
	return g
}

// statusWriter records the status and size of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

var writerPool = sync.Pool{New: func() any { return new(statusWriter) }}

// ServeHTTP handles one request: ID, limits, routing, recovery, metrics
// and the access log line.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	id := r.Header.Get(reqid.Header)
	if !reqid.Valid(id) {
		id = reqid.New()
	}
	w.Header().Set(reqid.Header, id)
	r = r.WithContext(reqid.With(r.Context(), id))
	sw := writerPool.Get().(*statusWriter)
	*sw = statusWriter{ResponseWriter: w}
	served := r // the request as the route saw it, with its pattern
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			g.log.ErrorContext(r.Context(), "panic", "request_id", id, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			if sw.status == 0 {
				apierr.WriteHTTP(sw, id, apierr.New(apierr.Internal, "internal error"))
			}
		}
		route := served.Pattern
		if route == "" {
			route = "unmatched"
		}
		end := time.Now()
		d := end.Sub(start)
		g.metrics.Request(route, sw.status, d)
		g.accessLog(r.Context(), end, id, r, route, sw.status, sw.bytes, d)
		if g.cfg.Events != nil {
			keyID := ""
			if who := identity.From(served.Context()); who != nil {
				keyID = who.KeyId
			}
			g.cfg.Events(route, sw.status, d, keyID)
		}
		writerPool.Put(sw)
	}()
	served = g.serve(sw, r)
}

// accessLog writes the access line of a request. It builds the record
// itself rather than calling Logger.LogAttrs, which captures the caller's
// program counter (runtime.Callers) on every line for a source the access
// log never shows; the line is otherwise the same.
func (g *Gateway) accessLog(ctx context.Context, end time.Time, id string, r *http.Request, route string, status, bytes int, d time.Duration) {
	h := g.log.Handler()
	if !h.Enabled(ctx, slog.LevelInfo) {
		return
	}
	rec := slog.NewRecord(end, slog.LevelInfo, "request", 0)
	rec.AddAttrs(
		slog.String("request_id", id),
		slog.String("method", r.Method),
		slog.String("path", r.URL.Path),
		slog.String("route", route),
		slog.Int("status", status),
		slog.Int("bytes", bytes),
		slog.Float64("ms", float64(d.Microseconds())/1000),
		slog.String("remote", r.RemoteAddr),
	)
	h.Handle(ctx, rec)
}

// serve routes one request and returns the request the route was given.
func (g *Gateway) serve(w http.ResponseWriter, r *http.Request) *http.Request {
	limit := g.cfg.MaxBodyBytes
	for _, u := range g.bigBody {
		for _, p := range u.Prefixes {
			if r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") {
				limit = u.MaxBodyBytes
			}
		}
		if u.RPCPath != "" && strings.HasPrefix(r.URL.Path, u.RPCPath) {
			limit = u.MaxBodyBytes // the same upload, forwarded to a service process
		}
	}
	if r.ContentLength > limit {
		apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.TooLarge, "request body is larger than %d bytes", limit))
		return r
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	isRPC := g.isRPC(r.URL.Path)
	if (g.cfg.Internal && r.URL.Path != "/health" || isRPC) && !rpc.CheckToken(r, g.cfg.InternalToken) {
		apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.Unauthenticated, "internal endpoint: a valid service credential is required"))
		return r
	}
	if len(g.hostUps) > 0 && !g.cfg.Internal {
		host := strings.ToLower(r.Host)
		if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
			host = host[:i]
		}
		for _, u := range g.hostUps {
			if u.Host(host) {
				r.Pattern = "host " + u.Name
				if g.cfg.RateLimit != nil && !g.cfg.RateLimit(w, r, r.Pattern, nil) {
					return r
				}
				u.HostHandler.ServeHTTP(w, r)
				return r
			}
		}
	}
	if len(g.hosts) > 0 && !g.hostAllows(r) {
		g.notFound(w, r)
		return r
	}
	h, pattern := g.mux.Handler(r)
	if pattern == "" {
		// No route: answer in the error envelope, keeping the mux's
		// status (404 or 405) and Allow header.
		rec := &headerOnly{header: http.Header{}}
		h.ServeHTTP(rec, r)
		if allow := rec.header.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if rec.status == http.StatusMethodNotAllowed {
			apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.MethodNotAllowed, "method %s is not allowed on %s", r.Method, r.URL.Path))
			return r
		}
		g.notFound(w, r)
		return r
	}
	if g.cfg.Auth != nil && !isRPC {
		var id *authv1.Identity
		if token, ok := bearer(r); ok {
			var err error
			if id, err = g.cfg.Auth.Authenticate(r.Context(), token); err != nil {
				r.Pattern = pattern
				// A refused credential counts against the caller's IP like
				// an anonymous request, so guessing keys is throttled too.
				if g.cfg.RateLimit != nil && !g.cfg.RateLimit(w, r, pattern, nil) {
					return r
				}
				w.Header().Set("WWW-Authenticate", g.challenge(r.URL.Path, `Bearer error="invalid_token"`))
				apierr.WriteHTTP(w, reqid.From(r.Context()), err)
				return r
			}
			r = r.WithContext(identity.With(r.Context(), id))
		} else if !g.open[pattern] {
			r.Pattern = pattern
			w.Header().Set("WWW-Authenticate", g.challenge(r.URL.Path, "Bearer"))
			apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.Unauthenticated, "authentication required: send Authorization: Bearer <API key or access token>"))
			return r
		}
		if pattern == "GET /metrics" && (g.cfg.MetricsAccess == nil || !g.cfg.MetricsAccess(id)) {
			r.Pattern = pattern
			apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.Forbidden, "metrics need the metrics:read permission on _auth (admins have it)"))
			return r
		}
		// Health probes are never limited: a busy orchestrator must not
		// see a healthy gateway as down.
		if pattern != "GET /health" && g.cfg.RateLimit != nil && !g.cfg.RateLimit(w, r, pattern, id) {
			r.Pattern = pattern
			return r
		}
	}
	g.mux.ServeHTTP(w, r)
	return r
}

// challenge returns the WWW-Authenticate value of a 401 on path: base, with
// the Challenge of the upstream whose prefix path is under, if any.
func (g *Gateway) challenge(path, base string) string {
	for _, u := range g.upstreams {
		if u.Challenge == "" {
			continue
		}
		for _, p := range u.Prefixes {
			if path == p || strings.HasPrefix(path, p+"/") {
				if base == "Bearer" {
					return "Bearer " + u.Challenge
				}
				return base + ", " + u.Challenge
			}
		}
	}
	return base
}

// bearer returns the token of an Authorization: Bearer header.
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	if len(v) < 7 || !strings.EqualFold(v[:7], "bearer ") {
		return "", false
	}
	t := strings.TrimSpace(v[7:])
	return t, t != ""
}

// isRPC reports whether path is a Connect path of some upstream.
func (g *Gateway) isRPC(path string) bool {
	for _, u := range g.upstreams {
		if u.RPCPath != "" && strings.HasPrefix(path, u.RPCPath) {
			return true
		}
	}
	return false
}

func (g *Gateway) notFound(w http.ResponseWriter, r *http.Request) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), apierr.New(apierr.NotFound, "no route for %s %s", r.Method, r.URL.Path))
}

// hostAllows applies host routing: a host mapped to a service reaches only
// that service's routes (and /health); other hosts reach everything.
func (g *Gateway) hostAllows(r *http.Request) bool {
	host := strings.ToLower(r.Host)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		host = host[:i]
	}
	svc, ok := g.hosts[host]
	if !ok {
		return true
	}
	if r.URL.Path == "/health" {
		return true
	}
	u := g.upstreams[svc]
	if u == nil {
		return false
	}
	if u.RPCPath != "" && strings.HasPrefix(r.URL.Path, u.RPCPath) {
		return true
	}
	for _, p := range u.Prefixes {
		if r.URL.Path == p || strings.HasPrefix(r.URL.Path, p+"/") {
			return true
		}
	}
	return false
}

// headerOnly captures what the mux's fallback handler writes.
type headerOnly struct {
	header http.Header
	status int
}

func (h *headerOnly) Header() http.Header         { return h.header }
func (h *headerOnly) Write(b []byte) (int, error) { return len(b), nil }
func (h *headerOnly) WriteHeader(code int)        { h.status = code }

type serviceHealth struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// health aggregates every upstream's health: 200 when all are ok, 503 with
// status degraded otherwise.
func (g *Gateway) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	out := struct {
		Status   string                   `json:"status"`
		Services map[string]serviceHealth `json:"services"`
	}{Status: "ok", Services: map[string]serviceHealth{}}
	if g.cfg.Self != "" {
		out.Services[g.cfg.Self] = serviceHealth{Status: "ok"}
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, u := range g.upstreams {
		if u.Health == nil {
			continue
		}
		wg.Go(func() {
			h := serviceHealth{Status: "ok"}
			if err := u.Health(ctx); err != nil {
				h = serviceHealth{Status: "unavailable", Error: apierr.From(err).Message}
			}
			mu.Lock()
			out.Services[name] = h
			mu.Unlock()
		})
	}
	wg.Wait()
	status := http.StatusOK
	for _, h := range out.Services {
		if h.Status != "ok" {
			out.Status, status = "degraded", http.StatusServiceUnavailable
		}
	}
	b, _ := json.Marshal(out)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}
