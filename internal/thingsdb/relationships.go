package thingsdb

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

func checkRelationship(ns, from, typ, to string) error {
	if err := checkNamespace(ns); err != nil {
		return err
	}
	if !ValidID(from) {
		return apierr.New(apierr.Invalid, "from %q is not a valid thing id", clip(from))
	}
	if !ValidID(to) {
		return apierr.New(apierr.Invalid, "to %q is not a valid thing id", clip(to))
	}
	return checkType("relationship type", typ)
}

// PutRelationship creates a relationship or replaces its data. Its ends
// need not exist; related queries only return live things.
func (s *Service) PutRelationship(ctx context.Context, req *connect.Request[dbv1.PutRelationshipRequest]) (*connect.Response[dbv1.PutRelationshipResponse], error) {
	r := req.Msg.Relationship
	if r == nil {
		return nil, apierr.New(apierr.Invalid, "relationship is required")
	}
	if err := checkRelationship(r.Ns, r.From, r.Type, r.To); err != nil {
		return nil, err
	}
	data, err := normalizeData("data", r.Data)
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := &dbv1.Relationship{Ns: r.Ns, From: r.From, Type: r.Type, To: r.To, Data: data}
	created := false
	err = s.tx(ctx, "put relationship", func(tx *sql.Tx) error {
		// Insert, or else update: which one ran says whether it is new.
		err := tx.QueryRowContext(ctx, s.d.rebind(`INSERT INTO relationships (ns, from_id, type, to_id, data, created_at) VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (ns, from_id, type, to_id) DO NOTHING RETURNING created_at`), r.Ns, r.From, r.Type, r.To, data, now).Scan(&out.CreatedAt)
		if err == nil {
			created = true
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return tx.QueryRowContext(ctx, s.d.rebind(`UPDATE relationships SET data = ? WHERE ns = ? AND from_id = ? AND type = ? AND to_id = ? RETURNING created_at`),
			data, r.Ns, r.From, r.Type, r.To).Scan(&out.CreatedAt)
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.PutRelationshipResponse{Relationship: out, Created: created}), nil
}

// DeleteRelationship removes one relationship.
func (s *Service) DeleteRelationship(ctx context.Context, req *connect.Request[dbv1.DeleteRelationshipRequest]) (*connect.Response[dbv1.DeleteRelationshipResponse], error) {
	m := req.Msg
	if err := checkRelationship(m.Ns, m.From, m.Type, m.To); err != nil {
		return nil, err
	}
	err := s.tx(ctx, "delete relationship", func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM relationships WHERE ns = ? AND from_id = ? AND type = ? AND to_id = ?"), m.Ns, m.From, m.Type, m.To)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return apierr.New(apierr.NotFound, "relationship %s/%s -%s-> %s not found", m.Ns, m.From, m.Type, m.To)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.DeleteRelationshipResponse{}), nil
}

// Related returns the live things related to a thing, with the
// relationships, ordered by relationship type and the other end's id.
func (s *Service) Related(ctx context.Context, req *connect.Request[dbv1.RelatedRequest]) (*connect.Response[dbv1.RelatedResponse], error) {
	m := req.Msg
	if err := checkNamespace(m.Ns); err != nil {
		return nil, err
	}
	if err := checkID(m.Id); err != nil {
		return nil, err
	}
	if m.Type != "" {
		if err := checkType("type", m.Type); err != nil {
			return nil, err
		}
	}
	self, other := "from_id", "to_id"
	dir := m.Direction
	switch dir {
	case "", "out":
		dir = "out"
	case "in":
		self, other = "to_id", "from_id"
	default:
		return nil, apierr.New(apierr.Invalid, "direction must be out or in")
	}
	limit, err := checkLimit(m.Limit)
	if err != nil {
		return nil, err
	}
	order := "related:" + dir
	var cur *cursor
	if m.Cursor != "" {
		c, err := decodeCursor(m.Cursor, order)
		if err != nil {
			return nil, apierr.New(apierr.Invalid, "%v", err)
		}
		cur = &c
	}
	var sb strings.Builder
	sb.WriteString("SELECT r.from_id, r.type, r.to_id, r.data, r.created_at, " + thingCols +
		" FROM relationships r JOIN things t ON t.ns = r.ns AND t.id = r." + other +
		" WHERE r.ns = ? AND r." + self + " = ? AND " + live)
	args := []any{m.Ns, m.Id, s.now()}
	if m.Type != "" {
		sb.WriteString(" AND r.type = ?")
		args = append(args, m.Type)
	}
	if cur != nil {
		sb.WriteString(" AND (r.type, r." + other + ") > (?, ?)")
		args = append(args, cur.Str, cur.ID)
	}
	sb.WriteString(" ORDER BY r.type, r." + other + " LIMIT ?")
	args = append(args, limit+1)
	st, err := s.stmt(sb.String())
	if err != nil {
		return nil, s.internal(ctx, "related", err)
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, s.internal(ctx, "related", err)
	}
	defer rows.Close()
	out := &dbv1.RelatedResponse{}
	for rows.Next() {
		if len(out.Items) == limit {
			last := out.Items[len(out.Items)-1]
			c := cursor{Order: order, Str: last.Relationship.Type, ID: last.Thing.Id}
			out.NextCursor = c.encode()
			break
		}
		r := &dbv1.Relationship{Ns: m.Ns}
		var rdata []byte
		t, err := s.scanThingAfter(rows, &r.From, &r.Type, &r.To, &rdata, &r.CreatedAt)
		if err != nil {
			return nil, s.internal(ctx, "related", err)
		}
		r.Data = rdata
		out.Items = append(out.Items, &dbv1.Related{Relationship: r, Thing: t})
	}
	if err := rows.Err(); err != nil {
		return nil, s.internal(ctx, "related", err)
	}
	return connect.NewResponse(out), nil
}

// PurgeExpired deletes expired things and their relationships, at most
// limit (default 1000) per call, and reports how many it removed. The
// schedule service calls it; expired things are invisible before that.
func (s *Service) PurgeExpired(ctx context.Context, req *connect.Request[dbv1.PurgeExpiredRequest]) (*connect.Response[dbv1.PurgeExpiredResponse], error) {
	limit := int(req.Msg.Limit)
	if limit <= 0 {
		limit = 1000
	}
	if limit > 100000 {
		return nil, apierr.New(apierr.Invalid, "limit must be at most 100000")
	}
	n, err := s.Purge(ctx, limit)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.PurgeExpiredResponse{Purged: n}), nil
}

// Purge deletes up to limit expired things and their relationships.
func (s *Service) Purge(ctx context.Context, limit int) (int64, error) {
	var total int64
	now := s.now()
	for total < int64(limit) {
		batch := min(500, limit-int(total))
		var n int64
		err := s.tx(ctx, "purge expired", func(tx *sql.Tx) error {
			rows, err := tx.QueryContext(ctx, s.d.rebind("SELECT t.ns, t.id FROM things t WHERE t.expires_at IS NOT NULL AND t.expires_at <= ? LIMIT ?"), now, batch)
			if err != nil {
				return err
			}
			var keys [][2]string
			for rows.Next() {
				var k [2]string
				if err := rows.Scan(&k[0], &k[1]); err != nil {
					rows.Close()
					return err
				}
				keys = append(keys, k)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			for _, k := range keys {
				if _, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM things WHERE ns = ? AND id = ? AND expires_at IS NOT NULL AND expires_at <= ?"), k[0], k[1], now); err != nil {
					return err
				}
				if _, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM relationships WHERE ns = ? AND (from_id = ? OR to_id = ?)"), k[0], k[1], k[1]); err != nil {
					return err
				}
			}
			n = int64(len(keys))
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < int64(batch) {
			break
		}
	}
	return total, nil
}

// Health reports whether the database answers.
func (s *Service) Health(ctx context.Context, _ *connect.Request[dbv1.HealthRequest]) (*connect.Response[dbv1.HealthResponse], error) {
	if err := s.be.Read.PingContext(ctx); err != nil {
		return nil, apierr.New(apierr.Unavailable, "database unreachable")
	}
	if s.be.Write != s.be.Read {
		if err := s.be.Write.PingContext(ctx); err != nil {
			return nil, apierr.New(apierr.Unavailable, "database unreachable")
		}
	}
	return connect.NewResponse(&dbv1.HealthResponse{Status: "ok"}), nil
}
