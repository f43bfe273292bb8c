package thingsdb

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/dotdo/dotdo/internal/apierr"
	dbv1 "github.com/dotdo/dotdo/internal/gen/dotdo/db/v1"
)

// Search limits, documented in docs/search.md.
const (
	// MaxRankedCandidates caps the full-text matches one query ranks: a
	// broad query (a common word) stops collecting matches there, so its
	// cost is bounded whatever the namespace holds.
	MaxRankedCandidates = 5000
	// MaxSearchLimit is the largest page of search results.
	MaxSearchLimit = 100
	// DefaultRRFK is the Reciprocal Rank Fusion constant.
	DefaultRRFK = 60
	// MaxSearchFields bounds the data fields indexed for full text.
	MaxSearchFields = 16
)

// searchState is the part of the Service that search and analytics use.
type searchState struct {
	vec      *vecIndex
	embedder Embedder
	cfgMu    sync.Mutex
	cfgCache map[string]cachedConfig
	dims     sync.Map // ns -> int: dimension read from a committed config
	stopBg   context.CancelFunc
	bg       sync.WaitGroup
	// vecReady is closed once the vector index is loaded.
	vecReady chan struct{}
}

type searchConfig struct {
	dims         int
	embedOnWrite bool
	fields       []string
}

type cachedConfig struct {
	cfg searchConfig
	at  time.Time
}

// configTTL bounds how stale another replica's change of a namespace's
// search settings can be here.
const configTTL = 2 * time.Second

// SetEmbedder sets the embedder used for embed-on-write namespaces,
// GenerateMissingEmbeddings and queries given as text in vector or hybrid
// mode. Call it before serving.
func (s *Service) SetEmbedder(e Embedder) { s.embedder = e }

// startSearch loads the vector index and, on PostgreSQL, starts following
// other replicas' writes. New calls it.
func (s *Service) startSearch() error {
	s.vec = newVecIndex()
	s.cfgCache = map[string]cachedConfig{}
	s.vecReady = make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	s.stopBg = cancel
	if s.be.Name == Postgres {
		ready := make(chan error, 1)
		s.bg.Add(1)
		go func() {
			defer s.bg.Done()
			s.follow(ctx, ready)
		}()
		if err := <-ready; err != nil {
			cancel()
			s.bg.Wait()
			return err
		}
		return nil
	}
	err := s.loadVectors(ctx)
	close(s.vecReady)
	return err
}

func (s *Service) stopSearch() {
	if s.stopBg != nil {
		s.stopBg()
		s.bg.Wait()
	}
}

// config returns a namespace's search settings (zero when none).
func (s *Service) config(ctx context.Context, ns string) (searchConfig, error) {
	s.cfgMu.Lock()
	c, ok := s.cfgCache[ns]
	s.cfgMu.Unlock()
	if ok && time.Since(c.at) < configTTL {
		return c.cfg, nil
	}
	cfg, err := s.readConfig(ctx, s.be.Read, ns)
	if err != nil {
		return cfg, err
	}
	s.cfgMu.Lock()
	if len(s.cfgCache) > 10000 {
		clear(s.cfgCache)
	}
	s.cfgCache[ns] = cachedConfig{cfg: cfg, at: time.Now()}
	s.cfgMu.Unlock()
	return cfg, nil
}

type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *Service) readConfig(ctx context.Context, q queryer, ns string) (searchConfig, error) {
	var cfg searchConfig
	var dims sql.NullInt64
	var fields string
	var eow bool
	err := q.QueryRowContext(ctx, s.d.rebind("SELECT dims, embed_on_write, fields FROM search_config WHERE ns = ?"), ns).Scan(&dims, &eow, &fields)
	if errors.Is(err, sql.ErrNoRows) {
		return cfg, nil
	}
	if err != nil {
		return cfg, err
	}
	cfg.dims, cfg.embedOnWrite = int(dims.Int64), eow
	if err := json.Unmarshal([]byte(fields), &cfg.fields); err != nil {
		return cfg, fmt.Errorf("search_config.fields of %s: %w", ns, err)
	}
	return cfg, nil
}

// checkDims makes sure an embedding of n dimensions fits namespace ns,
// fixing the namespace's dimension with its first embedding.
func (s *Service) checkDims(ctx context.Context, tx *sql.Tx, ns string, n int) error {
	if d, ok := s.dims.Load(ns); ok {
		if d.(int) != n {
			return dimsError(ns, d.(int), n)
		}
		return nil
	}
	var dims sql.NullInt64
	err := tx.QueryRowContext(ctx, s.d.rebind("SELECT dims FROM search_config WHERE ns = ?"), ns).Scan(&dims)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return err
	}
	if dims.Valid {
		s.dims.Store(ns, int(dims.Int64))
	} else {
		err = tx.QueryRowContext(ctx, s.d.rebind(`INSERT INTO search_config (ns, dims) VALUES (?, ?)
ON CONFLICT (ns) DO UPDATE SET dims = COALESCE(search_config.dims, excluded.dims) RETURNING dims`), ns, n).Scan(&dims)
		if err != nil {
			return err
		}
	}
	if int(dims.Int64) != n {
		return dimsError(ns, int(dims.Int64), n)
	}
	return nil
}

