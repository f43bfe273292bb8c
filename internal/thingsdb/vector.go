package thingsdb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
)

// loadVectors fills the vector index with every live embedding.
func (s *Service) loadVectors(ctx context.Context) error {
	rows, err := s.be.Read.QueryContext(ctx, s.d.rebind("SELECT t.ns, t.id, t.type, t.embedding FROM things t WHERE t.embedding IS NOT NULL AND "+live), s.now())
	if err != nil {
		return fmt.Errorf("load vector index: %w", err)
	}
	defer rows.Close()
	x := newVecIndex()
	var ns, id, typ string
	var emb []byte
	for rows.Next() {
		if err := rows.Scan(&ns, &id, &typ, &emb); err != nil {
			return fmt.Errorf("load vector index: %w", err)
		}
		x.put(ns, id, typ, decodeEmbedding(emb))
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load vector index: %w", err)
	}
	s.vec.mu.Lock()
	s.vec.spaces = x.spaces
	s.vec.mu.Unlock()
	return nil
}

// follow keeps the vector index current with writes made through any db
// replica on PostgreSQL: a trigger notifies dotdo_things_<schema> of each
// change of a thing with an embedding, and this replica re-reads it. It
// listens before loading, so no change falls between the load and the
// first notification, and reloads after a lost connection. ready receives
// the result of the first load.
func (s *Service) follow(ctx context.Context, ready chan<- error) {
	first := true
	signal := func(err error) {
		if first {
			first = false
			if err == nil {
				close(s.vecReady)
			}
			ready <- err
		}
	}
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listen(ctx, func() error {
			err := s.loadVectors(ctx)
			signal(err)
			return err
		})
		if ctx.Err() != nil {
			break
		}
		if first {
			signal(err)
			return
		}
		s.log.Warn("vector index: lost the notification connection; reconnecting", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
	signal(ctx.Err())
}

// listen holds one connection in LISTEN, calls loaded once listening, and
// applies notifications until ctx ends or the connection fails. The
// connection is its own, opened with the pool's settings, so it never
// takes one of the pool's connections (which may be few).
func (s *Service) listen(ctx context.Context, loaded func() error) error {
	cfg, err := s.pgConfig(ctx)
	if err != nil {
		return err
	}
	pc, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return err
	}
	defer pc.Close(context.Background())
	var schema string
	if err := pc.QueryRow(ctx, "SELECT current_schema()").Scan(&schema); err != nil {
		return err
	}
	channel := "dotdo_things_" + schema
	if _, err := pc.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	if err := loaded(); err != nil {
		return err
	}
	for {
		n, err := pc.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n != nil {
			s.applyNotification(ctx, n.Payload)
		}
	}
}

// pgConfig returns a copy of the connection settings of the pool.
func (s *Service) pgConfig(ctx context.Context) (*pgx.ConnConfig, error) {
	conn, err := s.be.Read.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var cfg *pgx.ConnConfig
	err = conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return errors.New("vector index: the PostgreSQL driver is not pgx")
		}
		cfg = sc.Conn().Config().Copy()
		// The copy would deliver notifications to the pool
		// connection's buffer; the new connection sets its own.
		cfg.OnNotification = nil
		return nil
	})
	return cfg, err
}

// applyNotification re-reads the thing a notification names.
func (s *Service) applyNotification(ctx context.Context, payload string) {
	op, rest, _ := strings.Cut(payload, " ")
	ns, id, ok := strings.Cut(rest, " ")
	if !ok {
		return
	}
	if op == "d" {
		s.vec.remove(ns, id)
		return
	}
	var typ string
	var emb []byte
	err := s.be.Read.QueryRowContext(ctx, s.d.rebind("SELECT t.type, t.embedding FROM things t WHERE t.ns = ? AND t.id = ? AND "+live), ns, id, s.now()).Scan(&typ, &emb)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		s.vec.remove(ns, id)
	case err != nil:
		if ctx.Err() == nil {
			s.log.Warn("vector index: re-read thing", "ns", ns, "id", id, "err", err)
		}
	default:
		s.vec.put(ns, id, typ, decodeEmbedding(emb))
	}
}
