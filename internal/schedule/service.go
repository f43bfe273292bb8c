// Package schedule is the schedule service: cron tasks that do the
// platform's own maintenance (built-in tasks) and tenants' work (HTTP calls
// and queue messages), with retries, overlap and catch-up policies and a
// history of runs.
//
// Every replica runs every task's clock. When a tick comes, each replica
// tries to create the run thing _schedule/run:<ns>:<task>:<unix ms> with a
// create-only write through the db binding; the one that creates it runs
// the tick and the others see a precondition failure and do nothing. So a
// tick runs once however many replicas there are, without a leader. A run
// carries a lease that its replica renews at each step; a replica that
// finds a run whose lease has passed marks the attempt abandoned and
// applies the task's retry policy.
package schedule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1/schedulev1connect"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

var _ schedulev1connect.ScheduleServiceHandler = (*Service)(nil)

// Namespace is the system namespace that holds the schedule's state, and
// the namespace of the built-in tasks.
const Namespace = "_schedule"

// Thing types in Namespace.
const (
	typeTask   = "Task"
	typeActive = "RunActive"
	typeLock   = "RunLock"
	typeBuffer = "RunBuffer"
)

// Run statuses.
const (
	statusRunning   = "running"
	statusRetrying  = "retrying"
	statusBuffered  = "buffered"
	statusSucceeded = "succeeded"
	statusFailed    = "failed"
	statusSkipped   = "skipped"
	statusAbandoned = "abandoned"
)

// DB is what the schedule service needs from the db service.
type DB interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	Delete(context.Context, *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Batch(context.Context, *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error)
}

// QueueSender sends one message to a queue and returns its id. It returns
// the queue's errors (not_found for an unknown queue).
type QueueSender interface {
	SendMessage(ctx context.Context, queue string, body []byte, contentType string) (string, error)
}

// Builtin is one of dotdo's own maintenance tasks.
type Builtin struct {
	Name        string
	Schedule    string
	Description string
	// Timeout bounds one attempt; 0 means the task default.
	Timeout time.Duration
	// Run does the work and returns a short summary of what it did.
	Run func(ctx context.Context) (string, error)
}

// Config configures the service. Zero values take the defaults.
type Config struct {
	// Replica names this process in runs; default host-pid.
	Replica string
	Clock   Clock
	// SyncInterval is how often a replica reloads the tasks from the db
	// (changes made through this replica apply at once); default 5s.
	SyncInterval time.Duration
	// SweepInterval is how often a replica looks for runs whose lease has
	// passed; default 5s.
	SweepInterval time.Duration
	// LeaseGrace is added to an attempt's timeout to make its lease;
	// default 10s.
	LeaseGrace time.Duration
	// MisfireGrace is how late a tick may start and still count as on
	// time; later ones follow the task's catch-up policy. Default 30s.
	MisfireGrace time.Duration
	// RunRetention is how long runs are kept; default 30 days.
	RunRetention time.Duration
	// AllowPrivate lets HTTP actions call loopback and private addresses.
	AllowPrivate bool
	Builtins     []Builtin
	// Queue sends queue actions' messages; nil refuses queue actions.
	Queue QueueSender
	// SecretKey (32 bytes), when set, seals HTTP actions' header values
	// at rest; every replica needs the same.
	SecretKey []byte
	// Jitter returns a number in [0, 1) for retry backoff; default
	// math/rand.
	Jitter func() float64
}

// Service is the schedule service.
type Service struct {
	db       DB
	cfg      Config
	log      *slog.Logger
	clock    Clock
	client   *http.Client
	builtins map[string]Builtin

	m     *metrics
	mu    sync.Mutex
	tasks map[string]*entry
	wake  chan struct{}
	wg    sync.WaitGroup
	// bg is the context given to Start, for runs started by RPCs.
	bg context.Context
	// onRunFailed is the OnRunFailed hook.
	onRunFailed atomic.Pointer[func(RunFailure)]
}

// RunFailure is a run that ended failed (its retries spent) or abandoned.
type RunFailure struct {
	Ns, Task, RunID, Status, Error string
}

// OnRunFailed sets f to be called (it must not block) after a run ends
// failed or abandoned. nil removes it.
func (s *Service) OnRunFailed(f func(RunFailure)) {
	if f == nil {
		s.onRunFailed.Store(nil)
		return
	}
	s.onRunFailed.Store(&f)
}

