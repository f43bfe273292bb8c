package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dotdo/dotdo/internal/dispatch"
	"github.com/dotdo/dotdo/internal/gateway"
	"github.com/dotdo/dotdo/internal/gen/dotdo/dispatch/v1/dispatchv1connect"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// This file wires the dispatch service into the binary: its options, its
// config, its subcommands and its construction in serve.

// dispatchConfig is the dispatch service's part of the config.
type dispatchConfig struct {
	HostPattern    string
	CacheDir       string
	MaxModuleBytes int64
	Defaults       dispatch.Limits
	AllowPrivate   bool
	URL            string
	MaxCompiled    int
}

// dispatchOptions are the dispatch service's flags and environment variables.
func dispatchOptions() []*option {
	return []*option{
		{flag: "dispatch-host-pattern", env: "DOTDO_DISPATCH_HOST_PATTERN", def: "", help: "host names that reach a script, such as {script}.{ns}.workers.example.com; with --domain it defaults to {script}.{ns}.<domain>; off means none"},
		{flag: "dispatch-cache-dir", env: "DOTDO_DISPATCH_CACHE_DIR", def: "", help: "directory of compiled WebAssembly, so a restart does not recompile (default <data-dir>/wasm-cache)"},
		{flag: "dispatch-max-module", env: "DOTDO_DISPATCH_MAX_MODULE", def: "64MiB", help: "largest module a deploy may upload (bytes, or with KiB/MiB)"},
		{flag: "dispatch-wall-limit", env: "DOTDO_DISPATCH_WALL_LIMIT", def: "5s", help: "default wall-clock limit of one request to a script (namespaces may set up to 60s)"},
		{flag: "dispatch-memory-limit", env: "DOTDO_DISPATCH_MEMORY_LIMIT", def: "128MiB", help: "default memory limit of a script instance (namespaces may set up to 1GiB)"},
		{flag: "dispatch-subrequests", env: "DOTDO_DISPATCH_SUBREQUESTS", def: "50", help: "default number of host calls (fetch, things) one request may make"},
		{flag: "dispatch-url", env: "DOTDO_DISPATCH_URL", def: "", help: "URL of a dispatch service in another process (http://host:port), for a gateway run without dispatch"},
		{flag: "dispatch-allow-private-egress", env: "DOTDO_DISPATCH_ALLOW_PRIVATE_EGRESS", def: "false", help: "let scripts' fetches reach loopback, private and link-local addresses when their namespace allows the host (off: only public addresses)"},
		{flag: "dispatch-max-compiled", env: "DOTDO_DISPATCH_MAX_COMPILED", def: "64", help: "compiled modules kept in memory; past it the least recently used is freed and recompiled from the cache dir when next called"},
		{flag: "dispatch-response-limit", env: "DOTDO_DISPATCH_RESPONSE_LIMIT", def: "8MiB", help: "default largest response a script may write"},
	}
}

