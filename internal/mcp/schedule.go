package mcp

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
)

// Schedule is what the task tools need from the schedule service: the
// service itself, its Connect client, or Remote.
type Schedule interface {
	ListTasks(context.Context, *connect.Request[schedulev1.ListTasksRequest]) (*connect.Response[schedulev1.ListTasksResponse], error)
	RunTask(context.Context, *connect.Request[schedulev1.RunTaskRequest]) (*connect.Response[schedulev1.RunTaskResponse], error)
	ListRuns(context.Context, *connect.Request[schedulev1.ListRunsRequest]) (*connect.Response[schedulev1.ListRunsResponse], error)
}

// Task is a scheduled task as the tools show it. An HTTP action's headers
// and body are left out: they may hold credentials.
type Task struct {
	NS          string `json:"ns"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Schedule    string `json:"schedule" jsonschema:"cron expression, @hourly style descriptor or @every <duration>"`
	Action      string `json:"action" jsonschema:"queue, http or builtin"`
	Target      string `json:"target,omitempty" jsonschema:"the queue, the HTTP method and URL, or the built-in function"`
	Enabled     bool   `json:"enabled"`
	Builtin     bool   `json:"builtin"`
	NextRunAt   string `json:"nextRunAt,omitempty" jsonschema:"RFC 3339; absent when disabled"`
	CreatedAt   string `json:"createdAt,omitempty"`
	UpdatedAt   string `json:"updatedAt,omitempty"`
}

func taskOut(t *schedulev1.Task) Task {
	a := t.GetAction()
	target := a.GetQueue()
	switch a.GetType() {
	case "http":
		target = a.GetMethod() + " " + a.GetUrl()
	case "builtin":
		target = a.GetBuiltin()
	}
	return Task{NS: t.Ns, Name: t.Name, Description: t.Description, Schedule: t.Schedule, Action: a.GetType(), Target: target,
		Enabled: t.GetEnabled(), Builtin: t.Builtin, NextRunAt: micros(t.NextRunAt), CreatedAt: micros(t.CreatedAt), UpdatedAt: micros(t.UpdatedAt)}
}

// Run is one execution of a task.
type Run struct {
	ID            string `json:"id"`
	NS            string `json:"ns"`
	Task          string `json:"task"`
	Trigger       string `json:"trigger" jsonschema:"schedule, catch_up or manual"`
	ScheduledAt   string `json:"scheduledAt"`
	Status        string `json:"status" jsonschema:"running, retrying, buffered, succeeded, failed, skipped or abandoned"`
	Attempts      int32  `json:"attempts"`
	StartedAt     string `json:"startedAt,omitempty"`
	EndedAt       string `json:"endedAt,omitempty"`
	Error         string `json:"error,omitempty"`
	Output        string `json:"output,omitempty"`
	NextAttemptAt string `json:"nextAttemptAt,omitempty"`
}

func runOut(r *schedulev1.Run) Run {
	return Run{ID: r.Id, NS: r.Ns, Task: r.Task, Trigger: r.Trigger, ScheduledAt: micros(r.ScheduledAt), Status: r.Status, Attempts: r.Attempts,
		StartedAt: micros(r.StartedAt), EndedAt: micros(r.EndedAt), Error: r.Error, Output: r.Output, NextAttemptAt: micros(r.NextAttemptAt)}
}

// TasksIn are tasks_list's arguments.
type TasksIn struct {
	NS     string `json:"ns,omitempty" jsonschema:"namespace (default: default)"`
	Limit  int    `json:"limit,omitempty" jsonschema:"tasks per page, 1-200 (default 50)"`
	Cursor string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page"`
}

// TasksOut is a page of tasks.
type TasksOut struct {
	Items      []Task `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" jsonschema:"present when more tasks follow: pass it back as cursor"`
}

// TaskRunIn are task_run's arguments.
type TaskRunIn struct {
	NS   string `json:"ns,omitempty" jsonschema:"namespace (default: default)"`
	Name string `json:"name" jsonschema:"the task's name"`
}

// RunOut is one run.
type RunOut struct {
	Run Run `json:"run"`
}

// TaskRunsIn are task_runs' arguments.
type TaskRunsIn struct {
	NS     string `json:"ns,omitempty" jsonschema:"namespace (default: default)"`
	Name   string `json:"name" jsonschema:"the task's name"`
	Limit  int    `json:"limit,omitempty" jsonschema:"runs per page, 1-200 (default 50)"`
	Cursor string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page"`
}

