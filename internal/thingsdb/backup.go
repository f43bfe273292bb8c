package thingsdb

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Backups. On SQLite a backup is a copy of the database made online with
// VACUUM INTO: a consistent snapshot, compacted, that opens as a database
// of its own. On PostgreSQL it is a logical export of dotdo's tables taken
// in one REPEATABLE READ, READ ONLY transaction (one snapshot), as JSON
// lines: a header line, then {"table":..., "row":{...}} per row, with each
// row as PostgreSQL's row_to_json writes it. Restore (RestorePostgres, and
// a file copy on SQLite) loads one into an empty store.

// backupHeader is the first line of a PostgreSQL export.
type backupHeader struct {
	Dotdo   string `json:"dotdo"`
	Format  int    `json:"format"`
	Backend string `json:"backend"`
	At      string `json:"at"`
	Tables  []string
}

// restoreOrder puts configuration tables before the tables whose triggers
// read them.
var restoreOrder = []string{"search_config", "analytics_config", "things", "relationships"}

// Backup is the Backup RPC: a backup into BackupDir named by the time,
// then rotation keeping the newest Keep. It runs where the database's
// files are reachable, so that a schedule service in another process can
// ask for one (backup-database).
func (s *Service) Backup(ctx context.Context, req *connect.Request[dbv1.BackupRequest]) (*connect.Response[dbv1.BackupResponse], error) {
	if req.Msg.Keep < 1 {
		return nil, apierr.New(apierr.Invalid, "keep must be 1 or more")
	}
	if s.BackupDir == "" {
		return nil, apierr.New(apierr.PreconditionFailed, "this db service has no backup directory (it is set from --data-dir when serve runs the db service)")
	}
	if err := os.MkdirAll(s.BackupDir, 0o750); err != nil {
		return nil, fmt.Errorf("create %s: %w", s.BackupDir, err)
	}
	path, err := s.backupTo(ctx, filepath.Join(s.BackupDir, "dotdo-"+s.Now().UTC().Format("20060102T150405.000Z")))
	if err != nil {
		return nil, err
	}
	out := &dbv1.BackupResponse{Path: path}
	if st, err := os.Stat(path); err == nil {
		out.Bytes = st.Size()
	}
	removed, err := rotateBackups(s.BackupDir, int(req.Msg.Keep))
	out.Removed = int32(removed)
	if err != nil {
		return nil, fmt.Errorf("rotate backups in %s (wrote %s): %w", s.BackupDir, path, err)
	}
	return connect.NewResponse(out), nil
}

// rotateBackups removes all but the newest keep backups (dotdo-*.db and
// dotdo-*.jsonl, named by time) in dir, returning how many it removed.
func rotateBackups(dir string, keep int) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasPrefix(n, "dotdo-") && (strings.HasSuffix(n, ".db") || strings.HasSuffix(n, ".jsonl")) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	removed := 0
	for len(names) > keep {
		if err := os.Remove(filepath.Join(dir, names[0])); err != nil {
			return removed, err
		}
		names = names[1:]
		removed++
	}
	return removed, nil
}

// backupTo writes a consistent backup of the whole database next to base:
// base+".db" on SQLite, base+".jsonl" on PostgreSQL, and returns its path.
// The file appears only once complete.
func (s *Service) backupTo(ctx context.Context, base string) (string, error) {
	path := base + ".db"
	if s.be.Name == Postgres {
		path = base + ".jsonl"
	}
	tmp := path + ".tmp"
	os.Remove(tmp)
	var err error
	if s.be.Name == Postgres {
		err = s.exportPostgres(ctx, tmp)
	} else {
		// The writer connection: VACUUM INTO reads in one transaction, and
		// the readers are query_only.
		_, err = s.be.Write.ExecContext(ctx, "VACUUM INTO ?", tmp)
	}
	if err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("backup to %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("backup to %s: %w", path, err)
	}
	return path, nil
}

