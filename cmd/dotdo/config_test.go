package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// These tests call run in-process, as main does, with their own
// environment: what a user sees from the command line before any request.

// env returns a getenv over the given NAME=value pairs only.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) string { return m[k] }
}

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestServeHelpDocumentsEveryFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"serve", "--help"}, env(), nil, &stdout, &stderr); err != nil {
		t.Fatalf("serve --help = %v; want nil (exit 0) after printing the usage", err)
	}
	help := stdout.String() + stderr.String()

	// Each flag's block: its "  -name" or "  --name" line and the lines
	// up to the next flag.
	blocks := map[string]string{}
	name := ""
	for _, line := range strings.Split(help, "\n") {
		if strings.HasPrefix(line, "  -") {
			f, _, _ := strings.Cut(strings.TrimLeft(strings.TrimSpace(line), "-"), " ")
			name = f
		} else if !strings.HasPrefix(line, "    ") {
			name = ""
		}
		if name != "" {
			blocks[name] += line + "\n"
		}
	}
	for _, tc := range []struct{ flag, env, def string }{
		{"addr", "DOTDO_ADDR", "127.0.0.1:8787"},
		{"data-dir", "DOTDO_DATA_DIR", "./data"},
		{"database-url", "DATABASE_URL", "none"},
		{"services", "DOTDO_SERVICES", "all"},
		{"db-url", "DOTDO_DB_URL", "none"},
		{"domain", "DOTDO_DOMAIN", "none"},
		{"hosts", "DOTDO_HOSTS", "none"},
		{"max-body", "DOTDO_MAX_BODY", "1MiB"},
		{"read-timeout", "DOTDO_READ_TIMEOUT", "30s"},
		{"write-timeout", "DOTDO_WRITE_TIMEOUT", "30s"},
		{"idle-timeout", "DOTDO_IDLE_TIMEOUT", "120s"},
		{"shutdown-timeout", "DOTDO_SHUTDOWN_TIMEOUT", "30s"},
		{"log-format", "DOTDO_LOG_FORMAT", "auto"},
		{"log-level", "DOTDO_LOG_LEVEL", "info"},
		{"db-max-conns", "DOTDO_DB_MAX_CONNS", "20"},
		{"auth-url", "DOTDO_AUTH_URL", "none"},
		{"public-url", "DOTDO_PUBLIC_URL", "http://127.0.0.1:8787"},
		{"signup", "DOTDO_SIGNUP", "invite-only"},
		{"roles", "DOTDO_ROLES", "none"},
		{"rate-limit", "DOTDO_RATE_LIMIT", "6000/1m"},
		{"rate-limit-anon", "DOTDO_RATE_LIMIT_ANON", "600/1m"},
		{"rate-limit-routes", "DOTDO_RATE_LIMIT_ROUTES", "none"},
		{"redis-url", "REDIS_URL", "none"},
	} {
		b, ok := blocks[tc.flag]
		if !ok {
			t.Errorf("serve --help does not document --%s", tc.flag)
			continue
		}
		if want := "(env " + tc.env + "; default " + tc.def + ")"; !strings.Contains(b, want) {
			t.Errorf("serve --help for --%s:\n%s\nwant it to say %q", tc.flag, b, want)
		}
	}
	// Flags added later must be documented the same way.
	for name, b := range blocks {
		if !strings.Contains(b, "(env ") || !strings.Contains(b, "default ") {
			t.Errorf("serve --help for --%s names no environment variable or default:\n%s", name, b)
		}
	}
	if !strings.Contains(help, "DOTDO_INTERNAL_TOKEN") {
		t.Errorf("serve --help does not document DOTDO_INTERNAL_TOKEN:\n%s", help)
	}
	if len(blocks) < 16 {
		t.Errorf("serve --help documents %d flags; want at least 16:\n%s", len(blocks), help)
	}
}

