// Package dispatch is dotdo's deploy API and dispatcher: tenants upload
// WebAssembly modules (WASI preview 1 commands) into dispatch namespaces,
// and the dispatcher runs a fresh instance of a script's module for each
// request, with CGI-style I/O (WAGI) and hard limits on wall-clock time,
// memory, subrequests and response size. A script leaves its sandbox only
// through the host functions of module "dotdo": an HTTP fetch governed by
// its namespace's outbound policy, and things in its own namespace.
//
// State (namespaces, scripts, versions and the module bytes) lives as
// things in the system namespace _dispatch through the db binding;
// compiled code is cached on disk by wazero.
package dispatch

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/tetratelabs/wazero"
	"golang.org/x/sync/singleflight"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// Config configures the service.
type Config struct {
	// CacheDir is where wazero keeps compiled code; empty keeps it in
	// memory only.
	CacheDir string
	// Defaults are the limits of a namespace that sets none.
	Defaults Limits
	// Max caps what a namespace may set.
	Max Limits
	// HostPattern maps host names to scripts, such as
	// {script}.{ns}.example.com; empty turns host routing off.
	HostPattern string
	// TTL is how long a resolved script is used before it is read again
	// from the store; deploys through this process take effect at once,
	// those made through another replica within TTL.
	TTL time.Duration
	// Client makes the scripts' fetches; nil uses a client with no proxy
	// that does not follow redirects and, unless AllowPrivateEgress, only
	// connects to public addresses.
	Client *http.Client
	// AllowPrivateEgress lets fetches reach loopback, private and
	// link-local addresses when a namespace's policy allows the host. Off,
	// an allowlist entry (set by whoever holds deploy:write) cannot open
	// the host's network or the cloud's metadata service to tenant code;
	// an outbound handler, set the same way, is reached only at a public
	// address too.
	AllowPrivateEgress bool
	// MaxCompiled is how many compiled modules stay in memory (default
	// DefaultMaxCompiled); past it the least recently used is freed and
	// compiled again, from the on-disk cache, when next requested.
	MaxCompiled int
	// Metrics, when set, receives the per-script metrics.
	Metrics Registerer
	// MaxConcurrent caps the instances running at once; more requests
	// wait their turn, and a script's wall clock starts when its instance
	// does, so a burst cannot starve the instances already running of
	// CPU. Zero means 4 per CPU.
	MaxConcurrent int
	// Reserved reports host names no script may claim: the gateway's own
	// (its public host, <service>.<domain>, its --hosts). Nil reserves none.
	Reserved func(host string) bool
	// QueueTimeout bounds how long a request waits for a turn (503 after);
	// zero means 10 s.
	QueueTimeout time.Duration
}

// DefaultLimits are the limits of a namespace that sets none.
var DefaultLimits = Limits{WallMS: 5000, MemoryMB: 128, Subrequests: 50, ResponseBytes: 8 << 20}

// MaxLimits cap what a namespace may set.
var MaxLimits = Limits{WallMS: 60000, MemoryMB: 1024, Subrequests: 1000, ResponseBytes: 64 << 20}

// DefaultNamespaces exist from the start.
var DefaultNamespaces = []string{"internal", "public", "tenant"}

// Service is the dispatch service.
type Service struct {
	cfg     Config
	log     *slog.Logger
	st      *store
	eng     *engine
	metrics *scriptMetrics
	*HostIndex

	mu      sync.RWMutex
	entries map[string]*entry
	loads   singleflight.Group
	slots   chan struct{}
	mem     *memoryPool

	stop context.CancelFunc // ends the host refresher
}

// entry is a resolved script: what a request needs to run it.
type entry struct {
	ns      *NamespaceInfo
	sc      *Script
	limits  Limits
	comp    *compiled
	rt      wazero.Runtime
	base    wazero.ModuleConfig
	expires time.Time
}

// New returns the service over the db binding.
func New(db thingsdb.API, cfg Config, logger *slog.Logger) (*Service, error) {
	if cfg.Defaults == (Limits{}) {
		cfg.Defaults = DefaultLimits
	}
	if cfg.Max == (Limits{}) {
		cfg.Max = MaxLimits
	}
	def, err := cfg.Defaults.within(cfg.Max, "default")
	if err != nil {
		return nil, err
	}
	cfg.Defaults = def
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 4 * runtime.GOMAXPROCS(0)
	}
	if cfg.QueueTimeout <= 0 {
		cfg.QueueTimeout = 10 * time.Second
	}
	if cfg.TTL <= 0 {
		cfg.TTL = 2 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = fetchClient(cfg.AllowPrivateEgress)
	}
	idx, err := NewHostIndex(db, cfg.HostPattern, cfg.TTL, logger)
	if err != nil {
		return nil, err
	}
	h := &host{db: db, client: cfg.Client}
	eng, err := newEngine(cfg.CacheDir, cfg.MaxCompiled, h)
	if err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, log: logger, st: &store{db: db}, eng: eng, HostIndex: idx, entries: map[string]*entry{}, slots: make(chan struct{}, cfg.MaxConcurrent), mem: newMemoryPool(cfg.MaxConcurrent)}
	s.metrics = newScriptMetrics(cfg.Metrics, eng)
	return s, nil
}

// Start creates the default namespaces that do not exist yet, loads the
// custom host routes and keeps them fresh until ctx ends.
func (s *Service) Start(ctx context.Context) error {
	if err := s.createDefaults(ctx); err != nil {
		return err
	}
	ctx, s.stop = context.WithCancel(ctx)
	return s.HostIndex.Start(ctx)
}

