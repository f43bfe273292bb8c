package auth

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	testIssuer   = "https://dotdo.test"
	testAudience = "dotdo"
)

func testKeyring(t *testing.T, now time.Time) (*Keyring, SigningKey) {
	t.Helper()
	k, err := NewSigningKey(now)
	if err != nil {
		t.Fatal(err)
	}
	return NewKeyring([]SigningKey{k}), k
}

func claimsAt(now time.Time) *Claims {
	return &Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    testIssuer,
			Subject:   "user_1",
			Audience:  jwt.ClaimStrings{testAudience},
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
		SessionID: "ses_1",
	}
}

func verifier(kr *Keyring, now time.Time) *Verifier {
	return &Verifier{Issuer: testIssuer, Audience: testAudience, Key: kr.Public, Now: func() time.Time { return now }}
}

func TestVerifyAcceptsValidToken(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	kr, key := testKeyring(t, now)
	tok, err := kr.Sign(claimsAt(now))
	if err != nil {
		t.Fatal(err)
	}
	c, err := verifier(kr, now.Add(30*time.Minute)).Verify(tok)
	if err != nil || c.Subject != "user_1" || c.SessionID != "ses_1" {
		t.Fatalf("Verify = %+v, %v; want user_1/ses_1", c, err)
	}
	var hdr map[string]any
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	json.Unmarshal(b, &hdr)
	if hdr["alg"] != "EdDSA" || hdr["kid"] != key.ID {
		t.Fatalf("header = %v; want EdDSA with kid %s", hdr, key.ID)
	}
}

// TestVerifyRejectsAttacks: each forged or stale token is refused.
func TestVerifyRejectsAttacks(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	kr, key := testKeyring(t, now)
	other, _ := NewSigningKey(now)
	sign := func(c *Claims) string {
		tok, err := kr.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	valid := sign(claimsAt(now))
	parts := strings.Split(valid, ".")

	// alg none: header says none, no signature
	noneHdr := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT","kid":"` + key.ID + `"}`))
	algNone := noneHdr + "." + parts[1] + "."

	// key confusion: HS256 with the public key bytes as the HMAC secret
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claimsAt(now))
	hs.Header["kid"] = key.ID
	confused, err := hs.SignedString([]byte(key.Public))
	if err != nil {
		t.Fatal(err)
	}

	// tampered payload: same signature, other subject
	c := claimsAt(now)
	c.Subject = "admin"
	pb, _ := json.Marshal(c)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(pb) + "." + parts[2]

	// signed by a key the verifier does not know, under a known kid
	foreign := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claimsAt(now))
	foreign.Header["kid"] = key.ID
	foreignTok, _ := foreign.SignedString(other.Private)

	unknownKid := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claimsAt(now))
	unknownKid.Header["kid"] = other.ID
	unknownTok, _ := unknownKid.SignedString(other.Private)

	expired := claimsAt(now.Add(-2 * time.Hour))
	notYet := claimsAt(now.Add(time.Hour))
	wrongIss := claimsAt(now)
	wrongIss.Issuer = "https://evil.test"
	wrongAud := claimsAt(now)
	wrongAud.Audience = jwt.ClaimStrings{"someone-else"}
	noExp := claimsAt(now)
	noExp.ExpiresAt = nil
	noSub := claimsAt(now)
	noSub.Subject = ""

	cases := map[string]string{
		"alg none":            algNone,
		"HS256 key confusion": confused,
		"tampered payload":    tampered,
		"foreign key":         foreignTok,
		"unknown kid":         unknownTok,
		"expired":             sign(expired),
		"not yet valid":       sign(notYet),
		"wrong issuer":        sign(wrongIss),
		"wrong audience":      sign(wrongAud),
		"no expiry":           sign(noExp),
		"no subject":          sign(noSub),
		"garbage":             "not.a.jwt",
		"empty":               "",
	}
	v := verifier(kr, now)
	for name, tok := range cases {
		if c, err := v.Verify(tok); err == nil {
			t.Errorf("%s: Verify accepted the token (%+v)", name, c)
		}
	}
	if _, err := v.Verify(unknownTok); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown kid: err = %v; want ErrUnknownKey so the caller refreshes the JWKS", err)
	}
}

func TestKeyRotation(t *testing.T) {
	t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
	k1, _ := NewSigningKey(t0)
	kr := NewKeyring([]SigningKey{k1})
	old, _ := kr.Sign(claimsAt(t0))
	k2, _ := NewSigningKey(t0.Add(time.Hour))
	k1.RetiredAt = t0.Add(time.Hour)
	kr.Set([]SigningKey{k1, k2})
	fresh, _ := kr.Sign(claimsAt(t0.Add(time.Hour)))
	v := verifier(kr, t0.Add(50*time.Minute))
	if _, err := v.Verify(old); err != nil {
		t.Fatalf("token of the retired key = %v; want still valid", err)
	}
	var hdr struct{ Kid string }
	b, _ := base64.RawURLEncoding.DecodeString(strings.Split(fresh, ".")[0])
	json.Unmarshal(b, &hdr)
	if hdr.Kid != k2.ID {
		t.Fatalf("new tokens signed by %s; want the new key %s", hdr.Kid, k2.ID)
	}
	set, err := ParseJWKS(JWKS(kr.Keys()))
	if err != nil || len(set) != 2 {
		t.Fatalf("JWKS round trip = %d keys, %v; want both", len(set), err)
	}
	for _, k := range set {
		if k.Private != nil {
			t.Fatal("JWKS carries a private key")
		}
		if pub, _ := kr.Public(k.ID); !ed25519.PublicKey(pub).Equal(k.Public) {
			t.Fatalf("JWKS key %s differs", k.ID)
		}
	}
	if strings.Contains(string(JWKS(kr.Keys())), `"d"`) {
		t.Fatal("JWKS has a private component")
	}
}
