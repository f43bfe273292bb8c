package email

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/apierr"
)

// FuzzSendBody feeds arbitrary POST /v1/emails bodies through decoding and
// validation: the answer is a clean error or an email, never a panic or
// an internal error.
func FuzzSendBody(f *testing.F) {
	for _, seed := range []string{
		`{"from":"a@acme.test","to":"b@x.test","subject":"s","text":"t"}`,
		`{"from":"A <a@acme.test>","to":["b@x.test","C <c@x.test>"],"cc":[],"subject":"s","html":"<p>x</p>","tags":[{"name":"a","value":"b"}]}`,
		`{"from":"a@acme.test","to":"b@x.test","template":"welcome","data":{"name":"x","appName":"y","loginUrl":"z"}}`,
		`{"from":"a@acme.test","to":"b@x.test","template":"welcome","data":{"name":"x"}}`,
		`{"from":"a@acme.test","to":"b@x.test","subject":"s","text":"t","attachments":[{"filename":"a","content":"aGVsbG8="}]}`,
		`{"from":"a@acme.test","to":"b@x.test","subject":"s","text":"t","headers":{"X-A":"1"},"scheduledAt":"2030-01-01T00:00:00Z"}`,
		`{"to":5}`, `[]`, `null`, `{"from":"a@acme.test","to":"b@x.test\r\nBcc: c@x.test","subject":"s","text":"t"}`, `{"unknown":1}`, ``,
	} {
		f.Add([]byte(seed))
	}
	fuzzEnv := newEnv(f, "sqlite", Config{})
	f.Fuzz(func(t *testing.T, body []byte) {
		var in Input
		if err := decodeJSON(body, &in); err != nil {
			if !apierr.Is(err, apierr.Invalid) {
				t.Fatalf("decode error %v; want invalid", err)
			}
			return
		}
		p, err := fuzzEnv.s.prepare(context.Background(), &in, false, time.Now())
		if err != nil {
			e := apierr.From(err)
			if e.Code != apierr.Unprocessable && e.Code != apierr.TooLarge {
				t.Fatalf("prepare error %v; want 422 or 413", err)
			}
			return
		}
		for _, a := range append(append(p.rec.To, p.rec.Cc...), p.rec.From) {
			if strings.ContainsAny(a, "\r\n") {
				t.Fatalf("address with a line break accepted: %q", a)
			}
		}
		if strings.ContainsAny(p.rec.Subject, "\r\n") {
			t.Fatalf("subject with a line break accepted: %q", p.rec.Subject)
		}
	})
}

// FuzzRetryAfter checks Retry-After parsing stays within 0 to 1 hour.
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "-5", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "9999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d := retryAfter(s, time.Now()); d < 0 || d > time.Hour {
			t.Fatalf("retryAfter(%q) = %v; want 0 to 1h", s, d)
		}
	})
}
