package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/email"
	"github.com/dotdo/dotdo/internal/gateway"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/mcp"
	"github.com/dotdo/dotdo/internal/queue"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// This file wires the mcp service into the binary: its options, its
// config, its subcommands and its construction in serve.

// mcpConfig is the mcp service's part of the config.
type mcpConfig struct {
	AllowedOrigins []string
	PageSize       int
}

// mcpOptions are the mcp service's flags and environment variables.
func mcpOptions() []*option {
	return []*option{
		{flag: "mcp-allowed-origins", env: "DOTDO_MCP_ALLOWED_ORIGINS", def: "", help: "browser origins (scheme://host[:port]) allowed to call /mcp besides the public URL's, separated by commas; other Origin headers get 403"},
		{flag: "mcp-page-size", env: "DOTDO_MCP_PAGE_SIZE", def: "20", help: "tools, resource templates and resources per page of the MCP list methods (1-1000)"},
	}
}

// parse fills the mcp config from its options.
func (q *mcpConfig) parse(c *config, l optionLookup) error {
	if s := strings.TrimSpace(l.get("mcp-allowed-origins").value); s != "" {
		for _, o := range strings.Split(s, ",") {
			o = strings.TrimSuffix(strings.TrimSpace(o), "/")
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Path != "" {
				return l.bad("mcp-allowed-origins", "want origins such as https://app.example.com,http://localhost:6274 separated by commas")
			}
			q.AllowedOrigins = append(q.AllowedOrigins, o)
		}
	}
	n, err := strconv.Atoi(l.get("mcp-page-size").value)
	if err != nil || n < 1 || n > 1000 {
		return l.bad("mcp-page-size", "want a number from 1 to 1000")
	}
	q.PageSize = n
	return nil
}

// mcpWiring holds the mcp service's bindings for the services wired after it.
type mcpWiring struct{}

// mcpCommands are the subcommands the mcp service adds beside serve.
func mcpCommands() map[string]command { return map[string]command{"mcp": mcpCmd} }

// mcpAuthz is auth.Can over the configured roles, as an mcp.Authorizer.
func mcpAuthz(roles map[string][]string) mcp.Authorizer {
	return func(_ context.Context, id *authv1.Identity, ns, perm string) (bool, error) {
		return auth.Can(id, ns, perm, roles), nil
	}
}

// emailTemplates is the email_templates binding of an email service in
// this process.
func emailTemplates(svc *email.Service) mcp.EmailTemplates {
	return func(context.Context) ([]mcp.EmailTemplate, error) {
		var out []mcp.EmailTemplate
		for _, t := range svc.Templates().List() {
			out = append(out, mcp.EmailTemplate{Name: t.Name, Variables: t.Variables, Source: t.Source})
		}
		return out, nil
	}
}

// wireMCP builds the mcp service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
// The MCP endpoint is served by the gateway process, where requests are
// authenticated; its tools reach the other services through the same
// bindings as the REST routes (the services themselves or their Connect
// clients).
func wireMCP(ctx context.Context, w *wiring) error {
	if !w.cfg.has("mcp") {
		return nil
	}
	if !w.cfg.has("gateway") {
		if len(w.cfg.Services) == 1 {
			return errors.New("the mcp service is served by a gateway process: run it as --services gateway,mcp (with --db-url and --auth-url for the services in other processes)")
		}
		return nil
	}
	// Writes by tools emit thing events like writes through REST.
	db := withThingEvents(thingsdb.Instrument(w.db, w.reg, "db"), w)
	var q mcp.Queue
	if w.queue.svc != nil {
		q = queue.RPC{S: w.queue.svc}
	}
	opts := mcp.Options{
		Queue:       q,
		DB:          db,
		Search:      db,
		Auth:        w.auth,
		Can:         mcpAuthz(w.cfg.Roles),
		CustomRoles: w.cfg.Roles,
		Version:     versionString(),
		Logger:      w.log,
		PageSize:    w.cfg.MCP.PageSize,
	}
	if w.email.api != nil {
		opts.Email = w.email.api
	}
	if w.email.svc != nil {
		opts.EmailTemplates = emailTemplates(w.email.svc)
	}
	if w.schedule.api != nil {
		opts.Schedule = w.schedule.api
	}
	if w.webhooks.svc != nil {
		opts.Webhooks = w.webhooks.svc
	}
	s, err := mcp.New(opts)
	if err != nil {
		return err
	}
	w.ups = append(w.ups, gateway.Upstream{
		Name:      "mcp",
		Prefixes:  mcp.Prefixes,
		Open:      mcp.OpenRoutes,
		Challenge: fmt.Sprintf("resource_metadata=%q", mcp.ResourceMetadataURL(w.cfg.PublicURL)),
		Routes: func(mux *http.ServeMux) {
			s.Routes(mux, mcp.HTTPOptions{PublicURL: w.cfg.PublicURL, AllowedOrigins: w.cfg.MCP.AllowedOrigins})
		},
	})
	w.log.Info("mcp service ready", "endpoint", w.cfg.PublicURL+mcp.Path, "tools", len(s.Tools()))
	return nil
}

const mcpUsage = `Usage:
  dotdo mcp --url http://127.0.0.1:8787 --key sk_live_...
      serve MCP on stdin/stdout; the tools call that running server's API
      with the key (or access token), under its permissions
  dotdo mcp --data-dir ./data [--key sk_live_...]
      serve MCP on stdin/stdout with the services in this process, on the
      data directory (or DATABASE_URL); as the admin unless a key is given

Flags:
`

