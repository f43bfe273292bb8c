package schedule

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// store is a db service with its raw backend, to look under the API.
type store struct {
	*thingsdb.Service
	be thingsdb.Backend
	// offset shifts the db's clock; atomic because a finished run's
	// goroutines may still be writing when a test moves the clock.
	offset *atomic.Int64
}

func openStore(t *testing.T, backend string) store {
	t.Helper()
	be := testdb.Open(t, backend)
	db, err := thingsdb.New(be, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	offset := new(atomic.Int64)
	db.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	return store{db, be, offset}
}

// rawCount counts rows of a type in a namespace, expired ones included.
func (s store) rawCount(t *testing.T, ns, typ string) int {
	t.Helper()
	q := "SELECT COUNT(*) FROM things WHERE ns = ? AND type = ?"
	if s.be.Name == thingsdb.Postgres {
		q = "SELECT COUNT(*) FROM things WHERE ns = $1 AND type = $2"
	}
	var n int
	if err := s.be.Read.QueryRow(q, ns, typ).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// runBuiltin runs a built-in task now through the service and returns the
// finished run.
func runBuiltin(t *testing.T, r *replica, name string) *schedulev1.Run {
	t.Helper()
	ctx := context.Background()
	res, err := r.RunTask(ctx, connect.NewRequest(&schedulev1.RunTaskRequest{Ns: Namespace, Name: name}))
	if err != nil {
		t.Fatalf("RunTask(%s) = %v", name, err)
	}
	var run *schedulev1.Run
	waitFor(t, name+" to finish", func() bool {
		g, err := r.GetRun(ctx, connect.NewRequest(&schedulev1.GetRunRequest{Ns: Namespace, Name: name, Id: res.Msg.Run.Id}))
		if err != nil {
			t.Fatal(err)
		}
		run = g.Msg.Run
		return finished([]*schedulev1.Run{run})
	})
	if run.Status != statusSucceeded {
		t.Fatalf("%s = %s: %s", name, run.Status, run.Error)
	}
	return run
}

func builtin(name string, run func(context.Context) (string, error)) func(*Config) {
	return func(c *Config) {
		c.Builtins = append(c.Builtins, Builtin{Name: name, Schedule: DefaultBuiltinSchedules[name], Run: run})
	}
}

// Sessions, refresh tokens and API keys that expired are deleted, not just
// hidden; live ones stay.
func TestBuiltinCleanupExpiredSessionsAndKeys(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			st := openStore(t, be)
			ctx := context.Background()
			a, err := auth.New(st.Service, auth.Config{Issuer: "http://test", SecretKey: make([]byte, 32), RefreshTTL: time.Hour}, quietLog())
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Start(ctx); err != nil {
				t.Fatal(err)
			}
			admin := map[string]*authv1.Grants{"*": {Roles: []string{"admin"}}}
			if _, err := a.CreateUser(ctx, connect.NewRequest(&authv1.CreateUserRequest{Email: "ada@example.com", Password: "correct horse battery", Grants: admin})); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Login(ctx, connect.NewRequest(&authv1.LoginRequest{Email: "ada@example.com", Password: "correct horse battery"})); err != nil {
				t.Fatal(err)
			}
			if _, err := a.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "short", Grants: admin, ExpiresAt: time.Now().Add(time.Minute).Unix()})); err != nil {
				t.Fatal(err)
			}
			if _, err := a.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "forever", Grants: admin})); err != nil {
				t.Fatal(err)
			}
			before := map[string]int{}
			for _, typ := range []string{"Session", "RefreshToken", "APIKey", "KeyHash", "User"} {
				before[typ] = st.rawCount(t, auth.Namespace, typ)
			}
			if before["Session"] == 0 || before["RefreshToken"] == 0 || before["APIKey"] != 2 {
				t.Fatalf("stored before = %v; want a session, a refresh token and two keys", before)
			}
			clk := NewFakeClock(t0())
			// The key cleanup reads its own clock, two hours past the real
			// now like the store below. (The replica's clock, t0, is the
			// next hour boundary: within a minute of it the short key would
			// not yet have expired by that clock.)
			later := NewFakeClock(time.Now().Add(2 * time.Hour))
			r := startReplica(t, st.Service, clk, "r0", func(c *Config) {
				builtin("cleanup-expired-sessions", PurgeExpired(st.Service, "sessions"))(c)
				builtin("cleanup-expired-api-keys", CleanupExpiredAPIKeys(st.Service, st.Service, later))(c)
			})
			// Nothing has expired yet: nothing is purged.
			if run := runBuiltin(t, r, "cleanup-expired-sessions"); !strings.HasPrefix(run.Output, "purged 0 ") {
				t.Errorf("output = %q; want purged 0", run.Output)
			}
			// Two hours on (the session lasts one, the short key a minute).
			st.offset.Store(int64(2 * time.Hour))
			run := runBuiltin(t, r, "cleanup-expired-sessions")
			runBuiltin(t, r, "cleanup-expired-api-keys")
			for typ, want := range map[string]int{"Session": 0, "RefreshToken": 0, "APIKey": 1, "User": before["User"]} {
				if got := st.rawCount(t, auth.Namespace, typ); got != want {
					t.Errorf("stored %s after cleanup = %d; want %d (before %d)", typ, got, want, before[typ])
				}
			}
			keys, err := a.ListAPIKeys(ctx, connect.NewRequest(&authv1.ListAPIKeysRequest{}))
			if err != nil {
				t.Fatal(err)
			}
			if len(keys.Msg.Keys) != 1 || keys.Msg.Keys[0].Name != "forever" {
				t.Errorf("keys after cleanup = %v; want only forever", keys.Msg.Keys)
			}
			if !strings.Contains(run.Output, "purged ") || strings.HasPrefix(run.Output, "purged 0 ") {
				t.Errorf("output = %q; want a count", run.Output)
			}
		})
	}
}

