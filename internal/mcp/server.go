// Package mcp is dotdo's Model Context Protocol server: it exposes the
// platform's services to AI agents as MCP tools and resources, each call
// made under the caller's own identity and permissions.
//
// The server is built on the official Go SDK. It reaches the services only
// through the small bindings defined here (DB, Auth, ...), so the same tool
// code serves Streamable HTTP behind the gateway (bindings are the services
// themselves or their Connect clients), stdio against a data directory
// (the services in process) and stdio against a running server's REST API
// (see Remote).
package mcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"reflect"

	"connectrpc.com/connect"
	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/identity"
)

// DB is what the tools need from the db service: the local
// *thingsdb.Service, its Connect client, or Remote. Errors are *apierr.Error
// values (or Connect errors carrying one).
type DB interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	Delete(context.Context, *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Related(context.Context, *connect.Request[dbv1.RelatedRequest]) (*connect.Response[dbv1.RelatedResponse], error)
	PutRelationship(context.Context, *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error)
}

// Auth is what the API-key tools need from the auth service.
type Auth interface {
	CreateAPIKey(context.Context, *connect.Request[authv1.CreateAPIKeyRequest]) (*connect.Response[authv1.CreateAPIKeyResponse], error)
	ListAPIKeys(context.Context, *connect.Request[authv1.ListAPIKeysRequest]) (*connect.Response[authv1.ListAPIKeysResponse], error)
	RevokeAPIKey(context.Context, *connect.Request[authv1.RevokeAPIKeyRequest]) (*connect.Response[authv1.RevokeAPIKeyResponse], error)
}

// Authorizer decides whether id may use permission on namespace ns. In
// process it is auth.Can over the configured roles; Remote asks the server.
type Authorizer func(ctx context.Context, id *authv1.Identity, ns, permission string) (bool, error)

// Defaults of Options.
const (
	// DefaultPageSize is how many tools, resources or templates one list
	// page holds.
	DefaultPageSize = 20
	// DefaultMaxResultBytes caps the JSON of one tool result; list tools
	// return fewer items (with a cursor for the rest) to stay under it.
	DefaultMaxResultBytes = 1 << 20
	// MaxLimit is the largest limit a list tool accepts.
	MaxLimit = 200
	// DefaultLimit is the limit of a list tool called without one.
	DefaultLimit = 50
)

// Options configure the server.
type Options struct {
	// DB is required.
	DB DB
	// Auth, when set, adds the API-key tools.
	Auth Auth
	// Search, when set, adds db_search, db_stats and analytics_query.
	Search Search
	// Queue, when set, adds queue_send and queue_stats.
	Queue Queue
	// Email, when set, adds email_send and email_status; EmailTemplates
	// adds email_templates.
	Email          Email
	EmailTemplates EmailTemplates
	// Schedule, when set, adds tasks_list, task_run and task_runs.
	Schedule Schedule
	// Webhooks, when set, adds webhook_events and webhook_replay.
	Webhooks Webhooks
	// Can decides permissions; required.
	Can Authorizer
	// CustomRoles are the configured roles beside the built-in ones, to
	// check that api_key_create grants only what the caller holds.
	CustomRoles map[string][]string
	// Identity, when set, is the caller of every request: stdio runs as
	// one identity. Otherwise the identity comes from the HTTP request
	// (see Handler) or the context (identity.From).
	Identity *authv1.Identity
	// Version is reported to clients.
	Version string
	// Logger receives internal errors; the client sees only their code.
	Logger *slog.Logger
	// PageSize is the page size of tools/list and the other list
	// methods; 0 means DefaultPageSize.
	PageSize int
	// MaxResultBytes caps one tool result; 0 means DefaultMaxResultBytes.
	MaxResultBytes int
}

// Server is the MCP server.
type Server struct {
	opts  Options
	log   *slog.Logger
	srv   *sdk.Server
	tools []string
}

