package schedule

import (
	"bytes"
	"context"
	"net/http"
	"strconv"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	schedulev1 "github.com/dotdo/dotdo/internal/gen/dotdo/schedule/v1"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// API is what the REST routes need from the schedule service: the local
// *Service in one process, a Connect client in split mode.
type API interface {
	PutTask(context.Context, *connect.Request[schedulev1.PutTaskRequest]) (*connect.Response[schedulev1.PutTaskResponse], error)
	GetTask(context.Context, *connect.Request[schedulev1.GetTaskRequest]) (*connect.Response[schedulev1.GetTaskResponse], error)
	ListTasks(context.Context, *connect.Request[schedulev1.ListTasksRequest]) (*connect.Response[schedulev1.ListTasksResponse], error)
	DeleteTask(context.Context, *connect.Request[schedulev1.DeleteTaskRequest]) (*connect.Response[schedulev1.DeleteTaskResponse], error)
	SetEnabled(context.Context, *connect.Request[schedulev1.SetEnabledRequest]) (*connect.Response[schedulev1.SetEnabledResponse], error)
	RunTask(context.Context, *connect.Request[schedulev1.RunTaskRequest]) (*connect.Response[schedulev1.RunTaskResponse], error)
	ListRuns(context.Context, *connect.Request[schedulev1.ListRunsRequest]) (*connect.Response[schedulev1.ListRunsResponse], error)
	GetRun(context.Context, *connect.Request[schedulev1.GetRunRequest]) (*connect.Response[schedulev1.GetRunResponse], error)
}

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the caller may use permission on
	// namespace ns (401/403 otherwise). Nil allows tenant namespaces and
	// refuses system ones: that is for this package's tests.
	Authorize func(r *http.Request, ns, permission string) error
}

// Prefixes are the public path prefixes of the schedule service.
var Prefixes = []string{"/v1/schedule"}

// DefaultNamespace is the namespace of a request without ?ns=.
const DefaultNamespace = "default"

// Routes registers the schedule service's REST routes on mux. Tasks
// belong to a namespace, given as ?ns= (default "default"); the caller
// needs schedule:read, schedule:write or schedule:run on it.
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	h := &rest{api: api, opts: opts}
	read, write, run := h.need("schedule:read"), h.need("schedule:write"), h.need("schedule:run")
	mux.HandleFunc("GET /v1/schedule/tasks", read(h.list))
	mux.HandleFunc("GET /v1/schedule/tasks/{name}", read(h.get))
	mux.HandleFunc("PUT /v1/schedule/tasks/{name}", write(h.put))
	mux.HandleFunc("DELETE /v1/schedule/tasks/{name}", write(h.delete))
	mux.HandleFunc("POST /v1/schedule/tasks/{name}/enable", write(h.enable(true)))
	mux.HandleFunc("POST /v1/schedule/tasks/{name}/disable", write(h.enable(false)))
	mux.HandleFunc("POST /v1/schedule/tasks/{name}/run", run(h.run))
	mux.HandleFunc("GET /v1/schedule/tasks/{name}/runs", read(h.runs))
	mux.HandleFunc("GET /v1/schedule/tasks/{name}/runs/{id}", read(h.getRun))
}

type rest struct {
	api  API
	opts RouteOptions
}

type ctxNS struct{}

func (h *rest) need(permission string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ns := r.URL.Query().Get("ns")
			if ns == "" {
				ns = DefaultNamespace
			}
			if err := checkNS(ns); err != nil {
				h.fail(w, r, err)
				return
			}
			var err error
			if h.opts.Authorize != nil {
				err = h.opts.Authorize(r, ns, permission)
			} else if thingsdb.IsSystemNamespace(ns) {
				err = apierr.New(apierr.Forbidden, "namespace %s is a system namespace", ns)
			}
			if err != nil {
				h.fail(w, r, err)
				return
			}
			if name := r.PathValue("name"); name != "" && !validName(name) {
				h.fail(w, r, invalid("task name %q must be 1-63 characters of a-z, 0-9, - and _, starting with a letter or digit", name))
				return
			}
			next(w, r.WithContext(context.WithValue(r.Context(), ctxNS{}, ns)))
		}
	}
}

func nsOf(r *http.Request) string { return r.Context().Value(ctxNS{}).(string) }

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	apierr.WriteHTTP(w, reqid.From(r.Context()), err)
}

func rfc3339(us int64) string {
	if us == 0 {
		return ""
	}
	return fromMicros(us).Format(time.RFC3339Nano)
}

// actionJSON and taskJSON are the REST shapes of an action and a task.
type actionJSON struct {
	Type        string            `json:"type"`
	Queue       string            `json:"queue,omitempty"`
	Method      string            `json:"method,omitempty"`
	URL         string            `json:"url,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"`
	Body        string            `json:"body,omitempty"`
	ContentType string            `json:"contentType,omitempty"`
	Builtin     string            `json:"builtin,omitempty"`
}

