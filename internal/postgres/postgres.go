// Package postgres opens dotdo's database on PostgreSQL through pgx and
// applies the embedded migrations.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/dotdo/dotdo/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// migrationLock is a transaction-scoped advisory lock key, so replicas
// starting together apply each migration once. The key has no digit
// separators: PostgreSQL accepts those only from version 16.
const migrationLock = "SELECT pg_advisory_xact_lock(7368766179)"

// Open connects to the database at url (postgres://...). maxConns bounds
// the pool.
func Open(ctx context.Context, url string, maxConns int) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("DATABASE_URL is not a valid PostgreSQL URL (postgres://user:pass@host:5432/db?sslmode=disable): %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("connect to PostgreSQL at %s:%d: %w", cfg.Host, cfg.Port, err)
	}
	return db, nil
}

// Migrate applies the embedded migrations and returns how many ran.
func Migrate(ctx context.Context, db *sql.DB) (int, error) {
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return 0, err
	}
	return migrate.Run(ctx, db, ms, migrationLock, Rebind)
}

// Rebind turns ? placeholders into $1, $2, ....
func Rebind(q string) string {
	var sb strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			sb.WriteString("$" + strconv.Itoa(n))
			continue
		}
		sb.WriteByte(q[i])
	}
	return sb.String()
}