// New returns a server with the tools of the bindings given.
func New(opts Options) (*Server, error) {
	if opts.DB == nil || opts.Can == nil {
		return nil, errors.New("mcp: DB and Can are required")
	}
	if opts.PageSize <= 0 {
		opts.PageSize = DefaultPageSize
	}
	if opts.MaxResultBytes <= 0 {
		opts.MaxResultBytes = DefaultMaxResultBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Version == "" {
		opts.Version = "dev"
	}
	s := &Server{opts: opts, log: opts.Logger.With("service", "mcp")}
	s.srv = sdk.NewServer(&sdk.Implementation{Name: "dotdo", Title: "dotdo", Version: opts.Version}, &sdk.ServerOptions{
		Instructions: instructions,
		PageSize:     opts.PageSize,
		Capabilities: &sdk.ServerCapabilities{},
	})
	s.addDBTools()
	if opts.Search != nil {
		s.addSearchTools()
	}
	if opts.Auth != nil {
		s.addAuthTools()
	}
	if opts.Queue != nil {
		s.addQueueTools()
	}
	if opts.Email != nil {
		s.addEmailTools()
	}
	if opts.Schedule != nil {
		s.addScheduleTools()
	}
	if opts.Webhooks != nil {
		s.addWebhookTools()
	}
	s.addWhoami()
	s.addResources()
	return s, nil
}

const instructions = `dotdo is a backend platform. Its data lives in namespaces (tenants or apps) as things: ` +
	`JSON objects with an id, a type and a version. Every call runs with the permissions of your ` +
	`API key or token; call whoami to see them. Lists are paginated: pass nextCursor back as cursor ` +
	`with the same other arguments. A thing is also the resource dotdo://things/{ns}/{id}.`

// MCP returns the SDK server, for transports.
func (s *Server) MCP() *sdk.Server { return s.srv }

// Tools returns the names of the tools the server has, in the order added.
func (s *Server) Tools() []string { return append([]string(nil), s.tools...) }

// Run serves one session on t (stdio) until the client leaves or ctx ends.
func (s *Server) Run(ctx context.Context, t sdk.Transport) error {
	return s.srv.Run(ctx, t)
}

// caller returns the identity of a request.
func (s *Server) caller(ctx context.Context, extra *sdk.RequestExtra) *authv1.Identity {
	if extra != nil && extra.TokenInfo != nil {
		if id, ok := extra.TokenInfo.Extra[identityKey].(*authv1.Identity); ok {
			return id
		}
	}
	if s.opts.Identity != nil {
		return s.opts.Identity
	}
	return identity.From(ctx)
}

// errDenied is a permission refusal; its message names the permission.
type errDenied struct{ perm, ns string }

func (e errDenied) Error() string {
	return fmt.Sprintf("forbidden: missing permission %s on namespace %s", e.perm, e.ns)
}

// need checks that the caller may use perm on ns.
func (s *Server) need(ctx context.Context, id *authv1.Identity, ns, perm string) error {
	if id == nil {
		return apierr.New(apierr.Unauthenticated, "authentication required")
	}
	ok, err := s.opts.Can(ctx, id, ns, perm)
	if err != nil {
		return err
	}
	if !ok {
		return errDenied{perm: perm, ns: ns}
	}
	return nil
}

// invalid is a bad-argument error.
func invalid(format string, args ...any) error { return apierr.New(apierr.Invalid, format, args...) }

// call is what a tool handler gets: the caller and the server.
type call struct {
	ctx context.Context
	id  *authv1.Identity
}

// toolError turns a service error into the text of an isError result:
// the error code and message, never internal details (those are logged).
func (s *Server) toolError(ctx context.Context, tool string, err error) error {
	var d errDenied
	if errors.As(err, &d) {
		return err
	}
	e := apierr.From(err)
	if e.Code == apierr.Internal {
		s.log.ErrorContext(ctx, "tool failed", "tool", tool, "err", err)
	}
	return fmt.Errorf("%s: %s", e.Code, e.Message)
}

// addTool registers a typed tool whose schemas come from In and Out.
// edits add constraints to the input schema that the Go types cannot say
// (ranges, enums).
func addTool[In, Out any](s *Server, t *sdk.Tool, h func(c call, in In) (Out, error), edits ...func(*jsonschema.Schema)) {
	in := schemaFor[In]()
	for _, edit := range edits {
		edit(in)
	}
	t.InputSchema = in
	t.OutputSchema = schemaFor[Out]()
	sdk.AddTool(s.srv, t, func(ctx context.Context, req *sdk.CallToolRequest, in In) (*sdk.CallToolResult, Out, error) {
		var zero Out
		id := s.caller(ctx, req.Extra)
		if id != nil {
			// The services read the caller from the context too (an
			// sk_test_ key's email stays in the outbox).
			ctx = identity.With(ctx, id)
		}
		out, err := h(call{ctx: ctx, id: id}, in)
		if err != nil {
			return nil, zero, s.toolError(ctx, t.Name, err)
		}
		return nil, out, nil
	})
	s.tools = append(s.tools, t.Name)
}

// typeSchemas maps Go types whose inferred schema would be wrong: raw JSON
// fields hold objects.
var typeSchemas = map[reflect.Type]*jsonschema.Schema{
	reflect.TypeFor[json.RawMessage](): {Type: "object"},
}

func schemaFor[T any]() *jsonschema.Schema {
	sc, err := jsonschema.For[T](&jsonschema.ForOptions{TypeSchemas: typeSchemas})
	if err != nil {
		panic(fmt.Sprintf("mcp: schema of %T: %v", *new(T), err))
	}
	singleTypes(sc)
	return sc
}

// singleTypes turns the ["null","array"] the inference gives Go slices
// into "array": clients that map tool schemas onto a single-type dialect
// (Gemini's function declarations) reject type arrays. The tools never
// return null for a list, and an absent argument is the way to leave one
// out.
func singleTypes(sc *jsonschema.Schema) {
	if sc == nil {
		return
	}
	if len(sc.Types) == 2 && sc.Types[0] == "null" {
		sc.Type, sc.Types = sc.Types[1], nil
	}
	for _, p := range sc.Properties {
		singleTypes(p)
	}
	singleTypes(sc.Items)
	singleTypes(sc.AdditionalProperties)
}

// limitProp constrains an integer "limit" property.
func limitProp(sc *jsonschema.Schema) {
	if p := sc.Properties["limit"]; p != nil {
		p.Minimum, p.Maximum = jsonschema.Ptr(1.0), jsonschema.Ptr(float64(MaxLimit))
	}
}

// enumProp constrains a string property to values.
func enumProp(name string, values ...string) func(*jsonschema.Schema) {
	return func(sc *jsonschema.Schema) {
		if p := sc.Properties[name]; p != nil {
			for _, v := range values {
				p.Enum = append(p.Enum, v)
			}
		}
	}
}

// annotations: honest hints for each kind of tool.
func readOnly(title string) *sdk.ToolAnnotations {
	return &sdk.ToolAnnotations{Title: title, ReadOnlyHint: true, IdempotentHint: true, DestructiveHint: jsonschema.Ptr(false), OpenWorldHint: jsonschema.Ptr(false)}
}

func writes(title string, destructive, idempotent bool) *sdk.ToolAnnotations {
	return &sdk.ToolAnnotations{Title: title, DestructiveHint: jsonschema.Ptr(destructive), IdempotentHint: idempotent, OpenWorldHint: jsonschema.Ptr(false)}
}

// limit returns the list limit of a call: the default for 0.
func limit(n int) (int, error) {
	if n == 0 {
		return DefaultLimit, nil
	}
	if n < 1 || n > MaxLimit {
		return 0, invalid("limit must be 1-%d", MaxLimit)
	}
	return n, nil
}

// fit fetches a page of at most n items and, while its JSON is over the
// result cap, fetches again with half as many, so that the cursor it
// returns resumes right after the last item returned: a page is never cut
// silently. A single item over the cap is returned alone.
func fit[T any](s *Server, n int, fetch func(limit int) (T, int, error)) (T, error) {
	for {
		out, got, err := fetch(n)
		if err != nil {
			return out, err
		}
		b, err := json.Marshal(out)
		if err != nil {
			return out, err
		}
		if len(b) <= s.opts.MaxResultBytes || got <= 1 {
			return out, nil
		}
		n = got / 2
	}
}
