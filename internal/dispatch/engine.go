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
type engine struct {
	cache wazero.CompilationCache
	host  *host

	mu       sync.Mutex
	runtimes map[uint32]wazero.Runtime
	compiled map[compiledKey]wazero.CompiledModule
}

type compiledKey struct {
	sha   string
	pages uint32
}

func newEngine(cacheDir string, h *host) (*engine, error) {
	e := &engine{host: h, runtimes: map[uint32]wazero.Runtime{}, compiled: map[compiledKey]wazero.CompiledModule{}}
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
func (e *engine) compile(ctx context.Context, module []byte, sha string, pages uint32) (wazero.CompiledModule, error) {
	key := compiledKey{sha, pages}
	e.mu.Lock()
	m, ok := e.compiled[key]
	e.mu.Unlock()
	if ok {
		return m, nil
	}
	rt, err := e.runtime(ctx, pages)
	if err != nil {
		return nil, err
	}
	if len(module) < 8 || string(module[:4]) != "\x00asm" {
		return nil, apierr.New(apierr.Unprocessable, "not a WebAssembly module (it does not start with \\0asm)")
	}
	// Compile the module's functions on every CPU: a deploy waits for it.
	m, err = rt.CompileModule(experimental.WithCompilationWorkers(ctx, runtime.GOMAXPROCS(0)), module)
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
	e.mu.Lock()
	if old, ok := e.compiled[key]; ok {
		e.mu.Unlock()
		m.Close(ctx)
		return old, nil
	}
	e.compiled[key] = m
	e.mu.Unlock()
	return m, nil
}

// cached returns a compiled module already in memory.
func (e *engine) cached(sha string, pages uint32) (wazero.CompiledModule, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	m, ok := e.compiled[compiledKey{sha, pages}]
	return m, ok
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
