package thingsdb_test

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/testdb"
	"github.com/dotdo/dotdo/internal/thingsdb"
)

// The Backup RPC writes into BackupDir and rotates there; it refuses a
// keep below 1 and a service with no backup directory, writing nothing.
func TestBackupRPC(t *testing.T) {
	for _, be := range testdb.Backends() {
		t.Run(be, func(t *testing.T) {
			svc, err := thingsdb.New(testdb.Open(t, be), slog.New(slog.NewTextHandler(io.Discard, nil)))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { svc.Close() })
			ctx := context.Background()
			backup := func(keep int32) (*dbv1.BackupResponse, error) {
				res, err := svc.Backup(ctx, connect.NewRequest(&dbv1.BackupRequest{Keep: keep}))
				if err != nil {
					return nil, err
				}
				return res.Msg, nil
			}
			if _, err := backup(1); !apierr.Is(err, apierr.PreconditionFailed) {
				t.Errorf("Backup without a directory = %v; want precondition_failed", err)
			}
			svc.BackupDir = filepath.Join(t.TempDir(), "backups")
			if _, err := backup(0); !apierr.Is(err, apierr.Invalid) {
				t.Errorf("Backup keep 0 = %v; want invalid", err)
			}
			if files, _ := filepath.Glob(filepath.Join(svc.BackupDir, "*")); len(files) != 0 {
				t.Fatalf("refused backups left %v", files)
			}
			var paths []string
			for i := 0; i < 3; i++ {
				if i > 0 {
					// Backups are named by the service's clock, in milliseconds.
					now := svc.Now()
					svc.Now = func() time.Time { return now.Add(time.Second) }
				}
				res, err := backup(2)
				if err != nil {
					t.Fatal(err)
				}
				if filepath.Dir(res.Path) != svc.BackupDir || res.Bytes == 0 {
					t.Fatalf("backup %d = %+v; want a non-empty file in %s", i, res, svc.BackupDir)
				}
				if want := int32(max(0, i-1)); res.Removed != want {
					t.Errorf("backup %d removed %d; want %d", i, res.Removed, want)
				}
				paths = append(paths, res.Path)
			}
			left, _ := filepath.Glob(filepath.Join(svc.BackupDir, "dotdo-*"))
			if len(left) != 2 || left[0] != paths[1] || left[1] != paths[2] {
				t.Errorf("backups left = %v; want the newest two of %v", left, paths)
			}
		})
	}
}
