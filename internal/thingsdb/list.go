package thingsdb

import (
	"context"
	"database/sql"
	"strings"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

func checkLimit(limit int32) (int, error) {
	switch {
	case limit == 0:
		return DefaultLimit, nil
	case limit < 0 || limit > MaxListLimit:
		return 0, apierr.New(apierr.Invalid, "limit must be between 1 and %d", MaxListLimit)
	}
	return int(limit), nil
}

// List returns live things of a namespace, optionally of one type,
// filtered by a where document, in a stable order, one page at a time.
func (s *Service) List(ctx context.Context, req *connect.Request[dbv1.ListRequest]) (*connect.Response[dbv1.ListResponse], error) {
	m := req.Msg
	if err := checkNamespace(m.Ns); err != nil {
		return nil, err
	}
	if m.Type != "" {
		if err := checkType("type", m.Type); err != nil {
			return nil, err
		}
	}
	limit, err := checkLimit(m.Limit)
	if err != nil {
		return nil, err
	}
	conds, err := parseWhere(m.Where)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "where %v", err)
	}
	order, err := parseOrder(m.Order)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "%v", err)
	}
	var cur *cursor
	if m.Cursor != "" {
		c, err := decodeCursor(m.Cursor, order.raw)
		if err != nil {
			return nil, apierr.New(apierr.Invalid, "%v", err)
		}
		cur = &c
	}

	var sb strings.Builder
	args := make([]any, 0, 8)
	sb.WriteString("SELECT " + thingCols)
	var keys []string
	if order.column != "" {
		keys = []string{"t." + order.column}
	} else {
		r, n, st := s.d.orderKeys(order.path)
		keys = []string{r, n, st}
		sb.WriteString(", " + r + ", " + n + ", " + st)
	}
	sb.WriteString(" FROM things t WHERE t.ns = ? AND " + live)
	args = append(args, m.Ns, s.now())
	if m.Type != "" {
		sb.WriteString(" AND t.type = ?")
		args = append(args, m.Type)
	}
	args = compile(&s.d, conds, &sb, args)
	cmp, dir := ">", ""
	if order.desc {
		cmp, dir = "<", " DESC"
	}
	if cur != nil {
		sb.WriteString(" AND (" + strings.Join(keys, ", ") + ", t.id) " + cmp + " (")
		if order.column != "" {
			sb.WriteString("?, ?)")
			args = append(args, cur.Time, cur.ID)
		} else {
			sb.WriteString("?, ?, ?, ?)")
			args = append(args, cur.Rank, cur.Num, cur.Str, cur.ID)
		}
	}
	sb.WriteString(" ORDER BY ")
	for _, k := range keys {
		sb.WriteString(k + dir + ", ")
	}
	sb.WriteString("t.id" + dir + " LIMIT ?")
	args = append(args, limit+1)

	st, err := s.stmt(sb.String())
	if err != nil {
		return nil, s.internal(ctx, "list things", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, s.internal(ctx, "list things", err)
	}
	defer rows.Close()
	out := &dbv1.ListResponse{Items: make([]*dbv1.Thing, 0, min(limit, 64))}
	var last cursor
	for rows.Next() {
		if len(out.Items) == limit {
			out.NextCursor = last.encode()
			break
		}
		last = cursor{Order: order.raw}
		var extra []any
		if order.column == "" {
			extra = []any{&last.Rank, &last.Num, &last.Str}
		}
		t, err := s.scanThing(rows, extra...)
		if err != nil {
			return nil, s.internal(ctx, "list things", err)
		}
		last.ID = t.Id
		switch order.column {
		case "created_at":
			last.Time = t.CreatedAt
		case "updated_at":
			last.Time = t.UpdatedAt
		}
		out.Items = append(out.Items, t)
	}
	if err := rows.Err(); err != nil {
		return nil, s.internal(ctx, "list things", err)
	}
	return connect.NewResponse(out), nil
}

// maxCachedStmts bounds the prepared-statement cache: where documents can
// produce many distinct statements.
const maxCachedStmts = 256

// stmt returns a prepared statement for a read query, cached by its text.
func (s *Service) stmt(q string) (*sql.Stmt, error) {
	q = s.d.rebind(q)
	s.mu.Lock()
	st, ok := s.stmts[q]
	s.mu.Unlock()
	if ok {
		return st, nil
	}
	st, err := s.be.Read.Prepare(q)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.stmts[q]; ok {
		st.Close()
		return old, nil
	}
	if len(s.stmts) >= maxCachedStmts {
		for k, old := range s.stmts {
			old.Close()
			delete(s.stmts, k)
			break
		}
	}
	s.stmts[q] = st
	return st, nil
}
