package dispatch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"connectrpc.com/connect"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/reqid"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The host functions, imported from module "dotdo". Each call function
// takes a JSON request (pointer, length) in the script's memory, performs
// it, keeps the JSON result in the request's state and returns its
// length; "result" then copies it into the script's memory:
//
//	fetch(ptr, len i32) i32         {"method","url","headers":{},"body":base64}
//	thing_get(ptr, len i32) i32     {"id"}
//	thing_put(ptr, len i32) i32     {"id","type","data":{},"ifVersion","create"}
//	thing_list(ptr, len i32) i32    {"type","where","order","limit","cursor"}
//	thing_delete(ptr, len i32) i32  {"id"}
//	result(ptr, cap i32) i32        copies min(cap, len) bytes, returns that count
//
// A result is {"ok":...} or {"error":{"code","message"}}. Every call counts
// against the script's subrequest limit.
var hostFunctions = map[string]bool{"fetch": true, "thing_get": true, "thing_put": true, "thing_list": true, "thing_delete": true, "result": true}

// host holds what the host functions reach: the db binding and an HTTP
// client for fetch.
type host struct {
	db     thingsdb.API
	client *http.Client
}

// callState is one request's state, which host functions find in the
// context of the instantiation.
type callState struct {
	ns          *NamespaceInfo
	script      string
	limit       int
	subrequests int
	maxBody     int64
	result      []byte
}

type stateKey struct{}

type hostCall func(ctx context.Context, st *callState, arg []byte) (any, error)

func (h *host) instantiate(ctx context.Context, rt wazero.Runtime) error {
	b := rt.NewHostModuleBuilder(HostModule)
	i32 := api.ValueTypeI32
	calls := map[string]hostCall{
		"fetch": h.fetch, "thing_get": h.thingGet, "thing_put": h.thingPut,
		"thing_list": h.thingList, "thing_delete": h.thingDelete,
	}
	for name, call := range calls {
		b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
			st, _ := ctx.Value(stateKey{}).(*callState)
			ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
			arg, ok := mod.Memory().Read(ptr, n)
			if st == nil || !ok {
				panic("dotdo." + name + ": argument out of bounds")
			}
			arg = bytes.Clone(arg)
			var res any
			var err error
			if st.subrequests >= st.limit {
				err = apierr.New(apierr.RateLimited, "subrequest limit of %d reached", st.limit)
			} else {
				st.subrequests++
				res, err = call(ctx, st, arg)
			}
			if err != nil {
				e := apierr.From(err)
				st.result = mustJSON(map[string]any{"error": map[string]string{"code": string(e.Code), "message": e.Message}})
			} else {
				st.result = mustJSON(map[string]any{"ok": res})
			}
			stack[0] = api.EncodeU32(uint32(len(st.result)))
		}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export(name)
	}
	b.NewFunctionBuilder().WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
		st, _ := ctx.Value(stateKey{}).(*callState)
		ptr, n := api.DecodeU32(stack[0]), api.DecodeU32(stack[1])
		if st == nil {
			panic("dotdo.result: no request")
		}
		out := st.result[:min(int(n), len(st.result))]
		if !mod.Memory().Write(ptr, out) {
			panic("dotdo.result: buffer out of bounds")
		}
		stack[0] = api.EncodeU32(uint32(len(out)))
	}), []api.ValueType{i32, i32}, []api.ValueType{i32}).Export("result")
	_, err := b.Instantiate(ctx)
	return err
}

func decodeArg(arg []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(arg))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return apierr.New(apierr.Invalid, "invalid request: %v", strings.TrimPrefix(err.Error(), "json: "))
	}
	return nil
}

// FetchRequest is the argument of the fetch host function.
type FetchRequest struct {
	Method  string            `json:"method"`
	URL     string            `json:"url"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    []byte            `json:"body,omitempty"`
}

// FetchResponse is the result of the fetch host function.
type FetchResponse struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers"`
	Body    []byte            `json:"body"`
}

// allowed reports whether an allowlist admits u's host.
func allowed(allow []string, u *url.URL) bool {
	host := strings.ToLower(u.Hostname())
	port := u.Port()
	for _, a := range allow {
		a = strings.ToLower(a)
		ah, ap := a, ""
		if h, p, err := net.SplitHostPort(a); err == nil {
			ah, ap = h, p
		}
		if ap != "" && ap != port {
			continue
		}
		if ah == host || strings.HasPrefix(ah, "*.") && strings.HasSuffix(host, ah[1:]) {
			return true
		}
	}
	return false
}

