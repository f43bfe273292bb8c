package thingsdb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/sqlite"
)

// The fuzz tests below check the parsers that stand between a client's
// bytes and the database. Seeds live in testdata/fuzz/<FuzzName>/ and in
// the f.Add calls; run one for a minute with
//
//	go test -run='^$' -fuzz=FuzzParseWhere -fuzztime=60s -fuzzminimizetime=5s ./internal/thingsdb/
//
// (With the default minimize time of 60s, minimizing a large new input can
// stall both workers for most of a one-minute run.)

// FuzzParseWhere checks that any where document either fails to parse or
// compiles, on both dialects, to SQL built only from dotdo's own fragments:
// user values travel as arguments, one per placeholder, and the SQL runs on
// a real SQLite database.
func FuzzParseWhere(f *testing.F) {
	for _, s := range []string{
		``,
		`{}`,
		`{"status":"active"}`,
		`{"price":{"gte":10,"lt":20}}`,
		`{"tags":{"contains":"x"}}`,
		`{"a.b.c":{"exists":false}}`,
		`{"n":{"in":[1,"two",true,null]}}`,
		`{"s":{"ne":null},"t":{"eq":false}}`,
		`{"x":"' OR 1=1 --"}`,
		`{"x":{"contains":"?"}}`,
		`{"x":{"lt":"\"C\""}}`,
		`{"a'b":1}`,
		`{"a":{"regex":"x"}}`,
		`{"a":{"in":"x"}}`,
		`{"a":{"lt":true}}`,
		`{"a":1e400}`,
		`{"a":1e-400}`,
		`{"a":"\u0000"}`,
		`{"a":1,"a":{"gt":2}}`,
		`{"NULL":1,"0":{"exists":true}}`,
		`[1]`,
		`{"a":{}}`,
		`{"a..b":1}`,
		`{"a":1} x`,
	} {
		f.Add(s)
	}
	db := fuzzSQLite(f)
	f.Fuzz(func(t *testing.T, s string) {
		conds, err := parseWhere(s)
		if err != nil {
			if conds != nil {
				t.Fatalf("parseWhere(%q) = %v, %v; want no conditions with an error", s, conds, err)
			}
			return
		}
		if len(conds) > maxConditions {
			t.Fatalf("parseWhere(%q) gave %d conditions; the limit is %d", s, len(conds), maxConditions)
		}
		for _, c := range conds {
			checkCondition(t, s, c)
		}
		for _, name := range []string{SQLite, Postgres} {
			d := dialect{name: name}
			var sb strings.Builder
			args := compile(&d, conds, &sb, nil)
			checkCompiled(t, s, name, sb.String(), args, conds)
		}
		if db != nil {
			d := dialect{name: SQLite}
			var sb strings.Builder
			sb.WriteString("SELECT t.id FROM things t WHERE t.ns = ?")
			args := compile(&d, conds, &sb, []any{"fuzz"})
			rows, err := db.Query(sb.String(), args...)
			if err != nil {
				t.Fatalf("parseWhere(%q): SQLite refused the compiled SQL %q: %v", s, sb.String(), err)
			}
			for rows.Next() {
			}
			if err := rows.Err(); err != nil {
				t.Fatalf("parseWhere(%q): SQLite failed running %q: %v", s, sb.String(), err)
			}
			rows.Close()
		}
	})
}

// fuzzSQLite opens a SQLite database with a few things of varied data, for
// running compiled where clauses.
func fuzzSQLite(f *testing.F) *sql.DB {
	f.Helper()
	db, err := sqlite.Open(filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatalf("open sqlite: %v", err)
	}
	f.Cleanup(func() { db.Close() })
	if _, err := db.Migrate(context.Background()); err != nil {
		f.Fatalf("migrate sqlite: %v", err)
	}
	for i, data := range []string{
		`{}`,
		`{"a":1,"b":"x","c":true,"d":null,"e":[1,"x",false,null],"f":{"g":{"h":2.5}}}`,
		`{"a":"1","b":2,"c":[{"x":1}],"NULL":3,"0":"zero"}`,
		`{"a":[[1]],"b":{"c":"?"},"status":"active","price":15,"tags":["x","y"]}`,
	} {
		_, err := db.Write.Exec(`INSERT INTO things (ns, id, type, data, version, created_at, updated_at) VALUES ('fuzz', ?, 'thing', ?, 1, 1, 1)`,
			strconv.Itoa(i), data)
		if err != nil {
			f.Fatalf("insert: %v", err)
		}
	}
	return db.Read
}

