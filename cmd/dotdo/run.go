package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/gateway"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/postgres"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/rpc"
	"github.com/dotdo/dotdo/internal/sqlite"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

const usage = `dotdo: a self-hostable platform of backend services.

Usage:
  dotdo serve [flags]     run the services (all of them by default)
  dotdo migrate [flags]   apply database migrations and exit
  dotdo version           print the version

Run "dotdo serve --help" for the flags and their environment variables.
`

// run is the whole program; main only calls it, so tests can start the real
// program in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "serve":
		cfg, err := parseConfig("serve", args[1:], getenv, stderr)
		if errors.Is(err, errHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		return serve(ctx, cfg, stderr)
	case "migrate":
		cfg, err := parseConfig("migrate", args[1:], getenv, stderr)
		if errors.Is(err, errHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		return migrateCmd(ctx, cfg, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "dotdo", versionString())
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "dotdo: unknown command %q\n\n%s", args[0], usage)
	return errUsage
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	var h slog.Handler = slog.NewJSONHandler(w, opts)
	if format == "text" {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(reqid.LogHandler(h))
}

// database is an open backend with its closer.
type database struct {
	be    thingsdb.Backend
	close func() error
	where string
}

func openDatabase(ctx context.Context, cfg *config) (*database, error) {
	if cfg.DatabaseURL != "" {
		db, err := postgres.Open(ctx, cfg.DatabaseURL, cfg.DBMaxConns)
		if err != nil {
			return nil, err
		}
		if _, err := postgres.Migrate(ctx, db); err != nil {
			db.Close()
			return nil, fmt.Errorf("migrate PostgreSQL: %w", err)
		}
		return &database{be: thingsdb.Backend{Name: thingsdb.Postgres, Read: db, Write: db}, close: db.Close, where: "postgresql"}, nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("create data directory (set --data-dir or DOTDO_DATA_DIR to a writable place): %w", err)
	}
	path := filepath.Join(cfg.DataDir, "dotdo.db")
	db, err := sqlite.Open(path)
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return &database{be: thingsdb.Backend{Name: thingsdb.SQLite, Read: db.Read, Write: db.Write}, close: db.Close, where: path}, nil
}

func migrateCmd(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	db, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer db.close()
	fmt.Fprintf(stdout, "migrations applied to %s\n", db.where)
	return nil
}

// dbBinding is what the gateway needs from the db service.
type dbBinding interface {
	thingsdb.API
	Health(context.Context, *connect.Request[dbv1.HealthRequest]) (*connect.Response[dbv1.HealthResponse], error)
}

func serve(ctx context.Context, cfg *config, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	if cfg.has("gateway") && !isLoopback(cfg.Addr) && !cfg.InsecureNoAuth {
		return fmt.Errorf("refusing to listen on %s: authentication is not enforced yet, so the gateway only listens on loopback (127.0.0.1); pass --insecure-no-auth to override", cfg.Addr)
	}
	if cfg.split() && len(cfg.InternalToken) < 32 {
		return errors.New("DOTDO_INTERNAL_TOKEN must be set to a secret of at least 32 characters when services run in separate processes (generate one with: openssl rand -hex 32)")
	}
	if cfg.has("gateway") && !cfg.has("db") && cfg.DBURL == "" {
		return errors.New("the gateway needs the db service: run it in this process (--services gateway,db) or give its address with --db-url")
	}
	reg := metrics.New()
	var (
		db      dbBinding
		dbRPC   http.Handler
		closers []func() error
	)
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	rpcPath, rpcHandler := "", http.Handler(nil)
	if cfg.has("db") {
		d, err := openDatabase(ctx, cfg)
		if err != nil {
			return err
		}
		closers = append(closers, d.close)
		svc, err := thingsdb.New(d.be, log)
		if err != nil {
			return err
		}
		closers = append(closers, svc.Close)
		db = svc
		rpcPath, rpcHandler = dbv1connect.NewDBServiceHandler(svc, connect.WithInterceptors(rpc.ServerInterceptor()))
		dbRPC = rpcHandler
		log.Info("db service ready", "backend", d.be.Name, "database", d.where)
	} else if cfg.has("gateway") {
		client := rpc.NewHTTPClient()
		db = dbv1connect.NewDBServiceClient(client, cfg.DBURL, connect.WithInterceptors(rpc.ClientInterceptor(cfg.InternalToken)))
		rpcPath = "/" + dbv1connect.DBServiceName + "/"
		dbRPC = proxy(cfg.DBURL, cfg.InternalToken, client.Transport)
	}

	ups := []gateway.Upstream{{
		Name:     "db",
		Prefixes: thingsdb.Prefixes,
		RPCPath:  rpcPath,
		RPC:      dbRPC,
		Health: func(ctx context.Context) error {
			_, err := db.Health(ctx, connect.NewRequest(&dbv1.HealthRequest{}))
			return err
		},
	}}
	gcfg := gateway.Config{MaxBodyBytes: cfg.MaxBodyBytes, Domain: cfg.Domain, Hosts: cfg.Hosts, InternalToken: cfg.InternalToken}
	var handler http.Handler
	if cfg.has("gateway") {
		api := thingsdb.Instrument(db, reg, "db")
		ups[0].Routes = func(mux *http.ServeMux) { thingsdb.Routes(mux, api, thingsdb.RouteOptions{}) }
		gcfg.Self = "gateway"
		handler = gateway.New(gcfg, log.With("service", "gateway"), reg, ups)
	} else {
		// A service process: Connect RPC, /health and /metrics, closed to
		// callers without the internal token.
		gcfg.Internal = true
		handler = gateway.New(gcfg, log.With("service", "rpc"), reg, ups)
	}

	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s (set --addr or DOTDO_ADDR): %w", cfg.Addr, err)
	}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		Protocols:         protocols,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("dotdo listening", "url", "http://"+ln.Addr().String(), "services", cfg.Services, "version", versionString())

	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests", "timeout", cfg.ShutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info("stopped")
	return nil
}

// proxy forwards Connect calls that reach the gateway to a service in
// another process, with the internal token and the request ID.
func proxy(target, token string, transport http.RoundTripper) http.Handler {
	u, _ := url.Parse(target)
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
			pr.Out.Header.Set(rpc.TokenHeader, token)
			pr.Out.Header.Set(reqid.Header, reqid.From(pr.In.Context()))
		},
		Transport:  transport,
		BufferPool: bufferPool{},
	}
}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

type bufferPool struct{}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
