package thingsdb

import (
	"context"
	"database/sql"
	"strings"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Analytics limits, documented in docs/search.md.
const (
	MaxEventBatch      = 10000
	MaxEventProperties = 8 << 10
	maxAnalyticsRows   = 10000
	rollChunk          = 50000
	hourMicros         = int64(time.Hour / time.Microsecond)
	dayMicros          = 24 * hourMicros
)

// validEventName is an event or property name: 1-64 characters of
// A-Z a-z 0-9 . _ - starting with a letter (the rule of type names).
func checkEventName(field, s string) error {
	if !ValidType(s) {
		return apierr.New(apierr.Invalid, "%s %q is invalid: use 1-%d characters of A-Z, a-z, 0-9, '.', '_' and '-', starting with a letter", field, clip(s), MaxTypeLen)
	}
	return nil
}

// IngestEvents stores a batch of events in one transaction: all or none.
func (s *Service) IngestEvents(ctx context.Context, req *connect.Request[dbv1.IngestEventsRequest]) (*connect.Response[dbv1.IngestEventsResponse], error) {
	evs := req.Msg.Events
	if len(evs) == 0 {
		return nil, apierr.New(apierr.Invalid, "events is empty")
	}
	if len(evs) > MaxEventBatch {
		return nil, apierr.New(apierr.Invalid, "a batch holds at most %d events; this one has %d", MaxEventBatch, len(evs))
	}
	now := s.now()
	type row struct {
		ns, name string
		ts       int64
		props    []byte
	}
	rows := make([]row, len(evs))
	for i, e := range evs {
		if err := checkNamespace(e.Ns); err != nil {
			return nil, apierr.AtIndex(err, i)
		}
		if err := checkEventName("name", e.Name); err != nil {
			return nil, apierr.AtIndex(err, i)
		}
		if len(e.Properties) > MaxEventProperties {
			return nil, apierr.AtIndex(apierr.New(apierr.TooLarge, "properties are %d bytes; the limit is %d", len(e.Properties), MaxEventProperties), i)
		}
		props, err := normalizeData("properties", e.Properties)
		if err != nil {
			return nil, apierr.AtIndex(err, i)
		}
		ts := e.Timestamp
		if ts == 0 {
			ts = now
		}
		if ts < 0 || ts > maxTime {
			return nil, apierr.AtIndex(apierr.New(apierr.Invalid, "timestamp must be between 1970 and 9999"), i)
		}
		rows[i] = row{e.Ns, e.Name, ts, props}
	}
	const chunk = 500
	err := s.tx(ctx, "ingest events", func(tx *sql.Tx) error {
		for lo := 0; lo < len(rows); lo += chunk {
			part := rows[lo:min(lo+chunk, len(rows))]
			var sb strings.Builder
			sb.WriteString("INSERT INTO analytics_events (ns, name, ts, props) VALUES ")
			args := make([]any, 0, 4*len(part))
			for i, r := range part {
				if i > 0 {
					sb.WriteByte(',')
				}
				sb.WriteString("(?, ?, ?, ?)")
				args = append(args, r.ns, r.name, r.ts, string(r.props))
			}
			if _, err := tx.ExecContext(ctx, s.d.rebind(sb.String()), args...); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.IngestEventsResponse{Accepted: int64(len(rows))}), nil
}

// granularities of the rollups, as a SQL relation (gran, w).
const grans = "(SELECT 'h' AS gran, 3600000000 AS w UNION ALL SELECT 'd', 86400000000)"

// propValue is the SQL text of property prop (an expression) of event e,
// ” when missing; both backends give the same text for strings, numbers
// written alike, booleans and null.
func (d *dialect) propValue(prop string) string {
	if d.name == Postgres {
		return "COALESCE(e.props ->> " + prop + ", '')"
	}
	p := "'$.\"' || " + prop + " || '\"'"
	return "COALESCE(CASE json_type(e.props, " + p + ") WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(json_extract(e.props, " + p + ") AS TEXT) END, '')"
}

// UpdateAnalytics counts events not yet rolled up into the hourly and daily
// rollups, in chunks, each chunk in one transaction with marking its
// events rolled: running it again, or on two replicas at once, never
// counts an event twice.
func (s *Service) UpdateAnalytics(ctx context.Context, req *connect.Request[dbv1.UpdateAnalyticsRequest]) (*connect.Response[dbv1.UpdateAnalyticsResponse], error) {
	max := int64(req.Msg.MaxEvents)
	if max < 0 {
		return nil, apierr.New(apierr.Invalid, "maxEvents must be positive")
	}
	if max == 0 {
		max = 1_000_000
	}
	out := &dbv1.UpdateAnalyticsResponse{}
	for out.Rolled < max {
		n := min(int64(rollChunk), max-out.Rolled)
		var got int64
		err := s.tx(ctx, "update analytics", func(tx *sql.Tx) error {
			var err error
			got, err = s.rollChunk(ctx, tx, n)
			return err
		})
		if err != nil {
			return nil, err
		}
		out.Rolled += got
		if got < n {
			out.Done = true
			break
		}
	}
	return connect.NewResponse(out), nil
}

func (s *Service) rollChunk(ctx context.Context, tx *sql.Tx, n int64) (int64, error) {
	if s.be.Name == Postgres {
		var got int64
		err := tx.QueryRowContext(ctx, `WITH b AS (
  UPDATE analytics_events SET rolled = true WHERE seq IN (
    SELECT seq FROM analytics_events WHERE NOT rolled ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
  RETURNING ns, name, ts, props),
g AS (SELECT * FROM (VALUES ('h', 3600000000::bigint), ('d', 86400000000::bigint)) v(gran, w)),
r AS (
  SELECT b.ns, b.name, g.gran, (b.ts / g.w) * g.w AS bucket, ''::text AS prop, ''::text AS value FROM b CROSS JOIN g
  UNION ALL
  SELECT b.ns, b.name, g.gran, (b.ts / g.w) * g.w, c.prop::text, COALESCE(b.props ->> c.prop, '') FROM b JOIN analytics_config c ON c.ns = b.ns AND c.name = b.name CROSS JOIN g),
ins AS (
  INSERT INTO analytics_rollups (ns, name, gran, bucket, prop, value, count)
  SELECT ns, name, gran, bucket, prop, value, count(*) FROM r GROUP BY 1, 2, 3, 4, 5, 6
  ON CONFLICT (ns, name, gran, prop, bucket, value) DO UPDATE SET count = analytics_rollups.count + excluded.count
  RETURNING 1)
SELECT (SELECT count(*) FROM b) + 0 * (SELECT count(*) FROM ins)`, n).Scan(&got)
		return got, err
	}
	var hi sql.NullInt64
	if err := tx.QueryRowContext(ctx, "SELECT MAX(seq), COUNT(*) FROM (SELECT seq FROM analytics_events INDEXED BY analytics_events_tail WHERE rolled = 0 ORDER BY seq LIMIT ?)", n).Scan(&hi, new(int64)); err != nil {
		return 0, err
	}
	if !hi.Valid {
		return 0, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO analytics_rollups (ns, name, gran, bucket, prop, value, count)
SELECT * FROM (
  SELECT e.ns, e.name, g.gran, (e.ts / g.w) * g.w, '', '', COUNT(*) FROM analytics_events e INDEXED BY analytics_events_tail, `+grans+` g
  WHERE e.rolled = 0 AND e.seq <= ?1 GROUP BY 1, 2, 3, 4
  UNION ALL
  SELECT e.ns, e.name, g.gran, (e.ts / g.w) * g.w, c.prop, `+s.d.propValue("c.prop")+`, COUNT(*)
  FROM analytics_events e INDEXED BY analytics_events_tail JOIN analytics_config c ON c.ns = e.ns AND c.name = e.name, `+grans+` g
  WHERE e.rolled = 0 AND e.seq <= ?1 GROUP BY 1, 2, 3, 4, 5, 6
) WHERE true
ON CONFLICT (ns, name, gran, prop, bucket, value) DO UPDATE SET count = analytics_rollups.count + excluded.count`, hi.Int64); err != nil {
		return 0, err
	}
	res, err := tx.ExecContext(ctx, "UPDATE analytics_events INDEXED BY analytics_events_tail SET rolled = 1 WHERE rolled = 0 AND seq <= ?", hi.Int64)
	if err != nil {
		return 0, err
	}
	got, err := res.RowsAffected()
	return got, err
}

// QueryAnalytics counts events by bucket (and by a property's value) over
// a time range: from the rollups for the events already rolled up, plus
// the raw events not yet rolled up, in one statement so the two parts
// never overlap. A grouping the rollups do not keep is counted from the
// raw events.
func (s *Service) QueryAnalytics(ctx context.Context, req *connect.Request[dbv1.QueryAnalyticsRequest]) (*connect.Response[dbv1.QueryAnalyticsResponse], error) {
	m := req.Msg
	if err := checkNamespace(m.Ns); err != nil {
		return nil, err
	}
	if err := checkEventName("event", m.Event); err != nil {
		return nil, err
	}
	if m.GroupBy != "" {
		if err := checkEventName("groupBy", m.GroupBy); err != nil {
			return nil, err
		}
	}
	var w int64
	var gran string
	switch m.Bucket {
	case "hour", "":
		w, gran = hourMicros, "h"
	case "day":
		w, gran = dayMicros, "d"
	default:
		return nil, apierr.New(apierr.Invalid, "bucket must be hour or day")
	}
	if m.From < 0 || m.To <= m.From || m.To > maxTime {
		return nil, apierr.New(apierr.Invalid, "from and to must be times with from before to")
	}
	from := m.From / w * w
	to := (m.To + w - 1) / w * w
	if (to-from)/w > maxAnalyticsRows {
		return nil, apierr.New(apierr.Invalid, "the range holds %d %ss; the limit is %d", (to-from)/w, m.Bucket, maxAnalyticsRows)
	}
	rolled := true
	if m.GroupBy != "" {
		var prop string
		err := s.be.Read.QueryRowContext(ctx, s.d.rebind("SELECT prop FROM analytics_config WHERE ns = ? AND name = ?"), m.Ns, m.Event).Scan(&prop)
		if err != nil && err != sql.ErrNoRows {
			return nil, s.internal(ctx, "query analytics", err)
		}
		rolled = prop == m.GroupBy
	}
	notRolled := "e.rolled = 0"
	if s.be.Name == Postgres {
		notRolled = "NOT e.rolled"
	}
	value := "''"
	if m.GroupBy != "" {
		// groupBy is checked to be letters, digits and . _ -, so it
		// can be a literal.
		value = s.d.propValue("'" + m.GroupBy + "'")
	}
	var q string
	var args []any
	bucket := "(e.ts / ?) * ?"
	if rolled {
		q = `SELECT bucket, value, CAST(SUM(c) AS BIGINT) FROM (
  SELECT r.bucket AS bucket, r.value AS value, r.count AS c FROM analytics_rollups r
  WHERE r.ns = ? AND r.name = ? AND r.gran = ? AND r.prop = ? AND r.bucket >= ? AND r.bucket < ?
  UNION ALL
  SELECT ` + bucket + `, ` + value + `, 1 FROM analytics_events e
  WHERE e.ns = ? AND e.name = ? AND ` + notRolled + ` AND e.ts >= ? AND e.ts < ?
) x GROUP BY bucket, value ORDER BY bucket, value LIMIT ?`
		args = append(args, m.Ns, m.Event, gran, m.GroupBy, from, to, w, w, m.Ns, m.Event, from, to, maxAnalyticsRows+1)
	} else {
		q = `SELECT ` + bucket + ` AS bucket, ` + value + ` AS value, COUNT(*) FROM analytics_events e
WHERE e.ns = ? AND e.name = ? AND e.ts >= ? AND e.ts < ? GROUP BY 1, 2 ORDER BY 1, 2 LIMIT ?`
		args = append(args, w, w, m.Ns, m.Event, from, to, maxAnalyticsRows+1)
	}
	rows, err := s.be.Read.QueryContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return nil, s.internal(ctx, "query analytics", err)
	}
	defer rows.Close()
	out := &dbv1.QueryAnalyticsResponse{FromRollups: rolled, From: from, To: to, Rows: []*dbv1.AnalyticsRow{}}
	for rows.Next() {
		r := &dbv1.AnalyticsRow{}
		if err := rows.Scan(&r.Bucket, &r.Value, &r.Count); err != nil {
			return nil, s.internal(ctx, "query analytics", err)
		}
		out.Rows = append(out.Rows, r)
	}
	if err := rows.Err(); err != nil {
		return nil, s.internal(ctx, "query analytics", err)
	}
	if len(out.Rows) > maxAnalyticsRows {
		return nil, apierr.New(apierr.Invalid, "the answer has more than %d rows; narrow the range or use day buckets", maxAnalyticsRows)
	}
	return connect.NewResponse(out), nil
}

// SetRollupProperty names the one property an event's rollups group by. It
// applies to events rolled up afterwards; until UpdateAnalytics has rolled
// up the older events, a query grouped by it counts only what is in its
// rollups and the tail, so set it before sending events.
func (s *Service) SetRollupProperty(ctx context.Context, req *connect.Request[dbv1.SetRollupPropertyRequest]) (*connect.Response[dbv1.SetRollupPropertyResponse], error) {
	m := req.Msg
	if err := checkNamespace(m.Ns); err != nil {
		return nil, err
	}
	if err := checkEventName("event", m.Event); err != nil {
		return nil, err
	}
	err := s.tx(ctx, "set rollup property", func(tx *sql.Tx) error {
		if m.Property == "" {
			_, err := tx.ExecContext(ctx, s.d.rebind("DELETE FROM analytics_config WHERE ns = ? AND name = ?"), m.Ns, m.Event)
			return err
		}
		if err := checkEventName("property", m.Property); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO analytics_config (ns, name, prop) VALUES (?, ?, ?)
ON CONFLICT (ns, name) DO UPDATE SET prop = excluded.prop`), m.Ns, m.Event, m.Property)
		return err
	})
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.SetRollupPropertyResponse{}), nil
}