func checkCondition(t *testing.T, s string, c condition) {
	t.Helper()
	p, err := parsePath(strings.Join(c.path, "."))
	if err != nil || !slices.Equal(p, c.path) {
		t.Fatalf("parseWhere(%q) gave path %q, which does not parse back: %v", s, c.path, err)
	}
	if !slices.Contains(operators, c.op) {
		t.Fatalf("parseWhere(%q) gave unknown operator %q", s, c.op)
	}
	vals := []value{c.val}
	switch c.op {
	case "in":
		if len(c.vals) == 0 || len(c.vals) > maxInValues {
			t.Fatalf("parseWhere(%q): in has %d values; want 1-%d", s, len(c.vals), maxInValues)
		}
		vals = c.vals
	case "lt", "lte", "gt", "gte":
		if c.val.kind != kindString && c.val.kind != kindNumber {
			t.Fatalf("parseWhere(%q): %s has an operand of kind %d; want a string or a number", s, c.op, c.val.kind)
		}
	case "exists":
		vals = nil
	}
	for _, v := range vals {
		switch v.kind {
		case kindString:
			if !utf8.ValidString(v.str) || strings.IndexByte(v.str, 0) >= 0 {
				t.Fatalf("parseWhere(%q) gave string operand %q: want valid UTF-8 without NUL", s, v.str)
			}
		case kindNumber:
			if math.IsNaN(v.num) || math.IsInf(v.num, 0) {
				t.Fatalf("parseWhere(%q) gave number operand %v; want a finite number", s, v.num)
			}
		}
	}
}

// sqlWords are the only words compiled where SQL may contain outside
// quotes: anything else would be text that came from the client.
var sqlWords = map[string]bool{
	"AND": true, "OR": true, "NOT": true, "COALESCE": true, "CASE": true, "WHEN": true, "THEN": true,
	"END": true, "FALSE": true, "IS": true, "NULL": true, "IN": true, "EXISTS": true, "SELECT": true,
	"FROM": true, "WHERE": true, "COLLATE": true, "t": true, "data": true, "je": true, "type": true,
	"value": true, "json_type": true, "json_typeof": true, "json_extract": true, "json_each": true, "jsonb_typeof": true,
	"strpos": true, "instr": true, "CAST": true, "AS": true, "REAL": true, "float8": true, "jsonb": true, "0": true, "1": true,
}

// sqlLiterals are the only constant string literals compiled SQL may hold,
// besides data paths.
var sqlLiterals = map[string]bool{
	"text": true, "integer": true, "real": true, "true": true, "false": true, "null": true,
	"array": true, "number": true, "string": true, "boolean": true, "object": true,
}

