package schedule

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// The built-in tasks and their default schedules.
var DefaultBuiltinSchedules = map[string]string{
	"cleanup-expired-sessions":    "@hourly",
	"cleanup-expired-api-keys":    "@daily",
	"cleanup-old-generations":     "@weekly",
	"generate-missing-embeddings": "@daily",
	"update-analytics":            "@hourly",
	"backup-database":             "@daily",
	"health-check-services":       "@every 5m",
	"check-rate-limits":           "@hourly",
}

// Purger is the db binding's purge of expired things.
type Purger interface {
	PurgeExpired(context.Context, *connect.Request[dbv1.PurgeExpiredRequest]) (*connect.Response[dbv1.PurgeExpiredResponse], error)
}

// PurgeExpired returns the work of cleanup-expired-sessions and
// cleanup-expired-api-keys: sessions, refresh tokens and API keys with an
// expiry are things with expiresAt in _auth, which the db service hides
// once expired and deletes on PurgeExpired. One call removes every expired
// thing, whatever its type; the two tasks keep their own schedules.
func PurgeExpired(db Purger, what string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var total int64
		for i := 0; i < 100; i++ {
			res, err := db.PurgeExpired(ctx, connect.NewRequest(&dbv1.PurgeExpiredRequest{Limit: 10000}))
			if err != nil {
				return fmt.Sprintf("purged %d expired things", total), fmt.Errorf("purge expired %s: %w", what, err)
			}
			total += res.Msg.Purged
			if res.Msg.Purged < 10000 {
				break
			}
		}
		return fmt.Sprintf("purged %d expired things (%s among them)", total, what), nil
	}
}

// CleanupExpiredAPIKeys returns the work of cleanup-expired-api-keys. An
// API key is two things in _auth: its KeyHash (the credential), stored
// with expiresAt, which PurgeExpired deletes; and its APIKey record (name,
// grants, expiresAt in Unix seconds in its data), kept without a TTL so
// that expired keys still list. Once expired, both go.
func CleanupExpiredAPIKeys(db DB, purger Purger, clock Clock) func(context.Context) (string, error) {
	purge := PurgeExpired(purger, "API key credentials")
	return func(ctx context.Context) (string, error) {
		out, err := purge(ctx)
		if err != nil {
			return out, err
		}
		deleted := 0
		for i := 0; i < 100; i++ {
			res, err := db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: "_auth", Type: "APIKey",
				Where: fmt.Sprintf(`{"expiresAt":{"lte":%d}}`, clock.Now().Unix()), Limit: 500}))
			if err != nil {
				return out, fmt.Errorf("list expired API keys: %w", err)
			}
			if len(res.Msg.Items) == 0 {
				break
			}
			var ops []*dbv1.Op
			for _, th := range res.Msg.Items {
				ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: "_auth", Id: th.Id, IfVersion: th.Version}}})
			}
			if _, err := db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: "_auth", Ops: ops})); err != nil {
				return out, fmt.Errorf("delete expired API keys: %w", err)
			}
			deleted += len(ops)
		}
		return fmt.Sprintf("%s; deleted %d expired API keys", out, deleted), nil
	}
}

// RetentionPolicy deletes things of Type in Ns created more than MaxAge
// ago.
type RetentionPolicy struct {
	Ns     string
	Type   string
	MaxAge time.Duration
}

// ParseRetention reads policies: ns/type=30d pairs separated by commas
// (d for days, or any Go duration).
func ParseRetention(s string) ([]RetentionPolicy, error) {
	var out []RetentionPolicy
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, def := range strings.Split(s, ",") {
		def = strings.TrimSpace(def)
		key, age, ok := strings.Cut(def, "=")
		ns, typ, ok2 := strings.Cut(key, "/")
		if !ok || !ok2 || ns == "" || typ == "" {
			return nil, fmt.Errorf("%q: want ns/type=age such as default/Generation=30d", def)
		}
		var d time.Duration
		var err error
		if n, found := strings.CutSuffix(age, "d"); found {
			var days int
			if _, err = fmt.Sscanf(n, "%d", &days); err == nil && days > 0 {
				d = time.Duration(days) * 24 * time.Hour
			} else {
				err = fmt.Errorf("bad days")
			}
		} else {
			d, err = time.ParseDuration(age)
		}
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("%q: the age must be a number of days such as 30d or a duration such as 12h", def)
		}
		out = append(out, RetentionPolicy{Ns: ns, Type: typ, MaxAge: d})
	}
	return out, nil
}

