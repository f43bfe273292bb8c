package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/gateway"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1/schedulev1connect"
	"github.com/dotdo/dotdo/internal/postgres"
	"github.com/dotdo/dotdo/internal/schedule"
	"github.com/dotdo/dotdo/internal/sqlite"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// This file wires the schedule service into the binary: its options, its
// config, its subcommands and its construction in serve.

// scheduleConfig is the schedule service's part of the config.
type scheduleConfig struct {
	// URL is a schedule service in another process, for a gateway.
	URL string
	// Tasks are the built-in tasks' schedules; "off" disables one.
	Tasks        map[string]string
	AllowPrivate bool
	Retention    []schedule.RetentionPolicy
	Backups      int
	// HealthTargets are services in other processes whose /health
	// health-check-services polls, by name.
	HealthTargets map[string]string
	RunRetention  time.Duration
	Sync          time.Duration
}

// scheduleOptions are the schedule service's flags and environment variables.
func scheduleOptions() []*option {
	return []*option{
		{flag: "schedule-url", env: "DOTDO_SCHEDULE_URL", def: "", help: "URL of a schedule service in another process (http://host:port), for a gateway run without it"},
		{flag: "schedule-tasks", env: "DOTDO_SCHEDULE_TASKS", def: "", help: "built-in task schedules, name=spec pairs separated by commas (health-check-services=@every 1m,backup-database=off); each runs on its default schedule unless named here; off disables one"},
		{flag: "schedule-allow-private", env: "DOTDO_SCHEDULE_ALLOW_PRIVATE", def: "false", help: "let user tasks' HTTP actions call loopback and private addresses (refused by default, checked on the address dialled)"},
		{flag: "schedule-retention", env: "DOTDO_SCHEDULE_RETENTION", def: "", help: "cleanup-old-generations policies: ns/type=age pairs separated by commas (default/Generation=30d); things of the type in the namespace created longer ago are deleted"},
		{flag: "schedule-backups", env: "DOTDO_SCHEDULE_BACKUPS", def: "7", help: "how many backups backup-database keeps in <data-dir>/backups"},
		{flag: "schedule-health-targets", env: "DOTDO_SCHEDULE_HEALTH_TARGETS", def: "", help: "services in other processes health-check-services polls: name=http://host:port pairs separated by commas (their /health); services in this process are always checked"},
		{flag: "schedule-run-retention", env: "DOTDO_SCHEDULE_RUN_RETENTION", def: "720h", help: "how long task runs are kept"},
		{flag: "schedule-sync", env: "DOTDO_SCHEDULE_SYNC", def: "5s", help: "how often a schedule replica reloads tasks changed through other replicas"},
	}
}

// parse fills the schedule config from its options.
func (q *scheduleConfig) parse(c *config, l optionLookup) error {
	q.URL = strings.TrimSuffix(l.get("schedule-url").value, "/")
	if q.URL != "" {
		if u, err := url.Parse(q.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return l.bad("schedule-url", "want the schedule service's base URL, such as http://127.0.0.1:8790")
		}
	}
	q.Tasks = map[string]string{}
	for n, spec := range schedule.DefaultBuiltinSchedules {
		q.Tasks[n] = spec
	}
	if s := strings.TrimSpace(l.get("schedule-tasks").value); s != "" {
		for _, pair := range strings.Split(s, ",") {
			name, spec, ok := strings.Cut(strings.TrimSpace(pair), "=")
			name, spec = strings.TrimSpace(name), strings.TrimSpace(spec)
			if _, known := schedule.DefaultBuiltinSchedules[name]; !ok || !known {
				names := make([]string, 0, len(schedule.DefaultBuiltinSchedules))
				for n := range schedule.DefaultBuiltinSchedules {
					names = append(names, n)
				}
				slices.Sort(names)
				return l.bad("schedule-tasks", fmt.Sprintf("%q: want name=schedule or name=off for a built-in task (%s)", pair, strings.Join(names, ", ")))
			}
			if spec != "off" {
				if _, err := schedule.ParseSchedule(spec); err != nil {
					return l.bad("schedule-tasks", err.Error())
				}
			}
			q.Tasks[name] = spec
		}
	}
	q.AllowPrivate = l.get("schedule-allow-private").value == "true"
	var err error
	if q.Retention, err = schedule.ParseRetention(l.get("schedule-retention").value); err != nil {
		return l.bad("schedule-retention", err.Error())
	}
	for _, p := range q.Retention {
		if !thingsdb.ValidNamespace(p.Ns) || !thingsdb.ValidType(p.Type) {
			return l.bad("schedule-retention", fmt.Sprintf("%s/%s is not a valid namespace and type", p.Ns, p.Type))
		}
	}
	if q.Backups, err = strconv.Atoi(l.get("schedule-backups").value); err != nil || q.Backups < 1 || q.Backups > 1000 {
		return l.bad("schedule-backups", "want a number from 1 to 1000")
	}
	q.HealthTargets = map[string]string{}
	if s := strings.TrimSpace(l.get("schedule-health-targets").value); s != "" {
		for _, pair := range strings.Split(s, ",") {
			name, u, ok := strings.Cut(strings.TrimSpace(pair), "=")
			pu, err := url.Parse(u)
			if !ok || name == "" || err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
				return l.bad("schedule-health-targets", fmt.Sprintf("%q: want name=http://host:port", pair))
			}
			q.HealthTargets[name] = strings.TrimSuffix(u, "/")
		}
	}
	if q.RunRetention, err = time.ParseDuration(l.get("schedule-run-retention").value); err != nil || q.RunRetention < time.Hour {
		return l.bad("schedule-run-retention", "want a duration of at least 1h, such as 720h")
	}
	if q.Sync, err = time.ParseDuration(l.get("schedule-sync").value); err != nil || q.Sync < 100*time.Millisecond || q.Sync > time.Hour {
		return l.bad("schedule-sync", "want a duration from 100ms to 1h, such as 5s")
	}
	return nil
}

