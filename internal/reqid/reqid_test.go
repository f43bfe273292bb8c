package reqid_test

import (
	"bytes"
	"context"
	"log/slog"
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
