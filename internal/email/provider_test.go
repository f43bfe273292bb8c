package email

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is an httptest server that checks each request with check and
// answers with the next of replies (the last one repeats).
type fakeAPI struct {
	mu      sync.Mutex
	t       *testing.T
	check   func(t *testing.T, r *http.Request, body map[string]any)
	replies []reply
	calls   int
	bodies  []map[string]any
}

type reply struct {
	status int
	header map[string]string
	body   string
}

func (f *fakeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		f.t.Errorf("request body is not JSON: %v", err)
	}
	f.mu.Lock()
	f.check(f.t, r, body)
	rep := f.replies[min(f.calls, len(f.replies)-1)]
	f.calls++
	f.bodies = append(f.bodies, body)
	f.mu.Unlock()
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rep.status)
	io.WriteString(w, rep.body)
}

func (f *fakeAPI) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

func richInput(to string) *Input {
	return &Input{
		From: "Acme Støre <noreply@acme.test>", To: Addresses{to}, Cc: Addresses{"cc@x.test"}, Bcc: Addresses{"bcc@x.test"},
		ReplyTo: Addresses{"support@acme.test"}, Subject: "Your receipt", HTML: "<p>Thanks</p>", Text: "Thanks",
		Tags: []Tag{{Name: "category", Value: "receipt"}}, Headers: map[string]string{"X-Entity-Ref-ID": "42"},
		Attachments: []InAttachment{{Filename: "receipt.txt", Content: base64.StdEncoding.EncodeToString([]byte("paid")), ContentType: "text/plain"}},
	}
}

