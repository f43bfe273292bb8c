// Package thingsdb is the db service: the only component that talks to the
// database. It stores things (JSON documents with a type, a version and an
// optional TTL) and relationships between them, on SQLite or PostgreSQL with
// the same behaviour, and serves them over Connect RPC (the binding other
// services use) and REST (routes.go).
package thingsdb

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"
	"github.com/google/uuid"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
	"github.com/dotdo/dotdo/internal/gen/dotdo/db/v1/dbv1connect"
)

var _ dbv1connect.DBServiceHandler = (*Service)(nil)

// Backend is an open database. Read and Write may be the same pool; SQLite
// uses one writer connection and several readers.
type Backend struct {
	Name  string // SQLite or Postgres
	Read  *sql.DB
	Write *sql.DB
}

// Service is the db service.
type Service struct {
	be  Backend
	d   dialect
	log *slog.Logger
	// Now is the clock; tests replace it.
	Now func() time.Time
	// BackupDir is where the Backup RPC writes backups (the db process's
	// <data-dir>/backups); empty refuses it.
	BackupDir string

	getStmt *sql.Stmt
	// upsertStmt and createStmt are prepared on the write pool and bound to
	// each transaction with tx.Stmt: re-preparing them cost about a fifth
	// of a PUT.
	upsertStmt, createStmt *sql.Stmt
	mu                     sync.Mutex
	stmts                  map[string]*sql.Stmt // prepared list statements by SQL text

	searchState // search.go: vector index, embedder, search settings
}

