package dispatch

import (
	"context"
	"net/http"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dispatchv1 "github.com/dotdo/dotdo/internal/gen/dotdo/dispatch/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/dispatch/v1/dispatchv1connect"
)

// This file is the dispatch service's Connect contract: Handler serves it
// over a *Service, Client implements API over it, so a gateway in another
// process serves the REST routes and the script hosts.

// Conversions between the Go types and the messages.

func limitsToPB(l Limits) *dispatchv1.Limits {
	return &dispatchv1.Limits{WallMs: int32(l.WallMS), MemoryMb: int32(l.MemoryMB), Subrequests: int32(l.Subrequests), ResponseBytes: l.ResponseBytes}
}

func limitsFromPB(l *dispatchv1.Limits) Limits {
	return Limits{WallMS: int(l.GetWallMs()), MemoryMB: int(l.GetMemoryMb()), Subrequests: int(l.GetSubrequests()), ResponseBytes: l.GetResponseBytes()}
}

func nsToPB(n *NamespaceInfo) *dispatchv1.Namespace {
	return &dispatchv1.Namespace{Name: n.Name, Access: n.Access, Limits: limitsToPB(n.Limits),
		Outbound:  &dispatchv1.Outbound{Mode: n.Outbound.Mode, Allow: n.Outbound.Allow, Handler: n.Outbound.Handler},
		CreatedAt: n.CreatedAt, UpdatedAt: n.UpdatedAt}
}

func nsFromPB(n *dispatchv1.Namespace) *NamespaceInfo {
	return &NamespaceInfo{Name: n.GetName(), Access: n.GetAccess(), Limits: limitsFromPB(n.GetLimits()),
		Outbound:  Outbound{Mode: n.GetOutbound().GetMode(), Allow: n.GetOutbound().GetAllow(), Handler: n.GetOutbound().GetHandler()},
		CreatedAt: n.GetCreatedAt(), UpdatedAt: n.GetUpdatedAt()}
}

func ints32(in []int) []int32 {
	out := make([]int32, len(in))
	for i, v := range in {
		out[i] = int32(v)
	}
	return out
}

func ints(in []int32) []int {
	out := make([]int, len(in))
	for i, v := range in {
		out[i] = int(v)
	}
	return out
}

func versionToPB(v *Version) *dispatchv1.Version {
	return &dispatchv1.Version{Version: int32(v.Version), Sha256: v.SHA256, Size: int64(v.Size), Chunks: int32(v.Chunks),
		Tags: v.Tags, Env: v.Env, Limits: limitsToPB(v.Limits), CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy}
}

func versionFromPB(v *dispatchv1.Version) *Version {
	tags := v.GetTags()
	if tags == nil {
		tags = []string{}
	}
	return &Version{Version: int(v.GetVersion()), SHA256: v.GetSha256(), Size: int(v.GetSize()), Chunks: int(v.GetChunks()),
		Tags: tags, Env: v.GetEnv(), Limits: limitsFromPB(v.GetLimits()), CreatedAt: v.GetCreatedAt(), CreatedBy: v.GetCreatedBy()}
}

func scriptToPB(s *Script) *dispatchv1.Script {
	return &dispatchv1.Script{Namespace: s.Namespace, Name: s.Name, Current: versionToPB(&s.Current), History: ints32(s.History),
		Stored: ints32(s.Stored), NextVersion: int32(s.Next), Hosts: s.Hosts, CreatedAt: s.CreatedAt, UpdatedAt: s.UpdatedAt}
}

func scriptFromPB(s *dispatchv1.Script) *Script {
	return &Script{Namespace: s.GetNamespace(), Name: s.GetName(), Current: *versionFromPB(s.GetCurrent()), History: ints(s.GetHistory()),
		Stored: ints(s.GetStored()), Next: int(s.GetNextVersion()), Hosts: s.GetHosts(), CreatedAt: s.GetCreatedAt(), UpdatedAt: s.GetUpdatedAt()}
}

func headersToPB(h http.Header) []*dispatchv1.Header {
	out := make([]*dispatchv1.Header, 0, len(h))
	for k, vs := range h {
		out = append(out, &dispatchv1.Header{Name: k, Values: vs})
	}
	return out
}