// RunsOut is a page of runs, newest first.
type RunsOut struct {
	Items      []Run  `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" jsonschema:"present when more runs follow: pass it back as cursor"`
}

const defaultScheduleNS = "default"

func scheduleNS(ns string) string {
	if ns == "" {
		return defaultScheduleNS
	}
	return ns
}

func (s *Server) addScheduleTools() {
	sc := s.opts.Schedule
	addTool(s, &sdk.Tool{Name: "tasks_list", Annotations: readOnly("List scheduled tasks"),
		Description: "List a namespace's scheduled (cron) tasks: schedule, action, whether enabled and when each runs next. Paginated: follow nextCursor. Needs schedule:read on the namespace."},
		func(c call, in TasksIn) (TasksOut, error) {
			ns := scheduleNS(in.NS)
			if err := s.need(c.ctx, c.id, ns, "schedule:read"); err != nil {
				return TasksOut{}, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return TasksOut{}, err
			}
			return fit(s, n, func(n int) (TasksOut, int, error) {
				res, err := sc.ListTasks(c.ctx, connect.NewRequest(&schedulev1.ListTasksRequest{Ns: ns, Limit: int32(n), Cursor: in.Cursor}))
				if err != nil {
					return TasksOut{}, 0, err
				}
				out := TasksOut{Items: make([]Task, len(res.Msg.Tasks)), NextCursor: res.Msg.NextCursor}
				for i, t := range res.Msg.Tasks {
					out.Items[i] = taskOut(t)
				}
				return out, len(out.Items), nil
			})
		}, limitProp)

	run := writes("Run a task now", false, false)
	run.OpenWorldHint = &[]bool{true}[0] // an http action calls its URL
	addTool(s, &sdk.Tool{Name: "task_run", Annotations: run,
		Description: "Run a scheduled task now, outside its schedule (trigger manual), and return the run; follow it with task_runs. Needs schedule:run on the namespace."},
		func(c call, in TaskRunIn) (RunOut, error) {
			ns := scheduleNS(in.NS)
			if err := s.need(c.ctx, c.id, ns, "schedule:run"); err != nil {
				return RunOut{}, err
			}
			res, err := sc.RunTask(c.ctx, connect.NewRequest(&schedulev1.RunTaskRequest{Ns: ns, Name: in.Name}))
			if err != nil {
				return RunOut{}, err
			}
			return RunOut{Run: runOut(res.Msg.Run)}, nil
		})

	addTool(s, &sdk.Tool{Name: "task_runs", Annotations: readOnly("Task run history"),
		Description: "List a task's runs, newest first: trigger, status, attempts, times, error and output. Paginated: follow nextCursor. Needs schedule:read on the namespace."},
		func(c call, in TaskRunsIn) (RunsOut, error) {
			ns := scheduleNS(in.NS)
			if err := s.need(c.ctx, c.id, ns, "schedule:read"); err != nil {
				return RunsOut{}, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return RunsOut{}, err
			}
			return fit(s, n, func(n int) (RunsOut, int, error) {
				res, err := sc.ListRuns(c.ctx, connect.NewRequest(&schedulev1.ListRunsRequest{Ns: ns, Name: in.Name, Limit: int32(n), Cursor: in.Cursor}))
				if err != nil {
					return RunsOut{}, 0, err
				}
				out := RunsOut{Items: make([]Run, len(res.Msg.Runs)), NextCursor: res.Msg.NextCursor}
				for i, r := range res.Msg.Runs {
					out.Items[i] = runOut(r)
				}
				return out, len(out.Items), nil
			})
		}, limitProp)
}

// RemoteSchedule is the schedule binding of Remote, over /v1/schedule.
type RemoteSchedule struct{ r *Remote }

var _ Schedule = (*RemoteSchedule)(nil)

// Schedule returns the schedule binding of r.
func (r *Remote) Schedule() *RemoteSchedule { return &RemoteSchedule{r: r} }

type restTask struct {
	NS          string `json:"ns"`
	Name        string `json:"name"`
	Description string `json:"description"`
	Schedule    string `json:"schedule"`
	Action      struct {
		Type    string `json:"type"`
		Queue   string `json:"queue"`
		Method  string `json:"method"`
		URL     string `json:"url"`
		Builtin string `json:"builtin"`
	} `json:"action"`
	Enabled   bool   `json:"enabled"`
	Builtin   bool   `json:"builtin"`
	CreatedAt string `json:"createdAt"`
	UpdatedAt string `json:"updatedAt"`
	NextRunAt string `json:"nextRunAt"`
}

