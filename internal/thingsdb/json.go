package thingsdb

import (
	"encoding/json"
	"strconv"
	"time"

	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// appendThing appends the REST form of t. It is written by hand because it
// runs on every read: data is already JSON and is copied as is.
func appendThing(b []byte, t *dbv1.Thing) []byte {
	b = append(b, `{"ns":`...)
	b = appendString(b, t.Ns)
	b = append(b, `,"id":`...)
	b = appendString(b, t.Id)
	b = append(b, `,"type":`...)
	b = appendString(b, t.Type)
	b = append(b, `,"data":`...)
	if len(t.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, t.Data...)
	}
	if t.Content != "" {
		b = append(b, `,"content":`...)
		b = appendString(b, t.Content)
	}
	if len(t.Embedding) > 0 {
		b = append(b, `,"embedding":[`...)
		for i, f := range t.Embedding {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendFloat(b, float64(f), 'g', -1, 32)
		}
		b = append(b, ']')
	}
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, t.Version, 10)
	b = append(b, `,"createdAt":`...)
	b = appendTime(b, t.CreatedAt)
	b = append(b, `,"updatedAt":`...)
	b = appendTime(b, t.UpdatedAt)
	if t.ExpiresAt != 0 {
		b = append(b, `,"expiresAt":`...)
		b = appendTime(b, t.ExpiresAt)
	}
	return append(b, '}')
}

func appendRelationship(b []byte, r *dbv1.Relationship) []byte {
	b = append(b, `{"ns":`...)
	b = appendString(b, r.Ns)
	b = append(b, `,"from":`...)
	b = appendString(b, r.From)
	b = append(b, `,"type":`...)
	b = appendString(b, r.Type)
	b = append(b, `,"to":`...)
	b = appendString(b, r.To)
	b = append(b, `,"data":`...)
	if len(r.Data) == 0 {
		b = append(b, "{}"...)
	} else {
		b = append(b, r.Data...)
	}
	b = append(b, `,"createdAt":`...)
	b = appendTime(b, r.CreatedAt)
	return append(b, '}')
}

// appendString appends s as a JSON string. Validated names (namespaces,
// ids, types) need no escaping and take the fast path; free text goes
// through encoding/json. strconv.AppendQuote is not used: it is slower on
// the read path and its Go escapes (\x00) are not JSON.
func appendString(b []byte, s string) []byte {
	plain := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f || c == '<' || c == '>' || c == '&' {
			plain = false
			break
		}
	}
	if plain {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	out, _ := json.Marshal(s)
	return append(b, out...)
}

// appendTime appends a Unix-microsecond time as a quoted RFC 3339 UTC time.
func appendTime(b []byte, us int64) []byte {
	b = append(b, '"')
	b = time.UnixMicro(us).UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}
