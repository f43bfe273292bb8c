package mcp

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Remote is the bindings of `dotdo mcp --url`: the tools call a running
// server's public REST API with one API key or access token, so the
// server applies its own permission checks as well. It implements DB and
// Auth, and its Can asks the server (POST /v1/auth/check), which knows the
// custom roles.
type Remote struct {
	base   string
	token  string
	client *http.Client
	test   bool // the credential is an sk_test_ key (known after Whoami)
}

var (
	_ DB     = (*Remote)(nil)
	_ Auth   = (*Remote)(nil)
	_ Search = (*Remote)(nil)
)

// NewRemote returns bindings to the server at base (http://host:port).
func NewRemote(base, token string, client *http.Client) *Remote {
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	return &Remote{base: strings.TrimSuffix(base, "/"), token: token, client: client}
}

// do sends one request; out, when set, receives the JSON body of a 2xx.
// A non-2xx answer becomes the *apierr.Error of its envelope.
func (r *Remote) do(ctx context.Context, method, path string, header http.Header, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return 0, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+r.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := r.client.Do(req)
	if err != nil {
		return 0, apierr.New(apierr.Unavailable, "dotdo server at %s unreachable: %v", r.base, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<20))
	if err != nil {
		return 0, apierr.New(apierr.Unavailable, "reading the answer of %s: %v", r.base, err)
	}
	if res.StatusCode >= 300 {
		var env struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &env) == nil && env.Error.Code != "" {
			return res.StatusCode, apierr.New(apierr.Code(env.Error.Code), "%s", env.Error.Message)
		}
		return res.StatusCode, apierr.New(apierr.Unavailable, "%s %s answered %d", method, path, res.StatusCode)
	}
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return res.StatusCode, fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	return res.StatusCode, nil
}

// restThing is a thing in the REST API's JSON.
type restThing struct {
	NS           string          `json:"ns"`
	ID           string          `json:"id"`
	Type         string          `json:"type"`
	Data         json.RawMessage `json:"data"`
	Content      string          `json:"content"`
	Embedding    []float32       `json:"embedding"`
	Version      int64           `json:"version"`
	CreatedAt    string          `json:"createdAt"`
	UpdatedAt    string          `json:"updatedAt"`
	ExpiresAt    string          `json:"expiresAt"`
	Relationship *restRel        `json:"relationship"`
}

type restRel struct {
	NS        string          `json:"ns"`
	From      string          `json:"from"`
	Type      string          `json:"type"`
	To        string          `json:"to"`
	Data      json.RawMessage `json:"data"`
	CreatedAt string          `json:"createdAt"`
}

func parseMicros(s string) int64 {
	if s == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0
	}
	return t.UnixMicro()
}

func (t *restThing) proto() *dbv1.Thing {
	return &dbv1.Thing{Ns: t.NS, Id: t.ID, Type: t.Type, Data: t.Data, Content: t.Content, Embedding: t.Embedding, Version: t.Version,
		CreatedAt: parseMicros(t.CreatedAt), UpdatedAt: parseMicros(t.UpdatedAt), ExpiresAt: parseMicros(t.ExpiresAt)}
}

func (r *restRel) proto() *dbv1.Relationship {
	return &dbv1.Relationship{Ns: r.NS, From: r.From, Type: r.Type, To: r.To, Data: r.Data, CreatedAt: parseMicros(r.CreatedAt)}
}

func thingPath(ns, id string) string {
	return "/v1/things/" + url.PathEscape(ns) + "/" + url.PathEscape(id)
}

// Get implements DB.
func (r *Remote) Get(ctx context.Context, req *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error) {
	var t restThing
	if _, err := r.do(ctx, http.MethodGet, thingPath(req.Msg.Ns, req.Msg.Id), nil, nil, &t); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.GetResponse{Thing: t.proto()}), nil
}

// Put implements DB for whole writes (not merge patches).
func (r *Remote) Put(ctx context.Context, req *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error) {
	w := req.Msg.Write
	if len(w.MergePatch) > 0 {
		return nil, apierr.New(apierr.NotImplemented, "merge patches are not sent through the remote binding")
	}
	body := map[string]any{"type": w.Type, "data": json.RawMessage(w.Data)}
	if w.Content != "" {
		body["content"] = w.Content
	}
	if len(w.Embedding) > 0 {
		body["embedding"] = w.Embedding
	}
	if w.ExpiresAt != 0 {
		body["expiresAt"] = time.UnixMicro(w.ExpiresAt).UTC().Format(time.RFC3339Nano)
	}
	h := http.Header{}
	switch {
	case w.Condition == dbv1.Condition_CONDITION_MUST_NOT_EXIST:
		h.Set("If-None-Match", "*")
	case w.IfVersion != 0:
		h.Set("If-Match", strconv.Quote(strconv.FormatInt(w.IfVersion, 10)))
	case w.Condition == dbv1.Condition_CONDITION_MUST_EXIST:
		h.Set("If-Match", "*")
	}
	var t restThing
	status, err := r.do(ctx, http.MethodPut, thingPath(w.Ns, w.Id), h, body, &t)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.PutResponse{Thing: t.proto(), Created: status == http.StatusCreated}), nil
}