// checkCompiled lexes compiled SQL and checks every token against what the
// dialect writes: known words and literals, data paths of the parsed
// conditions, and exactly len(args) placeholders.
func checkCompiled(t *testing.T, where, name, q string, args []any, conds []condition) {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("parseWhere(%q) compiled for %s to %q with args %v: %s", where, name, q, args, fmt.Sprintf(format, a...))
	}
	paths := map[string]bool{}
	for _, c := range conds {
		if name == Postgres {
			for _, seg := range c.path { // t.data -> 'a' ->> 'b'
				paths[seg] = true
			}
		} else {
			paths[`$."`+strings.Join(c.path, `"."`)+`"`] = true
		}
	}
	placeholders := 0
	for i := 0; i < len(q); {
		c := q[i]
		switch {
		case c == '\'':
			j := strings.IndexByte(q[i+1:], '\'')
			if j < 0 {
				fail("unterminated string literal at %d", i)
			}
			lit := q[i+1 : i+1+j]
			if !sqlLiterals[lit] && !paths[lit] {
				fail("unexpected string literal %q", lit)
			}
			i += j + 2
		case c == '"':
			j := strings.IndexByte(q[i+1:], '"')
			if j < 0 || q[i+1:i+1+j] != "C" {
				fail("unexpected quoted identifier at %d", i)
			}
			i += j + 2
		case c == '?':
			placeholders++
			i++
		case c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9':
			j := i
			for j < len(q) && (q[j] == '_' || q[j] >= 'a' && q[j] <= 'z' || q[j] >= 'A' && q[j] <= 'Z' || q[j] >= '0' && q[j] <= '9') {
				j++
			}
			if !sqlWords[q[i:j]] {
				fail("unexpected word %q", q[i:j])
			}
			i = j
		case strings.IndexByte(" ()=<>,.:#@-", c) >= 0:
			i++
		default:
			fail("unexpected character %q at %d", c, i)
		}
	}
	if placeholders != len(args) {
		fail("%d placeholders for %d args", placeholders, len(args))
	}
	// Every string operand travels as an argument: as itself, or on
	// PostgreSQL as the one-element JSON array of array containment.
	var want []string
	for _, c := range conds {
		vals := []value{c.val}
		switch c.op {
		case "in":
			vals = c.vals
		case "exists":
			vals = nil
		}
		for _, v := range vals {
			if v.kind == kindString {
				want = append(want, v.str)
			}
		}
	}
	for _, w := range want {
		found := false
		for _, a := range args {
			if s, ok := a.(string); ok && (s == w || name == Postgres && strings.HasPrefix(s, "[") && jsonArrayOf(s, w)) {
				found = true
				break
			}
		}
		if !found {
			fail("string operand %q is not among the args", w)
		}
	}
	for _, a := range args {
		switch x := a.(type) {
		case string:
		case float64:
			if math.IsNaN(x) || math.IsInf(x, 0) {
				fail("non-finite number arg %v", x)
			}
		default:
			fail("arg %v has type %T; want string or float64", a, a)
		}
	}
}

func jsonArrayOf(s, want string) bool {
	var v []string
	return json.Unmarshal([]byte(s), &v) == nil && len(v) == 1 && v[0] == want
}

