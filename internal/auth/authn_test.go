package auth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestAuthenticatorTokenCache: a cached verification is used only for the
// exact token, and only until the token expires.
func TestAuthenticatorTokenCache(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	k, _ := NewSigningKey(now)
	kr := NewKeyring([]SigningKey{k})
	tok, _ := kr.Sign(claimsAt(now))
	a := NewAuthenticator(nil, AuthenticatorConfig{Issuer: testIssuer, Audience: testAudience, Keys: kr, Now: func() time.Time { return clock }})
	ctx := context.Background()
	if id, err := a.Authenticate(ctx, tok); err != nil || id.Subject != "user_1" {
		t.Fatalf("Authenticate = %v, %v", id, err)
	}
	parts := strings.Split(tok, ".")
	c := claimsAt(now)
	c.Subject = "admin"
	pb, _ := json.Marshal(c)
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString(pb) + "." + parts[2]
	if _, err := a.Authenticate(ctx, forged); err == nil {
		t.Fatal("a payload paired with a cached token's signature was accepted")
	}
	if _, err := a.Authenticate(ctx, tok); err != nil {
		t.Fatalf("cached token refused: %v", err)
	}
	clock = now.Add(61 * time.Minute)
	if _, err := a.Authenticate(ctx, tok); err == nil {
		t.Fatal("cached token accepted after it expired")
	}
}
