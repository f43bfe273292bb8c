package auth

import (
	"context"
	"encoding/json"
	"sort"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// keyJSON is an APIKey thing's data. The secret itself is never stored:
// a KeyHash thing named after its SHA-256 points to the key.
type keyJSON struct {
	Name      string               `json:"name"`
	Prefix    string               `json:"prefix"`
	Last4     string               `json:"last4"`
	Test      bool                 `json:"test,omitempty"`
	Grants    map[string]grantJSON `json:"grants"`
	ExpiresAt int64                `json:"expiresAt,omitempty"`
	RevokedAt int64                `json:"revokedAt,omitempty"`
	LastUsed  int64                `json:"lastUsedAt,omitempty"`
	CreatedBy string               `json:"createdBy,omitempty"`
	Hash      string               `json:"hash"`
}

func hashID(hash string) string { return "kh_" + hash }

func keyOut(t *dbv1.Thing, k *keyJSON) *authv1.APIKey {
	return &authv1.APIKey{
		Id: t.Id, Name: k.Name, Prefix: k.Prefix, Last4: k.Last4, Test: k.Test, Grants: toGrants(k.Grants),
		CreatedAt: t.CreatedAt / 1e6, ExpiresAt: k.ExpiresAt, LastUsedAt: k.LastUsed, RevokedAt: k.RevokedAt, CreatedBy: k.CreatedBy,
	}
}

// CreateAPIKey makes a key and returns its secret, once.
func (s *Service) CreateAPIKey(ctx context.Context, req *connect.Request[authv1.CreateAPIKeyRequest]) (*connect.Response[authv1.CreateAPIKeyResponse], error) {
	m := req.Msg
	name := strings.TrimSpace(m.Name)
	if name == "" || len(name) > 100 {
		return nil, apierr.New(apierr.Invalid, "name is required (at most 100 bytes)")
	}
	if len(m.Grants) == 0 {
		return nil, apierr.New(apierr.Invalid, "grants are required: give a role or permissions on one or more namespaces")
	}
	grants, err := s.fromGrants(m.Grants)
	if err != nil {
		return nil, err
	}
	if m.ExpiresAt != 0 && m.ExpiresAt <= s.unix() {
		return nil, apierr.New(apierr.Invalid, "expiresAt must be in the future")
	}
	secret := m.Secret
	if secret != "" {
		if !LooksLikeAPIKey(secret) || strings.HasPrefix(secret, TestPrefix) != m.Test {
			return nil, apierr.New(apierr.Invalid, "secret must be an %s key followed by 43 letters and digits", map[bool]string{false: LivePrefix, true: TestPrefix}[m.Test])
		}
	} else if secret, err = NewAPIKey(m.Test); err != nil {
		return nil, s.internal(ctx, "create key", err)
	}
	prefix, last4 := DisplayKey(secret)
	k := &keyJSON{Name: name, Prefix: prefix, Last4: last4, Test: m.Test, Grants: grants, ExpiresAt: m.ExpiresAt, CreatedBy: m.CreatedBy, Hash: HashAPIKey(secret)}
	id := thingsdb.NewPrefixedID("key_")
	var ttl int64
	if m.ExpiresAt != 0 {
		ttl = time.Unix(m.ExpiresAt, 0).UnixMicro()
	}
	err = s.batch(ctx,
		write(id, "APIKey", k, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0),
		write(hashID(k.Hash), "KeyHash", map[string]string{"keyId": id}, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, ttl))
	if err != nil {
		return nil, s.internal(ctx, "create key", err)
	}
	t, err := s.get(ctx, id, nil)
	if err != nil {
		return nil, s.internal(ctx, "create key", err)
	}
	s.audit(ctx, "key.created", m.CreatedBy, id, "ok", "")
	return connect.NewResponse(&authv1.CreateAPIKeyResponse{Key: keyOut(t, k), Secret: secret}), nil
}

var errBadKey = apierr.New(apierr.Unauthenticated, "invalid API key")

// ValidateAPIKey returns the identity of a live key: not revoked, not
// expired. Its use is recorded in lastUsedAt, in batches.
func (s *Service) ValidateAPIKey(ctx context.Context, req *connect.Request[authv1.ValidateAPIKeyRequest]) (*connect.Response[authv1.IdentityResponse], error) {
	key := req.Msg.Key
	if !LooksLikeAPIKey(key) {
		return nil, errBadKey
	}
	var ref struct {
		KeyID string `json:"keyId"`
	}
	if _, err := s.get(ctx, hashID(HashAPIKey(key)), &ref); err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, errBadKey
		}
		return nil, s.internal(ctx, "validate key", err)
	}
	k := &keyJSON{}
	if _, err := s.get(ctx, ref.KeyID, k); err != nil {
		if apierr.Is(err, apierr.NotFound) {
			return nil, errBadKey
		}
		return nil, s.internal(ctx, "validate key", err)
	}
	now := s.unix()
	if k.RevokedAt != 0 || (k.ExpiresAt != 0 && k.ExpiresAt <= now) {
		return nil, errBadKey
	}
	s.mu.Lock()
	s.lastUsed[ref.KeyID] = now
	s.mu.Unlock()
	return connect.NewResponse(&authv1.IdentityResponse{Identity: &authv1.Identity{
		Subject: ref.KeyID, Kind: "api_key", Test: k.Test, Grants: toGrants(k.Grants), KeyId: ref.KeyID, ExpiresAt: k.ExpiresAt,
	}}), nil
}

