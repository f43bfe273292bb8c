package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dotdo/dotdo/internal/auth"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// errUsage means the error and the usage text were already printed.
var errUsage = errors.New("usage")

// errHelp means --help was asked for and printed.
var errHelp = errors.New("help")

// config is everything `dotdo serve` and `dotdo migrate` read from flags
// and DOTDO_* environment variables. Flags win over the environment.
type config struct {
	// Warnings are logged when serve starts: secrets given as flags.
	Warnings        []string
	Addr            string
	DataDir         string
	DatabaseURL     string
	Services        []string
	DBURL           string
	InternalToken   string
	Domain          string
	Hosts           map[string]string
	MaxBodyBytes    int64
	ReadTimeout     time.Duration
	WriteTimeout    time.Duration
	IdleTimeout     time.Duration
	ShutdownTimeout time.Duration
	LogFormat       string
	LogLevel        string
	DBMaxConns      int
	BootstrapKey    string
	AuthURL         string
	PublicURL       string
	Signup          string
	Roles           map[string][]string
	SecretKey       string
	RateLimit       string
	RateLimitAnon   string
	RateLimitRoutes string
	RedisURL        string
	OIDC            []auth.OIDCProvider
	Embedder        thingsdb.EmbedderConfig

	Queue    queueConfig
	Email    emailConfig
	Schedule scheduleConfig
	Webhooks webhooksConfig
	Dispatch dispatchConfig
	MCP      mcpConfig
}

// allServices are the services this build has, in start order.
var allServices = []string{"db", "auth", "queue", "email", "schedule", "webhooks", "dispatch", "mcp", "gateway"}

// optionLookup gives a service's config parser its options by flag name, the
// error for a bad value, and the environment.
type optionLookup struct {
	get    func(flag string) *option
	bad    func(flag, why string) error
	getenv func(string) string
}

// option is one setting: a flag, its environment variable and default.
type option struct {
	flag, env, def, help string
	value                string
}

// optionValue makes an option a flag.Value; options whose default is
// true or false are boolean flags (--flag alone means true).
type optionValue option

func (v *optionValue) String() string     { return v.value }
func (v *optionValue) Set(s string) error { v.value = s; return nil }
func (v *optionValue) IsBoolFlag() bool   { return (*option)(v).isBool() }

func (o *option) isBool() bool { return o.def == "true" || o.def == "false" }

