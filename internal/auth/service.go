package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/golang-jwt/jwt/v5"

	"github.com/dotdo/dotdo/internal/apierr"
	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1/authv1connect"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

var _ authv1connect.AuthServiceHandler = (*Service)(nil)

// Namespace is where the auth service keeps its state.
const Namespace = "_auth"

// DB is what the auth service needs from the db service.
type DB interface {
	Get(context.Context, *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error)
	Put(context.Context, *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error)
	List(context.Context, *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error)
	Batch(context.Context, *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error)
}

// Config configures the auth service.
type Config struct {
	// Issuer and Audience go into every access token and are checked.
	Issuer   string
	Audience string
	// Signup is "open" (anyone may sign up) or "invite-only".
	Signup     string
	AccessTTL  time.Duration // 1 hour
	RefreshTTL time.Duration // 30 days
	// KeyRotation is how often a new signing key replaces the current one.
	KeyRotation time.Duration
	// SecretKey (32 bytes) encrypts signing keys at rest (AES-256-GCM).
	SecretKey []byte
	Password  PasswordParams
	// CustomRoles maps role names to permissions, beside admin, user, viewer.
	CustomRoles map[string][]string
	// OIDC configures sign-in with OpenID Connect providers (oauth.go).
	OIDC OIDCConfig
}

func (c *Config) defaults() {
	if c.AccessTTL == 0 {
		c.AccessTTL = time.Hour
	}
	if c.RefreshTTL == 0 {
		c.RefreshTTL = 30 * 24 * time.Hour
	}
	if c.KeyRotation == 0 {
		c.KeyRotation = 7 * 24 * time.Hour
	}
	if c.Signup == "" {
		c.Signup = "invite-only"
	}
	if c.Audience == "" {
		c.Audience = "dotdo"
	}
	if c.Password.Time == 0 {
		c.Password = DefaultPasswordParams
	}
}

// Service is the auth service.
type Service struct {
	db   DB
	cfg  Config
	log  *slog.Logger
	keys *Keyring
	gcm  cipher.AEAD
	// Now is the clock; tests replace it.
	Now func() time.Time

	mu       sync.Mutex
	lastUsed map[string]int64 // key id -> Unix seconds, flushed in batches
	// revoked is called with the hash of a revoked key, so that caches in
	// this process drop it at once.
	revokedHooks []func(hash string)
	dummy        string
	oidc         *oidcSet
}

// New returns the auth service. Call Start before serving.
func New(db DB, cfg Config, logger *slog.Logger) (*Service, error) {
	cfg.defaults()
	if len(cfg.SecretKey) != 32 {
		return nil, errors.New("auth: the secret key must be 32 bytes")
	}
	if cfg.Signup != "open" && cfg.Signup != "invite-only" {
		return nil, fmt.Errorf("auth: signup must be open or invite-only, not %q", cfg.Signup)
	}
	for r, ps := range cfg.CustomRoles {
		if _, builtin := BuiltinRoles[r]; builtin {
			return nil, fmt.Errorf("auth: custom role %q shadows a built-in role", r)
		}
		for _, p := range ps {
			if !ValidPermission(p) {
				return nil, fmt.Errorf("auth: role %q: permission %q is not resource:action", r, p)
			}
		}
	}
	block, err := aes.NewCipher(cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	oidc, err := newOIDCSet(cfg.OIDC, cfg.Issuer)
	if err != nil {
		return nil, err
	}
	return &Service{db: db, cfg: cfg, log: logger.With("service", "auth"), keys: NewKeyring(nil), gcm: gcm, Now: time.Now, lastUsed: map[string]int64{}, oidc: oidc}, nil
}

// OnKeyRevoked registers fn to be called with the hash of every key this
// process revokes.
func (s *Service) OnKeyRevoked(fn func(hash string)) { s.revokedHooks = append(s.revokedHooks, fn) }

// Keyring returns the signing keys, for local verification of tokens.
func (s *Service) Keyring() *Keyring { return s.keys }

// Verifier returns a token verifier over this service's keys.
func (s *Service) Verifier() *Verifier {
	return &Verifier{Issuer: s.cfg.Issuer, Audience: s.cfg.Audience, Key: s.keys.Public, Now: s.Now}
}

// Start loads the signing keys, creating or rotating as needed.
func (s *Service) Start(ctx context.Context) error {
	if s.dummy == "" {
		h, err := HashPassword("dotdo-timing-equaliser", s.cfg.Password)
		if err != nil {
			return err
		}
		s.dummy = h
	}
	return s.rotateKeys(ctx)
}

// Run does the periodic work until ctx ends: key rotation and reloading
// (so that replicas converge) and flushing lastUsedAt of API keys.
func (s *Service) Run(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.flushLastUsed(context.WithoutCancel(ctx))
			return
		case <-t.C:
			if err := s.rotateKeys(ctx); err != nil {
				s.log.WarnContext(ctx, "signing key rotation failed", "err", err)
			}
			s.flushLastUsed(ctx)
		}
	}
}

