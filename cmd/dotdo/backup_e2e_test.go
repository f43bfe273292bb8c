package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/thingsdb"
)

// TestBackupSplitE2E runs backup-database from a schedule service in
// another process than the db service: the schedule asks the db process
// over its Backup RPC, and the backup lands in the db process's data
// directory, rotated there.
func TestBackupSplitE2E(t *testing.T) {
	b := newBackend(t, thingsdb.SQLite)
	db := startDB(t, b)
	gw := startProc(t, "gateway+schedule", []string{"--services", "gateway,auth,schedule,queue", "--db-url", db.url,
		"--data-dir", t.TempDir(), "--schedule-backups", "2"}, []string{"DOTDO_INTERNAL_TOKEN=" + internalToken})
	if r := do(t, "PUT", gw.url+"/v1/things/acme/note-1", `{"type":"Note","data":{"n":1}}`); r.status != 201 {
		t.Fatalf("PUT thing = %d %s", r.status, r.body)
	}
	var files []string
	for i := 0; i < 3; i++ {
		run := runNow(t, gw.url, "_schedule", "backup-database")
		if run["status"] != "succeeded" {
			t.Fatalf("backup-database from the schedule process = %v", run)
		}
		out := run["output"].(string)
		file := strings.Fields(strings.TrimPrefix(out, "wrote "))[0]
		if filepath.Dir(file) != filepath.Join(b.dataDir, "backups") {
			t.Fatalf("backup written to %s; want the db process's %s", file, filepath.Join(b.dataDir, "backups"))
		}
		if ok, err := thingsdb.IsSQLiteBackup(file); !ok || err != nil {
			t.Fatalf("%s is not a SQLite backup (%v)", file, err)
		}
		if i == 2 && !strings.HasSuffix(out, "removed 1 old backups") {
			t.Errorf("third run with --schedule-backups 2 = %q; want one old backup removed", out)
		}
		files = append(files, file)
	}
	left, _ := filepath.Glob(filepath.Join(b.dataDir, "backups", "dotdo-*.db"))
	if len(left) != 2 || left[0] != files[1] || left[1] != files[2] {
		t.Errorf("backups left = %v; want the newest two of %v", left, files)
	}
}