// CleanupOldGenerations returns the work of cleanup-old-generations: for
// each policy, list the type oldest first and delete, in atomic batches,
// those created before the cutoff.
func CleanupOldGenerations(db DB, clock Clock, policies []RetentionPolicy) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if len(policies) == 0 {
			return "no retention policies configured", nil
		}
		var parts []string
		for _, p := range policies {
			cutoff := micros(clock.Now().Add(-p.MaxAge))
			var deleted int
			for {
				res, err := db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: p.Ns, Type: p.Type, Order: "createdAt", Limit: 500}))
				if err != nil {
					return strings.Join(parts, "; "), fmt.Errorf("list %s/%s: %w", p.Ns, p.Type, err)
				}
				var ops []*dbv1.Op
				for _, th := range res.Msg.Items {
					if th.CreatedAt >= cutoff {
						break
					}
					ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: p.Ns, Id: th.Id}}})
				}
				if len(ops) == 0 {
					break
				}
				if _, err := db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: p.Ns, Ops: ops})); err != nil {
					return strings.Join(parts, "; "), fmt.Errorf("delete old %s/%s: %w", p.Ns, p.Type, err)
				}
				deleted += len(ops)
				if len(ops) < len(res.Msg.Items) || res.Msg.NextCursor == "" {
					break
				}
			}
			parts = append(parts, fmt.Sprintf("%s/%s: deleted %d older than %v", p.Ns, p.Type, deleted, p.MaxAge))
		}
		return strings.Join(parts, "; "), nil
	}
}

// Backuper is the db service's Backup RPC: an online backup (a SQLite
// copy made with VACUUM INTO, or a consistent JSON-lines export of
// PostgreSQL) into the db process's <data-dir>/backups, with rotation.
// The db service in this process and a Connect client to one in another
// process both have it.
type Backuper interface {
	Backup(context.Context, *connect.Request[dbv1.BackupRequest]) (*connect.Response[dbv1.BackupResponse], error)
}

// BackupDatabase returns the work of backup-database: a backup by the db
// service, which keeps the newest keep.
func BackupDatabase(b Backuper, keep int) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		res, err := b.Backup(ctx, connect.NewRequest(&dbv1.BackupRequest{Keep: int32(keep)}))
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("wrote %s (%d bytes); removed %d old backups", res.Msg.Path, res.Msg.Bytes, res.Msg.Removed), nil
	}
}

// HealthTarget is one service health-check-services checks.
type HealthTarget struct {
	Name  string
	Check func(ctx context.Context) error
}

type healthDoc struct {
	Service   string `json:"service"`
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
	LatencyMs int64  `json:"latencyMs"`
	At        string `json:"at"`
}

type healthEvent struct {
	Service string `json:"service"`
	From    string `json:"from"`
	To      string `json:"to"`
	Error   string `json:"error,omitempty"`
	At      string `json:"at"`
}

// HealthCheckServices returns the work of health-check-services: each
// target's status as a HealthCheck thing (kept for retention), the last
// status per service as a HealthState thing, and a HealthEvent thing and a
// log line when a status changes.
func HealthCheckServices(db DB, clock Clock, targets func() []HealthTarget, retention time.Duration, log *slog.Logger) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var parts []string
		down := 0
		for _, tg := range targets() {
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			start := clock.Now()
			err := tg.Check(cctx)
			cancel()
			now := clock.Now()
			doc := healthDoc{Service: tg.Name, Status: "up", LatencyMs: now.Sub(start).Milliseconds(), At: now.UTC().Format(time.RFC3339Nano)}
			if err != nil {
				doc.Status, doc.Error = "down", clip(err.Error(), 300)
				down++
			}
			b, _ := json.Marshal(doc)
			exp := micros(now.Add(retention))
			id := fmt.Sprintf("health:%s:%d", tg.Name, now.UnixMilli())
			ops := []*dbv1.Op{{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: id, Type: "HealthCheck", Data: b, ExpiresAt: exp}}}}
			prev := ""
			res, gerr := db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: "healthstate:" + tg.Name}))
			var ver int64
			if gerr == nil {
				var st healthDoc
				json.Unmarshal(res.Msg.Thing.Data, &st)
				prev, ver = st.Status, res.Msg.Thing.Version
			} else if !apierr.Is(gerr, apierr.NotFound) {
				return strings.Join(parts, ", "), gerr
			}
			cond := dbv1.Condition_CONDITION_NONE
			if ver == 0 {
				cond = dbv1.Condition_CONDITION_MUST_NOT_EXIST
			}
			ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: "healthstate:" + tg.Name, Type: "HealthState", Data: b, IfVersion: ver, Condition: cond}}})
			if prev != doc.Status {
				ev, _ := json.Marshal(healthEvent{Service: tg.Name, From: prev, To: doc.Status, Error: doc.Error, At: doc.At})
				ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: fmt.Sprintf("healthevent:%s:%d", tg.Name, now.UnixMilli()), Type: "HealthEvent", Data: ev, ExpiresAt: exp}}})
			}
			if _, err := db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops})); err != nil {
				if apierr.Is(err, apierr.PreconditionFailed) {
					// Another replica recorded the same service at the
					// same moment; its record stands.
					continue
				}
				return strings.Join(parts, ", "), fmt.Errorf("record health of %s: %w", tg.Name, err)
			}
			if prev != doc.Status && log != nil {
				level := slog.LevelWarn
				if prev == "" {
					level = slog.LevelInfo
				}
				log.Log(ctx, level, "service status changed", "target", tg.Name, "from", prev, "to", doc.Status, "err", doc.Error)
			}
			parts = append(parts, tg.Name+" "+doc.Status)
		}
		return fmt.Sprintf("%d of %d down: %s", down, len(parts), strings.Join(parts, ", ")), nil
	}
}