// Stats counts a namespace's live things by type, its relationships,
// embeddings and events, and the bytes its things take.
func (s *Service) Stats(ctx context.Context, req *connect.Request[dbv1.StatsRequest]) (*connect.Response[dbv1.StatsResponse], error) {
	ns := req.Msg.Ns
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	size := "length(CAST(t.data AS BLOB)) + length(CAST(t.content AS BLOB)) + COALESCE(length(t.embedding), 0)"
	if s.be.Name == Postgres {
		size = "octet_length(t.data::text) + octet_length(t.content) + COALESCE(octet_length(t.embedding), 0)"
	}
	rows, err := s.be.Read.QueryContext(ctx, s.d.rebind("SELECT t.type, COUNT(*), SUM("+size+"), SUM(CASE WHEN t.embedding IS NULL THEN 0 ELSE 1 END) FROM things t WHERE t.ns = ? AND "+live+" GROUP BY t.type ORDER BY t.type"), ns, s.now())
	if err != nil {
		return nil, s.internal(ctx, "stats", err)
	}
	out := &dbv1.StatsResponse{Ns: ns, Types: []*dbv1.TypeCount{}}
	for rows.Next() {
		var tc dbv1.TypeCount
		var bytes, embs int64
		if err := rows.Scan(&tc.Type, &tc.Count, &bytes, &embs); err != nil {
			rows.Close()
			return nil, s.internal(ctx, "stats", err)
		}
		out.Types = append(out.Types, &tc)
		out.Things += tc.Count
		out.StorageBytes += bytes
		out.Embeddings += embs
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, s.internal(ctx, "stats", err)
	}
	if err := s.be.Read.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM relationships WHERE ns = ?"), ns).Scan(&out.Relationships); err != nil {
		return nil, s.internal(ctx, "stats", err)
	}
	if err := s.be.Read.QueryRowContext(ctx, s.d.rebind("SELECT COUNT(*) FROM analytics_events WHERE ns = ?"), ns).Scan(&out.Events); err != nil {
		return nil, s.internal(ctx, "stats", err)
	}
	return connect.NewResponse(out), nil
}