// Things of a type in a namespace older than the policy are deleted; newer
// ones and other types and namespaces stay.
func TestBuiltinCleanupOldGenerations(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			st := openStore(t, be)
			ctx := context.Background()
			put := func(ns, id, typ string, age time.Duration) {
				st.offset.Store(int64(-age))
				if _, err := st.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: ns, Id: id, Type: typ, Data: []byte(`{}`)}})); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 3; i++ {
				put("acme", fmt.Sprintf("old-%d", i), "Generation", time.Duration(40+i)*24*time.Hour)
			}
			put("acme", "new", "Generation", 2*24*time.Hour)
			put("acme", "old-doc", "Document", 90*24*time.Hour)
			put("other", "old-gen", "Generation", 90*24*time.Hour)
			st.offset.Store(0)
			clk := NewFakeClock(time.Now())
			r := startReplica(t, st.Service, clk, "r0", builtin("cleanup-old-generations",
				CleanupOldGenerations(st.Service, clk, []RetentionPolicy{{Ns: "acme", Type: "Generation", MaxAge: 30 * 24 * time.Hour}})))
			run := runBuiltin(t, r, "cleanup-old-generations")
			if !strings.Contains(run.Output, "deleted 3") {
				t.Errorf("output = %q; want deleted 3", run.Output)
			}
			var ids []string
			for _, ns := range []string{"acme", "other"} {
				res, _ := st.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: ns, Limit: 100}))
				for _, th := range res.Msg.Items {
					ids = append(ids, ns+"/"+th.Id)
				}
			}
			if want := []string{"acme/old-doc", "acme/new", "other/old-gen"}; !reflect.DeepEqual(ids, want) {
				t.Errorf("things left = %v; want %v", ids, want)
			}
		})
	}
}

