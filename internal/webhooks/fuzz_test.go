package webhooks

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/thingsdb"
)

func sha1Hex(secret string, body []byte) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

const hex64 = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

// The parsers never panic, and whatever they accept is well formed.

func FuzzParseStripeHeader(f *testing.F) {
	for _, s := range []string{"t=1,v1=" + hex64, "t=1,v1=" + hex64 + ",v1=" + hex64 + ",v0=ab", "", "t=", "t=1", "v1=" + hex64, "t=1,,v1=00", "t=99999999999999999999,v1=" + hex64, "t=1,t=2,v1=" + hex64, " t = 1 , v1 = x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseStripeHeader(s)
		if err != nil {
			return
		}
		if h.Timestamp < 0 || len(h.V1) == 0 {
			t.Fatalf("ParseStripeHeader(%q) = %+v without error", s, h)
		}
		for _, v := range h.V1 {
			if len(v) != 32 {
				t.Fatalf("ParseStripeHeader(%q): signature of %d bytes", s, len(v))
			}
		}
		// Verification of anything parsed never panics either.
		Verify(Stripe, http.Header{"Stripe-Signature": {s}}, []byte("{}"), []string{"whsec_x"}, now)
	})
}

func FuzzParseGitHubHeader(f *testing.F) {
	for _, s := range []string{"sha256=" + hex64, "sha256=", "sha1=abc", "", "sha256=" + strings.ToUpper(hex64), "sha256=" + hex64 + "00", " sha256=" + hex64} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := ParseGitHubHeader(s)
		if err == nil && len(b) != 32 {
			t.Fatalf("ParseGitHubHeader(%q): %d bytes", s, len(b))
		}
		Verify(GitHub, http.Header{"X-Hub-Signature-256": {s}}, []byte("{}"), []string{"x"}, now)
	})
}

func FuzzParseWorkOSHeader(f *testing.F) {
	for _, s := range []string{"t=1700000000000, v1=" + hex64, "t=1700000000000,v1=" + hex64, "", "t=1", "v1=" + hex64, "t=1, v1=zz", "t=1, v1=" + hex64 + ", v1=" + hex64, "t=-1, v1=" + hex64, "t=1, x, v1=" + hex64} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := ParseWorkOSHeader(s)
		if err != nil {
			return
		}
		if len(h.V1) != 32 || h.TimestampText == "" || h.TimestampMillis < 0 {
			t.Fatalf("ParseWorkOSHeader(%q) = %+v without error", s, h)
		}
		Verify(WorkOS, http.Header{"Workos-Signature": {s}}, []byte("{}"), []string{"x"}, now)
	})
}

func FuzzParseSvixHeaders(f *testing.F) {
	sig := "v1,dXNlIHRoaXMgYXMgYSBzaWduYXR1cmUgb2YgMzIgYnk="
	for _, s := range []string{sig, sig + " " + sig, "v1a,abc " + sig, "", "v1,", ",abc", "v1,!!!", "garbage", "v1,a v1,b v2,c"} {
		f.Add(s, "1700000000", "msg_1")
	}
	f.Add(sig, "", "")
	f.Add(sig, "-5", "x")
	f.Add(sig, "1e9", "x")
	f.Fuzz(func(t *testing.T, s, ts, id string) {
		sigs, err := ParseSvixSignatures(s)
		if err == nil {
			for _, b := range sigs {
				if len(b) != 32 {
					t.Fatalf("ParseSvixSignatures(%q): %d bytes", s, len(b))
				}
			}
		}
		if n, err := ParseSvixTimestamp(ts); err == nil && n < 0 {
			t.Fatalf("ParseSvixTimestamp(%q) = %d", ts, n)
		}
		h := http.Header{}
		h.Set("svix-signature", s)
		h.Set("svix-timestamp", ts)
		h.Set("svix-id", id)
		Verify(Resend, h, []byte("{}"), []string{"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}, now)
	})
}

// FuzzIdentify: reading the event id and type of a verified request's
// body and headers never panics, and what it accepts fits a record.
func FuzzIdentify(f *testing.F) {
	for _, s := range []string{`{"id":"evt_1","type":"invoice.paid"}`, `{"id":"event_1","event":"dsync.user.created"}`, `{"type":"email.sent"}`, `{}`, `[]`, `null`, `{"id":5}`, `{"id":"` + strings.Repeat("x", 300) + `","type":"t"}`, "not json"} {
		for _, p := range Providers {
			f.Add(p, s, "delivery-1", "push")
		}
	}
	f.Fuzz(func(t *testing.T, provider, body, delivery, event string) {
		h := http.Header{}
		h.Set("X-Github-Delivery", delivery)
		h.Set("X-Github-Event", event)
		h.Set("Svix-Id", delivery)
		id, typ, err := identify(provider, h, []byte(body))
		if err != nil {
			return
		}
		if id == "" || typ == "" || len(id) > 256 || len(typ) > 128 {
			t.Fatalf("identify(%s, %q) = %q, %q", provider, body, id, typ)
		}
		if rid := eventID(provider, id); len(rid) > 256 || !thingsdb.ValidID(rid) {
			t.Fatalf("eventID(%s, %q) = %q: not a valid thing id", provider, id, rid)
		}
	})
}

// FuzzParseRetryAfter: an endpoint's Retry-After never panics and gives a
// delay from 0 to 24 h.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"120", "0", "-5", "", " 30 ", "Wed, 21 Oct 2015 07:28:00 GMT", "Fri, 28 Nov 2026 13:00:00 GMT", "99999999999999999999", "1e3", "soon"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d := parseRetryAfter(s, now); d < 0 || d > 24*time.Hour {
			t.Fatalf("parseRetryAfter(%q) = %v", s, d)
		}
	})
}
