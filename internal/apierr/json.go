package apierr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strconv"
	"strings"
)

// DecodeBody reads r's body as ReadBody does and decodes it into v as
// DecodeJSON does.
func DecodeBody(r *http.Request, v any) error {
	b, err := ReadBody(r)
	if err != nil {
		return err
	}
	return DecodeJSON(b, v)
}

// DecodeJSON decodes b, a request body, into v strictly: b must hold
// exactly one JSON value other than null, and an object may not have
// fields v lacks. Every
// fault is an Invalid error whose message names the field at fault in
// JSON terms, never in Go's; an empty body is refused, so a route that
// takes one checks for it first.
func DecodeJSON(b []byte, v any) error {
	trimmed := bytes.Trim(b, " \t\r\n")
	if len(trimmed) == 0 {
		return New(Invalid, "request body is empty; send a JSON object")
	}
	// encoding/json reads a top-level null as "leave v alone", which
	// would pass a route's zero value on as if the caller had sent it.
	if t := reflect.TypeOf(v); string(trimmed) == "null" && t != nil && t.Kind() == reflect.Pointer {
		switch t.Elem().Kind() {
		case reflect.Struct, reflect.Map, reflect.Slice:
			return New(Invalid, "invalid JSON body: the body must be %s, not null", jsonKind(t.Elem(), false))
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var ie *json.InvalidUnmarshalError
		if errors.As(err, &ie) {
			return fmt.Errorf("decode JSON body: %w", err) // the caller's bug: internal
		}
		return New(Invalid, "invalid JSON body: %s", jsonError(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return New(Invalid, "invalid JSON body: trailing data after the JSON value")
	}
	return nil
}

// jsonError describes a decoding error in JSON's terms.
func jsonError(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		want := jsonKind(te.Type, strings.HasPrefix(te.Value, "number"))
		if want == "" {
			if te.Field != "" {
				return fmt.Sprintf("field %s cannot be %s", te.Field, te.Value)
			}
			return fmt.Sprintf("the body cannot be %s", te.Value)
		}
		if te.Field != "" {
			return fmt.Sprintf("field %s must be %s, not %s", te.Field, want, te.Value)
		}
		return fmt.Sprintf("the body must be %s, not %s", want, te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("%s at byte %d", se.Error(), se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of JSON input"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// jsonKind is what a JSON value must be to decode into t, or "" when that
// is not simply put. When the value was a number that t cannot hold, the
// answer gives t's range.
func jsonKind(t reflect.Type, number bool) string {
	switch t.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			return "a base64 string"
		}
		return "an array"
	case reflect.Array:
		return "an array"
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if number {
			hi := uint64(1)<<(t.Bits()-1) - 1
			return fmt.Sprintf("an integer from %d to %d", -int64(hi)-1, hi)
		}
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if number {
			return fmt.Sprintf("an integer from 0 to %d", uint64(math.MaxUint64)>>(64-t.Bits()))
		}
		return "an integer"
	case reflect.Float32, reflect.Float64:
		if number {
			limit := math.MaxFloat64
			if t.Kind() == reflect.Float32 {
				limit = math.MaxFloat32
			}
			return fmt.Sprintf("a number from %.2g to %.2g", -limit, limit)
		}
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return ""
}

// WriteJSON writes v as a JSON body with status, ending it with a newline
// as WriteHTTP does. If v cannot be encoded, which is a bug, it writes an
// internal error instead.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		WriteHTTP(w, "", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