func TestBuiltinGenerateMissingEmbeddings(t *testing.T) {
	st := openStore(t, "sqlite")
	ctx := context.Background()
	clk := NewFakeClock(t0())
	r := startReplica(t, st.Service, clk, "r0", builtin("generate-missing-embeddings", GenerateMissingEmbeddings(st.Service)))
	// Without an embedder there is nothing to do, and that is no failure.
	if run := runBuiltin(t, r, "generate-missing-embeddings"); !strings.HasPrefix(run.Output, "nothing to do") {
		t.Errorf("output without an embedder = %q", run.Output)
	}
	for i, text := range []string{"the cron runs nightly", "queues deliver at least once", "backups rotate"} {
		if _, err := st.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: "docs", Id: fmt.Sprint("d", i), Type: "Doc", Data: []byte(`{}`), Content: text}})); err != nil {
			t.Fatal(err)
		}
	}
	st.SetEmbedder(thingsdb.LexicalHashEmbedder{Dimensions: 32})
	if _, err := st.SetSearchConfig(ctx, connect.NewRequest(&dbv1.SetSearchConfigRequest{Config: &dbv1.SearchConfig{Ns: "docs", EmbedOnWrite: true}})); err != nil {
		t.Fatal(err)
	}
	run := runBuiltin(t, r, "generate-missing-embeddings")
	if run.Output != "embedded 3 things" {
		t.Errorf("output = %q; want embedded 3 things", run.Output)
	}
	for i := 0; i < 3; i++ {
		g, err := st.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: "docs", Id: fmt.Sprint("d", i)}))
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Msg.Thing.Embedding) != 32 {
			t.Errorf("d%d embedding has %d dimensions; want 32", i, len(g.Msg.Thing.Embedding))
		}
	}
	if run := runBuiltin(t, r, "generate-missing-embeddings"); run.Output != "embedded 0 things" {
		t.Errorf("second run output = %q; want embedded 0 things", run.Output)
	}
}

func TestBuiltinUpdateAnalytics(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			st := openStore(t, be)
			ctx := context.Background()
			now := time.Now().UTC().Truncate(time.Hour)
			var evs []*dbv1.Event
			for i := 0; i < 5; i++ {
				evs = append(evs, &dbv1.Event{Ns: "shop", Name: "checkout", Properties: []byte(`{"plan":"pro"}`), Timestamp: now.Add(time.Duration(i) * time.Minute).UnixMicro()})
			}
			if _, err := st.IngestEvents(ctx, connect.NewRequest(&dbv1.IngestEventsRequest{Events: evs})); err != nil {
				t.Fatal(err)
			}
			query := func() *dbv1.QueryAnalyticsResponse {
				res, err := st.QueryAnalytics(ctx, connect.NewRequest(&dbv1.QueryAnalyticsRequest{Ns: "shop", Event: "checkout", From: now.Add(-time.Hour).UnixMicro(), To: now.Add(2 * time.Hour).UnixMicro(), Bucket: "hour"}))
				if err != nil {
					t.Fatal(err)
				}
				return res.Msg
			}
			var rolledBefore int64
			for _, row := range query().Rows {
				rolledBefore += row.Count
			}
			clk := NewFakeClock(t0())
			r := startReplica(t, st.Service, clk, "r0", builtin("update-analytics", UpdateAnalytics(st.Service)))
			run := runBuiltin(t, r, "update-analytics")
			if run.Output != "rolled up 5 events" {
				t.Errorf("output = %q; want rolled up 5 events", run.Output)
			}
			res := query()
			var total int64
			for _, row := range res.Rows {
				total += row.Count
			}
			if !res.FromRollups || total != 5 {
				t.Errorf("query after rollup = %d from rollups %v (before: %d); want 5 from rollups", total, res.FromRollups, rolledBefore)
			}
			if run := runBuiltin(t, r, "update-analytics"); run.Output != "rolled up 0 events" {
				t.Errorf("second run = %q; want rolled up 0 events", run.Output)
			}
		})
	}
}