// --- storage helpers ---

func (s *Service) get(ctx context.Context, id string, into any) (*dbv1.Thing, error) {
	res, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: id}))
	if err != nil {
		return nil, err
	}
	if into != nil {
		if err := json.Unmarshal(res.Msg.Thing.Data, into); err != nil {
			return nil, fmt.Errorf("decode %s: %w", id, err)
		}
	}
	return res.Msg.Thing, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func write(id, typ string, data any, cond dbv1.Condition, ifVersion, expiresAt int64) *dbv1.Op {
	return &dbv1.Op{Op: &dbv1.Op_Write{Write: &dbv1.Write{Id: id, Type: typ, Data: mustJSON(data), Condition: cond, IfVersion: ifVersion, ExpiresAt: expiresAt}}}
}

func del(id string) *dbv1.Op {
	return &dbv1.Op{Op: &dbv1.Op_Delete{Delete: &dbv1.DeleteRequest{Id: id}}}
}

func (s *Service) batch(ctx context.Context, ops ...*dbv1.Op) error {
	_, err := s.db.Batch(ctx, connect.NewRequest(&dbv1.BatchRequest{Ns: Namespace, Ops: ops}))
	return err
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func (s *Service) unix() int64 { return s.Now().Unix() }

// internal hides an unexpected error from the caller and logs it.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	var ae *apierr.Error
	if errors.As(err, &ae) && ae.Code != apierr.Internal {
		return err
	}
	s.log.ErrorContext(ctx, op+" failed", "err", err)
	return apierr.New(apierr.Internal, "internal error")
}

// --- grants ---