type taskJSON struct {
	Ns            string     `json:"ns"`
	Name          string     `json:"name"`
	Description   string     `json:"description,omitempty"`
	Schedule      string     `json:"schedule"`
	Jitter        string     `json:"jitter"`
	Action        actionJSON `json:"action"`
	Timeout       string     `json:"timeout"`
	Retries       int32      `json:"retries"`
	RetryBackoff  string     `json:"retryBackoff"`
	Overlap       string     `json:"overlap"`
	CatchUp       string     `json:"catchUp"`
	CatchUpWindow string     `json:"catchUpWindow"`
	Enabled       bool       `json:"enabled"`
	Builtin       bool       `json:"builtin"`
	CreatedAt     string     `json:"createdAt"`
	UpdatedAt     string     `json:"updatedAt"`
	NextRunAt     string     `json:"nextRunAt,omitempty"`
}

func orDefault(v string, d time.Duration) string {
	if v == "" {
		return d.String()
	}
	return v
}

func taskOut(pb *schedulev1.Task) taskJSON {
	a := pb.GetAction()
	retries := int32(DefaultRetries)
	if pb.Retries != nil {
		retries = *pb.Retries
	}
	return taskJSON{Ns: pb.Ns, Name: pb.Name, Description: pb.Description, Schedule: pb.Schedule, Jitter: orDefault(pb.Jitter, 0),
		Action: actionJSON{Type: a.GetType(), Queue: a.GetQueue(), Method: a.GetMethod(), URL: a.GetUrl(), Headers: a.GetHeaders(),
			Body: a.GetBody(), ContentType: a.GetContentType(), Builtin: a.GetBuiltin()},
		Timeout: orDefault(pb.Timeout, DefaultTimeout), Retries: retries, RetryBackoff: orDefault(pb.RetryBackoff, DefaultRetryBackoff),
		Overlap: pb.Overlap, CatchUp: pb.CatchUp, CatchUpWindow: orDefault(pb.CatchUpWindow, DefaultCatchUpWindow),
		Enabled: pb.GetEnabled(), Builtin: pb.Builtin, CreatedAt: rfc3339(pb.CreatedAt), UpdatedAt: rfc3339(pb.UpdatedAt), NextRunAt: rfc3339(pb.NextRunAt)}
}

type attemptJSON struct {
	Number    int32  `json:"number"`
	StartedAt string `json:"startedAt"`
	EndedAt   string `json:"endedAt,omitempty"`
	Status    string `json:"status"`
	Error     string `json:"error,omitempty"`
	Replica   string `json:"replica,omitempty"`
}

type runJSON struct {
	ID            string        `json:"id"`
	Ns            string        `json:"ns"`
	Task          string        `json:"task"`
	Trigger       string        `json:"trigger"`
	ScheduledAt   string        `json:"scheduledAt"`
	Status        string        `json:"status"`
	Attempts      int32         `json:"attempts"`
	StartedAt     string        `json:"startedAt,omitempty"`
	EndedAt       string        `json:"endedAt,omitempty"`
	Error         string        `json:"error,omitempty"`
	Output        string        `json:"output,omitempty"`
	History       []attemptJSON `json:"history"`
	LeaseUntil    string        `json:"leaseUntil,omitempty"`
	NextAttemptAt string        `json:"nextAttemptAt,omitempty"`
	Replica       string        `json:"replica,omitempty"`
}

func runOut(pb *schedulev1.Run) runJSON {
	out := runJSON{ID: pb.Id, Ns: pb.Ns, Task: pb.Task, Trigger: pb.Trigger, ScheduledAt: rfc3339(pb.ScheduledAt), Status: pb.Status,
		Attempts: pb.Attempts, StartedAt: rfc3339(pb.StartedAt), EndedAt: rfc3339(pb.EndedAt), Error: pb.Error, Output: pb.Output,
		LeaseUntil: rfc3339(pb.LeaseUntil), NextAttemptAt: rfc3339(pb.NextAttemptAt), Replica: pb.Replica, History: []attemptJSON{}}
	for _, a := range pb.History {
		out.History = append(out.History, attemptJSON{Number: a.Number, StartedAt: rfc3339(a.StartedAt), EndedAt: rfc3339(a.EndedAt), Status: a.Status, Error: a.Error, Replica: a.Replica})
	}
	return out
}

// taskBody is a PUT body: every field but schedule and action is
// optional.
type taskBody struct {
	Ns            *string     `json:"ns"`
	Name          *string     `json:"name"`
	Description   string      `json:"description"`
	Schedule      string      `json:"schedule"`
	Jitter        string      `json:"jitter"`
	Action        *actionJSON `json:"action"`
	Timeout       string      `json:"timeout"`
	Retries       *int32      `json:"retries"`
	RetryBackoff  string      `json:"retryBackoff"`
	Overlap       string      `json:"overlap"`
	CatchUp       string      `json:"catchUp"`
	CatchUpWindow string      `json:"catchUpWindow"`
	Enabled       *bool       `json:"enabled"`
}

