package thingsdb

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"math"
)

// A cursor is the sort key of the last item of a page, so the next page
// starts strictly after it (keyset pagination): items inserted meanwhile
// never shift a page, and nothing is skipped or repeated.
type cursor struct {
	Order string  `json:"o"`
	Time  int64   `json:"t,omitempty"` // created_at or updated_at
	Rank  int     `json:"r,omitempty"` // data-path orders: type rank
	Num   float64 `json:"n,omitempty"` // data-path orders: number value
	Str   string  `json:"s,omitempty"` // data-path orders: string value, or relationship type
	ID    string  `json:"i"`
}

const maxCursorLen = 2048

func (c cursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

var errBadCursor = errors.New("cursor is malformed; pass nextCursor from the previous page unchanged")

// decodeCursor parses a cursor made by encode and checks it was made for
// the same order.
func decodeCursor(s string, order string) (cursor, error) {
	var c cursor
	if len(s) > maxCursorLen {
		return c, errBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return c, errBadCursor
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, errBadCursor
	}
	// dec.More is false before a stray '}' or ']', so look for the end.
	if _, err := dec.Token(); err != io.EOF {
		return cursor{}, errBadCursor
	}
	if c.Order != order {
		return c, errors.New("cursor was made for another order; start again without a cursor")
	}
	if c.ID == "" || len(c.ID) > MaxIDLen || c.Rank < 0 || c.Rank > rankOther ||
		math.IsNaN(c.Num) || math.IsInf(c.Num, 0) || len(c.Str) > MaxDataBytes {
		return c, errBadCursor
	}
	return c, nil
}
