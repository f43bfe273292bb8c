package thingsdb

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/dotdo/dotdo/internal/postgres"
)

// Backend names.
const (
	SQLite   = "sqlite"
	Postgres = "postgres"
)

// dialect holds the SQL that differs between SQLite and PostgreSQL: JSON
// access and placeholders. Everything else is shared, so both backends run
// the same statements and pass the same tests.
type dialect struct {
	name string
}

// rank of a data value in data-path orders: numbers, then strings, then
// booleans, then everything else (missing, null, arrays, objects).
const (
	rankNumber = 0
	rankString = 1
	rankBool   = 2
	rankOther  = 3
)

// rebind turns ? placeholders into $1, $2... for PostgreSQL.
func (d *dialect) rebind(q string) string {
	if d.name != Postgres {
		return q
	}
	return postgres.Rebind(q)
}

// value is the JSON value at a validated data path (SQL NULL when
// missing). On PostgreSQL it is a chain of -> with text keys, so a segment
// of digits is an object key there too, as on SQLite, never an array index.
func (d *dialect) value(p []string) string {
	if d.name == Postgres {
		return "(t.data -> '" + strings.Join(p, "' -> '") + "')"
	}
	return `'$."` + strings.Join(p, `"."`) + `"'`
}

// text is the value at p as SQL text (PostgreSQL only).
func (d *dialect) text(p []string) string {
	if len(p) == 1 {
		return "(t.data ->> '" + p[0] + "')"
	}
	return "(t.data -> '" + strings.Join(p[:len(p)-1], "' -> '") + "' ->> '" + p[len(p)-1] + "')"
}

// typeIs returns SQL true when the value at p has one of the JSON kinds
// string, number, boolean, true, false, null or array, and NULL when p is
// missing.
func (d *dialect) typeIs(p []string, kind string) string {
	if d.name == Postgres {
		t := "json_typeof" + d.value(p)
		switch kind {
		case "true", "false":
			return "(" + t + " = 'boolean' AND " + d.text(p) + " = '" + kind + "')"
		}
		return t + " = '" + kind + "'"
	}
	t := "json_type(t.data, " + d.value(p) + ")"
	switch kind {
	case "string":
		return t + " = 'text'"
	case "number":
		return t + " IN ('integer','real')"
	case "boolean":
		return t + " IN ('true','false')"
	}
	return t + " = '" + kind + "'"
}

// num is the value at p when it is a number, else NULL.
func (d *dialect) num(p []string) string {
	if d.name == Postgres {
		return "(CASE WHEN " + d.typeIs(p, "number") + " THEN " + d.text(p) + "::float8 END)"
	}
	// REAL on both sides, as PostgreSQL's float8: SQLite would otherwise
	// compare a large stored integer exactly against the float64 argument.
	return "(CASE WHEN " + d.typeIs(p, "number") + " THEN CAST(json_extract(t.data, " + d.value(p) + ") AS REAL) END)"
}

// str is the value at p when it is a string, else NULL; it compares
// byte-wise on both backends.
func (d *dialect) str(p []string) string {
	if d.name == Postgres {
		return `(CASE WHEN ` + d.typeIs(p, "string") + ` THEN ` + d.text(p) + ` END) COLLATE "C"`
	}
	return "(CASE WHEN " + d.typeIs(p, "string") + " THEN json_extract(t.data, " + d.value(p) + ") END)"
}

// orderKeys returns the rank, number and string sort keys of a data path.
func (d *dialect) orderKeys(p []string) (rank, num, str string) {
	rank = "(CASE WHEN " + d.typeIs(p, "number") + " THEN 0 WHEN " + d.typeIs(p, "string") +
		" THEN 1 WHEN " + d.typeIs(p, "boolean") + " THEN 2 ELSE 3 END)"
	num = "(CASE WHEN " + d.typeIs(p, "number") + " THEN " + d.num(p) + " WHEN " + d.typeIs(p, "true") + " THEN 1 ELSE 0 END)"
	str = "COALESCE(" + d.str(p) + ", '')"
	if d.name == Postgres {
		str += ` COLLATE "C"`
	}
	return rank, num, str
}