// entry is a task as this replica's clock sees it.
type entry struct {
	t *task
	// after is the last tick considered: the next one is sched.Next(after).
	after time.Time
}

// New returns the schedule service over its db binding.
func New(db DB, cfg Config, log *slog.Logger) (*Service, error) {
	if cfg.Clock == nil {
		cfg.Clock = RealClock{}
	}
	if cfg.Replica == "" {
		h, _ := os.Hostname()
		cfg.Replica = h + "-" + strconv.Itoa(os.Getpid())
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.SyncInterval, 5*time.Second)
	def(&cfg.SweepInterval, 5*time.Second)
	def(&cfg.LeaseGrace, 10*time.Second)
	def(&cfg.MisfireGrace, 30*time.Second)
	def(&cfg.RunRetention, 30*24*time.Hour)
	if cfg.Jitter == nil {
		cfg.Jitter = rand.Float64
	}
	s := &Service{db: db, cfg: cfg, log: log.With("service", "schedule"), clock: cfg.Clock,
		builtins: map[string]Builtin{}, tasks: map[string]*entry{}, m: newMetrics(), wake: make(chan struct{}, 1), bg: context.Background()}
	s.client = newHTTPClient(cfg.AllowPrivate)
	for _, b := range cfg.Builtins {
		if _, err := ParseSchedule(b.Schedule); err != nil {
			return nil, fmt.Errorf("built-in task %s: %w", b.Name, err)
		}
		s.builtins[b.Name] = b
	}
	return s, nil
}

// Close waits for runs in flight to stop; cancel Run's context first.
func (s *Service) Close() error {
	s.wg.Wait()
	return nil
}

func (s *Service) nudge() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

var marshal = protojson.MarshalOptions{}
var unmarshal = protojson.UnmarshalOptions{DiscardUnknown: true}

func taskID(ns, name string) string { return "task:" + ns + ":" + name }
func lockID(ns, name string) string { return "lock:" + ns + ":" + name }
func bufferID(ns, name string) string {
	return "buffer:" + ns + ":" + name
}

// Start writes the built-in tasks' definitions, keeping whether an admin
// disabled one.
func (s *Service) Start(ctx context.Context) error {
	s.bg = ctx
	names := make([]string, 0, len(s.builtins))
	for n := range s.builtins {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b := s.builtins[n]
		pb := &schedulev1.Task{Ns: Namespace, Name: b.Name, Schedule: b.Schedule, Builtin: true, Description: b.Description,
			Action: &schedulev1.Action{Type: "builtin", Builtin: b.Name}}
		if b.Timeout > 0 {
			pb.Timeout = b.Timeout.String()
		}
		retries := int32(DefaultRetries)
		pb.Retries = &retries
		cur, ver, err := s.getTask(ctx, Namespace, b.Name)
		if err != nil && !apierr.Is(err, apierr.NotFound) {
			return fmt.Errorf("built-in task %s: %w", b.Name, err)
		}
		if cur != nil {
			pb.Enabled, pb.CreatedAt, pb.UpdatedAt = cur.Enabled, cur.CreatedAt, cur.UpdatedAt
			if proto.Equal(cur, pb) {
				continue
			}
		} else {
			t := true
			pb.Enabled = &t
			pb.CreatedAt = micros(s.clock.Now())
		}
		pb.UpdatedAt = micros(s.clock.Now())
		if _, err := s.compile(pb); err != nil {
			return fmt.Errorf("built-in task %s: %w", b.Name, err)
		}
		if _, err := s.writeTask(ctx, pb, ver, cur == nil); err != nil && !apierr.Is(err, apierr.PreconditionFailed) {
			return fmt.Errorf("built-in task %s: %w", b.Name, err)
		}
	}
	return s.sync(ctx)
}

// RemoveBuiltin deletes the stored definition of a built-in task that is
// configured off, so that it no longer lists or runs.
func (s *Service) RemoveBuiltin(ctx context.Context, name string) error {
	_, err := s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: taskID(Namespace, name)}))
	if apierr.Is(err, apierr.NotFound) {
		return nil
	}
	return err
}

func (s *Service) getTask(ctx context.Context, ns, name string) (*schedulev1.Task, int64, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: taskID(ns, name)}))
	if err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, 0, apierr.New(apierr.NotFound, "task %s not found in namespace %s", name, ns)
		}
		return nil, 0, err
	}
	pb := &schedulev1.Task{}
	if err := unmarshal.Unmarshal(res.Msg.Thing.Data, pb); err != nil {
		return nil, 0, fmt.Errorf("decode task %s/%s: %w", ns, name, err)
	}
	return pb, res.Msg.Thing.Version, nil
}

