package thingsdb

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The full-text query syntax is the one PostgreSQL's websearch_to_tsquery
// reads: words, "quoted phrases", OR between alternatives and -word or
// -"phrase" to exclude. As there, OR separates groups of terms that must
// all match: `a b OR c -d` matches (a AND b) OR (c AND NOT d). The parser
// turns a query into that form once, and each backend gets its rendering:
// an FTS5 MATCH expression on SQLite, and a normalised websearch string for
// websearch_to_tsquery on PostgreSQL, so both read the same query.

// MaxQueryBytes bounds a full-text query; maxQueryTerms bounds its terms.
const (
	MaxQueryBytes = 1024
	maxQueryTerms = 32
)

// ftsTerm is a word or a phrase (several words that must follow each
// other), possibly excluded.
type ftsTerm struct {
	words   []string
	exclude bool
}

// ftsQuery is a disjunction of groups; a group is a conjunction of terms
// with at least one term that is not excluded.
type ftsQuery struct {
	groups [][]ftsTerm
}

// parseQuery parses the query syntax. It fails on a query without a
// searchable word or with a group of only excluded terms (which would
// match nearly everything and cannot use the index).
func parseQuery(s string) (ftsQuery, error) {
	var q ftsQuery
	if len(s) > MaxQueryBytes {
		return q, fmt.Errorf("query is %d bytes; the limit is %d", len(s), MaxQueryBytes)
	}
	if !utf8.ValidString(s) {
		return q, fmt.Errorf("query is not valid UTF-8")
	}
	var group []ftsTerm
	terms := 0
	flush := func() {
		if len(group) > 0 {
			q.groups = append(q.groups, group)
			group = nil
		}
	}
	i := 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		if unicode.IsSpace(r) {
			i += size
			continue
		}
		exclude := false
		if r == '-' {
			exclude = true
			i++
			if i >= len(s) {
				break
			}
			r, size = utf8.DecodeRuneInString(s[i:])
			if unicode.IsSpace(r) {
				continue
			}
		}
		var text string
		quoted := r == '"'
		if quoted {
			i++
			end := strings.IndexByte(s[i:], '"')
			if end < 0 {
				text, i = s[i:], len(s)
			} else {
				text, i = s[i:i+end], i+end+1
			}
		} else {
			start := i
			for i < len(s) {
				r, size := utf8.DecodeRuneInString(s[i:])
				if unicode.IsSpace(r) || r == '"' {
					break
				}
				i += size
			}
			text = s[start:i]
		}
		if !quoted && !exclude && strings.EqualFold(text, "or") {
			flush()
			continue
		}
		words := queryWords(text)
		if len(words) == 0 {
			continue
		}
		terms += len(words)
		if terms > maxQueryTerms {
			return ftsQuery{}, fmt.Errorf("query has more than %d words", maxQueryTerms)
		}
		group = append(group, ftsTerm{words: words, exclude: exclude})
	}
	flush()
	out := q.groups[:0]
	for _, g := range q.groups {
		pos := false
		for _, t := range g {
			pos = pos || !t.exclude
		}
		if !pos {
			return ftsQuery{}, fmt.Errorf("every alternative of a query needs a word that is not excluded with -")
		}
		out = append(out, g)
	}
	q.groups = out
	if len(q.groups) == 0 {
		return q, fmt.Errorf("query has no word to search for")
	}
	return q, nil
}

// queryWords splits text into words of letters and digits, as both
// backends' tokenizers do; punctuation separates words.
func queryWords(text string) []string {
	return strings.FieldsFunc(text, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.Is(unicode.Mn, r)
	})
}

func (t ftsTerm) phrase() string { return strings.Join(t.words, " ") }

// fts5 renders the query as an FTS5 MATCH expression, every term a quoted
// string (FTS5 reads no operator inside one).
func (q ftsQuery) fts5() string {
	var sb strings.Builder
	for gi, g := range q.groups {
		if gi > 0 {
			sb.WriteString(" OR ")
		}
		sb.WriteString("((")
		n := 0
		for _, t := range g {
			if t.exclude {
				continue
			}
			if n > 0 {
				sb.WriteString(" AND ")
			}
			n++
			sb.WriteString(`"` + strings.ReplaceAll(t.phrase(), `"`, `""`) + `"`)
		}
		sb.WriteString(")")
		for _, t := range g {
			if t.exclude {
				sb.WriteString(` NOT "` + strings.ReplaceAll(t.phrase(), `"`, `""`) + `"`)
			}
		}
		sb.WriteString(")")
	}
	return sb.String()
}

// websearch renders the query in the normal form websearch_to_tsquery
// reads back to the same query: every term quoted.
func (q ftsQuery) websearch() string {
	var sb strings.Builder
	for gi, g := range q.groups {
		if gi > 0 {
			sb.WriteString(" or ")
		}
		for ti, t := range g {
			if ti > 0 {
				sb.WriteByte(' ')
			}
			if t.exclude {
				sb.WriteByte('-')
			}
			sb.WriteString(`"` + t.phrase() + `"`)
		}
	}
	return sb.String()
}

// String is the normal form, for logs and tests.
func (q ftsQuery) String() string { return q.websearch() }
