package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// keysCmd runs `dotdo keys create`: it makes an API key directly in the
// store (the data directory or DATABASE_URL), for scripts and for the first
// key of an installation, and prints the secret once on stdout.
func keysCmd(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprint(stderr, "Usage: dotdo keys create --role ROLE [--ns a,b] [--name NAME] [--test] [--expires 720h]\n")
		return errUsage
	}
	fs := flag.NewFlagSet("dotdo keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	envOr := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	role := fs.String("role", "", "role of the key: admin, user, viewer or a custom role (required unless --permissions)")
	perms := fs.String("permissions", "", "comma-separated permissions instead of, or beside, the role (things:read,queue:send)")
	nss := fs.String("ns", "*", "comma-separated namespaces the key may use; * is every tenant namespace")
	name := fs.String("name", "cli", "a name to recognise the key by")
	test := fs.Bool("test", false, "make an sk_test_ key: no real outbound side effects")
	expires := fs.Duration("expires", 0, "lifetime of the key, such as 720h; 0 never expires")
	dataDir := fs.String("data-dir", envOr("DOTDO_DATA_DIR", "./data"), "data directory (env DOTDO_DATA_DIR)")
	dbURL := fs.String("database-url", envOr("DATABASE_URL", getenv("DOTDO_DATABASE_URL")), "PostgreSQL URL (env DATABASE_URL)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *role == "" && *perms == "" {
		return errors.New("give --role (admin, user, viewer) or --permissions")
	}
	grants := map[string]*authv1.Grants{}
	for _, ns := range strings.Split(*nss, ",") {
		ns = strings.TrimSpace(ns)
		g := &authv1.Grants{}
		if *role != "" {
			g.Roles = []string{*role}
		}
		if *perms != "" {
			g.Permissions = strings.Split(*perms, ",")
		}
		grants[ns] = g
	}
	cfg := &config{DataDir: *dataDir, DatabaseURL: *dbURL, DBMaxConns: 2, SecretKey: getenv("DOTDO_SECRET_KEY")}
	roles, err := parseRoles(getenv("DOTDO_ROLES"))
	if err != nil {
		return fmt.Errorf("DOTDO_ROLES: %w", err)
	}
	d, err := openDatabase(ctx, cfg)
	if err != nil {
		return err
	}
	defer d.close()
	key, err := secretKey(cfg)
	if err != nil {
		return err
	}
	log := newLogger(&config{LogFormat: "text", LogLevel: "warn"}, stderr)
	db, err := thingsdb.New(d.be, log)
	if err != nil {
		return err
	}
	defer db.Close()
	svc, err := auth.New(db, auth.Config{SecretKey: key, CustomRoles: roles}, log)
	if err != nil {
		return err
	}
	req := &authv1.CreateAPIKeyRequest{Name: *name, Test: *test, Grants: grants, CreatedBy: "cli"}
	if *expires > 0 {
		req.ExpiresAt = time.Now().Add(*expires).Unix()
	}
	res, err := svc.CreateAPIKey(ctx, connect.NewRequest(req))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, res.Msg.Secret)
	fmt.Fprintf(stderr, "created key %s (%s); the secret above is shown only once\n", res.Msg.Key.Id, res.Msg.Key.Name)
	return nil
}