func dimsError(ns string, want, got int) error {
	return apierr.New(apierr.Invalid, "namespace %s stores embeddings of %d dimensions; this one has %d", ns, want, got)
}

// afterWrite keeps the vector index current after a committed write and
// embeds things of embed-on-write namespaces that were written without an
// embedding.
func (s *Service) afterWrite(ctx context.Context, things []*dbv1.Thing, deleted [][2]string) {
	for _, d := range deleted {
		s.vec.remove(d[0], d[1])
	}
	var missing []*dbv1.Thing
	for _, t := range things {
		if t == nil {
			continue
		}
		if len(t.Embedding) > 0 {
			s.vec.put(t.Ns, t.Id, t.Type, t.Embedding)
			continue
		}
		s.vec.remove(t.Ns, t.Id)
		if s.embedder == nil {
			continue
		}
		cfg, err := s.config(ctx, t.Ns)
		if err != nil {
			s.log.WarnContext(ctx, "embed on write: read search config", "ns", t.Ns, "err", err)
			continue
		}
		if cfg.embedOnWrite {
			missing = append(missing, t)
		}
	}
	if len(missing) == 0 {
		return
	}
	// The write is committed: a failure here leaves the embedding missing
	// for GenerateMissingEmbeddings, and does not fail the write.
	if _, err := s.embedThings(ctx, missing); err != nil {
		s.log.WarnContext(ctx, "embed on write failed; GenerateMissingEmbeddings will retry", "err", err)
	}
}

// embedText is what a thing's embedding is made from: its content and its
// namespace's indexed data fields.
func embedText(t *dbv1.Thing, fields []string) string {
	var sb strings.Builder
	sb.WriteString(t.Content)
	if len(fields) > 0 && len(t.Data) > 0 {
		var m map[string]any
		if json.Unmarshal(t.Data, &m) == nil {
			for _, f := range fields {
				var v any = m
				for _, seg := range strings.Split(f, ".") {
					o, ok := v.(map[string]any)
					if !ok {
						v = nil
						break
					}
					v = o[seg]
				}
				switch x := v.(type) {
				case nil:
				case string:
					sb.WriteString("\n" + x)
				default:
					b, _ := json.Marshal(x)
					sb.WriteString("\n" + string(b))
				}
			}
		}
	}
	return strings.TrimSpace(sb.String())
}

