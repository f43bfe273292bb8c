package auth

import (
	"time"

	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

// The REST shapes of the auth service: camelCase names and RFC 3339
// times, like the rest of the API (the protobuf types would print
// snake_case names and Unix seconds).

type grantsOut struct {
	Roles       []string `json:"roles,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
}

func grantsJSON(m map[string]*authv1.Grants) map[string]grantsOut {
	out := make(map[string]grantsOut, len(m))
	for ns, g := range m {
		out[ns] = grantsOut{Roles: g.GetRoles(), Permissions: g.GetPermissions()}
	}
	return out
}

func rfc3339(unix int64) string {
	if unix == 0 {
		return ""
	}
	return time.Unix(unix, 0).UTC().Format(time.RFC3339)
}

type userRest struct {
	ID          string               `json:"id"`
	Email       string               `json:"email"`
	Name        string               `json:"name,omitempty"`
	Status      string               `json:"status"`
	Grants      map[string]grantsOut `json:"grants"`
	HasPassword bool                 `json:"hasPassword"`
	CreatedAt   string               `json:"createdAt"`
	UpdatedAt   string               `json:"updatedAt"`
}

func userJSONOut(u *authv1.User) userRest {
	return userRest{ID: u.Id, Email: u.Email, Name: u.Name, Status: u.Status, Grants: grantsJSON(u.Grants), HasPassword: u.HasPassword,
		CreatedAt: rfc3339(u.CreatedAt), UpdatedAt: rfc3339(u.UpdatedAt)}
}

type keyRest struct {
	ID         string               `json:"id"`
	Name       string               `json:"name"`
	Prefix     string               `json:"prefix"`
	Last4      string               `json:"last4"`
	Test       bool                 `json:"test"`
	Grants     map[string]grantsOut `json:"grants"`
	CreatedAt  string               `json:"createdAt"`
	CreatedBy  string               `json:"createdBy,omitempty"`
	ExpiresAt  string               `json:"expiresAt,omitempty"`
	LastUsedAt string               `json:"lastUsedAt,omitempty"`
	RevokedAt  string               `json:"revokedAt,omitempty"`
}

func keyJSONOut(k *authv1.APIKey) keyRest {
	return keyRest{ID: k.Id, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, Test: k.Test, Grants: grantsJSON(k.Grants),
		CreatedAt: rfc3339(k.CreatedAt), CreatedBy: k.CreatedBy, ExpiresAt: rfc3339(k.ExpiresAt), LastUsedAt: rfc3339(k.LastUsedAt), RevokedAt: rfc3339(k.RevokedAt)}
}

type sessionRest struct {
	ID         string `json:"id"`
	UserID     string `json:"userId"`
	CreatedAt  string `json:"createdAt"`
	ExpiresAt  string `json:"expiresAt"`
	LastUsedAt string `json:"lastUsedAt,omitempty"`
	UserAgent  string `json:"userAgent,omitempty"`
	IP         string `json:"ip,omitempty"`
}

type identityRest struct {
	Subject   string               `json:"subject"`
	Kind      string               `json:"kind"`
	Email     string               `json:"email,omitempty"`
	Test      bool                 `json:"test"`
	Grants    map[string]grantsOut `json:"grants"`
	KeyID     string               `json:"keyId,omitempty"`
	SessionID string               `json:"sessionId,omitempty"`
	ExpiresAt string               `json:"expiresAt,omitempty"`
}

func identityJSONOut(id *authv1.Identity) identityRest {
	return identityRest{Subject: id.Subject, Kind: id.Kind, Email: id.Email, Test: id.Test, Grants: grantsJSON(id.Grants),
		KeyID: id.KeyId, SessionID: id.SessionId, ExpiresAt: rfc3339(id.ExpiresAt)}
}