// A backup restored into a fresh store equals the original; rotation
// keeps the newest N.
func TestBuiltinBackupDatabase(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			st := openStore(t, be)
			ctx := context.Background()
			fillStore(t, st)
			clk := NewFakeClock(t0())
			dir := filepath.Join(t.TempDir(), "backups")
			st.BackupDir = dir
			r := startReplica(t, st.Service, clk, "r0", builtin("backup-database", BackupDatabase(st.Service, 2)))
			var files []string
			for i := 0; i < 3; i++ {
				runBuiltin(t, r, "backup-database")
				// Backups are named by the db service's clock.
				st.offset.Add(int64(time.Second))
				ents, _ := os.ReadDir(dir)
				files = files[:0]
				for _, e := range ents {
					files = append(files, e.Name())
				}
			}
			if len(files) != 2 {
				t.Fatalf("backups after 3 runs with keep 2 = %v; want 2", files)
			}
			path := filepath.Join(dir, files[len(files)-1])
			fresh := testdb.Open(t, be)
			if be == thingsdb.Postgres {
				f, err := os.Open(path)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				if _, err := thingsdb.RestorePostgres(ctx, fresh.Write, f); err != nil {
					t.Fatalf("RestorePostgres = %v", err)
				}
				// A second restore is refused: the store is no longer empty.
				f.Seek(0, 0)
				if _, err := thingsdb.RestorePostgres(ctx, fresh.Write, f); !errors.Is(err, thingsdb.ErrNotEmpty) {
					t.Errorf("restore into a non-empty store = %v; want ErrNotEmpty", err)
				}
			} else {
				ok, err := thingsdb.IsSQLiteBackup(path)
				if !ok || err != nil {
					t.Fatalf("%s is not a SQLite database (%v)", path, err)
				}
				fresh.Read, err = sql.Open("sqlite", "file:"+path+"?mode=ro")
				if err != nil {
					t.Fatal(err)
				}
				defer fresh.Read.Close()
			}
			for _, table := range []string{"things", "relationships"} {
				a, b := dump(t, st.be, table), dump(t, fresh, table)
				if len(a) < 5 || !reflect.DeepEqual(a, b) {
					t.Errorf("%s restored (%d rows) differ from the original (%d rows)", table, len(b), len(a))
				}
			}
		})
	}
}

// fillStore writes things (with content, embeddings and expiry) and
// relationships.
func fillStore(t *testing.T, st store) {
	t.Helper()
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		w := &dbv1.Write{Ns: "acme", Id: fmt.Sprint("item-", i), Type: "Item", Data: []byte(fmt.Sprintf(`{"n":%d,"tags":["a","b"],"s":"ü\"x"}`, i)), Content: fmt.Sprint("item number ", i)}
		if i%3 == 0 {
			w.Embedding = []float32{float32(i), 0.5, -1}
		}
		if i%5 == 0 {
			w.ExpiresAt = time.Now().Add(time.Hour).UnixMicro()
		}
		if _, err := st.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w})); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i < 6; i++ {
		if _, err := st.PutRelationship(ctx, connect.NewRequest(&dbv1.PutRelationshipRequest{Relationship: &dbv1.Relationship{Ns: "acme", From: "item-0", Type: "links", To: fmt.Sprint("item-", i), Data: []byte(`{"w":1}`)}})); err != nil {
			t.Fatal(err)
		}
	}
}

// dump returns every row of a table as text, in key order.
func dump(t *testing.T, be thingsdb.Backend, table string) []string {
	t.Helper()
	cols := "ns, id, type, data, content, embedding, version, created_at, updated_at, expires_at"
	order := "ns, id"
	if table == "relationships" {
		cols, order = "ns, from_id, type, to_id, data, created_at", "ns, from_id, type, to_id"
	}
	// The schedule's own runs change after the backup.
	rows, err := be.Read.Query("SELECT " + cols + " FROM " + table + " WHERE ns <> '_schedule' ORDER BY " + order)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cs, _ := rows.Columns()
	var out []string
	for rows.Next() {
		vals := make([]any, len(cs))
		ptrs := make([]any, len(cs))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var sb strings.Builder
		for _, v := range vals {
			if b, ok := v.([]byte); ok {
				v = string(b)
			}
			fmt.Fprintf(&sb, "%v|", v)
		}
		out = append(out, sb.String())
	}
	return out
}