// FuzzDecodeCursor checks that decodeCursor never panics, that anything it
// accepts is a cursor List can use, and that encode and decodeCursor round
// trip.
func FuzzDecodeCursor(f *testing.F) {
	f.Add("", "createdAt", int64(0), 0, 0.0, "", "id")
	f.Add(cursor{Order: "createdAt", Time: 1700000000000000, ID: "0190a0b1-aaaa"}.encode(), "createdAt", int64(1700000000000000), 0, 0.0, "", "0190a0b1-aaaa")
	f.Add(cursor{Order: "-data.price", Rank: rankString, Str: "héllo", ID: "x"}.encode(), "-data.price", int64(0), rankString, 0.0, "héllo", "x")
	f.Add(cursor{Order: "related:in", Str: "memberOf", ID: "team-1"}.encode(), "related:out", int64(-5), rankOther, -1.5e300, "memberOf", "team-1")
	f.Add("eyJvIjoiY3JlYXRlZEF0IiwiaSI6IngifX0", "createdAt", int64(1), 1, 1.0, "\x00", "y") // {"o":"createdAt","i":"x"}}
	f.Add("!!!", "createdAt", int64(0), 4, math.Inf(1), "", "")
	f.Add("eyJvIjoiY3JlYXRlZEF0IiwiaSI6IngiLCJyIjo5fQ", "createdAt", int64(0), -1, 0.0, "s", "id") // rank 9
	f.Fuzz(func(t *testing.T, s, order string, tm int64, rank int, num float64, str, id string) {
		c, err := decodeCursor(s, order)
		if err == nil {
			if c.Order != order || c.ID == "" || len(c.ID) > MaxIDLen || c.Rank < rankNumber || c.Rank > rankOther ||
				math.IsNaN(c.Num) || math.IsInf(c.Num, 0) {
				t.Fatalf("decodeCursor(%q, %q) = %+v, nil; want an error for an invalid cursor", s, order, c)
			}
			if back, err := decodeCursor(c.encode(), order); err != nil || back != c {
				t.Fatalf("decodeCursor(%q, %q) = %+v, which re-encodes to a cursor that decodes to %+v, %v", s, order, c, back, err)
			}
		}

		// A cursor List or Related could make: an order that parsed, an
		// item ID, sort keys read from the database.
		made := cursor{Order: order, Time: tm, Rank: rank, Num: num, Str: str, ID: id}
		if id == "" || len(id) > MaxIDLen || !utf8.ValidString(id) || !utf8.ValidString(str) || !utf8.ValidString(order) ||
			len(str) > 512 || rank < rankNumber || rank > rankOther || math.IsNaN(num) || math.IsInf(num, 0) {
			return
		}
		enc := made.encode()
		got, err := decodeCursor(enc, order)
		if err != nil || got != made {
			t.Fatalf("decodeCursor(%q, %q) = %+v, %v; want %+v", enc, order, got, err, made)
		}
		if order != "x"+order {
			if _, err := decodeCursor(enc, "x"+order); err == nil {
				t.Fatalf("decodeCursor(%q, %q) accepted a cursor made for order %q", enc, "x"+order, order)
			}
		}
	})
}

// FuzzMergePatch checks applyMergePatch against a direct reading of RFC
// 7396 and checks that applying a patch twice changes nothing more.
func FuzzMergePatch(f *testing.F) {
	f.Add(`{"a":1,"b":{"c":2}}`, "hello", int64(0), `{"data":{"a":null,"b":{"d":3}}}`)
	f.Add(`{"a":1}`, "", int64(1700000000000000), `{"data":null,"content":null,"expiresAt":null}`)
	f.Add(`{}`, "", int64(0), `{"type":"task","content":"x","expiresAt":"2030-01-02T03:04:05.123456789+02:00"}`)
	f.Add(`{"a":[1,2]}`, "", int64(0), `{"data":{"a":[null,{"x":null}]}}`)
	f.Add(`{"n":1.50,"e":1E5}`, "", int64(0), `{"data":{"m":-0}}`)
	f.Add(`{"a":1}`, "", int64(0), `{"data":{"a":1},"data":null}`)
	f.Add(`{"a":1}`, "", int64(0), `{"data":[1]}`)
	f.Add(`{"a":1}`, "", int64(0), `{"version":2}`)
	f.Add(`{"a":1}`, "", int64(0), `{"type":null}`)
	f.Add(`{"a":1}`, "", int64(0), `{"expiresAt":"tomorrow"}`)
	f.Add(`{"a":1}`, "", int64(0), `{"data":{"a":"\u0000"}}`)
	f.Add(`{"a":1}`, "", int64(0), `{} {}`)
	f.Add(`{"a":1}`, "", int64(0), `null`)
	f.Fuzz(func(t *testing.T, curData, content string, expires int64, patch string) {
		data, err := normalizeData("data", []byte(curData))
		if err != nil {
			data = emptyObject
		}
		if !utf8.ValidString(content) || strings.IndexByte(content, 0) >= 0 {
			content = ""
		}
		// Stored times lie between 1970 and 9999, as REST writes them.
		if expires < 0 || expires > maxTime {
			expires = 0
		}
		cur := &dbv1.Thing{Ns: "ns", Id: "id", Type: "note", Data: data, Content: content, ExpiresAt: expires, Version: 3}
		w, err := applyMergePatch(cur, []byte(patch))
		if err != nil {
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != apierr.Invalid && ae.Code != apierr.TooLarge {
				t.Fatalf("applyMergePatch(%s, %q) = %v; want an *apierr.Error with code invalid or too_large", data, patch, err)
			}
			return
		}
		want := refPatch(t, cur, patch)
		got := patchResult{typ: w.Type, content: w.Content, expires: w.ExpiresAt}
		got.data, got.dataErr = normalizeData("data", w.Data)
		if !want.equal(got) && (strictArrays || !pruneInArrays(want).equal(pruneInArrays(got))) {
			t.Fatalf("applyMergePatch(%s, %q) = %s; RFC 7396 gives %s", data, patch, got, want)
		}
		if got.dataErr != nil || w.ExpiresAt < 0 || w.ExpiresAt > maxTime {
			return // prepareWrite refuses the write
		}
		again := &dbv1.Thing{Ns: "ns", Id: "id", Type: w.Type, Data: got.data, Content: w.Content, ExpiresAt: w.ExpiresAt, Version: 4}
		w2, err := applyMergePatch(again, []byte(patch))
		if err != nil {
			t.Fatalf("applyMergePatch(%s, %q) succeeded once but failed the second time: %v", data, patch, err)
		}
		got2 := patchResult{typ: w2.Type, content: w2.Content, expires: w2.ExpiresAt}
		got2.data, got2.dataErr = normalizeData("data", w2.Data)
		if !got.equal(got2) && (strictArrays || !pruneInArrays(got).equal(pruneInArrays(got2))) {
			t.Fatalf("applyMergePatch(%s, %q) = %s, but applied twice = %s", data, patch, got, got2)
		}
	})
}

