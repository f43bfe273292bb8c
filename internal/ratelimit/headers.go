package ratelimit

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// WriteHeaders sets RateLimit-Policy and RateLimit on h for decision d made
// under policy p, and Retry-After when d denied the request, in the form the
// package comment gives. It replaces any values those fields had.
func WriteHeaders(h http.Header, p Policy, d Decision) {
	name := sfString(p.Name)
	h.Set("RateLimit-Policy", name+";q="+strconv.Itoa(p.Limit)+";w="+strconv.FormatInt(max(ceilSeconds(p.Period), 1), 10))
	h.Set("RateLimit", name+";r="+strconv.Itoa(max(d.Remaining, 0))+";t="+strconv.FormatInt(ceilSeconds(d.Reset), 10))
	if !d.Allowed {
		h.Set("Retry-After", strconv.FormatInt(max(ceilSeconds(d.RetryAfter), 1), 10))
	}
}

// ceilSeconds rounds d up to whole seconds: a client told to wait a little
// too long succeeds, one told too little is refused again.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// sfString encodes s as a Structured Fields string (RFC 9651, section
// 3.3.3). Valid policy names need no escaping; anything else is made safe
// rather than trusted.
func sfString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c > 0x7e:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}