// A stopped service shows up as down in the health history, with an event
// for each change.
func TestBuiltinHealthCheckServices(t *testing.T) {
	st := openStore(t, "sqlite")
	ctx := context.Background()
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	clk := NewFakeClock(t0())
	targets := []HealthTarget{
		{Name: "db", Check: func(ctx context.Context) error {
			_, err := st.Health(ctx, connect.NewRequest(&dbv1.HealthRequest{}))
			return err
		}},
		{Name: "webhooks", Check: func(ctx context.Context) error {
			res, err := http.Get(other.URL + "/health")
			if err != nil {
				return err
			}
			res.Body.Close()
			return nil
		}},
	}
	r := startReplica(t, st.Service, clk, "r0", builtin("health-check-services",
		HealthCheckServices(st.Service, clk, func() []HealthTarget { return targets }, 24*time.Hour, quietLog())))
	if run := runBuiltin(t, r, "health-check-services"); run.Output != "0 of 2 down: db up, webhooks up" {
		t.Errorf("output = %q", run.Output)
	}
	other.Close() // the service stops
	clk.Advance(time.Minute)
	if run := runBuiltin(t, r, "health-check-services"); run.Output != "1 of 2 down: db up, webhooks down" {
		t.Errorf("output = %q", run.Output)
	}
	res, _ := st.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "HealthCheck", Where: `{"service":"webhooks"}`, Order: "createdAt", Limit: 10}))
	var history []string
	for _, th := range res.Msg.Items {
		history = append(history, jsonField(t, th.Data, "status"))
	}
	if !reflect.DeepEqual(history, []string{"up", "down"}) {
		t.Errorf("webhooks health history = %v; want [up down]", history)
	}
	res, _ = st.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "HealthEvent", Where: `{"service":"webhooks"}`, Order: "createdAt", Limit: 10}))
	var events []string
	for _, th := range res.Msg.Items {
		events = append(events, jsonField(t, th.Data, "from")+">"+jsonField(t, th.Data, "to"))
	}
	if !reflect.DeepEqual(events, []string{">up", "up>down"}) {
		t.Errorf("webhooks events = %v; want [>up up>down]", events)
	}
	g, err := st.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: "healthstate:webhooks"}))
	if err != nil || jsonField(t, g.Msg.Thing.Data, "status") != "down" || jsonField(t, g.Msg.Thing.Data, "error") == "" {
		t.Errorf("webhooks state = %v %v; want down with the error", g, err)
	}
}

func jsonField(t *testing.T, b []byte, k string) string {
	t.Helper()
	var m map[string]any
	if err := jsonUnmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[k].(string)
	return s
}

// The gateway's refusals are rolled up into a report of the keys and IPs
// that hit their limits.
func TestBuiltinCheckRateLimits(t *testing.T) {
	st := openStore(t, "sqlite")
	ctx := context.Background()
	clk := NewFakeClock(t0())
	local := NewLimitRecorder(clk)
	remote := NewLimitRecorder(clk) // another gateway's, flushed through the db
	for i := 0; i < 3; i++ {
		local.Record("ip:203.0.113.9", "anonymous")
	}
	local.Record("api_key:k1", "default")
	remote.Record("ip:203.0.113.9", "anonymous")
	if err := remote.Flush(ctx, st.Service); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, st.Service, clk, "r0", builtin("check-rate-limits", CheckRateLimits(st.Service, clk, local)))
	run := runBuiltin(t, r, "check-rate-limits")
	if run.Output != "2 keys or IPs hit their limits: ip:203.0.113.9 anonymous x4, api_key:k1 default x1" {
		t.Errorf("output = %q", run.Output)
	}
	reports := listThings(t, st.Service, Namespace, "RateLimitReport")
	if len(reports) != 1 || !strings.Contains(string(reports[0].Data), `{"count":4,"firstAt":`+fmt.Sprint(micros(clk.Now()))+`,"key":"ip:203.0.113.9"`) {
		t.Fatalf("reports = %v", reports)
	}
	if hits := listThings(t, st.Service, Namespace, "RateLimitHit"); len(hits) != 0 {
		t.Errorf("hits left after the report = %d; want 0", len(hits))
	}
	// Nothing new: an empty report.
	if run := runBuiltin(t, r, "check-rate-limits"); !strings.HasPrefix(run.Output, "0 keys") {
		t.Errorf("second output = %q", run.Output)
	}
}
