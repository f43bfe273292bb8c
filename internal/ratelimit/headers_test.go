package ratelimit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestWriteHeaders(t *testing.T) {
	perMinute := Policy{Name: "default", Limit: 100, Period: time.Minute}
	tests := []struct {
		name                      string
		p                         Policy
		d                         Decision
		policy, limit, retryAfter string
	}{
		{
			name:   "allowed",
			p:      perMinute,
			d:      Decision{Allowed: true, Limit: 100, Remaining: 99, Reset: 600 * time.Millisecond},
			policy: `"default";q=100;w=60`,
			limit:  `"default";r=99;t=1`,
		},
		{
			name:       "denied",
			p:          Policy{Name: "login", Limit: 5, Period: time.Minute},
			d:          Decision{Limit: 5, Reset: time.Minute, RetryAfter: 12 * time.Second},
			policy:     `"login";q=5;w=60`,
			limit:      `"login";r=0;t=60`,
			retryAfter: "12",
		},
		{
			name:       "retry after rounds up",
			p:          perMinute,
			d:          Decision{Limit: 100, Reset: 59*time.Second + 1, RetryAfter: 1500 * time.Millisecond},
			policy:     `"default";q=100;w=60`,
			limit:      `"default";r=0;t=60`,
			retryAfter: "2",
		},
		{
			name:       "retry after at least 1",
			p:          perMinute,
			d:          Decision{Limit: 100, Reset: time.Second, RetryAfter: time.Microsecond},
			policy:     `"default";q=100;w=60`,
			limit:      `"default";r=0;t=1`,
			retryAfter: "1",
		},
		{
			name:   "sub-second period",
			p:      Policy{Name: "fast", Limit: 10, Period: 500 * time.Millisecond},
			d:      Decision{Allowed: true, Limit: 10, Remaining: 9, Reset: 50 * time.Millisecond},
			policy: `"fast";q=10;w=1`,
			limit:  `"fast";r=9;t=1`,
		},
		{
			name:   "odd period and nothing to reset",
			p:      Policy{Name: "hourly", Limit: 1000, Period: 90*time.Minute + 500*time.Millisecond},
			d:      Decision{Allowed: true, Limit: 1000, Remaining: 999},
			policy: `"hourly";q=1000;w=5401`,
			limit:  `"hourly";r=999;t=0`,
		},
		{
			name:   "unvalidated name is escaped",
			p:      Policy{Name: "a\"b\\c\n", Limit: 1, Period: time.Second},
			d:      Decision{Allowed: true, Limit: 1},
			policy: `"a\"b\\c?";q=1;w=1`,
			limit:  `"a\"b\\c?";r=0;t=0`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			WriteHeaders(h, tc.p, tc.d)
			if got := h.Get("RateLimit-Policy"); got != tc.policy {
				t.Errorf("RateLimit-Policy = %q; want %q", got, tc.policy)
			}
			if got := h.Get("RateLimit"); got != tc.limit {
				t.Errorf("RateLimit = %q; want %q", got, tc.limit)
			}
			if got := h.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q; want %q", got, tc.retryAfter)
			}
			for _, k := range []string{"RateLimit-Policy", "RateLimit", "Retry-After"} {
				if n := len(h.Values(k)); n > 1 {
					t.Errorf("%s appears %d times; want once", k, n)
				}
			}
		})
	}
}

// What a client of a limited HTTP handler sees, request by request.
func TestHeadersOverHTTP(t *testing.T) {
	clock := newFakeClock()
	m := NewMemory(clock.Now, 100)
	p := Policy{Name: "default", Limit: 5, Period: time.Minute}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, err := m.Allow(r.Context(), r.Header.Get("X-Caller"), p)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		WriteHeaders(w.Header(), p, d)
		if !d.Allowed {
			w.WriteHeader(http.StatusTooManyRequests)
		}
	}))
	defer srv.Close()

	type want struct {
		status                int
		rateLimit, retryAfter string
	}
	get := func(caller string, w want) {
		t.Helper()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
		req.Header.Set("X-Caller", caller)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		got := want{resp.StatusCode, resp.Header.Get("RateLimit"), resp.Header.Get("Retry-After")}
		if got != w {
			t.Errorf("GET as %s = %+v; want %+v", caller, got, w)
		}
		if p := resp.Header.Get("RateLimit-Policy"); p != `"default";q=5;w=60` {
			t.Errorf("RateLimit-Policy = %q; want %q", p, `"default";q=5;w=60`)
		}
	}
	for i := range 5 {
		get("alice", want{200, fmt.Sprintf(`"default";r=%d;t=%d`, 4-i, 12*(i+1)), ""})
	}
	get("alice", want{429, `"default";r=0;t=60`, "12"})
	get("bob", want{200, `"default";r=4;t=12`, ""})
	clock.Advance(12 * time.Second)
	get("alice", want{200, `"default";r=0;t=60`, ""})
	get("alice", want{429, `"default";r=0;t=60`, "12"})
}

func ExampleWriteHeaders() {
	p := Policy{Name: "default", Limit: 100, Period: time.Minute}
	h := http.Header{}
	WriteHeaders(h, p, Decision{Limit: 100, Reset: time.Minute, RetryAfter: 600 * time.Millisecond})
	fmt.Println("RateLimit-Policy:", h.Get("RateLimit-Policy"))
	fmt.Println("RateLimit:", h.Get("RateLimit"))
	fmt.Println("Retry-After:", h.Get("Retry-After"))
	// Output:
	// RateLimit-Policy: "default";q=100;w=60
	// RateLimit: "default";r=0;t=60
	// Retry-After: 1
}