type grantJSON struct {
	Roles       []string `json:"roles,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
}

func toGrants(m map[string]grantJSON) map[string]*authv1.Grants {
	out := make(map[string]*authv1.Grants, len(m))
	for ns, g := range m {
		out[ns] = &authv1.Grants{Roles: g.Roles, Permissions: g.Permissions}
	}
	return out
}

func (s *Service) fromGrants(m map[string]*authv1.Grants) (map[string]grantJSON, error) {
	out := make(map[string]grantJSON, len(m))
	for ns, g := range m {
		if ns != "*" && !thingsdb.ValidNamespace(ns) {
			return nil, apierr.New(apierr.Invalid, "grants: %q is not a namespace or *", ns)
		}
		for _, r := range g.GetRoles() {
			_, builtin := BuiltinRoles[r]
			_, custom := s.cfg.CustomRoles[r]
			if !builtin && !custom {
				return nil, apierr.New(apierr.Invalid, "grants: unknown role %q; use admin, user, viewer or a configured custom role", r)
			}
		}
		for _, p := range g.GetPermissions() {
			if !ValidPermission(p) {
				return nil, apierr.New(apierr.Invalid, "grants: permission %q is not resource:action such as things:read", p)
			}
		}
		if len(g.GetRoles())+len(g.GetPermissions()) == 0 {
			return nil, apierr.New(apierr.Invalid, "grants: namespace %q has no roles or permissions", ns)
		}
		out[ns] = grantJSON{Roles: g.GetRoles(), Permissions: g.GetPermissions()}
	}
	return out, nil
}

// CheckPermission answers whether an identity has a permission on a
// namespace.
func (s *Service) CheckPermission(ctx context.Context, req *connect.Request[authv1.CheckPermissionRequest]) (*connect.Response[authv1.CheckPermissionResponse], error) {
	m := req.Msg
	if m.Identity == nil {
		return nil, apierr.New(apierr.Invalid, "identity is required")
	}
	if !ValidPermission(m.Permission) {
		return nil, apierr.New(apierr.Invalid, "permission %q is not resource:action", m.Permission)
	}
	if !thingsdb.ValidNamespace(m.Namespace) {
		return nil, apierr.New(apierr.Invalid, "namespace %q is invalid", m.Namespace)
	}
	res := &authv1.CheckPermissionResponse{Allowed: s.Can(m.Identity, m.Namespace, m.Permission)}
	if !res.Allowed {
		res.Reason = fmt.Sprintf("%s lacks %s on namespace %s", m.Identity.Subject, m.Permission, m.Namespace)
	}
	return connect.NewResponse(res), nil
}

// Can reports whether id has permission on ns, with the configured roles.
func (s *Service) Can(id *authv1.Identity, ns, permission string) bool {
	return Can(id, ns, permission, s.cfg.CustomRoles)
}

// --- signing keys ---

type signingKeyJSON struct {
	Private   string `json:"private"` // AES-GCM sealed, base64
	Public    string `json:"public"`
	CreatedAt int64  `json:"createdAt"`
	RetiredAt int64  `json:"retiredAt,omitempty"`
}

func (s *Service) seal(b []byte) string {
	nonce := make([]byte, s.gcm.NonceSize())
	rand.Read(nonce)
	return base64.StdEncoding.EncodeToString(s.gcm.Seal(nonce, nonce, b, []byte("dotdo-signing-key")))
}

func (s *Service) open(v string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) < s.gcm.NonceSize() {
		return nil, errors.New("sealed key is malformed")
	}
	return s.gcm.Open(nil, b[:s.gcm.NonceSize()], b[s.gcm.NonceSize():], []byte("dotdo-signing-key"))
}

// rotateKeys loads the signing keys and, when the newest is older than
// the rotation period, adds one. The new key's id is derived from the
// rotation period's index and created with create-only, so replicas that
// rotate together agree on one key. Retired keys stay until every token
// they signed has expired.
func (s *Service) rotateKeys(ctx context.Context) error {
	now := s.Now()
	period := now.UnixNano() / int64(s.cfg.KeyRotation)
	id := fmt.Sprintf("jwk_%d", period)
	if _, err := s.get(ctx, id, nil); apierr.Is(err, apierr.NotFound) {
		k, err := NewSigningKey(now)
		if err != nil {
			return err
		}
		k.ID = fmt.Sprintf("k%d", period)
		data := signingKeyJSON{Private: s.seal(k.Private), Public: base64.StdEncoding.EncodeToString(k.Public), CreatedAt: now.Unix()}
		err = s.batch(ctx, write(id, "SigningKey", data, dbv1.Condition_CONDITION_MUST_NOT_EXIST, 0, 0))
		if err != nil && !apierr.Is(err, apierr.PreconditionFailed) {
			return fmt.Errorf("create signing key: %w", err)
		}
	} else if err != nil {
		return err
	}
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "SigningKey", Order: "-createdAt", Limit: 100}))
	if err != nil {
		return err
	}
	var keys []SigningKey
	for i, t := range res.Msg.Items {
		var d signingKeyJSON
		if err := json.Unmarshal(t.Data, &d); err != nil {
			return err
		}
		pub, _ := base64.StdEncoding.DecodeString(d.Public)
		k := SigningKey{ID: "k" + strings.TrimPrefix(t.Id, "jwk_"), Public: ed25519.PublicKey(pub), CreatedAt: time.Unix(d.CreatedAt, 0)}
		if i > 0 {
			// Retired when the next key was created; only its public half
			// is needed, and only until every token it signed has expired.
			k.RetiredAt = keys[len(keys)-1].CreatedAt
			if now.Sub(k.RetiredAt) > s.cfg.AccessTTL+time.Minute {
				break
			}
			keys = append(keys, k)
			continue
		}
		priv, err := s.open(d.Private)
		if err != nil {
			return fmt.Errorf("signing key %s: %w (was DOTDO_SECRET_KEY changed?)", t.Id, err)
		}
		k.Private = ed25519.PrivateKey(priv)
		keys = append(keys, k)
	}
	s.keys.Set(keys)
	return nil
}

// JWKS returns the public signing keys.
func (s *Service) JWKS(ctx context.Context, _ *connect.Request[authv1.JWKSRequest]) (*connect.Response[authv1.JWKSResponse], error) {
	return connect.NewResponse(&authv1.JWKSResponse{Jwks: JWKS(s.keys.Keys())}), nil
}

// Health reports whether the service can reach its store and sign.
func (s *Service) Health(ctx context.Context, _ *connect.Request[authv1.HealthRequest]) (*connect.Response[authv1.HealthResponse], error) {
	if len(s.keys.Keys()) == 0 {
		return nil, apierr.New(apierr.Unavailable, "no signing key loaded")
	}
	if _, err := s.db.Get(ctx, connect.NewRequest(&dbv1.GetRequest{Ns: Namespace, Id: "health"})); err != nil && !apierr.Is(err, apierr.NotFound) {
		return nil, apierr.New(apierr.Unavailable, "auth store unreachable")
	}
	return connect.NewResponse(&authv1.HealthResponse{Status: "ok"}), nil
}

// --- audit ---

// audit records an AuditEvent; failures are logged, never returned, so
// that auditing cannot block a login.
func (s *Service) audit(ctx context.Context, action, actor, target, outcome, ip string) {
	ev := map[string]string{"action": action, "actor": actor, "target": target, "outcome": outcome}
	if ip != "" {
		ev["ip"] = ip
	}
	exp := s.Now().Add(90 * 24 * time.Hour).UnixMicro()
	_, err := s.db.Put(ctx, connect.NewRequest(&dbv1.PutRequest{Write: &dbv1.Write{Ns: Namespace, Id: thingsdb.NewPrefixedID("aud_"), Type: "AuditEvent", Data: mustJSON(ev), ExpiresAt: exp}}))
	if err != nil {
		s.log.WarnContext(ctx, "audit event not recorded", "action", action, "err", err)
	}
}

// claims builds access-token claims.
func (s *Service) claims(u *userJSON, userID, sessionID string, now time.Time) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.cfg.Issuer,
			Subject:   userID,
			Audience:  jwt.ClaimStrings{s.cfg.Audience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.AccessTTL)),
			ID:        thingsdb.NewPrefixedID(""),
		},
		SessionID: sessionID,
		Email:     u.Email,
		Grants:    u.Grants,
	}
}

func validEmail(e string) (string, error) {
	e = strings.TrimSpace(e)
	a, err := mail.ParseAddress(e)
	if err != nil || a.Address != e || len(e) > 254 {
		return "", apierr.New(apierr.Invalid, "email %q is not a valid address", e)
	}
	return strings.ToLower(e), nil
}

// ListAudit returns audit events, newest first.
func (s *Service) ListAudit(ctx context.Context, req *connect.Request[authv1.ListAuditRequest]) (*connect.Response[authv1.ListAuditResponse], error) {
	res, err := s.db.List(ctx, connect.NewRequest(&dbv1.ListRequest{Ns: Namespace, Type: "AuditEvent", Order: "-createdAt", Limit: req.Msg.Limit, Cursor: req.Msg.Cursor}))
	if err != nil {
		return nil, err
	}
	out := &authv1.ListAuditResponse{NextCursor: res.Msg.NextCursor, Events: [][]byte{}}
	for _, t := range res.Msg.Items {
		var ev map[string]any
		if json.Unmarshal(t.Data, &ev) != nil {
			continue
		}
		ev["id"] = t.Id
		ev["at"] = time.UnixMicro(t.CreatedAt).UTC().Format(time.RFC3339Nano)
		out.Events = append(out.Events, mustJSON(ev))
	}
	return connect.NewResponse(out), nil
}