func headersFromPB(hs []*dispatchv1.Header) http.Header {
	h := make(http.Header, len(hs))
	for _, x := range hs {
		h[x.GetName()] = x.GetValues()
	}
	return h
}

// Handler serves the Connect contract over the service.
type Handler struct{ s *Service }

// NewHandler returns the Connect handler of s.
func NewHandler(s *Service) *Handler { return &Handler{s: s} }

var _ dispatchv1connect.DispatchServiceHandler = (*Handler)(nil)

func (h *Handler) PutNamespace(ctx context.Context, req *connect.Request[dispatchv1.PutNamespaceRequest]) (*connect.Response[dispatchv1.PutNamespaceResponse], error) {
	m := req.Msg
	n, created, err := h.s.PutNamespace(ctx, m.Name, NamespaceInput{Access: m.Access, Limits: limitsFromPB(m.Limits),
		Outbound: Outbound{Mode: m.GetOutbound().GetMode(), Allow: m.GetOutbound().GetAllow(), Handler: m.GetOutbound().GetHandler()}})
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.PutNamespaceResponse{Namespace: nsToPB(n), Created: created}), nil
}

func (h *Handler) GetNamespace(ctx context.Context, req *connect.Request[dispatchv1.GetNamespaceRequest]) (*connect.Response[dispatchv1.GetNamespaceResponse], error) {
	n, err := h.s.Namespace(ctx, req.Msg.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.GetNamespaceResponse{Namespace: nsToPB(n)}), nil
}

func (h *Handler) ListNamespaces(ctx context.Context, _ *connect.Request[dispatchv1.ListNamespacesRequest]) (*connect.Response[dispatchv1.ListNamespacesResponse], error) {
	ns, err := h.s.Namespaces(ctx)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	out := &dispatchv1.ListNamespacesResponse{}
	for _, n := range ns {
		out.Namespaces = append(out.Namespaces, nsToPB(n))
	}
	return connect.NewResponse(out), nil
}

func (h *Handler) DeleteNamespace(ctx context.Context, req *connect.Request[dispatchv1.DeleteNamespaceRequest]) (*connect.Response[dispatchv1.DeleteNamespaceResponse], error) {
	if err := h.s.DeleteNamespace(ctx, req.Msg.Name); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.DeleteNamespaceResponse{}), nil
}

func (h *Handler) Deploy(ctx context.Context, req *connect.Request[dispatchv1.DeployRequest]) (*connect.Response[dispatchv1.DeployResponse], error) {
	m := req.Msg
	md := Metadata{Tags: m.Tags, Env: m.Env, Limits: limitsFromPB(m.Limits)}
	if m.SetHosts {
		hosts := append([]string{}, m.Hosts...)
		md.Hosts = &hosts
	}
	sc, err := h.s.Deploy(ctx, m.Namespace, m.Name, m.Module, md, m.CreatedBy)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.DeployResponse{Script: scriptToPB(sc)}), nil
}

func (h *Handler) GetScript(ctx context.Context, req *connect.Request[dispatchv1.GetScriptRequest]) (*connect.Response[dispatchv1.GetScriptResponse], error) {
	sc, err := h.s.Script(ctx, req.Msg.Namespace, req.Msg.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.GetScriptResponse{Script: scriptToPB(sc)}), nil
}

func (h *Handler) ListScripts(ctx context.Context, req *connect.Request[dispatchv1.ListScriptsRequest]) (*connect.Response[dispatchv1.ListScriptsResponse], error) {
	scripts, err := h.s.Scripts(ctx, req.Msg.Namespace, req.Msg.Tags)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	out := &dispatchv1.ListScriptsResponse{}
	for _, sc := range scripts {
		out.Scripts = append(out.Scripts, scriptToPB(sc))
	}
	return connect.NewResponse(out), nil
}

func (h *Handler) ListVersions(ctx context.Context, req *connect.Request[dispatchv1.ListVersionsRequest]) (*connect.Response[dispatchv1.ListVersionsResponse], error) {
	vs, err := h.s.Versions(ctx, req.Msg.Namespace, req.Msg.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	out := &dispatchv1.ListVersionsResponse{}
	for _, v := range vs {
		out.Versions = append(out.Versions, versionToPB(v))
	}
	return connect.NewResponse(out), nil
}

func (h *Handler) Rollback(ctx context.Context, req *connect.Request[dispatchv1.RollbackRequest]) (*connect.Response[dispatchv1.RollbackResponse], error) {
	sc, err := h.s.Rollback(ctx, req.Msg.Namespace, req.Msg.Name)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.RollbackResponse{Script: scriptToPB(sc)}), nil
}

