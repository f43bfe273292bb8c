package thingsdb

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/dotdo/dotdo/internal/apierr"
)

// Limits on what the db service stores. They are documented in docs/api.md.
const (
	MaxNamespaceLen = 64
	MaxIDLen        = 256
	MaxTypeLen      = 64
	MaxDataBytes    = 256 << 10
	MaxContentBytes = 256 << 10
	MaxEmbedding    = 4096
	MaxBatchOps     = 1000
	MaxListLimit    = 1000
	DefaultLimit    = 50
	maxDataDepth    = 32
)

// ValidNamespace reports whether ns is a valid namespace: 1-64 characters of
// a-z, 0-9, '-' and '_', starting with a letter, a digit or '_' (system
// namespaces start with '_').
func ValidNamespace(ns string) bool {
	if len(ns) == 0 || len(ns) > MaxNamespaceLen || ns[0] == '-' {
		return false
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// IsSystemNamespace reports whether ns is reserved for dotdo's services.
func IsSystemNamespace(ns string) bool { return strings.HasPrefix(ns, "_") }

// ValidID reports whether id is a valid thing ID: 1-256 characters of
// A-Z a-z 0-9 and . _ ~ : @ + = -, not starting with '.'.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen || id[0] == '.' {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			strings.IndexByte("._~:@+=-", c) >= 0) {
			return false
		}
	}
	return true
}

// ValidType reports whether t is a valid thing or relationship type: 1-64
// characters of A-Z a-z 0-9 . _ -, starting with a letter.
func ValidType(t string) bool {
	if len(t) == 0 || len(t) > MaxTypeLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if i == 0 && !letter {
			return false
		}
		if !(letter || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkNamespace(ns string) error {
	if !ValidNamespace(ns) {
		return apierr.New(apierr.Invalid, "namespace %q is invalid: use 1-%d characters of a-z, 0-9, '-' and '_'", clip(ns), MaxNamespaceLen)
	}
	return nil
}

func checkID(id string) error {
	if !ValidID(id) {
		return apierr.New(apierr.Invalid, "id %q is invalid: use 1-%d characters of A-Z, a-z, 0-9 and ._~:@+=-, not starting with '.'", clip(id), MaxIDLen)
	}
	return nil
}

func checkType(field, t string) error {
	if t == "" {
		return apierr.New(apierr.Invalid, "%s is required", field)
	}
	if !ValidType(t) {
		return apierr.New(apierr.Invalid, "%s %q is invalid: use 1-%d characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter", field, clip(t), MaxTypeLen)
	}
	return nil
}

// clip shortens a value quoted back in an error message.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "..."
	}
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "?")
	}
	return s
}

var emptyObject = []byte("{}")

// normalizeData checks that raw is a JSON object dotdo can store the same
// way on every backend and returns its canonical compact encoding: keys
// sorted, duplicate keys resolved to the last value, numbers kept exactly.
// Empty input means {}.
func normalizeData(field string, raw []byte) ([]byte, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return emptyObject, nil
	}
	if len(raw) > MaxDataBytes {
		return nil, apierr.New(apierr.TooLarge, "%s is %d bytes; the limit is %d", field, len(raw), MaxDataBytes)
	}
	v, err := decodeJSON(raw)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "%s: %v", field, err)
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, apierr.New(apierr.Invalid, "%s must be a JSON object", field)
	}
	if err := checkValue(v, 0); err != nil {
		return nil, apierr.New(apierr.Invalid, "%s: %v", field, err)
	}
	out, err := encodeJSON(v)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "%s: %v", field, err)
	}
	if len(out) > MaxDataBytes {
		return nil, apierr.New(apierr.TooLarge, "%s is %d bytes; the limit is %d", field, len(out), MaxDataBytes)
	}
	return out, nil
}

// decodeJSON decodes exactly one JSON value, keeping numbers as json.Number.
func decodeJSON(raw []byte) (any, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, errors.New("invalid JSON: " + strings.TrimPrefix(err.Error(), "json: "))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("invalid JSON: trailing data after the value")
	}
	return v, nil
}

func encodeJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// checkValue rejects what one backend would store differently from the
// other: NUL characters (PostgreSQL's jsonb refuses them), numbers outside
// float64's range, and nesting deeper than maxDataDepth.
func checkValue(v any, depth int) error {
	if depth > maxDataDepth {
		return errors.New("nested deeper than " + strconv.Itoa(maxDataDepth) + " levels")
	}
	switch x := v.(type) {
	case string:
		if strings.IndexByte(x, 0) >= 0 {
			return errors.New(`strings may not contain the NUL character (\u0000)`)
		}
	case json.Number:
		if _, ok := parseNumber(string(x)); !ok {
			return errors.New("number " + clip(string(x)) + " is out of range")
		}
	case []any:
		for _, e := range x {
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	case map[string]any:
		for k, e := range x {
			if strings.IndexByte(k, 0) >= 0 {
				return errors.New(`keys may not contain the NUL character (\u0000)`)
			}
			if err := checkValue(e, depth+1); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseNumber parses a JSON number and reports whether it is within
// float64's range. A number too small to be told from zero, such as 1e-400,
// is out of range too: PostgreSQL refuses to read it as a float8, so a
// filter or an order on its field would fail there.
func parseNumber(s string) (float64, bool) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, false
	}
	if f == 0 {
		mantissa, _, _ := strings.Cut(strings.ToLower(s), "e")
		if strings.ContainsAny(mantissa, "123456789") {
			return 0, false
		}
	}
	return f, true
}

func checkContent(s string) error {
	if len(s) > MaxContentBytes {
		return apierr.New(apierr.TooLarge, "content is %d bytes; the limit is %d", len(s), MaxContentBytes)
	}
	if !utf8.ValidString(s) {
		return apierr.New(apierr.Invalid, "content is not valid UTF-8")
	}
	if strings.IndexByte(s, 0) >= 0 {
		return apierr.New(apierr.Invalid, `content may not contain the NUL character`)
	}
	return nil
}

func checkEmbedding(v []float32) error {
	if len(v) > MaxEmbedding {
		return apierr.New(apierr.Invalid, "embedding has %d dimensions; the limit is %d", len(v), MaxEmbedding)
	}
	for i, f := range v {
		if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
			return apierr.New(apierr.Invalid, "embedding[%d] is not a finite number", i)
		}
	}
	return nil
}