// fetch makes an HTTP request for the script, as the namespace's outbound
// policy allows. Redirects are not followed: the script sees them.
func (h *host) fetch(ctx context.Context, st *callState, arg []byte) (any, error) {
	var fr FetchRequest
	if err := decodeArg(arg, &fr); err != nil {
		return nil, err
	}
	if fr.Method == "" {
		fr.Method = http.MethodGet
	}
	u, err := url.Parse(fr.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, apierr.New(apierr.Invalid, "fetch: %q is not an http or https URL", clip(fr.URL))
	}
	target := u.String()
	out := st.ns.Outbound
	switch out.Mode {
	case OutboundAllowlist:
		if !allowed(out.Allow, u) {
			return nil, apierr.New(apierr.Forbidden, "fetch: host %s is not in namespace %s's outbound allowlist", u.Host, st.ns.Name)
		}
	case OutboundHandler:
		target = out.Handler
	default:
		return nil, apierr.New(apierr.Forbidden, "fetch: namespace %s allows no outbound requests", st.ns.Name)
	}
	req, err := http.NewRequestWithContext(ctx, fr.Method, target, bytes.NewReader(fr.Body))
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "fetch: %v", err)
	}
	for k, v := range fr.Headers {
		req.Header.Set(k, v)
	}
	if out.Mode == OutboundHandler {
		req.Header.Set("Dotdo-Fetch-Url", u.String())
		req.Header.Set("Dotdo-Namespace", st.ns.Name)
		req.Header.Set("Dotdo-Script", st.script)
	}
	req.Header.Set(reqid.Header, reqid.From(ctx))
	res, err := h.client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, apierr.New(apierr.Timeout, "fetch: the request's time ran out")
		}
		if errors.Is(err, errPrivateAddress) {
			return nil, apierr.New(apierr.Forbidden, "fetch %s: the host resolves to a private or loopback address", u.Host)
		}
		return nil, apierr.New(apierr.Unavailable, "fetch %s: %v", u.Host, errors.Unwrap(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, st.maxBody+1))
	if err != nil {
		return nil, apierr.New(apierr.Unavailable, "fetch %s: reading the body: %v", u.Host, err)
	}
	if int64(len(body)) > st.maxBody {
		return nil, apierr.New(apierr.TooLarge, "fetch %s: response body is larger than %d bytes", u.Host, st.maxBody)
	}
	hs := map[string]string{}
	for k := range res.Header {
		hs[k] = res.Header.Get(k)
	}
	return FetchResponse{Status: res.StatusCode, Headers: hs, Body: body}, nil
}

// Thing is a thing as the host functions show it.
type Thing struct {
	ID        string          `json:"id"`
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Version   int64           `json:"version"`
	CreatedAt int64           `json:"createdAt"`
	UpdatedAt int64           `json:"updatedAt"`
}

func toThing(t *dbv1.Thing) Thing {
	return Thing{ID: t.Id, Type: t.Type, Data: t.Data, Version: t.Version, CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt}
}

// Things are always in the namespace named like the script's dispatch
// namespace: the request carries no namespace, so a script cannot name
// another.
func (h *host) thingGet(ctx context.Context, st *callState, arg []byte) (any, error) {
	var a struct {
		ID string `json:"id"`
	}
	if err := decodeArg(arg, &a); err != nil {
		return nil, err
	}
	res, err := h.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: st.ns.Name, Id: a.ID}))
	if err != nil {
		return nil, err
	}
	return toThing(res.Msg.Thing), nil
}

func (h *host) thingPut(ctx context.Context, st *callState, arg []byte) (any, error) {
	var a struct {
		ID        string          `json:"id"`
		Type      string          `json:"type"`
		Data      json.RawMessage `json:"data"`
		IfVersion int64           `json:"ifVersion"`
		Create    bool            `json:"create"`
	}
	if err := decodeArg(arg, &a); err != nil {
		return nil, err
	}
	w := &dbv1.Write{Ns: st.ns.Name, Id: a.ID, Type: a.Type, Data: a.Data, IfVersion: a.IfVersion}
	if a.Create {
		w.Condition = dbv1.Condition_CONDITION_MUST_NOT_EXIST
	}
	res, err := h.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: w}))
	if err != nil {
		return nil, err
	}
	return toThing(res.Msg.Thing), nil
}

func (h *host) thingList(ctx context.Context, st *callState, arg []byte) (any, error) {
	var a struct {
		Type   string `json:"type"`
		Where  string `json:"where"`
		Order  string `json:"order"`
		Limit  int32  `json:"limit"`
		Cursor string `json:"cursor"`
	}
	if err := decodeArg(arg, &a); err != nil {
		return nil, err
	}
	res, err := h.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: st.ns.Name, Type: a.Type, Where: a.Where, Order: a.Order, Limit: a.Limit, Cursor: a.Cursor}))
	if err != nil {
		return nil, err
	}
	items := make([]Thing, len(res.Msg.Items))
	for i, t := range res.Msg.Items {
		items[i] = toThing(t)
	}
	return map[string]any{"items": items, "nextCursor": res.Msg.NextCursor}, nil
}

func (h *host) thingDelete(ctx context.Context, st *callState, arg []byte) (any, error) {
	var a struct {
		ID string `json:"id"`
	}
	if err := decodeArg(arg, &a); err != nil {
		return nil, err
	}
	if _, err := h.db.Delete(ctx, connect.NewRequest(&dbv1.DeleteRequest{Ns: st.ns.Name, Id: a.ID})); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}