func TestBadConfigFailsWithFix(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want []string // the error names the flag, its variable, and a fix
	}{
		{"addr nonsense", []string{"--addr", "nonsense"}, nil, []string{"--addr", "DOTDO_ADDR", `"nonsense"`, "127.0.0.1:8787"}},
		{"addr from env", nil, []string{"DOTDO_ADDR=localhost"}, []string{"--addr", "DOTDO_ADDR", "host:port"}},
		{"max-body abc", []string{"--max-body", "abc"}, nil, []string{"--max-body", "DOTDO_MAX_BODY", `"abc"`, "4MiB"}},
		{"max-body too small", []string{"--max-body", "10"}, nil, []string{"--max-body", "at least 1KiB"}},
		{"DATABASE_URL mysql", nil, []string{"DATABASE_URL=mysql://x"}, []string{"--database-url", "DATABASE_URL", "postgres://", "SQLite"}},
		{"services nope", []string{"--services", "nope"}, nil, []string{"--services", "DOTDO_SERVICES", `"nope"`, "use all or some of db,auth,"}},
		{"read timeout negative", nil, []string{"DOTDO_READ_TIMEOUT=-1"}, []string{"--read-timeout", "DOTDO_READ_TIMEOUT", `"-1"`, "positive duration such as 30s"}},
		{"write timeout zero", []string{"--write-timeout", "0s"}, nil, []string{"--write-timeout", "positive duration"}},
		{"log level", []string{"--log-level", "loud"}, nil, []string{"--log-level", "DOTDO_LOG_LEVEL", "debug, info, warn or error"}},
		{"log format", []string{"--log-format", "xml"}, nil, []string{"--log-format", "json"}},
		{"embedder nope", []string{"--embedder", "word2vec"}, nil, []string{"--embedder", "DOTDO_EMBEDDER", "none, lexical-hash or openai"}},
		{"embedder dims", []string{"--embedder", "lexical-hash", "--embedder-dims", "4"}, nil, []string{"--embedder-dims", "from 8 to"}},
		{"embedder url", []string{"--embedder", "openai", "--embedder-url", "ftp://x"}, nil, []string{"--embedder-url", "DOTDO_EMBEDDER_URL", "/v1"}},
		{"db max conns", []string{"--db-max-conns", "0"}, nil, []string{"--db-max-conns", "1 to 1000"}},
		{"db-url scheme", []string{"--db-url", "ftp://x"}, nil, []string{"--db-url", "http://"}},
		{"hosts pair", []string{"--hosts", "example.com"}, nil, []string{"--hosts", "host=service"}},
		{"signup", []string{"--signup", "sometimes"}, nil, []string{"--signup", "DOTDO_SIGNUP", "open or invite-only"}},
		{"rate limit", []string{"--rate-limit", "lots"}, nil, []string{"--rate-limit", "DOTDO_RATE_LIMIT", "600/1m, or off"}},
		{"redis url", nil, []string{"REDIS_URL=http://x"}, []string{"--redis-url", "REDIS_URL", "redis://"}},
		{"roles", []string{"--roles", "mailer=send"}, nil, []string{"--roles", "resource:action"}},
		{"public url", []string{"--public-url", "example.com"}, nil, []string{"--public-url", "https://"}},
		{"dispatch max compiled", []string{"--dispatch-max-compiled", "12abc"}, nil, []string{"--dispatch-max-compiled", "DOTDO_DISPATCH_MAX_COMPILED", `"12abc"`, "from 1 to 100000"}},
		{"stray argument", []string{"now"}, nil, []string{`"now"`, "--help"}},
		{"split without token", []string{"--services", "gateway", "--db-url", "http://127.0.0.1:9"}, nil,
			[]string{"DOTDO_INTERNAL_TOKEN", "at least 32 characters", "openssl rand"}},
		{"gateway without db", []string{"--services", "gateway"}, []string{"DOTDO_INTERNAL_TOKEN=" + strings.Repeat("k", 32)},
			[]string{"--db-url", "--services gateway,db"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			args := append([]string{"--data-dir", dir}, tc.args...)
			// Should the configuration wrongly pass, serve on a free port
			// and stop at once rather than on dotdo's default port.
			getenv := env(append([]string{"DOTDO_ADDR=127.0.0.1:0"}, tc.env...)...)
			log, err := serveUntilListening(t, args, getenv)
			if err == nil {
				t.Fatalf("serve %q = nil; want an error", args)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("serve %q = %q; want it to mention %q", args, err, w)
				}
			}
			if _, err := os.Stat(dir); err == nil {
				t.Errorf("a bad configuration created the data directory %s; want nothing touched", dir)
			}
			if strings.Contains(log, "dotdo listening") {
				t.Errorf("a bad configuration started listening")
			}
		})
	}
}

func TestUnknownFlagAndCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--bogus"}, env(), nil, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error()+stderr.String(), "bogus") {
		t.Errorf("serve --bogus = %v (stderr %q); want an error naming the flag", err, stderr.String())
	}
	stderr.Reset()
	if err := run(context.Background(), []string{"frobnicate"}, env(), nil, &stdout, &stderr); !errors.Is(err, errUsage) {
		t.Errorf("frobnicate = %v; want errUsage", err)
	}
	if !strings.Contains(stderr.String(), `unknown command "frobnicate"`) || !strings.Contains(stderr.String(), "dotdo serve") {
		t.Errorf("frobnicate printed %q; want the unknown command named and the usage", stderr.String())
	}
	stderr.Reset()
	if err := run(context.Background(), nil, env(), nil, &stdout, &stderr); !errors.Is(err, errUsage) || !strings.Contains(stderr.String(), "Usage:") {
		t.Errorf("no arguments = %v, %q; want errUsage and the usage", err, stderr.String())
	}
}