// flushLastUsed writes the recorded uses of keys: one write per key per
// flush, not one per request.
func (s *Service) flushLastUsed(ctx context.Context) {
	s.mu.Lock()
	used := s.lastUsed
	s.lastUsed = map[string]int64{}
	s.mu.Unlock()
	for id, at := range used {
		k := &keyJSON{}
		t, err := s.get(ctx, id, k)
		if err != nil || k.LastUsed >= at {
			continue
		}
		k.LastUsed = at
		if err := s.batch(ctx, write(id, "APIKey", k, dbv1.Condition_CONDITION_MUST_EXIST, t.Version, 0)); err != nil && !apierr.Is(err, apierr.PreconditionFailed) {
			s.log.WarnContext(ctx, "lastUsedAt not recorded", "key", id, "err", err)
		}
	}
}

// ListAPIKeys returns every key, newest first, without secrets.
func (s *Service) ListAPIKeys(ctx context.Context, _ *connect.Request[authv1.ListAPIKeysRequest]) (*connect.Response[authv1.ListAPIKeysResponse], error) {
	out := &authv1.ListAPIKeysResponse{Keys: []*authv1.APIKey{}}
	req := &dbv1.ListRequest{Ns: Namespace, Type: "APIKey", Order: "-createdAt", Limit: 1000}
	for {
		res, err := s.db.List(ctx, connect.NewRequest(req))
		if err != nil {
			return nil, s.internal(ctx, "list keys", err)
		}
		for _, t := range res.Msg.Items {
			var k keyJSON
			if err := json.Unmarshal(t.Data, &k); err != nil {
				return nil, s.internal(ctx, "list keys", err)
			}
			out.Keys = append(out.Keys, keyOut(t, &k))
		}
		if res.Msg.NextCursor == "" {
			break
		}
		req.Cursor = res.Msg.NextCursor
	}
	sort.SliceStable(out.Keys, func(i, j int) bool { return out.Keys[i].CreatedAt > out.Keys[j].CreatedAt })
	return connect.NewResponse(out), nil
}

// RevokeAPIKey revokes a key at once: its hash record is deleted, so no
// validation finds it, and caches in this process are told.
func (s *Service) RevokeAPIKey(ctx context.Context, req *connect.Request[authv1.RevokeAPIKeyRequest]) (*connect.Response[authv1.RevokeAPIKeyResponse], error) {
	id := req.Msg.Id
	if !strings.HasPrefix(id, "key_") {
		return nil, apierr.New(apierr.NotFound, "key %s not found", id)
	}
	k := &keyJSON{}
	t, err := s.get(ctx, id, k)
	if err != nil {
		if apierr.Is(err, apierr.NotFound) || apierr.Is(err, apierr.Invalid) {
			return nil, apierr.New(apierr.NotFound, "key %s not found", id)
		}
		return nil, s.internal(ctx, "revoke key", err)
	}
	if k.RevokedAt == 0 {
		k.RevokedAt = s.unix()
		ops := []*dbv1.Op{write(id, "APIKey", k, dbv1.Condition_CONDITION_MUST_EXIST, t.Version, 0)}
		if _, err := s.get(ctx, hashID(k.Hash), nil); err == nil {
			ops = append(ops, del(hashID(k.Hash)))
		}
		if err := s.batch(ctx, ops...); err != nil {
			return nil, s.internal(ctx, "revoke key", err)
		}
		for _, fn := range s.revokedHooks {
			fn(k.Hash)
		}
		s.audit(ctx, "key.revoked", "", id, "ok", "")
	}
	return connect.NewResponse(&authv1.RevokeAPIKeyResponse{Key: keyOut(t, k)}), nil
}
