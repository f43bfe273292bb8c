package auth

import (
	"strings"
	"testing"
)

var fastParams = PasswordParams{MemoryKiB: 64, Time: 1, Threads: 1}

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse", fastParams)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash = %s; want PHC argon2id", h)
	}
	if ok, err := VerifyPassword("correct horse", h); !ok || err != nil {
		t.Fatalf("VerifyPassword(right) = %v, %v", ok, err)
	}
	if ok, _ := VerifyPassword("correct hors", h); ok {
		t.Fatal("VerifyPassword(wrong) = true")
	}
	h2, _ := HashPassword("correct horse", fastParams)
	if h2 == h {
		t.Fatal("two hashes of one password are equal: salt missing")
	}
	for _, bad := range []string{"", "$argon2i$v=19$m=64,t=1,p=1$AAAA$AAAA", "$argon2id$v=19$m=64,t=0,p=1$AAAA$AAAA", "$argon2id$v=19$m=64,t=1,p=1$!!$AAAA"} {
		if _, err := VerifyPassword("x", bad); err == nil {
			t.Errorf("VerifyPassword(hash %q) err = nil; want malformed", bad)
		}
	}
}

func TestAPIKey(t *testing.T) {
	seen := map[string]bool{}
	for _, test := range []bool{false, true} {
		for range 50 {
			k, err := NewAPIKey(test)
			if err != nil {
				t.Fatal(err)
			}
			want := LivePrefix
			if test {
				want = TestPrefix
			}
			if !strings.HasPrefix(k, want) || len(k) != len(want)+43 || !LooksLikeAPIKey(k) {
				t.Fatalf("key %q: want %s + 43 base62", k, want)
			}
			if seen[k] {
				t.Fatal("duplicate key")
			}
			seen[k] = true
			if h := HashAPIKey(k); len(h) != 64 || strings.Contains(h, k[8:]) {
				t.Fatalf("hash %q", h)
			}
			p, l := DisplayKey(k)
			if p != k[:12] || l != k[len(k)-4:] {
				t.Fatalf("DisplayKey = %q %q", p, l)
			}
		}
	}
	for _, bad := range []string{"", "sk_live_", "sk_live_short", "pk_live_" + strings.Repeat("a", 43), "sk_live_" + strings.Repeat("a", 42) + "!"} {
		if LooksLikeAPIKey(bad) {
			t.Errorf("LooksLikeAPIKey(%q) = true", bad)
		}
	}
}

func TestRBAC(t *testing.T) {
	cases := []struct {
		granted, want string
		ok            bool
	}{
		{"*", "keys:manage", true},
		{"things:*", "things:write", true},
		{"things:read", "things:write", false},
		{"*:read", "things:read", true},
		{"*:read", "things:write", false},
		{"queue:send", "queue:send", true},
		{"queue", "queue:send", false},
	}
	for _, tc := range cases {
		if got := Grants(tc.granted, tc.want); got != tc.ok {
			t.Errorf("Grants(%q, %q) = %v; want %v", tc.granted, tc.want, got, tc.ok)
		}
	}
	viewer := Expand([]string{"viewer"}, nil)
	if Allowed(viewer, "things:write") || !Allowed(viewer, "things:read") {
		t.Fatalf("viewer = %v", viewer)
	}
	custom := Expand([]string{"mailer", "nope"}, map[string][]string{"mailer": {"email:send"}})
	if !Allowed(custom, "email:send") || Allowed(custom, "things:read") {
		t.Fatalf("custom role = %v", custom)
	}
	for p, ok := range map[string]bool{"things:read": true, "*": true, "a:*": true, "A:b": false, "things": false, ":x": false, "x:": false} {
		if ValidPermission(p) != ok {
			t.Errorf("ValidPermission(%q) = %v", p, !ok)
		}
	}
}