func (s *Service) writeTask(ctx context.Context, pb *schedulev1.Task, ifVersion int64, create bool) (int64, error) {
	b, err := marshal.Marshal(pb)
	if err != nil {
		return 0, err
	}
	w := &dbv1.Write{Ns: Namespace, Id: taskID(pb.Ns, pb.Name), Type: typeTask, Data: b, IfVersion: ifVersion}
	if create {
		w.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
	}
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
	if err != nil {
		return 0, err
	}
	return res.Msg.Thing.Version, nil
}

// sync reloads every task from the db into the replica's clock.
func (s *Service) sync(ctx context.Context) error {
	loaded := map[string]*task{}
	cursor := ""
	for {
		res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeTask, Limit: 1000, Cursor: cursor}))
		if err != nil {
			return fmt.Errorf("load tasks: %w", err)
		}
		for _, th := range res.Msg.Items {
			pb := &schedulev1.Task{}
			if err := unmarshal.Unmarshal(th.Data, pb); err != nil {
				s.log.WarnContext(ctx, "skipping an unreadable task", "id", th.Id, "err", err)
				continue
			}
			t, err := s.compile(pb)
			if err != nil {
				s.log.WarnContext(ctx, "skipping an invalid task", "id", th.Id, "err", err)
				continue
			}
			t.version = th.Version
			loaded[t.key()] = t
		}
		if res.Msg.NextCursor == "" {
			break
		}
		cursor = res.Msg.NextCursor
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.tasks {
		if _, ok := loaded[k]; !ok {
			delete(s.tasks, k)
		}
	}
	for k, t := range loaded {
		if e, ok := s.tasks[k]; ok {
			if e.t.pb.Schedule != t.pb.Schedule || (!e.t.enabled && t.enabled) {
				e.after = s.firstAfter(t, now)
			}
			e.t = t
			continue
		}
		s.tasks[k] = &entry{t: t, after: s.firstAfter(t, now)}
	}
	return nil
}

// firstAfter is where a replica that has just learned of a task (or of a
// change to its schedule) starts counting its ticks: the task's last
// update, so that no tick after it is lost however late the replica
// looks. fireDue then runs the latest due tick if it is on time, and
// otherwise applies the catch-up policy; the claim makes sure a tick
// another replica ran is not run again.
func (s *Service) firstAfter(t *task, now time.Time) time.Time {
	from := fromMicros(t.pb.UpdatedAt)
	if t.pb.UpdatedAt == 0 || from.After(now) {
		return now
	}
	return from
}

// Run drives the replica's clock until ctx is cancelled: fires due ticks,
// reloads tasks and sweeps abandoned runs.
func (s *Service) Run(ctx context.Context) {
	sync := s.clock.Now()
	sweep := s.clock.Now().Add(s.cfg.SweepInterval)
	for {
		now := s.clock.Now()
		if !now.Before(sync) {
			if err := s.sync(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "schedule: reloading tasks failed", "err", err)
			}
			sync = now.Add(s.cfg.SyncInterval)
		}
		if !now.Before(sweep) {
			s.sweep(ctx)
			sweep = now.Add(s.cfg.SweepInterval)
		}
		next := s.fireDue(ctx, now)
		if sync.Before(next) {
			next = sync
		}
		if sweep.Before(next) {
			next = sweep
		}
		t := s.clock.NewTimer(next.Sub(s.clock.Now()))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		case <-s.wake:
			t.Stop()
			if err := s.sync(ctx); err != nil && ctx.Err() == nil {
				s.log.WarnContext(ctx, "schedule: reloading tasks failed", "err", err)
			}
		}
	}
}