// mcpCmd is `dotdo mcp`: an MCP server on stdio for a local agent.
func mcpCmd(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dotdo mcp", flag.ContinueOnError)
	fs.SetOutput(stderr)
	base := fs.String("url", getenv("DOTDO_URL"), "URL of a running dotdo server (env DOTDO_URL)")
	key := fs.String("key", "", "API key or access token to act with (env DOTDO_KEY)")
	dataDir := fs.String("data-dir", getenv("DOTDO_DATA_DIR"), "data directory of an all-in-one installation, for the in-process mode (env DOTDO_DATA_DIR)")
	dbURL := fs.String("database-url", firstNonEmpty(getenv("DATABASE_URL"), getenv("DOTDO_DATABASE_URL")), "PostgreSQL URL, for the in-process mode (env DATABASE_URL)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error; logs go to stderr")
	fs.Usage = func() { fmt.Fprint(stderr, mcpUsage); fs.PrintDefaults() }
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("dotdo mcp: unexpected argument %q; see dotdo mcp --help", fs.Arg(0))
	}
	if *key == "" {
		*key = getenv("DOTDO_KEY")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("dotdo mcp: --log-level %q: use debug, info, warn or error", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := mcp.Options{Version: versionString(), Logger: log}
	switch {
	case *base != "" && (*dataDir != "" || *dbURL != ""):
		return errors.New("dotdo mcp: give --url (a running server) or --data-dir/--database-url (in process), not both")
	case *base != "":
		if u, err := url.Parse(*base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("dotdo mcp: --url %q: want the server's base URL, such as http://127.0.0.1:8787", *base)
		}
		if *key == "" {
			return errors.New("dotdo mcp: --url needs --key (or DOTDO_KEY): an API key or access token")
		}
		r := mcp.NewRemote(*base, *key, nil)
		id, err := r.Whoami(ctx)
		if err != nil {
			return fmt.Errorf("dotdo mcp: %s refused the key: %w", *base, err)
		}
		opts.DB, opts.Search, opts.Queue, opts.Auth, opts.Can, opts.Identity = r, r, r.Queue(), r, r.Can, id
		opts.Email, opts.EmailTemplates, opts.Schedule, opts.Webhooks = r.Email(), r.Email().Templates, r.Schedule(), r.Webhooks()
	default:
		if *dataDir == "" {
			*dataDir = "./data"
		}
		closeAll, err := mcpLocal(ctx, &opts, *dataDir, *dbURL, *key, getenv, log)
		if err != nil {
			return fmt.Errorf("dotdo mcp: %w", err)
		}
		defer closeAll()
	}
	s, err := mcp.New(opts)
	if err != nil {
		return err
	}
	err = s.Run(ctx, &sdk.IOTransport{Reader: io.NopCloser(stdin), Writer: nopWriteCloser{stdout}})
	if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
		return nil // the client left, or we were told to stop
	}
	return err
}

// mcpLocal fills opts with the services in this process, on the data
// directory or PostgreSQL, and returns their closer.
func mcpLocal(ctx context.Context, opts *mcp.Options, dataDir, dbURL, key string, getenv func(string) string, log *slog.Logger) (func(), error) {
	roles, err := parseRoles(getenv("DOTDO_ROLES"))
	if err != nil {
		return nil, fmt.Errorf("DOTDO_ROLES: %w", err)
	}
	cfg := &config{DataDir: dataDir, DatabaseURL: dbURL, Services: allServices, SecretKey: getenv("DOTDO_SECRET_KEY"), DBMaxConns: 4, Roles: roles}
	d, err := openDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	closers := []func() error{d.close}
	closeAll := func() {
		for i := len(closers) - 1; i >= 0; i-- {
			closers[i]()
		}
	}
	db, err := thingsdb.New(d.be, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	closers = append(closers, db.Close)
	secret, err := secretKey(cfg)
	if err != nil {
		closeAll()
		return nil, err
	}
	a, err := auth.New(db, auth.Config{Issuer: firstNonEmpty(getenv("DOTDO_PUBLIC_URL"), "http://127.0.0.1:8787"), SecretKey: secret, CustomRoles: roles, Signup: "invite-only"}, log)
	if err != nil {
		closeAll()
		return nil, err
	}
	if err := a.Start(ctx); err != nil {
		closeAll()
		return nil, fmt.Errorf("start auth: %w", err)
	}
	id := &authv1.Identity{Subject: "local-admin", Kind: "user", Grants: map[string]*authv1.Grants{"*": {Roles: []string{"admin"}}}}
	if key != "" {
		res, err := a.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: key}))
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("the key is not valid in %s: %w", d.where, err)
		}
		id = res.Msg.Identity
	}
	if u := firstNonEmpty(getenv("NATS_URL"), getenv("DOTDO_NATS_URL")); u != "" {
		// The queues live in that NATS; an embedded one belongs to the
		// serve process and is not opened here.
		q, err := queue.Open(ctx, queue.Config{URL: u}, log)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("queue at NATS_URL: %w", err)
		}
		closers = append(closers, q.Close)
		opts.Queue = queue.RPC{S: q}
	}
	opts.DB, opts.Search, opts.Auth, opts.Can, opts.CustomRoles, opts.Identity = db, db, a, mcpAuthz(roles), roles, id
	log.Info("dotdo mcp on stdio", "database", d.where, "as", id.Kind+":"+id.Subject, "at", time.Now().UTC().Format(time.RFC3339))
	return closeAll, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }
