package schedule

import (
	"context"
	"fmt"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

func checkNS(ns string) error {
	if !thingsdb.ValidNamespace(ns) {
		return invalid("namespace %q must be 1-64 characters of a-z, 0-9, - and _", ns)
	}
	return nil
}

func checkTaskRef(ns, name string) error {
	if err := checkNS(ns); err != nil {
		return err
	}
	if !validName(name) {
		return invalid("task name %q must be 1-63 characters of a-z, 0-9, - and _, starting with a letter or digit", name)
	}
	return nil
}

// view returns a copy of pb for callers, with the next scheduled time.
func (s *Service) view(pb *schedulev1.Task) *schedulev1.Task {
	out := proto.Clone(pb).(*schedulev1.Task)
	if out.Action != nil {
		out.Action.Headers = redactHeaders(out.Action)
	}
	if out.Enabled == nil {
		t := true
		out.Enabled = &t
	}
	if *out.Enabled {
		if sc, err := ParseSchedule(pb.Schedule); err == nil {
			if n := sc.Next(s.clock.Now()); !n.IsZero() {
				out.NextRunAt = micros(n)
			}
		}
	}
	return out
}

// PutTask creates or replaces a task. Built-in tasks are configured, not
// written: it refuses the system namespace.
func (s *Service) PutTask(ctx context.Context, req *connect.Request[schedulev1.PutTaskRequest]) (*connect.Response[schedulev1.PutTaskResponse], error) {
	pb := proto.Clone(req.Msg.GetTask()).(*schedulev1.Task)
	if pb == nil || req.Msg.Task == nil {
		return nil, invalid("task is required")
	}
	if err := checkTaskRef(pb.Ns, pb.Name); err != nil {
		return nil, err
	}
	if thingsdb.IsSystemNamespace(pb.Ns) {
		return nil, invalid("namespace %s is a system namespace: built-in tasks are configured with --schedule-tasks; they can only be enabled, disabled and run", pb.Ns)
	}
	pb.Builtin, pb.NextRunAt = false, 0
	if _, err := s.compile(pb); err != nil {
		return nil, err
	}
	cur, ver, err := s.getTask(ctx, pb.Ns, pb.Name)
	if err != nil && !apierr.Is(err, apierr.NotFound) {
		return nil, err
	}
	now := micros(s.clock.Now())
	pb.UpdatedAt, pb.CreatedAt = now, now
	if cur != nil {
		if err := keepRedacted(pb, cur); err != nil {
			return nil, err
		}
		pb.CreatedAt = cur.CreatedAt
		if pb.Enabled == nil {
			pb.Enabled = cur.Enabled
		}
	}
	if pb.Enabled == nil {
		t := true
		pb.Enabled = &t
	}
	for k, v := range pb.GetAction().GetHeaders() {
		if v == Redacted {
			return nil, invalid("action.headers: %s is %s; send the value", k, Redacted)
		}
	}
	if err := s.sealHeaders(pb); err != nil {
		return nil, err
	}
	if _, err := s.writeTask(ctx, pb, ver, cur == nil); err != nil {
		if apierr.Is(err, apierr.PreconditionFailed) {
			return nil, apierr.New(apierr.Conflict, "task %s was changed at the same time; retry", pb.Name)
		}
		return nil, err
	}
	s.nudge()
	return connect.NewResponse(&schedulev1.PutTaskResponse{Task: s.view(pb), Created: cur == nil}), nil
}

// GetTask returns a task.
func (s *Service) GetTask(ctx context.Context, req *connect.Request[schedulev1.GetTaskRequest]) (*connect.Response[schedulev1.GetTaskResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	pb, _, err := s.getTask(ctx, req.Msg.Ns, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&schedulev1.GetTaskResponse{Task: s.view(pb)}), nil
}

// ListTasks pages through a namespace's tasks, oldest first.
func (s *Service) ListTasks(ctx context.Context, req *connect.Request[schedulev1.ListTasksRequest]) (*connect.Response[schedulev1.ListTasksResponse], error) {
	if err := checkNS(req.Msg.Ns); err != nil {
		return nil, err
	}
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeTask,
		Where: fmt.Sprintf(`{"ns":{"eq":%q}}`, req.Msg.Ns), Limit: req.Msg.Limit, Cursor: req.Msg.Cursor}))
	if err != nil {
		return nil, err
	}
	out := &schedulev1.ListTasksResponse{NextCursor: res.Msg.NextCursor, Tasks: []*schedulev1.Task{}}
	for _, th := range res.Msg.Items {
		pb := &schedulev1.Task{}
		if err := unmarshal.Unmarshal(th.Data, pb); err != nil {
			return nil, fmt.Errorf("decode task %s: %w", th.Id, err)
		}
		out.Tasks = append(out.Tasks, s.view(pb))
	}
	return connect.NewResponse(out), nil
}

