package auth

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are the claims of a dotdo access token.
type Claims struct {
	jwt.RegisteredClaims
	// SessionID is the session the token belongs to (sid).
	SessionID string `json:"sid,omitempty"`
	Email     string `json:"email,omitempty"`
	// Grants are the user's grants when the token was issued; a change
	// takes effect at the next refresh.
	Grants map[string]grantJSON `json:"grants,omitempty"`
}

// SigningKey is one Ed25519 key of the keyring. Private is nil for keys
// known only by their public half (a verifier's view).
type SigningKey struct {
	ID        string
	Private   ed25519.PrivateKey
	Public    ed25519.PublicKey
	CreatedAt time.Time
	// RetiredAt is when the key stopped signing; zero while it signs.
	RetiredAt time.Time
}

// NewSigningKey returns a fresh Ed25519 key with a random kid.
func NewSigningKey(now time.Time) (SigningKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, err
	}
	var id [12]byte
	if _, err := rand.Read(id[:]); err != nil {
		return SigningKey{}, err
	}
	return SigningKey{ID: base64.RawURLEncoding.EncodeToString(id[:]), Private: priv, Public: pub, CreatedAt: now}, nil
}

// Keyring holds the signing key and the public keys that verify tokens.
// A retired key stays until every token it signed has expired.
type Keyring struct {
	mu   sync.RWMutex
	keys []SigningKey // newest first; keys[0] signs
}

// NewKeyring returns a keyring over keys; the newest unretired key signs.
func NewKeyring(keys []SigningKey) *Keyring {
	k := &Keyring{}
	k.Set(keys)
	return k
}

// Set replaces the keys.
func (k *Keyring) Set(keys []SigningKey) {
	ks := append([]SigningKey(nil), keys...)
	sort.Slice(ks, func(i, j int) bool { return ks[i].CreatedAt.After(ks[j].CreatedAt) })
	k.mu.Lock()
	k.keys = ks
	k.mu.Unlock()
}

// Keys returns a copy of the keys, newest first.
func (k *Keyring) Keys() []SigningKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return append([]SigningKey(nil), k.keys...)
}

// Public returns the public key with the given kid.
func (k *Keyring) Public(kid string) (ed25519.PublicKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, key := range k.keys {
		if key.ID == kid {
			return key.Public, true
		}
	}
	return nil, false
}

// ErrNoSigningKey means the keyring has no key that may sign.
var ErrNoSigningKey = errors.New("no signing key")

// Sign returns claims signed with the current key, with its kid.
func (k *Keyring) Sign(c *Claims) (string, error) {
	k.mu.RLock()
	var key *SigningKey
	for i := range k.keys {
		if k.keys[i].Private != nil && k.keys[i].RetiredAt.IsZero() {
			key = &k.keys[i]
			break
		}
	}
	k.mu.RUnlock()
	if key == nil {
		return "", ErrNoSigningKey
	}
	t := jwt.NewWithClaims(jwt.SigningMethodEdDSA, c)
	t.Header["kid"] = key.ID
	return t.SignedString(key.Private)
}

// Verifier checks access tokens: EdDSA only, known kid, issuer, audience,
// expiry required, not before, issued at.
type Verifier struct {
	Issuer   string
	Audience string
	// Key finds the public key of a kid; ok is false for an unknown kid.
	Key func(kid string) (ed25519.PublicKey, bool)
	Now func() time.Time
}

// Verification errors. All of them mean 401 to a client.
var (
	ErrTokenInvalid = errors.New("invalid token")
	ErrUnknownKey   = errors.New("token signed by an unknown key")
)

// Verify parses and verifies token and returns its claims.
func (v *Verifier) Verify(token string) (*Claims, error) {
	c := &Claims{}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(v.Issuer),
		jwt.WithAudience(v.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(5 * time.Second),
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	unknown := false
	_, err := jwt.ParseWithClaims(token, c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		key, ok := v.Key(kid)
		if !ok {
			unknown = true
			return nil, ErrUnknownKey
		}
		return key, nil
	}, opts...)
	if err != nil {
		if unknown {
			return nil, ErrUnknownKey
		}
		return nil, fmt.Errorf("%w: %v", ErrTokenInvalid, err)
	}
	if c.Subject == "" {
		return nil, fmt.Errorf("%w: no subject", ErrTokenInvalid)
	}
	return c, nil
}

// jwk is one key of a JWKS (RFC 8037 OKP for Ed25519).
type jwk struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
}

// JWKS returns the JSON Web Key Set of the public keys.
func JWKS(keys []SigningKey) []byte {
	set := struct {
		Keys []jwk `json:"keys"`
	}{Keys: []jwk{}}
	for _, k := range keys {
		set.Keys = append(set.Keys, jwk{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(k.Public), Kid: k.ID, Use: "sig", Alg: "EdDSA"})
	}
	b, _ := json.Marshal(set)
	return b
}

// ParseJWKS reads the Ed25519 keys of a JWKS document; other keys are
// skipped.
func ParseJWKS(b []byte) ([]SigningKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("parse JWKS: %w", err)
	}
	var out []SigningKey
	for _, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || k.Kid == "" {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			continue
		}
		out = append(out, SigningKey{ID: k.Kid, Public: ed25519.PublicKey(x)})
	}
	return out, nil
}