// strictArrays makes FuzzMergePatch hold applyMergePatch to RFC 7396 for
// arrays too. It is off because github.com/evanphx/json-patch/v5 removes
// null members from objects inside a patch's arrays, unless the target
// value at that key is an object:
//
//	{"data":{"a":1}}     + {"data":{"a":[{"x":null}]}} = {"data":{"a":[{}]}}
//	{"data":{"a":{}}}    + {"data":{"a":[{"x":null}]}} = {"data":{"a":[{"x":null}]}}
//
// where RFC 7396 gives [{"x":null}] in both cases (an array replaces the
// target whole), and the second case is not idempotent. With it off, the
// test compares results with such nulls removed on both sides, so it still
// catches every other departure from the RFC.
const strictArrays = true

// pruneInArrays returns r with null members removed from every object
// that lies inside an array of its data.
func pruneInArrays(r patchResult) patchResult {
	if r.dataErr != nil {
		return r
	}
	v, err := decodeJSON(r.data)
	if err != nil {
		return r
	}
	r.data, _ = encodeJSON(pruneNullsBelow(v, false))
	return r
}

func pruneNullsBelow(v any, inArray bool) any {
	switch x := v.(type) {
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = pruneNullsBelow(e, true)
		}
		return out
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if e == nil && inArray {
				continue
			}
			out[k] = pruneNullsBelow(e, inArray)
		}
		return out
	}
	return v
}

type patchResult struct {
	typ, content string
	data         []byte
	dataErr      error
	expires      int64
}

func (r patchResult) equal(o patchResult) bool {
	return r.typ == o.typ && r.content == o.content && r.expires == o.expires &&
		bytes.Equal(r.data, o.data) && (r.dataErr == nil) == (o.dataErr == nil)
}

func (r patchResult) String() string {
	return fmt.Sprintf("{type:%q data:%s (err %v) content:%q expires:%d}", r.typ, r.data, r.dataErr, r.content, r.expires)
}

