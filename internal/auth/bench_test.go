package auth

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"connectrpc.com/connect"

	authv1 "github.com/dotdo/dotdo/internal/gen/dotdo/auth/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// BenchmarkVerifyJWT measures verifying one access token: parse, Ed25519
// signature and claims. Target: at most 50 µs.
func BenchmarkVerifyJWT(b *testing.B) {
	now := time.Now()
	k, _ := NewSigningKey(now)
	kr := NewKeyring([]SigningKey{k})
	c := claimsAt(now)
	c.Grants = map[string]grantJSON{"acme": {Roles: []string{"user"}}}
	tok, err := kr.Sign(c)
	if err != nil {
		b.Fatal(err)
	}
	v := &Verifier{Issuer: testIssuer, Audience: testAudience, Key: kr.Public}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateJWT measures the gateway's check of an access
// token it has verified before (the usual case: a client reuses its token).
func BenchmarkAuthenticateJWT(b *testing.B) {
	now := time.Now()
	k, _ := NewSigningKey(now)
	kr := NewKeyring([]SigningKey{k})
	tok, _ := kr.Sign(claimsAt(now))
	a := NewAuthenticator(nil, AuthenticatorConfig{Issuer: testIssuer, Audience: testAudience, Keys: kr})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthenticateCachedKey measures the gateway's check of an API
// key that is in its cache: hash, lookup, expiry. The first validation
// goes to a real auth service over SQLite.
func BenchmarkAuthenticateCachedKey(b *testing.B) {
	svc := benchService(b)
	ctx := context.Background()
	res, err := svc.CreateAPIKey(ctx, connect.NewRequest(&authv1.CreateAPIKeyRequest{Name: "bench", Grants: map[string]*authv1.Grants{"*": {Roles: []string{"user"}}}}))
	if err != nil {
		b.Fatal(err)
	}
	key := res.Msg.Secret
	a := NewAuthenticator(svc, AuthenticatorConfig{KeyTTL: time.Hour})
	if _, err := a.Authenticate(ctx, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := a.Authenticate(ctx, key); err != nil {
			b.Fatal(err)
		}
	}
}

func benchService(b *testing.B) *Service {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	db, err := thingsdb.New(testdb.Open(b, thingsdb.SQLite), log)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(db, Config{Issuer: testIssuer, SecretKey: make([]byte, 32)}, log)
	if err != nil {
		b.Fatal(err)
	}
	return svc
}