// LimitRecorder counts, in memory, the rate-limit refusals the gateway
// makes, and writes them as RateLimitHit things when flushed; the
// check-rate-limits task rolls those up into a RateLimitReport.
type LimitRecorder struct {
	mu    sync.Mutex
	clock Clock
	hits  map[string]*limitHit
}

type limitHit struct {
	Key     string `json:"key"`
	Policy  string `json:"policy"`
	Count   int64  `json:"count"`
	FirstAt int64  `json:"firstAt"`
	LastAt  int64  `json:"lastAt"`
}

// NewLimitRecorder returns an empty recorder.
func NewLimitRecorder(clock Clock) *LimitRecorder {
	if clock == nil {
		clock = RealClock{}
	}
	return &LimitRecorder{clock: clock, hits: map[string]*limitHit{}}
}

// Record counts one refusal of key (api_key:<id>, user:<id> or ip:<addr>)
// under policy. It never blocks on I/O.
func (l *LimitRecorder) Record(key, policy string) {
	now := micros(l.clock.Now())
	l.mu.Lock()
	defer l.mu.Unlock()
	k := policy + "\x00" + key
	h := l.hits[k]
	if h == nil {
		if len(l.hits) >= 10000 {
			return
		}
		h = &limitHit{Key: key, Policy: policy, FirstAt: now}
		l.hits[k] = h
	}
	h.Count++
	h.LastAt = now
}

// Flush writes the counted refusals to the db and forgets them.
func (l *LimitRecorder) Flush(ctx context.Context, db DB) error {
	l.mu.Lock()
	hits := l.hits
	l.hits = map[string]*limitHit{}
	l.mu.Unlock()
	if len(hits) == 0 {
		return nil
	}
	var ops []*dbv1.Op
	now := l.clock.Now()
	for _, h := range hits {
		b, _ := json.Marshal(h)
		ops = append(ops, &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: "rlhit:" + newID(),
			Type: "RateLimitHit", Data: b, ExpiresAt: micros(now.Add(7 * 24 * time.Hour))}}})
	}
	for len(ops) > 0 {
		n := min(len(ops), 500)
		if _, err := db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops[:n]})); err != nil {
			return fmt.Errorf("record rate-limit hits: %w", err)
		}
		ops = ops[n:]
	}
	return nil
}

type limitReport struct {
	From string      `json:"from"`
	To   string      `json:"to"`
	Keys []*limitHit `json:"keys"`
}