// New returns the db service over an open, migrated backend.
func New(be Backend, logger *slog.Logger) (*Service, error) {
	s := &Service{be: be, d: dialect{name: be.Name}, log: logger.With("service", "db"), Now: time.Now, stmts: map[string]*sql.Stmt{}}
	var err error
	s.getStmt, err = be.Read.Prepare(s.d.rebind("SELECT " + thingCols + " FROM things t WHERE t.ns = ? AND t.id = ? AND " + live))
	if err != nil {
		return nil, fmt.Errorf("prepare get: %w", err)
	}
	if s.upsertStmt, err = be.Write.Prepare(s.d.rebind(upsertThing)); err != nil {
		return nil, fmt.Errorf("prepare upsert: %w", err)
	}
	if s.createStmt, err = be.Write.Prepare(s.d.rebind(createThing)); err != nil {
		return nil, fmt.Errorf("prepare create: %w", err)
	}
	if err := s.startSearch(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close releases prepared statements; the caller closes the pools.
func (s *Service) Close() error {
	s.stopSearch()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.upsertStmt.Close()
	s.createStmt.Close()
	return s.getStmt.Close()
}

const (
	thingCols = "t.ns, t.id, t.type, t.data, t.content, t.embedding, t.version, t.created_at, t.updated_at, t.expires_at"
	// live selects things that have not expired; its one argument is now.
	live = "(t.expires_at IS NULL OR t.expires_at > ?)"
)

func (s *Service) now() int64 { return s.Now().UnixMicro() }

// internal logs err and returns the generic error clients see.
func (s *Service) internal(ctx context.Context, op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return apierr.New(apierr.Unavailable, "request canceled")
	}
	s.log.ErrorContext(ctx, op+" failed", "err", err)
	return apierr.New(apierr.Internal, "internal error")
}

type scanner interface{ Scan(...any) error }

// scanThing scans thingCols followed by extra columns.
func (s *Service) scanThing(row scanner, extra ...any) (*dbv1.Thing, error) {
	return s.scanRow(row, nil, extra)
}

// scanThingAfter scans leading columns followed by thingCols.
func (s *Service) scanThingAfter(row scanner, lead ...any) (*dbv1.Thing, error) {
	return s.scanRow(row, lead, nil)
}

func (s *Service) scanRow(row scanner, lead, extra []any) (*dbv1.Thing, error) {
	t := &dbv1.Thing{}
	var data, emb []byte
	var exp sql.NullInt64
	dest := make([]any, 0, len(lead)+10+len(extra))
	dest = append(dest, lead...)
	dest = append(dest, &t.Ns, &t.Id, &t.Type, &data, &t.Content, &emb, &t.Version, &t.CreatedAt, &t.UpdatedAt, &exp)
	dest = append(dest, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	t.Data = data
	t.Embedding = decodeEmbedding(emb)
	t.ExpiresAt = exp.Int64
	return t, nil
}

func encodeEmbedding(v []float32) []byte {
	if len(v) == 0 {
		return nil
	}
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func decodeEmbedding(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func nullable(v int64) any {
	if v == 0 {
		return nil
	}
	return v
}

// Get returns a live thing.
func (s *Service) Get(ctx context.Context, req *connect.Request[dbv1.GetRequest]) (*connect.Response[dbv1.GetResponse], error) {
	t, err := s.get(ctx, req.Msg.Ns, req.Msg.Id)
	if err != nil {
		return nil, err
	}
	return connect.NewResponse(&dbv1.GetResponse{Thing: t}), nil
}

func (s *Service) get(ctx context.Context, ns, id string) (*dbv1.Thing, error) {
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	if err := checkID(id); err != nil {
		return nil, err
	}
	t, err := s.scanThing(s.getStmt.QueryRowContext(ctx, ns, id, s.now()))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, apierr.New(apierr.NotFound, "thing %s/%s not found", ns, id)
	}
	if err != nil {
		return nil, s.internal(ctx, "get thing", err)
	}
	return t, nil
}

// tx runs fn in a write transaction.
func (s *Service) tx(ctx context.Context, op string, fn func(*sql.Tx) error) error {
	tx, err := s.be.Write.BeginTx(ctx, nil)
	if err != nil {
		return s.internal(ctx, op, err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return err
		}
		return s.internal(ctx, op, err)
	}
	if err := tx.Commit(); err != nil {
		if ctx.Err() != nil {
			// database/sql rolls back when the caller goes away; Commit
			// then says ErrTxDone, which is no server fault.
			return apierr.New(apierr.Unavailable, "request canceled")
		}
		return s.internal(ctx, op, err)
	}
	return nil
}

// Put writes a thing: create-only, update-only, upsert, conditional on a
// version, or a merge patch, as the Write says.
func (s *Service) Put(ctx context.Context, req *connect.Request[dbv1.PutRequest]) (*connect.Response[dbv1.PutResponse], error) {
	w := req.Msg.Write
	if w == nil {
		return nil, apierr.New(apierr.Invalid, "write is required")
	}
	if err := checkNamespace(w.Ns); err != nil {
		return nil, err
	}
	var res *dbv1.OpResult
	err := s.tx(ctx, "put thing", func(tx *sql.Tx) error {
		var err error
		res, err = s.write(ctx, tx, w, s.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	s.afterWrite(ctx, []*dbv1.Thing{res.Thing}, nil)
	return connect.NewResponse(&dbv1.PutResponse{Thing: res.Thing, Created: res.Created}), nil
}

// maxTime is the last representable instant, 9999-12-31T23:59:59Z, in
// Unix microseconds.
const maxTime = 253402300799999999

// prepared is a write's validated fields.
type prepared struct {
	typ     string
	data    []byte
	content string
	emb     []byte
	expires int64
}

func (s *Service) prepareWrite(w *dbv1.Write, now int64) (prepared, error) {
	if err := checkType("type", w.Type); err != nil {
		return prepared{}, err
	}
	data, err := normalizeData("data", w.Data)
	if err != nil {
		return prepared{}, err
	}
	if err := checkContent(w.Content); err != nil {
		return prepared{}, err
	}
	if err := checkEmbedding(w.Embedding); err != nil {
		return prepared{}, err
	}
	if w.ExpiresAt < 0 || w.ExpiresAt > maxTime {
		return prepared{}, apierr.New(apierr.Invalid, "expiresAt must be between 1970 and 9999")
	}
	return prepared{typ: w.Type, data: data, content: w.Content, emb: encodeEmbedding(w.Embedding), expires: w.ExpiresAt}, nil
}

const insertThing = `INSERT INTO things AS t (ns, id, type, data, content, embedding, version, created_at, updated_at, expires_at)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)
ON CONFLICT (ns, id) DO UPDATE SET type = excluded.type, data = excluded.data, content = excluded.content,
 embedding = excluded.embedding, expires_at = excluded.expires_at, updated_at = excluded.updated_at, `

const (
	// upsertThing overwrites a live thing (version + 1) or an expired one
	// (which counts as absent: version 1 again).
	upsertThing = insertThing + `version = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= ? THEN 1 ELSE t.version + 1 END,
 created_at = CASE WHEN t.expires_at IS NOT NULL AND t.expires_at <= ? THEN excluded.created_at ELSE t.created_at END
RETURNING version, created_at`
	// createThing only replaces an expired thing; a live one returns no row.
	createThing = insertThing + `version = 1, created_at = excluded.created_at
WHERE t.expires_at IS NOT NULL AND t.expires_at <= ?
RETURNING version, created_at`
	updateThing = `UPDATE things AS t SET type = ?, data = ?, content = ?, embedding = ?, expires_at = ?, updated_at = ?, version = t.version + 1
WHERE t.ns = ? AND t.id = ? AND ` + live
)

// write performs one write inside tx.
func (s *Service) write(ctx context.Context, tx *sql.Tx, w *dbv1.Write, now int64) (*dbv1.OpResult, error) {
	if err := checkID(w.Id); err != nil {
		return nil, err
	}
	if w.IfVersion < 0 {
		return nil, apierr.New(apierr.Invalid, "ifVersion must be positive")
	}
	if w.Condition == dbv1.Condition_CONDITION_MUST_NOT_EXIST && w.IfVersion != 0 {
		return nil, apierr.New(apierr.Invalid, "a create-only write cannot also require a version")
	}
	if len(w.MergePatch) > 0 {
		if w.Condition == dbv1.Condition_CONDITION_MUST_NOT_EXIST {
			return nil, apierr.New(apierr.Invalid, "a merge patch cannot be create-only")
		}
		return s.patch(ctx, tx, w, now)
	}
	p, err := s.prepareWrite(w, now)
	if err != nil {
		return nil, err
	}
	if len(w.Embedding) > 0 {
		if err := s.checkDims(ctx, tx, w.Ns, len(w.Embedding)); err != nil {
			return nil, err
		}
	}
	t := &dbv1.Thing{Ns: w.Ns, Id: w.Id, Type: p.typ, Data: p.data, Content: p.content, Embedding: w.Embedding, UpdatedAt: now, ExpiresAt: p.expires}
	switch {
	case w.IfVersion != 0 || w.Condition == dbv1.Condition_CONDITION_MUST_EXIST:
		q := updateThing
		args := []any{p.typ, p.data, p.content, p.emb, nullable(p.expires), now, w.Ns, w.Id, now}
		if w.IfVersion != 0 {
			q += " AND t.version = ?"
			args = append(args, w.IfVersion)
		}
		err = tx.QueryRowContext(ctx, s.d.rebind(q+" RETURNING version, created_at"), args...).Scan(&t.Version, &t.CreatedAt)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, s.preconditionFailed(ctx, tx, w.Ns, w.Id, w.IfVersion, now)
		}
	case w.Condition == dbv1.Condition_CONDITION_MUST_NOT_EXIST:
		err = tx.StmtContext(ctx, s.createStmt).QueryRowContext(ctx, w.Ns, w.Id, p.typ, p.data, p.content, p.emb, now, now, nullable(p.expires), now).Scan(&t.Version, &t.CreatedAt)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, apierr.New(apierr.PreconditionFailed, "thing %s/%s already exists", w.Ns, w.Id)
		}
	default:
		err = tx.StmtContext(ctx, s.upsertStmt).QueryRowContext(ctx, w.Ns, w.Id, p.typ, p.data, p.content, p.emb, now, now, nullable(p.expires), now, now).Scan(&t.Version, &t.CreatedAt)
	}
	if err != nil {
		return nil, err
	}
	return &dbv1.OpResult{Thing: t, Created: t.Version == 1}, nil
}

// preconditionFailed explains why a conditional write matched no row.
func (s *Service) preconditionFailed(ctx context.Context, tx *sql.Tx, ns, id string, want, now int64) error {
	var v int64
	err := tx.QueryRowContext(ctx, s.d.rebind("SELECT t.version FROM things t WHERE t.ns = ? AND t.id = ? AND "+live), ns, id, now).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return apierr.New(apierr.PreconditionFailed, "thing %s/%s does not exist", ns, id)
	}
	if err != nil {
		return err
	}
	return apierr.New(apierr.PreconditionFailed, "thing %s/%s is at version %d, not %d", ns, id, v, want)
}

// patchable is the part of a thing a merge patch applies to.
type patchable struct {
	Type      string          `json:"type"`
	Data      json.RawMessage `json:"data"`
	Content   string          `json:"content,omitempty"`
	ExpiresAt *time.Time      `json:"expiresAt,omitempty"`
}

func (s *Service) patch(ctx context.Context, tx *sql.Tx, w *dbv1.Write, now int64) (*dbv1.OpResult, error) {
	q := "SELECT " + thingCols + " FROM things t WHERE t.ns = ? AND t.id = ? AND " + live
	if s.be.Name == Postgres {
		q += " FOR UPDATE"
	}
	cur, err := s.scanThing(tx.QueryRowContext(ctx, s.d.rebind(q), w.Ns, w.Id, now))
	if errors.Is(err, sql.ErrNoRows) {
		if w.IfVersion != 0 || w.Condition == dbv1.Condition_CONDITION_MUST_EXIST {
			return nil, apierr.New(apierr.PreconditionFailed, "thing %s/%s does not exist", w.Ns, w.Id)
		}
		return nil, apierr.New(apierr.NotFound, "thing %s/%s not found", w.Ns, w.Id)
	}
	if err != nil {
		return nil, err
	}
	if w.IfVersion != 0 && cur.Version != w.IfVersion {
		return nil, apierr.New(apierr.PreconditionFailed, "thing %s/%s is at version %d, not %d", w.Ns, w.Id, cur.Version, w.IfVersion)
	}
	next, err := applyMergePatch(cur, w.MergePatch)
	if err != nil {
		return nil, err
	}
	next.Ns, next.Id, next.IfVersion, next.Condition = w.Ns, w.Id, cur.Version, dbv1.Condition_CONDITION_MUST_EXIST
	next.Embedding = cur.Embedding
	if s.embedder != nil && (next.Content != cur.Content || !bytes.Equal(next.Data, cur.Data)) {
		// An embedding made from the old text would be stale.
		if cfg, err := s.config(ctx, w.Ns); err == nil && cfg.embedOnWrite {
			next.Embedding = nil
		}
	}
	return s.write(ctx, tx, next, now)
}

// applyMergePatch applies an RFC 7396 merge patch to the patchable fields
// of cur and returns the resulting write.
func applyMergePatch(cur *dbv1.Thing, patch []byte) (*dbv1.Write, error) {
	if len(patch) > MaxDataBytes+MaxContentBytes {
		return nil, apierr.New(apierr.TooLarge, "patch is %d bytes; the limit is %d", len(patch), MaxDataBytes+MaxContentBytes)
	}
	pv, err := decodeJSON(patch)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "patch: %v", err)
	}
	pm, ok := pv.(map[string]any)
	if !ok {
		return nil, apierr.New(apierr.Invalid, "patch must be a JSON object")
	}
	for k, v := range pm {
		switch k {
		case "type":
			if _, ok := v.(string); !ok {
				return nil, apierr.New(apierr.Invalid, "patch: type must be a string")
			}
		case "data":
			if _, ok := v.(map[string]any); !ok && v != nil {
				return nil, apierr.New(apierr.Invalid, "patch: data must be an object or null")
			}
		case "content":
			if _, ok := v.(string); !ok && v != nil {
				return nil, apierr.New(apierr.Invalid, "patch: content must be a string or null")
			}
		case "expiresAt":
			if _, ok := v.(string); !ok && v != nil {
				return nil, apierr.New(apierr.Invalid, "patch: expiresAt must be an RFC 3339 time or null")
			}
		default:
			return nil, apierr.New(apierr.Invalid, "patch: field %q cannot be patched; patch type, data, content or expiresAt", clip(k))
		}
	}
	doc := patchable{Type: cur.Type, Data: cur.Data, Content: cur.Content}
	if cur.ExpiresAt != 0 {
		t := time.UnixMicro(cur.ExpiresAt).UTC()
		doc.ExpiresAt = &t
	}
	orig, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	target, err := decodeJSON(orig)
	if err != nil {
		return nil, err
	}
	merged, err := encodeJSON(mergePatch(target, pv))
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "patch: %v", err)
	}
	var out struct {
		Type      string          `json:"type"`
		Data      json.RawMessage `json:"data"`
		Content   string          `json:"content"`
		ExpiresAt string          `json:"expiresAt"`
	}
	if err := json.Unmarshal(merged, &out); err != nil {
		return nil, apierr.New(apierr.Invalid, "patch: %v", err)
	}
	w := &dbv1.Write{Type: out.Type, Data: out.Data, Content: out.Content}
	if exp, ok := pm["expiresAt"]; ok && exp == "" {
		return nil, apierr.New(apierr.Invalid, "patch: expiresAt must be an RFC 3339 time, or null to remove it")
	}
	if out.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339Nano, out.ExpiresAt)
		if err != nil || t.Year() < 1970 || t.Year() > 9999 || t.UnixMicro() <= 0 {
			return nil, apierr.New(apierr.Invalid, "patch: expiresAt %q is not an RFC 3339 time between 1970 and 9999", clip(out.ExpiresAt))
		}
		w.ExpiresAt = t.UnixMicro()
	}
	return w, nil
}