// parse fills the dispatch config from its options.
func (q *dispatchConfig) parse(c *config, l optionLookup) error {
	q.HostPattern = l.get("dispatch-host-pattern").value
	if q.HostPattern == "" && c.Domain != "" {
		q.HostPattern = "{script}.{ns}." + c.Domain
	}
	if q.HostPattern == "off" {
		q.HostPattern = ""
	}
	if q.HostPattern != "" {
		if err := dispatch.CheckHostPattern(q.HostPattern); err != nil {
			return l.bad("dispatch-host-pattern", "want {script} and {ns} as whole labels, such as {script}.{ns}.workers.example.com")
		}
	}
	q.URL = strings.TrimSuffix(l.get("dispatch-url").value, "/")
	if q.URL != "" {
		if u, err := url.Parse(q.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return l.bad("dispatch-url", "want the dispatch service's base URL, such as http://127.0.0.1:8790")
		}
	}
	q.CacheDir = l.get("dispatch-cache-dir").value
	if q.CacheDir == "" {
		q.CacheDir = filepath.Join(c.DataDir, "wasm-cache")
	}
	n, err := parseBytes(l.get("dispatch-max-module").value)
	if err != nil || n < 1024 {
		return l.bad("dispatch-max-module", "want a size of at least 1KiB, such as 64MiB")
	}
	q.MaxModuleBytes = n
	d, err := time.ParseDuration(l.get("dispatch-wall-limit").value)
	if err != nil || d < time.Millisecond || d > time.Duration(dispatch.MaxLimits.WallMS)*time.Millisecond {
		return l.bad("dispatch-wall-limit", "want a duration from 1ms to 60s, such as 5s")
	}
	q.Defaults.WallMS = int(d / time.Millisecond)
	m, err := parseBytes(l.get("dispatch-memory-limit").value)
	if err != nil || m < 1<<20 || m > int64(dispatch.MaxLimits.MemoryMB)<<20 {
		return l.bad("dispatch-memory-limit", "want a size from 1MiB to 1024MiB, such as 128MiB")
	}
	q.Defaults.MemoryMB = int(m >> 20)
	var sub int
	if _, err := fmt.Sscanf(l.get("dispatch-subrequests").value, "%d", &sub); err != nil || sub < 0 || sub > dispatch.MaxLimits.Subrequests {
		return l.bad("dispatch-subrequests", fmt.Sprintf("want a number from 0 to %d", dispatch.MaxLimits.Subrequests))
	}
	q.Defaults.Subrequests = sub
	r, err := parseBytes(l.get("dispatch-response-limit").value)
	if err != nil || r < 1024 || r > dispatch.MaxLimits.ResponseBytes {
		return l.bad("dispatch-response-limit", "want a size from 1KiB to 64MiB, such as 8MiB")
	}
	q.Defaults.ResponseBytes = r
	if q.MaxCompiled, err = strconv.Atoi(l.get("dispatch-max-compiled").value); err != nil || q.MaxCompiled < 1 || q.MaxCompiled > 100000 {
		return l.bad("dispatch-max-compiled", "want a number from 1 to 100000, such as 64")
	}
	switch v := l.get("dispatch-allow-private-egress").value; v {
	case "true", "false":
		q.AllowPrivate = v == "true"
	default:
		return l.bad("dispatch-allow-private-egress", "use true or false")
	}
	return nil
}

// dispatchWiring holds the dispatch service's bindings for the services wired after it.
type dispatchWiring struct {
	svc *dispatch.Service
}

// dispatchCommands are the subcommands the dispatch service adds beside serve.
func dispatchCommands() map[string]command {
	return map[string]command{"deploy": deployCmd, "scripts": scriptsCmd}
}

// wireDispatch builds the dispatch service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireDispatch(ctx context.Context, w *wiring) error {
	dc := w.cfg.Dispatch
	log := w.log.With("service", "dispatch")
	up := gateway.Upstream{
		Name: "dispatch", Prefixes: dispatch.Prefixes, Open: dispatch.OpenRoutes,
		MaxBodyBytes: dc.MaxModuleBytes + 64<<10,
	}
	var (
		api dispatch.API
		idx *dispatch.HostIndex
	)
	switch {
	case w.cfg.has("dispatch"):
		if err := os.MkdirAll(dc.CacheDir, 0o750); err != nil {
			return fmt.Errorf("create the WebAssembly cache (set --dispatch-cache-dir or DOTDO_DISPATCH_CACHE_DIR to a writable place): %w", err)
		}
		// Scripts' writes to their namespace's things emit thing events
		// like writes through REST.
		svc, err := dispatch.New(withThingEvents(thingsdb.Instrument(w.db, w.reg, "db"), w), dispatch.Config{
			CacheDir: dc.CacheDir, Defaults: dc.Defaults, HostPattern: dc.HostPattern, Metrics: w.reg,
			Reserved: reservedHosts(w.cfg), AllowPrivateEgress: dc.AllowPrivate, MaxCompiled: dc.MaxCompiled,
		}, log)
		if err != nil {
			return err
		}
		w.closers = append(w.closers, svc.Close)
		if err := svc.Start(ctx); err != nil {
			return fmt.Errorf("start dispatch: %w", err)
		}
		w.dispatch.svc = svc
		api, idx = svc, svc.HostIndex
		up.Health = svc.Health
		up.RPCPath, up.RPC = dispatchv1connect.NewDispatchServiceHandler(dispatch.NewHandler(svc), w.serverOpts...)
		log.Info("dispatch service ready", "hostPattern", dc.HostPattern, "cache", dc.CacheDir)
	case w.cfg.has("gateway") && dc.URL != "":
		client := dispatch.NewClient(dispatchv1connect.NewDispatchServiceClient(w.client, dc.URL, w.clientOpts...))
		var err error
		if idx, err = dispatch.NewHostIndex(thingsdb.Instrument(w.db, w.reg, "db"), dc.HostPattern, 0, log); err != nil {
			return err
		}
		if err := idx.Start(ctx); err != nil {
			return err
		}
		api = client
		up.Health = client.Health
		up.RPCPath, up.RPC = "/"+dispatchv1connect.DispatchServiceName+"/", proxy(dc.URL, w.cfg.InternalToken, w.client.Transport)
	default:
		return nil
	}
	if w.cfg.has("gateway") {
		if dc.HostPattern != "" || idx != nil {
			up.Host, up.HostHandler = idx.MatchHost, dispatch.HostHandler(api, idx)
		}
		up.Routes = func(mux *http.ServeMux) {
			dispatch.Routes(mux, api, dispatch.RouteOptions{Authorize: authorizer(w.cfg.Roles), MaxModuleBytes: dc.MaxModuleBytes})
		}
	}
	w.ups = append(w.ups, up)
	return nil
}