// refPatch applies patch to cur's patchable fields by RFC 7396's
// pseudo-code, on values decoded with numbers kept as written.
func refPatch(t *testing.T, cur *dbv1.Thing, patch string) patchResult {
	t.Helper()
	pv, err := decodeJSON([]byte(patch))
	if err != nil {
		t.Fatalf("applyMergePatch accepted %q, which does not decode: %v", patch, err)
	}
	curData, err := decodeJSON(cur.Data)
	if err != nil {
		t.Fatalf("stored data %s does not decode: %v", cur.Data, err)
	}
	doc := map[string]any{"type": cur.Type, "data": curData}
	if cur.Content != "" {
		doc["content"] = cur.Content
	}
	if cur.ExpiresAt != 0 {
		doc["expiresAt"] = time.UnixMicro(cur.ExpiresAt).UTC().Format(time.RFC3339Nano)
	}
	m, ok := rfcMergePatch(doc, pv).(map[string]any)
	if !ok {
		t.Fatalf("applyMergePatch accepted %q, which is not an object", patch)
	}
	var r patchResult
	r.typ, _ = m["type"].(string)
	r.content, _ = m["content"].(string)
	// applyMergePatch reads "expiresAt":"" as null (REST PUT refuses it);
	// the report on the fuzz run describes the difference.
	if s, ok := m["expiresAt"].(string); ok && s != "" {
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatalf("applyMergePatch accepted expiresAt %q, which is not RFC 3339", s)
		}
		r.expires = tm.UnixMicro()
	}
	var raw []byte
	if d, ok := m["data"]; ok && d != nil {
		raw, err = encodeJSON(d)
		if err != nil {
			t.Fatalf("encode merged data: %v", err)
		}
	}
	r.data, r.dataErr = normalizeData("data", raw)
	return r
}

// rfcMergePatch is MergePatch(Target, Patch) from RFC 7396, section 2.
func rfcMergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	out := map[string]any{}
	if ok {
		for k, v := range t {
			out[k] = v
		}
	}
	for k, v := range p {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = rfcMergePatch(out[k], v)
		}
	}
	return out
}

// FuzzNormalizeData checks that normalizeData accepts only JSON objects,
// keeps their meaning, and is idempotent.
func FuzzNormalizeData(f *testing.F) {
	for _, s := range []string{
		``, `  `, `{}`, `null`, `[]`, `"x"`, `1`,
		`{"b":1,"a":{"d":[1,2,{"z":null}],"c":"x"}}`,
		`{"a":1,"a":2}`,
		`{"n":1.50,"e":1E5,"m":-0,"big":123456789012345678901234567890}`,
		`{"n":1e400}`, `{"n":1e-400}`, `{"n":-2.4e-324}`, `{"n":5e-324}`,
		`{"s":"<&>\u2028\u2029\ud800"}`,
		`{"s":"\u0000"}`, `{"\u0000":1}`,
		"{\"s\":\"\xff\"}",
		`{"a":1} {"b":2}`, `{"a":1}]`,
		`{"a":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, err := normalizeData("data", raw)
		if err != nil {
			var ae *apierr.Error
			if !errors.As(err, &ae) || ae.Code != apierr.Invalid && ae.Code != apierr.TooLarge {
				t.Fatalf("normalizeData(%q) = %v; want an *apierr.Error with code invalid or too_large", raw, err)
			}
			return
		}
		if len(out) > MaxDataBytes || !json.Valid(out) || !utf8.Valid(out) || bytes.IndexByte(out, 0) >= 0 {
			t.Fatalf("normalizeData(%q) = %q: want valid JSON of at most %d bytes", raw, out, MaxDataBytes)
		}
		v, err := decodeJSON(out)
		if err != nil {
			t.Fatalf("normalizeData(%q) = %q, which does not decode: %v", raw, out, err)
		}
		if _, ok := v.(map[string]any); !ok {
			t.Fatalf("normalizeData(%q) = %q; want a JSON object", raw, out)
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			in, err := decodeJSON(raw)
			if err != nil {
				t.Fatalf("normalizeData(%q) accepted input that does not decode: %v", raw, err)
			}
			if !reflect.DeepEqual(in, v) {
				t.Fatalf("normalizeData(%q) = %q, which means something else", raw, out)
			}
		}
		again, err := normalizeData("data", out)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("normalizeData(%q) = %q, %v; want it unchanged", out, again, err)
		}
	})
}