func (s *Service) createDefaults(ctx context.Context) error {
	for _, name := range DefaultNamespaces {
		n := NamespaceInfo{Name: name, Access: AccessPublic, Outbound: Outbound{Mode: OutboundNone}, CreatedAt: now()}
		if name == "internal" {
			n.Access = AccessPrivate
		}
		n.UpdatedAt = n.CreatedAt
		_, err := s.st.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{
			Ns: Namespace, Id: nsID(name), Type: typeNamespace, Data: mustJSON(n), Condition: dbv1.Condition_CONDITION_MUST_NOT_EXIST,
		}}))
		if err != nil && !apierr.Is(err, apierr.PreconditionFailed) && !apierr.Is(err, apierr.Conflict) {
			return fmt.Errorf("create dispatch namespace %s: %w", name, err)
		}
	}
	return nil
}

// Close releases the runtimes and the compilation cache.
func (s *Service) Close() error {
	if s.stop != nil {
		s.stop()
	}
	err := s.eng.close(context.Background())
	s.mem.close()
	return err
}

// Health reports whether the store answers.
func (s *Service) Health(ctx context.Context) error {
	_, err := s.st.namespace(ctx, "public")
	if apierr.Is(err, apierr.NotFound) {
		return nil
	}
	return err
}

// nsLimits are a namespace's effective limits.
func (s *Service) nsLimits(n *NamespaceInfo) Limits {
	l, err := n.Limits.within(s.cfg.Max, "namespace")
	if err != nil {
		return clamp(n.Limits, s.cfg.Max, s.cfg.Defaults)
	}
	return clamp(l, s.cfg.Max, s.cfg.Defaults)
}

// clamp fills l's zero fields from def and caps them at max.
func clamp(l, max, def Limits) Limits {
	pick := func(v, m, d int64) int64 {
		if v <= 0 {
			v = d
		}
		return min(v, m)
	}
	return Limits{
		WallMS:        int(pick(int64(l.WallMS), int64(max.WallMS), int64(def.WallMS))),
		MemoryMB:      int(pick(int64(l.MemoryMB), int64(max.MemoryMB), int64(def.MemoryMB))),
		Subrequests:   int(pick(int64(l.Subrequests), int64(max.Subrequests), int64(def.Subrequests))),
		ResponseBytes: pick(l.ResponseBytes, max.ResponseBytes, def.ResponseBytes),
	}
}

func (s *Service) invalidate(ns, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if name != "" {
		delete(s.entries, ns+"/"+name)
		return
	}
	for k, e := range s.entries {
		if e.ns.Name == ns {
			delete(s.entries, k)
		}
	}
}

// hold resolves ns/name and holds its compiled module for one request;
// the caller releases e.comp. An entry whose module was evicted since it
// was resolved is dropped and loaded again.
func (s *Service) hold(ctx context.Context, ns, name string) (*entry, error) {
	for range 3 {
		e, err := s.resolve(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		if s.eng.acquire(e.comp) {
			return e, nil
		}
		s.mu.Lock()
		if s.entries[ns+"/"+name] == e {
			delete(s.entries, ns+"/"+name)
		}
		s.mu.Unlock()
	}
	return nil, apierr.New(apierr.Unavailable, "the dispatcher is compiling more scripts than it keeps in memory (--dispatch-max-compiled); retry")
}

// resolve returns the entry that runs ns/name, from memory while it is
// fresh, else from the store (one load per script at a time).
func (s *Service) resolve(ctx context.Context, ns, name string) (*entry, error) {
	key := ns + "/" + name
	s.mu.RLock()
	e := s.entries[key]
	s.mu.RUnlock()
	if e != nil && time.Now().Before(e.expires) {
		return e, nil
	}
	v, err, _ := s.loads.Do(key, func() (any, error) {
		e, err := s.load(context.WithoutCancel(ctx), ns, name)
		if err != nil {
			return nil, err
		}
		s.mu.Lock()
		s.entries[key] = e
		s.mu.Unlock()
		return e, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*entry), nil
}

func (s *Service) load(ctx context.Context, ns, name string) (*entry, error) {
	if !validName(ns) || !validName(name) {
		return nil, apierr.New(apierr.NotFound, "script %s not found in namespace %s", clip(name), clip(ns))
	}
	n, err := s.st.namespace(ctx, ns)
	if err != nil {
		return nil, err
	}
	sc, _, err := s.st.script(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	nl := s.nsLimits(n)
	limits := clamp(sc.Current.Limits, nl, nl)
	pages := pagesFor(limits.MemoryMB)
	comp, ok := s.eng.cached(sc.Current.SHA256, pages)
	if !ok {
		module, err := s.st.module(ctx, ns, name, &sc.Current)
		if err != nil {
			return nil, err
		}
		if comp, err = s.eng.compile(ctx, module, sc.Current.SHA256, pages); err != nil {
			return nil, fmt.Errorf("compile stored module of %s/%s v%d: %w", ns, name, sc.Current.Version, err)
		}
	}
	rt, err := s.eng.runtime(ctx, pages)
	if err != nil {
		return nil, err
	}
	base := wazero.NewModuleConfig().WithName("").WithArgs(name).
		WithSysWalltime().WithSysNanotime().WithSysNanosleep().WithRandSource(randReader{})
	keys := make([]string, 0, len(sc.Current.Env))
	for k := range sc.Current.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		base = base.WithEnv(k, sc.Current.Env[k])
	}
	return &entry{ns: n, sc: sc, limits: limits, comp: comp, rt: rt, base: base, expires: time.Now().Add(s.cfg.TTL)}, nil
}