// embedThings embeds things (all of one or more namespaces) with the
// service's embedder and stores the embeddings, unless the thing changed
// meanwhile. It returns how many it stored.
func (s *Service) embedThings(ctx context.Context, things []*dbv1.Thing) (int, error) {
	if s.embedder == nil {
		return 0, apierr.New(apierr.Unprocessable, "no embedder is configured: start the db service with --embedder")
	}
	var texts []string
	var todo []*dbv1.Thing
	for _, t := range things {
		cfg, err := s.config(ctx, t.Ns)
		if err != nil {
			return 0, err
		}
		if txt := embedText(t, cfg.fields); txt != "" {
			texts = append(texts, txt)
			todo = append(todo, t)
		}
	}
	if len(todo) == 0 {
		return 0, nil
	}
	vecs, err := s.embedder.Embed(ctx, texts)
	if err != nil {
		return 0, err
	}
	n := 0
	err = s.tx(ctx, "store embeddings", func(tx *sql.Tx) error {
		for i, t := range todo {
			v := vecs[i]
			if err := checkEmbedding(v); err != nil {
				return err
			}
			if err := s.checkDims(ctx, tx, t.Ns, len(v)); err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, s.d.rebind("UPDATE things SET embedding = ? WHERE ns = ? AND id = ? AND version = ? AND embedding IS NULL"),
				encodeEmbedding(v), t.Ns, t.Id, t.Version)
			if err != nil {
				return err
			}
			if k, _ := res.RowsAffected(); k == 1 {
				t.Embedding = v
				n++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, t := range todo {
		if len(t.Embedding) > 0 {
			s.vec.put(t.Ns, t.Id, t.Type, t.Embedding)
		}
	}
	return n, nil
}

// GenerateMissingEmbeddings embeds live things that have no embedding, in
// batches, in namespaces with embed_on_write (or the one named). It is
// resumable: the things still missing are the work left, so a call cut
// short loses nothing and the next call carries on.
func (s *Service) GenerateMissingEmbeddings(ctx context.Context, req *connect.Request[dbv1.GenerateMissingEmbeddingsRequest]) (*connect.Response[dbv1.GenerateMissingEmbeddingsResponse], error) {
	m := req.Msg
	if s.embedder == nil {
		return nil, apierr.New(apierr.Unprocessable, "no embedder is configured: start the db service with --embedder")
	}
	batch, max := int(m.BatchSize), int(m.Max)
	if batch <= 0 {
		batch = 64
	}
	if batch > 1000 {
		return nil, apierr.New(apierr.Invalid, "batchSize must be at most 1000")
	}
	if max <= 0 {
		max = 10000
	}
	var nss []string
	if m.Ns != "" {
		if err := checkNamespace(m.Ns); err != nil {
			return nil, err
		}
		nss = []string{m.Ns}
	} else {
		rows, err := s.be.Read.QueryContext(ctx, s.d.rebind("SELECT ns FROM search_config WHERE embed_on_write = ? ORDER BY ns"), true)
		if err != nil {
			return nil, s.internal(ctx, "generate embeddings", err)
		}
		for rows.Next() {
			var ns string
			if err := rows.Scan(&ns); err != nil {
				rows.Close()
				return nil, s.internal(ctx, "generate embeddings", err)
			}
			nss = append(nss, ns)
		}
		rows.Close()
	}
	out := &dbv1.GenerateMissingEmbeddingsResponse{Done: true}
	seen := 0
	for _, ns := range nss {
		after := ""
		for seen < max {
			things, err := s.missingEmbeddings(ctx, ns, after, min(batch, max-seen))
			if err != nil {
				return nil, s.internal(ctx, "generate embeddings", err)
			}
			if len(things) == 0 {
				break
			}
			after = things[len(things)-1].Id
			seen += len(things)
			n, err := s.embedThings(ctx, things)
			if err != nil {
				var ae *apierr.Error
				if errors.As(err, &ae) {
					return nil, err
				}
				s.log.WarnContext(ctx, "generate embeddings: batch failed", "ns", ns, "err", err)
				out.Failed += int64(len(things))
				continue
			}
			out.Embedded += int64(n)
		}
		if seen >= max {
			// Whether work is left is only known by looking.
			more, err := s.missingEmbeddings(ctx, ns, after, 1)
			if err != nil {
				return nil, s.internal(ctx, "generate embeddings", err)
			}
			out.Done = len(more) == 0
			break
		}
	}
	if out.Failed > 0 {
		// The failed things are still missing: the next call retries them.
		out.Done = false
	}
	return connect.NewResponse(out), nil
}

func (s *Service) missingEmbeddings(ctx context.Context, ns, after string, n int) ([]*dbv1.Thing, error) {
	rows, err := s.be.Read.QueryContext(ctx, s.d.rebind("SELECT "+thingCols+" FROM things t WHERE t.ns = ? AND t.id > ? AND t.embedding IS NULL AND "+live+" ORDER BY t.id LIMIT ?"), ns, after, s.now(), n)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*dbv1.Thing
	for rows.Next() {
		t, err := s.scanThing(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// GetSearchConfig returns a namespace's search settings.
func (s *Service) GetSearchConfig(ctx context.Context, req *connect.Request[dbv1.GetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error) {
	if err := checkNamespace(req.Msg.Ns); err != nil {
		return nil, err
	}
	cfg, err := s.readConfig(ctx, s.be.Read, req.Msg.Ns)
	if err != nil {
		return nil, s.internal(ctx, "get search config", err)
	}
	return connect.NewResponse(&dbv1.SearchConfigResponse{Config: cfg.proto(req.Msg.Ns)}), nil
}

func (c searchConfig) proto(ns string) *dbv1.SearchConfig {
	return &dbv1.SearchConfig{Ns: ns, Dims: int32(c.dims), EmbedOnWrite: c.embedOnWrite, Fields: append([]string{}, c.fields...)}
}

// SetSearchConfig sets whether a namespace embeds on write and which data
// fields it indexes for full text (re-indexing its things when they
// change). The dimension is fixed by the first embedding; dims, when not
// 0, must equal it (or sets it in advance).
func (s *Service) SetSearchConfig(ctx context.Context, req *connect.Request[dbv1.SetSearchConfigRequest]) (*connect.Response[dbv1.SearchConfigResponse], error) {
	c := req.Msg.Config
	if c == nil {
		return nil, apierr.New(apierr.Invalid, "config is required")
	}
	if err := checkNamespace(c.Ns); err != nil {
		return nil, err
	}
	if len(c.Fields) > MaxSearchFields {
		return nil, apierr.New(apierr.Invalid, "at most %d fields can be indexed", MaxSearchFields)
	}
	fields := []string{}
	for _, f := range c.Fields {
		p, err := parsePath(f)
		if err != nil {
			return nil, apierr.New(apierr.Invalid, "fields: %v", err)
		}
		for _, seg := range p {
			for _, r := range seg {
				if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
					return nil, apierr.New(apierr.Invalid, "fields: %q: a searchable field path is made of letters, digits, '_' and '-' separated by '.'", clip(f))
				}
			}
		}
		if !slices.Contains(fields, f) {
			fields = append(fields, f)
		}
	}
	if c.Dims < 0 || c.Dims > MaxEmbedding {
		return nil, apierr.New(apierr.Invalid, "dims must be between 1 and %d", MaxEmbedding)
	}
	fj, _ := json.Marshal(fields)
	var out searchConfig
	err := s.tx(ctx, "set search config", func(tx *sql.Tx) error {
		cur, err := s.readConfig(ctx, tx, c.Ns)
		if err != nil {
			return err
		}
		if c.Dims != 0 && cur.dims != 0 && int(c.Dims) != cur.dims {
			return apierr.New(apierr.Invalid, "namespace %s stores embeddings of %d dimensions; the dimension cannot change", c.Ns, cur.dims)
		}
		dims := cur.dims
		if dims == 0 {
			dims = int(c.Dims)
		}
		if _, err := tx.ExecContext(ctx, s.d.rebind(`INSERT INTO search_config (ns, dims, embed_on_write, fields) VALUES (?, ?, ?, ?)
ON CONFLICT (ns) DO UPDATE SET dims = excluded.dims, embed_on_write = excluded.embed_on_write, fields = excluded.fields`),
			c.Ns, nullable(int64(dims)), c.EmbedOnWrite, string(fj)); err != nil {
			return err
		}
		if !slices.Equal(cur.fields, fields) && !(len(cur.fields) == 0 && len(fields) == 0) {
			if err := s.reindex(ctx, tx, c.Ns); err != nil {
				return err
			}
		}
		out = searchConfig{dims: dims, embedOnWrite: c.EmbedOnWrite, fields: fields}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.cfgMu.Lock()
	s.cfgCache[c.Ns] = cachedConfig{cfg: out, at: time.Now()}
	s.cfgMu.Unlock()
	return connect.NewResponse(&dbv1.SearchConfigResponse{Config: out.proto(c.Ns)}), nil
}

// reindex recomputes the full-text index of a namespace's things.
func (s *Service) reindex(ctx context.Context, tx *sql.Tx, ns string) error {
	if s.be.Name == Postgres {
		_, err := tx.ExecContext(ctx, "UPDATE things SET search = NULL WHERE ns = $1", ns)
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM things_fts WHERE rowid IN (SELECT rowid FROM things WHERE ns = ?)", ns); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO things_fts (rowid, content, fields, tags)
SELECT t.rowid, t.content,
  COALESCE((SELECT group_concat(json_extract(t.data, '$.' || f.value), ' ') FROM search_config c, json_each(c.fields) f WHERE c.ns = t.ns), ''),
  'n' || hex(t.ns) || 'q t' || hex(t.type) || 'q'
FROM things t WHERE t.ns = ? AND (t.content <> '' OR EXISTS (SELECT 1 FROM search_config c WHERE c.ns = t.ns AND c.fields <> '[]'))`, ns)
	return err
}

// searchCursor is the position after the last hit of a page: results are
// ordered by score, then id, so the next page starts strictly after it.
// digest ties the cursor to the query it was made for.
type searchCursor struct {
	Digest string  `json:"d"`
	Score  float64 `json:"s"`
	ID     string  `json:"i"`
	Rowid  int64   `json:"r,omitempty"`
	Offset int     `json:"o"`
}

func (c searchCursor) encode() string {
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeSearchCursor(s, digest string) (*searchCursor, error) {
	if s == "" {
		return nil, nil
	}
	if len(s) > maxCursorLen {
		return nil, errBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, errBadCursor
	}
	var c searchCursor
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil || c.ID == "" || len(c.ID) > MaxIDLen || c.Offset < 0 || c.Offset > 1_000_000 || math.IsNaN(c.Score) || math.IsInf(c.Score, 0) {
		return nil, errBadCursor
	}
	if c.Digest != digest {
		return nil, errors.New("cursor was made for another search; start again without a cursor")
	}
	return &c, nil
}

// searchPlan is a validated search request.
type searchPlan struct {
	ns, mode, typ string
	query         *ftsQuery
	vector        []float32
	conds         []condition
	limit         int
	wf, wv        float64
	k             int
	after         *searchCursor
}

// Search finds things of a namespace by full text, by vector or by both
// (Reciprocal Rank Fusion), with the filters of List.
func (s *Service) Search(ctx context.Context, req *connect.Request[dbv1.SearchRequest]) (*connect.Response[dbv1.SearchResponse], error) {
	p, err := s.planSearch(ctx, req.Msg)
	if err != nil {
		return nil, err
	}
	var hits []hit
	switch p.mode {
	case "fulltext":
		hits, err = s.fulltextPage(ctx, p)
	case "vector":
		hits, err = s.vectorPage(ctx, p)
	default:
		hits, err = s.hybridPage(ctx, p)
	}
	if err != nil {
		var ae *apierr.Error
		if errors.As(err, &ae) {
			return nil, err
		}
		return nil, s.internal(ctx, "search", err)
	}
	out := &dbv1.SearchResponse{Mode: p.mode}
	if len(hits) > p.limit {
		hits = hits[:p.limit]
		last := hits[len(hits)-1]
		off := len(hits)
		if p.after != nil {
			off += p.after.Offset
		}
		out.NextCursor = searchCursor{Digest: digestOf(req.Msg, p.mode), Score: last.score, ID: last.id, Rowid: last.rowid, Offset: off}.encode()
	}
	items, err := s.fillHits(ctx, p, hits)
	if err != nil {
		return nil, s.internal(ctx, "search", err)
	}
	out.Items = items
	return connect.NewResponse(out), nil
}

func digestOf(m *dbv1.SearchRequest, mode string) string {
	h := sha256.New()
	for _, s := range []string{m.Ns, m.Query, mode, m.Type, m.Where} {
		binary.Write(h, binary.LittleEndian, int64(len(s)))
		h.Write([]byte(s))
	}
	binary.Write(h, binary.LittleEndian, m.Vector)
	binary.Write(h, binary.LittleEndian, []float32{m.FulltextWeight, m.VectorWeight})
	binary.Write(h, binary.LittleEndian, []int32{m.RrfK, m.Limit})
	return hex.EncodeToString(h.Sum(nil)[:9])
}

func (s *Service) planSearch(ctx context.Context, m *dbv1.SearchRequest) (*searchPlan, error) {
	if err := checkNamespace(m.Ns); err != nil {
		return nil, err
	}
	p := &searchPlan{ns: m.Ns, typ: m.Type, mode: m.Mode, wf: float64(m.FulltextWeight), wv: float64(m.VectorWeight), k: int(m.RrfK)}
	if m.Type != "" {
		if err := checkType("type", m.Type); err != nil {
			return nil, err
		}
	}
	switch {
	case m.Limit == 0:
		p.limit = 10
	case m.Limit < 0 || m.Limit > MaxSearchLimit:
		return nil, apierr.New(apierr.Invalid, "limit must be between 1 and %d", MaxSearchLimit)
	default:
		p.limit = int(m.Limit)
	}
	conds, err := parseWhere(m.Where)
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "where %v", err)
	}
	p.conds = conds
	if math.IsNaN(p.wf) || math.IsNaN(p.wv) || p.wf < 0 || p.wv < 0 || p.wf > 100 || p.wv > 100 {
		return nil, apierr.New(apierr.Invalid, "weights must be between 0 and 100")
	}
	if p.wf == 0 {
		p.wf = 1
	}
	if p.wv == 0 {
		p.wv = 1
	}
	if p.k == 0 {
		p.k = DefaultRRFK
	}
	if p.k < 1 || p.k > 10000 {
		return nil, apierr.New(apierr.Invalid, "k must be between 1 and 10000")
	}
	hasQuery := strings.TrimSpace(m.Query) != ""
	if hasQuery {
		q, err := parseQuery(m.Query)
		if err != nil {
			return nil, apierr.New(apierr.Invalid, "query: %v", err)
		}
		p.query = &q
	}
	if len(m.Vector) > 0 {
		if err := checkEmbedding(m.Vector); err != nil {
			return nil, apierr.New(apierr.Invalid, "vector: %v", strings.TrimPrefix(err.Error(), "embedding"))
		}
		p.vector = m.Vector
	}
	if p.mode == "" {
		switch {
		case hasQuery && len(m.Vector) > 0:
			p.mode = "hybrid"
		case hasQuery && s.embedder != nil && s.vec.dims(m.Ns) == s.embedder.Dims():
			// Only where the embedder's vectors can meet the
			// namespace's: otherwise full text alone.
			p.mode = "hybrid"
		case hasQuery:
			p.mode = "fulltext"
		case len(m.Vector) > 0:
			p.mode = "vector"
		default:
			return nil, apierr.New(apierr.Invalid, "give a query, a vector or both")
		}
	}
	switch p.mode {
	case "fulltext":
		if !hasQuery {
			return nil, apierr.New(apierr.Invalid, "fulltext search needs a query")
		}
	case "vector", "hybrid":
		if p.mode == "hybrid" && !hasQuery {
			return nil, apierr.New(apierr.Invalid, "hybrid search needs a query (and a vector, or an embedder for the query)")
		}
		if len(p.vector) == 0 {
			if !hasQuery {
				return nil, apierr.New(apierr.Invalid, "vector search needs a vector, or a query and an embedder")
			}
			if s.embedder == nil {
				return nil, apierr.New(apierr.Invalid, "%s search without a vector needs an embedder for the query; none is configured", p.mode)
			}
			vs, err := s.embedder.Embed(ctx, []string{m.Query})
			if err != nil {
				s.log.WarnContext(ctx, "embed query failed", "err", err)
				return nil, apierr.New(apierr.Unavailable, "the embedder is unavailable")
			}
			p.vector = vs[0]
		}
	default:
		return nil, apierr.New(apierr.Invalid, "mode must be fulltext, vector or hybrid")
	}
	c, err := decodeSearchCursor(m.Cursor, digestOf(m, p.mode))
	if err != nil {
		return nil, apierr.New(apierr.Invalid, "%v", err)
	}
	p.after = c
	return p, nil
}

// hit is one ranked result before the thing is read.
type hit struct {
	id            string
	rowid         int64 // SQLite full text: the ordering tie-break
	score         float64
	ftRank, vRank int
}

func (p *searchPlan) afterKey() *scored {
	if p.after == nil {
		return nil
	}
	return &scored{id: p.after.ID, score: p.after.Score}
}

// fulltextPage returns up to limit+1 full-text hits after the cursor.
func (s *Service) fulltextPage(ctx context.Context, p *searchPlan) ([]hit, error) {
	all, err := s.fulltextLeg(ctx, p)
	if err != nil {
		return nil, err
	}
	i := 0
	if p.after != nil {
		ak := ftKey{score: p.after.Score, rowid: p.after.Rowid, id: p.after.ID}
		for i < len(all) && !all[i].after(ak) {
			i++
		}
	}
	off := 0
	if p.after != nil {
		off = p.after.Offset
	}
	live, err := s.resolve(ctx, p.ns, all[i:], p.limit+1)
	if err != nil {
		return nil, err
	}
	out := make([]hit, len(live))
	for j, r := range live {
		out[j] = hit{id: r.id, rowid: r.rowid, score: r.score, ftRank: off + j + 1}
	}
	return out, nil
}

// vectorPage returns up to limit+1 vector hits after the cursor.
func (s *Service) vectorPage(ctx context.Context, p *searchPlan) ([]hit, error) {
	res, err := s.vectorLeg(ctx, p, p.limit+1, p.afterKey())
	if err != nil {
		return nil, err
	}
	out := make([]hit, len(res))
	off := 0
	if p.after != nil {
		off = p.after.Offset
	}
	for i, r := range res {
		out[i] = hit{id: r.id, score: r.score, vRank: off + i + 1}
	}
	return out, nil
}

// hybridPage fuses the legs' top 2 x limit with Reciprocal Rank Fusion:
// score = wf/(k + rank in full text) + wv/(k + rank in vector). The legs'
// depth depends on the page size only, so every page of one search walks
// the same fused list (the cursor is tied to the limit) and nothing
// repeats or is skipped; the list holds at most 4 x limit things.
func (s *Service) hybridPage(ctx context.Context, p *searchPlan) ([]hit, error) {
	depth := 2 * p.limit
	// The legs run one after the other: the vector scan already uses
	// every CPU, and a full-text leg beside it would only wait for one.
	ft, err := s.fulltextLeg(ctx, p)
	if err != nil {
		return nil, err
	}
	vr, err := s.vectorLeg(ctx, p, depth, nil)
	if err != nil {
		return nil, err
	}
	live, err := s.resolve(ctx, p.ns, ft, depth)
	if err != nil {
		return nil, err
	}
	fts := make([]scored, len(live))
	for i, r := range live {
		fts[i] = scored{id: r.id, score: r.score}
	}
	return fuse(fts, vr, p.wf, p.wv, p.k, p.afterKey(), p.limit+1), nil
}

// fuse combines two ranked lists with weighted Reciprocal Rank Fusion and
// returns up to n hits after the position after.
func fuse(ft, vr []scored, wf, wv float64, k int, after *scored, n int) []hit {
	m := map[string]*hit{}
	var order []*hit
	get := func(id string) *hit {
		h := m[id]
		if h == nil {
			h = &hit{id: id}
			m[id] = h
			order = append(order, h)
		}
		return h
	}
	for i, r := range ft {
		h := get(r.id)
		h.ftRank = i + 1
		h.score += wf / float64(k+i+1)
	}
	for i, r := range vr {
		h := get(r.id)
		h.vRank = i + 1
		h.score += wv / float64(k+i+1)
	}
	sort.Slice(order, func(i, j int) bool {
		a, b := order[i], order[j]
		if a.score != b.score {
			return a.score > b.score
		}
		return a.id < b.id
	})
	var out []hit
	for _, h := range order {
		if after != nil && !(scored{id: h.id, score: h.score}).after(*after) {
			continue
		}
		out = append(out, *h)
		if len(out) == n {
			break
		}
	}
	return out
}

// nsTag is the token of a namespace in the tags column of things_fts
// (the migration's triggers write it; queries do not use it, see
// fulltextLeg).
func nsTag(ns string) string { return "n" + strings.ToUpper(hex.EncodeToString([]byte(ns))) + "q" }

// ftKey is a full-text candidate: on SQLite its rowid (the id is read
// only for the things a page shows), on PostgreSQL its id.
type ftKey struct {
	score float64
	rowid int64
	id    string
}

// after reports whether a ranks after b: lower score, then greater rowid
// (SQLite) or id (PostgreSQL).
func (a ftKey) after(b ftKey) bool {
	if a.score != b.score {
		return a.score < b.score
	}
	if a.rowid != b.rowid {
		return a.rowid > b.rowid
	}
	return a.id > b.id
}

// fulltextLeg returns the full-text matches, best first: at most
// MaxRankedCandidates of them are ranked. On SQLite, without a type or
// where filter, the candidates come from the FTS5 index alone and resolve
// reads the things of the few a page needs (their namespace and expiry);
// if the index gives the cap, or with a filter, the things are joined so
// the cap counts only this namespace's matches that pass. (Restricting the
// MATCH itself to the namespace's token would make bm25 count the token's
// documents, the whole namespace, on every query.)
func (s *Service) fulltextLeg(ctx context.Context, p *searchPlan) ([]ftKey, error) {
	joined := s.be.Name == Postgres || p.typ != "" || len(p.conds) > 0
	out, err := s.fulltextCandidates(ctx, p, joined)
	if err != nil || joined || len(out) < MaxRankedCandidates {
		return out, err
	}
	// The index alone gave the cap: if some are other namespaces'
	// things, rank this namespace's own first matches instead.
	others, err := s.countOtherNamespaces(ctx, p.ns, out)
	if err != nil || others == 0 {
		return out, err
	}
	return s.fulltextCandidates(ctx, p, true)
}

// countOtherNamespaces counts the candidates that are not things of ns.
func (s *Service) countOtherNamespaces(ctx context.Context, ns string, cands []ftKey) (int, error) {
	total := 0
	for lo := 0; lo < len(cands); lo += 5000 {
		part := cands[lo:min(lo+5000, len(cands))]
		args := make([]any, 0, len(part)+1)
		args = append(args, ns)
		for _, c := range part {
			args = append(args, c.rowid)
		}
		var n int
		if err := s.be.Read.QueryRowContext(ctx, "SELECT COUNT(*) FROM things t NOT INDEXED WHERE t.ns <> ? AND t.rowid IN ("+strings.Repeat(",?", len(part))[1:]+")", args...).Scan(&n); err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

func (s *Service) fulltextCandidates(ctx context.Context, p *searchPlan, joined bool) ([]ftKey, error) {
	var sb strings.Builder
	var args []any
	if s.be.Name == Postgres {
		sb.WriteString("SELECT 0, t.id, ts_rank_cd(t.search, websearch_to_tsquery('english', ?), 1) FROM things t WHERE t.ns = ? AND " + live)
		args = append(args, p.query.websearch(), p.ns, s.now())
		if p.typ != "" {
			sb.WriteString(" AND t.type = ?")
			args = append(args, p.typ)
		}
		args = compile(&s.d, p.conds, &sb, args)
		sb.WriteString(" AND t.search @@ websearch_to_tsquery('english', ?)")
		args = append(args, p.query.websearch())
	} else {
		match := "{content fields} : (" + p.query.fts5() + ")"
		if !joined {
			sb.WriteString("SELECT things_fts.rowid, '', -bm25(things_fts, 1.0, 0.5, 0.0) FROM things_fts WHERE things_fts MATCH ?")
			args = append(args, match)
		} else {
			sb.WriteString("SELECT t.rowid, '', -bm25(things_fts, 1.0, 0.5, 0.0) FROM things_fts JOIN things t ON t.rowid = things_fts.rowid WHERE things_fts MATCH ? AND t.ns = ? AND " + live)
			args = append(args, match, p.ns, s.now())
			if p.typ != "" {
				sb.WriteString(" AND t.type = ?")
				args = append(args, p.typ)
			}
			args = compile(&s.d, p.conds, &sb, args)
		}
	}
	sb.WriteString(" LIMIT ?")
	args = append(args, MaxRankedCandidates)
	st, err := s.stmt(sb.String())
	if err != nil {
		return nil, err
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make([]ftKey, 0, 64)
	for rows.Next() {
		var r ftKey
		if err := rows.Scan(&r.rowid, &r.id, &r.score); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[j].after(out[i]) })
	return out, nil
}

// resolve returns the first n candidates that are live things of ns, with
// their ids (on PostgreSQL the candidates are already checked).
func (s *Service) resolve(ctx context.Context, ns string, cands []ftKey, n int) ([]ftKey, error) {
	if s.be.Name == Postgres {
		return cands[:min(n, len(cands))], nil
	}
	out := make([]ftKey, 0, n)
	for lo := 0; lo < len(cands) && len(out) < n; {
		hi := min(lo+max(2*(n-len(out)), 16), len(cands))
		part := cands[lo:hi]
		args := make([]any, 0, len(part)+2)
		args = append(args, ns, s.now())
		for _, c := range part {
			args = append(args, c.rowid)
		}
		rows, err := s.be.Read.QueryContext(ctx, "SELECT t.rowid, t.id FROM things t NOT INDEXED WHERE t.ns = ? AND "+live+" AND t.rowid IN ("+strings.Repeat(",?", len(part))[1:]+")", args...)
		if err != nil {
			return nil, err
		}
		ids := map[int64]string{}
		for rows.Next() {
			var rid int64
			var id string
			if err := rows.Scan(&rid, &id); err != nil {
				rows.Close()
				return nil, err
			}
			ids[rid] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
		for _, c := range part {
			if id, ok := ids[c.rowid]; ok && len(out) < n {
				c.id = id
				out = append(out, c)
			}
		}
		lo = hi
	}
	return out, nil
}

// vectorLeg returns the n nearest live things passing the filters, best
// first, after the position after. The index filters by type; the where
// document and expiry are checked in the database, widening the scan
// until n things pass or the namespace is exhausted.
func (s *Service) vectorLeg(ctx context.Context, p *searchPlan, n int, after *scored) ([]scored, error) {
	<-s.vecReady
	k := n
	if len(p.conds) > 0 {
		k = 2 * n
	}
	for {
		cands, derr := s.vec.search(p.ns, p.vector, p.typ, k, after)
		if derr != nil {
			return nil, apierr.New(apierr.Invalid, "vector has %d dimensions; namespace %s stores %d", derr.got, p.ns, derr.want)
		}
		ok, err := s.verify(ctx, p, cands)
		if err != nil {
			return nil, err
		}
		var out []scored
		for _, c := range cands {
			if ok[c.id] {
				out = append(out, c)
				if len(out) == n {
					return out, nil
				}
			}
		}
		if len(cands) < k {
			return out, nil
		}
		k *= 4
	}
}

// verify returns which candidate ids are live and pass the where document.
func (s *Service) verify(ctx context.Context, p *searchPlan, cands []scored) (map[string]bool, error) {
	ok := make(map[string]bool, len(cands))
	for lo := 0; lo < len(cands); lo += 500 {
		part := cands[lo:min(lo+500, len(cands))]
		var sb strings.Builder
		args := []any{p.ns, s.now()}
		sb.WriteString("SELECT t.id FROM things t WHERE t.ns = ? AND " + live + " AND t.id IN (")
		for i, c := range part {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteByte('?')
			args = append(args, c.id)
		}
		sb.WriteString(")")
		args = compile(&s.d, p.conds, &sb, args)
		rows, err := s.be.Read.QueryContext(ctx, s.d.rebind(sb.String()), args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			ok[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	return ok, nil
}

// fillHits reads the things of a page and the snippets of its full-text hits.
func (s *Service) fillHits(ctx context.Context, p *searchPlan, hits []hit) ([]*dbv1.SearchHit, error) {
	if len(hits) == 0 {
		return []*dbv1.SearchHit{}, nil
	}
	ids := make([]any, 0, len(hits)+2)
	ids = append(ids, p.ns, s.now())
	ph := strings.Repeat(",?", len(hits))[1:]
	for _, h := range hits {
		ids = append(ids, h.id)
	}
	rows, err := s.be.Read.QueryContext(ctx, s.d.rebind("SELECT "+thingCols+" FROM things t WHERE t.ns = ? AND "+live+" AND t.id IN ("+ph+")"), ids...)
	if err != nil {
		return nil, err
	}
	things := map[string]*dbv1.Thing{}
	for rows.Next() {
		t, err := s.scanThing(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		things[t.Id] = t
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	snippets := map[string]string{}
	if p.query != nil {
		if snippets, err = s.snippets(ctx, p, hits); err != nil {
			return nil, err
		}
	}
	out := make([]*dbv1.SearchHit, 0, len(hits))
	for _, h := range hits {
		t := things[h.id]
		if t == nil {
			continue // deleted since it was ranked
		}
		out = append(out, &dbv1.SearchHit{Thing: t, Score: h.score, Snippet: snippets[h.id], FulltextRank: int32(h.ftRank), VectorRank: int32(h.vRank)})
	}
	return out, nil
}

// snippets returns a fragment of each hit's content with the matched
// words in <mark></mark>. On SQLite each hit is one FTS5 lookup by rowid
// (a MATCH with a list of ids would walk every match of a broad query).
func (s *Service) snippets(ctx context.Context, p *searchPlan, hits []hit) (map[string]string, error) {
	out := map[string]string{}
	if s.be.Name != Postgres {
		st, err := s.stmt("SELECT snippet(things_fts, 0, '<mark>', '</mark>', '…', 16) FROM things_fts WHERE things_fts MATCH ? AND things_fts.rowid = (SELECT t.rowid FROM things t WHERE t.ns = ? AND t.id = ?)")
		if err != nil {
			return nil, err
		}
		match := "{content fields} : (" + p.query.fts5() + ")"
		for _, h := range hits {
			var snip string
			err := st.QueryRowContext(ctx, match, p.ns, h.id).Scan(&snip)
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return nil, err
			}
			if snip != "" {
				out[h.id] = snip
			}
		}
		return out, nil
	}
	args := []any{p.query.websearch(), p.ns}
	ph := make([]string, len(hits))
	for i, h := range hits {
		args = append(args, h.id)
		ph[i] = "$" + strconv.Itoa(i+3)
	}
	rows, err := s.be.Read.QueryContext(ctx, "SELECT t.id, ts_headline('english', t.content, websearch_to_tsquery('english', $1), 'StartSel=<mark>, StopSel=</mark>, MaxWords=24, MinWords=10, MaxFragments=1') FROM things t WHERE t.ns = $2 AND t.content <> '' AND t.search @@ websearch_to_tsquery('english', $1) AND t.id IN ("+strings.Join(ph, ",")+")", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id, snip string
		if err := rows.Scan(&id, &snip); err != nil {
			return nil, err
		}
		out[id] = snip
	}
	return out, rows.Err()
}
