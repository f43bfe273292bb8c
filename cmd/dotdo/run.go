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
	"slices"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/gateway"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
	"github.com/dotdo/dotdo/internal/metrics"
	"github.com/dotdo/dotdo/internal/postgres"
	"github.com/dotdo/dotdo/internal/ratelimit"
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
  dotdo keys create --role admin [--ns a,b]
                          create an API key in the store and print it once
  dotdo mcp [flags]       an MCP server on stdio (against --url with --key,
                          or in-process on --data-dir)
  dotdo deploy --ns tenant --name hello hello.wasm [--tag t]
                          upload a WebAssembly worker to a running server
  dotdo scripts list|rollback|delete --ns tenant
                          list, roll back or delete workers of a namespace
  dotdo restore <file> [--data-dir d | --database-url u]
                          load a backup-database backup into an empty store
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
		return serve(ctx, cfg, stdout, stderr)
	case "migrate":
		cfg, err := parseConfig("migrate", args[1:], getenv, stderr)
		if errors.Is(err, errHelp) {
			return nil
		}
		if err != nil {
			return err
		}
		return migrateCmd(ctx, cfg, stdout, stderr)
	case "keys":
		return keysCmd(ctx, args[1:], getenv, stdout, stderr)
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "dotdo", versionString())
		return nil
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return nil
	}
	for _, cmds := range []map[string]command{queueCommands(), emailCommands(), scheduleCommands(), webhooksCommands(), dispatchCommands(), mcpCommands()} {
		if cmd, ok := cmds[args[0]]; ok {
			return cmd(ctx, args[1:], getenv, stdin, stdout, stderr)
		}
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

func serve(ctx context.Context, cfg *config, stdout, stderr io.Writer) error {
	log := newLogger(cfg, stderr)
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.split() && len(cfg.InternalToken) < 32 {
		return errors.New("DOTDO_INTERNAL_TOKEN must be set to a secret of at least 32 characters when services run in separate processes (generate one with: openssl rand -hex 32)")
	}
	// Every service but the queue keeps its state through the db service.
	needDB := slices.ContainsFunc(cfg.Services, func(s string) bool { return s != "db" && s != "queue" })
	if needDB && !cfg.has("db") && cfg.DBURL == "" {
		return errors.New("the gateway and the services in this process need the db service: run it in this process (--services gateway,db,auth) or give its address with --db-url")
	}
	if cfg.has("gateway") && !cfg.has("auth") && cfg.AuthURL == "" {
		return errors.New("the gateway needs the auth service: run it in this process (--services gateway,auth) or give its address with --auth-url")
	}
	reg := metrics.New()
	var closers []func() error
	defer func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}()
	ctx, stopWorkers := context.WithCancel(ctx)
	defer stopWorkers()
	client := rpc.NewHTTPClient()
	clientOpts := rpc.ClientOptions(cfg.InternalToken)
	serverOpts := rpc.ServerOptions()

	// db: the service itself, or a Connect client to it.
	var (
		db     dbBinding
		dbPath = "/" + dbv1connect.DBServiceName + "/"
		dbRPC  http.Handler
	)
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
		// backup-database asks this process for backups, from wherever the
		// schedule service runs: they land beside this process's data.
		svc.BackupDir = filepath.Join(cfg.DataDir, "backups")
		emb, err := thingsdb.NewEmbedder(cfg.Embedder)
		if err != nil {
			return fmt.Errorf("--embedder: %w", err)
		}
		if emb != nil {
			svc.SetEmbedder(emb)
		}
		db = svc
		dbPath, dbRPC = dbv1connect.NewDBServiceHandler(svc, serverOpts...)
		log.Info("db service ready", "backend", d.be.Name, "database", d.where)
	} else if needDB {
		db = dbv1connect.NewDBServiceClient(client, cfg.DBURL, clientOpts...)
		if cfg.has("gateway") {
			dbRPC = proxy(cfg.DBURL, cfg.InternalToken, client.Transport)
		}
	}

	// auth: the service itself, or a Connect client to it.
	var (
		authAPI  authBinding
		authPath = "/" + authv1connect.AuthServiceName + "/"
		authRPC  http.Handler
		authSvc  *auth.Service
	)
	authCfg := auth.Config{Issuer: cfg.PublicURL, Signup: cfg.Signup, CustomRoles: cfg.Roles, OIDC: auth.OIDCConfig{Providers: cfg.OIDC}}
	if cfg.has("auth") {
		key, err := secretKey(cfg)
		if err != nil {
			return err
		}
		authCfg.SecretKey = key
		authSvc, err = auth.New(thingsdb.Instrument(db, reg, "db"), authCfg, log)
		if err != nil {
			return err
		}
		if err := authSvc.Start(ctx); err != nil {
			return fmt.Errorf("start auth: %w", err)
		}
		go authSvc.Run(ctx)
		if err := bootstrap(ctx, authSvc, db, cfg.BootstrapKey, stdout); err != nil {
			return err
		}
		authAPI = authSvc
		authPath, authRPC = authv1connect.NewAuthServiceHandler(authSvc, serverOpts...)
		log.Info("auth service ready", "issuer", cfg.PublicURL, "signup", cfg.Signup, "oidcCallbacks", authSvc.OIDCProviders())
	} else if cfg.has("gateway") {
		authAPI = authv1connect.NewAuthServiceClient(client, cfg.AuthURL, clientOpts...)
		authRPC = proxy(cfg.AuthURL, cfg.InternalToken, client.Transport)
	}

	can := func(id *authv1.Identity, ns, perm string) bool { return auth.Can(id, ns, perm, cfg.Roles) }
	w := &wiring{
		cfg: cfg, log: log, reg: reg, client: client, clientOpts: clientOpts, serverOpts: serverOpts,
		db: db, auth: authAPI, authSvc: authSvc, can: can,
	}
	defer func() {
		for i := len(w.closers) - 1; i >= 0; i-- {
			w.closers[i]()
		}
	}()
	var ups []gateway.Upstream
	if db != nil && (cfg.has("db") || cfg.has("gateway")) {
		ups = append(ups, gateway.Upstream{
			Name: "db", Prefixes: thingsdb.Prefixes, RPCPath: dbPath, RPC: dbRPC,
			Health: func(ctx context.Context) error {
				_, err := db.Health(ctx, connect.NewRequest(&dbv1.HealthRequest{}))
				return err
			},
		})
	}
	if authAPI != nil {
		ups = append(ups, gateway.Upstream{
			Name: "auth", Prefixes: auth.Prefixes, Open: auth.OpenRoutes, RPCPath: authPath, RPC: authRPC,
			Health: func(ctx context.Context) error {
				_, err := authAPI.Health(ctx, connect.NewRequest(&authv1.HealthRequest{}))
				return err
			},
		})
	}
	for _, wire := range []func(context.Context, *wiring) error{wireQueue, wireEmail, wireSchedule, wireWebhooks, wireDispatch, wireMCP} {
		if err := wire(ctx, w); err != nil {
			return err
		}
	}
	ups = append(ups, w.ups...)
	gcfg := gateway.Config{MaxBodyBytes: cfg.MaxBodyBytes, Domain: cfg.Domain, Hosts: cfg.Hosts, InternalToken: cfg.InternalToken}
	var handler http.Handler
	if cfg.has("gateway") {
		lim, err := newLimits(cfg, log)
		if err != nil {
			return err
		}
		lim.onLimited = w.schedule.recordLimit
		acfg := auth.AuthenticatorConfig{Issuer: cfg.PublicURL, Audience: "dotdo", KeyTTL: 4 * time.Second}
		if authSvc != nil {
			acfg.Keys = authSvc.Keyring()
			if !cfg.split() {
				// In one process a revocation evicts the key at once; the
				// TTL only bounds how stale a key's grants can be. A
				// gateway,auth replica is not told of revocations made
				// by the others, so it keeps the short TTL.
				acfg.KeyTTL = 30 * time.Second
			}
		}
		authn := auth.NewAuthenticator(authAPI, acfg)
		if authSvc != nil {
			authSvc.OnKeyRevoked(authn.Forget)
		}
		dbAPI := thingsdb.Instrument(db, reg, "db")
		throttle := &loginThrottle{limiter: lim.limiter,
			account: ratelimit.Policy{Name: "login-account", Limit: 10, Period: 15 * time.Minute},
			perIP:   ratelimit.Policy{Name: "login-ip", Limit: 100, Period: 15 * time.Minute}}
		for i := range ups {
			switch ups[i].Name {
			case "db":
				ups[i].Routes = func(mux *http.ServeMux) {
					thingsdb.Routes(mux, withThingEvents(dbAPI, w), thingsdb.RouteOptions{Authorize: authorizer(cfg.Roles)})
				}
			case "auth":
				ups[i].Routes = func(mux *http.ServeMux) {
					auth.Routes(mux, authAPI, auth.RouteOptions{Can: can, LoginThrottle: throttle, CustomRoles: cfg.Roles})
				}
			}
		}
		gcfg.Self = "gateway"
		gcfg.Auth = authn
		gcfg.RateLimit = lim.decide
		gcfg.Events = thingsdb.NewRequestEvents(ctx, dbAPI, log.With("service", "analytics")).Record
		gcfg.MetricsAccess = func(id *authv1.Identity) bool { return can(id, auth.Namespace, "metrics:read") }
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

// command is a subcommand beside serve: dotdo <name> args...
type command func(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error

// wiring is what serve hands each service's wire function (wireQueue and
// the rest, one per svc_<name>.go): the process's config and shared parts,
// the bindings built so far, and where the service puts its gateway
// upstream and its closers. Wire functions run in dependency order, so a
// later service finds the bindings of the earlier ones here.
type wiring struct {
	cfg        *config
	log        *slog.Logger
	reg        *metrics.Registry
	client     *http.Client
	clientOpts []connect.ClientOption
	serverOpts []connect.HandlerOption
	db         dbBinding     // nil when no service in this process needs it
	auth       authBinding   // nil unless auth or the gateway runs here
	authSvc    *auth.Service // nil unless auth runs here
	can        func(id *authv1.Identity, ns, perm string) bool
	ups        []gateway.Upstream
	closers    []func() error // run in reverse order at shutdown

	queue    queueWiring
	email    emailWiring
	schedule scheduleWiring
	webhooks webhooksWiring
	dispatch dispatchWiring
	mcp      mcpWiring
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