// parseConfig parses args for command cmd into cfg. Every option is documented
// in --help with its environment variable and default.
func parseConfig(cmd string, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	opts := []*option{
		{flag: "addr", env: "DOTDO_ADDR", def: "127.0.0.1:8787", help: "address to listen on (host:port; port 0 picks a free one)"},
		{flag: "data-dir", env: "DOTDO_DATA_DIR", def: "./data", help: "directory for the embedded SQLite database (created if missing)"},
		{flag: "database-url", env: "DATABASE_URL", def: "", help: "postgres://user:pass@host:5432/db?sslmode=disable selects PostgreSQL instead of SQLite (DOTDO_DATABASE_URL also works)"},
		{flag: "services", env: "DOTDO_SERVICES", def: "all", help: "comma-separated services to run in this process: all, or some of " + strings.Join(allServices, ",")},
		{flag: "db-url", env: "DOTDO_DB_URL", def: "", help: "URL of a db service in another process (http://host:port), for a gateway run without db"},
		{flag: "domain", env: "DOTDO_DOMAIN", def: "", help: "enables host routing: <service>.<domain> reaches only that service"},
		{flag: "hosts", env: "DOTDO_HOSTS", def: "", help: "more host routes, host=service pairs separated by commas (data.example.com=db)"},
		{flag: "max-body", env: "DOTDO_MAX_BODY", def: "1MiB", help: "largest request body; larger ones get 413 (bytes, or with KiB/MiB)"},
		{flag: "read-timeout", env: "DOTDO_READ_TIMEOUT", def: "30s", help: "time to read a whole request"},
		{flag: "write-timeout", env: "DOTDO_WRITE_TIMEOUT", def: "30s", help: "time to write a whole response"},
		{flag: "idle-timeout", env: "DOTDO_IDLE_TIMEOUT", def: "120s", help: "how long an idle keep-alive connection stays open"},
		{flag: "shutdown-timeout", env: "DOTDO_SHUTDOWN_TIMEOUT", def: "30s", help: "on SIGTERM, how long in-flight requests may take to finish"},
		{flag: "log-format", env: "DOTDO_LOG_FORMAT", def: "auto", help: "json, text, or auto (text on a terminal, JSON otherwise)"},
		{flag: "log-level", env: "DOTDO_LOG_LEVEL", def: "info", help: "debug, info, warn or error"},
		{flag: "db-max-conns", env: "DOTDO_DB_MAX_CONNS", def: "20", help: "PostgreSQL connection pool size"},
		{flag: "auth-url", env: "DOTDO_AUTH_URL", def: "", help: "URL of an auth service in another process (http://host:port), for a gateway run without auth"},
		{flag: "public-url", env: "DOTDO_PUBLIC_URL", def: "http://127.0.0.1:8787", help: "the URL clients use to reach the gateway; the issuer of access tokens"},
		{flag: "signup", env: "DOTDO_SIGNUP", def: "invite-only", help: "who may create an account: invite-only (admins create users) or open (POST /v1/auth/signup)"},
		{flag: "roles", env: "DOTDO_ROLES", def: "", help: "custom roles beside admin, user and viewer: name=perm+perm pairs separated by commas (mailer=email:send+queue:send)"},
		{flag: "rate-limit", env: "DOTDO_RATE_LIMIT", def: "6000/1m", help: "requests per API key or user: N/period (6000/1m), or off"},
		{flag: "rate-limit-anon", env: "DOTDO_RATE_LIMIT_ANON", def: "600/1m", help: "requests per IP address from callers without credentials: N/period, or off"},
		{flag: "rate-limit-routes", env: "DOTDO_RATE_LIMIT_ROUTES", def: "", help: "per-route limits that override the two above: \"METHOD /pattern=N/period\" (or =off) pairs separated by commas; POST /webhooks/{provider} has 60000/1m per IP unless set here"},
		{flag: "redis-url", env: "REDIS_URL", def: "", help: "redis://host:6379/0 shares rate limits between gateway replicas (DOTDO_REDIS_URL also works); in memory when empty"},
		{flag: "oidc", env: "DOTDO_OIDC", def: "", help: "OpenID Connect sign-in providers: name=issuer-url,client-id pairs separated by commas; each client secret comes from DOTDO_OIDC_<NAME>_CLIENT_SECRET; register <public-url>/v1/auth/oauth/<name>/callback with the provider; workos=<authkit-domain>,<client-id> is WorkOS AuthKit (acme-42.authkit.app, or a custom domain's https URL)"},
		{flag: "embedder", env: "DOTDO_EMBEDDER", def: "none", help: "how the db service turns text into vectors for vector and hybrid search: none, lexical-hash (offline, lexical, for development: it matches words, not meaning) or openai (any OpenAI-compatible /v1/embeddings server; the key comes from DOTDO_EMBEDDER_API_KEY)"},
		{flag: "embedder-url", env: "DOTDO_EMBEDDER_URL", def: "https://api.openai.com/v1", help: "base URL of the OpenAI-compatible embeddings server, up to /v1 (Ollama: http://127.0.0.1:11434/v1)"},
		{flag: "embedder-model", env: "DOTDO_EMBEDDER_MODEL", def: "text-embedding-3-small", help: "embedding model name, for --embedder openai"},
		{flag: "embedder-dims", env: "DOTDO_EMBEDDER_DIMS", def: "384", help: "embedding dimensions (a namespace's vectors all have this many)"},
	}
	for _, more := range [][]*option{queueOptions(), emailOptions(), scheduleOptions(), webhooksOptions(), dispatchOptions(), mcpOptions()} {
		opts = append(opts, more...)
	}
	fs := flag.NewFlagSet("dotdo "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	for _, o := range opts {
		o.value = o.def
		if v := getenv(o.env); v != "" {
			o.value = v
		} else if o.env == "DATABASE_URL" && getenv("DOTDO_DATABASE_URL") != "" {
			o.value = getenv("DOTDO_DATABASE_URL")
		} else if o.env == "REDIS_URL" && getenv("DOTDO_REDIS_URL") != "" {
			o.value = getenv("DOTDO_REDIS_URL")
		}
		fs.Var((*optionValue)(o), o.flag, o.help)
	}
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: dotdo %s [flags]\n\nFlags (each also read from its environment variable; flags win):\n", cmd)
		for _, o := range opts {
			def := o.def
			if def == "" {
				def = "none"
			}
			arg := " value"
			if o.isBool() {
				arg = ""
			}
			fmt.Fprintf(stderr, "  --%s%s\n    \t%s\n    \t(env %s; default %s)\n", o.flag, arg, o.help, o.env, def)
		}
		fmt.Fprintf(stderr, "\nEnvironment only (secrets stay out of process listings):\n  DOTDO_INTERNAL_TOKEN\n    \tservice credential for internal RPC between processes in split mode\n    \t(at least 32 characters; required when services run in separate processes)\n  DOTDO_SECRET_KEY\n    \t32 bytes as 64 hex characters; encrypts token signing keys at rest\n    \t(required with PostgreSQL; on SQLite kept in <data-dir>/secret.key when unset)\n  DOTDO_BOOTSTRAP_ADMIN_KEY\n    \ton first start with an empty store, the admin API key to create\n    \t(an sk_live_ key; without it a random one is created and printed once)\n  DOTDO_OIDC_<NAME>_CLIENT_SECRET\n    \tthe client secret of the --oidc provider <name> (capitals, - as _)\n  DOTDO_EMBEDDER_API_KEY\n    \tthe API key of the --embedder openai server (none for Ollama)\n")
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, errHelp
		}
		return nil, errUsage // the flag package printed the error and the usage
	}
	if fs.NArg() > 0 {
		// Also catches "--flag false" for a boolean flag, which would
		// otherwise read as true followed by an ignored "false".
		return nil, fmt.Errorf("unexpected argument %q; boolean flags take --flag=false; see dotdo %s --help", fs.Arg(0), cmd)
	}
	var onCommandLine []string
	fs.Visit(func(f *flag.Flag) { onCommandLine = append(onCommandLine, f.Name) })
	get := func(name string) *option {
		for _, o := range opts {
			if o.flag == name {
				return o
			}
		}
		panic("no option " + name)
	}
	bad := func(name, why string) error {
		o := get(name)
		return fmt.Errorf("--%s (env %s) = %q: %s", o.flag, o.env, o.value, why)
	}
	c := &config{
		Addr:          get("addr").value,
		DataDir:       get("data-dir").value,
		DatabaseURL:   get("database-url").value,
		DBURL:         get("db-url").value,
		InternalToken: getenv("DOTDO_INTERNAL_TOKEN"),
		Domain:        strings.ToLower(get("domain").value),
		LogFormat:     get("log-format").value,
		LogLevel:      get("log-level").value,
		Hosts:         map[string]string{},
	}
	c.Warnings = secretFlagWarnings(onCommandLine, get)
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return nil, bad("addr", "want host:port, such as 127.0.0.1:8787 or :8787")
	}
	if c.DataDir == "" {
		return nil, bad("data-dir", "must not be empty")
	}
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return nil, bad("database-url", "want postgres://user:pass@host:5432/db?sslmode=disable, or leave it empty for SQLite")
		}
	}
	svc := get("services").value
	if svc == "all" || svc == "" {
		c.Services = slices.Clone(allServices)
	} else {
		for _, s := range strings.Split(svc, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(allServices, s) {
				return nil, bad("services", "unknown service "+strconv.Quote(s)+"; use all or some of "+strings.Join(allServices, ","))
			}
			if !slices.Contains(c.Services, s) {
				c.Services = append(c.Services, s)
			}
		}
	}
	if c.DBURL != "" {
		u, err := url.Parse(c.DBURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, bad("db-url", "want the db service's base URL, such as http://127.0.0.1:8788")
		}
		c.DBURL = strings.TrimSuffix(c.DBURL, "/")
	}
	if hs := get("hosts").value; hs != "" {
		for _, pair := range strings.Split(hs, ",") {
			h, s, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || h == "" || !slices.Contains(allServices, s) || s == "gateway" {
				return nil, bad("hosts", "want host=service pairs separated by commas, such as data.example.com=db (services: db, auth)")
			}
			c.Hosts[strings.ToLower(h)] = s
		}
	}
	n, err := parseBytes(get("max-body").value)
	if err != nil || n < 1024 {
		return nil, bad("max-body", "want a size of at least 1KiB, such as 1048576, 512KiB or 4MiB")
	}
	c.MaxBodyBytes = n
	for _, d := range []struct {
		name string
		dst  *time.Duration
	}{{"read-timeout", &c.ReadTimeout}, {"write-timeout", &c.WriteTimeout}, {"idle-timeout", &c.IdleTimeout}, {"shutdown-timeout", &c.ShutdownTimeout}} {
		v, err := time.ParseDuration(get(d.name).value)
		if err != nil || v <= 0 {
			return nil, bad(d.name, "want a positive duration such as 30s or 2m")
		}
		*d.dst = v
	}
	if !slices.Contains([]string{"auto", "json", "text"}, c.LogFormat) {
		return nil, bad("log-format", "use auto, json or text")
	}
	if !slices.Contains([]string{"debug", "info", "warn", "error"}, c.LogLevel) {
		return nil, bad("log-level", "use debug, info, warn or error")
	}
	if c.DBMaxConns, err = strconv.Atoi(get("db-max-conns").value); err != nil || c.DBMaxConns < 1 || c.DBMaxConns > 1000 {
		return nil, bad("db-max-conns", "want a number from 1 to 1000")
	}
	c.AuthURL = strings.TrimSuffix(get("auth-url").value, "/")
	if c.AuthURL != "" {
		if u, err := url.Parse(c.AuthURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, bad("auth-url", "want the auth service's base URL, such as http://127.0.0.1:8789")
		}
	}
	c.PublicURL = strings.TrimSuffix(get("public-url").value, "/")
	if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, bad("public-url", "want the URL clients use, such as https://api.example.com")
	}
	c.Signup = get("signup").value
	if c.Signup != "open" && c.Signup != "invite-only" {
		return nil, bad("signup", "use open or invite-only")
	}
	if c.Roles, err = parseRoles(get("roles").value); err != nil {
		return nil, bad("roles", err.Error())
	}
	c.RateLimit, c.RateLimitAnon, c.RateLimitRoutes = get("rate-limit").value, get("rate-limit-anon").value, get("rate-limit-routes").value
	for _, name := range []string{"rate-limit", "rate-limit-anon"} {
		if _, err := parsePolicy("check", get(name).value); err != nil {
			return nil, bad(name, "want requests/period such as 600/1m, or off")
		}
	}
	c.RedisURL = get("redis-url").value
	if c.RedisURL != "" {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") {
			return nil, bad("redis-url", "want redis://host:6379/0")
		}
	}
	if c.has("auth") { // only the auth service talks to providers and needs their secrets
		if c.OIDC, err = auth.ParseOIDC(get("oidc").value, getenv); err != nil {
			return nil, bad("oidc", err.Error())
		}
	}
	if kind := get("embedder").value; kind != "none" {
		if kind != "lexical-hash" && kind != "openai" {
			return nil, bad("embedder", "use none, lexical-hash or openai")
		}
		dims, err := strconv.Atoi(get("embedder-dims").value)
		if err != nil || dims < 8 || dims > thingsdb.MaxEmbedding {
			return nil, bad("embedder-dims", fmt.Sprintf("want a number from 8 to %d", thingsdb.MaxEmbedding))
		}
		c.Embedder = thingsdb.EmbedderConfig{Kind: kind, Dims: dims, URL: strings.TrimSuffix(get("embedder-url").value, "/"), Model: get("embedder-model").value, APIKey: getenv("DOTDO_EMBEDDER_API_KEY")}
		if kind == "openai" {
			if u, err := url.Parse(c.Embedder.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return nil, bad("embedder-url", "want the server's base URL up to /v1, such as https://api.openai.com/v1")
			}
		}
	}
	l := optionLookup{get: get, bad: bad, getenv: getenv}
	for _, parse := range []func(*config, optionLookup) error{c.Queue.parse, c.Email.parse, c.Schedule.parse, c.Webhooks.parse, c.Dispatch.parse, c.MCP.parse} {
		if err := parse(c, l); err != nil {
			return nil, err
		}
	}
	c.SecretKey = getenv("DOTDO_SECRET_KEY")
	c.BootstrapKey = getenv("DOTDO_BOOTSTRAP_ADMIN_KEY")
	return c, nil
}

// has reports whether the process runs service s.
func (c *config) has(s string) bool { return slices.Contains(c.Services, s) }

// split reports whether some service this process needs runs elsewhere,
// or this process serves others: then internal RPC needs the token.
func (c *config) split() bool { return len(c.Services) != len(allServices) }

func parseBytes(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n < 0 || n > (1<<40)/mult {
		return 0, errors.New("bad size")
	}
	return n * mult, nil
}

// secretFlagWarnings names the flags given on the command line that carry
// a secret (webhook signing secrets, a database URL with a password):
// process listings show them to every user of the machine, while the
// environment variable does not.
func secretFlagWarnings(onCommandLine []string, get func(string) *option) []string {
	var out []string
	for _, name := range onCommandLine {
		secret := strings.HasPrefix(name, "webhooks-") && strings.HasSuffix(name, "-secrets")
		if name == "database-url" {
			if u, err := url.Parse(get(name).value); err == nil && u.User != nil {
				_, secret = u.User.Password()
			}
		}
		if secret {
			out = append(out, fmt.Sprintf("--%s puts a secret on the command line, where process listings show it; set %s instead", name, get(name).env))
		}
	}
	return out
}