// fireDue starts the runs of every tick due at now and returns when the
// next one is due.
func (s *Service) fireDue(ctx context.Context, now time.Time) time.Time {
	next := now.Add(time.Hour)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.tasks {
		t := e.t
		if !t.enabled {
			continue
		}
		// Ticks older than the window and the grace cannot run under any
		// policy; skip straight past them.
		if horizon := now.Add(-t.window - s.cfg.MisfireGrace - t.jitter); e.after.Before(horizon) {
			e.after = horizon
		}
		var latest time.Time
		for tick := t.sched.Next(e.after); !tick.IsZero(); tick = t.sched.Next(tick) {
			if tick.Add(jitterFor(t.key(), tick, t.jitter)).After(now) {
				break
			}
			latest = tick
		}
		if !latest.IsZero() {
			e.after = latest
			fire := latest.Add(jitterFor(t.key(), latest, t.jitter))
			switch {
			case now.Sub(fire) <= s.cfg.MisfireGrace:
				s.start(ctx, t, latest, "schedule")
			case t.pb.CatchUp == "run_once" && now.Sub(latest) <= t.window:
				s.start(ctx, t, latest, "catch_up")
			default:
				s.log.DebugContext(ctx, "schedule: missed tick skipped", "task", t.key(), "scheduledAt", latest)
			}
		}
		if n := t.sched.Next(e.after); !n.IsZero() {
			if f := n.Add(jitterFor(t.key(), n, t.jitter)); f.Before(next) {
				next = f
			}
		}
	}
	return next
}

func (s *Service) start(ctx context.Context, t *task, tick time.Time, trigger string) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		id := fmt.Sprintf("%s:%s:%d", t.pb.Ns, t.pb.Name, tick.UnixMilli())
		if _, err := s.claim(ctx, t, id, tick, trigger, true); err != nil && ctx.Err() == nil && !apierr.Is(err, apierr.PreconditionFailed) {
			s.log.WarnContext(ctx, "schedule: claiming a tick failed", "task", t.key(), "scheduledAt", tick, "err", err)
		}
	}()
}

// runState is a run being driven by this replica, with the version of its
// thing this replica last wrote.
type runState struct {
	pb      *schedulev1.Run
	version int64
	t       *task
}

func runThingID(id string) string { return "run:" + id }

// runType is the thing type of a task's runs: one type per task, so that
// listing a task's runs reads its own index range whatever else the
// schedule namespace holds. Long names are hashed to fit 64 characters.
func runType(ns, task string) string {
	t := "Run." + ns + "." + task
	if len(t) <= thingsdb.MaxTypeLen && thingsdb.ValidType(t) {
		return t
	}
	h := sha256.Sum256([]byte(ns + "/" + task))
	return "Run.h" + hex.EncodeToString(h[:12])
}

func activeID(runID string) string { return "active:" + runID }

// saveRun writes the run. The first write is the claim: create-only, in
// one batch with the run's RunActive marker, the small set of unfinished
// runs the sweepers read.
func (s *Service) saveRun(ctx context.Context, r *runState, create bool) error {
	b, err := marshal.Marshal(r.pb)
	if err != nil {
		return err
	}
	w := &dbv1.Write{Ns: Namespace, Id: runThingID(r.pb.Id), Type: runType(r.pb.Ns, r.pb.Task), Data: b, IfVersion: r.version,
		ExpiresAt: micros(s.clock.Now().Add(s.cfg.RunRetention))}
	if create {
		w.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
		active := &dbv1.Write{Ns: Namespace, Id: activeID(r.pb.Id), Type: typeActive, Data: fmt.Appendf(nil, `{"run":%q}`, r.pb.Id),
			ExpiresAt: w.ExpiresAt}
		res, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: []*dbv1.Op{
			{Op: &dbv1.Op_Write{Write: w}}, {Op: &dbv1.Op_Write{Write: active}}}}))
		if err != nil {
			return err
		}
		r.version = res.Msg.Results[0].Thing.Version
		return nil
	}
	res, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
	if err != nil {
		return err
	}
	r.version = res.Msg.Thing.Version
	return nil
}

// dropActive removes a finished run's marker; a marker left behind (a
// crash between the two writes) is removed by the next sweep.
func (s *Service) dropActive(ctx context.Context, runID string) {
	s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: activeID(runID)}))
}

func (s *Service) lease(t *task, from time.Time) int64 {
	return micros(from.Add(t.timeout + s.cfg.LeaseGrace))
}

// claim creates the run thing for one tick (the create-only write that
// makes the tick this replica's), then runs it. With wait false it returns
// once the claim is made and runs in the background.
func (s *Service) claim(ctx context.Context, t *task, id string, tick time.Time, trigger string, wait bool) (*schedulev1.Run, error) {
	now := s.clock.Now()
	r := &runState{t: t, pb: &schedulev1.Run{Id: id, Ns: t.pb.Ns, Task: t.pb.Name, Trigger: trigger, ScheduledAt: micros(tick),
		Status: statusRunning, Attempts: 1, StartedAt: micros(now), LeaseUntil: s.lease(t, now), Replica: s.cfg.Replica}}
	if err := s.saveRun(ctx, r, true); err != nil {
		if apierr.Is(err, apierr.PreconditionFailed) {
			s.m.claim.WithLabelValues("lost").Inc()
		}
		return nil, err
	}
	s.m.claim.WithLabelValues("won").Inc()
	claimed := proto.Clone(r.pb).(*schedulev1.Run)
	if !wait {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.drive(s.bg, r)
		}()
		return claimed, nil
	}
	s.drive(ctx, r)
	return claimed, nil
}