// scheduleWiring holds the schedule service's bindings for the services
// wired after it. limits counts the gateway's rate-limit refusals for
// check-rate-limits (nil without a gateway here).
type scheduleWiring struct {
	limits *schedule.LimitRecorder
	// api is the schedule service here or its Connect client, for the
	// services wired later (mcp); nil when no schedule is reachable.
	api schedule.API
	// svc is the schedule service when it runs in this process.
	svc *schedule.Service
}

// recordLimit is the gateway's hook for a refused request.
func (s scheduleWiring) recordLimit(key, policy string) {
	if s.limits != nil {
		s.limits.Record(key, policy)
	}
}

// scheduleCommands are the subcommands the schedule service adds beside serve.
func scheduleCommands() map[string]command {
	return map[string]command{"restore": restoreCmd}
}

// scheduleDB is what the schedule service and its built-in tasks need
// from the db binding.
type scheduleDB interface {
	schedule.DB
	schedule.Purger
	schedule.Embeddings
	schedule.Analytics
}

// wireSchedule builds the schedule service in this process when it runs here,
// or a client to it when a service here needs it, and adds its upstream.
func wireSchedule(ctx context.Context, w *wiring) error {
	cfg := w.cfg
	if cfg.has("gateway") && w.db != nil {
		w.schedule.limits = schedule.NewLimitRecorder(nil)
		if !cfg.has("schedule") {
			// The schedule service runs elsewhere: hand it the refusals
			// counted here through the db each minute and at shutdown.
			rec, db := w.schedule.limits, w.db
			go func() {
				t := time.NewTicker(time.Minute)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						if err := rec.Flush(ctx, db); err != nil && ctx.Err() == nil {
							w.log.Warn("recording rate-limit refusals failed", "err", err)
						}
					}
				}
			}()
			w.closers = append(w.closers, func() error {
				fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return rec.Flush(fctx, db)
			})
		}
	}
	if !cfg.has("schedule") {
		if cfg.has("gateway") && cfg.Schedule.URL != "" {
			client := schedulev1connect.NewScheduleServiceClient(w.client, cfg.Schedule.URL, w.clientOpts...)
			w.schedule.api = client
			authz := authorizer(cfg.Roles)
			w.ups = append(w.ups, gateway.Upstream{
				Name: "schedule", Prefixes: schedule.Prefixes, RPCPath: "/" + schedulev1connect.ScheduleServiceName + "/",
				RPC: proxy(cfg.Schedule.URL, cfg.InternalToken, w.client.Transport),
				Health: func(ctx context.Context) error {
					_, err := client.Health(ctx, connect.NewRequest(&schedulev1.HealthRequest{}))
					return err
				},
				Routes: func(mux *http.ServeMux) { schedule.Routes(mux, client, schedule.RouteOptions{Authorize: authz}) },
			})
		}
		return nil
	}
	var err error
	db, ok := w.db.(scheduleDB)
	if !ok {
		return errors.New("schedule: the db binding lacks PurgeExpired, GenerateMissingEmbeddings or UpdateAnalytics")
	}
	clock := schedule.RealClock{}
	sc := schedule.Config{AllowPrivate: cfg.Schedule.AllowPrivate, RunRetention: cfg.Schedule.RunRetention, SyncInterval: cfg.Schedule.Sync}
	if w.queue.svc != nil {
		sc.Queue = schedule.Queue{Q: w.queue.svc}
	}
	if cfg.SecretKey != "" || (cfg.has("db") && cfg.DatabaseURL == "") {
		// The key that seals auth's signing keys seals HTTP actions'
		// header values too.
		if sc.SecretKey, err = secretKey(cfg); err != nil {
			return err
		}
	} else {
		w.log.Warn("schedule: HTTP action headers are stored unsealed; set DOTDO_SECRET_KEY (the same on every replica) to seal them")
	}
	backuper, ok := w.db.(schedule.Backuper)
	if !ok {
		return errors.New("schedule: the db binding lacks Backup")
	}
	// The services wired after this one (webhooks, dispatch, mcp) are in
	// w.ups only once serve has wired them all; the upstream's Routes hook
	// below runs then, in serve's goroutine, and takes the full list.
	var targets atomic.Pointer[[]schedule.HealthTarget]
	first := healthTargets(w)
	targets.Store(&first)
	log := w.log.With("service", "schedule")
	work := map[string]func(context.Context) (string, error){
		"cleanup-expired-sessions":    schedule.PurgeExpired(db, "sessions and refresh tokens"),
		"cleanup-expired-api-keys":    schedule.PurgeExpired(db, "API keys"),
		"cleanup-old-generations":     schedule.CleanupOldGenerations(db, clock, cfg.Schedule.Retention),
		"generate-missing-embeddings": schedule.GenerateMissingEmbeddings(db),
		"update-analytics":            schedule.UpdateAnalytics(db),
		"backup-database":             schedule.BackupDatabase(backuper, cfg.Schedule.Backups),
		"health-check-services":       schedule.HealthCheckServices(db, clock, func() []schedule.HealthTarget { return *targets.Load() }, 7*24*time.Hour, log),
		"check-rate-limits":           schedule.CheckRateLimits(db, clock, w.schedule.limits),
	}
	descriptions := map[string]string{
		"cleanup-expired-sessions":    "deletes expired sessions and refresh tokens (PurgeExpired)",
		"cleanup-expired-api-keys":    "deletes expired API keys (PurgeExpired)",
		"cleanup-old-generations":     "deletes things older than the --schedule-retention policies",
		"generate-missing-embeddings": "embeds things of namespaces with embed-on-write that have no embedding",
		"update-analytics":            "rolls analytics events up into hourly and daily counts",
		"backup-database":             "backs the database up into the db process's <data-dir>/backups and keeps the newest --schedule-backups",
		"health-check-services":       "records each service's health and an event when one changes",
		"check-rate-limits":           "reports the API keys and IPs that hit their rate limits",
	}
	var off []string
	for name, spec := range cfg.Schedule.Tasks {
		if spec == "off" {
			off = append(off, name)
			continue
		}
		b := schedule.Builtin{Name: name, Schedule: spec, Description: descriptions[name], Run: work[name]}
		if name == "backup-database" || name == "generate-missing-embeddings" {
			b.Timeout = time.Hour
		}
		sc.Builtins = append(sc.Builtins, b)
	}
	svc, err := schedule.New(db, sc, w.log)
	if err != nil {
		return err
	}
	for _, c := range svc.Collectors() {
		if err := w.reg.Register(c); err != nil {
			return fmt.Errorf("schedule metrics: %w", err)
		}
	}
	for _, name := range off {
		if err := svc.RemoveBuiltin(ctx, name); err != nil {
			return fmt.Errorf("schedule: turn %s off: %w", name, err)
		}
	}
	if err := svc.Start(ctx); err != nil {
		return fmt.Errorf("start schedule: %w", err)
	}
	go svc.Run(ctx)
	w.closers = append(w.closers, svc.Close)
	w.schedule.api, w.schedule.svc = svc, svc
	path, rpc := schedulev1connect.NewScheduleServiceHandler(svc, w.serverOpts...)
	up := gateway.Upstream{
		Name: "schedule", Prefixes: schedule.Prefixes, RPCPath: path, RPC: rpc,
		Health: func(ctx context.Context) error {
			_, err := svc.Health(ctx, connect.NewRequest(&schedulev1.HealthRequest{}))
			return err
		},
	}
	authz := authorizer(cfg.Roles)
	up.Routes = func(mux *http.ServeMux) {
		all := healthTargets(w)
		targets.Store(&all)
		if cfg.has("gateway") {
			schedule.Routes(mux, svc, schedule.RouteOptions{Authorize: authz})
		}
	}
	w.ups = append(w.ups, up)
	w.log.Info("schedule service ready", "builtins", len(sc.Builtins), "off", off, "allowPrivate", sc.AllowPrivate)
	return nil
}