func (h *Handler) DeleteScript(ctx context.Context, req *connect.Request[dispatchv1.DeleteScriptRequest]) (*connect.Response[dispatchv1.DeleteScriptResponse], error) {
	if err := h.s.DeleteScript(ctx, req.Msg.Namespace, req.Msg.Name); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.DeleteScriptResponse{}), nil
}

func (h *Handler) DeleteByTags(ctx context.Context, req *connect.Request[dispatchv1.DeleteByTagsRequest]) (*connect.Response[dispatchv1.DeleteByTagsResponse], error) {
	names, err := h.s.DeleteByTags(ctx, req.Msg.Namespace, req.Msg.Tags)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.DeleteByTagsResponse{Deleted: names}), nil
}

func (h *Handler) Invoke(ctx context.Context, req *connect.Request[dispatchv1.InvokeRequest]) (*connect.Response[dispatchv1.InvokeResponse], error) {
	m := req.Msg
	inv := &Invocation{
		Request: Request{Namespace: m.Namespace, Script: m.Script, ScriptName: m.ScriptName, PathInfo: m.PathInfo, ViaHost: m.ViaHost},
		Method:  m.Method, Host: m.Host, RawQuery: m.RawQuery, Proto: m.Proto, RemoteAddr: m.RemoteAddr,
		Header: headersFromPB(m.Headers), Body: m.Body, Authenticated: m.Authenticated, MayInvoke: m.MayInvoke,
	}
	res, err := h.s.Invoke(ctx, inv)
	if err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.InvokeResponse{Status: int32(res.Status), Headers: headersToPB(res.Header), Body: res.Body}), nil
}

func (h *Handler) Health(ctx context.Context, _ *connect.Request[dispatchv1.HealthRequest]) (*connect.Response[dispatchv1.HealthResponse], error) {
	if err := h.s.Health(ctx); err != nil {
		return nil, apierr.ToConnect(err)
	}
	return connect.NewResponse(&dispatchv1.HealthResponse{Status: "ok"}), nil
}

// Client implements API over the Connect contract, with the same errors
// as the local service.
type Client struct {
	c dispatchv1connect.DispatchServiceClient
}

// NewClient returns an API over a Connect client.
func NewClient(c dispatchv1connect.DispatchServiceClient) *Client { return &Client{c: c} }

var _ API = (*Client)(nil)

func remote(err error) error { return apierr.From(err) }

func (c *Client) PutNamespace(ctx context.Context, name string, in NamespaceInput) (*NamespaceInfo, bool, error) {
	res, err := c.c.PutNamespace(ctx, connect.NewRequest(&dispatchv1.PutNamespaceRequest{Name: name, Access: in.Access, Limits: limitsToPB(in.Limits),
		Outbound: &dispatchv1.Outbound{Mode: in.Outbound.Mode, Allow: in.Outbound.Allow, Handler: in.Outbound.Handler}}))
	if err != nil {
		return nil, false, remote(err)
	}
	return nsFromPB(res.Msg.Namespace), res.Msg.Created, nil
}

func (c *Client) Namespace(ctx context.Context, name string) (*NamespaceInfo, error) {
	res, err := c.c.GetNamespace(ctx, connect.NewRequest(&dispatchv1.GetNamespaceRequest{Name: name}))
	if err != nil {
		return nil, remote(err)
	}
	return nsFromPB(res.Msg.Namespace), nil
}

func (c *Client) Namespaces(ctx context.Context) ([]*NamespaceInfo, error) {
	res, err := c.c.ListNamespaces(ctx, connect.NewRequest(&dispatchv1.ListNamespacesRequest{}))
	if err != nil {
		return nil, remote(err)
	}
	out := make([]*NamespaceInfo, 0, len(res.Msg.Namespaces))
	for _, n := range res.Msg.Namespaces {
		out = append(out, nsFromPB(n))
	}
	return out, nil
}

func (c *Client) DeleteNamespace(ctx context.Context, name string) error {
	_, err := c.c.DeleteNamespace(ctx, connect.NewRequest(&dispatchv1.DeleteNamespaceRequest{Name: name}))
	if err != nil {
		return remote(err)
	}
	return nil
}