// drive applies the overlap policy and runs the attempts of a claimed run.
func (s *Service) drive(ctx context.Context, r *runState) {
	t := r.t
	if t.pb.Overlap != "allow" {
		ok, err := s.acquireLock(ctx, r)
		if err != nil {
			s.log.WarnContext(ctx, "schedule: overlap lock failed", "task", t.key(), "run", r.pb.Id, "err", err)
			return
		}
		if !ok {
			return
		}
		defer s.releaseLock(context.WithoutCancel(ctx), r)
	}
	s.attempts(ctx, r, 1)
}

type lockDoc struct {
	Run        string `json:"run"`
	LeaseUntil int64  `json:"leaseUntil"`
}

func (s *Service) putLock(ctx context.Context, id string, r *runState, cond dbv1.Condition, ifVersion int64) error {
	b := fmt.Appendf(nil, `{"run":%q,"leaseUntil":%d}`, r.pb.Id, r.pb.LeaseUntil)
	typ := typeLock
	if id == bufferID(r.t.pb.Ns, r.t.pb.Name) {
		typ = typeBuffer
	}
	_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: id, Type: typ, Data: b,
		Condition: cond, IfVersion: ifVersion, ExpiresAt: r.pb.LeaseUntil + int64(time.Hour/time.Microsecond)}}))
	return err
}

// tryLock takes the lock thing id for r: create-only, or over a holder
// whose lease has passed. It returns the holder's run id when it is held.
func (s *Service) tryLock(ctx context.Context, id string, r *runState) (string, error) {
	for i := 0; i < 3; i++ {
		err := s.putLock(ctx, id, r, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0)
		if err == nil {
			return "", nil
		}
		if !apierr.Is(err, apierr.PreconditionFailed) {
			return "", err
		}
		res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: id}))
		if apierr.Is(err, apierr.NotFound) {
			continue
		}
		if err != nil {
			return "", err
		}
		var cur lockDoc
		if err := jsonUnmarshal(res.Msg.Thing.Data, &cur); err != nil {
			return "", err
		}
		if cur.Run == r.pb.Id {
			return "", s.putLock(ctx, id, r, 0, res.Msg.Thing.Version)
		}
		if fromMicros(cur.LeaseUntil).After(s.clock.Now()) && !s.runEnded(ctx, cur.Run) {
			return cur.Run, nil
		}
		// The holder's lease passed (its replica is gone), or its run has
		// ended and the release is on its way. Take it over.
		if err := s.putLock(ctx, id, r, 0, res.Msg.Thing.Version); err == nil {
			return "", nil
		} else if !apierr.Is(err, apierr.PreconditionFailed) {
			return "", err
		}
	}
	return "", apierr.New(apierr.Conflict, "lock %s is contended", id)
}

// acquireLock applies the skip and buffer_one overlap policies. It reports
// whether r may run now (false: it was skipped, or abandoned while
// buffered).
func (s *Service) acquireLock(ctx context.Context, r *runState) (bool, error) {
	t := r.t
	lid := lockID(t.pb.Ns, t.pb.Name)
	holder, err := s.tryLock(ctx, lid, r)
	if err != nil {
		return false, err
	}
	if holder == "" {
		return true, nil
	}
	if t.pb.Overlap == "skip" {
		return false, s.finish(ctx, r, statusSkipped, "previous run "+holder+" is still running", "")
	}
	bid := bufferID(t.pb.Ns, t.pb.Name)
	buffered, err := s.tryLock(ctx, bid, r)
	if err != nil {
		return false, err
	}
	if buffered != "" {
		return false, s.finish(ctx, r, statusSkipped, "previous run "+holder+" is still running and run "+buffered+" is already waiting", "")
	}
	r.pb.Status = statusBuffered
	if err := s.saveRun(ctx, r, false); err != nil {
		return false, err
	}
	defer s.db.Delete(context.WithoutCancel(ctx), connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: bid}))
	for {
		select {
		case <-ctx.Done():
			return false, nil
		case <-s.clock.After(time.Second):
		}
		now := s.clock.Now()
		if holder, err = s.tryLock(ctx, lid, r); err != nil {
			return false, err
		}
		if holder == "" {
			r.pb.Status, r.pb.StartedAt = statusRunning, micros(now)
			r.pb.LeaseUntil = s.lease(t, now)
			return true, s.saveRun(ctx, r, false)
		}
		// Renew the waiting run's lease and its place in the buffer.
		if fromMicros(r.pb.LeaseUntil).Sub(now) < t.timeout/2+s.cfg.LeaseGrace/2 {
			r.pb.LeaseUntil = s.lease(t, now)
			if err := s.saveRun(ctx, r, false); err != nil {
				return false, err
			}
			s.putLock(ctx, bid, r, 0, 0)
		}
	}
}

