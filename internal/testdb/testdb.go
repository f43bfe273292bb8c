// Package testdb gives tests real databases: a fresh SQLite file, and a
// fresh PostgreSQL schema when DOTDO_TEST_POSTGRES_URL is set. A set
// variable with an unreachable server fails the test; it never skips.
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/dotdo/dotdo/internal/postgres"
	"github.com/dotdo/dotdo/internal/sqlite"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// PostgresEnv names the variable that enables the PostgreSQL runs.
const PostgresEnv = "DOTDO_TEST_POSTGRES_URL"

// Backends lists the backends a test runs on: always sqlite, and postgres
// when DOTDO_TEST_POSTGRES_URL is set.
func Backends() []string {
	if os.Getenv(PostgresEnv) != "" {
		return []string{thingsdb.SQLite, thingsdb.Postgres}
	}
	return []string{thingsdb.SQLite}
}

// Open returns a migrated, empty backend of the given name, closed and
// removed when the test ends.
func Open(t testing.TB, name string) thingsdb.Backend {
	t.Helper()
	ctx := context.Background()
	switch name {
	case thingsdb.SQLite:
		db, err := sqlite.Open(filepath.Join(t.TempDir(), "test.db"))
		if err != nil {
			t.Fatalf("open sqlite: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := db.Migrate(ctx); err != nil {
			t.Fatalf("migrate sqlite: %v", err)
		}
		return thingsdb.Backend{Name: thingsdb.SQLite, Read: db.Read, Write: db.Write}
	case thingsdb.Postgres:
		u := SchemaURL(t)
		db, err := postgres.Open(ctx, u, 20)
		if err != nil {
			t.Fatalf("open postgres: %v", err)
		}
		t.Cleanup(func() { db.Close() })
		if _, err := postgres.Migrate(ctx, db); err != nil {
			t.Fatalf("migrate postgres: %v", err)
		}
		return thingsdb.Backend{Name: thingsdb.Postgres, Read: db, Write: db}
	}
	t.Fatalf("unknown backend %q", name)
	return thingsdb.Backend{}
}

// SchemaURL creates a new, empty PostgreSQL schema for the test, dropped
// when it ends, and returns DOTDO_TEST_POSTGRES_URL with search_path set to
// it. It fails the test if the variable is unset or the server unreachable.
func SchemaURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(PostgresEnv)
	if base == "" {
		t.Fatalf("%s is not set", PostgresEnv)
	}
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("%s is set but PostgreSQL is unreachable: %v", PostgresEnv, err)
	}
	defer conn.Close(ctx)
	var b [6]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), base)
		if err != nil {
			return
		}
		defer c.Close(context.Background())
		c.Exec(context.Background(), "DROP SCHEMA "+schema+" CASCADE")
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
