// Command benchload is the yardstick scripts/bench.sh measures dotdo
// against on the same machine in the same run: a bare net/http server
// that answers GET /trivial with a fixed JSON body, and GET
// /v1/things/{ns}/{id} by reading one row from a SQLite database opened
// exactly as dotdo opens its own (internal/sqlite: WAL, the same pragmas,
// the same schema) with a prepared statement, written as JSON by hand. It
// has no gateway, no authentication, no service binding and no access
// log: what dotdo's GET costs above it is what those add.
//
//	go run ./scripts/benchload -addr 127.0.0.1:8790 -dir /tmp/x -things 10000
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/dotdo/dotdo/internal/sqlite"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8790", "address to listen on")
	dir := flag.String("dir", "", "directory for the SQLite file (required)")
	things := flag.Int("things", 10000, "things to load, ids u00000...")
	flag.Parse()
	if *dir == "" {
		log.Fatal("benchload: -dir is required")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *dir, *things); err != nil {
		log.Fatal("benchload: ", err)
	}
}

func run(ctx context.Context, addr, dir string, things int) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	db, err := sqlite.Open(filepath.Join(dir, "benchload.db"))
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return err
	}
	if err := load(ctx, db.Write, things); err != nil {
		return err
	}
	get, err := db.Read.Prepare(`SELECT ns, id, type, data, version, created_at, updated_at FROM things
WHERE ns = ? AND id = ? AND (expires_at IS NULL OR expires_at > ?)`)
	if err != nil {
		return err
	}
	defer get.Close()

	trivial := []byte(`{"ns":"bench","id":"u00042","type":"User","data":{"active":true,"age":60,"email":"user42@example.com","name":"user 42"},"version":1,"createdAt":"2026-01-02T15:04:05.123456Z","updatedAt":"2026-01-02T15:04:05.123456Z"}`)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /trivial", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(trivial)
	})
	mux.HandleFunc("GET /v1/things/{ns}/{id}", func(w http.ResponseWriter, r *http.Request) {
		var (
			ns, id, typ, data    string
			version, created, up int64
		)
		err := get.QueryRowContext(r.Context(), r.PathValue("ns"), r.PathValue("id"), time.Now().UnixMicro()).
			Scan(&ns, &id, &typ, &data, &version, &created, &up)
		if err == sql.ErrNoRows {
			http.Error(w, `{"error":{"code":"not_found"}}`, http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, `{"error":{"code":"internal"}}`, http.StatusInternalServerError)
			return
		}
		b := make([]byte, 0, 256+len(data))
		b = append(b, `{"ns":`...)
		b = strconv.AppendQuote(b, ns)
		b = append(b, `,"id":`...)
		b = strconv.AppendQuote(b, id)
		b = append(b, `,"type":`...)
		b = strconv.AppendQuote(b, typ)
		b = append(b, `,"data":`...)
		b = append(b, data...)
		b = append(b, `,"version":`...)
		b = strconv.AppendInt(b, version, 10)
		b = append(b, `,"createdAt":"`...)
		b = time.UnixMicro(created).UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `","updatedAt":"`...)
		b = time.UnixMicro(up).UTC().AppendFormat(b, time.RFC3339Nano)
		b = append(b, `"}`...)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("ETag", `"`+strconv.FormatInt(version, 10)+`"`)
		w.Write(b)
	})
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// load writes the things the bench scripts read, as dotdo's batch route
// would store them.
func load(ctx context.Context, db *sql.DB, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	st, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO things (ns, id, type, data, version, created_at, updated_at)
VALUES ('bench', ?, 'User', ?, 1, ?, ?)`)
	if err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	for i := range n {
		data := fmt.Sprintf(`{"active":true,"age":%d,"email":"user%d@example.com","name":"user %d"}`, 18+i%60, i, i)
		if _, err := st.ExecContext(ctx, fmt.Sprintf("u%05d", i), data, now, now); err != nil {
			return err
		}
	}
	return tx.Commit()
}