// mergePatch applies an RFC 7396 merge patch to a decoded target. It is
// written out rather than taken from a library because the one we used
// (evanphx/json-patch) drops null members of objects inside arrays of the
// patch, which RFC 7396 keeps: arrays replace the target value as they are.
func mergePatch(target, patch any) any {
	p, ok := patch.(map[string]any)
	if !ok {
		return patch
	}
	t, ok := target.(map[string]any)
	if !ok {
		t = map[string]any{}
	}
	for k, v := range p {
		if v == nil {
			delete(t, k)
			continue
		}
		t[k] = mergePatch(t[k], v)
	}
	return t
}

// Delete removes a live thing and its relationships.
func (s *Service) Delete(ctx context.Context, req *connect.Request[dbv1.DeleteRequest]) (*connect.Response[dbv1.DeleteResponse], error) {
	if err := checkNamespace(req.Msg.Ns); err != nil {
		return nil, err
	}
	err := s.tx(ctx, "delete thing", func(tx *sql.Tx) error {
		return s.delete(ctx, tx, req.Msg, s.now())
	})
	if err != nil {
		return nil, err
	}
	s.afterWrite(ctx, nil, [][2]string{{req.Msg.Ns, req.Msg.Id}})
	return connect.NewResponse(&dbv1.DeleteResponse{}), nil
}