// ParseTaskBody reads a PUT body for task name in namespace ns. It checks
// the JSON's shape; the service validates the values.
func ParseTaskBody(b []byte, ns, name string) (*schedulev1.Task, error) {
	// An empty body is answered with an example of a task rather than
	// DecodeJSON's plain "send a JSON object".
	if len(bytes.TrimSpace(b)) == 0 {
		return nil, invalid("request body is empty; want a JSON task such as {\"schedule\":\"@hourly\",\"action\":{\"type\":\"http\",\"url\":\"https://example.com/hook\"}}")
	}
	var body taskBody
	if err := apierr.DecodeJSON(b, &body); err != nil {
		return nil, err
	}
	if body.Ns != nil && *body.Ns != ns {
		return nil, invalid("ns %q in the body differs from the namespace of the request (%q; set it with ?ns=)", *body.Ns, ns)
	}
	if body.Name != nil && *body.Name != name {
		return nil, invalid("name %q in the body differs from the name in the path (%q)", *body.Name, name)
	}
	pb := &schedulev1.Task{Ns: ns, Name: name, Description: body.Description, Schedule: body.Schedule, Jitter: body.Jitter,
		Timeout: body.Timeout, Retries: body.Retries, RetryBackoff: body.RetryBackoff, Overlap: body.Overlap, CatchUp: body.CatchUp,
		CatchUpWindow: body.CatchUpWindow, Enabled: body.Enabled}
	if a := body.Action; a != nil {
		pb.Action = &schedulev1.Action{Type: a.Type, Queue: a.Queue, Method: a.Method, Url: a.URL, Headers: a.Headers, Body: a.Body, ContentType: a.ContentType, Builtin: a.Builtin}
	}
	return pb, nil
}

func (h *rest) put(w http.ResponseWriter, r *http.Request) {
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	pb, err := ParseTaskBody(b, nsOf(r), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.PutTask(r.Context(), connect.NewRequest(&schedulev1.PutTaskRequest{Task: pb}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if res.Msg.Created {
		status = http.StatusCreated
	}
	apierr.WriteJSON(w, status, taskOut(res.Msg.Task))
}

func (h *rest) get(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.GetTask(r.Context(), connect.NewRequest(&schedulev1.GetTaskRequest{Ns: nsOf(r), Name: r.PathValue("name")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, taskOut(res.Msg.Task))
}

func queryLimit(r *http.Request) (int32, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 1000 {
		return 0, invalid("limit must be a number from 1 to 1000")
	}
	return int32(n), nil
}

func (h *rest) list(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListTasks(r.Context(), connect.NewRequest(&schedulev1.ListTasksRequest{Ns: nsOf(r), Limit: limit, Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]taskJSON, 0, len(res.Msg.Tasks))
	for _, t := range res.Msg.Tasks {
		items = append(items, taskOut(t))
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

func (h *rest) delete(w http.ResponseWriter, r *http.Request) {
	if _, err := h.api.DeleteTask(r.Context(), connect.NewRequest(&schedulev1.DeleteTaskRequest{Ns: nsOf(r), Name: r.PathValue("name")})); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) enable(on bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		res, err := h.api.SetEnabled(r.Context(), connect.NewRequest(&schedulev1.SetEnabledRequest{Ns: nsOf(r), Name: r.PathValue("name"), Enabled: on}))
		if err != nil {
			h.fail(w, r, err)
			return
		}
		apierr.WriteJSON(w, http.StatusOK, taskOut(res.Msg.Task))
	}
}

func (h *rest) run(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.RunTask(r.Context(), connect.NewRequest(&schedulev1.RunTaskRequest{Ns: nsOf(r), Name: r.PathValue("name")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusAccepted, runOut(res.Msg.Run))
}

func (h *rest) runs(w http.ResponseWriter, r *http.Request) {
	limit, err := queryLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	res, err := h.api.ListRuns(r.Context(), connect.NewRequest(&schedulev1.ListRunsRequest{Ns: nsOf(r), Name: r.PathValue("name"), Limit: limit, Cursor: r.URL.Query().Get("cursor")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	items := make([]runJSON, 0, len(res.Msg.Runs))
	for _, run := range res.Msg.Runs {
		items = append(items, runOut(run))
	}
	out := map[string]any{"items": items}
	if res.Msg.NextCursor != "" {
		out["nextCursor"] = res.Msg.NextCursor
	}
	apierr.WriteJSON(w, http.StatusOK, out)
}

func (h *rest) getRun(w http.ResponseWriter, r *http.Request) {
	res, err := h.api.GetRun(r.Context(), connect.NewRequest(&schedulev1.GetRunRequest{Ns: nsOf(r), Name: r.PathValue("name"), Id: r.PathValue("id")}))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, runOut(res.Msg.Run))
}