// DeleteTask deletes a user task; its runs stay until their retention.
func (s *Service) DeleteTask(ctx context.Context, req *connect.Request[schedulev1.DeleteTaskRequest]) (*connect.Response[schedulev1.DeleteTaskResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	if thingsdb.IsSystemNamespace(req.Msg.Ns) {
		return nil, invalid("built-in tasks cannot be deleted; disable one, or turn it off with --schedule-tasks name=off")
	}
	_, err := s.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: Namespace, Id: taskID(req.Msg.Ns, req.Msg.Name)}))
	if apierr.Is(err, apierr.NotFound) {
		return nil, apierr.New(apierr.NotFound, "task %s not found in namespace %s", req.Msg.Name, req.Msg.Ns)
	}
	if err != nil {
		return nil, err
	}
	s.nudge()
	return connect.NewResponse(&schedulev1.DeleteTaskResponse{}), nil
}

// SetEnabled enables or disables a task.
func (s *Service) SetEnabled(ctx context.Context, req *connect.Request[schedulev1.SetEnabledRequest]) (*connect.Response[schedulev1.SetEnabledResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	for i := 0; ; i++ {
		pb, ver, err := s.getTask(ctx, req.Msg.Ns, req.Msg.Name)
		if err != nil {
			return nil, err
		}
		en := req.Msg.Enabled
		pb.Enabled = &en
		pb.UpdatedAt = micros(s.clock.Now())
		if _, err := s.writeTask(ctx, pb, ver, false); err != nil {
			if apierr.Is(err, apierr.PreconditionFailed) && i < 3 {
				continue
			}
			return nil, err
		}
		s.nudge()
		return connect.NewResponse(&schedulev1.SetEnabledResponse{Task: s.view(pb)}), nil
	}
}

// RunTask starts a run of the task now, whether or not it is enabled, and
// returns it as claimed; the overlap policy applies.
func (s *Service) RunTask(ctx context.Context, req *connect.Request[schedulev1.RunTaskRequest]) (*connect.Response[schedulev1.RunTaskResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	pb, ver, err := s.getTask(ctx, req.Msg.Ns, req.Msg.Name)
	if err != nil {
		return nil, err
	}
	t, err := s.compile(pb)
	if err != nil {
		return nil, err
	}
	t.version = ver
	now := s.clock.Now()
	id := fmt.Sprintf("%s:%s:m%d-%s", pb.Ns, pb.Name, now.UnixMilli(), thingsdb.NewID()[24:])
	run, err := s.claim(ctx, t, id, now, "manual", false)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&schedulev1.RunTaskResponse{Run: run}), nil
}

// ListRuns pages through a task's runs, newest first.
func (s *Service) ListRuns(ctx context.Context, req *connect.Request[schedulev1.ListRunsRequest]) (*connect.Response[schedulev1.ListRunsResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: runType(req.Msg.Ns, req.Msg.Name),
		Where: fmt.Sprintf(`{"ns":{"eq":%q},"task":{"eq":%q}}`, req.Msg.Ns, req.Msg.Name),
		Order: "-createdAt", Limit: req.Msg.Limit, Cursor: req.Msg.Cursor}))
	if err != nil {
		return nil, err
	}
	out := &schedulev1.ListRunsResponse{NextCursor: res.Msg.NextCursor, Runs: []*schedulev1.Run{}}
	for _, th := range res.Msg.Items {
		pb := &schedulev1.Run{}
		if err := unmarshal.Unmarshal(th.Data, pb); err != nil {
			return nil, fmt.Errorf("decode run %s: %w", th.Id, err)
		}
		out.Runs = append(out.Runs, pb)
	}
	return connect.NewResponse(out), nil
}

// GetRun returns one run of a task.
func (s *Service) GetRun(ctx context.Context, req *connect.Request[schedulev1.GetRunRequest]) (*connect.Response[schedulev1.GetRunResponse], error) {
	if err := checkTaskRef(req.Msg.Ns, req.Msg.Name); err != nil {
		return nil, err
	}
	notFound := apierr.New(apierr.NotFound, "run %s of task %s not found", req.Msg.Id, req.Msg.Name)
	if !thingsdb.ValidID(runThingID(req.Msg.Id)) {
		return nil, notFound
	}
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: runThingID(req.Msg.Id)}))
	if apierr.Is(err, apierr.NotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	pb := &schedulev1.Run{}
	if err := unmarshal.Unmarshal(res.Msg.Thing.Data, pb); err != nil {
		return nil, fmt.Errorf("decode run: %w", err)
	}
	if pb.Ns != req.Msg.Ns || pb.Task != req.Msg.Name {
		return nil, notFound
	}
	return connect.NewResponse(&schedulev1.GetRunResponse{Run: pb}), nil
}

// Health reports whether the service reaches its store.
func (s *Service) Health(ctx context.Context, _ *connect.Request[schedulev1.HealthRequest]) (*connect.Response[schedulev1.HealthResponse], error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: typeTask, Limit: 1})); err != nil {
		return nil, apierr.New(apierr.Unavailable, "schedule store unreachable")
	}
	return connect.NewResponse(&schedulev1.HealthResponse{Status: "ok"}), nil
}

func newID() string { return thingsdb.NewID() }
