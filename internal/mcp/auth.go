package mcp

import (
	"cmp"
	"slices"
	"time"

	"connectrpc.com/connect"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/dotdo/dotdo/internal/apierr"
	"github.com/dotdo/dotdo/internal/auth"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

// Grants are the roles and permissions held on one namespace.
type Grants struct {
	Roles       []string `json:"roles,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
}

func grantsOut(m map[string]*authv1.Grants) map[string]Grants {
	out := make(map[string]Grants, len(m))
	for ns, g := range m {
		out[ns] = Grants{Roles: g.GetRoles(), Permissions: g.GetPermissions()}
	}
	return out
}

func unix(s int64) string {
	if s == 0 {
		return ""
	}
	return time.Unix(s, 0).UTC().Format(time.RFC3339)
}

// WhoamiOut is the caller's identity.
type WhoamiOut struct {
	Subject   string            `json:"subject" jsonschema:"the user id, API key id or service name"`
	Kind      string            `json:"kind" jsonschema:"user, api_key or service"`
	Email     string            `json:"email,omitempty"`
	Test      bool              `json:"test" jsonschema:"true for sk_test_ keys: no real outbound side effects"`
	KeyID     string            `json:"keyId,omitempty"`
	ExpiresAt string            `json:"expiresAt,omitempty" jsonschema:"when the credential stops working"`
	Grants    map[string]Grants `json:"grants" jsonschema:"namespace (or * for every tenant namespace) to roles and permissions"`
}

// NoArgs is the input of a tool without arguments.
type NoArgs struct{}

// Key is an API key as the tools show it: never its secret.
type Key struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Prefix     string            `json:"prefix" jsonschema:"the key's first characters, to recognise it"`
	Last4      string            `json:"last4"`
	Test       bool              `json:"test"`
	Grants     map[string]Grants `json:"grants"`
	CreatedAt  string            `json:"createdAt"`
	CreatedBy  string            `json:"createdBy,omitempty"`
	ExpiresAt  string            `json:"expiresAt,omitempty"`
	LastUsedAt string            `json:"lastUsedAt,omitempty"`
	RevokedAt  string            `json:"revokedAt,omitempty"`
}

func keyOut(k *authv1.APIKey) Key {
	return Key{ID: k.Id, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, Test: k.Test, Grants: grantsOut(k.Grants),
		CreatedAt: unix(k.CreatedAt), CreatedBy: k.CreatedBy, ExpiresAt: unix(k.ExpiresAt), LastUsedAt: unix(k.LastUsedAt), RevokedAt: unix(k.RevokedAt)}
}

// KeysIn are api_keys_list's arguments.
type KeysIn struct {
	Limit  int    `json:"limit,omitempty" jsonschema:"keys per page, 1-200 (default 50)"`
	Cursor string `json:"cursor,omitempty" jsonschema:"nextCursor of the previous page"`
}

// KeysOut is a page of API keys.
type KeysOut struct {
	Items      []Key  `json:"items"`
	NextCursor string `json:"nextCursor,omitempty" jsonschema:"present when more keys follow: pass it back as cursor"`
}

// KeyCreateIn are api_key_create's arguments.
type KeyCreateIn struct {
	Name        string   `json:"name" jsonschema:"what the key is for"`
	Role        string   `json:"role,omitempty" jsonschema:"admin, user, viewer or a custom role"`
	Permissions []string `json:"permissions,omitempty" jsonschema:"extra permissions such as things:read"`
	Namespaces  []string `json:"namespaces,omitempty" jsonschema:"where the role and permissions apply; default * (every tenant namespace)"`
	Test        bool     `json:"test,omitempty" jsonschema:"make an sk_test_ key: no real outbound side effects"`
	ExpiresAt   string   `json:"expiresAt,omitempty" jsonschema:"RFC 3339 time when the key stops working"`
}

// KeyCreateOut is api_key_create's result.
type KeyCreateOut struct {
	Key    Key    `json:"key"`
	Secret string `json:"secret" jsonschema:"the key itself; shown only this once"`
}

// KeyRevokeIn are api_key_revoke's arguments.
type KeyRevokeIn struct {
	ID string `json:"id" jsonschema:"the key's id (from api_keys_list)"`
}

// KeyOut is one API key.
type KeyOut struct {
	Key Key `json:"key"`
}

func (s *Server) addWhoami() {
	addTool(s, &sdk.Tool{Name: "whoami", Annotations: readOnly("Who am I"),
		Description: "Show the identity this session acts as: the API key or user, and the roles and permissions it holds per namespace. Needs no permission."},
		func(c call, _ NoArgs) (WhoamiOut, error) {
			id := c.id
			if id == nil {
				return WhoamiOut{}, apierr.New(apierr.Unauthenticated, "authentication required")
			}
			return WhoamiOut{Subject: id.Subject, Kind: id.Kind, Email: id.Email, Test: id.Test, KeyID: id.KeyId, ExpiresAt: unix(id.ExpiresAt), Grants: grantsOut(id.Grants)}, nil
		})
}

func (s *Server) addAuthTools() {
	a := s.opts.Auth
	addTool(s, &sdk.Tool{Name: "api_keys_list", Annotations: readOnly("List API keys"),
		Description: "List the API keys (never their secrets), revoked ones included, oldest first. Paginated: follow nextCursor. Needs keys:manage on _auth."},
		func(c call, in KeysIn) (KeysOut, error) {
			if err := s.need(c.ctx, c.id, auth.Namespace, "keys:manage"); err != nil {
				return KeysOut{}, err
			}
			n, err := limit(in.Limit)
			if err != nil {
				return KeysOut{}, err
			}
			res, err := a.ListAPIKeys(c.ctx, connect.NewRequest(&authv1.ListAPIKeysRequest{}))
			if err != nil {
				return KeysOut{}, err
			}
			keys := res.Msg.Keys
			slices.SortFunc(keys, func(x, y *authv1.APIKey) int {
				return cmp.Or(cmp.Compare(x.CreatedAt, y.CreatedAt), cmp.Compare(x.Id, y.Id))
			})
			// The cursor is the id of the last key returned; the listing
			// resumes after it.
			start := 0
			if in.Cursor != "" {
				i := slices.IndexFunc(keys, func(k *authv1.APIKey) bool { return k.Id == in.Cursor })
				if i < 0 {
					return KeysOut{}, invalid("cursor is not a key of this listing; start again without it")
				}
				start = i + 1
			}
			return fit(s, n, func(n int) (KeysOut, int, error) {
				end := min(start+n, len(keys))
				out := KeysOut{Items: make([]Key, 0, end-start)}
				for _, k := range keys[start:end] {
					out.Items = append(out.Items, keyOut(k))
				}
				if end < len(keys) {
					out.NextCursor = keys[end-1].Id
				}
				return out, len(out.Items), nil
			})
		}, limitProp)

	addTool(s, &sdk.Tool{Name: "api_key_create", Annotations: writes("Create an API key", false, false),
		Description: "Create an API key with a role and/or permissions on some namespaces (default: every tenant namespace). The secret is returned once. " +
			"You cannot grant what you do not hold. Needs keys:manage on _auth."},
		func(c call, in KeyCreateIn) (KeyCreateOut, error) {
			if err := s.need(c.ctx, c.id, auth.Namespace, "keys:manage"); err != nil {
				return KeyCreateOut{}, err
			}
			if in.Role == "" && len(in.Permissions) == 0 {
				return KeyCreateOut{}, invalid("give a role or some permissions")
			}
			for _, p := range in.Permissions {
				if !auth.ValidPermission(p) {
					return KeyCreateOut{}, invalid("permission %q is not resource:action such as things:read", p)
				}
			}
			nss := in.Namespaces
			if len(nss) == 0 {
				nss = []string{"*"}
			}
			grants := map[string]*authv1.Grants{}
			for _, ns := range nss {
				g := &authv1.Grants{Permissions: in.Permissions}
				if in.Role != "" {
					g.Roles = []string{in.Role}
				}
				grants[ns] = g
			}
			if err := s.mayGrant(c, grants); err != nil {
				return KeyCreateOut{}, err
			}
			req := &authv1.CreateAPIKeyRequest{Name: in.Name, Test: in.Test, Grants: grants, CreatedBy: c.id.GetSubject()}
			if in.ExpiresAt != "" {
				t, err := time.Parse(time.RFC3339, in.ExpiresAt)
				if err != nil {
					return KeyCreateOut{}, invalid("expiresAt must be an RFC 3339 time such as 2030-01-02T15:04:05Z")
				}
				req.ExpiresAt = t.Unix()
			}
			res, err := a.CreateAPIKey(c.ctx, connect.NewRequest(req))
			if err != nil {
				return KeyCreateOut{}, err
			}
			return KeyCreateOut{Key: keyOut(res.Msg.Key), Secret: res.Msg.Secret}, nil
		})

	addTool(s, &sdk.Tool{Name: "api_key_revoke", Annotations: writes("Revoke an API key", true, true),
		Description: "Revoke an API key at once and for good; requests with it fail from then on. You cannot revoke a key holding grants you do not hold. Needs keys:manage on _auth."},
		func(c call, in KeyRevokeIn) (KeyOut, error) {
			if err := s.need(c.ctx, c.id, auth.Namespace, "keys:manage"); err != nil {
				return KeyOut{}, err
			}
			keys, err := a.ListAPIKeys(c.ctx, connect.NewRequest(&authv1.ListAPIKeysRequest{}))
			if err != nil {
				return KeyOut{}, err
			}
			for _, k := range keys.Msg.Keys {
				if k.Id == in.ID {
					if err := s.mayGrant(c, k.Grants); err != nil {
						return KeyOut{}, apierr.New(apierr.Forbidden, "cannot revoke key %s: it holds grants you do not", k.Id)
					}
				}
			}
			res, err := a.RevokeAPIKey(c.ctx, connect.NewRequest(&authv1.RevokeAPIKeyRequest{Id: in.ID}))
			if err != nil {
				return KeyOut{}, err
			}
			return KeyOut{Key: keyOut(res.Msg.Key)}, nil
		})
}

// mayGrant refuses grants the caller does not hold itself, as the REST
// routes do: keys:manage must not be a way to escalate. On "*" the caller
// must hold the permission on "*" (auth.Can's rule for that namespace).
// Against a remote server (no CustomRoles here) the server checks custom
// roles itself.
func (s *Server) mayGrant(c call, grants map[string]*authv1.Grants) error {
	for ns, g := range grants {
		for _, p := range append(auth.Expand(g.GetRoles(), s.opts.CustomRoles), g.GetPermissions()...) {
			ok, err := s.opts.Can(c.ctx, c.id, ns, p)
			if err != nil {
				return err
			}
			if !ok {
				return apierr.New(apierr.Forbidden, "cannot grant %s on %s: you do not hold it", p, ns)
			}
		}
	}
	return nil
}