// reservedHosts are the host names no script may claim: the public URL's,
// the domain and every <name>.<domain> (the services' hosts), and --hosts.
func reservedHosts(cfg *config) func(string) bool {
	public := ""
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		public = strings.ToLower(u.Hostname())
	}
	return func(h string) bool {
		if h == public {
			return true
		}
		if _, ok := cfg.Hosts[h]; ok {
			return true
		}
		if d := cfg.Domain; d != "" {
			if h == d {
				return true
			}
			if first, ok := strings.CutSuffix(h, "."+d); ok && !strings.Contains(first, ".") {
				return true
			}
		}
		return false
	}
}

// apiClient is what the client commands (deploy, scripts) share: the
// server's URL and the API key.
type apiClient struct {
	base, key string
	http      *http.Client
}

func clientFlags(fs *flag.FlagSet, getenv func(string) string) (*string, *string) {
	def := getenv("DOTDO_URL")
	if def == "" {
		def = "http://127.0.0.1:8787"
	}
	u := fs.String("url", def, "URL of the dotdo server (env DOTDO_URL)")
	k := fs.String("key", "", "API key (default: env DOTDO_API_KEY)")
	return u, k
}

func newAPIClient(base, key string, getenv func(string) string) (*apiClient, error) {
	if key == "" {
		key = getenv("DOTDO_API_KEY")
	}
	if key == "" {
		return nil, errors.New("no API key: set DOTDO_API_KEY or pass --key (a key with deploy:write on the namespace)")
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want the server's URL, such as http://127.0.0.1:8787", base)
	}
	return &apiClient{base: strings.TrimSuffix(base, "/"), key: key, http: &http.Client{Timeout: 5 * time.Minute}}, nil
}

