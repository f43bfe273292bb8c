// Package sqlite opens dotdo's embedded database: a SQLite file in WAL mode
// through modernc.org/sqlite (pure Go), with one writer connection and a
// pool of readers, and applies the embedded migrations.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"net/url"
	"runtime"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/dotdo/dotdo/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// DB is an open SQLite database.
type DB struct {
	// Write has a single connection: SQLite has one writer, and queueing
	// writers in Go is cheaper than SQLITE_BUSY retries.
	Write *sql.DB
	// Read has several read-only connections; WAL lets them run beside
	// the writer.
	Read *sql.DB
}

// Open opens (creating if needed) the database file at path. Commits are
// durable against a crash of the process (the WAL is written before a
// commit returns); synchronous=NORMAL means a power loss may lose the last
// transactions, as docs/operations.md explains.
func Open(path string) (*DB, error) {
	dsn := func(extra string) string {
		q := url.Values{}
		q.Add("_pragma", "journal_mode(WAL)")
		q.Add("_pragma", "synchronous(NORMAL)")
		q.Add("_pragma", "busy_timeout(10000)")
		q.Add("_pragma", "foreign_keys(ON)")
		if extra != "" {
			q.Add("_pragma", extra)
		}
		q.Set("_txlock", "immediate")
		return "file:" + path + "?" + q.Encode()
	}
	w, err := sql.Open("sqlite", dsn(""))
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := w.Ping(); err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", dsn("query_only(1)"))
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	n := max(4, 2*runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)
	return &DB{Write: w, Read: r}, nil
}

// Migrate applies the embedded migrations and returns how many ran.
func (db *DB) Migrate(ctx context.Context) (int, error) {
	ms, err := migrate.Load(migrations, "migrations")
	if err != nil {
		return 0, err
	}
	return migrate.Run(ctx, db.Write, ms, "", func(q string) string { return q })
}

// Close closes both pools.
func (db *DB) Close() error {
	err := db.Read.Close()
	if werr := db.Write.Close(); err == nil {
		err = werr
	}
	return err
}
