package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"strings"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/identity"
	"github.com/dotdo/dotdo/internal/reqid"
)

// Prefixes are the public path prefixes the dispatch service answers.
var Prefixes = []string{"/v1/dispatch", "/dispatch"}

// OpenRoutes answer without credentials: the path route to scripts,
// whose namespace decides who may call them.
var OpenRoutes = []string{"/dispatch/{ns}/{script}", "/dispatch/{ns}/{script}/{path...}"}

// Permissions on a dispatch namespace.
const (
	PermWrite  = "deploy:write"
	PermRead   = "deploy:read"
	PermInvoke = "dispatch:invoke"
	// PermHosts lets a deploy map custom host names to a script.
	PermHosts = "dispatch:hosts"
)

// RouteOptions configure the REST routes.
type RouteOptions struct {
	// Authorize decides whether the caller may use permission on
	// namespace ns, returning the error to answer (401/403) if not.
	Authorize func(r *http.Request, ns, permission string) error
	// MaxModuleBytes caps an uploaded module.
	MaxModuleBytes int64
}

type rest struct {
	api  API
	opts RouteOptions
}

// API is what the routes need from the dispatch service: the *Service in
// its own process, a Client of its Connect contract in a gateway elsewhere.
type API interface {
	PutNamespace(ctx context.Context, name string, in NamespaceInput) (*NamespaceInfo, bool, error)
	Namespace(ctx context.Context, name string) (*NamespaceInfo, error)
	Namespaces(ctx context.Context) ([]*NamespaceInfo, error)
	DeleteNamespace(ctx context.Context, name string) error
	Deploy(ctx context.Context, ns, name string, module []byte, md Metadata, by string) (*Script, error)
	Script(ctx context.Context, ns, name string) (*Script, error)
	Scripts(ctx context.Context, ns string, tags []string) ([]*Script, error)
	Versions(ctx context.Context, ns, name string) ([]*Version, error)
	Rollback(ctx context.Context, ns, name string) (*Script, error)
	DeleteScript(ctx context.Context, ns, name string) error
	DeleteByTags(ctx context.Context, ns string, tags []string) ([]string, error)
	// Invoke runs a script; script failures are in the Response, errors
	// are the binding's own.
	Invoke(ctx context.Context, inv *Invocation) (*Response, error)
}

var _ API = (*Service)(nil)

// Routes registers the deploy API and the path route to scripts on mux.
func Routes(mux *http.ServeMux, api API, opts RouteOptions) {
	if opts.MaxModuleBytes <= 0 {
		opts.MaxModuleBytes = 64 << 20
	}
	h := &rest{api: api, opts: opts}
	read, write := h.need(PermRead), h.need(PermWrite)
	mux.HandleFunc("GET /v1/dispatch/namespaces", h.listNamespaces)
	mux.HandleFunc("PUT /v1/dispatch/namespaces/{ns}", write(h.putNamespace))
	mux.HandleFunc("GET /v1/dispatch/namespaces/{ns}", read(h.getNamespace))
	mux.HandleFunc("DELETE /v1/dispatch/namespaces/{ns}", write(h.deleteNamespace))
	mux.HandleFunc("GET /v1/dispatch/namespaces/{ns}/scripts", read(h.listScripts))
	mux.HandleFunc("DELETE /v1/dispatch/namespaces/{ns}/scripts", write(h.deleteByTags))
	mux.HandleFunc("PUT /v1/dispatch/namespaces/{ns}/scripts/{name}", write(h.deploy))
	mux.HandleFunc("GET /v1/dispatch/namespaces/{ns}/scripts/{name}", read(h.getScript))
	mux.HandleFunc("DELETE /v1/dispatch/namespaces/{ns}/scripts/{name}", write(h.deleteScript))
	mux.HandleFunc("GET /v1/dispatch/namespaces/{ns}/scripts/{name}/versions", read(h.versions))
	mux.HandleFunc("POST /v1/dispatch/namespaces/{ns}/scripts/{name}/rollback", write(h.rollback))
	mux.HandleFunc(OpenRoutes[0], h.invoke)
	mux.HandleFunc(OpenRoutes[1], h.invoke)
}

