package email

import (
	"context"
	"encoding/json"
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
		if err := apierr.DecodeJSON(body, &in); err != nil {
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

// FuzzRecordEvent feeds arbitrary provider events (what the webhooks
// service relays) to Record: a clean invalid or not-found error, or a
// recorded event, never a panic or an internal error.
func FuzzRecordEvent(f *testing.F) {
	e := newEnv(f, "sqlite", Config{})
	res, err := e.s.SendEmail(context.Background(), simple("f@x.test"), Options{})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][4]string{
		{res.ID, "email.delivered", "evt_1", "hard"}, {res.ID, "bounced", "", "soft"}, {res.ID, "email.opened", "e", ""},
		{res.ID, "nonsense", "", ""}, {"missing", "sent", "", ""}, {"", "sent", "", ""}, {res.ID, "EMAIL.CLICKED", "x", "permanent"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	f.Fuzz(func(t *testing.T, id, typ, eventID, bounce string) {
		r, err := e.s.Record(context.Background(), Event{EmailID: id, Type: typ, EventID: eventID, BounceType: bounce, Recipient: "f@x.test"})
		if err != nil {
			if c := apierr.From(err).Code; c != apierr.Invalid && c != apierr.NotFound {
				t.Fatalf("Record(%q, %q) = %v; want invalid or not found", id, typ, err)
			}
			return
		}
		if _, ok := rank[r.Status]; !ok {
			t.Fatalf("status %q after %q", r.Status, typ)
		}
	})
}

// FuzzPreviewData renders the built-in templates with arbitrary JSON data:
// a rendering or a 422, never a panic or another error.
func FuzzPreviewData(f *testing.F) {
	tpl, err := LoadTemplates("")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{`{}`, `{"name":"<b>x</b>","appName":"A","loginUrl":"javascript:x"}`, `{"name":{"a":1},"appName":[1],"loginUrl":null}`, `{"resetUrl":"x"}`} {
		f.Add("welcome", s)
		f.Add("password-reset", s)
	}
	f.Fuzz(func(t *testing.T, name, data string) {
		var m map[string]any
		if json.Unmarshal([]byte(data), &m) != nil {
			return
		}
		if _, err := tpl.Render(name, m); err != nil && !apierr.Is(err, apierr.Unprocessable) {
			t.Fatalf("Render(%q, %s) = %v; want 422", name, data, err)
		}
	})
}