func (s *Service) delete(ctx context.Context, tx *sql.Tx, d *dbv1.DeleteRequest, now int64) error {
	if err := checkID(d.Id); err != nil {
		return err
	}
	if d.IfVersion < 0 {
		return apierr.New(apierr.Invalid, "ifVersion must be positive")
	}
	q := "DELETE FROM things AS t WHERE t.ns = ? AND t.id = ? AND " + live
	args := []any{d.Ns, d.Id, now}
	if d.IfVersion != 0 {
		q += " AND t.version = ?"
		args = append(args, d.IfVersion)
	}
	res, err := tx.ExecContext(ctx, s.d.rebind(q), args...)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		if d.IfVersion != 0 {
			return s.preconditionFailed(ctx, tx, d.Ns, d.Id, d.IfVersion, now)
		}
		if d.MustExist {
			return apierr.New(apierr.PreconditionFailed, "thing %s/%s does not exist", d.Ns, d.Id)
		}
		return apierr.New(apierr.NotFound, "thing %s/%s not found", d.Ns, d.Id)
	}
	_, err = tx.ExecContext(ctx, s.d.rebind("DELETE FROM relationships WHERE ns = ? AND (from_id = ? OR to_id = ?)"), d.Ns, d.Id, d.Id)
	return err
}