func (c *Client) Deploy(ctx context.Context, ns, name string, module []byte, md Metadata, by string) (*Script, error) {
	req := &dispatchv1.DeployRequest{Namespace: ns, Name: name, Module: module, Tags: md.Tags, Env: md.Env, Limits: limitsToPB(md.Limits), CreatedBy: by}
	if md.Hosts != nil {
		req.SetHosts, req.Hosts = true, *md.Hosts
	}
	res, err := c.c.Deploy(ctx, connect.NewRequest(req))
	if err != nil {
		return nil, remote(err)
	}
	return scriptFromPB(res.Msg.Script), nil
}

func (c *Client) Script(ctx context.Context, ns, name string) (*Script, error) {
	res, err := c.c.GetScript(ctx, connect.NewRequest(&dispatchv1.GetScriptRequest{Namespace: ns, Name: name}))
	if err != nil {
		return nil, remote(err)
	}
	return scriptFromPB(res.Msg.Script), nil
}

func (c *Client) Scripts(ctx context.Context, ns string, tags []string) ([]*Script, error) {
	res, err := c.c.ListScripts(ctx, connect.NewRequest(&dispatchv1.ListScriptsRequest{Namespace: ns, Tags: tags}))
	if err != nil {
		return nil, remote(err)
	}
	out := make([]*Script, 0, len(res.Msg.Scripts))
	for _, s := range res.Msg.Scripts {
		out = append(out, scriptFromPB(s))
	}
	return out, nil
}

func (c *Client) Versions(ctx context.Context, ns, name string) ([]*Version, error) {
	res, err := c.c.ListVersions(ctx, connect.NewRequest(&dispatchv1.ListVersionsRequest{Namespace: ns, Name: name}))
	if err != nil {
		return nil, remote(err)
	}
	out := make([]*Version, 0, len(res.Msg.Versions))
	for _, v := range res.Msg.Versions {
		out = append(out, versionFromPB(v))
	}
	return out, nil
}

func (c *Client) Rollback(ctx context.Context, ns, name string) (*Script, error) {
	res, err := c.c.Rollback(ctx, connect.NewRequest(&dispatchv1.RollbackRequest{Namespace: ns, Name: name}))
	if err != nil {
		return nil, remote(err)
	}
	return scriptFromPB(res.Msg.Script), nil
}

func (c *Client) DeleteScript(ctx context.Context, ns, name string) error {
	if _, err := c.c.DeleteScript(ctx, connect.NewRequest(&dispatchv1.DeleteScriptRequest{Namespace: ns, Name: name})); err != nil {
		return remote(err)
	}
	return nil
}

func (c *Client) DeleteByTags(ctx context.Context, ns string, tags []string) ([]string, error) {
	res, err := c.c.DeleteByTags(ctx, connect.NewRequest(&dispatchv1.DeleteByTagsRequest{Namespace: ns, Tags: tags}))
	if err != nil {
		return nil, remote(err)
	}
	if res.Msg.Deleted == nil {
		return []string{}, nil
	}
	return res.Msg.Deleted, nil
}

func (c *Client) Invoke(ctx context.Context, inv *Invocation) (*Response, error) {
	res, err := c.c.Invoke(ctx, connect.NewRequest(&dispatchv1.InvokeRequest{
		Namespace: inv.Namespace, Script: inv.Script, Method: inv.Method, Host: inv.Host, ScriptName: inv.ScriptName,
		PathInfo: inv.PathInfo, RawQuery: inv.RawQuery, Proto: inv.Proto, RemoteAddr: inv.RemoteAddr,
		Headers: headersToPB(inv.Header), Body: inv.Body, ViaHost: inv.ViaHost, Authenticated: inv.Authenticated, MayInvoke: inv.MayInvoke,
	}))
	if err != nil {
		return nil, remote(err)
	}
	return &Response{Status: int(res.Msg.Status), Header: headersFromPB(res.Msg.Headers), Body: res.Msg.Body}, nil
}

// Health asks the remote service whether it is healthy.
func (c *Client) Health(ctx context.Context) error {
	if _, err := c.c.Health(ctx, connect.NewRequest(&dispatchv1.HealthRequest{})); err != nil {
		return remote(err)
	}
	return nil
}
