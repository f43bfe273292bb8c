package auth

import (
	"crypto/rand"
	"math/big"
	"strings"
)

// API key prefixes: the mode is part of the secret, so a test key can
// never be mistaken for a live one.
const (
	LivePrefix = "sk_live_"
	TestPrefix = "sk_test_"
	// keyBody is the length of the random part: 43 base62 characters
	// carry 256 bits (32 random bytes).
	keyBody = 43
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// NewAPIKey returns a new secret: sk_live_ or sk_test_ and 43 base62
// characters from 32 random bytes.
func NewAPIKey(test bool) (string, error) {
	body, err := randomBase62()
	if err != nil {
		return "", err
	}
	prefix := LivePrefix
	if test {
		prefix = TestPrefix
	}
	return prefix + body, nil
}

// randomBase62 returns 32 random bytes (256 bits) as 43 base62 characters:
// the body of API keys and refresh tokens.
func randomBase62() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	n := new(big.Int).SetBytes(b[:])
	out := make([]byte, keyBody)
	base, mod := big.NewInt(62), new(big.Int)
	for i := keyBody - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out), nil
}

// LooksLikeAPIKey reports whether s has the shape of a dotdo API key.
func LooksLikeAPIKey(s string) bool {
	if !strings.HasPrefix(s, LivePrefix) && !strings.HasPrefix(s, TestPrefix) {
		return false
	}
	body := s[len(LivePrefix):]
	if len(body) != keyBody {
		return false
	}
	for i := 0; i < len(body); i++ {
		if strings.IndexByte(base62, body[i]) < 0 {
			return false
		}
	}
	return true
}

// HashAPIKey returns the hex SHA-256 of a key: the only form stored. A
// 256-bit random secret needs no salt or slow hash.
func HashAPIKey(key string) string { return hashHex(key) }

// DisplayKey returns the visible parts of a key: its prefix with the first
// four characters of the body, and its last four characters.
func DisplayKey(key string) (prefix, last4 string) {
	if len(key) < len(LivePrefix)+8 {
		return "", ""
	}
	return key[:len(LivePrefix)+4], key[len(key)-4:]
}
