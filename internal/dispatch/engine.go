package dispatch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"

	"github.com/dotdo/dotdo/internal/apierr"
)

// HostModule is the import module name of dotdo's host functions.
const HostModule = "dotdo"

// wasiModule is the only other module a script may import.
const wasiModule = wasi_snapshot_preview1.ModuleName

// engine compiles and runs modules with wazero. wazero's memory limit is
// per runtime, so there is one runtime per memory limit in use, each with
// WASI and the host module; all share one compilation cache, on disk when
// a directory is given, so a restart does not recompile.
//
// Compiled modules stay in memory for requests, at most max of them: past
// that the least recently used one that no request is running is closed
// (its machine code freed), and the next request for it compiles it again
// from the on-disk cache, which takes tens of milliseconds, not the
// seconds of a cold compile.
type engine struct {
	cache wazero.CompilationCache
	host  *host
	max   int

	mu        sync.Mutex
	runtimes  map[uint32]wazero.Runtime
	compiled  map[compiledKey]*compiled
	tick      uint64 // advances on every use, for least-recently-used order
	evictions uint64
}

type compiledKey struct {
	sha   string
	pages uint32
}

// compiled is a module compiled under one memory limit. Its fields after
// mod are guarded by engine.mu.
type compiled struct {
	key     compiledKey
	mod     wazero.CompiledModule
	refs    int    // requests running it
	used    uint64 // engine.tick at its last use
	evicted bool   // out of the engine and closed: acquire refuses it
}

// DefaultMaxCompiled is how many compiled modules a dispatcher keeps in
// memory when Config.MaxCompiled is not set.
const DefaultMaxCompiled = 64

func newEngine(cacheDir string, max int, h *host) (*engine, error) {
	if max <= 0 {
		max = DefaultMaxCompiled
	}
	e := &engine{host: h, max: max, runtimes: map[uint32]wazero.Runtime{}, compiled: map[compiledKey]*compiled{}}
	if cacheDir != "" {
		c, err := wazero.NewCompilationCacheWithDir(cacheDir)
		if err != nil {
			return nil, fmt.Errorf("compilation cache in %s: %w", cacheDir, err)
		}
		e.cache = c
	} else {
		e.cache = wazero.NewCompilationCache()
	}
	return e, nil
}

func pagesFor(memoryMB int) uint32 { return uint32(memoryMB) * 16 } // 64 KiB pages

// runtime returns the runtime for a memory limit, creating it on first use.
func (e *engine) runtime(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if rt, ok := e.runtimes[pages]; ok {
		return rt, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(e.cache).
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(pages)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	if err := e.host.instantiate(ctx, rt); err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("instantiate host module: %w", err)
	}
	e.runtimes[pages] = rt
	return rt, nil
}

// checkImports refuses a module that imports anything but WASI preview 1
// and the host module's functions, or lacks _start.
func checkImports(m wazero.CompiledModule) error {
	for _, f := range m.ImportedFunctions() {
		mod, name, _ := f.Import()
		if mod != wasiModule && mod != HostModule {
			return apierr.New(apierr.Unprocessable, "module imports %s.%s: scripts may import only %s and %s", mod, name, wasiModule, HostModule)
		}
		if mod == HostModule && !hostFunctions[name] {
			return apierr.New(apierr.Unprocessable, "module imports %s.%s, which the host does not provide", mod, name)
		}
	}
	if len(m.ImportedMemories()) > 0 {
		return apierr.New(apierr.Unprocessable, "module imports a memory; scripts must define their own")
	}
	if _, ok := m.ExportedFunctions()["_start"]; !ok {
		return apierr.New(apierr.Unprocessable, "module exports no _start function: build a WASI command (GOOS=wasip1 GOARCH=wasm go build)")
	}
	if _, ok := m.ExportedMemories()["memory"]; !ok {
		return apierr.New(apierr.Unprocessable, "module exports no memory named \"memory\", which WASI needs")
	}
	return nil
}

