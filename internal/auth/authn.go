package auth

import (
	"context"
	"errors"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
)

// Validator is what an Authenticator needs from the auth service.
type Validator interface {
	ValidateAPIKey(context.Context, *connect.Request[authv1.ValidateAPIKeyRequest]) (*connect.Response[authv1.IdentityResponse], error)
	JWKS(context.Context, *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error)
}

// AuthenticatorConfig configures an Authenticator.
type AuthenticatorConfig struct {
	Issuer, Audience string
	// KeyTTL is how long a validated API key is trusted before it is
	// checked again. In all-in-one mode revocations also evict at once
	// (Forget); in split mode this bounds how long a revoked key works.
	KeyTTL time.Duration
	// MaxKeys bounds the cache.
	MaxKeys int
	// Keys, when set, is the auth service's own keyring (all-in-one);
	// otherwise the JWKS is fetched through the Validator.
	Keys *Keyring
	Now  func() time.Time
}

// Authenticator turns a bearer credential into an identity: JWTs are
// verified locally against the signing keys (the JWKS is fetched again
// when a token names an unknown kid), API keys are validated by the auth
// service and cached in a bounded cache.
type Authenticator struct {
	v        Validator
	cfg      AuthenticatorConfig
	keys     *Keyring
	verifier *Verifier

	mu        sync.Mutex
	cache     map[string]cachedKey // by key hash
	tokens    map[string]*authv1.Identity
	lastFetch time.Time
}

type cachedKey struct {
	id    *authv1.Identity
	until time.Time
}

// NewAuthenticator returns an Authenticator.
func NewAuthenticator(v Validator, cfg AuthenticatorConfig) *Authenticator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxKeys == 0 {
		cfg.MaxKeys = 10000
	}
	if cfg.KeyTTL == 0 {
		cfg.KeyTTL = 5 * time.Second
	}
	a := &Authenticator{v: v, cfg: cfg, keys: cfg.Keys, cache: map[string]cachedKey{}, tokens: map[string]*authv1.Identity{}}
	if a.keys == nil {
		a.keys = NewKeyring(nil)
	}
	a.verifier = &Verifier{Issuer: cfg.Issuer, Audience: cfg.Audience, Key: a.keys.Public, Now: cfg.Now}
	return a
}

var errCredential = apierr.New(apierr.Unauthenticated, "invalid or expired credential")

// Authenticate returns the identity of a bearer token: an API key or an
// access JWT.
func (a *Authenticator) Authenticate(ctx context.Context, token string) (*authv1.Identity, error) {
	if LooksLikeAPIKey(token) {
		return a.apiKey(ctx, token)
	}
	// A token verified before is trusted until it expires: the Ed25519
	// check costs ~130 µs here and a client sends one token many times.
	// The key is the whole token, so no other header or payload can reuse
	// a cached signature.
	now := a.cfg.Now().Unix()
	a.mu.Lock()
	id, ok := a.tokens[token]
	a.mu.Unlock()
	if ok {
		if id.ExpiresAt > now {
			return id, nil
		}
		return nil, errCredential
	}
	c, err := a.verifier.Verify(token)
	if errors.Is(err, ErrUnknownKey) && a.cfg.Keys == nil && a.refreshJWKS(ctx) {
		c, err = a.verifier.Verify(token)
	}
	if err != nil {
		return nil, errCredential
	}
	id = IdentityOf(c)
	a.mu.Lock()
	if len(a.tokens) >= a.cfg.MaxKeys {
		for k, v := range a.tokens {
			if v.ExpiresAt <= now || len(a.tokens) >= a.cfg.MaxKeys {
				delete(a.tokens, k)
			}
		}
	}
	a.tokens[token] = id
	a.mu.Unlock()
	return id, nil
}

func (a *Authenticator) apiKey(ctx context.Context, key string) (*authv1.Identity, error) {
	h := HashAPIKey(key)
	now := a.cfg.Now()
	a.mu.Lock()
	e, ok := a.cache[h]
	a.mu.Unlock()
	if ok && now.Before(e.until) {
		if e.id.ExpiresAt != 0 && e.id.ExpiresAt <= now.Unix() {
			return nil, errCredential
		}
		return e.id, nil
	}
	res, err := a.v.ValidateAPIKey(ctx, connect.NewRequest(&authv1.ValidateAPIKeyRequest{Key: key}))
	if err != nil {
		if apierr.Is(err, apierr.Unauthenticated) {
			a.Forget(h)
			return nil, errCredential
		}
		return nil, err
	}
	a.mu.Lock()
	if len(a.cache) >= a.cfg.MaxKeys {
		for k, v := range a.cache { // drop stale entries, or any one
			if now.After(v.until) {
				delete(a.cache, k)
			}
		}
		for k := range a.cache {
			if len(a.cache) < a.cfg.MaxKeys {
				break
			}
			delete(a.cache, k)
		}
	}
	a.cache[h] = cachedKey{id: res.Msg.Identity, until: now.Add(a.cfg.KeyTTL)}
	a.mu.Unlock()
	return res.Msg.Identity, nil
}

// Forget drops a key (by hash) from the cache: the auth service calls it
// on revocation in all-in-one mode.
func (a *Authenticator) Forget(hash string) {
	a.mu.Lock()
	delete(a.cache, hash)
	a.mu.Unlock()
}

// refreshJWKS fetches the signing keys, at most once every 5 seconds, and
// reports whether it did.
func (a *Authenticator) refreshJWKS(ctx context.Context) bool {
	a.mu.Lock()
	if a.cfg.Now().Sub(a.lastFetch) < 5*time.Second {
		a.mu.Unlock()
		return false
	}
	a.lastFetch = a.cfg.Now()
	a.mu.Unlock()
	res, err := a.v.JWKS(ctx, connect.NewRequest(&authv1.JWKSRequest{}))
	if err != nil {
		return false
	}
	keys, err := ParseJWKS(res.Msg.Jwks)
	if err != nil {
		return false
	}
	a.keys.Set(keys)
	return true
}