// healthTargets are the services health-check-services checks: the ones
// this process reaches through bindings, and the --schedule-health-targets
// over HTTP.
func healthTargets(w *wiring) []schedule.HealthTarget {
	var out []schedule.HealthTarget
	if db := w.db; db != nil {
		out = append(out, schedule.HealthTarget{Name: "db", Check: func(ctx context.Context) error {
			_, err := db.Health(ctx, connect.NewRequest(&dbv1.HealthRequest{}))
			return err
		}})
	}
	if a := w.auth; a != nil {
		out = append(out, schedule.HealthTarget{Name: "auth", Check: func(ctx context.Context) error {
			_, err := a.Health(ctx, connect.NewRequest(&authv1.HealthRequest{}))
			return err
		}})
	}
	for _, up := range w.ups {
		if up.Health != nil {
			out = append(out, schedule.HealthTarget{Name: up.Name, Check: up.Health})
		}
	}
	names := make([]string, 0, len(w.cfg.Schedule.HealthTargets))
	for n := range w.cfg.Schedule.HealthTargets {
		names = append(names, n)
	}
	slices.Sort(names)
	client := w.client
	for _, n := range names {
		u := w.cfg.Schedule.HealthTargets[n] + "/health"
		out = append(out, schedule.HealthTarget{Name: n, Check: func(ctx context.Context) error {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
			if err != nil {
				return err
			}
			res, err := client.Do(req)
			if err != nil {
				return fmt.Errorf("GET %s: %w", u, err)
			}
			io.Copy(io.Discard, io.LimitReader(res.Body, 64<<10))
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %d", u, res.StatusCode)
			}
			return nil
		}})
	}
	return out
}