// do sends a request and decodes a JSON answer into out, or returns the
// error envelope's message.
func (c *apiClient) do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 400 {
		var env struct {
			Error struct{ Code, Message string }
		}
		if json.Unmarshal(b, &env) == nil && env.Error.Message != "" {
			return fmt.Errorf("%s (%d %s)", env.Error.Message, res.StatusCode, env.Error.Code)
		}
		return fmt.Errorf("%s %s: %s", method, path, res.Status)
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// parseInterspersed parses flags before and after positional arguments
// (dotdo deploy --ns tenant hello.wasm --tag demo) and returns the latter.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// deployCmd runs `dotdo deploy --ns NS --name NAME [--tag T]... [--env K=V]... module.wasm`.
func deployCmd(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dotdo deploy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: dotdo deploy --ns NAMESPACE --name SCRIPT [--tag T]... [--env K=V]... [--wall 2s] [--memory-mb N] module.wasm\n\nFlags:\n")
		fs.PrintDefaults()
	}
	ns := fs.String("ns", "tenant", "dispatch namespace")
	name := fs.String("name", "", "script name (default: the file name without .wasm)")
	var tags, envs listFlag
	fs.Var(&tags, "tag", "a tag of the script (repeat for more, at most 8)")
	fs.Var(&envs, "env", "an environment variable K=V for the script (repeat for more)")
	wall := fs.Duration("wall", 0, "wall-clock limit per request, within the namespace's")
	mem := fs.Int("memory-mb", 0, "memory limit in MiB, within the namespace's")
	base, key := clientFlags(fs, getenv)
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	file := pos[0]
	if *name == "" {
		*name = strings.TrimSuffix(filepath.Base(file), ".wasm")
	}
	module, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	md := dispatch.Metadata{Tags: tags, Env: map[string]string{}, Limits: dispatch.Limits{WallMS: int(*wall / time.Millisecond), MemoryMB: *mem}}
	for _, kv := range envs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--env %q: want KEY=value", kv)
		}
		md.Env[k] = v
	}
	c, err := newAPIClient(*base, *key, getenv)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	pw, _ := mw.CreateFormField("metadata")
	json.NewEncoder(pw).Encode(md)
	fw, _ := mw.CreateFormFile("module", filepath.Base(file))
	fw.Write(module)
	mw.Close()
	var sc dispatch.Script
	start := time.Now()
	if err := c.do(ctx, "PUT", "/v1/dispatch/namespaces/"+url.PathEscape(*ns)+"/scripts/"+url.PathEscape(*name), mw.FormDataContentType(), &buf, &sc); err != nil {
		return fmt.Errorf("deploy %s/%s: %w", *ns, *name, err)
	}
	fmt.Fprintf(stdout, "deployed %s/%s version %d (%d bytes, sha256 %s) in %v\n", sc.Namespace, sc.Name, sc.Current.Version, sc.Current.Size, sc.Current.SHA256[:12], time.Since(start).Round(time.Millisecond))
	return nil
}

// scriptsCmd runs `dotdo scripts list|rollback|delete`.
func scriptsCmd(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	usage := "Usage: dotdo scripts list [--ns NS] [--tags a,b]\n       dotdo scripts rollback --ns NS --name SCRIPT\n       dotdo scripts delete --ns NS (--name SCRIPT | --tags a,b)\n"
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	fs := flag.NewFlagSet("dotdo scripts "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	ns := fs.String("ns", "tenant", "dispatch namespace")
	name := fs.String("name", "", "script name")
	tags := fs.String("tags", "", "comma-separated tags; a script must carry all of them")
	asJSON := fs.Bool("json", false, "print JSON")
	base, key := clientFlags(fs, getenv)
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if len(pos) > 0 {
		return fmt.Errorf("unexpected argument %q; %s", pos[0], usage)
	}
	c, err := newAPIClient(*base, *key, getenv)
	if err != nil {
		return err
	}
	path := "/v1/dispatch/namespaces/" + url.PathEscape(*ns) + "/scripts"
	switch args[0] {
	case "list":
		if *tags != "" {
			path += "?tags=" + url.QueryEscape(*tags)
		}
		var out struct {
			Items []dispatch.Script `json:"items"`
		}
		if err := c.do(ctx, "GET", path, "", nil, &out); err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(stdout).Encode(out.Items)
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tVERSION\tSIZE\tTAGS\tUPDATED")
		for _, s := range out.Items {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", s.Name, s.Current.Version, s.Current.Size, strings.Join(s.Current.Tags, ","), s.UpdatedAt)
		}
		return tw.Flush()
	case "rollback":
		if *name == "" {
			return errors.New("give --name")
		}
		var sc dispatch.Script
		if err := c.do(ctx, "POST", path+"/"+url.PathEscape(*name)+"/rollback", "", nil, &sc); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s/%s is at version %d\n", sc.Namespace, sc.Name, sc.Current.Version)
		return nil
	case "delete":
		switch {
		case *name != "":
			if err := c.do(ctx, "DELETE", path+"/"+url.PathEscape(*name), "", nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deleted %s/%s\n", *ns, *name)
		case *tags != "":
			var out struct {
				Deleted []string `json:"deleted"`
			}
			if err := c.do(ctx, "DELETE", path+"?tags="+url.QueryEscape(*tags), "", nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "deleted %d scripts: %s\n", len(out.Deleted), strings.Join(out.Deleted, " "))
		default:
			return errors.New("give --name or --tags")
		}
		return nil
	}
	fmt.Fprint(stderr, usage)
	return errUsage
}