// Batch runs up to MaxBatchOps writes and deletes in one transaction: all
// succeed or none does, and the error names the failing op's index.
func (s *Service) Batch(ctx context.Context, req *connect.Request[dbv1.BatchRequest]) (*connect.Response[dbv1.BatchResponse], error) {
	ns := req.Msg.Ns
	if err := checkNamespace(ns); err != nil {
		return nil, err
	}
	if len(req.Msg.Ops) == 0 {
		return nil, apierr.New(apierr.Invalid, "ops is empty")
	}
	if len(req.Msg.Ops) > MaxBatchOps {
		return nil, apierr.New(apierr.Invalid, "a batch holds at most %d ops; this one has %d", MaxBatchOps, len(req.Msg.Ops))
	}
	results := make([]*dbv1.OpResult, len(req.Msg.Ops))
	now := s.now()
	err := s.tx(ctx, "batch", func(tx *sql.Tx) error {
		for i, op := range req.Msg.Ops {
			var err error
			switch o := op.Op.(type) {
			case *dbv1.Op_Write:
				if o.Write == nil {
					return apierr.AtIndex(apierr.New(apierr.Invalid, "empty write"), i)
				}
				w := o.Write
				if w.Ns != "" && w.Ns != ns {
					return apierr.AtIndex(apierr.New(apierr.Invalid, "op namespace %q differs from the batch's %q", clip(w.Ns), ns), i)
				}
				w.Ns = ns
				results[i], err = s.write(ctx, tx, w, now)
			case *dbv1.Op_Delete:
				if o.Delete == nil {
					return apierr.AtIndex(apierr.New(apierr.Invalid, "empty delete"), i)
				}
				d := o.Delete
				if d.Ns != "" && d.Ns != ns {
					return apierr.AtIndex(apierr.New(apierr.Invalid, "op namespace %q differs from the batch's %q", clip(d.Ns), ns), i)
				}
				d.Ns = ns
				err = s.delete(ctx, tx, d, now)
				results[i] = &dbv1.OpResult{Deleted: true, Thing: &dbv1.Thing{Ns: ns, Id: d.Id}}
			default:
				err = apierr.New(apierr.Invalid, "unknown op")
			}
			if err != nil {
				var ae *apierr.Error
				if errors.As(err, &ae) {
					return apierr.AtIndex(err, i)
				}
				return fmt.Errorf("op %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var written []*dbv1.Thing
	var deleted [][2]string
	for _, r := range results {
		if r.Deleted {
			deleted = append(deleted, [2]string{ns, r.Thing.GetId()})
		} else {
			written = append(written, r.Thing)
		}
	}
	s.afterWrite(ctx, written, deleted)
	return connect.NewResponse(&dbv1.BatchResponse{Results: results}), nil
}

// NewID returns a new time-ordered thing ID (a UUIDv7).
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// NewPrefixedID returns prefix followed by a new UUIDv7 in 32 hex digits,
// such as usr_0190c1d2...: an ID that says what it names and, like NewID,
// sorts by creation time.
func NewPrefixedID(prefix string) string {
	return prefix + strings.ReplaceAll(NewID(), "-", "")
}