func sum(module []byte) string {
	h := sha256.Sum256(module)
	return hex.EncodeToString(h[:])
}

// compile validates and compiles a module under a memory limit, keeping
// the result for requests. A bad module is an Unprocessable error with the
// reason.
func (e *engine) compile(ctx context.Context, module []byte, sha string, pages uint32) (*compiled, error) {
	if c, ok := e.cached(sha, pages); ok {
		return c, nil
	}
	rt, err := e.runtime(ctx, pages)
	if err != nil {
		return nil, err
	}
	if len(module) < 8 || string(module[:4]) != "\x00asm" {
		return nil, apierr.New(apierr.Unprocessable, "not a WebAssembly module (it does not start with \\0asm)")
	}
	// Compile the module's functions on every CPU: a deploy waits for it.
	m, err := rt.CompileModule(experimental.WithCompilationWorkers(ctx, runtime.GOMAXPROCS(0)), module)
	if err != nil {
		return nil, apierr.New(apierr.Unprocessable, "invalid WebAssembly module: %s", strings.TrimPrefix(err.Error(), "invalid module: "))
	}
	if err := checkImports(m); err != nil {
		m.Close(ctx)
		return nil, err
	}
	for _, mem := range m.ExportedMemories() {
		if mem.Min() > pages {
			m.Close(ctx)
			return nil, apierr.New(apierr.Unprocessable, "module needs %d MiB of memory at start; the limit is %d MiB", mem.Min()/16, pages/16)
		}
	}
	key := compiledKey{sha, pages}
	e.mu.Lock()
	if old, ok := e.compiled[key]; ok {
		e.touchLocked(old)
		e.mu.Unlock()
		m.Close(ctx)
		return old, nil
	}
	c := &compiled{key: key, mod: m}
	e.touchLocked(c)
	e.compiled[key] = c
	closing := e.evictLocked(c)
	e.mu.Unlock()
	for _, old := range closing {
		old.Close(context.Background())
	}
	return c, nil
}

// evictLocked takes the least recently used modules out of the engine
// while it holds more than max, skipping keep (just compiled for a
// request) and those a request is running: the limit is exceeded rather
// than a request failed. It returns the modules to close.
func (e *engine) evictLocked(keep *compiled) []wazero.CompiledModule {
	var closing []wazero.CompiledModule
	for len(e.compiled) > e.max {
		var lru *compiled
		for _, c := range e.compiled {
			if c != keep && c.refs == 0 && (lru == nil || c.used < lru.used) {
				lru = c
			}
		}
		if lru == nil {
			break
		}
		delete(e.compiled, lru.key)
		lru.evicted = true
		e.evictions++
		closing = append(closing, lru.mod)
	}
	return closing
}

// cached returns a compiled module already in memory.
func (e *engine) cached(sha string, pages uint32) (*compiled, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	c, ok := e.compiled[compiledKey{sha, pages}]
	if ok {
		e.touchLocked(c)
	}
	return c, ok
}

// acquire marks c as running one request more, so that eviction does not
// close it under the request. It is false when c was evicted: the caller
// compiles the module again.
func (e *engine) acquire(c *compiled) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c.evicted {
		return false
	}
	c.refs++
	e.touchLocked(c)
	return true
}

// touchLocked marks c as the most recently used module.
func (e *engine) touchLocked(c *compiled) {
	e.tick++
	c.used = e.tick
}

// release ends a request's hold on c. (Eviction skips held modules, so
// none is closed while a request runs it.)
func (e *engine) release(c *compiled) {
	e.mu.Lock()
	c.refs--
	e.mu.Unlock()
}

// stats are the number of modules in memory and of evictions so far.
func (e *engine) stats() (inMemory int, evictions uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.compiled), e.evictions
}

func (e *engine) close(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	for _, rt := range e.runtimes {
		errs = append(errs, rt.Close(ctx))
	}
	errs = append(errs, e.cache.Close(ctx))
	return errors.Join(errs...)
}