// tables lists the base tables of the current schema but the migration
// bookkeeping, in restore order.
func pgTables(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations' ORDER BY table_name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return nil, err
		}
		names = append(names, n)
	}
	slices.SortStableFunc(names, func(a, b string) int {
		ia, ib := slices.Index(restoreOrder, a), slices.Index(restoreOrder, b)
		if ia < 0 {
			ia = len(restoreOrder)
		}
		if ib < 0 {
			ib = len(restoreOrder)
		}
		return ia - ib
	})
	return names, rows.Err()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (s *Service) exportPostgres(ctx context.Context, path string) error {
	tx, err := s.be.Read.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	tables, err := pgTables(ctx, tx)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 256<<10)
	hdr, _ := json.Marshal(backupHeader{Dotdo: "backup", Format: 1, Backend: Postgres, At: s.Now().UTC().Format(time.RFC3339Nano), Tables: tables})
	w.Write(hdr)
	w.WriteByte('\n')
	for _, t := range tables {
		rows, err := tx.QueryContext(ctx, "SELECT row_to_json(t)::text FROM "+quoteIdent(t)+" t")
		if err != nil {
			return err
		}
		prefix := fmt.Appendf(nil, `{"table":%q,"row":`, t)
		for rows.Next() {
			var row string
			if err := rows.Scan(&row); err != nil {
				rows.Close()
				return err
			}
			w.Write(prefix)
			w.WriteString(row)
			w.WriteString("}\n")
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	return tx.Commit()
}

// ErrNotEmpty is returned by a restore into a store that holds things or
// relationships.
var ErrNotEmpty = errors.New("the store is not empty: restore needs an empty data directory or an empty PostgreSQL schema")

// Empty reports whether the database holds no things and no
// relationships.
func Empty(ctx context.Context, db *sql.DB) (bool, error) {
	var n int
	if err := db.QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM (SELECT 1 FROM things LIMIT 1) a) + (SELECT COUNT(*) FROM (SELECT 1 FROM relationships LIMIT 1) b)").Scan(&n); err != nil {
		return false, err
	}
	return n == 0, nil
}

// RestorePostgres loads a PostgreSQL export (Backup's .jsonl) into db, a
// migrated PostgreSQL database with no things and no relationships, in
// one transaction. It returns the number of rows restored.
func RestorePostgres(ctx context.Context, db *sql.DB, r io.Reader) (int64, error) {
	br := bufio.NewReaderSize(r, 1<<20)
	line, err := br.ReadBytes('\n')
	if err != nil && len(line) == 0 {
		return 0, fmt.Errorf("read backup header: %w", err)
	}
	var hdr backupHeader
	if json.Unmarshal(line, &hdr) != nil || hdr.Dotdo != "backup" || hdr.Backend != Postgres {
		return 0, errors.New("not a dotdo PostgreSQL backup (the first line is not its header)")
	}
	if hdr.Format != 1 {
		return 0, fmt.Errorf("backup format %d is newer than this dotdo understands", hdr.Format)
	}
	empty, err := Empty(ctx, db)
	if err != nil {
		return 0, err
	}
	if !empty {
		return 0, ErrNotEmpty
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	have, err := pgTables(ctx, tx)
	if err != nil {
		return 0, err
	}
	for _, t := range hdr.Tables {
		if !slices.Contains(have, t) {
			return 0, fmt.Errorf("the backup has table %s, which this database lacks: run a dotdo at least as new as the one that made the backup", t)
		}
		// Rows seeded by migrations (default configuration) give way to
		// the backup's.
		if _, err := tx.ExecContext(ctx, "DELETE FROM "+quoteIdent(t)); err != nil {
			return 0, err
		}
	}
	stmts := map[string]*sql.Stmt{}
	var n int64
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			var rec struct {
				Table string          `json:"table"`
				Row   json.RawMessage `json:"row"`
			}
			if err := json.Unmarshal(line, &rec); err != nil {
				return n, fmt.Errorf("backup line %d: %w", n+2, err)
			}
			st := stmts[rec.Table]
			if st == nil {
				if !slices.Contains(hdr.Tables, rec.Table) {
					return n, fmt.Errorf("backup line %d: table %q is not in the header", n+2, rec.Table)
				}
				q := "INSERT INTO " + quoteIdent(rec.Table) + " SELECT * FROM json_populate_record(NULL::" + quoteIdent(rec.Table) + ", $1::json)"
				if st, err = tx.PrepareContext(ctx, q); err != nil {
					return n, err
				}
				stmts[rec.Table] = st
			}
			if _, err := st.ExecContext(ctx, string(rec.Row)); err != nil {
				return n, fmt.Errorf("restore a row of %s: %w", rec.Table, err)
			}
			n++
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	// Serial columns continue after the restored rows.
	rows, err := tx.QueryContext(ctx, `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'`)
	if err != nil {
		return n, err
	}
	var serials [][2]string
	for rows.Next() {
		var c [2]string
		if err := rows.Scan(&c[0], &c[1]); err != nil {
			rows.Close()
			return n, err
		}
		serials = append(serials, c)
	}
	rows.Close()
	for _, c := range serials {
		q := fmt.Sprintf("SELECT setval(pg_get_serial_sequence('%s', '%s'), COALESCE((SELECT MAX(%s) FROM %s), 0) + 1, false)",
			strings.ReplaceAll(quoteIdent(c[0]), "'", "''"), strings.ReplaceAll(c[1], "'", "''"), quoteIdent(c[1]), quoteIdent(c[0]))
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return n, fmt.Errorf("reset the sequence of %s.%s: %w", c[0], c[1], err)
		}
	}
	return n, tx.Commit()
}

// IsSQLiteBackup reports whether the file at path starts with SQLite's
// header.
func IsSQLiteBackup(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 16)
	if _, err := io.ReadFull(f, b); err != nil {
		return false, nil
	}
	return string(b) == "SQLite format 3\x00", nil
}