// runEnded reports whether run id is in a final state (or gone).
func (s *Service) runEnded(ctx context.Context, id string) bool {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: runThingID(id)}))
	if apierr.Is(err, apierr.NotFound) {
		return true
	}
	if err != nil {
		return false
	}
	pb := &schedulev1.Run{}
	if unmarshal.Unmarshal(res.Msg.Thing.Data, pb) != nil {
		return false
	}
	switch pb.Status {
	case statusRunning, statusRetrying, statusBuffered:
		return false
	}
	return true
}

func (s *Service) releaseLock(ctx context.Context, r *runState) {
	id := lockID(r.t.pb.Ns, r.t.pb.Name)
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: id}))
	if err != nil {
		return
	}
	var cur lockDoc
	if jsonUnmarshal(res.Msg.Thing.Data, &cur) != nil || cur.Run != r.pb.Id {
		return
	}
	s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: id, IfVersion: res.Msg.Thing.Version}))
}

// backoff is the wait before attempt n+1 after attempt n failed:
// exponential from the task's base, capped at an hour, with equal jitter
// (between half and all of it).
func (s *Service) backoff(t *task, n int) time.Duration {
	d := t.backoff
	for i := 1; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, MaxBackoff)
	return d/2 + time.Duration(s.cfg.Jitter()*float64(d/2))
}

// attempts runs attempts from number first on until one succeeds or the
// retries are spent. A failed save means another replica took the run
// over (this one was too slow to renew its lease): it stops quietly.
func (s *Service) attempts(ctx context.Context, r *runState, first int) {
	t := r.t
	for n := first; ; n++ {
		now := s.clock.Now()
		r.pb.Status, r.pb.Attempts, r.pb.NextAttemptAt, r.pb.Replica = statusRunning, int32(n), 0, s.cfg.Replica
		r.pb.LeaseUntil = s.lease(t, now)
		if n > 1 {
			if err := s.saveRun(ctx, r, false); err != nil {
				s.lost(ctx, r, err)
				return
			}
		}
		if t.pb.Overlap != "allow" {
			s.putLock(ctx, lockID(t.pb.Ns, t.pb.Name), r, 0, 0)
		}
		if n == 1 && r.pb.Trigger != "manual" {
			s.m.fired(fromMicros(r.pb.ScheduledAt), now)
		}
		out, err := s.do(ctx, r, n)
		end := s.clock.Now()
		att := &schedulev1.Attempt{Number: int32(n), StartedAt: micros(now), EndedAt: micros(end), Status: statusSucceeded, Replica: s.cfg.Replica}
		if err != nil {
			att.Status, att.Error = statusFailed, clip(err.Error(), 500)
			if errors.Is(err, context.DeadlineExceeded) {
				att.Status = "timed_out"
			}
		}
		if ctx.Err() != nil {
			// Shutting down mid-attempt: hand the run to another replica.
			att.Status, att.Error = statusAbandoned, "replica "+s.cfg.Replica+" shut down during the attempt"
			r.pb.History = append(r.pb.History, att)
			s.handOff(ctx, r)
			return
		}
		r.pb.History = append(r.pb.History, att)
		if err == nil {
			if e := s.finish(ctx, r, statusSucceeded, "", out); e != nil {
				s.lost(ctx, r, e)
			}
			return
		}
		if n >= 1+t.retries {
			if e := s.finish(ctx, r, statusFailed, att.Error, out); e != nil {
				s.lost(ctx, r, e)
			}
			return
		}
		wait := s.backoff(t, n)
		// The timer starts before the writes below, so the retry is due
		// wait after the attempt ended however long they take.
		timer := s.clock.NewTimer(wait)
		r.pb.Status, r.pb.Error, r.pb.Output = statusRetrying, att.Error, clip(out, 1000)
		r.pb.NextAttemptAt = micros(end.Add(wait))
		r.pb.LeaseUntil = s.lease(t, end.Add(wait))
		if err := s.saveRun(ctx, r, false); err != nil {
			timer.Stop()
			s.lost(ctx, r, err)
			return
		}
		if t.pb.Overlap != "allow" {
			s.putLock(ctx, lockID(t.pb.Ns, t.pb.Name), r, 0, 0)
		}
		s.log.InfoContext(ctx, "schedule: attempt failed; retrying", "task", t.key(), "run", r.pb.Id, "attempt", n, "in", wait.String(), "err", att.Error)
		select {
		case <-ctx.Done():
			timer.Stop()
			s.handOff(ctx, r)
			return
		case <-timer.C():
		}
	}
}