// Delete implements DB.
func (r *Remote) Delete(ctx context.Context, req *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error) {
	h := http.Header{}
	if req.Msg.IfVersion != 0 {
		h.Set("If-Match", strconv.Quote(strconv.FormatInt(req.Msg.IfVersion, 10)))
	} else if req.Msg.MustExist {
		h.Set("If-Match", "*")
	}
	if _, err := r.do(ctx, http.MethodDelete, thingPath(req.Msg.Ns, req.Msg.Id), h, nil, nil); err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.DeleteResponse{}), nil
}

// List implements DB.
func (r *Remote) List(ctx context.Context, req *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error) {
	q := url.Values{}
	for k, v := range map[string]string{"type": req.Msg.Type, "where": req.Msg.Where, "order": req.Msg.Order, "cursor": req.Msg.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if req.Msg.Limit != 0 {
		q.Set("limit", strconv.Itoa(int(req.Msg.Limit)))
	}
	var page struct {
		Items      []restThing `json:"items"`
		NextCursor string      `json:"nextCursor"`
	}
	if _, err := r.do(ctx, http.MethodGet, "/v1/things/"+url.PathEscape(req.Msg.Ns)+"?"+q.Encode(), nil, nil, &page); err != nil {
		return nil, err
	}
	out := &dbv1.ListResponse{NextCursor: page.NextCursor}
	for i := range page.Items {
		out.Items = append(out.Items, page.Items[i].proto())
	}
	return connect.NewResponse(out), nil
}

// Related implements DB.
func (r *Remote) Related(ctx context.Context, req *connect.Request[dbv1.RelatedRequest]) (*connect.Response[dbv1.RelatedResponse], error) {
	q := url.Values{}
	for k, v := range map[string]string{"type": req.Msg.Type, "direction": req.Msg.Direction, "cursor": req.Msg.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if req.Msg.Limit != 0 {
		q.Set("limit", strconv.Itoa(int(req.Msg.Limit)))
	}
	var page struct {
		Items      []restThing `json:"items"`
		NextCursor string      `json:"nextCursor"`
	}
	if _, err := r.do(ctx, http.MethodGet, thingPath(req.Msg.Ns, req.Msg.Id)+"/related?"+q.Encode(), nil, nil, &page); err != nil {
		return nil, err
	}
	out := &dbv1.RelatedResponse{NextCursor: page.NextCursor}
	for i := range page.Items {
		it := &page.Items[i]
		rel := &dbv1.Relationship{}
		if it.Relationship != nil {
			rel = it.Relationship.proto()
		}
		out.Items = append(out.Items, &dbv1.Related{Relationship: rel, Thing: it.proto()})
	}
	return connect.NewResponse(out), nil
}

// PutRelationship implements DB.
func (r *Remote) PutRelationship(ctx context.Context, req *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error) {
	rel := req.Msg.Relationship
	body := map[string]any{"from": rel.From, "type": rel.Type, "to": rel.To}
	if len(rel.Data) > 0 {
		body["data"] = json.RawMessage(rel.Data)
	}
	var out restRel
	status, err := r.do(ctx, http.MethodPut, "/v1/relationships/"+url.PathEscape(rel.Ns), nil, body, &out)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.PutRelationshipResponse{Relationship: out.proto(), Created: status == http.StatusCreated}), nil
}

// restGrants and restKey are the auth service's REST shapes.
type restGrants struct {
	Roles       []string `json:"roles"`
	Permissions []string `json:"permissions"`
}

type restKey struct {
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Prefix     string                `json:"prefix"`
	Last4      string                `json:"last4"`
	Test       bool                  `json:"test"`
	Grants     map[string]restGrants `json:"grants"`
	CreatedAt  string                `json:"createdAt"`
	CreatedBy  string                `json:"createdBy"`
	ExpiresAt  string                `json:"expiresAt"`
	LastUsedAt string                `json:"lastUsedAt"`
	RevokedAt  string                `json:"revokedAt"`
}

func parseUnix(s string) int64 {
	if s == "" {
		return 0
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return 0
	}
	return t.Unix()
}

func grantsProto(m map[string]restGrants) map[string]*authv1.Grants {
	out := make(map[string]*authv1.Grants, len(m))
	for ns, g := range m {
		out[ns] = &authv1.Grants{Roles: g.Roles, Permissions: g.Permissions}
	}
	return out
}

func restGrantsOf(m map[string]*authv1.Grants) map[string]restGrants {
	out := make(map[string]restGrants, len(m))
	for ns, g := range m {
		out[ns] = restGrants{Roles: g.GetRoles(), Permissions: g.GetPermissions()}
	}
	return out
}

func (k *restKey) proto() *authv1.APIKey {
	return &authv1.APIKey{Id: k.ID, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, Test: k.Test, Grants: grantsProto(k.Grants),
		CreatedAt: parseUnix(k.CreatedAt), CreatedBy: k.CreatedBy, ExpiresAt: parseUnix(k.ExpiresAt), LastUsedAt: parseUnix(k.LastUsedAt), RevokedAt: parseUnix(k.RevokedAt)}
}

// CreateAPIKey implements Auth.
func (r *Remote) CreateAPIKey(ctx context.Context, req *connect.Request[authv1.CreateAPIKeyRequest]) (*connect.Response[authv1.CreateAPIKeyResponse], error) {
	body := map[string]any{"name": req.Msg.Name, "test": req.Msg.Test, "grants": restGrantsOf(req.Msg.Grants)}
	if req.Msg.ExpiresAt != 0 {
		body["expiresAt"] = time.Unix(req.Msg.ExpiresAt, 0).UTC().Format(time.RFC3339)
	}
	var out struct {
		Key    restKey `json:"key"`
		Secret string  `json:"secret"`
	}
	if _, err := r.do(ctx, http.MethodPost, "/v1/auth/keys", nil, body, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.CreateAPIKeyResponse{Key: out.Key.proto(), Secret: out.Secret}), nil
}

// ListAPIKeys implements Auth.
func (r *Remote) ListAPIKeys(ctx context.Context, _ *connect.Request[authv1.ListAPIKeysRequest]) (*connect.Response[authv1.ListAPIKeysResponse], error) {
	var out struct {
		Items []restKey `json:"items"`
	}
	if _, err := r.do(ctx, http.MethodGet, "/v1/auth/keys", nil, nil, &out); err != nil {
		return nil, err
	}
	res := &authv1.ListAPIKeysResponse{}
	for i := range out.Items {
		res.Keys = append(res.Keys, out.Items[i].proto())
	}
	return connect.NewResponse(res), nil
}

// RevokeAPIKey implements Auth.
func (r *Remote) RevokeAPIKey(ctx context.Context, req *connect.Request[authv1.RevokeAPIKeyRequest]) (*connect.Response[authv1.RevokeAPIKeyResponse], error) {
	var out restKey
	if _, err := r.do(ctx, http.MethodDelete, "/v1/auth/keys/"+url.PathEscape(req.Msg.Id), nil, nil, &out); err != nil {
		return nil, err
	}
	return connect.NewResponse(&authv1.RevokeAPIKeyResponse{Key: out.proto()}), nil
}

// Whoami returns the identity of the remote credential (GET /v1/auth/me).
func (r *Remote) Whoami(ctx context.Context) (*authv1.Identity, error) {
	var out struct {
		Identity struct {
			Subject   string                `json:"subject"`
			Kind      string                `json:"kind"`
			Email     string                `json:"email"`
			Test      bool                  `json:"test"`
			Grants    map[string]restGrants `json:"grants"`
			KeyID     string                `json:"keyId"`
			SessionID string                `json:"sessionId"`
			ExpiresAt string                `json:"expiresAt"`
		} `json:"identity"`
	}
	if _, err := r.do(ctx, http.MethodGet, "/v1/auth/me", nil, nil, &out); err != nil {
		return nil, err
	}
	i := out.Identity
	r.test = i.Test
	return &authv1.Identity{Subject: i.Subject, Kind: i.Kind, Email: i.Email, Test: i.Test, Grants: grantsProto(i.Grants),
		KeyId: i.KeyID, SessionId: i.SessionID, ExpiresAt: parseUnix(i.ExpiresAt)}, nil
}

// Can implements Authorizer by asking the server, which applies the same
// rules (auth.Can with its configured roles) to the remote credential.
func (r *Remote) Can(ctx context.Context, _ *authv1.Identity, ns, permission string) (bool, error) {
	var out struct {
		Allowed bool `json:"allowed"`
	}
	if _, err := r.do(ctx, http.MethodPost, "/v1/auth/check", nil, map[string]string{"namespace": ns, "permission": permission}, &out); err != nil {
		return false, err
	}
	return out.Allowed, nil
}