type restRun struct {
	ID            string `json:"id"`
	NS            string `json:"ns"`
	Task          string `json:"task"`
	Trigger       string `json:"trigger"`
	ScheduledAt   string `json:"scheduledAt"`
	Status        string `json:"status"`
	Attempts      int32  `json:"attempts"`
	StartedAt     string `json:"startedAt"`
	EndedAt       string `json:"endedAt"`
	Error         string `json:"error"`
	Output        string `json:"output"`
	NextAttemptAt string `json:"nextAttemptAt"`
}

func (t *restRun) proto() *schedulev1.Run {
	return &schedulev1.Run{Id: t.ID, Ns: t.NS, Task: t.Task, Trigger: t.Trigger, ScheduledAt: parseMicros(t.ScheduledAt), Status: t.Status,
		Attempts: t.Attempts, StartedAt: parseMicros(t.StartedAt), EndedAt: parseMicros(t.EndedAt), Error: t.Error, Output: t.Output, NextAttemptAt: parseMicros(t.NextAttemptAt)}
}

func pageQuery(ns string, limit int32, cursor string) string {
	q := url.Values{"ns": {ns}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(int(limit)))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	return q.Encode()
}

// ListTasks implements Schedule over GET /v1/schedule/tasks.
func (s *RemoteSchedule) ListTasks(ctx context.Context, req *connect.Request[schedulev1.ListTasksRequest]) (*connect.Response[schedulev1.ListTasksResponse], error) {
	var out struct {
		Items      []restTask `json:"items"`
		NextCursor string     `json:"nextCursor"`
	}
	if _, err := s.r.do(ctx, http.MethodGet, "/v1/schedule/tasks?"+pageQuery(req.Msg.Ns, req.Msg.Limit, req.Msg.Cursor), nil, nil, &out); err != nil {
		return nil, err
	}
	res := &schedulev1.ListTasksResponse{NextCursor: out.NextCursor}
	for _, t := range out.Items {
		enabled := t.Enabled
		res.Tasks = append(res.Tasks, &schedulev1.Task{Ns: t.NS, Name: t.Name, Description: t.Description, Schedule: t.Schedule, Enabled: &enabled, Builtin: t.Builtin,
			Action:    &schedulev1.Action{Type: t.Action.Type, Queue: t.Action.Queue, Method: t.Action.Method, Url: t.Action.URL, Builtin: t.Action.Builtin},
			CreatedAt: parseMicros(t.CreatedAt), UpdatedAt: parseMicros(t.UpdatedAt), NextRunAt: parseMicros(t.NextRunAt)})
	}
	return connect.NewResponse(res), nil
}

// RunTask implements Schedule over POST /v1/schedule/tasks/{name}/run.
func (s *RemoteSchedule) RunTask(ctx context.Context, req *connect.Request[schedulev1.RunTaskRequest]) (*connect.Response[schedulev1.RunTaskResponse], error) {
	var out restRun
	if _, err := s.r.do(ctx, http.MethodPost, "/v1/schedule/tasks/"+url.PathEscape(req.Msg.Name)+"/run?"+pageQuery(req.Msg.Ns, 0, ""), nil, nil, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&schedulev1.RunTaskResponse{Run: out.proto()}), nil
}

// ListRuns implements Schedule over GET /v1/schedule/tasks/{name}/runs.
func (s *RemoteSchedule) ListRuns(ctx context.Context, req *connect.Request[schedulev1.ListRunsRequest]) (*connect.Response[schedulev1.ListRunsResponse], error) {
	var out struct {
		Items      []restRun `json:"items"`
		NextCursor string    `json:"nextCursor"`
	}
	if _, err := s.r.do(ctx, http.MethodGet, "/v1/schedule/tasks/"+url.PathEscape(req.Msg.Name)+"/runs?"+pageQuery(req.Msg.Ns, req.Msg.Limit, req.Msg.Cursor), nil, nil, &out); err != nil {
		return nil, err
	}
	res := &schedulev1.ListRunsResponse{NextCursor: out.NextCursor}
	for i := range out.Items {
		res.Runs = append(res.Runs, out.Items[i].proto())
	}
	return connect.NewResponse(res), nil
}