// CheckRateLimits returns the work of check-rate-limits: flush the local
// recorder (when the gateway runs in this process), then roll the
// RateLimitHit things of every gateway up into one RateLimitReport per
// run, listing each key or IP that hit a limit, and delete the hits.
func CheckRateLimits(db DB, clock Clock, local *LimitRecorder) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		if local != nil {
			if err := local.Flush(ctx, db); err != nil {
				return "", err
			}
		}
		agg := map[string]*limitHit{}
		var dels []*dbv1.Op
		cursor := ""
		for {
			res, err := db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "RateLimitHit", Limit: 1000, Cursor: cursor}))
			if err != nil {
				return "", err
			}
			for _, th := range res.Msg.Items {
				var h limitHit
				if json.Unmarshal(th.Data, &h) != nil {
					continue
				}
				k := h.Policy + "\x00" + h.Key
				if a := agg[k]; a != nil {
					a.Count += h.Count
					a.FirstAt, a.LastAt = min(a.FirstAt, h.FirstAt), max(a.LastAt, h.LastAt)
				} else {
					agg[k] = &h
				}
				dels = append(dels, &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Ns: Namespace, Id: th.Id, IfVersion: th.Version}}})
			}
			if res.Msg.NextCursor == "" || len(dels) >= 5000 {
				break
			}
			cursor = res.Msg.NextCursor
		}
		now := clock.Now()
		rep := limitReport{To: now.UTC().Format(time.RFC3339Nano), Keys: []*limitHit{}}
		var from int64
		for _, h := range agg {
			rep.Keys = append(rep.Keys, h)
			if from == 0 || h.FirstAt < from {
				from = h.FirstAt
			}
		}
		sort.Slice(rep.Keys, func(i, j int) bool {
			if rep.Keys[i].Count != rep.Keys[j].Count {
				return rep.Keys[i].Count > rep.Keys[j].Count
			}
			return rep.Keys[i].Key < rep.Keys[j].Key
		})
		if from != 0 {
			rep.From = fromMicros(from).Format(time.RFC3339Nano)
		}
		b, _ := json.Marshal(rep)
		ops := append([]*dbv1.Op{{Op: &dbv1.Op_Write{Write: &dbv1.Write{Ns: Namespace, Id: fmt.Sprintf("rlreport:%d", now.UnixMilli()), Type: "RateLimitReport", Data: b,
			ExpiresAt: micros(now.Add(90 * 24 * time.Hour))}}}}, dels...)
		for len(ops) > 0 {
			n := min(len(ops), 1000)
			if _, err := db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops[:n]})); err != nil {
				return "", fmt.Errorf("write rate-limit report: %w", err)
			}
			ops = ops[n:]
		}
		var top []string
		for i, h := range rep.Keys {
			if i == 5 {
				break
			}
			top = append(top, fmt.Sprintf("%s %s x%d", h.Key, h.Policy, h.Count))
		}
		return fmt.Sprintf("%d keys or IPs hit their limits: %s", len(rep.Keys), strings.Join(top, ", ")), nil
	}
}

// Embeddings is the db binding's backfill of missing embeddings.
type Embeddings interface {
	GenerateMissingEmbeddings(context.Context, *connect.Request[dbv1.GenerateMissingEmbeddingsRequest]) (*connect.Response[dbv1.GenerateMissingEmbeddingsResponse], error)
}

// GenerateMissingEmbeddings returns the work of
// generate-missing-embeddings: call the db service until it reports done.
// Without an embedder configured there is nothing to do, which is not a
// failure.
func GenerateMissingEmbeddings(db Embeddings) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var total, failed int64
		for i := 0; i < 1000; i++ {
			res, err := db.GenerateMissingEmbeddings(ctx, connect.NewRequest(&dbv1.GenerateMissingEmbeddingsRequest{}))
			if apierr.Is(err, apierr.Unprocessable) && total == 0 {
				return "nothing to do: " + err.Error(), nil
			}
			if err != nil {
				return fmt.Sprintf("embedded %d things", total), fmt.Errorf("generate missing embeddings: %w", err)
			}
			total, failed = total+res.Msg.Embedded, failed+res.Msg.Failed
			if res.Msg.Done || res.Msg.Embedded == 0 {
				break
			}
		}
		if failed > 0 {
			return fmt.Sprintf("embedded %d things, %d failed", total, failed), fmt.Errorf("%d things could not be embedded", failed)
		}
		return fmt.Sprintf("embedded %d things", total), nil
	}
}

// Analytics is the db binding's rollup of analytics events.
type Analytics interface {
	UpdateAnalytics(context.Context, *connect.Request[dbv1.UpdateAnalyticsRequest]) (*connect.Response[dbv1.UpdateAnalyticsResponse], error)
}

// UpdateAnalytics returns the work of update-analytics: roll events up
// into the hourly and daily counts until the db service reports done.
func UpdateAnalytics(db Analytics) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		var total int64
		for i := 0; i < 1000; i++ {
			res, err := db.UpdateAnalytics(ctx, connect.NewRequest(&dbv1.UpdateAnalyticsRequest{}))
			if err != nil {
				return fmt.Sprintf("rolled up %d events", total), fmt.Errorf("update analytics: %w", err)
			}
			total += res.Msg.Rolled
			if res.Msg.Done || res.Msg.Rolled == 0 {
				break
			}
		}
		return fmt.Sprintf("rolled up %d events", total), nil
	}
}