// serveUntilListening runs serve in-process, stops it once it logs that it
// listens, and returns its log and error.
func serveUntilListening(t *testing.T, args []string, getenv func(string) string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout syncBuffer
	stderr := &syncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, append([]string{"serve"}, args...), getenv, nil, &stdout, stderr) }()
	deadline := time.After(60 * time.Second)
	for {
		select {
		case err := <-done:
			return stderr.String(), err
		case <-deadline:
			t.Fatalf("serve %q neither listened nor failed; log:\n%s", args, stderr.String())
		case <-time.After(10 * time.Millisecond):
		}
		if strings.Contains(stderr.String(), `"msg":"dotdo listening"`) {
			cancel()
		}
	}
}

// TestListensOnAnyAddress: with authentication enforced, serve may listen
// on any address.
func TestListensOnAnyAddress(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", "localhost:0"} {
		log, err := serveUntilListening(t, []string{"--addr", addr, "--data-dir", t.TempDir(), "--log-format", "json"}, env())
		if err != nil || !strings.Contains(log, `"msg":"dotdo listening"`) || !strings.Contains(log, `"msg":"stopped"`) {
			t.Errorf("serve --addr %s = %v; want it to run and stop\n%s", addr, err, log)
		}
	}
}

func TestVersion(t *testing.T) {
	for _, arg := range []string{"version", "--version"} {
		var stdout, stderr bytes.Buffer
		if err := run(context.Background(), []string{arg}, env(), nil, &stdout, &stderr); err != nil {
			t.Fatalf("%s: %v", arg, err)
		}
		out := strings.TrimSpace(stdout.String())
		if !strings.HasPrefix(out, "dotdo ") || len(out) <= len("dotdo ") || strings.Contains(out, "\n") {
			t.Errorf("%s printed %q; want one line \"dotdo <version>\"", arg, stdout.String())
		}
	}
}

func TestMigrate(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "fresh", "data")
			getenv := env()
			want := filepath.Join(dir, "dotdo.db")
			if be == thingsdb.Postgres {
				getenv = env("DATABASE_URL=" + testdb.SchemaURL(t))
				want = "postgresql"
			}
			// Twice: migrating a migrated database changes nothing.
			for i := range 2 {
				var stdout, stderr bytes.Buffer
				if err := run(context.Background(), []string{"migrate", "--data-dir", dir}, getenv, nil, &stdout, &stderr); err != nil {
					t.Fatalf("migrate (run %d): %v\n%s", i+1, err, stderr.String())
				}
				if got := stdout.String(); !strings.Contains(got, "migrations applied to "+want) {
					t.Errorf("migrate (run %d) printed %q; want it to name %s", i+1, got, want)
				}
			}
			if be == thingsdb.SQLite {
				if _, err := os.Stat(want); err != nil {
					t.Errorf("after migrate: %v; want the database file", err)
				}
			}
		})
	}
}

// Secrets given as flags are named in a warning serve logs; the same
// secrets from the environment, and flags without secrets, are not.
func TestSecretFlagsWarned(t *testing.T) {
	dir := t.TempDir()
	c, err := parseConfig("serve", []string{"--data-dir", dir, "--webhooks-stripe-secrets", "whsec_abc", "--webhooks-namespace", "billing",
		"--database-url", "postgres://dotdo:hunter2@db:5432/dotdo"}, env("DOTDO_WEBHOOKS_GITHUB_SECRETS=gh"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(c.Warnings, "\n")
	if len(c.Warnings) != 2 || !strings.Contains(joined, "--webhooks-stripe-secrets") || !strings.Contains(joined, "DOTDO_WEBHOOKS_STRIPE_SECRETS") ||
		!strings.Contains(joined, "--database-url") || !strings.Contains(joined, "DATABASE_URL") {
		t.Errorf("warnings = %q; want one each for --webhooks-stripe-secrets and --database-url, naming their variables", c.Warnings)
	}
	if strings.Contains(joined, "whsec_abc") || strings.Contains(joined, "hunter2") {
		t.Errorf("warnings = %q; they must not repeat the secrets", c.Warnings)
	}
	c, err = parseConfig("serve", []string{"--data-dir", dir, "--database-url", "postgres://dotdo@db:5432/dotdo"}, env("DOTDO_WEBHOOKS_GITHUB_SECRETS=gh"), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Errorf("warnings without secrets on the command line = %q; want none", c.Warnings)
	}
}