// handOff ends this replica's hold on a run when it shuts down: the run is
// left retrying with its lease ended, so the next sweep of another
// replica takes it over at once instead of after the lease.
func (s *Service) handOff(ctx context.Context, r *runState) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	now := micros(s.clock.Now())
	r.pb.Status, r.pb.LeaseUntil = statusRetrying, now
	if r.pb.NextAttemptAt == 0 {
		r.pb.NextAttemptAt = now
	}
	if err := s.saveRun(ctx, r, false); err != nil {
		s.lost(ctx, r, err)
		return
	}
	s.log.InfoContext(ctx, "schedule: shutting down; run handed to another replica", "task", r.t.key(), "run", r.pb.Id)
}

func (s *Service) lost(ctx context.Context, r *runState, err error) {
	if apierr.Is(err, apierr.PreconditionFailed) {
		s.log.InfoContext(ctx, "schedule: run taken over by another replica", "task", r.t.key(), "run", r.pb.Id)
		return
	}
	if ctx.Err() == nil {
		s.log.WarnContext(ctx, "schedule: saving a run failed", "task", r.t.key(), "run", r.pb.Id, "err", err)
	}
}

func (s *Service) finish(ctx context.Context, r *runState, status, errMsg, out string) error {
	now := s.clock.Now()
	r.pb.Status, r.pb.Error, r.pb.Output, r.pb.EndedAt, r.pb.LeaseUntil, r.pb.NextAttemptAt = status, clip(errMsg, 500), clip(out, 1000), micros(now), 0, 0
	s.m.runs.WithLabelValues(status).Inc()
	if status == statusSkipped {
		r.pb.Attempts = 0
	} else {
		s.log.InfoContext(ctx, "schedule: run finished", "task", r.t.key(), "run", r.pb.Id, "status", status, "attempts", r.pb.Attempts)
	}
	if err := s.saveRun(ctx, r, false); err != nil {
		return err
	}
	s.dropActive(ctx, r.pb.Id)
	if status == statusFailed || status == statusAbandoned {
		if f := s.onRunFailed.Load(); f != nil {
			(*f)(RunFailure{Ns: r.t.pb.Ns, Task: r.t.pb.Name, RunID: r.pb.Id, Status: status, Error: r.pb.Error})
		}
	}
	return nil
}

// do runs one attempt of the task's action under its timeout.
func (s *Service) do(ctx context.Context, r *runState, attempt int) (string, error) {
	t := r.t
	ctx, cancel := context.WithTimeout(ctx, t.timeout)
	defer cancel()
	a := t.pb.Action
	switch a.Type {
	case "builtin":
		b, ok := s.builtins[a.Builtin]
		if !ok {
			return "", fmt.Errorf("built-in task %s is not configured on replica %s", a.Builtin, s.cfg.Replica)
		}
		return b.Run(ctx)
	case "http":
		return s.doHTTP(ctx, r, attempt)
	case "queue":
		if s.cfg.Queue == nil {
			return "", errors.New("the queue service is not available to this schedule replica")
		}
		id, err := s.cfg.Queue.SendMessage(ctx, a.Queue, []byte(a.Body), a.ContentType)
		if err != nil {
			return "", fmt.Errorf("send to queue %s: %w", a.Queue, err)
		}
		return "sent message " + id + " to queue " + a.Queue, nil
	}
	return "", fmt.Errorf("unknown action type %q", a.Type)
}

