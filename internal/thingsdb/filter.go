package thingsdb

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// A where document filters things on their data fields. It is a JSON
// object whose keys are dotted paths into data and whose values are either
// a scalar (equality) or an object of operators:
//
//	{"status": "active", "price": {"gte": 10, "lt": 20}, "tags": {"contains": "x"}}
//
// Operators: eq ne lt lte gt gte in contains exists. All conditions must
// hold. docs/api.md gives the exact semantics.

const (
	maxWhereBytes   = 8 << 10
	maxConditions   = 32
	maxInValues     = 100
	maxPathSegments = 8
	maxSegmentLen   = 64
)

// value is a scalar operand of a condition.
type value struct {
	kind valueKind
	str  string
	num  float64
	b    bool
}

type valueKind int

const (
	kindString valueKind = iota
	kindNumber
	kindBool
	kindNull
)

type condition struct {
	path []string
	op   string
	val  value   // eq ne lt lte gt gte contains
	vals []value // in
	// exists is the operand of the exists operator.
	exists bool
}

var operators = []string{"contains", "eq", "exists", "gt", "gte", "in", "lt", "lte", "ne"}

// parseWhere parses a where document. An empty string means no filter.
func parseWhere(s string) ([]condition, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	if len(s) > maxWhereBytes {
		return nil, fmt.Errorf("is longer than %d bytes", maxWhereBytes)
	}
	v, err := decodeJSON([]byte(s))
	if err != nil {
		return nil, err
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New(`must be a JSON object such as {"status":"active"}`)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // deterministic SQL, so statements can be cached
	var conds []condition
	for _, k := range keys {
		path, err := parsePath(k)
		if err != nil {
			return nil, err
		}
		ops, isOps := obj[k].(map[string]any)
		if !isOps {
			val, err := scalar(k, "eq", obj[k])
			if err != nil {
				return nil, err
			}
			conds = append(conds, condition{path: path, op: "eq", val: val})
			continue
		}
		if len(ops) == 0 {
			return nil, fmt.Errorf("field %q has no operators; use one of %s", k, strings.Join(operators, " "))
		}
		opNames := make([]string, 0, len(ops))
		for op := range ops {
			opNames = append(opNames, op)
		}
		sort.Strings(opNames)
		for _, op := range opNames {
			c, err := parseOp(k, path, op, ops[op])
			if err != nil {
				return nil, err
			}
			conds = append(conds, c)
		}
	}
	if len(conds) > maxConditions {
		return nil, fmt.Errorf("has %d conditions; the limit is %d", len(conds), maxConditions)
	}
	return conds, nil
}

func parseOp(field string, path []string, op string, arg any) (condition, error) {
	c := condition{path: path, op: op}
	switch op {
	case "eq", "ne", "contains":
		v, err := scalar(field, op, arg)
		if err != nil {
			return c, err
		}
		c.val = v
	case "lt", "lte", "gt", "gte":
		v, err := scalar(field, op, arg)
		if err != nil {
			return c, err
		}
		if v.kind != kindString && v.kind != kindNumber {
			return c, fmt.Errorf("field %q: %s takes a number or a string", field, op)
		}
		c.val = v
	case "in":
		arr, ok := arg.([]any)
		if !ok || len(arr) == 0 {
			return c, fmt.Errorf("field %q: in takes a non-empty array", field)
		}
		if len(arr) > maxInValues {
			return c, fmt.Errorf("field %q: in takes at most %d values", field, maxInValues)
		}
		for _, a := range arr {
			v, err := scalar(field, op, a)
			if err != nil {
				return c, err
			}
			c.vals = append(c.vals, v)
		}
	case "exists":
		b, ok := arg.(bool)
		if !ok {
			return c, fmt.Errorf("field %q: exists takes true or false", field)
		}
		c.exists = b
	default:
		return c, fmt.Errorf("field %q: unknown operator %q; use one of %s", field, clip(op), strings.Join(operators, " "))
	}
	return c, nil
}

func scalar(field, op string, arg any) (value, error) {
	switch x := arg.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return value{}, fmt.Errorf("field %q: strings may not contain NUL", field)
		}
		return value{kind: kindString, str: x}, nil
	case json.Number:
		f, ok := parseNumber(string(x))
		if !ok {
			return value{}, fmt.Errorf("field %q: number %s is out of range", field, clip(string(x)))
		}
		return value{kind: kindNumber, num: f}, nil
	case bool:
		return value{kind: kindBool, b: x}, nil
	case nil:
		return value{kind: kindNull}, nil
	}
	return value{}, fmt.Errorf("field %q: %s takes a string, number, boolean or null", field, op)
}

// parsePath splits a dotted data path. Segments are restricted to
// A-Z a-z 0-9 _ - so that they can be written into SQL as literals.
func parsePath(p string) ([]string, error) {
	if p == "" {
		return nil, errors.New("empty field path")
	}
	segs := strings.Split(p, ".")
	if len(segs) > maxPathSegments {
		return nil, fmt.Errorf("field %q is nested deeper than %d levels", clip(p), maxPathSegments)
	}
	for _, s := range segs {
		if s == "" || len(s) > maxSegmentLen {
			return nil, fmt.Errorf("field %q is not a valid path: segments are 1-%d characters separated by '.'", clip(p), maxSegmentLen)
		}
		for i := 0; i < len(s); i++ {
			c := s[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
				return nil, fmt.Errorf("field %q is not a valid path: use A-Z, a-z, 0-9, '_' and '-' in each segment", clip(p))
			}
		}
	}
	return segs, nil
}

// compile appends the SQL of the conditions, joined by AND, to sb and their
// arguments to args.
func compile(d *dialect, conds []condition, sb *strings.Builder, args []any) []any {
	for _, c := range conds {
		sb.WriteString(" AND ")
		args = d.condition(sb, c, args)
	}
	return args
}

// orderSpec is a parsed order parameter.
type orderSpec struct {
	raw  string
	desc bool
	// column is created_at or updated_at; empty for a data path.
	column string
	path   []string
}

func parseOrder(s string) (orderSpec, error) {
	o := orderSpec{raw: s}
	if s == "" {
		s = "createdAt"
		o.raw = s
	}
	if strings.HasPrefix(s, "-") {
		o.desc = true
		s = s[1:]
	}
	switch {
	case s == "createdAt":
		o.column = "created_at"
	case s == "updatedAt":
		o.column = "updated_at"
	case strings.HasPrefix(s, "data."):
		p, err := parsePath(strings.TrimPrefix(s, "data."))
		if err != nil {
			return o, err
		}
		o.path = p
	default:
		return o, fmt.Errorf("order %q is invalid: use createdAt, updatedAt or data.<path>, with '-' for descending", clip(o.raw))
	}
	return o, nil
}

func (o orderSpec) equal(p orderSpec) bool {
	return o.desc == p.desc && o.column == p.column && slices.Equal(o.path, p.path)
}
