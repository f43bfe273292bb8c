package reqid_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/reqid"
)

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(reqid.LogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "db")
	ctx := reqid.With(context.Background(), "abc123")
	log.ErrorContext(ctx, "failed")
	log.InfoContext(ctx, "access", "request_id", "abc123")
	log.Info("no context")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("got %d lines", len(lines))
	}
	if !strings.Contains(lines[0], `"request_id":"abc123"`) || !strings.Contains(lines[0], `"service":"db"`) {
		t.Errorf("line with a context = %s; want its request_id", lines[0])
	}
	if strings.Count(lines[1], "request_id") != 1 {
		t.Errorf("line that names request_id itself = %s; want it once", lines[1])
	}
	if strings.Contains(lines[2], "request_id") {
		t.Errorf("line without a request = %s; want no request_id", lines[2])
	}
}

func TestValid(t *testing.T) {
	for id, want := range map[string]bool{"abc": true, "": false, "a b": false, strings.Repeat("x", 129): false, "é": false, reqid.New(): true} {
		if got := reqid.Valid(id); got != want {
			t.Errorf("Valid(%q) = %v; want %v", id, got, want)
		}
	}
}

// ClientIP is the TCP peer's host, whatever a forwarding header claims.
func TestClientIP(t *testing.T) {
	for _, tc := range []struct{ remoteAddr, want string }{
		{"203.0.113.7:41234", "203.0.113.7"},
		{"[2001:db8::1]:443", "2001:db8::1"},
		{"@", "@"}, // a unix socket peer has no port
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remoteAddr
		r.Header.Set("X-Forwarded-For", "198.51.100.1")
		if got := reqid.ClientIP(r); got != tc.want {
			t.Errorf("ClientIP(RemoteAddr %q) = %q; want %q", tc.remoteAddr, got, tc.want)
		}
	}
}