func (h *rest) fail(w http.ResponseWriter, r *http.Request, err error) {
	writeError(w, reqid.From(r.Context()), err)
}

func (h *rest) authorize(r *http.Request, ns, perm string) error {
	if h.opts.Authorize != nil {
		return h.opts.Authorize(r, ns, perm)
	}
	return nil
}

func (h *rest) need(perm string) func(http.HandlerFunc) http.HandlerFunc {
	return func(next http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			ns := r.PathValue("ns")
			if err := checkName("namespace", ns); err != nil {
				h.fail(w, r, err)
				return
			}
			if err := h.authorize(r, ns, perm); err != nil {
				h.fail(w, r, err)
				return
			}
			next(w, r)
		}
	}
}

// listNamespaces lists the namespaces the caller may read.
func (h *rest) listNamespaces(w http.ResponseWriter, r *http.Request) {
	if identity.From(r.Context()) == nil && h.opts.Authorize != nil {
		h.fail(w, r, apierr.New(apierr.Unauthenticated, "authentication required"))
		return
	}
	all, err := h.api.Namespaces(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := []*NamespaceInfo{}
	for _, n := range all {
		if h.authorize(r, n.Name, PermRead) == nil {
			out = append(out, n)
		}
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"items": out})
}

func (h *rest) putNamespace(w http.ResponseWriter, r *http.Request) {
	b, err := apierr.ReadBody(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// An empty body puts the namespace with the defaults.
	var in NamespaceInput
	if len(bytes.TrimSpace(b)) > 0 {
		if err := apierr.DecodeJSON(b, &in); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	n, created, err := h.api.PutNamespace(r.Context(), r.PathValue("ns"), in)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	apierr.WriteJSON(w, status, n)
}

func (h *rest) getNamespace(w http.ResponseWriter, r *http.Request) {
	n, err := h.api.Namespace(r.Context(), r.PathValue("ns"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, n)
}

func (h *rest) deleteNamespace(w http.ResponseWriter, r *http.Request) {
	if err := h.api.DeleteNamespace(r.Context(), r.PathValue("ns")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func tagsParam(r *http.Request) []string {
	var out []string
	for _, v := range r.URL.Query()["tags"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t != "" {
				out = append(out, t)
			}
		}
	}
	return out
}

func (h *rest) listScripts(w http.ResponseWriter, r *http.Request) {
	scripts, err := h.api.Scripts(r.Context(), r.PathValue("ns"), tagsParam(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"items": scripts})
}

func (h *rest) deleteByTags(w http.ResponseWriter, r *http.Request) {
	names, err := h.api.DeleteByTags(r.Context(), r.PathValue("ns"), tagsParam(r))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"deleted": names})
}

func (h *rest) getScript(w http.ResponseWriter, r *http.Request) {
	sc, err := h.api.Script(r.Context(), r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, sc)
}

func (h *rest) deleteScript(w http.ResponseWriter, r *http.Request) {
	if err := h.api.DeleteScript(r.Context(), r.PathValue("ns"), r.PathValue("name")); err != nil {
		h.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *rest) versions(w http.ResponseWriter, r *http.Request) {
	vs, err := h.api.Versions(r.Context(), r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, map[string]any{"items": vs})
}

func (h *rest) rollback(w http.ResponseWriter, r *http.Request) {
	sc, err := h.api.Rollback(r.Context(), r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		h.fail(w, r, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, sc)
}

// deploy takes multipart/form-data with a "module" part (the .wasm) and
// an optional "metadata" part (JSON: tags, env, limits).
func (h *rest) deploy(w http.ResponseWriter, r *http.Request) {
	module, md, err := ReadUpload(r, h.opts.MaxModuleBytes)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if md.Hosts != nil && len(*md.Hosts) > 0 {
		if err := h.authorize(r, r.PathValue("ns"), PermHosts); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	by := ""
	if id := identity.From(r.Context()); id != nil {
		by = id.Kind + ":" + id.Subject
	}
	sc, err := h.api.Deploy(r.Context(), r.PathValue("ns"), r.PathValue("name"), module, md, by)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	status := http.StatusOK
	if sc.Current.Version == 1 {
		status = http.StatusCreated
	}
	apierr.WriteJSON(w, status, sc)
}

// ReadUpload reads a deploy request's multipart body.
func ReadUpload(r *http.Request, maxModule int64) ([]byte, Metadata, error) {
	var md Metadata
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, md, apierr.New(apierr.Unsupported, "send multipart/form-data with a \"module\" part (the .wasm file) and an optional \"metadata\" part (JSON)")
	}
	mr := multipart.NewReader(r.Body, params["boundary"])
	var module []byte
	seen := map[string]bool{}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, md, uploadError(err)
		}
		name := p.FormName()
		if seen[name] {
			return nil, md, apierr.New(apierr.Invalid, "part %q is given twice", name)
		}
		seen[name] = true
		switch name {
		case "module":
			b, err := io.ReadAll(io.LimitReader(p, maxModule+1))
			if err != nil {
				return nil, md, uploadError(err)
			}
			if int64(len(b)) > maxModule {
				return nil, md, apierr.New(apierr.TooLarge, "module is larger than %d bytes", maxModule)
			}
			module = b
		case "metadata":
			b, err := io.ReadAll(io.LimitReader(p, 64<<10+1))
			if err != nil {
				return nil, md, uploadError(err)
			}
			if len(b) > 64<<10 {
				return nil, md, apierr.New(apierr.TooLarge, "metadata is larger than 64 KiB")
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&md); err != nil {
				return nil, md, apierr.New(apierr.Invalid, "invalid metadata JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
			}
		default:
			return nil, md, apierr.New(apierr.Invalid, "unknown part %q: send \"module\" and \"metadata\"", clip(name))
		}
	}
	if module == nil {
		return nil, md, apierr.New(apierr.Invalid, "the upload has no \"module\" part")
	}
	return module, md, nil
}

func uploadError(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return apierr.BodyError(err)
	}
	return apierr.New(apierr.Invalid, "reading the multipart body: %v", err)
}

// invoke is the path route /dispatch/{ns}/{script}/{path...}.
func (h *rest) invoke(w http.ResponseWriter, r *http.Request) {
	ns, script := r.PathValue("ns"), r.PathValue("script")
	prefix := "/dispatch/" + ns + "/" + script
	inv, err := NewInvocation(r, Request{Namespace: ns, Script: script, ScriptName: prefix, PathInfo: strings.TrimPrefix(r.URL.Path, prefix)})
	if err != nil {
		h.fail(w, r, err)
		return
	}
	// Whether the caller may call a private namespace's scripts is
	// decided here, where the identity is; the service applies it.
	inv.Authenticated = identity.From(r.Context()) != nil
	inv.MayInvoke = inv.Authenticated && (h.opts.Authorize == nil || h.opts.Authorize(r, ns, PermInvoke) == nil)
	res, err := h.api.Invoke(r.Context(), inv)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	WriteResponse(w, r, false, res)
}

// MatchHost reports whether host reaches a script: a custom host name or
// one the host pattern matches.
func (s *HostIndex) MatchHost(host string) bool {
	_, _, ok := s.hostScript(host)
	return ok
}

// HostHandler serves requests whose host names a script through api; the
// gateway hands it the hosts idx.MatchHost claims. Private namespaces are
// not reachable by host name.
func HostHandler(api API, idx *HostIndex) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ns, script, ok := idx.hostScript(r.Host)
		if !ok {
			writeError(w, reqid.From(r.Context()), apierr.New(apierr.NotFound, "no script for host %s", clip(r.Host)))
			return
		}
		q := Request{Namespace: ns, Script: script, PathInfo: r.URL.Path, ViaHost: true}
		inv, err := NewInvocation(r, q)
		if err != nil {
			writeError(w, reqid.From(r.Context()), err)
			return
		}
		res, err := api.Invoke(r.Context(), inv)
		if err != nil {
			writeError(w, reqid.From(r.Context()), err)
			return
		}
		WriteResponse(w, r, true, res)
	})
}

// HostHandler serves the hosts MatchHost claims.
func (s *Service) HostHandler() http.Handler { return HostHandler(s, s.HostIndex) }