func (d *dialect) eq(sb *strings.Builder, p []string, v value, args []any) []any {
	switch v.kind {
	case kindString:
		sb.WriteString(d.str(p) + " = ?")
		return append(args, v.str)
	case kindNumber:
		sb.WriteString(d.num(p) + " = ?")
		return append(args, v.num)
	case kindBool:
		sb.WriteString(d.typeIs(p, strconv.FormatBool(v.b)))
	default:
		sb.WriteString(d.typeIs(p, "null"))
	}
	return args
}

func (d *dialect) arrayContains(sb *strings.Builder, p []string, v value, args []any) []any {
	if d.name == Postgres {
		elem, _ := json.Marshal([]any{v.json()})
		sb.WriteString("COALESCE(" + d.typeIs(p, "array") + " AND " + d.value(p) + "::jsonb @> ?::jsonb, FALSE)")
		return append(args, string(elem))
	}
	sb.WriteString("EXISTS (SELECT 1 FROM json_each(t.data, " + d.value(p) + ") je WHERE " + d.typeIs(p, "array") + " AND ")
	switch v.kind {
	case kindString:
		sb.WriteString("je.type = 'text' AND je.value = ?)")
		return append(args, v.str)
	case kindNumber:
		sb.WriteString("je.type IN ('integer','real') AND je.value = ?)")
		return append(args, v.num)
	case kindBool:
		sb.WriteString("je.type = '" + strconv.FormatBool(v.b) + "')")
	default:
		sb.WriteString("je.type = 'null')")
	}
	return args
}

func (v value) json() any {
	switch v.kind {
	case kindString:
		return v.str
	case kindNumber:
		return v.num
	case kindBool:
		return v.b
	}
	return nil
}

var cmpOps = map[string]string{"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}

// condition writes one where condition. Every branch is NULL-safe: a
// missing field or a field of another type never matches, except for ne
// and exists:false, which match it.
func (d *dialect) condition(sb *strings.Builder, c condition, args []any) []any {
	switch c.op {
	case "eq":
		sb.WriteString("COALESCE(")
		args = d.eq(sb, c.path, c.val, args)
		sb.WriteString(", FALSE)")
	case "ne":
		sb.WriteString("NOT COALESCE(")
		args = d.eq(sb, c.path, c.val, args)
		sb.WriteString(", FALSE)")
	case "lt", "lte", "gt", "gte":
		if c.val.kind == kindNumber {
			sb.WriteString("COALESCE(" + d.num(c.path) + " " + cmpOps[c.op] + " ?, FALSE)")
			return append(args, c.val.num)
		}
		sb.WriteString("COALESCE(" + d.str(c.path) + " " + cmpOps[c.op] + " ?, FALSE)")
		return append(args, c.val.str)
	case "in":
		sb.WriteString("COALESCE((")
		for i, v := range c.vals {
			if i > 0 {
				sb.WriteString(" OR ")
			}
			sb.WriteString("COALESCE(")
			args = d.eq(sb, c.path, v, args)
			sb.WriteString(", FALSE)")
		}
		sb.WriteString("), FALSE)")
	case "contains":
		sb.WriteString("(")
		if c.val.kind == kindString {
			if d.name == Postgres {
				sb.WriteString("COALESCE(strpos(" + d.str(c.path) + ", ?) > 0, FALSE) OR ")
			} else {
				sb.WriteString("COALESCE(instr(" + d.str(c.path) + ", ?) > 0, FALSE) OR ")
			}
			args = append(args, c.val.str)
		}
		args = d.arrayContains(sb, c.path, c.val, args)
		sb.WriteString(")")
	case "exists":
		if d.name == Postgres {
			sb.WriteString(d.value(c.path))
		} else {
			sb.WriteString("json_type(t.data, " + d.value(c.path) + ")")
		}
		if c.exists {
			sb.WriteString(" IS NOT NULL")
		} else {
			sb.WriteString(" IS NULL")
		}
	}
	return args
}
