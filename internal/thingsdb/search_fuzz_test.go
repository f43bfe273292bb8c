package thingsdb

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dotdo/dotdo/internal/sqlite"
)

// FuzzParseQuery checks the full-text query parser: it never panics, a
// query it accepts renders to an FTS5 MATCH expression SQLite accepts,
// and its websearch rendering parses back to the same query. Seeds are in
// testdata/fuzz/FuzzParseQuery/; run longer with
//
//	go test -run='^$' -fuzz=FuzzParseQuery -fuzztime=60s ./internal/thingsdb/
func FuzzParseQuery(f *testing.F) {
	for _, s := range []string{
		"quick brown fox", `"brown fox" OR dog -cat`, `-"lazy dog" quick`, "a OR OR b", `""`, `"unterminated phrase`,
		"OR", "-", "--x", `x -"" y`, "naïve café", "日本語 テキスト", "NEAR(a b)", "a* b^ c:d {x}", `a"b"c`, "x or -y",
		"AND NOT OR", "\x00\xff", strings.Repeat("w ", 40),
	} {
		f.Add(s)
	}
	db, err := sqlite.Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Migrate(context.Background()); err != nil {
		f.Fatal(err)
	}
	if _, err := db.Write.Exec(`INSERT INTO things (ns, id, type, data, content, version, created_at, updated_at) VALUES ('n', 'a', 'T', '{}', 'brown fox dog', 1, 1, 1)`); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q, err := parseQuery(s)
		if err != nil {
			return
		}
		if len(q.groups) == 0 {
			t.Fatalf("%q: accepted with no group", s)
		}
		match := `tags : "` + nsTag("n") + `" AND {content fields} : (` + q.fts5() + ")"
		rows, err := db.Read.Query("SELECT rowid FROM things_fts WHERE things_fts MATCH ?", match)
		if err != nil {
			t.Fatalf("%q: FTS5 refused %q: %v", s, match, err)
		}
		for rows.Next() {
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("%q: FTS5 refused %q: %v", s, match, err)
		}
		rows.Close()
		back, err := parseQuery(q.websearch())
		if err != nil || back.String() != q.String() {
			t.Fatalf("%q: websearch form %q parses to %q, %v", s, q.websearch(), back.String(), err)
		}
	})
}

func TestParseQueryForms(t *testing.T) {
	for in, want := range map[string]string{
		"quick brown":             `(("quick" AND "brown"))`,
		`"brown fox" OR dog -cat`: `(("brown fox")) OR (("dog") NOT "cat")`,
		"a.b-c":                   `(("a b c"))`,
		`x or "or"`:               `(("x")) OR (("or"))`,
		`-"lazy dog" quick`:       `(("quick") NOT "lazy dog")`,
	} {
		q, err := parseQuery(in)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if got := q.fts5(); got != want {
			t.Errorf("%q -> %s; want %s", in, got, want)
		}
	}
}