// sweep finds runs whose lease has passed, marks their attempt abandoned
// and retries them here, or ends them abandoned when retries are spent.
func (s *Service) sweep(ctx context.Context) {
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeActive, Limit: 500}))
	if err != nil {
		if ctx.Err() == nil {
			s.log.WarnContext(ctx, "schedule: sweeping runs failed", "err", err)
		}
		return
	}
	now := s.clock.Now()
	for _, th := range res.Msg.Items {
		var a struct{ Run string }
		if jsonUnmarshal(th.Data, &a) != nil {
			continue
		}
		g, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: runThingID(a.Run)}))
		if apierr.Is(err, apierr.NotFound) {
			s.dropActive(ctx, a.Run)
			continue
		}
		if err != nil {
			continue
		}
		pb := &schedulev1.Run{}
		if unmarshal.Unmarshal(g.Msg.Thing.Data, pb) != nil {
			continue
		}
		switch pb.Status {
		case statusRunning, statusRetrying, statusBuffered:
		default:
			s.dropActive(ctx, a.Run)
			continue
		}
		if !fromMicros(pb.LeaseUntil).Before(now) {
			continue
		}
		s.mu.Lock()
		e := s.tasks[pb.Ns+"/"+pb.Task]
		s.mu.Unlock()
		r := &runState{pb: pb, version: g.Msg.Thing.Version}
		if e == nil {
			// The task is gone: end the run.
			r.t = &task{pb: &schedulev1.Task{Ns: pb.Ns, Name: pb.Task, Overlap: "allow"}}
			s.finish(ctx, r, statusAbandoned, "the task was deleted while its run was unattended", "")
			continue
		}
		r.t = e.t
		s.takeOver(ctx, r, now)
	}
}

func (s *Service) takeOver(ctx context.Context, r *runState, now time.Time) {
	t := r.t
	msg := fmt.Sprintf("replica %s stopped renewing the run's lease", r.pb.Replica)
	if r.pb.Status == statusRunning && r.pb.Attempts > 0 {
		r.pb.History = append(r.pb.History, &schedulev1.Attempt{Number: r.pb.Attempts, StartedAt: r.pb.StartedAt, EndedAt: micros(now),
			Status: statusAbandoned, Error: msg, Replica: r.pb.Replica})
	}
	if r.pb.Status == statusBuffered || int(r.pb.Attempts) >= 1+t.retries {
		if err := s.finish(ctx, r, statusAbandoned, msg, ""); err == nil {
			s.log.WarnContext(ctx, "schedule: run abandoned", "task", t.key(), "run", r.pb.Id, "replica", r.pb.Replica)
			if t.pb.Overlap != "allow" {
				s.releaseLock(ctx, r)
			}
		}
		return
	}
	// Claim the run for this replica first (a version-checked write, so
	// one sweeping replica wins), then retry after the backoff.
	wait := time.Duration(0)
	if r.pb.Status == statusRunning {
		wait = s.backoff(t, int(r.pb.Attempts))
	} else if next := fromMicros(r.pb.NextAttemptAt); next.After(now) {
		wait = next.Sub(now)
	}
	r.pb.Status, r.pb.Error, r.pb.Replica = statusRetrying, msg, s.cfg.Replica
	r.pb.NextAttemptAt = micros(now.Add(wait))
	r.pb.LeaseUntil = s.lease(t, now.Add(wait))
	if err := s.saveRun(ctx, r, false); err != nil {
		return
	}
	s.log.WarnContext(ctx, "schedule: took over an abandoned run", "task", t.key(), "run", r.pb.Id, "attempts", r.pb.Attempts, "retryIn", wait.String())
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if t.pb.Overlap != "allow" {
			holder, err := s.tryLock(ctx, lockID(t.pb.Ns, t.pb.Name), r)
			if err != nil {
				return
			}
			if holder != "" {
				s.finish(ctx, r, statusAbandoned, msg+"; not retried because run "+holder+" is running", "")
				return
			}
			defer s.releaseLock(context.WithoutCancel(ctx), r)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.clock.After(wait):
		}
		s.attempts(ctx, r, int(r.pb.Attempts)+1)
	}()
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// newHTTPClient returns the client of HTTP actions. Unless allowPrivate,
// its dialer refuses loopback, private and reserved addresses after name
// resolution, so a public name that resolves inside is refused too.
func newHTTPClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.ControlContext = dialGuard
	}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 0,
	}
	return &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("stopped after 5 redirects")
		}
		return nil
	}}
}