// restoreCmd is `dotdo restore <file> [--data-dir D | --database-url U]`:
// it loads a backup-database backup into an empty store. A SQLite backup
// (.db) becomes <data-dir>/dotdo.db; a PostgreSQL export (.jsonl) is
// loaded into DATABASE_URL's schema in one transaction.
func restoreCmd(ctx context.Context, args []string, getenv func(string) string, _ io.Reader, stdout, stderr io.Writer) error {
	var file string
	var rest []string
	for _, a := range args {
		if file == "" && !strings.HasPrefix(a, "-") && (len(rest) == 0 || !needsValue(rest[len(rest)-1])) {
			file = a
			continue
		}
		rest = append(rest, a)
	}
	if file == "" {
		fmt.Fprint(stderr, "Usage: dotdo restore <backup file> [--data-dir dir | --database-url postgres://...]\n\nRestores a backup made by the backup-database task into an empty store. Stop dotdo first.\n")
		return errUsage
	}
	cfg, err := parseConfig("restore", rest, getenv, stderr)
	if errors.Is(err, errHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	isSQLite, err := thingsdb.IsSQLiteBackup(file)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if cfg.DatabaseURL != "" {
		if isSQLite {
			return errors.New("restore: this is a SQLite backup; restore it into a SQLite data directory (--data-dir, without DATABASE_URL)")
		}
		db, err := postgres.Open(ctx, cfg.DatabaseURL, 4)
		if err != nil {
			return err
		}
		defer db.Close()
		if _, err := postgres.Migrate(ctx, db); err != nil {
			return fmt.Errorf("restore: migrate PostgreSQL: %w", err)
		}
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer f.Close()
		n, err := thingsdb.RestorePostgres(ctx, db, f)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		fmt.Fprintf(stdout, "restored %d rows from %s into PostgreSQL\n", n, file)
		return nil
	}
	if !isSQLite {
		return errors.New("restore: this is not a SQLite backup; a PostgreSQL export (.jsonl) restores with DATABASE_URL set")
	}
	target := filepath.Join(cfg.DataDir, "dotdo.db")
	if _, err := os.Stat(target); err == nil {
		db, err := sqlite.Open(target)
		if err != nil {
			return err
		}
		empty, err := thingsdb.Empty(ctx, db.Read)
		db.Close()
		if err != nil && !strings.Contains(err.Error(), "no such table") {
			return fmt.Errorf("restore: %w", err)
		}
		if !empty && err == nil {
			return fmt.Errorf("restore: %s: %w", target, thingsdb.ErrNotEmpty)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	tmp := target + ".restore"
	if err := copyFile(file, tmp); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		os.Remove(target + suffix)
	}
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	db, err := sqlite.Open(target)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return fmt.Errorf("restore: migrate %s: %w", target, err)
	}
	var things int64
	db.Read.QueryRowContext(ctx, "SELECT COUNT(*) FROM things").Scan(&things)
	fmt.Fprintf(stdout, "restored %s into %s (%d things)\n", file, target, things)
	return nil
}

// needsValue reports whether a flag given as "--flag" takes the next
// argument as its value.
func needsValue(a string) bool {
	if !strings.HasPrefix(a, "-") || strings.Contains(a, "=") {
		return false
	}
	name := strings.TrimLeft(a, "-")
	return name != "help" && name != "h" && !strings.HasPrefix(name, "schedule-allow-private")
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