func keys(m map[string]any) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestResend(t *testing.T) {
	var emailID string
	api := &fakeAPI{t: t, check: func(t *testing.T, r *http.Request, body map[string]any) {
		if r.Method != http.MethodPost || r.URL.Path != "/emails" {
			t.Errorf("request %s %s; want POST /emails", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer re_test_123" {
			t.Errorf("Authorization = %q; want Bearer re_test_123", got)
		}
		if got := r.Header.Get("Content-Type"); got != "application/json" {
			t.Errorf("Content-Type = %q", got)
		}
		if r.Header.Get("Idempotency-Key") == "" {
			t.Errorf("no Idempotency-Key: a retried delivery could be sent twice")
		}
		if body["to"] == nil || strings.Contains(body["to"].([]any)[0].(string), "reject") {
			return
		}
		want := []string{"attachments", "bcc", "cc", "from", "headers", "html", "reply_to", "subject", "tags", "text", "to"}
		if got := keys(body); !slices.Equal(got, want) {
			t.Errorf("fields = %v; want %v", got, want)
		}
		att := body["attachments"].([]any)[0].(map[string]any)
		if att["filename"] != "receipt.txt" || att["content"] != base64.StdEncoding.EncodeToString([]byte("paid")) || att["content_type"] != "text/plain" {
			t.Errorf("attachment = %v; want filename, base64 content, content_type", att)
		}
		tag := body["tags"].([]any)[0].(map[string]any)
		if tag["name"] != "category" || tag["value"] != "receipt" {
			t.Errorf("tags = %v", body["tags"])
		}
		if body["from"] != "Acme Støre <noreply@acme.test>" || body["reply_to"].([]any)[0] != "support@acme.test" {
			t.Errorf("from, reply_to = %v, %v", body["from"], body["reply_to"])
		}
	}, replies: []reply{
		{429, map[string]string{"Retry-After": "1"}, `{"statusCode":429,"name":"rate_limit_exceeded","message":"Too many requests. You can only make 2 requests per second."}`},
		{500, nil, `{"statusCode":500,"name":"internal_server_error","message":"An unexpected error occurred."}`},
		{200, nil, `{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	e := newEnv(t, "sqlite", Config{Provider: "resend", Resend: ResendConfig{APIKey: "re_test_123", BaseURL: srv.URL}})
	ctx := context.Background()
	res, err := e.s.SendEmail(ctx, richInput("ann@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	emailID = res.ID
	v := e.waitStatus(t, emailID, StatusSent, StatusFailed)
	if v.Status != StatusSent || v.ProviderID != "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794" || v.Attempts != 3 || api.count() != 3 {
		t.Fatalf("after 429, 500, 200: status %s provider id %q attempts %d calls %d; want sent after 3", v.Status, v.ProviderID, v.Attempts, api.count())
	}
	var retries []string
	for _, ev := range v.Events {
		if ev.Type == "retrying" {
			retries = append(retries, ev.Reason)
		}
	}
	if len(retries) != 2 || !strings.Contains(retries[0], "429 rate_limit_exceeded") || !strings.Contains(retries[0], "next attempt in 1s") || !strings.Contains(retries[1], "500") {
		t.Fatalf("retries = %q; want a 429 honouring Retry-After: 1, then a 500", retries)
	}
	// The provider's events find the email by the provider's id.
	r, err := e.s.Record(ctx, Event{Provider: "resend", ProviderMessageID: "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794", Type: "email.delivered", EventID: "msg_1"})
	if err != nil || r.EmailID != emailID || r.Status != StatusDelivered {
		t.Fatalf("Record by provider id = %+v, %v; want %s delivered", r, err, emailID)
	}
	// A 4xx is permanent: failed with Resend's reason, one attempt.
	api.mu.Lock()
	api.replies, api.calls = []reply{{422, nil, `{"statusCode":422,"name":"validation_error","message":"Invalid ` + "`to`" + ` field."}`}}, 0
	api.mu.Unlock()
	res, err = e.s.SendEmail(ctx, simple("reject@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v = e.waitStatus(t, res.ID, StatusFailed)
	if v.Attempts != 1 || !strings.Contains(v.Error, "422 validation_error: Invalid `to` field.") {
		t.Fatalf("after a 422: attempts %d error %q; want 1 attempt and Resend's reason", v.Attempts, v.Error)
	}
}

func TestResendGivesUp(t *testing.T) {
	api := &fakeAPI{t: t, check: func(*testing.T, *http.Request, map[string]any) {},
		replies: []reply{{503, nil, `{"statusCode":503,"name":"service_unavailable","message":"down"}`}}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	e := newEnv(t, "sqlite", Config{Provider: "resend", MaxAttempts: 3, Resend: ResendConfig{APIKey: "re_x", BaseURL: srv.URL}})
	res, err := e.s.SendEmail(context.Background(), simple("a@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitStatus(t, res.ID, StatusFailed)
	if v.Attempts != 3 || api.count() != 3 || !strings.Contains(v.Error, "503") {
		t.Fatalf("attempts %d calls %d error %q; want 3, 3, the 503", v.Attempts, api.count(), v.Error)
	}
}

func TestResendTimeoutIsRetried(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			time.Sleep(300 * time.Millisecond) // longer than the client's timeout
		}
		io.WriteString(w, `{"id":"re_ok"}`)
	}))
	defer srv.Close()
	e := newEnv(t, "sqlite", Config{Provider: "resend", HTTPClient: &http.Client{Timeout: 100 * time.Millisecond}, Resend: ResendConfig{APIKey: "re_x", BaseURL: srv.URL}})
	res, err := e.s.SendEmail(context.Background(), simple("a@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitStatus(t, res.ID, StatusSent, StatusFailed)
	if v.Status != StatusSent || v.Attempts != 2 {
		t.Fatalf("status %s attempts %d (%v); want sent on the second attempt after a timeout", v.Status, v.Attempts, v.Events)
	}
}

func TestSendGrid(t *testing.T) {
	api := &fakeAPI{t: t, check: func(t *testing.T, r *http.Request, body map[string]any) {
		if r.Method != http.MethodPost || r.URL.Path != "/v3/mail/send" {
			t.Errorf("request %s %s; want POST /v3/mail/send", r.Method, r.URL.Path)
		}
		if got := r.Header.Get("Authorization"); got != "Bearer SG.test-key" {
			t.Errorf("Authorization = %q; want Bearer SG.test-key", got)
		}
		if body["personalizations"] == nil {
			t.Errorf("no personalizations in %v", keys(body))
			return
		}
		p := body["personalizations"].([]any)[0].(map[string]any)
		to := p["to"].([]any)[0].(map[string]any)
		if strings.Contains(to["email"].(string), "bad") {
			return
		}
		want := []string{"attachments", "categories", "content", "custom_args", "from", "headers", "personalizations", "reply_to", "subject"}
		if got := keys(body); !slices.Equal(got, want) {
			t.Errorf("fields = %v; want %v", got, want)
		}
		if to["email"] != "ann@x.test" || to["name"] != "Ann" {
			t.Errorf("personalizations[0].to[0] = %v", to)
		}
		if p["cc"].([]any)[0].(map[string]any)["email"] != "cc@x.test" || p["bcc"].([]any)[0].(map[string]any)["email"] != "bcc@x.test" {
			t.Errorf("cc, bcc = %v, %v", p["cc"], p["bcc"])
		}
		from := body["from"].(map[string]any)
		if from["email"] != "noreply@acme.test" || from["name"] != "Acme Støre" {
			t.Errorf("from = %v", from)
		}
		c := body["content"].([]any)
		if c[0].(map[string]any)["type"] != "text/plain" || c[1].(map[string]any)["type"] != "text/html" || c[1].(map[string]any)["value"] != "<p>Thanks</p>" {
			t.Errorf("content = %v; want text/plain then text/html", c)
		}
		a := body["attachments"].([]any)[0].(map[string]any)
		if a["content"] != base64.StdEncoding.EncodeToString([]byte("paid")) || a["filename"] != "receipt.txt" || a["type"] != "text/plain" || a["disposition"] != "attachment" {
			t.Errorf("attachment = %v", a)
		}
		if body["reply_to"].(map[string]any)["email"] != "support@acme.test" {
			t.Errorf("reply_to = %v", body["reply_to"])
		}
	}, replies: []reply{
		{429, map[string]string{"Retry-After": "1"}, `{"errors":[{"field":null,"message":"too many requests"}]}`},
		{202, map[string]string{"X-Message-Id": "sg-msg-1"}, ""},
	}}
	srv := httptest.NewServer(api)
	defer srv.Close()
	e := newEnv(t, "sqlite", Config{Provider: "sendgrid", SendGrid: SendGridConfig{APIKey: "SG.test-key", BaseURL: srv.URL}})
	ctx := context.Background()
	res, err := e.s.SendEmail(ctx, richInput("Ann <ann@x.test>"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v := e.waitStatus(t, res.ID, StatusSent, StatusFailed)
	if v.Status != StatusSent || v.ProviderID != "sg-msg-1" || v.Attempts != 2 {
		t.Fatalf("status %s provider id %q attempts %d; want sent as sg-msg-1 on attempt 2", v.Status, v.ProviderID, v.Attempts)
	}
	api.mu.Lock()
	api.replies, api.calls = []reply{{400, nil, `{"errors":[{"message":"The from email does not contain a valid address.","field":"from.email","help":"http://sendgrid.com/docs/API_Reference/Web_API_v3/Mail/errors.html#message.from"}]}`}}, 0
	api.mu.Unlock()
	res, err = e.s.SendEmail(ctx, simple("bad@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	v = e.waitStatus(t, res.ID, StatusFailed)
	if v.Attempts != 1 || !strings.Contains(v.Error, "400 from.email: The from email does not contain a valid address.") {
		t.Fatalf("after a 400: attempts %d error %q; want SendGrid's reason", v.Attempts, v.Error)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "3": 3 * time.Second, "-1": 0, "junk": 0, "99999": time.Hour,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
	} {
		if got := retryAfter(in, now); got != want {
			t.Errorf("retryAfter(%q) = %v; want %v", in, got, want)
		}
	}
}

// TestOneDeliveryAtATime: while one consumer is delivering a message, a
// second delivery of it (the queue redelivers after its lease) waits
// instead of calling the provider again.
func TestOneDeliveryAtATime(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		<-release
		io.WriteString(w, `{"id":"re_once"}`)
	}))
	defer srv.Close()
	defer close(release)
	e := newEnv(t, "sqlite", Config{Provider: "resend", Resend: ResendConfig{APIKey: "re_x", BaseURL: srv.URL}})
	res, err := e.s.SendEmail(context.Background(), simple("a@x.test"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	e.waitStatus(t, res.ID, StatusSending)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return calls
	}
	for deadline := time.Now().Add(30 * time.Second); count() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	delay, again, err := e.s.deliver(context.Background(), res.ID)
	if err != nil || !again || delay <= 0 {
		t.Fatalf("second delivery while the first is in flight = %v, %v, %v; want a retry later", delay, again, err)
	}
	if n := count(); n != 1 {
		t.Fatalf("provider calls = %d; want 1", n)
	}
}
